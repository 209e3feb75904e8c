//! `manifests/nomad.yaml` against a test scheduler that follows Nomad's documented HTTP API
//! (Nomad cannot be installed on the test machine).
//!
//! What the test scheduler implements, after Nomad's API reference and server code:
//! - ACLs: every call needs `X-Nomad-Token`; a wrong one answers 403 `Permission denied`.
//! - `POST /v1/job/:job_id/dispatch` (`?namespace=`, `?idempotency_token=`, body
//!   `{"Payload": base64, "Meta": {…}}`): the parent must be a registered parameterized job
//!   (404 `parameterized job "x" not found`); the payload must be present when the job requires
//!   it and at most 64 KiB, and every meta key must be declared (otherwise Nomad's 500 with the
//!   reason); a dispatch whose idempotency token matches a child job that still exists returns
//!   that child instead of a new one. 200 `{"Index", "JobCreateIndex", "EvalCreateIndex",
//!   "EvalID", "DispatchedJobID": "<parent>/dispatch-<unix time>-<8 hex>"}`.
//! - `GET /v1/job/:job_id/allocations`: the job's allocation stubs (`ID`, `EvalID`, `Name`,
//!   `NodeID`, `JobID`, `TaskGroup`, `DesiredStatus`, `ClientStatus`, `ClientDescription`,
//!   `TaskStates` with `State`, `Failed` and `Events` carrying `DisplayMessage`, `CreateIndex`,
//!   …); `[]` for a job Nomad does not know.
//! - `DELETE /v1/job/:job_id?purge=true`: stops the job's allocations and purges it; 200 with
//!   empty ids for a job Nomad does not know.
//!
//! Job ids are read from the percent-decoded path, as Nomad's Go server does, so a dispatched
//! id's `/` travels as `%2F`. The tests play Nomad's client: they move allocations through
//! pending, running and complete, failed or lost.

use crate::setup::{fast, spawn_app, unique};
use crate::support::app::TestApp;
use crate::support::client::event_types;
use crate::support::manifests::shipped_manifest;
use crate::support::stub::{Recorder, Seen};
use crate::support::wait::eventually;
use actix_web::HttpResponse;
use base64::Engine as _;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "nomad-acl-token-3f9c";
const PARENT: &str = "cattery-runner";
/// Nomad's dispatch payload limit (64 KiB since Nomad 1.6).
const PAYLOAD_LIMIT: usize = 65536;

struct ParameterizedJob {
    payload: &'static str,
    meta_required: Vec<&'static str>,
    meta_optional: Vec<&'static str>,
}

struct Alloc {
    id: String,
    eval_id: String,
    client_status: String,
    desired_status: String,
    task_state: String,
    task_failed: bool,
    events: Vec<Value>,
    create_index: u64,
    modify_index: u64,
}

struct Job {
    namespace: String,
    idempotency_token: String,
    payload: Vec<u8>,
    meta: BTreeMap<String, String>,
    allocs: Vec<Alloc>,
}

#[derive(Default)]
struct State {
    index: u64,
    parameterized: BTreeMap<String, ParameterizedJob>,
    jobs: BTreeMap<String, Job>,
    /// The next dispatch is committed but its answer is lost (a 500, as a leader change mid-call).
    lose_next_answer: bool,
}

impl State {
    fn next_index(&mut self) -> u64 {
        self.index += 1;
        self.index
    }
}

/// The Nomad test scheduler.
struct Nomad {
    server: Recorder,
    state: Arc<Mutex<State>>,
}

impl Nomad {
    async fn start() -> Nomad {
        let mut state = State::default();
        state.parameterized.insert(
            PARENT.to_owned(),
            ParameterizedJob {
                payload: "required",
                meta_required: vec![],
                meta_optional: vec!["cattery_job_id", "cattery_job_kind", "cattery_pool"],
            },
        );
        let state = Arc::new(Mutex::new(state));
        let shared = state.clone();
        let server = Recorder::start(move |seen| answer(&shared, seen)).await;
        Nomad { server, state }
    }

    fn seen(&self, method: &str, suffix: &str) -> Vec<Seen> {
        self.server
            .seen()
            .into_iter()
            .filter(|s| s.method == method && s.decoded_path().ends_with(suffix))
            .collect()
    }

    /// The dispatched job ids whose idempotency token is `token`.
    fn dispatched(&self, token: &str) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .jobs
            .iter()
            .filter(|(_, job)| job.idempotency_token == token)
            .map(|(id, _)| id.clone())
            .collect()
    }

    async fn wait_dispatched(&self, token: &str) -> String {
        eventually("the dispatch", WAIT, || async {
            self.dispatched(token).into_iter().next()
        })
        .await
    }

    /// Plays Nomad's client: moves the newest allocation of `job` on.
    fn update(&self, job: &str, client_status: &str, task_state: &str, failed: bool, event: Value) {
        let mut state = self.state.lock().unwrap();
        let index = state.next_index();
        let alloc = state
            .jobs
            .get_mut(job)
            .and_then(|j| j.allocs.last_mut())
            .expect("the job has an allocation");
        alloc.client_status = client_status.to_owned();
        alloc.task_state = task_state.to_owned();
        alloc.task_failed = failed;
        alloc.events.push(event);
        alloc.modify_index = index;
    }

    fn run_task(&self, job: &str) {
        self.update(
            job,
            "running",
            "running",
            false,
            task_event("Started", 0, ""),
        );
    }

    fn finish_task(&self, job: &str, exit_code: i64, message: &str) {
        let failed = exit_code != 0;
        self.update(
            job,
            if failed { "failed" } else { "complete" },
            "dead",
            failed,
            task_event("Terminated", exit_code, message),
        );
        if failed {
            self.update(
                job,
                "failed",
                "dead",
                true,
                task_event("Not Restarting", 0, ""),
            );
        }
    }

    fn is_purged(&self, job: &str) -> bool {
        !self.state.lock().unwrap().jobs.contains_key(job)
    }
}

/// A task event as Nomad reports it, with the display message Nomad derives.
fn task_event(kind: &str, exit_code: i64, message: &str) -> Value {
    let display = match kind {
        "Terminated" => {
            let mut parts = vec![format!("Exit Code: {exit_code}")];
            if !message.is_empty() {
                parts.push(format!("Exit Message: {message:?}"));
            }
            parts.join(", ")
        }
        "Started" => "Task started by client".to_owned(),
        "Not Restarting" => "Policy allows no restarts".to_owned(),
        _ => message.to_owned(),
    };
    json!({
        "Type": kind, "Time": chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
        "FailsTask": kind == "Not Restarting", "RestartReason": "", "SetupError": "",
        "DriverError": "", "ExitCode": exit_code, "Signal": 0, "Message": message,
        "KillTimeout": 0, "KillError": "", "KillReason": "", "StartDelay": 0,
        "DownloadError": "", "ValidationError": "", "DiskLimit": 0, "FailedSibling": "",
        "VaultError": "", "TaskSignalReason": "", "TaskSignal": "", "DriverMessage": "",
        "DisplayMessage": display, "Details": {}
    })
}

fn alloc_stub(job_id: &str, namespace: &str, alloc: &Alloc) -> Value {
    json!({
        "ID": alloc.id, "EvalID": alloc.eval_id, "Name": format!("{job_id}.run[0]"),
        "Namespace": namespace, "NodeID": "f1b2c3d4-0000-4000-8000-000000000001",
        "NodeName": "client-1", "JobID": job_id, "JobType": "batch", "JobVersion": 0,
        "TaskGroup": "run", "DesiredStatus": alloc.desired_status, "DesiredDescription": "",
        "ClientStatus": alloc.client_status,
        "ClientDescription": match alloc.client_status.as_str() {
            "failed" => "Failed tasks",
            "complete" => "All tasks have completed",
            "running" => "Tasks are running",
            "lost" => "alloc is lost since its node is down",
            _ => "No tasks have started",
        },
        "TaskStates": {"job": {
            "State": alloc.task_state, "Failed": alloc.task_failed, "Restarts": 0,
            "StartedAt": null, "FinishedAt": null, "Events": alloc.events}},
        "CreateIndex": alloc.create_index, "ModifyIndex": alloc.modify_index,
        "CreateTime": 1_700_000_000_000_000_000_i64, "ModifyTime": 1_700_000_000_000_000_000_i64
    })
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn text(status: u16, body: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .content_type("text/plain")
        .body(body.to_owned())
}

fn answer(state: &Mutex<State>, seen: &Seen) -> HttpResponse {
    let mut state = state.lock().unwrap();
    if seen.header("x-nomad-token") != Some(TOKEN) {
        return text(403, "Permission denied");
    }
    let query = seen.query_params();
    let namespace = query
        .get("namespace")
        .cloned()
        .unwrap_or_else(|| "default".to_owned());
    let path = seen.decoded_path();
    let Some(rest) = path.strip_prefix("/v1/job/") else {
        return text(404, "Invalid URL");
    };
    if let Some(parent) = rest.strip_suffix("/dispatch") {
        if seen.method != "POST" && seen.method != "PUT" {
            return text(405, "Invalid method");
        }
        return dispatch(&mut state, parent, &namespace, seen);
    }
    if let Some(job) = rest.strip_suffix("/allocations") {
        if seen.method != "GET" {
            return text(405, "Invalid method");
        }
        let list: Vec<Value> = state
            .jobs
            .get(job)
            .filter(|j| j.namespace == namespace)
            .map(|j| {
                j.allocs
                    .iter()
                    .map(|a| alloc_stub(job, &namespace, a))
                    .collect()
            })
            .unwrap_or_default();
        return HttpResponse::Ok().json(list);
    }
    match seen.method.as_str() {
        "DELETE" => {
            let purge = query.get("purge").is_some_and(|v| v == "true");
            let index = state.next_index();
            let Some(job) = state
                .jobs
                .get_mut(rest)
                .filter(|j| j.namespace == namespace)
            else {
                return HttpResponse::Ok().json(json!({
                    "EvalID": "", "EvalCreateIndex": 0, "JobModifyIndex": 0, "Index": 0}));
            };
            for alloc in &mut job.allocs {
                alloc.desired_status = "stop".to_owned();
                if alloc.client_status == "pending" || alloc.client_status == "running" {
                    alloc.client_status = "complete".to_owned();
                    alloc.task_state = "dead".to_owned();
                    alloc.events.push(task_event("Killed", 0, ""));
                }
            }
            if purge {
                state.jobs.remove(rest);
            }
            HttpResponse::Ok().json(json!({
                "EvalID": uuid(), "EvalCreateIndex": index, "JobModifyIndex": index, "Index": index}))
        }
        _ => text(405, "Invalid method"),
    }
}

fn dispatch(state: &mut State, parent: &str, namespace: &str, seen: &Seen) -> HttpResponse {
    let Ok(request) = serde_json::from_slice::<Value>(&seen.body) else {
        return text(400, "invalid character in request body");
    };
    let payload = match request.get("Payload") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(encoded)) => {
            match base64::engine::general_purpose::STANDARD.decode(encoded) {
                Ok(bytes) => bytes,
                Err(_) => return text(400, "illegal base64 data in Payload"),
            }
        }
        Some(_) => return text(400, "json: cannot unmarshal Payload into []uint8"),
    };
    let meta: BTreeMap<String, String> = match request.get("Meta") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(value) => match serde_json::from_value(value.clone()) {
            Ok(meta) => meta,
            Err(_) => return text(400, "json: cannot unmarshal Meta into map[string]string"),
        },
    };
    let Some(job) = state.parameterized.get(parent) else {
        return text(404, &format!("parameterized job {parent:?} not found"));
    };
    if job.payload == "required" && payload.is_empty() {
        return text(
            500,
            "Payload is not provided but required by parameterized job",
        );
    }
    if job.payload == "forbidden" && !payload.is_empty() {
        return text(500, "Payload provided but forbidden by parameterized job");
    }
    if payload.len() > PAYLOAD_LIMIT {
        return text(
            500,
            &format!(
                "Payload exceeds maximum size; {} > {PAYLOAD_LIMIT}",
                payload.len()
            ),
        );
    }
    let missing: Vec<&str> = job
        .meta_required
        .iter()
        .copied()
        .filter(|k| !meta.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return text(
            500,
            &format!("Dispatch did not provide required meta keys: {missing:?}"),
        );
    }
    let unpermitted: Vec<&String> = meta
        .keys()
        .filter(|k| {
            !job.meta_required.contains(&k.as_str()) && !job.meta_optional.contains(&k.as_str())
        })
        .collect();
    if !unpermitted.is_empty() {
        return text(
            500,
            &format!("Dispatch provided unpermitted meta keys: {unpermitted:?}"),
        );
    }
    let token = seen
        .query_params()
        .get("idempotency_token")
        .cloned()
        .unwrap_or_default();
    if !token.is_empty()
        && let Some((id, _)) = state
            .jobs
            .iter()
            .find(|(id, j)| id.starts_with(&format!("{parent}/")) && j.idempotency_token == token)
    {
        let id = id.clone();
        let index = state.index;
        return HttpResponse::Ok().json(json!({
            "Index": index, "JobCreateIndex": index, "EvalCreateIndex": 0, "EvalID": "",
            "DispatchedJobID": id}));
    }
    let index = state.next_index();
    let id = format!(
        "{parent}/dispatch-{}-{}",
        chrono::Utc::now().timestamp(),
        &uuid()[..8]
    );
    let eval_id = uuid();
    state.jobs.insert(
        id.clone(),
        Job {
            namespace: namespace.to_owned(),
            idempotency_token: token,
            payload,
            meta,
            // The scheduler places the allocation; the client has not started it yet.
            allocs: vec![Alloc {
                id: uuid(),
                eval_id: eval_id.clone(),
                client_status: "pending".to_owned(),
                desired_status: "run".to_owned(),
                task_state: "pending".to_owned(),
                task_failed: false,
                events: vec![task_event("Received", 0, "")],
                create_index: index,
                modify_index: index,
            }],
        },
    );
    if state.lose_next_answer {
        state.lose_next_answer = false;
        return text(500, "rpc error: EOF");
    }
    HttpResponse::Ok().json(json!({
        "Index": index, "JobCreateIndex": index, "EvalCreateIndex": index, "EvalID": eval_id,
        "DispatchedJobID": id}))
}

async fn setup(nomad: &Nomad, adjust: impl FnOnce(&mut Value)) -> (TestApp, String) {
    let app = spawn_app().await;
    let pool = unique("nomad");
    let mut manifest = shipped_manifest("nomad.yaml");
    manifest["baseUrl"] = json!(nomad.server.base_url);
    fast(&mut manifest);
    adjust(&mut manifest);
    app.register(&pool, manifest, json!({"NOMAD_TOKEN": TOKEN}))
        .await;
    (app, pool)
}

#[actix_web::test]
async fn a_dispatched_job_runs_to_completion_and_is_purged() {
    let nomad = Nomad::start().await;
    let (app, pool) = setup(&nomad, |_| {}).await;
    let job_id = unique("nomad-ok");
    let job = json!({"prompt": "it's \"quoted\"\nline two", "n": [1, null], "ü": "✓"});
    app.submit(&pool, json!({"jobId": job_id, "kind": "agent", "job": job}))
        .await;

    let dispatched = nomad.wait_dispatched(&job_id).await;
    let calls = nomad.seen("POST", "/dispatch");
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.decoded_path(), format!("/v1/job/{PARENT}/dispatch"));
    assert_eq!(call.query_params()["namespace"], "default");
    assert_eq!(call.query_params()["idempotency_token"], job_id.as_str());
    {
        let state = nomad.state.lock().unwrap();
        let stored = &state.jobs[&dispatched];
        assert_eq!(
            serde_json::from_slice::<Value>(&stored.payload).unwrap(),
            job
        );
        assert_eq!(stored.meta["cattery_job_id"], job_id);
        assert_eq!(stored.meta["cattery_job_kind"], "agent");
        assert_eq!(stored.meta["cattery_pool"], pool);
    }

    let run = app
        .wait_for(&job_id, WAIT, |run| run["schedulerState"] == "pending")
        .await;
    assert_eq!(run["state"], "pending");
    assert_eq!(run["externalId"], dispatched.as_str());
    nomad.run_task(&dispatched);
    app.wait_for(&job_id, WAIT, |run| run["state"] == "running")
        .await;
    nomad.finish_task(&dispatched, 0, "");

    let run = app.wait_released(&job_id, "done", WAIT).await;
    assert_eq!(run["schedulerState"], "complete");
    assert_eq!(run["result"]["jobId"], dispatched.as_str());
    assert_eq!(run["result"]["taskGroup"], "run");
    assert!(nomad.is_purged(&dispatched));
    // The dispatched id's `/` travelled encoded, as Nomad's own client sends it.
    let polls = nomad.seen("GET", "/allocations");
    assert!(
        polls
            .iter()
            .all(|s| s.decoded_path() == format!("/v1/job/{dispatched}/allocations"))
    );
    let deletes = nomad.seen("DELETE", &dispatched);
    assert_eq!(deletes[0].query_params()["purge"], "true");
}

#[actix_web::test]
async fn a_failed_allocation_fails_the_run_with_the_task_event() {
    let nomad = Nomad::start().await;
    let (app, pool) = setup(&nomad, |_| {}).await;
    let job_id = unique("nomad-fail");
    app.submit(&pool, json!({"jobId": job_id, "job": {}})).await;
    let dispatched = nomad.wait_dispatched(&job_id).await;
    nomad.run_task(&dispatched);
    nomad.finish_task(&dispatched, 3, "boom");

    let run = app.wait_released(&job_id, "failed", WAIT).await;
    assert_eq!(run["schedulerState"], "failed");
    assert_eq!(
        run["error"],
        r#"Terminated: Exit Code: 3, Exit Message: "boom""#
    );
    assert!(run["result"].is_null(), "{run}");
    assert!(nomad.is_purged(&dispatched));
}

#[actix_web::test]
async fn a_lost_dispatch_answer_is_retried_under_the_same_idempotency_token() {
    let nomad = Nomad::start().await;
    nomad.state.lock().unwrap().lose_next_answer = true;
    let (app, pool) = setup(&nomad, |_| {}).await;
    let job_id = unique("nomad-idem");
    app.submit(&pool, json!({"jobId": job_id, "job": {}})).await;

    let run = app
        .wait_for(&job_id, WAIT, |run| run["schedulerState"] == "pending")
        .await;
    assert_eq!(
        nomad.seen("POST", "/dispatch").len(),
        2,
        "the dispatch was retried"
    );
    let dispatched = nomad.dispatched(&job_id);
    assert_eq!(
        dispatched.len(),
        1,
        "one job despite two dispatches: {dispatched:?}"
    );
    assert_eq!(run["externalId"], dispatched[0].as_str());
    nomad.run_task(&dispatched[0]);
    nomad.finish_task(&dispatched[0], 0, "");
    app.wait_released(&job_id, "done", WAIT).await;
}

#[actix_web::test]
async fn a_lost_allocation_is_dispatched_again_under_a_new_token() {
    let nomad = Nomad::start().await;
    let (app, pool) = setup(&nomad, |m| m["lost"] = json!({"redispatch": 1})).await;
    let job_id = unique("nomad-lost");
    app.submit(&pool, json!({"jobId": job_id, "job": {"x": 1}}))
        .await;
    let first = nomad.wait_dispatched(&job_id).await;
    nomad.run_task(&first);
    nomad.update(
        &first,
        "lost",
        "dead",
        true,
        task_event("Killing", 0, "node down"),
    );

    let second = nomad.wait_dispatched(&format!("{job_id}-1")).await;
    assert_ne!(first, second);
    nomad.run_task(&second);
    nomad.finish_task(&second, 0, "");
    let run = app.wait_released(&job_id, "done", WAIT).await;
    assert_eq!(run["attempts"]["redispatch"], 1);
    assert_eq!(run["externalId"], second.as_str());
}

#[actix_web::test]
async fn cancelling_stops_and_purges_the_dispatched_job() {
    let nomad = Nomad::start().await;
    let (app, pool) = setup(&nomad, |_| {}).await;
    let job_id = unique("nomad-cancel");
    app.submit(&pool, json!({"jobId": job_id, "job": {}})).await;
    let dispatched = nomad.wait_dispatched(&job_id).await;
    nomad.run_task(&dispatched);
    app.wait_for(&job_id, WAIT, |run| run["state"] == "running")
        .await;

    assert_eq!(app.cancel(&job_id).await.status, 202);
    app.wait_released(&job_id, "cancelled", WAIT).await;
    assert!(nomad.is_purged(&dispatched));
    assert_eq!(nomad.seen("DELETE", &dispatched).len(), 1);
}

#[actix_web::test]
async fn a_run_survives_a_restart_of_the_scheduler() {
    let nomad = Nomad::start().await;
    let (app, pool) = setup(&nomad, |_| {}).await;
    let job_id = unique("nomad-restart");
    app.submit(&pool, json!({"jobId": job_id, "job": {}})).await;
    let dispatched = nomad.wait_dispatched(&job_id).await;
    nomad.run_task(&dispatched);
    app.wait_for(&job_id, WAIT, |run| run["state"] == "running")
        .await;

    let polls_before = nomad.seen("GET", "/allocations").len();
    nomad.server.restart(Duration::from_secs(2)).await;
    nomad.finish_task(&dispatched, 0, "");
    let run = app.wait_released(&job_id, "done", WAIT).await;
    assert_eq!(run["schedulerState"], "complete");
    assert!(nomad.seen("GET", "/allocations").len() > polls_before);
    let types = event_types(&app.events(&job_id).await);
    assert!(
        types.iter().any(|t| t == "poll_error" || t == "retry"),
        "{types:?}"
    );
}

#[actix_web::test]
async fn a_wrong_token_is_refused_and_fails_the_dispatch() {
    let nomad = Nomad::start().await;
    let app = spawn_app().await;
    let pool = unique("nomad-acl");
    let mut manifest = shipped_manifest("nomad.yaml");
    manifest["baseUrl"] = json!(nomad.server.base_url);
    fast(&mut manifest);
    app.register(&pool, manifest, json!({"NOMAD_TOKEN": "not-the-token"}))
        .await;
    let job_id = unique("nomad-acl");
    app.submit(&pool, json!({"jobId": job_id, "job": {}})).await;

    let run = app
        .wait_for(&job_id, WAIT, |run| run["state"] == "failed")
        .await;
    assert_eq!(run["failureCause"], "dispatch_rejected");
    assert!(run["error"].as_str().unwrap().contains("403"), "{run}");
    assert!(nomad.dispatched(&job_id).is_empty());
}
