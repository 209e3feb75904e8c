//! Fair share inside a pool, through the real API: when the pool is full, the next slot goes
//! by weighted fair share across tenants (the pool's tenant label), by priority within a
//! tenant, oldest first within a priority; a tenant at its own cap waits while another takes a
//! free slot; a queued run's view says how many runs of its tenant wait ahead of it.

use crate::support::app::spawn_app;
use crate::support::manifests::simple_manifest;
use crate::support::stub::{Recorder, answer};
use crate::support::wait;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A scheduler whose jobs finish at once, but for `blocker`, which runs until `open` is set.
async fn scheduler(open: Arc<AtomicBool>) -> Recorder {
    Recorder::start(move |seen| match seen.method.as_str() {
        "POST" => answer(201, json!({})),
        "DELETE" => answer(200, json!({})),
        _ if seen.path.ends_with("/blocker") && !open.load(Ordering::SeqCst) => {
            answer(200, json!({"status": "Running"}))
        }
        _ => answer(200, json!({"status": "Complete"})),
    })
    .await
}

/// The names of the jobs dispatched, in the order the scheduler received them.
fn dispatch_order(scheduler: &Recorder) -> Vec<String> {
    scheduler
        .seen()
        .iter()
        .filter(|seen| seen.method == "POST")
        .map(|seen| seen.json()["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn run(id: &str, tenant: Option<&str>, priority: i64) -> Value {
    let mut body = json!({"jobId": id, "job": {}, "priority": priority});
    if let Some(tenant) = tenant {
        body["labels"] = json!({"team": tenant});
    }
    body
}

#[actix_web::test]
async fn a_full_pool_grants_by_weighted_fair_share_then_priority_then_age() {
    let open = Arc::new(AtomicBool::new(false));
    let scheduler = scheduler(open.clone()).await;
    let app = spawn_app().await;
    let mut manifest = simple_manifest(&scheduler.base_url);
    manifest["limits"] = json!({"maxInFlight": 1});
    manifest["fairShare"] = json!({"tenantLabel": "team", "weights": {"gold": 2}});
    app.register("shared", manifest, json!({"SCHED_TOKEN": "t"}))
        .await;

    app.submit("shared", run("blocker", None, 0)).await;
    wait::until(
        "the blocker to hold the slot",
        Duration::from_secs(20),
        Duration::from_millis(20),
        async || {
            let state = app.run("blocker").await["state"].clone();
            if state == "running" {
                Ok(())
            } else {
                Err(state.to_string())
            }
        },
    )
    .await;
    // A burst of 6 silver runs, then 4 gold ones (one of them urgent), then one bronze.
    for i in 0..6 {
        app.submit("shared", run(&format!("silver-{i}"), Some("silver"), 0))
            .await;
    }
    for i in 0..3 {
        app.submit("shared", run(&format!("gold-{i}"), Some("gold"), 0))
            .await;
    }
    app.submit("shared", run("gold-urgent", Some("gold"), 10))
        .await;
    app.submit("shared", run("bronze-0", Some("bronze"), 0))
        .await;
    assert_eq!(app.run("gold-urgent").await["state"], "queued");
    assert_eq!(app.run("gold-urgent").await["priority"], 10);
    // A queued run's place in its tenant's line: its urgent run first; null when not queued.
    for (id, ahead) in [
        ("silver-0", 0),
        ("silver-5", 5),
        ("gold-urgent", 0),
        ("gold-0", 1),
        ("bronze-0", 0),
    ] {
        assert_eq!(app.run(id).await["queuePosition"], ahead, "{id}");
    }
    assert_eq!(app.run("blocker").await["queuePosition"], Value::Null);

    open.store(true, Ordering::SeqCst);
    for id in ["blocker", "silver-5", "gold-2", "bronze-0"] {
        let run = app.wait_settled(id).await;
        assert_eq!(run["state"], "done", "{id}");
        assert_eq!(run["queuePosition"], Value::Null, "{id}");
    }
    wait::until(
        "every run released",
        Duration::from_secs(20),
        Duration::from_millis(20),
        async || {
            let order = dispatch_order(&scheduler);
            if order.len() == 12 {
                Ok(())
            } else {
                Err(format!("{order:?}"))
            }
        },
    )
    .await;
    let order = dispatch_order(&scheduler);
    // One slot: each grant moves its tenant's pass on by 1/weight and the lowest pass goes
    // next (ties: the older run), so gold (weight 2) goes twice as often as silver and bronze;
    // gold's urgent run goes first among gold; bronze is not starved by the burst before it.
    assert_eq!(
        order,
        [
            "blocker",
            "silver-0",
            "gold-urgent",
            "bronze-0",
            "gold-0",
            "silver-1",
            "gold-1",
            "gold-2",
            "silver-2",
            "silver-3",
            "silver-4",
            "silver-5",
        ]
    );
}

#[actix_web::test]
async fn a_tenant_at_its_cap_waits_while_another_takes_a_free_slot() {
    let open = Arc::new(AtomicBool::new(false));
    let scheduler = Recorder::start({
        let open = open.clone();
        move |seen| match seen.method.as_str() {
            "POST" => answer(201, json!({})),
            "DELETE" => answer(200, json!({})),
            _ if !open.load(Ordering::SeqCst) => answer(200, json!({"status": "Running"})),
            _ => answer(200, json!({"status": "Complete"})),
        }
    })
    .await;
    let app = spawn_app().await;
    let mut manifest = simple_manifest(&scheduler.base_url);
    manifest["limits"] = json!({"maxInFlight": 10});
    manifest["fairShare"] = json!({"maxInFlightPerTenant": 2});
    app.register("capped", manifest, json!({"SCHED_TOKEN": "t"}))
        .await;
    for i in 0..4 {
        app.submit(
            "capped",
            run(&format!("a-{i}"), None, 0).tap_label("tenant", "a"),
        )
        .await;
    }
    app.submit("capped", run("b-0", None, 0).tap_label("tenant", "b"))
        .await;
    wait::until(
        "b-0 and two of a's runs to run",
        Duration::from_secs(20),
        Duration::from_millis(20),
        async || {
            let order = dispatch_order(&scheduler);
            if order.len() >= 3 {
                Ok(())
            } else {
                Err(format!("{order:?}"))
            }
        },
    )
    .await;
    // Free slots remain, but a holds its cap of 2: its other runs wait; b ran at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let order = dispatch_order(&scheduler);
    assert_eq!(order, ["a-0", "a-1", "b-0"]);
    assert_eq!(app.run("a-2").await["state"], "queued");
    assert_eq!(app.run("a-3").await["state"], "queued");
    let pool = app.get("/v1/pools/capped").await.json();
    assert_eq!(pool["stats"]["queued"], 2, "{pool}");

    open.store(true, Ordering::SeqCst);
    for i in 0..4 {
        assert_eq!(app.wait_settled(&format!("a-{i}")).await["state"], "done");
    }
    assert_eq!(dispatch_order(&scheduler).len(), 5);
}

#[actix_web::test]
async fn priority_and_fair_share_settings_are_validated() {
    let app = spawn_app().await;
    let base = "http://127.0.0.1:9";
    for (fair_share, path) in [
        (
            json!({"weights": {"gold": 0}}),
            "manifest.fairShare.weights.gold",
        ),
        (
            json!({"weights": {"gold": 1001}}),
            "manifest.fairShare.weights.gold",
        ),
        (
            json!({"maxInFlightPerTenant": 0}),
            "manifest.fairShare.maxInFlightPerTenant",
        ),
        (json!({"tenantLabel": ""}), "manifest.fairShare.tenantLabel"),
        (json!({"teams": {}}), "manifest.fairShare.teams"),
    ] {
        let mut manifest = simple_manifest(base);
        manifest["fairShare"] = fair_share.clone();
        let reply = app
            .put_pool("p", manifest, json!({"SCHED_TOKEN": "t"}))
            .await;
        assert_eq!(reply.status, 422, "{fair_share}: {}", reply.text);
        let paths: Vec<Value> = reply.json()["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].clone())
            .collect();
        assert!(paths.contains(&json!(path)), "{fair_share}: {paths:?}");
    }
    app.register("p", simple_manifest(base), json!({"SCHED_TOKEN": "t"}))
        .await;
    for priority in [json!(1001), json!(-1001), json!(1.5), json!("high")] {
        let reply = app
            .dispatch(
                "p",
                json!({"jobId": "prio", "job": {}, "priority": priority}),
            )
            .await;
        assert_eq!(reply.status, 422, "{priority}: {}", reply.text);
        assert_eq!(
            reply.json()["errors"][0]["path"],
            "priority",
            "{}",
            reply.text
        );
    }
}

trait TapLabel {
    fn tap_label(self, key: &str, value: &str) -> Value;
}

impl TapLabel for Value {
    fn tap_label(mut self, key: &str, value: &str) -> Value {
        self["labels"] = json!({ key: value });
        self
    }
}
