//! The runner-protocol facade (`/health`, `/jobs`): its gate, routing rules, re-attach, the
//! harness job view, cancellation, and a job going through two cattery instances, the outer
//! one driving the inner one's facade through a Cat-Factory transparent manifest.

use crate::catfactory::{job_view, register, spec};
use crate::catfactory_scheduler::CfScheduler;
use crate::support::app::{TestApp, spawn_app, spawn_app_with};
use crate::support::gateway::LocalPool;
use crate::support::stub::Scripted;
use crate::support::{DISPATCHER_TOKEN, READER_TOKEN};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const HARNESS_SECRET: &str = "harness-shared-secret-0123";

/// A cattery/v1 pool on the test scheduler speaking the harness protocol.
fn harness_pool(scheduler: &CfScheduler) -> Value {
    json!({
        "apiVersion": "cattery/v1",
        "baseUrl": scheduler.base_url,
        "polling": {"intervalMs": 30, "maxIntervalMs": 100},
        "dispatch": {"request": {"method": "POST", "path": "/jobs", "body": "{{input.job}}"}},
        "poll": {"request": {"method": "GET", "path": "/jobs/{{input.jobId}}"}, "map": {"state": "state", "result": "result"}},
        "release": {"request": {"method": "DELETE", "path": "/jobs/{{input.jobId}}"}}
    })
}

async fn post_job(app: &TestApp, body: &Value, auth: Auth<'_>) -> (u16, Value) {
    let request = app.client.post(app.url("/jobs")).json(body);
    let response = auth.apply(request).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn delete_job(app: &TestApp, job_id: &str) -> (u16, Value) {
    let response = app
        .client
        .delete(app.url(&format!("/jobs/{job_id}")))
        .bearer_auth(DISPATCHER_TOKEN)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Bearer(&'a str),
    Secret(&'a str),
}

impl Auth<'_> {
    fn apply(self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::Secret(secret) => request.header("x-harness-secret", secret),
        }
    }
}

async fn facade_app(default_pool: &str, routes: Vec<cattery::config::FacadeRoute>) -> TestApp {
    let default_pool = default_pool.to_owned();
    spawn_app_with(move |settings| {
        settings.facade.default_pool = default_pool;
        settings.facade.routes = routes;
        settings.facade.harness_secret = HARNESS_SECRET.to_owned();
    })
    .await
}

fn route(kind: &str, pool: &str) -> cattery::config::FacadeRoute {
    cattery::config::FacadeRoute {
        kind: Some(kind.to_owned()),
        mode: None,
        instance_type: None,
        cloud_provider: None,
        image: None,
        pool: pool.to_owned(),
        capabilities: None,
    }
}

#[actix_web::test]
async fn health_is_open_and_jobs_need_a_token_or_the_harness_secret() {
    let app = facade_app("agents", vec![]).await;
    let scheduler = CfScheduler::start(vec![Scripted::Json(json!({"state": "running"}))]).await;
    app.register("agents", harness_pool(&scheduler), json!({}))
        .await;

    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({"status": "ok", "capabilities": []})
    );

    let job = spec("gate-1");
    assert_eq!(
        post_job(&app, &job, Auth::None).await,
        (401, json!({"error": "unauthorized"}))
    );
    assert_eq!(
        post_job(&app, &job, Auth::Secret("wrong-secret")).await,
        (401, json!({"error": "unauthorized"}))
    );
    assert_eq!(
        post_job(&app, &job, Auth::Bearer(READER_TOKEN)).await,
        (403, json!({"error": "forbidden"}))
    );
    let (status, body) = post_job(&app, &job, Auth::Secret(HARNESS_SECRET)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body,
        json!({"jobId": "gate-1", "state": "running", "capabilities": []})
    );
    let (status, body) = post_job(&app, &spec("gate-2"), Auth::Bearer(DISPATCHER_TOKEN)).await;
    assert_eq!((status, &body["state"]), (202, &json!("running")), "{body}");

    let unauthenticated = app
        .client
        .get(app.url("/jobs/gate-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status().as_u16(), 401);
    let with_secret = app
        .client
        .get(app.url("/jobs/gate-1"))
        .header("x-harness-secret", HARNESS_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(with_secret.status().as_u16(), 200);
    let (status, view) = job_view(&app, "gate-1").await;
    assert_eq!(status, 200);
    assert_eq!(view["id"], "gate-1");
}

#[actix_web::test]
async fn jobs_are_routed_by_the_rules_and_a_repeat_reattaches() {
    let app = facade_app("agents", vec![route("deploy", "deployers")]).await;
    let scheduler = CfScheduler::start(vec![Scripted::Json(json!({"state": "running"}))]).await;
    for pool in ["agents", "deployers"] {
        app.register(pool, harness_pool(&scheduler), json!({}))
            .await;
    }
    let agent = spec("route-agent");
    let mut deploy = spec("route-deploy");
    deploy["kind"] = json!("deploy");
    for job in [&agent, &deploy] {
        let (status, body) = post_job(&app, job, Auth::Bearer(DISPATCHER_TOKEN)).await;
        assert_eq!(status, 202, "{body}");
    }
    let agent_run = app.run("route-agent").await;
    assert_eq!(agent_run["pool"], "agents");
    assert_eq!(agent_run["kind"], "agent");
    assert_eq!(app.run("route-deploy").await["pool"], "deployers");

    // The spec is the job, forwarded verbatim.
    app.wait_for("route-agent", WAIT, |r| r["state"] == "running")
        .await;
    let dispatched = scheduler
        .seen_with("POST", "/jobs")
        .into_iter()
        .find(|s| s.json()["jobId"] == "route-agent")
        .unwrap();
    assert_eq!(dispatched.json(), agent);

    // Cat-Factory re-dispatches the same id on a replay: re-attach, never a second job.
    let mut replay = agent.clone();
    replay["userPrompt"] = json!("a different body");
    let (status, body) = post_job(&app, &replay, Auth::Bearer(DISPATCHER_TOKEN)).await;
    assert_eq!(status, 202);
    assert_eq!(
        body,
        json!({"jobId": "route-agent", "state": "running", "capabilities": []})
    );
    assert_eq!(
        scheduler
            .seen_with("POST", "/jobs")
            .iter()
            .filter(|s| s.json()["jobId"] == "route-agent")
            .count(),
        1
    );

    let (status, body) = post_job(
        &app,
        &json!({"kind": "agent"}),
        Auth::Bearer(DISPATCHER_TOKEN),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("jobId"));
    let (status, body) = job_view(&app, "no-such-job").await;
    assert_eq!((status, body), (404, json!({"error": "job not found"})));

    // DELETE cancels, waits for the run to settle, and is idempotent.
    let (status, body) = delete_job(&app, "route-agent").await;
    assert_eq!(
        (status, body),
        (200, json!({"jobId": "route-agent", "state": "failed"}))
    );
    let run = app.run("route-agent").await;
    assert_eq!(run["state"], "cancelled");
    let (status, body) = delete_job(&app, "route-agent").await;
    assert_eq!(
        (status, body),
        (200, json!({"jobId": "route-agent", "state": "failed"}))
    );
    let (status, _) = delete_job(&app, "no-such-job").await;
    assert_eq!(status, 404);
    let (_, view) = job_view(&app, "route-agent").await;
    assert_eq!(view["state"], "failed");
    assert!(view.get("failureCause").is_none(), "{view}");
    assert!(
        view["detail"]
            .as_str()
            .unwrap()
            .contains("cattery failure cause: cancelled"),
        "{view}"
    );
}

#[actix_web::test]
async fn a_job_without_a_pool_is_refused_like_an_unknown_kind() {
    let app = facade_app("", vec![route("agent", "missing-pool")]).await;
    let (status, body) = post_job(&app, &spec("nowhere-1"), Auth::Bearer(DISPATCHER_TOKEN)).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("missing-pool"),
        "{body}"
    );
    let mut inline = spec("nowhere-2");
    inline["kind"] = json!("inline");
    let (status, body) = post_job(&app, &inline, Auth::Bearer(DISPATCHER_TOKEN)).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("unknown job kind 'inline'"),
        "{body}"
    );
}

/// The reference "raw harness behind a sticky gateway" manifest (CATFACTORY.md §9.4), pointed
/// at another cattery's facade.
fn passthrough_manifest(base_url: &str) -> Value {
    json!({
        "providerId": "harness-passthrough",
        "label": "Harness via sticky gateway",
        "baseUrl": base_url,
        "auth": {"type": "bearer", "secretRef": {"key": "GW_TOKEN"}},
        "dispatch": {"method": "POST", "pathTemplate": "/jobs", "bodyTemplate": "{{input.job}}"},
        "poll": {"method": "GET", "pathTemplate": "/jobs/{{input.jobId}}"},
        "release": {"method": "DELETE", "pathTemplate": "/jobs/{{input.jobId}}"},
        "response": {
            "statusPath": "state",
            "resultPath": "result",
            "errorPath": "error",
            "failureCausePath": "failureCause",
            "detailPath": "detail",
            "heartbeatPath": "heartbeatAt",
            "progressCompletedPath": "progress.completed",
            "progressInProgressPath": "progress.inProgress",
            "progressTotalPath": "progress.total",
            "followUpsPath": "followUps",
            "callMetricsPath": "callMetrics",
            "validationReportPath": "validationReport",
            "reproductionReportPath": "reproductionReport",
            "sliceReviewsPath": "sliceReviews",
            "toolServersPath": "toolServers",
            "dispatchCapabilitiesPath": "capabilities"
        }
    })
}

#[actix_web::test]
async fn a_job_goes_through_two_catteries_one_the_runner_pool_of_the_other() {
    // Inner: a cattery whose facade sends every job to its local pool (a separate process).
    let token = "local-pool-token-0123456789";
    let local = LocalPool::start(token).await;
    let inner = facade_app("local", vec![]).await;
    local.register_on(&inner).await;

    // Outer: a cattery with the inner one registered as a Cat-Factory pool.
    let outer = spawn_app().await;
    let pool = register(
        &outer,
        "inner",
        passthrough_manifest(&inner.address),
        json!({"GW_TOKEN": DISPATCHER_TOKEN}),
    )
    .await;
    assert_eq!(pool["format"], "cat-factory");

    let mut job = spec("chain-1");
    job["steps"] = json!(3);
    job["stepMs"] = json!(30);
    job["result"] = json!({"summary": "three steps", "prUrl": "https://github.com/o/r/pull/3",
                           "ralphVerdict": "continue", "stats": {"steps": 3}});
    outer
        .submit(
            "inner",
            json!({"jobId": "chain-1", "kind": "agent", "job": job}),
        )
        .await;

    let outer_run = outer
        .wait_for("chain-1", WAIT, |r| r["released"] == true)
        .await;
    assert_eq!(outer_run["state"], "done", "{outer_run}");
    assert_eq!(
        outer_run["result"],
        json!({"summary": "three steps", "prUrl": "https://github.com/o/r/pull/3"}),
        "the outer pool reads the inner job view with Cat-Factory's result coercion"
    );
    assert_eq!(outer_run["progress"]["total"], 3, "{outer_run}");

    // The inner cattery ran the same job on its local pool, the spec forwarded verbatim, and
    // the outer release cancelled nothing (the job was done) but reached the inner facade.
    let inner_run = inner
        .wait_for("chain-1", WAIT, |r| r["released"] == true)
        .await;
    assert_eq!(inner_run["pool"], "local");
    assert_eq!(inner_run["kind"], "agent");
    assert_eq!(inner_run["state"], "done");
    assert_eq!(
        inner_run["result"], job["result"],
        "a cattery/v1 manifest passes the whole result through"
    );
    let (_, view) = job_view(&inner, "chain-1").await;
    assert_eq!(view["state"], "done");
    assert_eq!(view["result"]["ralphVerdict"], "continue");
    assert!(view["heartbeatAt"].as_i64().is_some(), "{view}");
}

#[actix_web::test]
async fn fields_cat_factory_cannot_map_pass_through_a_cattery_manifest() {
    let app = facade_app("harness", vec![]).await;
    let scheduler = CfScheduler::start(vec![]).await;
    let mut manifest = harness_pool(&scheduler);
    manifest["poll"]["map"] = json!({
        "state": "state",
        "result": "result",
        "fields": {"phase": "phase", "coldStart": "coldStart", "spans": "spans",
                   "harnessShutdown": "harnessShutdown", "evicted": "evicted"}
    });
    app.register("harness", manifest, json!({})).await;
    let result = json!({"summary": "s", "ralphVerdict": "continue", "stats": {"turns": 2},
                        "infraSetup": {"db": "ok"}, "preview": {"url": "https://preview.example"}});
    scheduler.script(
        "pass-1",
        vec![
            Scripted::Json(json!({"state": "running", "phase": "clone", "coldStart": {"atMs": 5, "message": "pulling"},
                               "spans": [{"name": "clone", "ms": 40}], "evicted": "transient"})),
            Scripted::Json(json!({"state": "done", "phase": "done", "harnessShutdown": true, "result": result})),
        ],
    );
    let (status, _) = post_job(&app, &spec("pass-1"), Auth::Bearer(DISPATCHER_TOKEN)).await;
    assert_eq!(status, 202);
    let run = app.wait_settled("pass-1").await;
    assert_eq!(run["state"], "done");
    assert_eq!(run["result"], result, "the result is passed through whole");
    assert_eq!(
        run["fields"],
        json!({"phase": "done", "coldStart": {"atMs": 5, "message": "pulling"},
               "spans": [{"name": "clone", "ms": 40}], "harnessShutdown": true, "evicted": "transient"})
    );
    let (_, view) = job_view(&app, "pass-1").await;
    assert_eq!(view["state"], "done");
    assert_eq!(view["phase"], "done");
    assert_eq!(view["coldStart"]["message"], "pulling");
    assert_eq!(view["harnessShutdown"], true);
    assert_eq!(view["evicted"], "transient");
    assert_eq!(view["result"]["ralphVerdict"], "continue");
    assert_eq!(view["result"]["preview"]["url"], "https://preview.example");
}
