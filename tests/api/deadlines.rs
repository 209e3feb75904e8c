//! No run waits forever: a default deadline from the configuration, enforced for runs at the
//! scheduler and for runs still waiting in the queue.

use crate::support::app::spawn_app_prepared;
use crate::support::client::Reply;
use crate::support::stub::{Recorder, Seen, answer};
use crate::support::wait::RUN_LIMIT;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A scheduler that accepts every job and reports it running for ever.
async fn never_finishing_scheduler() -> Recorder {
    Recorder::start(|seen| match seen.method.as_str() {
        "POST" => answer(201, json!({})),
        "GET" => answer(200, json!({"status": "Running"})),
        _ => answer(200, json!({})),
    })
    .await
}

fn created(seen: &[Seen], name: &str) -> usize {
    seen.iter()
        .filter(|s| s.method == "POST")
        .filter(|s| serde_json::from_slice::<Value>(&s.body).unwrap()["name"] == name)
        .count()
}

#[actix_web::test]
async fn a_run_at_the_scheduler_fails_at_the_configured_default_deadline_and_is_released() {
    let scheduler = never_finishing_scheduler().await;
    let app = spawn_app_prepared(
        |settings| settings.defaults.polling.deadline_seconds = Some(1),
        |_| {},
    )
    .await;
    // The manifest sets no deadline, and neither does the run.
    let manifest = crate::support::manifests::simple_manifest(&scheduler.base_url);
    let Reply { status, body, .. } = app
        .put_pool("slow", manifest, json!({"SCHED_TOKEN": "t"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let started = Instant::now();
    let Reply { status, .. } = app
        .dispatch("slow", json!({"jobId": "forever", "job": {}}))
        .await;
    assert_eq!(status, 202);
    let run = app
        .wait_for("forever", RUN_LIMIT, |run| run["released"] == true)
        .await;
    assert!(started.elapsed() >= Duration::from_millis(900), "{run}");
    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(run["failureCause"], "deadline", "{run}");
    assert!(
        scheduler
            .seen()
            .iter()
            .any(|s| s.method == "DELETE" && s.path == "/jobs/forever"),
        "not released"
    );
}

#[actix_web::test]
async fn a_queued_run_fails_at_its_deadline_without_ever_being_dispatched() {
    let scheduler = never_finishing_scheduler().await;
    let app = spawn_app_prepared(|_| {}, |_| {}).await;
    let mut manifest = crate::support::manifests::simple_manifest(&scheduler.base_url);
    manifest["limits"] = json!({"maxInFlight": 1});
    let Reply { status, body, .. } = app
        .put_pool("narrow", manifest, json!({"SCHED_TOKEN": "t"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let Reply { status, .. } = app
        .dispatch("narrow", json!({"jobId": "holder", "job": {}}))
        .await;
    assert_eq!(status, 202);
    app.wait_for("holder", RUN_LIMIT, |run| run["state"] == "running")
        .await;
    let Reply {
        status,
        body: queued,
        ..
    } = app
        .dispatch(
            "narrow",
            json!({"jobId": "waiter", "job": {}, "deadlineSeconds": 1}),
        )
        .await;
    assert_eq!((status, queued["state"].as_str()), (202, Some("queued")));

    let run = app.wait_settled("waiter").await;
    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(run["failureCause"], "deadline", "{run}");
    assert_eq!(run["released"], false, "{run}");
    assert_eq!(created(&scheduler.seen(), "waiter"), 0);
    // The holder still holds the only slot, untouched.
    let Reply { body: holder, .. } = app.get("/v1/runs/holder").await;
    assert_eq!(holder["state"], "running", "{holder}");
}

#[actix_web::test]
async fn a_default_deadline_out_of_bounds_is_refused_at_start() {
    let db = crate::support::database::TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = crate::support::app::test_settings(&db, dir.path());
    settings.defaults.polling.deadline_seconds = Some(0);
    let secrets = cattery::app::Secrets {
        master_key: Some(crate::support::MASTER_KEY.to_owned()),
        admin_token: Some(crate::support::ADMIN_TOKEN.to_owned()),
    };
    let Err(error) = cattery::app::Application::build(settings, secrets).await else {
        panic!("a zero default deadline was accepted");
    };
    assert!(
        error
            .to_string()
            .contains("defaults.polling.deadlineSeconds"),
        "{error}"
    );
}
