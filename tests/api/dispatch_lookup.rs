//! A dispatch retried after an attempt that may have reached the scheduler (a timeout, a 503)
//! finds the job that attempt created instead of creating a second one, and an "already exists"
//! answer that is not a 409 re-attaches: against the fault-injecting scheduler, over HTTP, and
//! across a `kill -9` of the real gateway while it waits for a dispatch answer.

use crate::faulty::{Fault, FaultyScheduler};
use crate::support::app::{TestApp, spawn_app};
use crate::support::database::TestDatabase;
use crate::support::gateway::{Gateway, Launch};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// A scheduler without idempotency, Slurm-like: the create answer gives an id that every later
/// call uses, a second create of the same name fails, and the only way to find a job by its
/// name is to list the jobs.
fn listing_manifest(base_url: &str) -> Value {
    json!({
        "apiVersion": "cattery/v1",
        "baseUrl": base_url,
        "limits": {"timeoutMs": 300},
        "retry": {"maxAttempts": 4, "initialBackoffMs": 20, "maxBackoffMs": 100},
        "polling": {"intervalMs": 30, "maxIntervalMs": 100, "maxConsecutiveErrors": 4},
        "dispatch": {
            "request": {"method": "POST", "path": "/jobs", "body": {"name": "{{run.dispatchId}}"}},
            "expect": [201],
            "capture": {"job": "metadata.name"}
        },
        "lookup": {
            "request": {"method": "GET", "path": "/jobs"},
            "items": "jobs",
            "id": "name",
            "capture": {"job": "name"}
        },
        "poll": {
            "request": {"method": "GET", "path": "/jobs/{{capture.job}}"},
            "map": {"state": "status", "statusMap": {"Complete": "done"}, "result": "output"}
        },
        "release": {"request": {"method": "DELETE", "path": "/jobs/{{capture.job}}"}}
    })
}

fn creates(scheduler: &FaultyScheduler) -> usize {
    scheduler
        .arrivals()
        .iter()
        .filter(|a| a.method == "POST" && a.path == "/jobs")
        .count()
}

async fn reattach_events(app: &TestApp, job_id: &str) -> usize {
    app.events(job_id)
        .await
        .iter()
        .filter(|e| {
            e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("re-attached"))
        })
        .count()
}

#[actix_web::test]
async fn a_dispatch_retried_after_a_timeout_or_503_finds_the_created_job_instead_of_duplicating_it()
{
    let app = spawn_app().await;
    let scheduler = FaultyScheduler::start(2).await;
    app.register("listing", listing_manifest(&scheduler.base_url), json!({}))
        .await;

    for (job_id, fault) in [
        ("created-then-timed-out", Fault::DoThenHang),
        ("created-then-503", Fault::DoThenUnavailable),
    ] {
        let before = creates(&scheduler);
        scheduler.push_faults([fault]);
        app.submit("listing", json!({"jobId": job_id})).await;
        let run = app
            .wait_for(job_id, WAIT, |r| {
                r["released"] == true || r["state"] == "failed"
            })
            .await;
        assert_eq!(run["state"], "done", "{run}");
        assert_eq!(run["result"], json!({"name": job_id}), "{run}");
        assert_eq!(
            scheduler.created(job_id),
            1,
            "{job_id}: one job at the scheduler"
        );
        assert_eq!(creates(&scheduler) - before, 1, "{job_id}: one create sent");
        assert_eq!(reattach_events(&app, job_id).await, 1, "{job_id}");
    }
    // The lookup found the job through the list and re-attached with its captured name: every
    // poll and the release addressed it.
    let arrivals = scheduler.arrivals();
    assert!(
        arrivals
            .iter()
            .any(|a| a.method == "GET" && a.path == "/jobs")
    );
    assert!(
        arrivals
            .iter()
            .any(|a| a.method == "DELETE" && a.path == "/jobs/created-then-503")
    );
}

#[actix_web::test]
async fn a_dispatch_retried_after_a_503_with_nothing_created_is_sent_again() {
    let app = spawn_app().await;
    let scheduler = FaultyScheduler::start(1).await;
    app.register("listing", listing_manifest(&scheduler.base_url), json!({}))
        .await;
    scheduler.push_faults([Fault::Unavailable]);
    app.submit("listing", json!({"jobId": "refused-first"}))
        .await;
    let run = app
        .wait_for("refused-first", WAIT, |r| {
            r["released"] == true || r["state"] == "failed"
        })
        .await;
    assert_eq!(run["state"], "done", "{run}");
    assert_eq!(run["attempts"]["dispatch"], 2, "{run}");
    assert_eq!(scheduler.created("refused-first"), 1);
    assert_eq!(
        creates(&scheduler),
        2,
        "the lookup found nothing: sent again"
    );
    assert_eq!(reattach_events(&app, "refused-first").await, 0);
}

#[actix_web::test]
async fn without_a_lookup_a_poll_by_dispatch_id_is_asked_before_a_retried_dispatch() {
    let app = spawn_app().await;
    let scheduler = FaultyScheduler::start(1).await;
    // No lookup and no alreadyExists: a second create would be refused with a 409.
    let manifest = json!({
        "apiVersion": "cattery/v1",
        "baseUrl": scheduler.base_url,
        "limits": {"timeoutMs": 300},
        "retry": {"maxAttempts": 4, "initialBackoffMs": 20, "maxBackoffMs": 100},
        "polling": {"intervalMs": 30, "maxIntervalMs": 100, "maxConsecutiveErrors": 4},
        "dispatch": {
            "request": {"method": "POST", "path": "/jobs", "body": {"name": "{{run.dispatchId}}"}},
            "expect": [201]
        },
        "poll": {
            "request": {"method": "GET", "path": "/jobs/{{run.dispatchId}}"},
            "map": {"state": "status", "statusMap": {"Complete": "done"}, "result": "output"}
        }
    });
    app.register("by-name", manifest, json!({})).await;
    scheduler.push_faults([Fault::DoThenUnavailable]);
    app.submit("by-name", json!({"jobId": "polled-first"}))
        .await;
    let run = app
        .wait_for("polled-first", WAIT, |r| {
            r["state"] == "done" || r["state"] == "failed"
        })
        .await;
    assert_eq!(run["state"], "done", "{run}");
    assert_eq!(scheduler.created("polled-first"), 1);
    assert_eq!(creates(&scheduler), 1);
}

#[actix_web::test]
async fn an_already_exists_answer_that_is_not_a_409_reattaches_instead_of_failing() {
    let app = spawn_app().await;
    let scheduler = FaultyScheduler::start(1).await;
    // Podman's answer to a pod name in use.
    scheduler.set_exists_answer(
        500,
        json!({"cause": "pod already exists", "message": "adding pod to state: name \"x\" is in use: pod already exists", "response": 500}),
    );
    let manifest = json!({
        "apiVersion": "cattery/v1",
        "baseUrl": scheduler.base_url,
        "limits": {"timeoutMs": 300},
        "retry": {"maxAttempts": 3, "initialBackoffMs": 20, "maxBackoffMs": 100},
        "polling": {"intervalMs": 30, "maxIntervalMs": 100, "maxConsecutiveErrors": 4},
        "dispatch": {
            "request": {"method": "POST", "path": "/jobs", "body": {"name": "{{run.dispatchId}}"}},
            "expect": [201],
            "alreadyExists": [{"status": 500, "when": "cause == 'pod already exists'"}]
        },
        "poll": {
            "request": {"method": "GET", "path": "/jobs/{{run.dispatchId}}"},
            "map": {"state": "status", "statusMap": {"Complete": "done"}, "result": "output"}
        }
    });
    app.register("podlike", manifest, json!({})).await;
    // The job exists before the run is dispatched (an earlier gateway created it).
    let created = app
        .client
        .post(format!("{}/jobs", scheduler.base_url))
        .json(&json!({"name": "exists-already"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    app.submit("podlike", json!({"jobId": "exists-already"}))
        .await;
    let run = app
        .wait_for("exists-already", WAIT, |r| {
            r["state"] == "done" || r["state"] == "failed"
        })
        .await;
    assert_eq!(run["state"], "done", "{run}");
    assert_eq!(
        run["attempts"]["dispatch"], 1,
        "re-attached at the first answer: {run}"
    );
    assert_eq!(scheduler.created("exists-already"), 1);

    // Any other 500 is an error worth retrying, not an answer that the job exists: it is
    // retried, and the retry asks the scheduler first (a poll by name), which finds the job.
    scheduler.set_exists_answer(500, json!({"cause": "storage full", "response": 500}));
    let created = app
        .client
        .post(format!("{}/jobs", scheduler.base_url))
        .json(&json!({"name": "other-500"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    app.submit("podlike", json!({"jobId": "other-500"})).await;
    let run = app
        .wait_for("other-500", WAIT, |r| {
            r["state"] == "done" || r["state"] == "failed"
        })
        .await;
    assert_eq!(run["state"], "done", "{run}");
    assert_eq!(run["attempts"]["dispatch"], 2, "the 500 was retried: {run}");
    let events = app.events("other-500").await;
    assert!(
        events.iter().any(|e| e["type"] == "retry"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("storage full"))),
        "{events:?}"
    );
    assert_eq!(reattach_events(&app, "other-500").await, 1);
    assert_eq!(scheduler.created("other-500"), 1);
}

#[actix_web::test]
async fn a_run_caught_dispatching_by_a_crash_is_found_by_the_lookup_after_the_restart() {
    let scheduler = FaultyScheduler::start(2).await;
    let db = TestDatabase::create().await;
    let data_dir = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::start(Launch::new(&db, data_dir.path())).await;
    let mut manifest = listing_manifest(&scheduler.base_url);
    // Long enough that the gateway is still waiting for the answer when it dies.
    manifest["limits"]["timeoutMs"] = json!(60_000);
    gateway.register("listing", manifest, json!({})).await;
    scheduler.push_faults([Fault::DoThenHang]);
    gateway
        .submit(
            "listing",
            json!({"jobId": "crashed-dispatching", "job": {}}),
        )
        .await;
    let start = Instant::now();
    while scheduler.created("crashed-dispatching") == 0 {
        assert!(start.elapsed() < WAIT, "the dispatch never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gateway.kill9();
    gateway.restart().await;

    let start = Instant::now();
    let run = loop {
        let runs = gateway.runs_of("listing").await;
        let run = runs["crashed-dispatching"].clone();
        if run["released"] == true || run["state"] == "failed" {
            break run;
        }
        assert!(start.elapsed() < WAIT, "the run did not settle: {run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(run["state"], "done", "{run}");
    assert_eq!(run["attempts"]["dispatch"], 1, "{run}");
    assert_eq!(scheduler.created("crashed-dispatching"), 1);
    assert_eq!(creates(&scheduler), 1, "the dispatch was not sent again");
    assert!(
        scheduler
            .arrivals()
            .iter()
            .any(|a| a.method == "DELETE" && a.path == "/jobs/crashed-dispatching"),
        "released with the captured name"
    );
}
