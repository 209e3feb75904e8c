//! `POST /v1/pools/{name}/probe`: a poll of a job that cannot exist, sent to a real scheduler on
//! loopback through the pool's own client, egress guard and credentials, without creating a job.

use crate::support::app::{TestApp, spawn_app};
use crate::support::client::Reply;
use crate::support::manifests::simple_manifest;
use crate::support::stub::{OAUTH_CLIENT_ID, Recorder, answer, job_api};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// The token the stub scheduler takes.
const TOKEN: &str = "probe-scheduler-token-3141";
/// The OAuth2 client secret its token endpoint takes.
const CLIENT_SECRET: &str = "probe-client-secret-2718";
/// A credential it does not take.
const WRONG: &str = "probe-wrong-credential-1618";

async fn probe(app: &TestApp, pool: &str, body: Option<Value>) -> Reply {
    probe_as(app, pool, body, app.tokens.admin).await
}

async fn probe_as(app: &TestApp, pool: &str, body: Option<Value>, token: &str) -> Reply {
    let mut request = app
        .client
        .post(app.url(&format!("/v1/pools/{pool}/probe")))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    Reply::read(request.send().await.unwrap()).await
}

/// The report of a 200 answer, after checking its shape (the members the CLI reads, no more)
/// and that it holds none of the credentials.
fn read_report(reply: &Reply) -> Value {
    assert_eq!(reply.status, 200, "{}", reply.text);
    for secret in [TOKEN, CLIENT_SECRET, WRONG] {
        assert!(
            !reply.text.contains(secret),
            "a secret in the report: {}",
            reply.text
        );
    }
    let report = reply.json();
    let keys: BTreeSet<&str> = report
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "pool",
            "ok",
            "reachable",
            "auth",
            "poll",
            "latencyMs",
            "problems",
            "gaps"
        ]),
        "{report}"
    );
    let poll: BTreeSet<&str> = report["poll"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        poll,
        BTreeSet::from(["httpStatus", "classified", "expected"])
    );
    assert_eq!(report["poll"]["expected"], "notFound");
    assert!(report["latencyMs"].is_u64(), "{report}");
    report
}

fn codes(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_owned())
        .collect()
}

/// The simple manifest with OAuth2 client credentials from the scheduler's token endpoint.
fn oauth_manifest(base_url: &str) -> Value {
    let mut manifest = simple_manifest(base_url);
    manifest["auth"] = json!({
        "type": "oauth2_client_credentials",
        "tokenUrl": format!("{base_url}/oauth/token"),
        "clientIdSecretRef": {"key": "CLIENT_ID"},
        "clientSecretSecretRef": {"key": "CLIENT_SECRET"},
    });
    manifest
}

#[actix_web::test]
async fn a_healthy_scheduler_is_reachable_takes_the_credentials_and_does_not_know_the_probe_job() {
    let app = spawn_app().await;
    let scheduler = Recorder::start(job_api(TOKEN, CLIENT_SECRET)).await;
    app.register(
        "k8s",
        simple_manifest(&scheduler.base_url),
        json!({"SCHED_TOKEN": TOKEN}),
    )
    .await;

    let report = read_report(&probe(&app, "k8s", None).await);
    assert_eq!(report["pool"], "k8s");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["reachable"], true);
    assert_eq!(report["auth"], "accepted");
    assert_eq!(report["poll"]["httpStatus"], 404);
    assert_eq!(report["poll"]["classified"], "notFound");
    assert_eq!(report["problems"], json!([]));
    assert_eq!(
        report["gaps"],
        json!([]),
        "the simple manifest leaves nothing out"
    );

    // One poll of a job that cannot exist, with the pool's credentials; no job was created.
    let seen = scheduler.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "GET");
    let id = seen[0].path.strip_prefix("/jobs/cattery-probe-").unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{}", seen[0].path);
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    let runs = app.get("/v1/runs?pool=k8s").await.json();
    assert_eq!(runs["runs"], json!([]));

    // Each probe polls a new id.
    probe(&app, "k8s", None).await;
    let seen = scheduler.seen();
    assert_eq!(seen.len(), 2);
    assert_ne!(seen[0].path, seen[1].path);
}

#[actix_web::test]
async fn a_credential_the_scheduler_refuses_is_reported_rejected() {
    let app = spawn_app().await;
    let scheduler = Recorder::start(job_api(TOKEN, CLIENT_SECRET)).await;
    app.register(
        "k8s",
        simple_manifest(&scheduler.base_url),
        json!({"SCHED_TOKEN": WRONG}),
    )
    .await;
    let report = read_report(&probe(&app, "k8s", None).await);
    assert_eq!(report["ok"], false);
    assert_eq!(report["reachable"], true);
    assert_eq!(report["auth"], "rejected");
    assert_eq!(report["poll"]["httpStatus"], 403);
    assert_eq!(report["poll"]["classified"], "unreadable");
    assert_eq!(codes(&report["problems"]), ["auth_rejected"]);

    // A manifest without credentials against a scheduler that wants them: 401, auth none.
    let mut open = simple_manifest(&scheduler.base_url);
    open["auth"] = json!({"type": "none"});
    let report = read_report(&probe(&app, "k8s", Some(json!({"manifest": open}))).await);
    assert_eq!(report["auth"], "none");
    assert_eq!(report["poll"]["httpStatus"], 401);
    assert_eq!(report["ok"], false);
    assert_eq!(codes(&report["problems"]), ["auth_rejected"]);
}

#[actix_web::test]
async fn an_oauth2_token_endpoint_that_refuses_is_rejected_and_a_fresh_token_is_fetched_each_time()
{
    let app = spawn_app().await;
    let scheduler = Recorder::start(job_api(TOKEN, CLIENT_SECRET)).await;
    let manifest = oauth_manifest(&scheduler.base_url);
    app.register(
        "oauth",
        manifest.clone(),
        json!({"CLIENT_ID": OAUTH_CLIENT_ID, "CLIENT_SECRET": WRONG}),
    )
    .await;

    let report = read_report(&probe(&app, "oauth", None).await);
    assert_eq!(report["ok"], false);
    assert_eq!(report["auth"], "rejected");
    assert_eq!(codes(&report["problems"]), ["oauth2_rejected"]);
    // The scheduler is still asked (without a token): it is reachable, and says so with a 401.
    assert_eq!(report["reachable"], true);
    assert_eq!(report["poll"]["httpStatus"], 401);
    let token_requests = |scheduler: &Recorder| {
        scheduler
            .seen()
            .iter()
            .filter(|s| s.path == "/oauth/token")
            .count()
    };
    assert_eq!(token_requests(&scheduler), 1);

    // The right secret, tried before saving it: accepted, and the poll carries the token.
    let right = json!({"secrets": {"CLIENT_ID": OAUTH_CLIENT_ID, "CLIENT_SECRET": CLIENT_SECRET}});
    for round in 1..=2 {
        let report = read_report(&probe(&app, "oauth", Some(right.clone())).await);
        assert_eq!(report["ok"], true, "{report}");
        assert_eq!(report["auth"], "accepted");
        assert_eq!(report["poll"]["classified"], "notFound");
        assert_eq!(
            token_requests(&scheduler),
            1 + round,
            "a fresh token each probe"
        );
    }
    let last = scheduler.seen().pop().unwrap();
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );

    // Nothing was saved: the stored secret is still the wrong one.
    let report = read_report(&probe(&app, "oauth", None).await);
    assert_eq!(report["auth"], "rejected");
}

#[actix_web::test]
async fn an_unreachable_scheduler_is_a_report_not_a_server_error() {
    let app = spawn_app().await;
    // A loopback port nobody listens on: connections are refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let base_url = format!("http://127.0.0.1:{port}");
    app.register(
        "gone",
        simple_manifest(&base_url),
        json!({"SCHED_TOKEN": TOKEN}),
    )
    .await;
    let report = read_report(&probe(&app, "gone", None).await);
    assert_eq!(report["ok"], false);
    assert_eq!(report["reachable"], false);
    assert_eq!(
        report["auth"], "error",
        "the credentials could not be tried"
    );
    assert_eq!(report["poll"]["httpStatus"], Value::Null);
    assert_eq!(report["poll"]["classified"], "transportError");
    assert_eq!(codes(&report["problems"]), ["unreachable"]);
    assert!(
        report["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{report}"
    );
}

#[actix_web::test]
async fn an_inline_manifest_is_probed_before_it_is_saved_with_its_gaps() {
    let app = spawn_app().await;
    let scheduler = Recorder::start(job_api(TOKEN, CLIENT_SECRET)).await;
    let mut manifest = simple_manifest(&scheduler.base_url);
    manifest.as_object_mut().unwrap().remove("release");
    manifest["poll"]["map"]["statusMap"] = json!({"Complete": "done"});
    let body = json!({"manifest": manifest, "secrets": {"SCHED_TOKEN": TOKEN}});
    let report = read_report(&probe(&app, "draft", Some(body)).await);
    assert_eq!(report["pool"], "draft");
    assert_eq!(
        report["ok"], true,
        "gaps do not make a pool unhealthy: {report}"
    );
    assert_eq!(
        codes(&report["gaps"]),
        ["no_release", "status_map_incomplete"]
    );
    assert!(
        report["gaps"][1]["message"]
            .as_str()
            .unwrap()
            .contains("failed"),
        "{report}"
    );
    assert_eq!(
        app.get("/v1/pools/draft").await.status,
        404,
        "nothing was saved"
    );

    // YAML text is read as PUT reads it.
    let text = serde_json::to_string(&simple_manifest(&scheduler.base_url)).unwrap();
    let body = json!({"manifest": text, "secrets": {"SCHED_TOKEN": TOKEN}});
    assert_eq!(report_of(&app, "draft", body).await["ok"], true);
}

async fn report_of(app: &TestApp, pool: &str, body: Value) -> Value {
    read_report(&probe(app, pool, Some(body)).await)
}

#[actix_web::test]
async fn a_poll_that_finds_the_job_that_cannot_exist_is_not_ok() {
    let app = spawn_app().await;
    // A scheduler that answers every poll with a job (Kubernetes-like status defaults do this).
    let scheduler = Recorder::start(|_| answer(200, json!({"status": "Running"}))).await;
    let mut manifest = simple_manifest(&scheduler.base_url);
    manifest["auth"] = json!({"type": "none"});
    let report = report_of(&app, "eager", json!({"manifest": manifest})).await;
    assert_eq!(report["reachable"], true);
    assert_eq!(report["auth"], "none");
    assert_eq!(report["poll"]["httpStatus"], 200);
    assert_eq!(report["poll"]["classified"], "running");
    assert_eq!(report["ok"], false);
    assert_eq!(codes(&report["problems"]), ["unknown_job_found"]);
}

#[actix_web::test]
async fn an_unknown_pool_is_404_and_a_bad_inline_manifest_is_422_as_put_answers_it() {
    let app = spawn_app().await;
    let scheduler = Recorder::start(job_api(TOKEN, CLIENT_SECRET)).await;

    let unknown = probe(&app, "nope", None).await;
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    assert_eq!(unknown.headers["content-type"], "application/problem+json");
    assert_eq!(unknown.json()["code"], "pool_not_found");
    // Secrets alone need the stored manifest.
    let secrets_only = probe(
        &app,
        "nope",
        Some(json!({"secrets": {"SCHED_TOKEN": TOKEN}})),
    )
    .await;
    assert_eq!(secrets_only.status, 404);

    let mut invalid = simple_manifest(&scheduler.base_url);
    invalid["poll"]["map"]["statusMap"] = json!({"Complete": "finished"});
    invalid["dispatch"]["request"]["method"] = json!("FETCH");
    let body = json!({"manifest": invalid, "secrets": {"SCHED_TOKEN": TOKEN}});
    let probed = probe(&app, "bad", Some(body.clone())).await;
    assert_eq!(probed.status, 422, "{}", probed.text);
    assert_eq!(probed.headers["content-type"], "application/problem+json");
    let put = app
        .put_pool("bad", body["manifest"].clone(), body["secrets"].clone())
        .await;
    assert_eq!(put.status, 422);
    assert_eq!(probed.json()["code"], "validation_failed");
    assert_eq!(
        probed.json()["errors"],
        put.json()["errors"],
        "the problems PUT reports"
    );
    assert_eq!(probed.json()["errors"].as_array().unwrap().len(), 2);

    let missing = probe(
        &app,
        "bad",
        Some(json!({"manifest": simple_manifest(&scheduler.base_url)})),
    )
    .await;
    assert_eq!(missing.status, 422);
    assert_eq!(missing.json()["code"], "missing_secrets");

    let unknown_field = probe(&app, "bad", Some(json!({"manifests": {}}))).await;
    assert_eq!(unknown_field.status, 422);
    assert_eq!(unknown_field.json()["errors"][0]["path"], "manifests");

    // An admin route: a reader may not probe.
    let reader = probe_as(&app, "bad", None, app.tokens.reader).await;
    assert_eq!(reader.status, 403);
    assert!(
        scheduler.seen().is_empty(),
        "nothing was sent for a refused probe"
    );
}
