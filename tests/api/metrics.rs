//! `GET /metrics`: the exposition after a known workload (exact counts, checked against the runs'
//! own histories), its validity in both text formats, the gauges read at scrape time, the
//! breaker, a deleted pool's series, and who may scrape.

use crate::support::ADMIN_TOKEN;
use crate::support::app::{spawn_app, spawn_app_with};
use crate::support::exposition::{self, Exposition, Format};
use crate::support::manifests::{SCHED_TOKEN, simple_manifest};
use crate::support::stub::{Recorder, Seen, answer};
use crate::support::wait::{self, CHECK_EVERY, RUN_LIMIT};
use actix_web::HttpResponse;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const OPENMETRICS: &str =
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";

/// A scheduler whose job API always accepts (201) and releases (200); its polls, counted over
/// every job, answer `poll(n)` for the `n`th poll.
async fn scheduler(poll: impl Fn(usize) -> HttpResponse + Send + Sync + 'static) -> Recorder {
    let polls = Arc::new(AtomicUsize::new(0));
    Recorder::start(
        move |seen: &Seen| match (seen.method.as_str(), seen.path.as_str()) {
            ("POST", "/jobs") => answer(201, json!({"metadata": {"uid": "u-1"}})),
            ("GET", path) if path.starts_with("/jobs/") => {
                poll(polls.fetch_add(1, Ordering::SeqCst))
            }
            ("DELETE", path) if path.starts_with("/jobs/") => answer(200, json!({})),
            _ => answer(404, json!({"message": "no such route"})),
        },
    )
    .await
}

/// Scrapes in `format` and parses strictly; fails the test on an invalid exposition.
async fn scrape(app: &crate::support::client::Api, format: Format) -> Exposition {
    let accept = (format == Format::OpenMetrics).then_some(OPENMETRICS);
    let reply = app.scrape(accept).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let content_type = reply.headers["content-type"].to_str().unwrap().to_owned();
    match format {
        Format::OpenMetrics => {
            assert!(
                content_type.starts_with("application/openmetrics-text; version=1.0.0"),
                "{content_type}"
            );
        }
        Format::Prometheus => assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        ),
    }
    exposition::parse(&reply.text, format)
        .unwrap_or_else(|problem| panic!("an invalid exposition ({problem}):\n{}", reply.text))
}

#[actix_web::test]
async fn a_known_workload_is_counted_exactly_and_the_exposition_is_valid() {
    const RUNS: usize = 4;
    let app = spawn_app().await;
    // The first poll of all answers 503, the second an unknown status word, every other one
    // Complete: 1 retried poll, 1 unmapped status, RUNS + 2 polls in all.
    let scheduler = scheduler(|n| match n {
        0 => answer(503, json!({"message": "busy"})),
        1 => answer(200, json!({"status": "Wobbly"})),
        _ => answer(200, json!({"status": "Complete"})),
    })
    .await;
    app.register(
        "metered",
        simple_manifest(&scheduler.base_url),
        json!({"SCHED_TOKEN": SCHED_TOKEN}),
    )
    .await;
    let job_ids: Vec<String> = (0..RUNS)
        .map(|i| format!("metrics-job-{i}-7f3a9c"))
        .collect();
    for job_id in &job_ids {
        app.submit(
            "metered",
            json!({"jobId": job_id, "job": {"apiKey": "job-value-never-in-metrics"}}),
        )
        .await;
    }
    for job_id in &job_ids {
        app.wait_released(job_id, "done", RUN_LIMIT).await;
    }

    let text = app.scrape(Some(OPENMETRICS)).await.text;
    let metrics = scrape(&app, Format::OpenMetrics).await;
    let plain = scrape(&app, Format::Prometheus).await;
    let pool = ("pool", "metered");
    let n = RUNS as f64;
    for m in [&metrics, &plain] {
        let calls = |op: &str, class: &str| {
            m.get(
                "cattery_scheduler_calls_total",
                &[pool, ("op", op), ("class", class)],
            )
        };
        assert_eq!(calls("dispatch", "2xx"), n);
        assert_eq!(calls("poll", "2xx"), n + 1.0);
        assert_eq!(calls("poll", "5xx"), 1.0);
        assert_eq!(calls("release", "2xx"), n);
        assert_eq!(
            m.matching("cattery_scheduler_calls_total", &[pool]).len(),
            4,
            "no other operation or class was called"
        );
        let timed = |op: &str| {
            m.get(
                "cattery_scheduler_call_duration_seconds_count",
                &[pool, ("op", op)],
            )
        };
        assert_eq!(timed("dispatch"), n);
        assert_eq!(timed("poll"), n + 2.0);
        assert_eq!(timed("release"), n);
        for (state, expected) in [
            ("queued", n),
            ("dispatching", n),
            ("pending", 0.0),
            ("running", n),
            ("done", n),
            ("failed", 0.0),
            ("cancelled", 0.0),
        ] {
            assert_eq!(
                m.get("cattery_run_transitions_total", &[pool, ("state", state)]),
                expected,
                "transitions into {state}"
            );
        }
        assert_eq!(m.get("cattery_unmapped_statuses_total", &[pool]), 1.0);
        let retries = |op: &str| m.get("cattery_scheduler_retries_total", &[pool, ("op", op)]);
        assert_eq!(
            (retries("dispatch"), retries("poll"), retries("release")),
            (0.0, 1.0, 0.0)
        );
        // Gauges read now: nothing unfinished, nothing queued or in flight, breaker closed.
        for state in ["queued", "dispatching", "pending", "running"] {
            assert_eq!(
                m.get("cattery_runs", &[pool, ("state", state)]),
                0.0,
                "{state}"
            );
            assert_eq!(
                m.get("cattery_runs_past_deadline", &[pool, ("state", state)]),
                0.0,
                "{state}"
            );
        }
        assert_eq!(m.get("cattery_pool_queue_depth", &[pool]), 0.0);
        assert_eq!(m.get("cattery_pool_in_flight", &[pool]), 0.0);
        assert_eq!(m.get("cattery_pool_max_in_flight", &[pool]), 100.0);
        assert_eq!(m.get("cattery_pool_breaker_state", &[pool]), 0.0);
        // The store's writer committed (each run at least its insert and final commit).
        let commits = m.get("cattery_store_commit_duration_seconds_count", &[]);
        assert!(commits >= 1.0, "{commits}");
        assert_eq!(m.get("cattery_store_commit_batch_size_count", &[]), commits);
        assert!(m.get("cattery_store_commit_batch_size_sum", &[]) >= 2.0 * n);
        assert!(m.get("cattery_recovery_duration_seconds", &[]) >= 0.0);
        assert_eq!(
            m.get(
                "cattery_build_info",
                &[("version", env!("CARGO_PKG_VERSION"))]
            ),
            1.0
        );
        if cfg!(target_os = "linux") {
            assert!(m.get("process_resident_memory_bytes", &[]) > 0.0);
            assert!(m.get("process_open_fds", &[]) > 0.0);
            assert!(m.get("process_start_time_seconds", &[]) > 0.0);
            assert!(m.get("process_cpu_seconds_total", &[]) >= 0.0);
        }
    }
    // OpenMetrics names the units.
    assert_eq!(
        metrics.families["cattery_scheduler_call_duration_seconds"]
            .unit
            .as_deref(),
        Some("seconds")
    );

    // The transitions counted are exactly those of the runs' own histories.
    let mut from_history: BTreeMap<String, f64> = BTreeMap::new();
    for job_id in &job_ids {
        for event in app.events(job_id).await {
            if event["type"] == "transition" {
                *from_history
                    .entry(event["to"].as_str().unwrap().to_owned())
                    .or_default() += 1.0;
            }
        }
    }
    for (state, count) in &from_history {
        assert_eq!(
            metrics.get("cattery_run_transitions_total", &[pool, ("state", state)]),
            *count,
            "{state}"
        );
    }

    // No label carries a job id, a URL or a secret, and neither does the text.
    let labels = metrics.label_values();
    for value in &labels {
        assert!(
            !job_ids.iter().any(|id| value.contains(id.as_str())),
            "a job id in a label: {value}"
        );
        assert!(
            !value.contains("127.0.0.1") && !value.contains("http"),
            "a URL in a label: {value}"
        );
    }
    for secret in [
        SCHED_TOKEN,
        "job-value-never-in-metrics",
        "metrics-job-",
        ADMIN_TOKEN,
    ] {
        assert!(!text.contains(secret), "{secret} in the exposition");
    }
}

#[actix_web::test]
async fn queues_and_slots_are_read_at_scrape_time() {
    let app = spawn_app().await;
    let scheduler = scheduler(|_| answer(200, json!({"status": "Running"}))).await;
    let mut manifest = simple_manifest(&scheduler.base_url);
    manifest["limits"] = json!({"maxInFlight": 1, "maxQueued": 7});
    app.register("held", manifest, json!({"SCHED_TOKEN": SCHED_TOKEN}))
        .await;
    for i in 0..3 {
        app.submit("held", json!({"jobId": format!("held-{i}")}))
            .await;
    }
    let pool = ("pool", "held");
    let metrics = wait::until(
        "one run running and two queued",
        RUN_LIMIT,
        CHECK_EVERY,
        async || {
            let m = scrape(&app, Format::OpenMetrics).await;
            let running = m.value("cattery_runs", &[pool, ("state", "running")]);
            let queued = m.value("cattery_runs", &[pool, ("state", "queued")]);
            if running == Some(1.0) && queued == Some(2.0) {
                Ok(m)
            } else {
                Err(format!("running {running:?}, queued {queued:?}"))
            }
        },
    )
    .await;
    assert_eq!(
        metrics.get("cattery_runs", &[pool, ("state", "dispatching")]),
        0.0
    );
    assert_eq!(
        metrics.get("cattery_runs", &[pool, ("state", "pending")]),
        0.0
    );
    assert_eq!(
        metrics.get("cattery_runs_past_deadline", &[pool, ("state", "queued")]),
        0.0,
        "the runs' deadlines (a day by default) are far off"
    );
    assert_eq!(metrics.get("cattery_pool_in_flight", &[pool]), 1.0);
    assert_eq!(metrics.get("cattery_pool_queue_depth", &[pool]), 2.0);
    assert_eq!(metrics.get("cattery_pool_max_in_flight", &[pool]), 1.0);
    assert_eq!(metrics.get("cattery_pool_max_queued", &[pool]), 7.0);
    assert_eq!(
        metrics.get(
            "cattery_run_transitions_total",
            &[pool, ("state", "queued")]
        ),
        3.0
    );
    assert_eq!(
        metrics.get(
            "cattery_run_transitions_total",
            &[pool, ("state", "running")]
        ),
        1.0
    );
}

#[actix_web::test]
async fn a_failing_scheduler_shows_its_5xx_answers_retries_and_open_breaker() {
    let app = spawn_app().await;
    let scheduler = Recorder::start(|_: &Seen| answer(503, json!({"message": "down"}))).await;
    app.register(
        "down",
        simple_manifest(&scheduler.base_url),
        json!({"SCHED_TOKEN": SCHED_TOKEN}),
    )
    .await;
    for i in 0..3 {
        app.submit("down", json!({"jobId": format!("down-{i}")}))
            .await;
    }
    let pool = ("pool", "down");
    let metrics = wait::until("the breaker to open", RUN_LIMIT, CHECK_EVERY, async || {
        let m = scrape(&app, Format::Prometheus).await;
        match m.value("cattery_pool_breaker_state", &[pool]) {
            Some(state) if state > 0.0 => Ok(m),
            other => Err(format!("breaker {other:?}")),
        }
    })
    .await;
    let failed: f64 = metrics
        .matching("cattery_scheduler_calls_total", &[pool, ("class", "5xx")])
        .iter()
        .map(|s| s.value)
        .sum();
    // The breaker opens after 5 failures in a row, and nothing but 503 was answered.
    assert!(failed >= 5.0, "{failed}");
    assert!(
        metrics
            .matching("cattery_scheduler_calls_total", &[pool, ("class", "2xx")])
            .is_empty()
    );
    assert!(
        metrics.get(
            "cattery_scheduler_calls_total",
            &[pool, ("op", "dispatch"), ("class", "5xx")]
        ) >= 1.0
    );
    assert!(
        metrics.get(
            "cattery_scheduler_retries_total",
            &[pool, ("op", "dispatch")]
        ) >= 1.0
    );
}

#[actix_web::test]
async fn a_deleted_pool_leaves_no_series() {
    let app = spawn_app().await;
    let scheduler = scheduler(|_| answer(200, json!({"status": "Complete"}))).await;
    for name in ["gone", "kept"] {
        app.register(
            name,
            simple_manifest(&scheduler.base_url),
            json!({"SCHED_TOKEN": SCHED_TOKEN}),
        )
        .await;
        let job_id = format!("{name}-1");
        app.submit(name, json!({"jobId": job_id})).await;
        app.wait_released(&job_id, "done", RUN_LIMIT).await;
    }
    let before = scrape(&app, Format::OpenMetrics).await;
    assert_eq!(
        before.get(
            "cattery_run_transitions_total",
            &[("pool", "gone"), ("state", "done")]
        ),
        1.0
    );
    let deleted = app
        .client
        .delete(app.url("/v1/pools/gone"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    let after = scrape(&app, Format::OpenMetrics).await;
    let left: Vec<_> = after
        .samples
        .iter()
        .filter(|s| s.labels.get("pool").map(String::as_str) == Some("gone"))
        .map(|s| s.name.clone())
        .collect();
    assert!(left.is_empty(), "series of the deleted pool: {left:?}");
    assert_eq!(
        after.get(
            "cattery_run_transitions_total",
            &[("pool", "kept"), ("state", "done")]
        ),
        1.0
    );
}

async fn unauthenticated_scrape(
    app: &crate::support::client::Api,
    token: Option<&str>,
) -> (u16, String, Value) {
    let mut request = app.client.get(app.url("/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = response.text().await.unwrap();
    (
        status,
        content_type,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

#[actix_web::test]
async fn a_scrape_needs_a_reader_token_unless_metrics_are_public() {
    let app = spawn_app().await;
    for token in [None, Some("not-a-token")] {
        let (status, content_type, body) = unauthenticated_scrape(&app, token).await;
        assert_eq!(status, 401, "{token:?}");
        assert_eq!(content_type, "application/problem+json");
        assert_eq!(body["code"], "unauthorized");
    }
    let reader = app.scrape(None).await;
    assert_eq!(reader.status, 200, "{}", reader.text);
    exposition::parse(&reader.text, Format::Prometheus).unwrap();

    let public = spawn_app_with(|settings| settings.metrics.public = true).await;
    let (status, content_type, _) = unauthenticated_scrape(&public, None).await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
}

#[test]
fn the_exposition_check_refuses_what_a_scraper_refuses() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{pool=\"p\"} 1\n";
    assert!(exposition::parse(good, Format::Prometheus).is_ok());
    let refused = [
        // No # EOF in OpenMetrics; # EOF in the Prometheus format.
        (
            "# HELP a A.\n# TYPE a counter\na_total 1\n",
            Format::OpenMetrics,
        ),
        (
            "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n# EOF\n",
            Format::Prometheus,
        ),
        // A sample before its # TYPE, a family without # HELP, a foreign sample name.
        (
            "a_total 1\n# HELP a_total A.\n# TYPE a_total counter\n",
            Format::Prometheus,
        ),
        ("# TYPE a_total counter\na_total 1\n", Format::Prometheus),
        ("# HELP a A.\n# TYPE a gauge\nb 1\n", Format::Prometheus),
        // A duplicate series, a bad label, a histogram whose +Inf bucket is not its count.
        (
            "# HELP a A.\n# TYPE a gauge\na{x=\"1\"} 1\na{x=\"1\"} 2\n",
            Format::Prometheus,
        ),
        (
            "# HELP a A.\n# TYPE a gauge\na{x=1} 1\n",
            Format::Prometheus,
        ),
        (
            "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
            Format::Prometheus,
        ),
    ];
    for (text, format) in refused {
        assert!(
            exposition::parse(text, format).is_err(),
            "accepted:\n{text}"
        );
    }
}
