//! Runs against the scripted test scheduler: what the scheduler receives, and how each kind of
//! answer (captures, statusMap, 409, 404, non-JSON, OAuth2, rejections) shows in the RunView.

use crate::scheduler::TestScheduler;
use crate::support::app::{TestApp, spawn_app};
use crate::support::manifests::{SCHED_TOKEN, scheduler_manifest};
use crate::support::stub::Scripted;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

async fn setup(
    script: Vec<Scripted>,
    adjust: impl FnOnce(&mut Value, &str),
) -> (TestApp, TestScheduler) {
    let app = spawn_app().await;
    let scheduler = TestScheduler::start(script).await;
    let mut manifest = scheduler_manifest(&scheduler.base_url);
    adjust(&mut manifest, &scheduler.base_url);
    let mut secrets = json!({"SCHED_TOKEN": SCHED_TOKEN});
    if manifest["auth"]["type"] == "oauth2_client_credentials" {
        secrets = json!({"CLIENT_ID": "client-one", "CLIENT_SECRET": "client-secret-value"});
    }
    app.register("sched", manifest, secrets).await;
    (app, scheduler)
}

#[actix_web::test]
async fn the_scheduler_receives_the_rendered_requests_and_the_view_follows_its_answers() {
    let script = vec![
        Scripted::Json(json!({"status": "Queued"})),
        Scripted::Json(json!({"status": "Running", "done": 1, "total": 2})),
        Scripted::Json(
            json!({"status": "Complete", "done": 2, "total": 2, "output": {"answer": 42}}),
        ),
    ];
    let (app, scheduler) = setup(script, |_, _| {}).await;
    let evil = "quote\" brace} newline\n {{input.jobId}} ../../etc?x=1#frag %2F";
    let job = json!({"prompt": evil, "nested": {"list": [1, "two", null]}});
    app.submit(
        "sched",
        json!({"jobId": "sched-ok-1", "kind": "agent", "job": job}),
    )
    .await;
    let run = app
        .wait_for("sched-ok-1", WAIT, |r| r["released"] == true)
        .await;
    assert_eq!(run["state"], "done");
    assert_eq!(run["result"], json!({"answer": 42}));
    assert_eq!(run["schedulerState"], "Complete");
    assert_eq!(
        run["progress"],
        json!({"completed": 2, "inProgress": 0, "total": 2})
    );

    let dispatches = scheduler.seen_with("POST", "/jobs");
    assert_eq!(dispatches.len(), 1);
    let dispatch = &dispatches[0];
    assert_eq!(
        dispatch.header("authorization"),
        Some(format!("Bearer {SCHED_TOKEN}").as_str())
    );
    assert_eq!(dispatch.header("x-job-kind"), Some("agent"));
    assert_eq!(dispatch.header("content-type"), Some("application/json"));
    let body = dispatch.json();
    assert_eq!(body["name"], "sched-ok-1");
    assert_eq!(
        body["spec"], job,
        "the job is forwarded verbatim, hostile text included"
    );
    assert_eq!(body["attempt"], 1, "a lone variable keeps its JSON type");
    assert_eq!(body["note"], "id=sched-ok-1");

    let polls = scheduler.seen_with("GET", "/jobs/sched-ok-1");
    assert!(polls.len() >= 3);
    assert!(
        polls.iter().all(|p| p.query == "uid=uid-1"),
        "the captured uid is used: {:?}",
        polls[0].query
    );
    assert_eq!(scheduler.seen_with("DELETE", "/jobs/sched-ok-1").len(), 1);

    let events = app.events("sched-ok-1").await;
    let states: Vec<&str> = events.iter().filter_map(|e| e["to"].as_str()).collect();
    assert_eq!(
        states,
        [
            "queued",
            "dispatching",
            "running",
            "pending",
            "running",
            "done"
        ]
    );
}

#[actix_web::test]
async fn an_existing_job_answering_409_is_reattached_not_duplicated() {
    let (app, scheduler) = setup(
        vec![Scripted::Json(json!({"status": "Complete"}))],
        |_, _| {},
    )
    .await;
    let created = cattery::scheduler::http::plain_client()
        .unwrap()
        .post(format!("{}/jobs", scheduler.base_url))
        .json(&json!({"name": "dup-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    app.dispatch("sched", json!({"jobId": "dup-1"})).await;
    let run = app.wait_settled("dup-1").await;
    assert_eq!(run["state"], "done");
    assert_eq!(scheduler.created("dup-1"), 1);
    let events = app.events("dup-1").await;
    assert!(
        events.iter().any(|e| e["detail"]
            .as_str()
            .is_some_and(|d| d.contains("re-attached"))),
        "{events:?}"
    );
}

#[actix_web::test]
async fn a_job_the_scheduler_forgets_is_dispatched_again_then_fails_as_lost() {
    let (app, scheduler) = setup(
        vec![Scripted::Json(json!({"status": "Running"}))],
        |m, _| {
            m["lost"] = json!({"redispatch": 1});
        },
    )
    .await;
    scheduler.forget_jobs();
    app.dispatch("sched", json!({"jobId": "lost-1"})).await;
    let run = app.wait_settled("lost-1").await;
    assert_eq!(run["state"], "failed");
    assert_eq!(run["failureCause"], "lost");
    assert_eq!(run["attempts"]["redispatch"], 1);
    assert_eq!(run["dispatchId"], "lost-1-1");
    let names: Vec<Value> = scheduler
        .seen_with("POST", "/jobs")
        .iter()
        .map(|s| s.json()["name"].clone())
        .collect();
    assert_eq!(names, [json!("lost-1"), json!("lost-1-1")]);
}

#[actix_web::test]
async fn unreadable_polls_fail_the_run_with_poll_errors_and_say_why() {
    let (app, _scheduler) = setup(
        vec![Scripted::Status(200, "<html>gateway says hi</html>")],
        |_, _| {},
    )
    .await;
    app.dispatch("sched", json!({"jobId": "garbled-1"})).await;
    let run = app.wait_settled("garbled-1").await;
    assert_eq!(run["state"], "failed");
    assert_eq!(run["failureCause"], "poll_errors");
    assert!(run["error"].as_str().unwrap().contains("not JSON"), "{run}");
    let events = app.events("garbled-1").await;
    assert_eq!(
        events.iter().filter(|e| e["type"] == "poll_error").count(),
        3,
        "{events:?}"
    );
}

#[actix_web::test]
async fn a_rejected_dispatch_fails_at_once_and_a_retryable_one_is_retried_then_fails() {
    let (app, scheduler) = setup(vec![], |_, _| {}).await;
    scheduler.set_dispatch_status(422);
    app.dispatch("sched", json!({"jobId": "rejected-1"})).await;
    let run = app.wait_settled("rejected-1").await;
    assert_eq!(run["failureCause"], "dispatch_rejected");
    assert!(run["error"].as_str().unwrap().contains("422"), "{run}");
    assert_eq!(run["attempts"]["dispatch"], 1);
    assert_eq!(run["released"], false);

    scheduler.set_dispatch_status(503);
    app.dispatch("sched", json!({"jobId": "unavailable-1"}))
        .await;
    let run = app.wait_settled("unavailable-1").await;
    assert_eq!(run["failureCause"], "dispatch_rejected");
    assert_eq!(run["attempts"]["dispatch"], 3);
    let retries = app
        .events("unavailable-1")
        .await
        .iter()
        .filter(|e| e["type"] == "retry")
        .count();
    assert_eq!(retries, 2);
}

#[actix_web::test]
async fn oauth2_tokens_are_fetched_once_and_sent_as_bearer() {
    let (app, scheduler) = setup(
        vec![Scripted::Json(json!({"status": "Complete"}))],
        |m, base| {
            m["auth"] = json!({
                "type": "oauth2_client_credentials",
                "tokenUrl": format!("{base}/oauth/token"),
                "clientIdSecretRef": {"key": "CLIENT_ID"},
                "clientSecretSecretRef": {"key": "CLIENT_SECRET"},
                "scope": "jobs:write"
            });
        },
    )
    .await;
    for id in ["oauth-1", "oauth-2"] {
        app.dispatch("sched", json!({"jobId": id})).await;
        assert_eq!(app.wait_settled(id).await["state"], "done");
    }
    assert_eq!(scheduler.tokens_issued(), 1);
    let token_calls = scheduler.seen_with("POST", "/oauth/token");
    let form = String::from_utf8_lossy(&token_calls[0].body).to_string();
    assert!(
        form.contains("client_id=client-one") && form.contains("scope=jobs%3Awrite"),
        "{form}"
    );
    for seen in scheduler
        .seen()
        .iter()
        .filter(|s| s.path.starts_with("/jobs"))
    {
        assert_eq!(seen.header("authorization"), Some("Bearer issued-token-1"));
    }
}

#[actix_web::test]
async fn a_deadline_fails_and_releases_a_run_that_never_finishes() {
    let (app, scheduler) = setup(
        vec![Scripted::Json(json!({"status": "Running"}))],
        |_, _| {},
    )
    .await;
    app.dispatch("sched", json!({"jobId": "slow-1", "deadlineSeconds": 1}))
        .await;
    let run = app
        .wait_for("slow-1", WAIT, |r| r["released"] == true)
        .await;
    assert_eq!(run["state"], "failed");
    assert_eq!(run["failureCause"], "deadline");
    assert_eq!(scheduler.seen_with("DELETE", "/jobs/slow-1").len(), 1);
}

#[actix_web::test]
async fn an_unmapped_status_reads_as_running_and_is_recorded_once() {
    let script = vec![
        Scripted::Json(json!({"status": "Wibbling"})),
        Scripted::Json(json!({"status": "Wibbling"})),
        Scripted::Json(json!({"status": "Complete"})),
    ];
    let (app, _scheduler) = setup(script, |_, _| {}).await;
    app.dispatch("sched", json!({"jobId": "wibble-1"})).await;
    let run = app.wait_settled("wibble-1").await;
    assert_eq!(run["state"], "done");
    let events = app.events("wibble-1").await;
    let unmapped: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "unmapped_status")
        .collect();
    assert_eq!(unmapped.len(), 1);
    assert!(unmapped[0]["detail"].as_str().unwrap().contains("Wibbling"));
}

#[actix_web::test]
async fn replacing_the_manifest_keeps_runs_going_and_their_next_calls_use_the_new_revision() {
    let script = vec![
        Scripted::Json(json!({"status": "Running"})),
        Scripted::Json(json!({"status": "Running"})),
        Scripted::Json(json!({"status": "Running"})),
        Scripted::Json(json!({"status": "Running"})),
        Scripted::Json(json!({"status": "Finito", "output": {"ok": true}})),
    ];
    let (app, scheduler) = setup(script, |m, _| {
        m["polling"] = json!({"intervalMs": 150, "maxIntervalMs": 150, "maxConsecutiveErrors": 3});
    })
    .await;
    app.dispatch("sched", json!({"jobId": "swap-1"})).await;
    app.wait_for("swap-1", WAIT, |r| r["state"] == "running")
        .await;
    // The new revision maps the scheduler's final word, which the old one did not know.
    let mut manifest = scheduler_manifest(&scheduler.base_url);
    manifest["polling"] =
        json!({"intervalMs": 30, "maxIntervalMs": 100, "maxConsecutiveErrors": 3});
    manifest["poll"]["map"]["statusMap"]["Finito"] = json!("done");
    let replaced = app
        .put_pool("sched", manifest, json!({"SCHED_TOKEN": SCHED_TOKEN}))
        .await;
    assert_eq!(replaced.status, 200);
    assert_eq!(replaced.json()["revision"], 2);
    let run = app.wait_settled("swap-1").await;
    assert_eq!(run["state"], "done", "{run}");
    assert_eq!(run["manifestRevision"], 2);
    assert_eq!(scheduler.created("swap-1"), 1);
}

#[actix_web::test]
async fn a_failed_job_gets_the_tail_of_its_log_in_the_error() {
    let script = vec![Scripted::Json(
        json!({"status": "Failed", "message": "exit code 3"}),
    )];
    let (app, scheduler) = setup(script, |m, _| {
        m["failureLog"] = json!({"request": {"method": "GET", "path": "/logs/{{run.dispatchId}}"}});
    })
    .await;
    app.dispatch("sched", json!({"jobId": "logged-1"})).await;
    let run = app.wait_settled("logged-1").await;
    assert_eq!(run["state"], "failed");
    assert_eq!(
        run["error"],
        "exit code 3; log tail: starting logged-1 the job said: boom"
    );
    let fetches = scheduler.seen_with("GET", "/logs/logged-1");
    assert_eq!(fetches.len(), 1);
    assert_eq!(
        fetches[0].header("authorization"),
        Some(format!("Bearer {SCHED_TOKEN}").as_str())
    );
}
