//! Crash safety, proven by killing the real process: `kill -9` of the gateway at random moments
//! (dispatch bursts, polling, releases), `kill -9` of the scheduler, and SIGTERM.
//!
//! The gateway runs as the real `cattery serve` binary on the test database; the scheduler is
//! the fault-injecting scheduler of `faulty.rs`, which keeps its jobs across the gateway's
//! deaths, names jobs by `run.dispatchId` and answers 409 for a name it has, and counts how many
//! times each job was created.

use crate::faulty::{Fault, FaultyScheduler};
use crate::helpers::{
    ADMIN_TOKEN, ChildProcess, TestDatabase, free_port, serve_command, spawn_gateway, wait_healthy,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

fn serve(
    db: &TestDatabase,
    data_dir: &std::path::Path,
    port: u16,
    grace_seconds: u64,
) -> ChildProcess {
    let mut command = serve_command(db, data_dir, port);
    command.env("CATTERY__SHUTDOWN__GRACESECONDS", grace_seconds.to_string());
    spawn_gateway(command, port)
}

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

/// The real `cattery serve` process on a test database, which can be killed and restarted.
pub(crate) struct Gateway {
    db: TestDatabase,
    data_dir: tempfile::TempDir,
    port: u16,
    process: Option<ChildProcess>,
    client: reqwest::Client,
}

impl Gateway {
    pub(crate) async fn start(db: TestDatabase) -> Gateway {
        let mut gateway = Gateway {
            db,
            data_dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            process: None,
            client: cattery::scheduler::http::plain_client().unwrap(),
        };
        gateway.restart().await;
        gateway
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) async fn register(&self, pool: &str, manifest: Value, secrets: Value) {
        let response = self
            .client
            .put(format!("{}/v1/pools/{pool}", self.base()))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"manifest": manifest, "secrets": secrets}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
    }

    pub(crate) async fn restart(&mut self) {
        self.process = Some(serve(&self.db, self.data_dir.path(), self.port, 5));
        wait_healthy(&format!("{}/readyz", self.base())).await;
    }

    pub(crate) fn kill9(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.child.kill().unwrap();
            process.child.wait().unwrap();
        }
    }

    async fn submit(&self, job_id: &str) -> Option<u16> {
        self.submit_to("faulty", job_id, json!({"payload": job_id}))
            .await
    }

    pub(crate) async fn submit_to(&self, pool: &str, job_id: &str, job: Value) -> Option<u16> {
        let response = self
            .client
            .post(format!("{}/v1/pools/{pool}/runs", self.base()))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"jobId": job_id, "job": job}))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        Some(response.status().as_u16())
    }

    async fn runs(&self) -> BTreeMap<String, Value> {
        self.runs_of("faulty").await
    }

    pub(crate) async fn runs_of(&self, pool: &str) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        let mut after: Option<String> = None;
        loop {
            let mut url = format!("{}/v1/runs?pool={pool}&limit=1000", self.base());
            if let Some(cursor) = &after {
                url.push_str(&format!("&after={cursor}"));
            }
            let page: Value = self
                .client
                .get(url)
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            for run in page["runs"].as_array().unwrap() {
                out.insert(run["jobId"].as_str().unwrap().to_owned(), run.clone());
            }
            match page["next"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => return out,
            }
        }
    }

    /// Waits until every run is final and released.
    async fn settle(&self, expected: usize) -> BTreeMap<String, Value> {
        let start = Instant::now();
        loop {
            let runs = self.runs().await;
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
    let mut gateway = Gateway::start(TestDatabase::create().await).await;
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
            match gateway.submit(&id).await {
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
    let runs = gateway.settle(total).await;
    check_outcome(&runs, &acknowledged, &scheduler);
    // The kills hit work in flight: some runs were picked up again after a restart.
    let mut recovered = 0;
    for id in &acknowledged {
        let events: Value = gateway
            .client
            .get(format!("{}/v1/runs/{id}/events", gateway.base()))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
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
    let gateway = Gateway::start(TestDatabase::create().await).await;
    gateway
        .register("faulty", manifest(&scheduler.base_url), json!({}))
        .await;
    let ids: Vec<String> = (0..100).map(|i| format!("outage-{i:03}")).collect();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(gateway.submit(id).await, Some(202));
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
    let runs = gateway.settle(ids.len()).await;
    check_outcome(&runs, &ids, &scheduler);
}

#[actix_web::test]
async fn sigterm_drains_calls_in_flight_exits_0_and_everything_resumes_after_restart() {
    let scheduler = FaultyScheduler::start(2).await;
    let mut gateway = Gateway::start(TestDatabase::create().await).await;
    gateway
        .register("faulty", manifest(&scheduler.base_url), json!({}))
        .await;
    // Slow answers keep calls in flight when the signal arrives.
    scheduler.set_default_fault(Fault::Slow(Duration::from_millis(600)));
    let ids: Vec<String> = (0..20).map(|i| format!("term-{i:02}")).collect();
    for id in &ids {
        assert_eq!(gateway.submit(id).await, Some(202));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut process = gateway.process.take().unwrap();
    let pid = process.child.id().to_string();
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
        let ready = gateway
            .client
            .get(format!("{}/readyz", gateway.base()))
            .send()
            .await;
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
        .client
        .post(format!("{}/v1/pools/faulty/runs", gateway.base()))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"jobId": "too-late"}))
        .send()
        .await;
    if let Ok(response) = refused {
        assert_eq!(response.status().as_u16(), 503);
        assert_eq!(
            response.json::<Value>().await.unwrap()["code"],
            "shutting_down"
        );
    }
    let status = loop {
        if let Some(status) = process.child.try_wait().unwrap() {
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
    let runs = gateway.settle(ids.len()).await;
    check_outcome(&runs, &ids, &scheduler);
}

#[actix_web::test]
async fn kill_9_of_the_gateway_with_the_local_pool_as_scheduler_loses_nothing() {
    let token = "crash-local-pool-token";
    let local = crate::helpers::start_local_pool(token).await;
    let mut gateway = Gateway::start(TestDatabase::create().await).await;
    gateway
        .register(
            "local",
            crate::helpers::local_manifest(&local.base_url),
            json!({"LOCAL_POOL_TOKEN": token}),
        )
        .await;
    let mut rng = fastrand::Rng::with_seed(9);
    let ids: Vec<String> = (0..40).map(|i| format!("local-crash-{i:02}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let job = json!({"steps": 3, "stepMs": 60, "result": {"id": id}});
        loop {
            match gateway.submit_to("local", id, job.clone()).await {
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
    use crate::security_support::{Recorder, answer};
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
    let mut gateway = Gateway::start(TestDatabase::create().await).await;
    gateway
        .register("comeback", manifest(&scheduler.base_url), json!({}))
        .await;
    assert_eq!(
        gateway
            .submit_to("comeback", "stranded", json!({"n": 1}))
            .await,
        Some(202)
    );
    let state = |runs: &BTreeMap<String, Value>| runs["stranded"]["state"].clone();
    let start = Instant::now();
    while state(&gateway.runs_of("comeback").await) != "running" {
        assert!(start.elapsed() < Duration::from_secs(20), "never running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gateway.kill9();
    gateway
        .db
        .execute_sql("UPDATE pools SET manifest = 'not: [a manifest' WHERE name = 'comeback'");
    gateway.restart().await;
    finish.store(true, Ordering::SeqCst);
    // Nobody drives the run while its pool is not loaded.
    let polls =
        |seen: &[crate::security_support::Seen]| seen.iter().filter(|s| s.method == "GET").count();
    let before = polls(&scheduler.seen());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(polls(&scheduler.seen()), before);
    assert_eq!(state(&gateway.runs_of("comeback").await), "running");

    let response = gateway
        .client
        .put(format!("{}/v1/pools/comeback", gateway.base()))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"manifest": manifest(&scheduler.base_url), "secrets": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
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
