//! Admission of runs: what a pool takes (free slots first, then `maxQueued` waiting runs), the
//! bounds on what a submission may carry, and what a waiting run costs.

use crate::helpers::{SCHED_TOKEN, TestApp, scheduler_manifest, spawn_app};
use crate::scheduler::{Answer, TestScheduler};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// A pool on the scripted scheduler whose jobs run until the test ends, with these limits.
async fn pool_with_limits(limits: Value) -> (TestApp, TestScheduler) {
    let app = spawn_app().await;
    let scheduler = TestScheduler::start(vec![Answer::Json(json!({"status": "Running"}))]).await;
    let mut manifest = scheduler_manifest(&scheduler.base_url);
    manifest["limits"] = limits;
    let response = app
        .put_pool("sched", manifest, json!({"SCHED_TOKEN": SCHED_TOKEN}))
        .await;
    assert_eq!(
        response.status().as_u16(),
        201,
        "{}",
        response.text().await.unwrap()
    );
    (app, scheduler)
}

#[actix_web::test]
async fn a_pool_with_max_queued_zero_takes_runs_while_it_has_free_slots() {
    let (app, _scheduler) = pool_with_limits(json!({"maxInFlight": 2, "maxQueued": 0})).await;
    for id in ["mq0-1", "mq0-2"] {
        let response = app.dispatch("sched", json!({"jobId": id})).await;
        assert_eq!(
            response.status().as_u16(),
            202,
            "{}",
            response.text().await.unwrap()
        );
    }
    for id in ["mq0-1", "mq0-2"] {
        app.wait_for(id, WAIT, |r| r["state"] == "running").await;
    }
    // Both slots taken and no run may wait: the next one is refused, and not stored.
    let response = app.dispatch("sched", json!({"jobId": "mq0-3"})).await;
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "pool_saturated"
    );
    let (status, _) = app.get_json("/v1/runs/mq0-3").await;
    assert_eq!(status, 404);
    // A slot freed is a slot offered again.
    assert_eq!(app.cancel("mq0-1").await.status().as_u16(), 202);
    app.wait_for("mq0-1", WAIT, |r| r["state"] == "cancelled")
        .await;
    let started = std::time::Instant::now();
    loop {
        let response = app.dispatch("sched", json!({"jobId": "mq0-4"})).await;
        match response.status().as_u16() {
            202 => break,
            429 if started.elapsed() < WAIT => {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
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
        assert_eq!(response.status().as_u16(), 422, "case {i}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "case {i}"
        );
        let body: Value = response.json().await.unwrap();
        let found = problems(&body);
        assert!(
            found
                .iter()
                .any(|(p, message)| p == path && message.contains(limit)),
            "case {i}: expected {path} naming {limit} in {found:?}"
        );
        let (status, _) = app.get_json(&format!("/v1/runs/{job_id}")).await;
        assert_eq!(status, 404, "case {i}: a refused run is not stored");
    }

    // At the bounds, the run is taken and its labels shown as given.
    let most: serde_json::Map<String, Value> = (0..64)
        .map(|i| (format!("{i:0>63}"), json!("v".repeat(256))))
        .collect();
    let response = app
        .dispatch("sched", json!({"jobId": "labels-ok", "labels": most}))
        .await;
    assert_eq!(response.status().as_u16(), 202);
    assert_eq!(
        response.json::<Value>().await.unwrap()["labels"],
        json!(most)
    );
}
