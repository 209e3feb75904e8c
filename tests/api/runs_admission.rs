//! Admission of runs: what a pool takes (free slots first, then `maxQueued` waiting runs), the
//! bounds on what a submission may carry, and what a waiting run costs.

use crate::scheduler::TestScheduler;
use crate::support::app::{TestApp, spawn_app};
use crate::support::client::Reply;
use crate::support::manifests::{SCHED_TOKEN, scheduler_manifest};
use crate::support::stub::Scripted;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// A pool on the scripted scheduler whose jobs run until the test ends, with these limits.
async fn pool_with_limits(limits: Value) -> (TestApp, TestScheduler) {
    let app = spawn_app().await;
    let scheduler = TestScheduler::start(vec![Scripted::Json(json!({"status": "Running"}))]).await;
    let mut manifest = scheduler_manifest(&scheduler.base_url);
    manifest["limits"] = limits;
    app.register("sched", manifest, json!({"SCHED_TOKEN": SCHED_TOKEN}))
        .await;
    (app, scheduler)
}

#[actix_web::test]
async fn a_pool_with_max_queued_zero_takes_runs_while_it_has_free_slots() {
    let (app, _scheduler) = pool_with_limits(json!({"maxInFlight": 2, "maxQueued": 0})).await;
    for id in ["mq0-1", "mq0-2"] {
        let response = app.dispatch("sched", json!({"jobId": id})).await;
        assert_eq!(response.status, 202, "{}", response.text);
    }
    for id in ["mq0-1", "mq0-2"] {
        app.wait_for(id, WAIT, |r| r["state"] == "running").await;
    }
    // Both slots taken and no run may wait: the next one is refused, and not stored.
    let response = app.dispatch("sched", json!({"jobId": "mq0-3"})).await;
    assert_eq!(response.status, 429);
    assert_eq!(response.json()["code"], "pool_saturated");
    let Reply { status, .. } = app.get("/v1/runs/mq0-3").await;
    assert_eq!(status, 404);
    // A slot freed is a slot offered again.
    assert_eq!(app.cancel("mq0-1").await.status, 202);
    app.wait_for("mq0-1", WAIT, |r| r["state"] == "cancelled")
        .await;
    let started = std::time::Instant::now();
    loop {
        let response = app.dispatch("sched", json!({"jobId": "mq0-4"})).await;
        match response.status {
            202 => break,
            429 if started.elapsed() < WAIT => {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            other => panic!("unexpected {other}: {}", response.text),
        }
    }
}

fn problems(body: &Value) -> Vec<(String, String)> {
    body["errors"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap_or("").to_owned(),
                p["message"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[actix_web::test]
async fn labels_beyond_their_bounds_are_refused_with_the_path_and_the_limit() {
    let (app, _scheduler) = pool_with_limits(json!({"maxInFlight": 1, "maxQueued": 10})).await;

    let many: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("k{i}"), json!("v"))).collect();
    let long_key = "k".repeat(64);
    let cases = [
        (json!(many), "labels", "64"),
        (json!({"team": "v".repeat(257)}), "labels.team", "256"),
        (json!({(long_key.as_str()): "v"}), "labels", "63"),
        (json!({"": "v"}), "labels", "63"),
        (json!({"bad\nkey": "v"}), "labels", "63"),
    ];
    for (i, (labels, path, limit)) in cases.into_iter().enumerate() {
        let job_id = format!("labels-{i}");
        let response = app
            .dispatch("sched", json!({"jobId": job_id, "labels": labels}))
            .await;
        assert_eq!(response.status, 422, "case {i}");
        assert_eq!(
            response.headers["content-type"], "application/problem+json",
            "case {i}"
        );
        let body: Value = response.json();
        let found = problems(&body);
        assert!(
            found
                .iter()
                .any(|(p, message)| p == path && message.contains(limit)),
            "case {i}: expected {path} naming {limit} in {found:?}"
        );
        let Reply { status, .. } = app.get(&format!("/v1/runs/{job_id}")).await;
        assert_eq!(status, 404, "case {i}: a refused run is not stored");
    }

    // At the bounds, the run is taken and its labels shown as given.
    let most: serde_json::Map<String, Value> = (0..64)
        .map(|i| (format!("{i:0>63}"), json!("v".repeat(256))))
        .collect();
    let response = app
        .dispatch("sched", json!({"jobId": "labels-ok", "labels": most}))
        .await;
    assert_eq!(response.status, 202);
    assert_eq!(response.json()["labels"], json!(most));
}

#[actix_web::test]
async fn a_waiting_run_starts_from_its_stored_record_not_from_a_copy_kept_in_the_queue() {
    let (app, _scheduler) = pool_with_limits(json!({"maxInFlight": 1, "maxQueued": 10})).await;
    let response = app.dispatch("sched", json!({"jobId": "held-1"})).await;
    assert_eq!(response.status, 202);
    app.wait_for("held-1", WAIT, |r| r["state"] == "running")
        .await;
    let response = app
        .dispatch(
            "sched",
            json!({"jobId": "waiting-1", "labels": {"stage": "submitted"}}),
        )
        .await;
    assert_eq!(response.status, 202);
    assert_eq!(app.run("waiting-1").await["state"], "queued");

    // The stored record changes while the run waits (as another writer of the same database
    // may change it); the run must go on from what the store holds.
    let store = cattery::store::Store::connect(app.db.url(), 1)
        .await
        .unwrap();
    let job_id = cattery::domain::ids::JobId::parse("waiting-1").unwrap();
    let mut stored = store.get_run(&job_id).await.unwrap().unwrap();
    stored
        .labels
        .insert("stage".to_owned(), json!("changed while waiting"));
    store.commit(stored, Vec::new()).await.unwrap();

    assert_eq!(app.cancel("held-1").await.status, 202);
    let run = app
        .wait_for("waiting-1", WAIT, |r| r["state"] == "running")
        .await;
    assert_eq!(run["labels"], json!({"stage": "changed while waiting"}));
}

#[actix_web::test]
async fn a_waiting_run_is_cancelled_at_once_and_never_reaches_the_scheduler() {
    let (app, scheduler) = pool_with_limits(json!({"maxInFlight": 1, "maxQueued": 10})).await;
    app.dispatch("sched", json!({"jobId": "busy-1"})).await;
    app.wait_for("busy-1", WAIT, |r| r["state"] == "running")
        .await;
    let response = app.dispatch("sched", json!({"jobId": "queued-1"})).await;
    assert_eq!(response.status, 202);
    let response = app.cancel("queued-1").await;
    assert_eq!(response.status, 202);
    assert_eq!(response.json()["state"], "cancelled");
    // Its slot never comes: freeing the busy one grants nothing to the cancelled run.
    assert_eq!(app.cancel("busy-1").await.status, 202);
    app.wait_for("busy-1", WAIT, |r| r["released"] == true)
        .await;
    assert_eq!(app.run("queued-1").await["state"], "cancelled");
    assert!(
        scheduler
            .seen()
            .iter()
            .all(|request| !request.path.contains("queued-1")
                && !request.text().contains("queued-1")),
        "a cancelled waiting run is never sent"
    );
    assert_eq!(app.cancel("queued-1").await.status, 409);
}

#[actix_web::test]
async fn identical_submissions_at_once_create_one_run_that_holds_one_slot() {
    let (app, scheduler) = pool_with_limits(json!({"maxInFlight": 1, "maxQueued": 0})).await;
    let submissions: Vec<_> = (0..8)
        .map(|_| {
            let (client, url, token) = (
                app.client.clone(),
                app.url("/v1/pools/sched/runs"),
                crate::support::DISPATCHER_TOKEN,
            );
            tokio::spawn(async move {
                let response = client
                    .post(url)
                    .bearer_auth(token)
                    .json(&json!({"jobId": "twin", "job": {"n": 1}}))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                (status, response.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for submission in submissions {
        let (status, run) = submission.await.unwrap();
        assert_eq!(run["jobId"], "twin", "{run}");
        statuses.push(status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 200, 202]);
    app.wait_for("twin", WAIT, |r| r["state"] == "running")
        .await;
    assert_eq!(scheduler.created("twin"), 1);
    // The one slot is the twin's: another run is refused, not started beside it.
    let response = app.dispatch("sched", json!({"jobId": "after-twin"})).await;
    assert_eq!(response.status, 429);
}
