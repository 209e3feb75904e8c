//! Fault tolerance toward schedulers: outcomes under every kind of fault, and the load cattery
//! puts on a scheduler in trouble (calls per run, Retry-After, the breaker, the rate budget).

use crate::faulty::{Fault, FaultyScheduler};
use crate::support::app::{TestApp, spawn_app};
use crate::support::client::Reply;
use crate::support::stub::{Recorder, answer};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn manifest(base_url: &str, extra: Value) -> Value {
    let mut manifest = json!({
        "apiVersion": "cattery/v1",
        "baseUrl": base_url,
        "limits": {"timeoutMs": 300},
        "retry": {"maxAttempts": 4, "initialBackoffMs": 50, "maxBackoffMs": 400},
        "polling": {"intervalMs": 40, "maxIntervalMs": 100, "maxConsecutiveErrors": 4},
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
    });
    merge(&mut manifest, extra);
    manifest
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(base), Value::Object(extra)) => {
            for (k, v) in extra {
                merge(base.entry(k).or_insert(Value::Null), v);
            }
        }
        (base, extra) => *base = extra,
    }
}

async fn setup(polls_to_finish: usize, extra: Value) -> (TestApp, FaultyScheduler) {
    let app = spawn_app().await;
    let scheduler = FaultyScheduler::start(polls_to_finish).await;
    app.register("faulty", manifest(&scheduler.base_url, extra), json!({}))
        .await;
    (app, scheduler)
}

async fn dispatch_all(app: &TestApp, ids: &[String]) {
    for id in ids {
        app.submit("faulty", json!({"jobId": id})).await;
    }
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[actix_web::test]
async fn random_503s_resets_hangs_and_garbage_still_finish_every_run_with_bounded_calls() {
    // Eight polls answer Running: long enough for every run to be seen polling before the
    // faults below are pushed (a run that already finished is fine too).
    let (app, scheduler) = setup(8, json!({"retry": {"maxAttempts": 12}})).await;
    scheduler.set_unavailable_rate(0.3);
    let runs = ids("chaos", 8);
    dispatch_all(&app, &runs).await;
    for id in &runs {
        app.wait_for(id, WAIT, |r| {
            r["state"] == "running" || r["state"] == "done"
        })
        .await;
    }
    // While they poll: a reset, a hang past the timeout, a truncated body, garbage, a slow answer.
    scheduler.push_faults([
        Fault::Reset,
        Fault::Hang,
        Fault::Truncated,
        Fault::NotJson,
        Fault::Slow(Duration::from_millis(150)),
    ]);
    for id in &runs {
        let run = app
            .wait_for(id, WAIT, |r| {
                r["released"] == true || r["state"] == "failed"
            })
            .await;
        assert_eq!(run["state"], "done", "{run}");
        assert_eq!(run["result"], json!({"name": id}));
    }
    for id in &runs {
        assert_eq!(scheduler.created(id), 1, "{id} was created once");
    }
    // Each run needs 1 dispatch + 9 polls + 1 release; faults add retries, not floods.
    let calls = scheduler.arrivals().len();
    assert!(
        calls <= runs.len() * 25,
        "{calls} calls for {} runs",
        runs.len()
    );
    let mut retries = 0;
    for id in &runs {
        retries += app
            .events(id)
            .await
            .iter()
            .filter(|e| e["type"] == "retry" || e["type"] == "poll_error")
            .count();
    }
    assert!(
        retries >= 5,
        "the faults were seen and recorded as retries ({retries})"
    );
}

#[actix_web::test]
async fn retry_after_is_respected() {
    let (app, scheduler) = setup(0, json!({})).await;
    scheduler.push_faults([Fault::TooMany(1)]);
    app.dispatch("faulty", json!({"jobId": "patient-1"})).await;
    let run = app.wait_settled("patient-1").await;
    assert_eq!(run["state"], "done");
    let dispatches: Vec<Instant> = scheduler
        .arrivals()
        .iter()
        .filter(|a| a.method == "POST")
        .map(|a| a.at)
        .collect();
    assert_eq!(dispatches.len(), 2);
    let waited = dispatches[1] - dispatches[0];
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}, asked for 1 s"
    );
    assert!(
        waited < Duration::from_millis(2_500),
        "waited far too long: {waited:?}"
    );
    let events = app.events("patient-1").await;
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "retry" && e["detail"].as_str().unwrap().contains("429")),
        "{events:?}"
    );
}

#[actix_web::test]
async fn other_4xx_answers_are_not_retried() {
    let (app, scheduler) = setup(0, json!({"dispatch": {"request": {"path": "/nowhere"}}})).await;
    app.dispatch("faulty", json!({"jobId": "refused-1"})).await;
    let run = app.wait_settled("refused-1").await;
    assert_eq!(run["failureCause"], "dispatch_rejected");
    assert!(run["error"].as_str().unwrap().contains("404"), "{run}");
    assert_eq!(
        scheduler
            .arrivals()
            .iter()
            .filter(|a| a.method == "POST")
            .count(),
        1
    );
}

#[actix_web::test]
async fn a_scheduler_that_goes_away_and_comes_back_loses_no_run() {
    let (app, scheduler) = setup(
        3,
        json!({"retry": {"maxAttempts": 6, "initialBackoffMs": 100, "maxBackoffMs": 800}}),
    )
    .await;
    let runs = ids("outage", 5);
    dispatch_all(&app, &runs).await;
    for id in &runs {
        app.wait_for(id, WAIT, |r| r["state"] == "running").await;
    }
    scheduler.go_away();
    // The breaker opens and shows in PoolView, with the reason.
    let start = Instant::now();
    loop {
        let Reply { body: pool, .. } = app.get("/v1/pools/faulty").await;
        if pool["health"]["circuit"] == "open" {
            assert!(
                pool["health"]["lastError"]
                    .as_str()
                    .unwrap()
                    .contains("connect"),
                "{pool}"
            );
            break;
        }
        assert!(start.elapsed() < WAIT, "the breaker never opened: {pool}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    scheduler.come_back().await;
    for id in &runs {
        let run = app
            .wait_for(id, WAIT, |r| {
                r["released"] == true || r["state"] == "failed"
            })
            .await;
        assert_eq!(run["state"], "done", "{run}");
        assert_eq!(scheduler.created(id), 1);
    }
    let Reply { body: pool, .. } = app.get("/v1/pools/faulty").await;
    assert_eq!(pool["health"]["circuit"], "closed");
}

#[actix_web::test]
async fn while_the_breaker_is_open_only_trial_calls_reach_the_scheduler() {
    let (app, scheduler) = setup(
        1_000,
        json!({"retry": {"maxAttempts": 6, "initialBackoffMs": 100, "maxBackoffMs": 800}}),
    )
    .await;
    let runs = ids("breaker", 5);
    dispatch_all(&app, &runs).await;
    for id in &runs {
        app.wait_for(id, WAIT, |r| r["state"] == "running").await;
    }
    let outage_start = Instant::now();
    scheduler.set_default_fault(Fault::Unavailable);
    tokio::time::sleep(Duration::from_secs(3)).await;
    scheduler.set_default_fault(Fault::None);
    let outage_end = Instant::now();
    let during: Vec<Instant> = scheduler
        .arrivals()
        .iter()
        .map(|a| a.at)
        .filter(|t| *t >= outage_start && *t < outage_end)
        .collect();
    // Five failures open the breaker (cool-down: 4 × 100 ms, doubling up to 800 ms).
    assert!(
        during.len() >= 5,
        "{} calls during the outage",
        during.len()
    );
    let opened = during[4];
    let trials: Vec<Instant> = during
        .iter()
        .copied()
        .filter(|t| *t > opened + Duration::from_millis(150))
        .collect();
    for pair in trials.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(350),
            "two calls {gap:?} apart while the breaker was open"
        );
    }
    assert!(trials.len() <= 8, "{} calls while open", trials.len());
    // The breaker never failed a run: all of them are still running.
    for id in &runs {
        assert_eq!(app.run(id).await["state"], "running");
    }
}

#[actix_web::test]
async fn the_rate_budget_is_never_exceeded_in_any_second() {
    let (app, scheduler) = setup(1, json!({"limits": {"requestsPerSecond": 5}})).await;
    let runs = ids("budget", 6);
    dispatch_all(&app, &runs).await;
    for id in &runs {
        let run = app.wait_for(id, WAIT, |r| r["released"] == true).await;
        assert_eq!(run["state"], "done");
    }
    let times: Vec<Instant> = scheduler.arrivals().iter().map(|a| a.at).collect();
    assert!(
        times.len() >= runs.len() * 4,
        "every run made its calls: {}",
        times.len()
    );
    // Arrival times are taken by the scheduler when it gets to each request, which can lag by a
    // few tens of milliseconds on a busy machine; 50 ms of that measurement jitter is allowed.
    for (i, first) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .filter(|t| **t < *first + Duration::from_millis(950))
            .count();
        assert!(in_window <= 5, "{in_window} calls within one second");
    }
    // And the budget is used, not merely respected: the calls were not spread needlessly thin.
    let span = *times.last().unwrap() - times[0];
    let calls = u64::try_from(times.len()).unwrap();
    assert!(
        span < Duration::from_millis(1_000 * calls / 5 + 2_000),
        "{calls} calls took {span:?}"
    );
}

#[actix_web::test]
async fn unreadable_polls_past_the_limit_fail_with_poll_errors() {
    let (app, scheduler) = setup(100, json!({})).await;
    app.dispatch("faulty", json!({"jobId": "garbage-1"})).await;
    app.wait_for("garbage-1", WAIT, |r| r["state"] == "running")
        .await;
    scheduler.push_faults([Fault::Huge, Fault::Truncated, Fault::NotJson]);
    scheduler.set_default_fault(Fault::NotJson);
    let run = app.wait_settled("garbage-1").await;
    assert_eq!(run["failureCause"], "poll_errors");
    assert!(
        run["error"].as_str().unwrap().contains("4 polls in a row"),
        "{run}"
    );
    let events = app.events("garbage-1").await;
    let reasons: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "poll_error")
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons[0].contains("larger than"), "{reasons:?}");
    assert!(reasons[2].contains("not JSON"), "{reasons:?}");
}

#[actix_web::test]
async fn a_scheduler_that_forgets_jobs_gets_them_again_then_the_run_fails_as_lost() {
    let (app, scheduler) = setup(100, json!({"lost": {"redispatch": 2}})).await;
    scheduler.forget_jobs();
    app.dispatch("faulty", json!({"jobId": "amnesia-1"})).await;
    let run = app.wait_settled("amnesia-1").await;
    assert_eq!(run["failureCause"], "lost");
    assert_eq!(run["attempts"]["redispatch"], 2);
    assert_eq!(scheduler.created("amnesia-1"), 1);
    assert_eq!(scheduler.created("amnesia-1-1"), 1);
    assert_eq!(scheduler.created("amnesia-1-2"), 1);
    assert_eq!(scheduler.total_created(), 3);
}

#[actix_web::test]
async fn beyond_max_queued_the_api_answers_429_with_retry_after() {
    let (app, scheduler) =
        setup(1_000, json!({"limits": {"maxInFlight": 1, "maxQueued": 2}})).await;
    for id in ["sat-0", "sat-1", "sat-2"] {
        let response = app.dispatch("faulty", json!({"jobId": id})).await;
        assert_eq!(response.status, 202);
    }
    app.wait_for("sat-0", WAIT, |r| r["state"] == "running")
        .await;
    let response = app.dispatch("faulty", json!({"jobId": "sat-3"})).await;
    assert_eq!(response.status, 429);
    assert!(response.headers.contains_key("retry-after"));
    assert_eq!(response.json()["code"], "pool_saturated");
    let Reply { status, .. } = app.get("/v1/runs/sat-3").await;
    assert_eq!(status, 404, "a refused run is not stored");
    assert_eq!(scheduler.created("sat-3"), 0);
}

#[actix_web::test]
async fn a_huge_retry_after_waits_a_capped_time_instead_of_retrying_at_once() {
    let (app, scheduler) = setup(0, json!({})).await;
    scheduler.push_faults([Fault::TooMany(u64::MAX)]);
    app.dispatch("faulty", json!({"jobId": "parked-1"})).await;
    // The retry is scheduled an hour out (the cap), not at once and not never.
    let start = Instant::now();
    let retry = loop {
        let events = app.events("parked-1").await;
        if let Some(retry) = events.into_iter().find(|e| e["type"] == "retry") {
            break retry;
        }
        assert!(start.elapsed() < WAIT, "no retry was scheduled");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let detail = retry["detail"].as_str().unwrap();
    assert!(detail.contains("429"), "{detail}");
    assert!(detail.contains(" in 3600000 ms"), "{detail}");
    // Meanwhile the pool keeps working: another run completes, and the parked one has not been
    // sent again.
    app.dispatch("faulty", json!({"jobId": "other-1"})).await;
    assert_eq!(app.wait_settled("other-1").await["state"], "done");
    assert_eq!(scheduler.created("parked-1"), 0);
    let posts = scheduler
        .arrivals()
        .iter()
        .filter(|a| a.method == "POST")
        .count();
    assert_eq!(
        posts, 2,
        "one refused dispatch and the other run's dispatch"
    );
    assert_eq!(app.run("parked-1").await["state"], "dispatching");
}

#[actix_web::test]
async fn a_huge_oauth2_expires_in_does_not_stop_the_run() {
    let scheduler = Recorder::start(|seen| match (seen.method.as_str(), seen.path.as_str()) {
        ("POST", "/token") => answer(
            200,
            json!({"access_token": "tok-forever", "expires_in": u64::MAX}),
        ),
        ("POST", "/jobs") => answer(201, json!({})),
        ("GET", _) => answer(200, json!({"status": "Complete", "output": {"ok": true}})),
        _ => answer(200, json!({})),
    })
    .await;
    let app = spawn_app().await;
    let manifest = manifest(
        &scheduler.base_url,
        json!({"auth": {
            "type": "oauth2_client_credentials",
            "tokenUrl": format!("{}/token", scheduler.base_url),
            "clientIdSecretRef": {"key": "ID"},
            "clientSecretSecretRef": {"key": "SECRET"}
        }}),
    );
    app.register(
        "oauth",
        manifest,
        json!({"ID": "client", "SECRET": "s3cret"}),
    )
    .await;
    for id in ["forever-1", "forever-2"] {
        app.dispatch("oauth", json!({"jobId": id})).await;
        let run = app.wait_settled(id).await;
        assert_eq!(run["state"], "done", "{run}");
    }
    let seen = scheduler.seen();
    let dispatches: Vec<_> = seen.iter().filter(|s| s.path == "/jobs").collect();
    assert_eq!(dispatches.len(), 2);
    for dispatch in dispatches {
        assert_eq!(dispatch.header("authorization"), Some("Bearer tok-forever"));
    }
    // The token is cached (its lifetime capped, not overflowed): fetched once.
    assert_eq!(seen.iter().filter(|s| s.path == "/token").count(), 1);
}

#[actix_web::test]
async fn a_vanishing_rate_budget_is_refused_at_registration() {
    let app = spawn_app().await;
    for rate in [json!(1e-20), json!(0.0009), json!(0), json!(-1), json!(2e6)] {
        let response = app
            .put_pool(
                "slow",
                manifest(
                    "http://127.0.0.1:9",
                    json!({"limits": {"requestsPerSecond": rate}}),
                ),
                json!({}),
            )
            .await;
        assert_eq!(response.status, 422, "{rate}");
        let body: Value = response.json();
        assert_eq!(
            body["errors"][0]["path"], "manifest.limits.requestsPerSecond",
            "{body}"
        );
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("from 0.001 to 1000000"),
            "{body}"
        );
    }
    // The slowest budget allowed registers.
    let response = app
        .put_pool(
            "slow",
            manifest(
                "http://127.0.0.1:9",
                json!({"limits": {"requestsPerSecond": 0.001}}),
            ),
            json!({}),
        )
        .await;
    assert_eq!(response.status, 201);
}

#[actix_web::test]
async fn a_deleted_pool_registered_again_starts_with_a_closed_breaker() {
    // Every dispatch fails (one attempt each): five failures open the breaker for a minute.
    let extra =
        json!({"retry": {"maxAttempts": 1, "initialBackoffMs": 20000, "maxBackoffMs": 60000}});
    let (app, scheduler) = setup(0, extra.clone()).await;
    scheduler.set_default_fault(Fault::Unavailable);
    dispatch_all(&app, &ids("doomed", 6)).await;
    let start = Instant::now();
    loop {
        let Reply { body: pool, .. } = app.get("/v1/pools/faulty").await;
        if pool["health"]["circuit"] == "open" {
            break;
        }
        assert!(start.elapsed() < WAIT, "the breaker never opened: {pool}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let response = app
        .client
        .delete(app.url("/v1/pools/faulty?force=true"))
        .bearer_auth(crate::support::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    scheduler.set_default_fault(Fault::None);
    app.register("faulty", manifest(&scheduler.base_url, extra), json!({}))
        .await;
    // The new pool owes nothing to the deleted one's failures: it calls at once.
    let Reply { body: pool, .. } = app.get("/v1/pools/faulty").await;
    assert_eq!(pool["health"]["circuit"], "closed", "{pool}");
    assert_eq!(pool["health"]["lastError"], Value::Null, "{pool}");
    app.dispatch("faulty", json!({"jobId": "fresh-1"})).await;
    assert_eq!(app.wait_settled("fresh-1").await["state"], "done");
}

#[actix_web::test]
async fn replaced_oauth2_secrets_leave_no_cached_token_behind() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let issued = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = issued.clone();
    let scheduler = Recorder::start(
        move |seen| match (seen.method.as_str(), seen.path.as_str()) {
            ("POST", "/token") => {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                answer(
                    200,
                    json!({"access_token": format!("tok-{n}"), "expires_in": 3600}),
                )
            }
            ("POST", "/jobs") => answer(201, json!({})),
            ("GET", _) => answer(200, json!({"status": "Complete", "output": {}})),
            _ => answer(200, json!({})),
        },
    )
    .await;
    let app = spawn_app().await;
    let manifest = manifest(
        &scheduler.base_url,
        json!({"auth": {
            "type": "oauth2_client_credentials",
            "tokenUrl": format!("{}/token", scheduler.base_url),
            "clientIdSecretRef": {"key": "ID"},
            "clientSecretSecretRef": {"key": "SECRET"}
        }}),
    );
    let first = json!({"ID": "client", "SECRET": "first-secret"});
    let second = json!({"ID": "client", "SECRET": "second-secret"});
    app.register("oauth", manifest, first.clone()).await;
    // first → second → first again: the token of the first credential was dropped when the
    // secrets changed, so going back fetches a new one instead of reusing a stale token.
    for (n, secrets) in [(1, None), (2, Some(second)), (3, Some(first))] {
        if let Some(secrets) = secrets {
            let response = app
                .client
                .put(app.url("/v1/pools/oauth/secrets"))
                .bearer_auth(crate::support::ADMIN_TOKEN)
                .json(&json!({"secrets": secrets}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 200);
        }
        let id = format!("rotated-{n}");
        app.dispatch("oauth", json!({"jobId": id})).await;
        assert_eq!(app.wait_settled(&id).await["state"], "done");
        assert_eq!(issued.load(Ordering::SeqCst), n, "tokens after run {n}");
        let dispatch = scheduler
            .seen()
            .into_iter()
            .rfind(|s| s.path == "/jobs")
            .unwrap();
        assert_eq!(
            dispatch.header("authorization"),
            Some(format!("Bearer tok-{n}").as_str())
        );
    }
}

#[actix_web::test]
async fn a_burst_of_runs_shares_at_most_max_connections_requests_to_the_scheduler() {
    // Forty runs take a slot at once, and every answer takes 80 ms: without the cap each run
    // would have its own request (and connection) open at the same moment.
    let (app, scheduler) = setup(
        1,
        json!({"limits": {"maxInFlight": 40, "maxConnections": 4, "timeoutMs": 5_000}}),
    )
    .await;
    scheduler.set_default_fault(Fault::Slow(Duration::from_millis(80)));
    let runs = ids("burst", 40);
    dispatch_all(&app, &runs).await;
    for id in &runs {
        let run = app
            .wait_for(id, WAIT, |r| {
                r["released"] == true || r["state"] == "failed"
            })
            .await;
        assert_eq!(run["state"], "done", "{run}");
        assert_eq!(scheduler.created(id), 1, "{id} was created once");
    }
    let peak = scheduler.slow_peak();
    assert!(peak <= 4, "{peak} requests were open at once; the cap is 4");
    // The cap is what held them back, not a lack of work: the four were used together.
    assert!(peak >= 2, "requests went one by one ({peak} at most)");
}
