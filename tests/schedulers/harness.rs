//! `manifests/harness.yaml` against a test scheduler that speaks the Cat-Factory executor-harness
//! job protocol as its contract describes it (`CATFACTORY.md` §6):
//! - `GET /health` → 200 `{"status": "ok", "capabilities": […]}`, never gated;
//! - every other route needs `x-harness-secret` when the harness has a secret: 401
//!   `{"error": "unauthorized"}` otherwise;
//! - `POST /jobs` (body: the job spec, with `jobId`) → 202 `{"jobId", "state", "capabilities"}`,
//!   a repeat of a known `jobId` re-attaches (202 with its state); 400 `{"error"}` without a
//!   `jobId`; 404 `{"error": "unknown job kind '<k>'"}` for a kind other than agent or inline;
//! - `GET /jobs/{id}` → 200 the job view (`id`, `state`, `startedAt`, `heartbeatAt`, `phase`,
//!   `progress`, `result`, `error`, `failureCause`, `detail`), 404 `{"error": "job not found"}`;
//! - `DELETE /jobs/{id}` → aborts the job, 200 `{"jobId", "state"}` with the state it reached;
//!   idempotent for a finished job; 404 for an unknown id.
//!
//! The tests play the agent inside the harness: they move each job's view on.

use crate::setup::{fast, spawn_app, unique};
use crate::support::app::TestApp;
use crate::support::client::event_types;
use crate::support::manifests::shipped_manifest;
use crate::support::stub::{Recorder, Seen};
use actix_web::HttpResponse;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const SECRET: &str = "harness-shared-secret-77";
const CAPABILITIES: [&str; 4] = ["mcpServers", "skills", "designImages", "generateImages"];

#[derive(Default)]
struct State {
    /// job id → (the spec received, the job view)
    jobs: HashMap<String, (Value, Map<String, Value>)>,
}

struct Harness {
    server: Recorder,
    state: Arc<Mutex<State>>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Harness {
    async fn start() -> Harness {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let server = Recorder::start(move |seen| answer(&shared, seen)).await;
        Harness { server, state }
    }

    /// Plays the agent: changes the view of job `id`.
    fn update(&self, id: &str, change: Value) {
        let mut state = self.state.lock().unwrap();
        let (_, view) = state.jobs.get_mut(id).expect("the job exists");
        for (key, value) in change.as_object().unwrap() {
            view.insert(key.clone(), value.clone());
        }
        view.insert("heartbeatAt".to_owned(), json!(now_ms()));
    }

    fn spec(&self, id: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .jobs
            .get(id)
            .map(|(spec, _)| spec.clone())
    }

    fn forget(&self, id: &str) {
        self.state.lock().unwrap().jobs.remove(id);
    }

    fn seen(&self, method: &str) -> Vec<Seen> {
        self.server
            .seen()
            .into_iter()
            .filter(|s| s.method == method)
            .collect()
    }
}

fn answer(state: &Mutex<State>, seen: &Seen) -> HttpResponse {
    let mut state = state.lock().unwrap();
    let path = seen.decoded_path();
    if seen.method == "GET" && path == "/health" {
        return HttpResponse::Ok().json(json!({"status": "ok", "capabilities": CAPABILITIES}));
    }
    if seen.header("x-harness-secret") != Some(SECRET) {
        return HttpResponse::Unauthorized().json(json!({"error": "unauthorized"}));
    }
    match (seen.method.as_str(), path.strip_prefix("/jobs")) {
        ("POST", Some("")) => {
            let spec = seen.json();
            let Some(id) = spec.get("jobId").and_then(Value::as_str).map(str::to_owned) else {
                return HttpResponse::BadRequest().json(json!({"error": "jobId is required"}));
            };
            let kind = spec.get("kind").and_then(Value::as_str).unwrap_or("agent");
            if kind != "agent" && kind != "inline" {
                return HttpResponse::NotFound()
                    .json(json!({"error": format!("unknown job kind '{kind}'")}));
            }
            let view = state.jobs.entry(id.clone()).or_insert_with(|| {
                let mut view = Map::new();
                view.insert("id".to_owned(), json!(id));
                view.insert("state".to_owned(), json!("running"));
                view.insert("phase".to_owned(), json!("starting"));
                view.insert("startedAt".to_owned(), json!(now_ms()));
                view.insert("heartbeatAt".to_owned(), json!(now_ms()));
                (spec.clone(), view)
            });
            let current = view.1["state"].clone();
            HttpResponse::Accepted()
                .json(json!({"jobId": id, "state": current, "capabilities": CAPABILITIES}))
        }
        ("GET", Some(rest)) if rest.starts_with('/') => match state.jobs.get(&rest[1..]) {
            Some((_, view)) => HttpResponse::Ok().json(view),
            None => HttpResponse::NotFound().json(json!({"error": "job not found"})),
        },
        ("DELETE", Some(rest)) if rest.starts_with('/') => match state.jobs.get_mut(&rest[1..]) {
            Some((_, view)) => {
                if view["state"] == "running" {
                    view.insert("state".to_owned(), json!("failed"));
                    view.insert("error".to_owned(), json!("the job was aborted"));
                    view.insert("phase".to_owned(), json!("failed"));
                }
                HttpResponse::Ok().json(json!({"jobId": &rest[1..], "state": view["state"]}))
            }
            None => HttpResponse::NotFound().json(json!({"error": "job not found"})),
        },
        _ => HttpResponse::NotFound().json(json!({"error": "not found"})),
    }
}

async fn setup(harness: &Harness, secret: &str) -> (TestApp, String) {
    let app = spawn_app().await;
    let pool = unique("harness");
    let mut manifest = shipped_manifest("harness.yaml");
    manifest["baseUrl"] = json!(harness.server.base_url);
    fast(&mut manifest);
    app.register(&pool, manifest, json!({"HARNESS_SECRET": secret}))
        .await;
    (app, pool)
}

/// A job spec as Cat-Factory sends it (with a short-lived credential in it).
fn spec(job_id: &str) -> Value {
    json!({
        "jobId": job_id, "kind": "agent", "mode": "coding", "model": "m-1",
        "systemPrompt": "be \"careful\"\n", "userPrompt": "fix it",
        "ghToken": "ghs_secretvalue", "repo": {"owner": "o", "name": "r", "baseBranch": "main"},
        "instanceType": "large"
    })
}

#[actix_web::test]
async fn every_job_view_field_reaches_the_run_view() {
    let harness = Harness::start().await;
    let (app, pool) = setup(&harness, SECRET).await;
    let job_id = unique("harness-ok");
    app.submit(
        &pool,
        json!({"jobId": job_id, "kind": "agent", "job": spec(&job_id)}),
    )
    .await;

    let run = app
        .wait_for(&job_id, WAIT, |run| run["detail"] == "starting")
        .await;
    // The spec went through verbatim, with the secret header.
    assert_eq!(harness.spec(&job_id).unwrap(), spec(&job_id));
    let post = &harness.seen("POST")[0];
    assert_eq!(post.header("x-harness-secret"), Some(SECRET));
    assert_eq!(run["state"], "running");
    assert_eq!(run["externalId"], job_id.as_str());

    harness.update(
        &job_id,
        json!({"phase": "agent", "progress": {"completed": 2, "inProgress": 1, "total": 5}}),
    );
    let run = app
        .wait_for(&job_id, WAIT, |run| run["detail"] == "agent")
        .await;
    assert_eq!(
        run["progress"],
        json!({"completed": 2, "inProgress": 1, "total": 5})
    );
    let heartbeat: i64 = run["heartbeatAt"].as_str().unwrap().parse().unwrap();
    assert!(heartbeat > 0);

    let result = json!({"summary": "done it", "prUrl": "https://git.example/pr/1", "branch": "b",
        "pushed": true, "custom": {"k": [1, 2]}, "usage": {"inputTokens": 10, "outputTokens": 5}});
    harness.update(
        &job_id,
        json!({"state": "done", "phase": "done", "result": result,
        "progress": {"completed": 5, "inProgress": 0, "total": 5}}),
    );
    let run = app.wait_released(&job_id, "done", WAIT).await;
    assert_eq!(run["result"], result);
    assert_eq!(run["schedulerState"], "done");
    assert_eq!(run["progress"]["completed"], 5);
    assert!(run.get("job").is_none(), "a run view never holds the job");
    assert_eq!(harness.seen("DELETE").len(), 1);
}

#[actix_web::test]
async fn a_failed_job_brings_its_error_cause_and_detail() {
    let harness = Harness::start().await;
    let (app, pool) = setup(&harness, SECRET).await;
    let job_id = unique("harness-fail");
    app.submit(&pool, json!({"jobId": job_id, "job": spec(&job_id)}))
        .await;
    app.wait_for(&job_id, WAIT, |run| run["state"] == "running")
        .await;
    harness.update(
        &job_id,
        json!({"state": "failed", "phase": "failed",
        "error": "no tool call completed for 30 minutes", "failureCause": "no-tool-progress",
        "detail": "last tool: bash"}),
    );

    let run = app.wait_released(&job_id, "failed", WAIT).await;
    assert_eq!(run["error"], "no tool call completed for 30 minutes");
    assert_eq!(run["failureCause"], "no-tool-progress");
    assert_eq!(run["detail"], "last tool: bash");
    assert!(run["result"].is_null(), "{run}");
}

#[actix_web::test]
async fn cancelling_aborts_the_job_in_the_harness() {
    let harness = Harness::start().await;
    let (app, pool) = setup(&harness, SECRET).await;
    let job_id = unique("harness-cancel");
    app.submit(&pool, json!({"jobId": job_id, "job": spec(&job_id)}))
        .await;
    app.wait_for(&job_id, WAIT, |run| run["state"] == "running")
        .await;

    assert_eq!(app.cancel(&job_id).await.status, 202);
    app.wait_released(&job_id, "cancelled", WAIT).await;
    let deletes = harness.seen("DELETE");
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].decoded_path(), format!("/jobs/{job_id}"));
    let state = harness.state.lock().unwrap();
    assert_eq!(
        state.jobs[&job_id].1["state"], "failed",
        "the harness aborted the job"
    );
}

#[actix_web::test]
async fn a_wrong_secret_is_refused_and_fails_the_dispatch() {
    let harness = Harness::start().await;
    let (app, pool) = setup(&harness, "not-the-secret").await;
    let job_id = unique("harness-401");
    app.submit(&pool, json!({"jobId": job_id, "job": spec(&job_id)}))
        .await;

    let run = app
        .wait_for(&job_id, WAIT, |run| run["state"] == "failed")
        .await;
    assert_eq!(run["failureCause"], "dispatch_rejected");
    assert!(run["error"].as_str().unwrap().contains("401"), "{run}");
    assert!(harness.spec(&job_id).is_none());
}

#[actix_web::test]
async fn a_job_the_harness_forgot_reads_as_lost() {
    let harness = Harness::start().await;
    let (app, pool) = setup(&harness, SECRET).await;
    let job_id = unique("harness-lost");
    app.submit(&pool, json!({"jobId": job_id, "job": spec(&job_id)}))
        .await;
    app.wait_for(&job_id, WAIT, |run| run["state"] == "running")
        .await;
    harness.forget(&job_id);

    let run = app
        .wait_for(&job_id, WAIT, |run| run["state"] == "failed")
        .await;
    assert_eq!(run["failureCause"], "lost");
}

#[actix_web::test]
async fn a_run_survives_a_restart_of_the_harness_gateway() {
    let harness = Harness::start().await;
    let (app, pool) = setup(&harness, SECRET).await;
    let job_id = unique("harness-restart");
    app.submit(&pool, json!({"jobId": job_id, "job": spec(&job_id)}))
        .await;
    app.wait_for(&job_id, WAIT, |run| run["state"] == "running")
        .await;

    harness.server.restart(Duration::from_secs(2)).await;
    harness.update(
        &job_id,
        json!({"state": "done", "result": {"summary": "ok"}}),
    );
    let run = app.wait_released(&job_id, "done", WAIT).await;
    assert_eq!(run["result"], json!({"summary": "ok"}));
    let types = event_types(&app.events(&job_id).await);
    assert!(
        types.iter().any(|t| t == "poll_error" || t == "retry"),
        "{types:?}"
    );
}
