//! `GET /openapi.json`: the document lists exactly the routes the route table serves, and the
//! real answers of a gateway with real runs (the built-in local pool, a stub scheduler for the
//! probe) match the document's schema for their status, success and errors alike.

use crate::support::app::{TestApp, spawn_app_with};
use crate::support::client::Reply;
use crate::support::manifests::simple_manifest;
use crate::support::stub::{Recorder, job_api};
use crate::support::wait::RUN_LIMIT;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

const SCHED_TOKEN: &str = "openapi-scheduler-token-77";

/// A gateway with the built-in local pool (pool `local`, the facade's default pool).
async fn gateway() -> TestApp {
    spawn_app_with(|settings| settings.local_pool.enabled = true).await
}

/// The document, read as a client reads it: without a token.
async fn document(app: &TestApp) -> Value {
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    doc
}

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

/// A concrete path for a documented one: path parameters name things that do not exist, so
/// that no request changes anything.
fn concrete(path: &str) -> String {
    path.replace("{name}", "no-such-pool")
        .replace("{pool}", "no-such-pool")
        .replace("{job_id}", "no-such-run")
        .replace("{id}", "no-such-run")
}

/// Whether the gateway answered `method path` with its default route, the answer for a path
/// no route serves: 404 `not_found` under `/v1`, 404 `{"error": "not found"}` elsewhere.
async fn default_route_answers(app: &TestApp, method: &str, path: &str) -> bool {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let response = app
        .client
        .request(method, app.url(path))
        .bearer_auth(app.tokens.admin)
        .send()
        .await
        .unwrap();
    let streaming = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
    if streaming {
        return false;
    }
    let reply = Reply::read(response).await;
    reply.status == 404
        && (reply.body["code"] == "not_found" || reply.body == json!({"error": "not found"}))
}

#[actix_web::test]
async fn every_route_served_is_documented_and_every_documented_route_is_served() {
    let app = gateway().await;
    let doc = document(&app).await;
    let documented = operations(&doc);
    let served: BTreeSet<(String, String)> =
        cattery::routes::openapi::served().into_iter().collect();
    assert_eq!(
        documented, served,
        "the route table and the document differ"
    );
    for route in [
        "GET /healthz",
        "GET /readyz",
        "GET /openapi.json",
        "GET /health",
        "POST /jobs",
        "GET /jobs/{id}",
        "DELETE /jobs/{id}",
        "POST /v1/pools/{name}/probe",
        "GET /v1/events",
    ] {
        let (method, path) = route.split_once(' ').unwrap();
        assert!(
            documented.contains(&(method.to_owned(), path.to_owned())),
            "{route} is not documented"
        );
    }
    // The detector tells the default route apart …
    for (method, path) in [
        ("GET", "/v1/no-such-route"),
        ("PATCH", "/v1/pools"),
        ("POST", "/healthz"),
        ("GET", "/no-such-route"),
    ] {
        assert!(
            default_route_answers(&app, method, path).await,
            "{method} {path} should reach the default route"
        );
    }
    // … and no documented route reaches it.
    for (method, path) in &documented {
        assert!(
            !default_route_answers(&app, method, &concrete(path)).await,
            "{method} {path} is documented but not served"
        );
    }
}

/// The document, and the (method, path) pairs whose answers were checked.
struct Checker {
    doc: Value,
    checked: BTreeSet<(String, String)>,
}

impl Checker {
    fn response(&self, method: &str, path: &str, status: u16) -> &Value {
        let operation = &self.doc["paths"][path][method.to_lowercase()];
        assert!(operation.is_object(), "{method} {path} is not documented");
        let response = &operation["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "{method} {path} answered {status}, which the document does not list"
        );
        response
    }

    /// A validator of `schema`, with the document's components for its `$ref`s.
    fn validator(&self, schema: &Value) -> jsonschema::Validator {
        let mut wrapped = schema.as_object().unwrap().clone();
        wrapped.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
        wrapped.insert("components".into(), self.doc["components"].clone());
        jsonschema::validator_for(&Value::Object(wrapped)).unwrap()
    }

    fn validate(&self, what: &str, schema: &Value, body: &Value) {
        let validator = self.validator(schema);
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{what}: the answer does not match the document:\n{}\n{body:#}",
            errors.join("\n")
        );
    }

    /// Checks a real answer of `method path` (the documented path) against the document: its
    /// status is listed, its media type is the documented one and its body matches the schema.
    fn check(&mut self, method: &str, path: &str, reply: &Reply) -> Value {
        let response = self.response(method, path, reply.status).clone();
        let what = format!("{method} {path} → {}", reply.status);
        match response["content"].as_object() {
            None => assert!(
                reply.text.is_empty(),
                "{what}: a body where none is documented"
            ),
            Some(content) => {
                let media = reply.headers["content-type"].to_str().unwrap();
                let media = media.split(';').next().unwrap().trim();
                let Some(documented) = content.get(media) else {
                    panic!("{what}: answered {media}, documented {:?}", content.keys());
                };
                self.validate(&what, &documented["schema"], &reply.json());
            }
        }
        self.checked.insert((method.to_owned(), path.to_owned()));
        reply.body.clone()
    }

    fn component(&self, name: &str) -> Value {
        json!({"$ref": format!("#/components/schemas/{name}")})
    }
}

async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app.client.request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    Reply::read(request.send().await.unwrap()).await
}

/// Reads server-sent events until `frames` `run` events came (or the limit passed): their data.
async fn read_frames(response: reqwest::Response, frames: usize) -> Vec<Value> {
    let mut response = response;
    let mut text = String::new();
    let read = async {
        while let Some(chunk) = response.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.matches("\n\n").count() >= frames {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(20), read).await;
    text.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}

#[actix_web::test]
async fn every_documented_answer_matches_its_schema() {
    let app = gateway().await;
    let mut c = Checker {
        doc: document(&app).await,
        checked: BTreeSet::new(),
    };
    let (admin, reader) = (Some(app.tokens.admin), Some(app.tokens.reader));
    let dispatcher = Some(app.tokens.dispatcher);

    // Operations.
    c.check(
        "GET",
        "/healthz",
        &send(&app, "GET", "/healthz", None, None).await,
    );
    c.check(
        "GET",
        "/readyz",
        &send(&app, "GET", "/readyz", None, None).await,
    );
    c.check(
        "GET",
        "/openapi.json",
        &send(&app, "GET", "/openapi.json", None, None).await,
    );

    // Runs on the local pool: done, failed, one cancelled while it runs.
    let done = json!({"jobId": "oa-done", "kind": "sample", "labels": {"team": "docs"},
        "job": {"steps": 2, "stepMs": 0, "result": {"answer": 42}}});
    let reply = send(
        &app,
        "POST",
        "/v1/pools/local/runs",
        dispatcher,
        Some(done.clone()),
    )
    .await;
    assert_eq!(reply.status, 202);
    c.check("POST", "/v1/pools/{pool}/runs", &reply);
    let reply = send(&app, "POST", "/v1/pools/local/runs", dispatcher, Some(done)).await;
    assert_eq!(reply.status, 200, "an identical repeat");
    c.check("POST", "/v1/pools/{pool}/runs", &reply);
    let failing = json!({"jobId": "oa-failed", "job": {"steps": 1, "stepMs": 0, "fail": true, "message": "boom"}});
    app.submit("local", failing).await;
    let long = json!({"jobId": "oa-long", "job": {"steps": 300, "stepMs": 200}});
    app.submit("local", long).await;
    app.wait_settled("oa-done").await;
    let failed = app.wait_settled("oa-failed").await;
    assert_eq!(failed["state"], "failed");
    app.wait_for("oa-long", RUN_LIMIT, |run| run["state"] == "running")
        .await;
    for (job, state) in [
        ("oa-done", "done"),
        ("oa-failed", "failed"),
        ("oa-long", "running"),
    ] {
        let reply = send(&app, "GET", &format!("/v1/runs/{job}"), reader, None).await;
        assert_eq!(c.check("GET", "/v1/runs/{job_id}", &reply)["state"], state);
    }
    let reply = send(&app, "POST", "/v1/runs/oa-long/cancel", dispatcher, None).await;
    assert_eq!(reply.status, 202);
    c.check("POST", "/v1/runs/{job_id}/cancel", &reply);
    // Errors of the runs family.
    for (method, path, token, body, status, doc_path) in [
        (
            "POST",
            "/v1/pools/local/runs",
            dispatcher,
            Some(json!({"jobId": "oa-done", "job": {"other": 1}})),
            409,
            "/v1/pools/{pool}/runs",
        ),
        (
            "POST",
            "/v1/pools/local/runs",
            dispatcher,
            Some(json!({"jobId": "bad id!", "color": 1})),
            422,
            "/v1/pools/{pool}/runs",
        ),
        (
            "POST",
            "/v1/pools/nowhere/runs",
            dispatcher,
            Some(json!({"jobId": "x1"})),
            404,
            "/v1/pools/{pool}/runs",
        ),
        (
            "POST",
            "/v1/pools/local/runs",
            reader,
            Some(json!({"jobId": "x2"})),
            403,
            "/v1/pools/{pool}/runs",
        ),
        (
            "GET",
            "/v1/runs/nope",
            reader,
            None,
            404,
            "/v1/runs/{job_id}",
        ),
        (
            "POST",
            "/v1/runs/oa-done/cancel",
            dispatcher,
            None,
            409,
            "/v1/runs/{job_id}/cancel",
        ),
        (
            "GET",
            "/v1/runs?limit=0&state=sleeping",
            reader,
            None,
            422,
            "/v1/runs",
        ),
        ("GET", "/v1/runs", None, None, 401, "/v1/runs"),
        (
            "GET",
            "/v1/runs/nope/events",
            reader,
            None,
            404,
            "/v1/runs/{job_id}/events",
        ),
        (
            "GET",
            "/v1/events?color=red",
            reader,
            None,
            422,
            "/v1/events",
        ),
    ] {
        let reply = send(&app, method, path, token, body).await;
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.text);
        assert_eq!(reply.headers["content-type"], "application/problem+json");
        c.check(method, doc_path, &reply);
    }
    let page = c.check(
        "GET",
        "/v1/runs",
        &send(&app, "GET", "/v1/runs?pool=local&limit=2", reader, None).await,
    );
    assert_eq!(page["runs"].as_array().unwrap().len(), 2);
    assert!(page["next"].is_string(), "{page}");
    let history = c.check(
        "GET",
        "/v1/runs/{job_id}/events",
        &send(&app, "GET", "/v1/runs/oa-done/events", reader, None).await,
    );
    assert!(
        history["events"].as_array().unwrap().len() >= 3,
        "{history}"
    );

    // The change stream: each frame's data is a RunView.
    let response = app
        .client
        .get(app.url("/v1/events?jobId=oa-done"))
        .bearer_auth(app.tokens.reader)
        .header("Last-Event-ID", "0")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let media = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let documented = c.response("GET", "/v1/events", status);
    assert!(documented["content"][&media].is_object(), "{media}");
    let frames = read_frames(response, 1).await;
    assert!(!frames.is_empty());
    for frame in &frames {
        c.validate("a run event", &c.component("RunView"), frame);
    }
    c.checked.insert(("GET".into(), "/v1/events".into()));
    // The checker refuses what the document does not describe: its `$ref`s are resolved, and a
    // member the document does not list is refused.
    let run_view = c.validator(&c.component("RunView"));
    assert!(run_view.is_valid(&frames[0]));
    assert!(!run_view.is_valid(&json!({"jobId": "oa-done"})));
    let mut extra = frames[0].clone();
    extra["job"] = json!({"secret": "never shown"});
    assert!(!run_view.is_valid(&extra));
    let mut wrong = frames[0].clone();
    wrong["state"] = json!("sleeping");
    assert!(!run_view.is_valid(&wrong));

    // Pools: the local pool, and a pool on a stub scheduler that is registered, replaced,
    // probed, has its secrets replaced and is deleted.
    let scheduler = Recorder::start(job_api(SCHED_TOKEN, "unused-client-secret")).await;
    let manifest = simple_manifest(&scheduler.base_url);
    let secrets = json!({"SCHED_TOKEN": SCHED_TOKEN});
    let pool_body = json!({"manifest": manifest, "secrets": secrets});
    for status in [201, 200] {
        let reply = send(
            &app,
            "PUT",
            "/v1/pools/stub",
            admin,
            Some(pool_body.clone()),
        )
        .await;
        assert_eq!(reply.status, status, "{}", reply.text);
        c.check("PUT", "/v1/pools/{name}", &reply);
    }
    let list = c.check(
        "GET",
        "/v1/pools",
        &send(&app, "GET", "/v1/pools", reader, None).await,
    );
    assert_eq!(list["pools"].as_array().unwrap().len(), 2);
    c.check(
        "GET",
        "/v1/pools/{name}",
        &send(&app, "GET", "/v1/pools/local", reader, None).await,
    );
    let report = c.check(
        "POST",
        "/v1/pools/{name}/probe",
        &send(&app, "POST", "/v1/pools/stub/probe", admin, None).await,
    );
    assert_eq!(report["ok"], true, "{report}");
    let mut gappy = simple_manifest(&scheduler.base_url);
    gappy.as_object_mut().unwrap().remove("release");
    let report = c.check(
        "POST",
        "/v1/pools/{name}/probe",
        &send(
            &app,
            "POST",
            "/v1/pools/stub/probe",
            admin,
            Some(json!({"manifest": gappy, "secrets": {"SCHED_TOKEN": "wrong-token-000"}})),
        )
        .await,
    );
    assert_eq!(report["auth"], "rejected");
    assert_eq!(report["gaps"][0]["code"], "no_release");
    c.check(
        "PUT",
        "/v1/pools/{name}/secrets",
        &send(
            &app,
            "PUT",
            "/v1/pools/stub/secrets",
            admin,
            Some(json!({"secrets": secrets})),
        )
        .await,
    );
    let reply = send(&app, "DELETE", "/v1/pools/stub", admin, None).await;
    assert_eq!(reply.status, 204);
    c.check("DELETE", "/v1/pools/{name}", &reply);
    let mut invalid = simple_manifest(&scheduler.base_url);
    invalid["poll"]["map"]["statusMap"] = json!({"Complete": "finished"});
    // A run that keeps the local pool busy, so that deleting it is refused.
    app.submit(
        "local",
        json!({"jobId": "oa-busy", "job": {"steps": 300, "stepMs": 200}}),
    )
    .await;
    for (method, path, token, body, status, doc_path) in [
        (
            "GET",
            "/v1/pools/nope",
            reader,
            None,
            404,
            "/v1/pools/{name}",
        ),
        (
            "GET",
            "/v1/pools/Not_A_Name",
            reader,
            None,
            422,
            "/v1/pools/{name}",
        ),
        (
            "PUT",
            "/v1/pools/bad",
            admin,
            Some(json!({"manifest": invalid.clone()})),
            422,
            "/v1/pools/{name}",
        ),
        (
            "PUT",
            "/v1/pools/bad",
            reader,
            Some(json!({"manifest": invalid.clone()})),
            403,
            "/v1/pools/{name}",
        ),
        (
            "PUT",
            "/v1/pools/nope/secrets",
            admin,
            Some(json!({"secrets": {}})),
            404,
            "/v1/pools/{name}/secrets",
        ),
        (
            "DELETE",
            "/v1/pools/nope",
            admin,
            None,
            404,
            "/v1/pools/{name}",
        ),
        (
            "DELETE",
            "/v1/pools/local",
            admin,
            None,
            409,
            "/v1/pools/{name}",
        ),
        (
            "DELETE",
            "/v1/pools/local?forcibly=yes",
            admin,
            None,
            422,
            "/v1/pools/{name}",
        ),
        (
            "POST",
            "/v1/pools/nope/probe",
            admin,
            None,
            404,
            "/v1/pools/{name}/probe",
        ),
        (
            "POST",
            "/v1/pools/bad/probe",
            admin,
            Some(json!({"manifest": invalid})),
            422,
            "/v1/pools/{name}/probe",
        ),
        ("GET", "/v1/pools", None, None, 401, "/v1/pools"),
    ] {
        let reply = send(&app, method, path, token, body).await;
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.text);
        assert_eq!(reply.headers["content-type"], "application/problem+json");
        c.check(method, doc_path, &reply);
    }

    // The facade: a job through the default pool, its view while it runs and once done, a
    // cancel, and the harness's errors.
    c.check(
        "GET",
        "/health",
        &send(&app, "GET", "/health", None, None).await,
    );
    let spec = json!({"jobId": "oa-facade", "kind": "agent", "steps": 2, "stepMs": 0});
    let reply = send(&app, "POST", "/jobs", dispatcher, Some(spec)).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    c.check("POST", "/jobs", &reply);
    c.check(
        "GET",
        "/jobs/{id}",
        &send(&app, "GET", "/jobs/oa-facade", reader, None).await,
    );
    app.wait_settled("oa-facade").await;
    let view = c.check(
        "GET",
        "/jobs/{id}",
        &send(&app, "GET", "/jobs/oa-facade", reader, None).await,
    );
    assert_eq!(view["state"], "done", "{view}");
    let gone = c.check(
        "GET",
        "/jobs/{id}",
        &send(&app, "GET", "/jobs/oa-failed", reader, None).await,
    );
    assert_eq!(gone["state"], "failed", "{gone}");
    c.check(
        "DELETE",
        "/jobs/{id}",
        &send(&app, "DELETE", "/jobs/oa-facade", dispatcher, None).await,
    );
    for (method, path, token, body, status, doc_path) in [
        ("GET", "/jobs/nope", reader, None, 404, "/jobs/{id}"),
        ("DELETE", "/jobs/nope", dispatcher, None, 404, "/jobs/{id}"),
        (
            "POST",
            "/jobs",
            None,
            Some(json!({"jobId": "x3"})),
            401,
            "/jobs",
        ),
        (
            "POST",
            "/jobs",
            reader,
            Some(json!({"jobId": "x4"})),
            403,
            "/jobs",
        ),
        (
            "POST",
            "/jobs",
            dispatcher,
            Some(json!(["not", "a", "spec"])),
            400,
            "/jobs",
        ),
    ] {
        let reply = send(&app, method, path, token, body).await;
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.text);
        assert!(reply.body["error"].is_string(), "{}", reply.text);
        c.check(method, doc_path, &reply);
    }

    // Every documented route was exercised.
    assert_eq!(
        c.checked,
        operations(&c.doc),
        "routes without a checked answer"
    );
}
