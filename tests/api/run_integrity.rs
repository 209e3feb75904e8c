//! A run never sends a job other than the one submitted, never repeats a call whose outcome it
//! already has, and never keeps the job's values in the scheduler text it stores.

use crate::support::app::{TestApp, spawn_app_prepared};
use crate::support::client::Reply;
use crate::support::stub::{Recorder, Seen, answer};
use crate::support::wait::RUN_LIMIT;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The job's own secret: a value the scheduler may echo back.
const JOB_TOKEN: &str = "plain-job-value-0123456789";

fn manifest(base_url: &str, max_in_flight: u32) -> Value {
    let mut manifest = crate::support::manifests::simple_manifest(base_url);
    manifest["limits"] = json!({"maxInFlight": max_in_flight});
    manifest
}

/// A gateway with one pool on `scheduler`, registered.
async fn app_with_pool(pool: &str, scheduler: &Recorder, max_in_flight: u32) -> TestApp {
    let app = spawn_app_prepared(|_| {}, |_| {}).await;
    let Reply { status, body, .. } = app
        .put_pool(
            pool,
            manifest(&scheduler.base_url, max_in_flight),
            json!({"SCHED_TOKEN": "t"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    app
}

fn dispatched_names(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .filter(|s| s.method == "POST" && s.path == "/jobs")
        .map(|s| {
            let body: Value = serde_json::from_slice(&s.body).unwrap();
            body["name"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

#[actix_web::test]
async fn a_job_body_that_cannot_be_decrypted_fails_the_run_and_nothing_is_sent() {
    // "hold" stays running until cancelled; every other job would run to completion.
    let scheduler = Recorder::start(|seen| match (seen.method.as_str(), seen.path.as_str()) {
        ("POST", "/jobs") => answer(201, json!({})),
        ("GET", "/jobs/hold") => answer(200, json!({"status": "Running"})),
        ("GET", _) => answer(200, json!({"status": "Complete"})),
        _ => answer(200, json!({})),
    })
    .await;
    let app = app_with_pool("one", &scheduler, 1).await;
    let Reply { status, .. } = app
        .dispatch("one", json!({"jobId": "hold", "job": {"n": 1}}))
        .await;
    assert_eq!(status, 202);
    app.wait_for("hold", RUN_LIMIT, |run| run["state"] == "running")
        .await;
    let Reply {
        status,
        body: queued,
        ..
    } = app
        .dispatch(
            "one",
            json!({"jobId": "victim", "job": {"token": JOB_TOKEN}}),
        )
        .await;
    assert_eq!((status, queued["state"].as_str()), (202, Some("queued")));

    // The body can no longer be opened (as when the key that sealed it is gone).
    app.db
        .update_job_sealed("victim", b"not an envelope sealed by any configured key");
    let Reply { status, .. } = app.get("/v1/runs/hold").await;
    assert_eq!(status, 200);
    assert_eq!(app.cancel("hold").await.status, 202);

    let run = app.wait_settled("victim").await;
    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(run["failureCause"], "job_unreadable", "{run}");
    assert!(
        run["error"].as_str().unwrap().contains("nothing was sent"),
        "{run}"
    );
    assert_eq!(dispatched_names(&scheduler.seen()), ["hold"]);
}

#[actix_web::test]
async fn a_failed_commit_is_retried_without_repeating_the_accepted_dispatch() {
    let scheduler = Recorder::start(|seen| match (seen.method.as_str(), seen.path.as_str()) {
        ("POST", "/jobs") => {
            // Time for the test to take the runs table away before the answer lands.
            std::thread::sleep(Duration::from_millis(600));
            answer(201, json!({}))
        }
        ("GET", _) => answer(200, json!({"status": "Complete"})),
        _ => answer(200, json!({})),
    })
    .await;
    let app = app_with_pool("flaky-db", &scheduler, 4).await;
    let Reply { status, .. } = app
        .dispatch("flaky-db", json!({"jobId": "once", "job": {"n": 1}}))
        .await;
    assert_eq!(status, 202);

    // While the dispatch call is out, the runs table disappears: committing its outcome fails.
    let start = Instant::now();
    while dispatched_names(&scheduler.seen()).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10), "no dispatch");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    app.db.execute_sql("ALTER TABLE runs RENAME TO runs_away");
    // Long enough for the accepted dispatch to land and its commit to fail more than once.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    app.db.execute_sql("ALTER TABLE runs_away RENAME TO runs");

    let run = app.wait_settled("once").await;
    assert_eq!(run["state"], "done", "{run}");
    assert_eq!(run["attempts"]["dispatch"], 1, "{run}");
    assert_eq!(dispatched_names(&scheduler.seen()), ["once"]);
}

#[actix_web::test]
async fn job_values_echoed_in_a_poll_answer_are_redacted_before_they_are_stored() {
    let scheduler = Recorder::start(|seen| match (seen.method.as_str(), seen.path.as_str()) {
        ("POST", "/jobs") => answer(201, json!({})),
        ("GET", _) => answer(
            200,
            json!({"status": "Failed", "message": format!("clone failed, the job said: {JOB_TOKEN}")}),
        ),
        _ => answer(200, json!({})),
    })
    .await;
    let app = app_with_pool("echo", &scheduler, 4).await;
    let Reply { status, .. } = app
        .dispatch(
            "echo",
            json!({"jobId": "leaky", "job": {"repo": {"token": JOB_TOKEN}}}),
        )
        .await;
    assert_eq!(status, 202);
    let run = app.wait_settled("leaky").await;
    assert_eq!(run["state"], "failed", "{run}");
    let error = run["error"].as_str().unwrap();
    assert!(error.contains("clone failed"), "{run}");
    assert!(error.contains("[redacted]"), "{run}");
    assert!(!run.to_string().contains(JOB_TOKEN), "{run}");
    let Reply { body: events, .. } = app.get("/v1/runs/leaky/events").await;
    assert!(!events.to_string().contains(JOB_TOKEN), "{events}");
}
