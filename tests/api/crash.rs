//! Crash safety, proven by killing the real process: `kill -9` of the gateway at random moments
//! (dispatch bursts, polling, releases), `kill -9` of the scheduler, and SIGTERM.
//!
//! The gateway runs as the real `cattery serve` binary on the test database; the scheduler is
//! the fault-injecting scheduler of `faulty.rs`, which keeps its jobs across the gateway's
//! deaths, names jobs by `run.dispatchId` and answers 409 for a name it has, and counts how many
//! times each job was created.

use crate::faulty::{Fault, FaultyScheduler};
use crate::support::database::TestDatabase;
use crate::support::gateway::{Gateway, Launch, LocalPool};
use crate::support::stub::{Recorder, Seen, answer};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn manifest(base_url: &str) -> Value {
    json!({
        "apiVersion": "cattery/v1",
        "baseUrl": base_url,
        "limits": {"timeoutMs": 2000, "maxInFlight": 50},
        "retry": {"maxAttempts": 8, "initialBackoffMs": 20, "maxBackoffMs": 300},
        "polling": {"intervalMs": 40, "maxIntervalMs": 120},
        "dispatch": {
            "request": {"method": "POST", "path": "/jobs", "body": {"name": "{{run.dispatchId}}"}},
            "expect": [201],
            "alreadyExists": [409]
        },
        "poll": {
            "request": {"method": "GET", "path": "/jobs/{{run.dispatchId}}"},
            "map": {"state": "status", "result": "output"}
        },
        "release": {"request": {"method": "DELETE", "path": "/jobs/{{run.dispatchId}}"}}
    })
}

/// The real `cattery serve` process on `db`, ready, with a grace period of 5 s at a SIGTERM.
async fn start_gateway(db: &TestDatabase, data_dir: &Path) -> Gateway {
    Gateway::start(Launch::new(db, data_dir).env("CATTERY__SHUTDOWN__GRACESECONDS", "5")).await
}

/// Submits run `job_id` with `job` to `pool`: the answer's status, or `None` when the gateway
/// did not answer (it was being killed).
async fn submit_to(gateway: &Gateway, pool: &str, job_id: &str, job: Value) -> Option<u16> {
    let body = json!({"jobId": job_id, "job": job});
    let reply = gateway
        .try_dispatch(pool, body, Duration::from_secs(5))
        .await?;
    Some(reply.status)
}

/// Submits run `job_id` to the pool `faulty`.
async fn submit(gateway: &Gateway, job_id: &str) -> Option<u16> {
    submit_to(gateway, "faulty", job_id, json!({"payload": job_id})).await
}

/// Waits until every run of the pool `faulty` is final and released.
async fn settle(gateway: &Gateway, expected: usize) -> BTreeMap<String, Value> {
    let start = Instant::now();
    loop {
        let runs = gateway.runs_of("faulty").await;
        let settled = runs.values().filter(|r| r["released"] == true).count();
        if runs.len() == expected && settled == expected {
            return runs;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{settled} of {expected} runs settled; stuck: {:?}",
            runs.values()
                .filter(|r| r["released"] != true)
                .take(3)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every acknowledged run finished with its own result, was created once and released.
fn check_outcome(
    runs: &BTreeMap<String, Value>,
    acknowledged: &[String],
    scheduler: &FaultyScheduler,
) {
    let deletes: Vec<String> = scheduler
        .arrivals()
        .iter()
        .filter(|a| a.method == "DELETE")
        .map(|a| a.path.trim_start_matches("/jobs/").to_owned())
        .collect();
    for id in acknowledged {
        let run = &runs[id];
        assert_eq!(run["state"], "done", "{run}");
        assert_eq!(run["result"], json!({"name": id}), "{run}");
        assert_eq!(run["released"], true, "{run}");
        assert_eq!(
            scheduler.created(id),
            1,
            "{id} was created {} times",
            scheduler.created(id)
        );
        assert!(deletes.contains(id), "no release was sent for {id}");
    }
    assert_eq!(
        scheduler.total_created(),
        acknowledged.len(),
        "no job was created that nobody asked for"
    );
}

#[actix_web::test]
async fn kill_9_of_the_gateway_at_random_moments_loses_nothing_and_doubles_nothing() {
    let scheduler = FaultyScheduler::start(3).await;
    let db = TestDatabase::create().await;
    let data_dir = tempfile::tempdir().unwrap();
    let mut gateway = start_gateway(&db, data_dir.path()).await;
    gateway
        .register("faulty", manifest(&scheduler.base_url), json!({}))
        .await;
    // Answers take a little while, so that kills find calls in flight.
    scheduler.set_default_fault(Fault::Slow(Duration::from_millis(40)));
    let mut rng = fastrand::Rng::with_seed(42);
    let total = 240;
    let mut acknowledged: Vec<String> = Vec::new();
    let mut pending: Vec<String> = (0..total).map(|i| format!("crash-{i:03}")).collect();
    pending.reverse();
    let mut kills = 0;
    // Bursts of submissions, each followed by a kill at a random moment: during the burst's
    // dispatches, while its runs poll, or while earlier runs release.
    while !pending.is_empty() || kills < 5 {
        let burst = rng.usize(20..60).min(pending.len());
        let kill_after = rng.usize(0..=burst);
        let mut sent = 0;
        while sent < burst {
            let Some(id) = pending.pop() else { break };
            if sent == kill_after && kills < 6 {
                gateway.kill9();
                kills += 1;
                gateway.restart().await;
            }
            match submit(&gateway, &id).await {
                Some(200 | 202) => acknowledged.push(id),
                _ => pending.push(id),
            }
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(0..400))).await;
        if kills < 6 {
            gateway.kill9();
            kills += 1;
            gateway.restart().await;
        }
    }
    assert!(kills >= 5);
    assert_eq!(acknowledged.len(), total);
    let runs = settle(&gateway, total).await;
    check_outcome(&runs, &acknowledged, &scheduler);
    // The kills hit work in flight: some runs were picked up again after a restart.
    let mut recovered = 0;
    for id in &acknowledged {
        let events = gateway.get(&format!("/v1/runs/{id}/events")).await.json();
        let text = events.to_string();
        if text.contains("recovered after a restart") || text.contains("re-attached") {
            recovered += 1;
        }
    }
    eprintln!("{recovered} runs re-attached after a kill");
    assert!(recovered > 0, "no kill hit a dispatch in flight");
}

#[actix_web::test]
async fn a_scheduler_killed_and_restarted_under_a_running_gateway_loses_nothing() {
    let scheduler = FaultyScheduler::start(4).await;
    let db = TestDatabase::create().await;
    let data_dir = tempfile::tempdir().unwrap();
    let gateway = start_gateway(&db, data_dir.path()).await;
    gateway
        .register("faulty", manifest(&scheduler.base_url), json!({}))
        .await;
    let ids: Vec<String> = (0..100).map(|i| format!("outage-{i:03}")).collect();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(submit(&gateway, id).await, Some(202));
        if i % 30 == 29 {
            // The scheduler dies mid-burst and comes back a little later, jobs intact.
            scheduler.go_away();
            tokio::time::sleep(Duration::from_millis(700)).await;
            scheduler.come_back().await;
        }
    }
    scheduler.go_away();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    scheduler.come_back().await;
    let runs = settle(&gateway, ids.len()).await;
    check_outcome(&runs, &ids, &scheduler);
}

#[actix_web::test]
async fn sigterm_drains_calls_in_flight_exits_0_and_everything_resumes_after_restart() {
    let scheduler = FaultyScheduler::start(2).await;
    let db = TestDatabase::create().await;
    let data_dir = tempfile::tempdir().unwrap();
    let mut gateway = start_gateway(&db, data_dir.path()).await;
    gateway
        .register("faulty", manifest(&scheduler.base_url), json!({}))
        .await;
    // Slow answers keep calls in flight when the signal arrives.
    scheduler.set_default_fault(Fault::Slow(Duration::from_millis(600)));
    let ids: Vec<String> = (0..20).map(|i| format!("term-{i:02}")).collect();
    for id in &ids {
        assert_eq!(submit(&gateway, id).await, Some(202));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = gateway.pid().to_string();
    let sent = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // Once the signal is handled, readiness says so and new runs are refused while calls in
    // flight finish.
    loop {
        let ready = gateway.client.get(gateway.url("/readyz")).send().await;
        match ready {
            Ok(response) => {
                let body: Value = response.json().await.unwrap_or_default();
                if body["shuttingDown"] == true {
                    break;
                }
            }
            Err(_) => break,
        }
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "the signal was not handled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = gateway
        .try_dispatch(
            "faulty",
            json!({"jobId": "too-late"}),
            Duration::from_secs(30),
        )
        .await;
    if let Some(reply) = refused {
        assert_eq!(reply.status, 503);
        assert_eq!(reply.json()["code"], "shutting_down");
    }
    let status = loop {
        if let Some(status) = gateway.child().try_wait().unwrap() {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "the gateway did not exit within its grace period"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0));
    assert!(
        sent.elapsed() < Duration::from_secs(7),
        "exit took {:?}",
        sent.elapsed()
    );
    scheduler.set_default_fault(Fault::None);
    gateway.restart().await;
    let runs = settle(&gateway, ids.len()).await;
    check_outcome(&runs, &ids, &scheduler);
}

#[actix_web::test]
async fn kill_9_of_the_gateway_with_the_local_pool_as_scheduler_loses_nothing() {
    let token = "crash-local-pool-token";
    let local = LocalPool::start(token).await;
    let db = TestDatabase::create().await;
    let data_dir = tempfile::tempdir().unwrap();
    let mut gateway = start_gateway(&db, data_dir.path()).await;
    local.register_on(&gateway).await;
    let mut rng = fastrand::Rng::with_seed(9);
    let ids: Vec<String> = (0..40).map(|i| format!("local-crash-{i:02}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let job = json!({"steps": 3, "stepMs": 60, "result": {"id": id}});
        loop {
            match submit_to(&gateway, "local", id, job.clone()).await {
                Some(200 | 202) => break,
                _ => gateway.restart().await,
            }
        }
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(rng.u64(0..300))).await;
            gateway.kill9();
            gateway.restart().await;
        }
    }
    let start = Instant::now();
    let runs = loop {
        let runs = gateway.runs_of("local").await;
        if runs.len() == ids.len() && runs.values().all(|r| r["released"] == true) {
            break runs;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "stuck: {:?}",
            runs.values().find(|r| r["released"] != true)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let client = cattery::scheduler::http::plain_client().unwrap();
    for id in &ids {
        let run = &runs[id];
        assert_eq!(run["state"], "done", "{run}");
        assert_eq!(run["result"], json!({"id": id}), "{run}");
        // Released: the local pool no longer holds the job.
        let held = client
            .get(format!("{}/jobs/{id}", local.base_url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(held.status().as_u16(), 404);
    }
}

/// A pool that cannot be loaded at start (its stored manifest was damaged) leaves its runs
/// waiting; registering it again hands them to the new pool actor, which drives them on.
#[actix_web::test]
async fn a_pool_registered_again_resumes_the_runs_it_left_behind() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let finish = Arc::new(AtomicBool::new(false));
    let finished = finish.clone();
    let scheduler = Recorder::start(move |seen| match seen.method.as_str() {
        "POST" => answer(201, json!({})),
        "GET" if finished.load(Ordering::SeqCst) => {
            answer(200, json!({"status": "Complete", "output": {"ok": true}}))
        }
        "GET" => answer(200, json!({"status": "Running"})),
        _ => answer(200, json!({})),
    })
    .await;
    let db = TestDatabase::create().await;
    let data_dir = tempfile::tempdir().unwrap();
    let mut gateway = start_gateway(&db, data_dir.path()).await;
    gateway
        .register("comeback", manifest(&scheduler.base_url), json!({}))
        .await;
    assert_eq!(
        submit_to(&gateway, "comeback", "stranded", json!({"n": 1})).await,
        Some(202)
    );
    let state = |runs: &BTreeMap<String, Value>| runs["stranded"]["state"].clone();
    let start = Instant::now();
    while state(&gateway.runs_of("comeback").await) != "running" {
        assert!(start.elapsed() < Duration::from_secs(20), "never running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gateway.kill9();
    db.execute_sql("UPDATE pools SET manifest = 'not: [a manifest' WHERE name = 'comeback'");
    gateway.restart().await;
    finish.store(true, Ordering::SeqCst);
    // Nobody drives the run while its pool is not loaded.
    let polls = |seen: &[Seen]| seen.iter().filter(|s| s.method == "GET").count();
    let before = polls(&scheduler.seen());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(polls(&scheduler.seen()), before);
    assert_eq!(state(&gateway.runs_of("comeback").await), "running");

    let response = gateway
        .put_pool("comeback", manifest(&scheduler.base_url), json!({}))
        .await;
    assert_eq!(response.status, 200);
    let start = Instant::now();
    loop {
        let runs = gateway.runs_of("comeback").await;
        if runs["stranded"]["state"] == "done" {
            assert_eq!(runs["stranded"]["result"], json!({"ok": true}));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the run was not resumed: {}",
            runs["stranded"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let created = scheduler
        .seen()
        .iter()
        .filter(|s| s.method == "POST")
        .count();
    assert_eq!(created, 1, "the job was dispatched again");
}
