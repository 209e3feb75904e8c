//! Runs end to end through the shipped local manifest against `cattery local-pool`, a separate
//! scheduler process that runs each job as a real local process.

use crate::support::app::{TestApp, spawn_app};
use crate::support::client::Reply;
use crate::support::gateway::LocalPool;
use crate::support::manifests::local_manifest;
use serde_json::{Value, json};
use std::time::Duration;

const TOKEN: &str = "local-pool-test-token";

async fn app_with_local_pool() -> (TestApp, LocalPool) {
    let app = spawn_app().await;
    let pool = LocalPool::start(TOKEN).await;
    pool.register_on(&app).await;
    (app, pool)
}

async fn local_job(pool: &LocalPool, id: &str) -> u16 {
    cattery::scheduler::http::plain_client()
        .unwrap()
        .get(format!("{}/jobs/{id}", pool.base_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[actix_web::test]
async fn a_sample_job_runs_to_done_with_progress_and_result_and_is_released() {
    let (app, pool) = app_with_local_pool().await;
    let response = app
        .dispatch("local", json!({"jobId": "local-ok-1", "kind": "sample", "job": {"steps": 3, "stepMs": 20, "result": {"summary": "all good"}}}))
        .await;
    assert_eq!(response.status, 202);
    let accepted: Value = response.json();
    // A slot was free: the run was stored already holding it, its acceptance and its slot in
    // its history (below).
    assert_eq!(accepted["state"], "dispatching");
    assert_eq!(accepted["jobId"], "local-ok-1");
    assert!(
        accepted.get("job").is_none(),
        "a RunView never carries the job"
    );

    let run = app
        .wait_for("local-ok-1", Duration::from_secs(20), |r| {
            r["released"] == true
        })
        .await;
    assert_eq!(run["state"], "done");
    assert_eq!(run["result"], json!({"summary": "all good"}));
    assert_eq!(
        run["progress"],
        json!({"completed": 3, "inProgress": 0, "total": 3})
    );
    assert_eq!(run["attempts"]["dispatch"], 1);
    assert!(run["attempts"]["poll"].as_i64().unwrap() >= 1);
    assert!(run["finishedAt"].is_string());
    // Released: the local pool forgot the job.
    assert_eq!(local_job(&pool, "local-ok-1").await, 404);

    let events = app.events("local-ok-1").await;
    let transitions: Vec<(Value, Value)> = events
        .iter()
        .filter(|e| e["type"] == "transition")
        .map(|e| (e["from"].clone(), e["to"].clone()))
        .collect();
    assert_eq!(
        transitions,
        [
            (Value::Null, json!("queued")),
            (json!("queued"), json!("dispatching")),
            (json!("dispatching"), json!("running")),
            (json!("running"), json!("done")),
        ]
    );
    assert!(events.iter().any(|e| e["type"] == "release"));
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // Finished and released: the sealed job body (it may carry credentials) is dropped.
    let store = cattery::store::Store::connect(app.db.url(), 1)
        .await
        .unwrap();
    let id = cattery::domain::ids::JobId::parse("local-ok-1").unwrap();
    let start = std::time::Instant::now();
    while store.get_job_sealed(&id).await.unwrap().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the job body was kept"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn a_failing_job_fails_with_the_scheduler_error() {
    let (app, _pool) = app_with_local_pool().await;
    app.dispatch("local", json!({"jobId": "local-fail-1", "job": {"steps": 1, "stepMs": 0, "fail": true, "exitCode": 3, "message": "kaput"}}))
        .await;
    let run = app
        .wait_for("local-fail-1", Duration::from_secs(20), |r| {
            r["released"] == true
        })
        .await;
    assert_eq!(run["state"], "failed");
    assert_eq!(run["failureCause"], "scheduler");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            // A message of eight characters or more would be a job value, redacted as such.
            .contains("kaput"),
        "{run}"
    );
}

#[actix_web::test]
async fn cancelling_a_running_job_kills_it_and_releases_it() {
    let (app, pool) = app_with_local_pool().await;
    app.dispatch(
        "local",
        json!({"jobId": "local-cancel-1", "job": {"steps": 1000, "stepMs": 100}}),
    )
    .await;
    app.wait_for("local-cancel-1", Duration::from_secs(20), |r| {
        r["state"] == "running" && r["attempts"]["poll"].as_i64() >= Some(1)
    })
    .await;
    let response = app.cancel("local-cancel-1").await;
    assert_eq!(response.status, 202);
    let view: Value = response.json();
    assert_eq!(view["cancelRequested"], true);
    let run = app
        .wait_for("local-cancel-1", Duration::from_secs(20), |r| {
            r["released"] == true
        })
        .await;
    assert_eq!(run["state"], "cancelled");
    assert_eq!(local_job(&pool, "local-cancel-1").await, 404);
    // Cancelling a finished run is a conflict.
    let again = app.cancel("local-cancel-1").await;
    assert_eq!(again.status, 409);
    assert_eq!(again.json()["code"], "run_finished");
}

#[actix_web::test]
async fn a_repeated_submission_is_idempotent_and_a_different_one_conflicts() {
    let (app, _pool) = app_with_local_pool().await;
    let body =
        json!({"jobId": "local-idem-1", "job": {"steps": 1, "stepMs": 0}, "labels": {"team": "a"}});
    assert_eq!(app.dispatch("local", body.clone()).await.status, 202);
    let repeat = app.dispatch("local", body).await;
    assert_eq!(repeat.status, 200);
    assert_eq!(repeat.json()["jobId"], "local-idem-1");
    let different = app
        .dispatch(
            "local",
            json!({"jobId": "local-idem-1", "job": {"steps": 2}}),
        )
        .await;
    assert_eq!(different.status, 409);
    assert_eq!(different.json()["code"], "job_id_conflict");
    app.wait_settled("local-idem-1").await;
}

#[actix_web::test]
async fn max_in_flight_queues_runs_and_the_list_pages_newest_first() {
    let (app, _pool) = app_with_local_pool().await;
    let mut manifest = local_manifest(&_pool.base_url);
    manifest["limits"] = json!({"maxInFlight": 1, "maxQueued": 100});
    let response = app
        .put_pool("local", manifest, json!({"LOCAL_POOL_TOKEN": TOKEN}))
        .await;
    assert_eq!(response.status, 200);
    for i in 0..4 {
        let response = app
            .dispatch(
                "local",
                json!({"jobId": format!("q-{i}"), "job": {"steps": 2, "stepMs": 30}}),
            )
            .await;
        assert_eq!(response.status, 202);
    }
    // Never more than one run holds a slot.
    for _ in 0..40 {
        let Reply { body: page, .. } = app.get("/v1/runs?pool=local&limit=1000").await;
        let in_flight = page["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                matches!(
                    r["state"].as_str(),
                    Some("dispatching" | "pending" | "running")
                )
            })
            .count();
        assert!(in_flight <= 1, "{page}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..4 {
        let run = app.wait_settled(&format!("q-{i}")).await;
        assert_eq!(run["state"], "done");
    }
    let Reply { body: first, .. } = app.get("/v1/runs?pool=local&limit=3").await;
    let ids: Vec<&str> = first["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["jobId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["q-3", "q-2", "q-1"]);
    let next = first["next"].as_str().unwrap();
    let Reply { body: second, .. } = app
        .get(&format!("/v1/runs?pool=local&limit=3&after={next}"))
        .await;
    let ids: Vec<&str> = second["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["jobId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["q-0"]);
    assert!(second["next"].is_null());
    let Reply { body: done, .. } = app.get("/v1/runs?state=done&limit=1000").await;
    assert_eq!(done["runs"].as_array().unwrap().len(), 4);
}

#[actix_web::test]
async fn bad_submissions_get_422_and_unknown_pools_404() {
    let (app, _pool) = app_with_local_pool().await;
    let bad_id = app.dispatch("local", json!({"jobId": "has space"})).await;
    assert_eq!(bad_id.status, 422);
    let body: Value = bad_id.json();
    assert_eq!(body["errors"][0]["path"], "jobId");
    let not_object = app
        .dispatch("local", json!({"jobId": "x", "job": "text"}))
        .await;
    assert_eq!(not_object.status, 422);
    let unknown = app.dispatch("nosuchpool", json!({"jobId": "x"})).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["code"], "pool_not_found");
    let Reply { status, body, .. } = app.get("/v1/runs/never-submitted").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("run_not_found"))
    );
    let Reply { status, .. } = app.get("/v1/runs?state=bogus").await;
    assert_eq!(status, 422);
    let Reply { status, .. } = app.get("/v1/runs?after=garbage").await;
    assert_eq!(status, 422);
}

#[actix_web::test]
async fn a_pool_with_unfinished_runs_is_only_deleted_with_force() {
    let (app, _pool) = app_with_local_pool().await;
    app.dispatch(
        "local",
        json!({"jobId": "del-1", "job": {"steps": 1000, "stepMs": 100}}),
    )
    .await;
    app.wait_for("del-1", Duration::from_secs(20), |r| {
        r["state"] == "running"
    })
    .await;
    let delete = |path: &str| {
        app.client
            .delete(app.url(path))
            .bearer_auth(crate::support::ADMIN_TOKEN)
            .send()
    };
    let refused = delete("/v1/pools/local").await.unwrap();
    assert_eq!(refused.status().as_u16(), 409);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["code"],
        "pool_has_runs"
    );
    assert_eq!(
        delete("/v1/pools/local?force=true")
            .await
            .unwrap()
            .status()
            .as_u16(),
        204
    );
    let run = app
        .wait_for("del-1", Duration::from_secs(20), |r| r["released"] == true)
        .await;
    assert_eq!(run["state"], "cancelled");
}
