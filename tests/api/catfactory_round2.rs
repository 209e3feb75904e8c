//! Cat-Factory drop-in, round two: what Cat-Factory's own runner-pool adapter reads from the
//! facade, item by item (CATFACTORY.md §1.8–§1.9, §3.3–§3.7, §4.4, §6.1–§6.7).
//!
//! Every test drives the facade over loopback as Cat-Factory's transparent manifest does
//! (`POST /jobs` with the spec, `GET /jobs/{id}`, `DELETE /jobs/{id}`) and asserts the exact
//! JSON it reads: the in-process application for most, the real `cattery serve` binary where a
//! restart is part of the story.

use crate::catfactory::spec;
use crate::catfactory_scheduler::CfScheduler;
use crate::support::app::{TestApp, spawn_app_with};
use crate::support::database::TestDatabase;
use crate::support::gateway::{Gateway, Launch};
use crate::support::stub::Scripted;
use crate::support::{ADMIN_TOKEN, DISPATCHER_TOKEN, READER_TOKEN};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
const HARNESS_SECRET: &str = "round-two-harness-secret-42";

/// Cat-Factory's eviction vocabulary (CATFACTORY.md §1.8): a failed job whose status word is
/// one of these gets its eviction recovery (a re-dispatch under a new id).
const CF_EVICTION_WORDS: &[&str] = &[
    "evicted",
    "eviction",
    "preempted",
    "preemption",
    "lost",
    "nodelost",
    "node_lost",
    "node-lost",
    "nodefailure",
    "node_failure",
    "oomkilled",
    "oom_killed",
    "oom-killed",
];

/// Cat-Factory's failure causes (CATFACTORY.md §6.7); `failureCausePath` keeps only these.
const CF_FAILURE_CAUSES: &[&str] = &[
    "inactivity-timeout",
    "max-duration",
    "no-tool-progress",
    "agent",
    "git",
    "branch-contended",
    "api",
    "llm-upstream",
    "no-usable-output",
    "no-changes",
    "deploy",
];

/// A cattery/v1 pool on the test scheduler speaking the harness protocol, mapping every
/// channel the harness has; `extra` is merged over the top level.
fn harness_pool(scheduler: &CfScheduler, extra: Value) -> Value {
    let mut manifest = json!({
        "apiVersion": "cattery/v1",
        "baseUrl": scheduler.base_url,
        "polling": {"intervalMs": 20, "maxIntervalMs": 40, "maxConsecutiveErrors": 3},
        "retry": {"maxAttempts": 2, "initialBackoffMs": 10, "maxBackoffMs": 20},
        "dispatch": {
            "request": {"method": "POST", "path": "/jobs", "body": "{{input.job}}"},
            "capture": {"capabilities": "capabilities"}
        },
        "poll": {
            "request": {"method": "GET", "path": "/jobs/{{input.jobId}}"},
            "notFound": "lost",
            "map": {
                "state": "state",
                "result": "result",
                "error": "error",
                "failureCause": "failureCause",
                "detail": "detail",
                "fields": {"followUps": "followUps", "callMetrics": "callMetrics", "spans": "spans"}
            }
        },
        "release": {"request": {"method": "DELETE", "path": "/jobs/{{input.jobId}}"}}
    });
    if let (Value::Object(base), Value::Object(extra)) = (&mut manifest, extra) {
        base.extend(extra);
    }
    manifest
}

fn facade_route(field: &str, value: &str, pool: &str) -> cattery::config::FacadeRoute {
    let mut route = cattery::config::FacadeRoute {
        kind: None,
        mode: None,
        instance_type: None,
        cloud_provider: None,
        image: None,
        pool: pool.to_owned(),
        capabilities: None,
    };
    match field {
        "kind" => route.kind = Some(value.to_owned()),
        "mode" => route.mode = Some(value.to_owned()),
        other => panic!("no route condition {other}"),
    }
    route
}

/// The application with the facade's default pool `harness` and the harness secret, adjusted.
async fn app_with(adjust: impl FnOnce(&mut cattery::config::Settings)) -> TestApp {
    spawn_app_with(|settings| {
        settings.facade.default_pool = "harness".to_owned();
        settings.facade.harness_secret = HARNESS_SECRET.to_owned();
        adjust(settings);
    })
    .await
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `POST /jobs` as Cat-Factory sends it (its pool credential is a dispatcher token).
async fn dispatch(app: &TestApp, job: &Value) -> (u16, Value) {
    send(
        app.client
            .post(app.url("/jobs"))
            .bearer_auth(DISPATCHER_TOKEN)
            .json(job),
    )
    .await
}

/// `GET /jobs/{id}` as Cat-Factory polls it.
async fn poll(app: &TestApp, job_id: &str) -> (u16, Value) {
    send(
        app.client
            .get(app.url(&format!("/jobs/{job_id}")))
            .bearer_auth(DISPATCHER_TOKEN),
    )
    .await
}

/// `DELETE /jobs/{id}` as Cat-Factory releases it.
async fn release(app: &TestApp, job_id: &str) -> (u16, Value) {
    send(
        app.client
            .delete(app.url(&format!("/jobs/{job_id}")))
            .bearer_auth(DISPATCHER_TOKEN),
    )
    .await
}

/// `expected` with the view's `startedAt` (a time the test cannot know) copied in.
fn with_started_at(mut expected: Value, view: &Value) -> Value {
    assert!(view["startedAt"].is_i64(), "startedAt is epoch ms: {view}");
    expected["startedAt"] = view["startedAt"].clone();
    expected
}

/// The view of a finished run, once the RunView says it is final.
async fn settled_view(app: &TestApp, job_id: &str) -> Value {
    app.wait_settled(job_id).await;
    let (status, view) = poll(app, job_id).await;
    assert_eq!(status, 200, "{view}");
    view
}

// ---------------------------------------------------------------------------------------------
// Item 1: a lost run reads as an eviction, so Cat-Factory's eviction recovery starts.
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn a_job_the_scheduler_forgot_reads_as_lost_so_cat_factory_redispatches_it() {
    let app = app_with(|_| {}).await;
    let scheduler = CfScheduler::start(vec![]).await;
    // cattery dispatches a lost job once more itself before it gives up on it.
    app.register(
        "harness",
        harness_pool(&scheduler, json!({"lost": {"redispatch": 1}})),
        json!({}),
    )
    .await;
    scheduler.script(
        "exec-1-coder",
        vec![
            Scripted::Json(json!({"state": "running"})),
            Scripted::Status(404, "job not found"),
        ],
    );
    let (status, accepted) = dispatch(&app, &spec("exec-1-coder")).await;
    assert_eq!(status, 202, "{accepted}");

    let view = settled_view(&app, "exec-1-coder").await;
    let expected = json!({
        "id": "exec-1-coder",
        "state": "lost",
        "error": "the scheduler answered the poll with not found (container evicted or crashed)",
        "detail": "cattery failure cause: lost (the scheduler lost the job (it no longer knew it, \
                   or reported it evicted) and cattery has no re-dispatch left for it)",
        "capabilities": ["mcpServers", "skills"]
    });
    assert_eq!(view, with_started_at(expected, &view));
    // What Cat-Factory makes of it: a failed job with the eviction flag, never a plain failure.
    let word = view["state"].as_str().unwrap();
    assert!(CF_EVICTION_WORDS.contains(&word), "{word}");
    assert!(view.get("failureCause").is_none());
    // cattery re-dispatched it once, then gave it up; it is never a 404 for Cat-Factory.
    let run = app.run("exec-1-coder").await;
    assert_eq!(run["attempts"]["redispatch"], 1, "{run}");
    assert_eq!(scheduler.seen_with("POST", "/jobs").len(), 2);
    let (status, again) = poll(&app, "exec-1-coder").await;
    assert_eq!((status, &again["state"]), (200, &json!("lost")));
}

#[actix_web::test]
async fn a_job_whose_pod_was_evicted_reads_as_the_schedulers_eviction_word() {
    let app = app_with(|_| {}).await;
    let scheduler = CfScheduler::start(vec![]).await;
    app.register(
        "harness",
        harness_pool(
            &scheduler,
            json!({"poll": {
                "request": {"method": "GET", "path": "/jobs/{{input.jobId}}"},
                "notFound": "lost",
                "map": {"state": "status.phase", "statusMap": {"NodeShutdown": "lost"}}
            }}),
        ),
        json!({}),
    )
    .await;
    let cases = [
        ("exec-2-coder", "Evicted", "evicted"),
        ("exec-3-coder", "Preempted", "preempted"),
        ("exec-4-coder", "OOMKilled", "oomkilled"),
        // A word of the scheduler's own that its manifest maps to lost.
        ("exec-5-coder", "NodeShutdown", "lost"),
    ];
    for (job_id, word, _) in cases {
        scheduler.script(
            job_id,
            vec![
                Scripted::Json(json!({"status": {"phase": "Running"}})),
                Scripted::Json(
                    json!({"status": {"phase": word, "message": "The node was low on resource: memory."}}),
                ),
            ],
        );
        let (status, body) = dispatch(&app, &spec(job_id)).await;
        assert_eq!(status, 202, "{body}");
    }
    for (job_id, word, state) in cases {
        let view = settled_view(&app, job_id).await;
        let expected = json!({
            "id": job_id,
            "state": state,
            "error": format!("the scheduler reported the job as lost ({word}) (container evicted or crashed)"),
            "detail": "cattery failure cause: lost (the scheduler lost the job (it no longer knew \
                       it, or reported it evicted) and cattery has no re-dispatch left for it)",
            "capabilities": ["mcpServers", "skills"]
        });
        assert_eq!(view, with_started_at(expected, &view), "{job_id}");
        assert!(CF_EVICTION_WORDS.contains(&state));
    }
    // Without re-dispatches left, cattery sent each job once: the recovery is Cat-Factory's.
    assert_eq!(scheduler.seen_with("POST", "/jobs").len(), cases.len());
}

#[actix_web::test]
async fn a_job_cattery_dispatches_again_and_restarts_around_is_never_evicted_for_cat_factory() {
    let db = TestDatabase::create().await;
    let data_dir = tempfile::tempdir().unwrap();
    let scheduler = CfScheduler::start(vec![]).await;
    let mut gateway = Gateway::start(
        Launch::new(&db, data_dir.path()).env("CATTERY__FACADE__DEFAULTPOOL", "harness"),
    )
    .await;
    let base = gateway.address.clone();
    let client = cattery::scheduler::http::plain_client().unwrap();
    let (status, body) = send(
        client
            .put(format!("{base}/v1/pools/harness"))
            .bearer_auth(ADMIN_TOKEN)
            .json(
                &json!({"manifest": harness_pool(&scheduler, json!({"lost": {"redispatch": 1}})),
                          "secrets": {}}),
            ),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    // The scheduler loses the job once; the dispatch cattery sends again is kept running.
    let job_id = "exec-6-coder";
    scheduler.script(
        job_id,
        vec![
            Scripted::Json(json!({"state": "running"})),
            Scripted::Status(404, "job not found"),
            Scripted::Json(json!({"state": "running"})),
        ],
    );
    let (status, body) = send(
        client
            .post(format!("{base}/jobs"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&spec(job_id)),
    )
    .await;
    assert_eq!(status, 202, "{body}");

    // Cat-Factory polls all along: every answer it gets is a 200 `running` view.
    let mut views: Vec<(u16, Value)> = Vec::new();
    let view_url = format!("{base}/jobs/{job_id}");
    let poll_once = || send(client.get(&view_url).bearer_auth(ADMIN_TOKEN));
    let started = Instant::now();
    loop {
        views.push(poll_once().await);
        let (_, run) = send(
            client
                .get(format!("{base}/v1/runs/{job_id}"))
                .bearer_auth(ADMIN_TOKEN),
        )
        .await;
        if run["attempts"]["redispatch"] == 1 && run["state"] == "running" {
            break;
        }
        assert!(started.elapsed() < WAIT, "no re-dispatch: {run}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(scheduler.seen_with("POST", "/jobs").len(), 2);

    // The gateway dies (kill -9) and comes back on the same database; meanwhile the job ends.
    gateway.kill9();
    scheduler.script(
        job_id,
        vec![
            Scripted::Json(json!({"state": "running"})),
            Scripted::Status(404, "job not found"),
            Scripted::Json(
                json!({"state": "done", "result": {"summary": "did it", "prUrl": "https://github.com/o/r/pull/6"}}),
            ),
        ],
    );
    gateway.restart().await;
    let started = Instant::now();
    let last = loop {
        let (status, view) = poll_once().await;
        views.push((status, view.clone()));
        if status == 200 && view["state"] == "done" {
            break view;
        }
        assert!(started.elapsed() < WAIT, "not done: {view}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let expected = json!({
        "id": job_id,
        "state": "done",
        "result": {"summary": "did it", "prUrl": "https://github.com/o/r/pull/6"},
        "capabilities": ["mcpServers", "skills"]
    });
    assert_eq!(last, with_started_at(expected, &last));
    for (status, view) in &views {
        assert_eq!(*status, 200, "{view}");
        let state = view["state"].as_str().unwrap();
        assert!(
            state == "running" || state == "done",
            "Cat-Factory must not see an eviction or a failure: {view}"
        );
    }
    // The job was sent twice in all (the first dispatch and cattery's own), never a third time.
    assert_eq!(scheduler.seen_with("POST", "/jobs").len(), 2);
    drop(gateway);
}

// ---------------------------------------------------------------------------------------------
// Item 2: `failureCause` holds only Cat-Factory's causes; the rest is said in `detail`.
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn failure_causes_are_only_cat_factorys_and_cattery_causes_are_named_in_detail() {
    let app = app_with(|settings| {
        settings.facade.routes = vec![facade_route("mode", "slow", "slow")];
    })
    .await;
    let scheduler = CfScheduler::start(vec![]).await;
    app.register("harness", harness_pool(&scheduler, json!({})), json!({}))
        .await;
    // A pool whose runs have a one-second deadline.
    app.register(
        "slow",
        harness_pool(
            &scheduler,
            json!({"polling": {"intervalMs": 20, "maxIntervalMs": 40, "deadlineSeconds": 1}}),
        ),
        json!({}),
    )
    .await;
    let failed = |extra: Value| {
        let mut body = json!({"state": "failed", "error": "the agent gave up"});
        if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
            body.extend(extra);
        }
        vec![
            Scripted::Json(json!({"state": "running"})),
            Scripted::Json(body),
        ]
    };
    scheduler.script(
        "cause-contended",
        failed(json!({"failureCause": "branch-contended", "detail": "main moved"})),
    );
    scheduler.script("cause-none", failed(json!({})));
    scheduler.script(
        "cause-foreign",
        failed(json!({"failureCause": "oom", "detail": "137"})),
    );
    scheduler.script(
        "cause-unreadable",
        vec![Scripted::Status(200, "<html>proxy error</html>")],
    );
    scheduler.script(
        "cause-deadline",
        vec![Scripted::Json(json!({"state": "running"}))],
    );
    scheduler.script(
        "cause-cancelled",
        vec![Scripted::Json(json!({"state": "running"}))],
    );
    for job_id in [
        "cause-contended",
        "cause-none",
        "cause-foreign",
        "cause-unreadable",
        "cause-cancelled",
    ] {
        let (status, body) = dispatch(&app, &spec(job_id)).await;
        assert_eq!(status, 202, "{body}");
    }
    let mut slow = spec("cause-deadline");
    slow["mode"] = json!("slow");
    let (status, body) = dispatch(&app, &slow).await;
    assert_eq!(status, 202, "{body}");
    app.wait_for("cause-cancelled", WAIT, |r| r["state"] == "running")
        .await;
    let (status, body) = release(&app, "cause-cancelled").await;
    assert_eq!(
        (status, body),
        (200, json!({"jobId": "cause-cancelled", "state": "failed"}))
    );

    let caps = json!(["mcpServers", "skills"]);
    let cases = [
        (
            "cause-contended",
            json!({"state": "failed", "error": "the agent gave up",
                   "failureCause": "branch-contended", "detail": "main moved"}),
        ),
        (
            "cause-none",
            json!({"state": "failed", "error": "the agent gave up",
                   "detail": "cattery failure cause: scheduler (the scheduler reported the job \
                              failed without naming a cause)"}),
        ),
        (
            "cause-foreign",
            json!({"state": "failed", "error": "the agent gave up",
                   "detail": "137\ncattery failure cause: oom (reported by the scheduler)"}),
        ),
        (
            "cause-unreadable",
            json!({"state": "failed",
                   "error": "3 polls in a row could not be read; last error: poll → 200: the answer is not JSON",
                   "detail": "cattery failure cause: poll_errors (the scheduler's answers about \
                              the job could not be read, too often in a row)"}),
        ),
        (
            "cause-deadline",
            json!({"state": "failed", "error": "the run's deadline passed before it finished",
                   "failureCause": "max-duration",
                   "detail": "cattery failure cause: deadline (the run's deadline passed; \
                              reported as max-duration)"}),
        ),
        (
            "cause-cancelled",
            json!({"state": "failed", "error": "cancelled on request",
                   "detail": "cattery failure cause: cancelled (the run was cancelled)"}),
        ),
    ];
    for (job_id, members) in cases {
        let view = settled_view(&app, job_id).await;
        let mut expected = members;
        expected["id"] = json!(job_id);
        expected["capabilities"] = caps.clone();
        assert_eq!(view, with_started_at(expected, &view), "{job_id}");
        if let Some(cause) = view.get("failureCause") {
            assert!(CF_FAILURE_CAUSES.contains(&cause.as_str().unwrap()));
        }
    }

    // A dispatch the scheduler refuses never started: no startedAt, no capabilities.
    scheduler.set_dispatch_status(400);
    let (status, body) = dispatch(&app, &spec("cause-refused")).await;
    assert_eq!(status, 202, "{body}");
    let view = settled_view(&app, "cause-refused").await;
    assert_eq!(view["state"], "failed");
    assert!(view.get("failureCause").is_none(), "{view}");
    assert!(
        view["detail"]
            .as_str()
            .unwrap()
            .starts_with("cattery failure cause: dispatch_rejected (the scheduler refused the job"),
        "{view}"
    );
}

// ---------------------------------------------------------------------------------------------
// Item 3: every POST /jobs and GET /health answers with a capability list.
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn post_jobs_and_health_declare_capabilities_from_config_and_from_the_scheduler() {
    let app = spawn_app_with(|settings| {
        settings.local_pool.enabled = true;
        settings.local_pool.capabilities = vec!["skills".to_owned(), "mcpServers".to_owned()];
        settings.facade.default_pool = "local".to_owned();
        let mut deploy = facade_route("kind", "deploy", "deployers");
        deploy.capabilities = Some(vec!["generateImages".to_owned()]);
        settings.facade.routes = vec![deploy, facade_route("kind", "inline", "plain")];
    })
    .await;
    let scheduler = CfScheduler::start(vec![Scripted::Json(json!({"state": "running"}))]).await;
    app.register("deployers", harness_pool(&scheduler, json!({})), json!({}))
        .await;
    let mut plain = harness_pool(&scheduler, json!({}));
    plain["dispatch"].as_object_mut().unwrap().remove("capture");
    app.register("plain", plain, json!({})).await;

    // The default pool is the built-in local pool: its declared list, on /health and POST.
    let (status, health) = send(app.client.get(app.url("/health"))).await;
    assert_eq!(
        (status, health),
        (
            200,
            json!({"status": "ok", "capabilities": ["skills", "mcpServers"]})
        )
    );
    let mut local_job = spec("caps-local");
    local_job["stepMs"] = json!(0);
    let (status, body) = dispatch(&app, &local_job).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body,
        json!({"jobId": "caps-local", "state": "running", "capabilities": ["skills", "mcpServers"]})
    );
    // The local pool declared the same list when it accepted the job.
    let view = settled_view(&app, "caps-local").await;
    assert_eq!(view["state"], "done", "{view}");
    assert_eq!(view["capabilities"], json!(["skills", "mcpServers"]));

    // A route with its own list answers it until the pool's scheduler reported one.
    let mut deploy = spec("caps-deploy-1");
    deploy["kind"] = json!("deploy");
    let (status, body) = dispatch(&app, &deploy).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body,
        json!({"jobId": "caps-deploy-1", "state": "running", "capabilities": ["generateImages"]})
    );
    app.wait_for("caps-deploy-1", WAIT, |r| r["state"] == "running")
        .await;
    let (_, view) = poll(&app, "caps-deploy-1").await;
    assert_eq!(view["capabilities"], json!(["mcpServers", "skills"]));
    // Re-attaching answers what the scheduler reported for the job; a new job of the pool too.
    let (status, body) = dispatch(&app, &deploy).await;
    assert_eq!(
        (status, body),
        (
            202,
            json!({"jobId": "caps-deploy-1", "state": "running", "capabilities": ["mcpServers", "skills"]})
        )
    );
    let mut second = spec("caps-deploy-2");
    second["kind"] = json!("deploy");
    let (status, body) = dispatch(&app, &second).await;
    assert_eq!(
        (status, body),
        (
            202,
            json!({"jobId": "caps-deploy-2", "state": "running", "capabilities": ["mcpServers", "skills"]})
        )
    );

    // A pool with nothing declared anywhere answers an empty list, never no list.
    let mut inline = spec("caps-inline");
    inline["kind"] = json!("inline");
    let (status, body) = dispatch(&app, &inline).await;
    assert_eq!(
        (status, body),
        (
            202,
            json!({"jobId": "caps-inline", "state": "running", "capabilities": []})
        )
    );
}

// ---------------------------------------------------------------------------------------------
// Item 4: a wrong credential is refused on every facade path, `/` included.
// ---------------------------------------------------------------------------------------------

/// Cat-Factory's connection test (CATFACTORY.md §4.4): an authenticated `GET {baseUrl}`.
fn connection_test(status: u16) -> String {
    if status == 401 || status == 403 {
        format!("Credentials rejected (HTTP {status})")
    } else {
        format!("Reachable (HTTP {status})")
    }
}

#[actix_web::test]
async fn every_facade_path_refuses_a_wrong_credential_and_the_connection_test_can_tell() {
    let app = app_with(|settings| settings.facade.default_pool = String::new()).await;
    let unauthorized = json!({"error": "unauthorized"});
    let requests: Vec<(&str, &str)> = vec![
        ("GET", "/"),
        ("GET", "/jobs/exec-1-coder"),
        ("DELETE", "/jobs/exec-1-coder"),
        ("POST", "/jobs"),
        ("GET", "/jobs"),
        ("PUT", "/jobs/exec-1-coder"),
        ("GET", "/run"),
        ("POST", "/health"),
        ("GET", "/no/such/route"),
    ];
    for (method, path) in &requests {
        let build = || {
            let request = app
                .client
                .request(method.parse().unwrap(), app.url(path))
                .header("accept", "application/json");
            if *method == "POST" {
                request.json(&spec("exec-1-coder"))
            } else {
                request
            }
        };
        for (label, request) in [
            ("no credential", build()),
            ("a wrong token", build().bearer_auth("not-a-token")),
            (
                "a wrong secret",
                build().header("x-harness-secret", "wrong"),
            ),
            (
                "a non-bearer scheme",
                build().basic_auth("user", Some("pass")),
            ),
        ] {
            let (status, body) = send(request).await;
            assert_eq!(
                (status, &body),
                (401, &unauthorized),
                "{method} {path} with {label}"
            );
        }
    }
    // A reader token may read but not dispatch.
    let (status, body) = send(
        app.client
            .post(app.url("/jobs"))
            .bearer_auth(READER_TOKEN)
            .json(&spec("exec-1-coder")),
    )
    .await;
    assert_eq!((status, body), (403, json!({"error": "forbidden"})));

    // With the right credential `/` answers like the harness's health, other paths 404.
    let health = json!({"status": "ok", "capabilities": []});
    for request in [
        app.client.get(app.url("/")).bearer_auth(DISPATCHER_TOKEN),
        app.client
            .get(app.url("/"))
            .header("x-harness-secret", HARNESS_SECRET),
    ] {
        assert_eq!(send(request).await, (200, health.clone()));
    }
    let (status, body) = send(
        app.client
            .get(app.url("/no/such/route"))
            .bearer_auth(DISPATCHER_TOKEN),
    )
    .await;
    assert_eq!((status, body), (404, json!({"error": "not found"})));
    // /health stays open, as on the harness.
    let (status, body) = send(app.client.get(app.url("/health"))).await;
    assert_eq!((status, body), (200, health));

    // What Cat-Factory's connection test concludes.
    let probe = |token: &'static str| {
        app.client
            .get(app.url("/"))
            .header("accept", "application/json")
            .bearer_auth(token)
    };
    let (wrong, _) = send(probe("a-revoked-token")).await;
    assert_eq!(connection_test(wrong), "Credentials rejected (HTTP 401)");
    let (right, _) = send(probe(DISPATCHER_TOKEN)).await;
    assert_eq!(connection_test(right), "Reachable (HTTP 200)");

    // cattery's own API keeps its problem+json answers.
    let response = app.client.get(app.url("/v1/no-such")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

// ---------------------------------------------------------------------------------------------
// Item 5: job specs up to `facade.maxJobBytes` (16 MiB by default) go through.
// ---------------------------------------------------------------------------------------------

/// A spec of about `bytes` bytes of JSON: Cat-Factory's injected context files.
fn spec_of_size(job_id: &str, bytes: usize) -> Value {
    let mut job = spec(job_id);
    job["stepMs"] = json!(0);
    job["contextFiles"] = json!([{"path": "docs/contract.md", "content": "c".repeat(bytes)}]);
    job
}

#[actix_web::test]
async fn large_job_specs_are_accepted_up_to_max_job_bytes_and_larger_ones_refused_in_the_harness_shape()
 {
    let app = spawn_app_with(|settings| {
        settings.local_pool.enabled = true;
        settings.facade.default_pool = "local".to_owned();
    })
    .await;
    // A 6 MiB spec (over the old 1 MiB limit and the 4 MiB cap on rendered bodies) runs to done
    // on the built-in local pool.
    let big = spec_of_size("size-6mib", 6 * 1024 * 1024);
    let (status, body) = dispatch(&app, &big).await;
    assert_eq!(
        (status, body),
        (
            202,
            json!({"jobId": "size-6mib", "state": "running", "capabilities": []})
        )
    );
    let view = settled_view(&app, "size-6mib").await;
    assert_eq!(view["state"], "done", "{view}");

    // Over the default 16 MiB: 413 in the harness's shape, and no run.
    let too_big = spec_of_size("size-17mib", 17 * 1024 * 1024);
    let (status, body) = dispatch(&app, &too_big).await;
    assert_eq!(
        (status, body),
        (
            413,
            json!({"error": "the job spec is larger than 16777216 bytes (facade.maxJobBytes)"})
        )
    );
    let (status, body) = poll(&app, "size-17mib").await;
    assert_eq!((status, body), (404, json!({"error": "job not found"})));

    // The limit is a setting.
    let small = spawn_app_with(|settings| settings.facade.max_job_bytes = 64 * 1024).await;
    let (status, body) = dispatch(&small, &spec_of_size("size-100k", 100 * 1024)).await;
    assert_eq!(
        (status, body),
        (
            413,
            json!({"error": "the job spec is larger than 65536 bytes (facade.maxJobBytes)"})
        )
    );
}

// ---------------------------------------------------------------------------------------------
// Item 6: drain-on-read channels hand every batch to the facade reader once, in order.
// ---------------------------------------------------------------------------------------------

fn follow_up(n: usize) -> Value {
    json!({"kind": "follow_up", "title": format!("follow-up {n}")})
}

fn call_metric(seq: usize, text: &str) -> Value {
    json!({"seq": seq, "model": "m", "promptText": text, "responseText": "r", "reasoningText": "",
           "messageCount": 2, "inputTokens": 10, "outputTokens": 5})
}

#[actix_web::test]
async fn every_drained_batch_reaches_the_facade_reader_once_and_in_order() {
    let app = app_with(|_| {}).await;
    let scheduler = CfScheduler::start(vec![]).await;
    app.register("harness", harness_pool(&scheduler, json!({})), json!({}))
        .await;

    // Six polls of batches (some empty, as a drained harness answers between batches), then
    // done with a last batch. The reader reads nothing until cattery saw them all.
    let mut script = Vec::new();
    for n in 1..=6 {
        let batch: Vec<Value> = if n % 3 == 0 {
            vec![]
        } else {
            vec![follow_up(n)]
        };
        script.push(Scripted::Json(json!({
            "state": "running",
            "followUps": batch,
            "callMetrics": [call_metric(n, "p")],
            "spans": [{"name": format!("span {n}")}]
        })));
    }
    script.push(Scripted::Json(json!({
        "state": "done", "result": {"summary": "all batches"},
        "followUps": [follow_up(7)], "callMetrics": [call_metric(7, "p")]
    })));
    scheduler.script("drain-1", script);
    let (status, body) = dispatch(&app, &spec("drain-1")).await;
    assert_eq!(status, 202, "{body}");
    let run = app.wait_settled("drain-1").await;
    assert_eq!(run["state"], "done");
    // The RunView keeps what the batches carried (without cattery's bookkeeping).
    assert_eq!(
        run["fields"]["followUps"],
        json!([
            follow_up(1),
            follow_up(2),
            follow_up(4),
            follow_up(5),
            follow_up(7)
        ])
    );
    assert_eq!(
        run["fields"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["callMetrics", "followUps", "spans"]
    );

    let (status, first) = poll(&app, "drain-1").await;
    assert_eq!(status, 200);
    let expected = json!({
        "id": "drain-1",
        "state": "done",
        "result": {"summary": "all batches"},
        "followUps": [follow_up(1), follow_up(2), follow_up(4), follow_up(5), follow_up(7)],
        "callMetrics": (1..=7).map(|n| call_metric(n, "p")).collect::<Vec<_>>(),
        "spans": (1..=6).map(|n| json!({"name": format!("span {n}")})).collect::<Vec<_>>(),
        "capabilities": ["mcpServers", "skills"]
    });
    assert_eq!(first, with_started_at(expected, &first));
    // Each item once: a second read has none left.
    let (_, second) = poll(&app, "drain-1").await;
    let expected = json!({
        "id": "drain-1",
        "state": "done",
        "result": {"summary": "all batches"},
        "capabilities": ["mcpServers", "skills"]
    });
    assert_eq!(second, with_started_at(expected, &second));

    // Batches that do not fit in one answer (Cat-Factory reads at most 200 KB) are handed over
    // in order across reads, and the job reads `running` until the last one went out.
    let text = "t".repeat(50 * 1024);
    let mut script = Vec::new();
    for seq in 1..=4 {
        script.push(Scripted::Json(
            json!({"state": "running", "callMetrics": [call_metric(seq, &text)]}),
        ));
    }
    script.push(Scripted::Json(json!({"state": "done", "result": {}})));
    scheduler.script("drain-2", script);
    let (status, _) = dispatch(&app, &spec("drain-2")).await;
    assert_eq!(status, 202);
    app.wait_settled("drain-2").await;
    let mut handed = Vec::new();
    let mut states = Vec::new();
    for _ in 0..3 {
        let (_, view) = poll(&app, "drain-2").await;
        assert!(
            serde_json::to_vec(&view).unwrap().len() < 200_000,
            "within Cat-Factory's cap"
        );
        states.push(view["state"].as_str().unwrap().to_owned());
        for metric in view["callMetrics"].as_array().into_iter().flatten() {
            handed.push(metric["seq"].as_u64().unwrap());
        }
        if view["state"] == "done" {
            assert_eq!(view["result"], json!({}));
        } else {
            assert!(view.get("result").is_none(), "{view}");
        }
    }
    assert_eq!(handed, [1, 2, 3, 4]);
    assert_eq!(states, ["running", "done", "done"]);

    // What a run keeps is bounded: the newest 1000 items of a channel.
    let many: Vec<Value> = (1..=1005).map(follow_up).collect();
    scheduler.script(
        "drain-3",
        vec![
            Scripted::Json(json!({"state": "running", "followUps": many})),
            Scripted::Json(json!({"state": "done", "result": {}})),
        ],
    );
    let (status, _) = dispatch(&app, &spec("drain-3")).await;
    assert_eq!(status, 202);
    app.wait_settled("drain-3").await;
    let (_, view) = poll(&app, "drain-3").await;
    let titles: Vec<&str> = view["followUps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles.len(), 1000);
    assert_eq!(titles[0], "follow-up 6");
    assert_eq!(titles[999], "follow-up 1005");
}

// ---------------------------------------------------------------------------------------------
// Item 7: releasing an unknown id answers 404, as the harness does.
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn releasing_an_unknown_job_answers_404_like_the_harness_and_touches_nothing() {
    let app = app_with(|_| {}).await;
    let scheduler = CfScheduler::start(vec![]).await;
    app.register("harness", harness_pool(&scheduler, json!({})), json!({}))
        .await;
    scheduler.script(
        "exec-7-coder",
        vec![
            Scripted::Json(json!({"state": "running"})),
            Scripted::Json(json!({"state": "done", "result": {"summary": "s"}})),
        ],
    );
    let (status, _) = dispatch(&app, &spec("exec-7-coder")).await;
    assert_eq!(status, 202);
    app.wait_settled("exec-7-coder").await;

    // Cat-Factory's run-level reclaim releases the bare execution id when the step's id was
    // cleared (an id that was never dispatched), and ids the scheduler never had.
    for job_id in ["exec-7", "never-dispatched", "not a job id"] {
        let (status, body) = release(&app, job_id).await;
        assert_eq!(
            (status, body),
            (404, json!({"error": "job not found"})),
            "{job_id}"
        );
    }
    // Without a credential the answer is 401 whatever the id: nothing is told about ids.
    let (status, body) = send(app.client.delete(app.url("/jobs/never-dispatched"))).await;
    assert_eq!((status, body), (401, json!({"error": "unauthorized"})));
    // A finished job's release is a no-op that can be repeated.
    for _ in 0..2 {
        let (status, body) = release(&app, "exec-7-coder").await;
        assert_eq!(
            (status, body),
            (200, json!({"jobId": "exec-7-coder", "state": "done"}))
        );
    }
    let run = app.run("exec-7-coder").await;
    assert_eq!(run["state"], "done");
    assert_eq!(run["result"], json!({"summary": "s"}));
}
