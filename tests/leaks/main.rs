//! Nothing leaks: a full lifecycle with failures against a hostile scheduler that echoes every
//! credential it receives, with every log line of the process captured at trace level; then the
//! logs, every API answer and the raw database (the SQLite file with its WAL, or every row of
//! every PostgreSQL table) are searched for the pool secrets, the OAuth2 tokens, the job's live
//! tokens and the keys.
//!
//! A test binary of its own, because it installs the process-wide log subscriber.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test on any setup error"
)]

#[expect(dead_code, reason = "the shared test support; this binary uses a part")]
#[path = "../support/mod.rs"]
mod support;

use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use support::app::{TestApp, spawn_app};
use support::client::Reply;
use support::manifests::simple_manifest;
use support::stub::{Recorder, Seen, answer};
use support::wait::{self, CHECK_EVERY, RUN_LIMIT};
use support::{ADMIN_TOKEN, DISPATCHER_TOKEN, MASTER_KEY, READER_TOKEN};

const SCHED_TOKEN: &str = "leak-sched-token-7Hq2";
const API_KEY: &str = "leak-api-key-9Zx";
const CLIENT_ID: &str = "leak-client-id-3Kd";
const CLIENT_SECRET: &str = "leak-client-secret-5Vb";
/// The shape of the OAuth2 tokens the scheduler issues (`leak-access-token-<n>-Qw8`).
const ACCESS_TOKEN_MARK: &str = "leak-access-token-";
const JOB_TOKEN: &str = "ghs_LeakJobToken0123456789abcdef";
/// A job credential with no recognisable shape.
const JOB_CREDENTIAL: &str = "plain-job-credential-4Rt";

/// Everything that must never be found.
fn needles() -> Vec<String> {
    let mut all: Vec<String> = [
        SCHED_TOKEN,
        API_KEY,
        CLIENT_ID,
        CLIENT_SECRET,
        ACCESS_TOKEN_MARK,
        JOB_TOKEN,
        JOB_CREDENTIAL,
        MASTER_KEY,
        ADMIN_TOKEN,
        DISPATCHER_TOKEN,
        READER_TOKEN,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    // As they would look in a bytea column rendered as text.
    let hex: Vec<String> = all
        .iter()
        .map(|s| s.bytes().map(|b| format!("{b:02x}")).collect())
        .collect();
    all.extend(hex);
    all
}

fn assert_clean(what: &str, haystack: &[u8]) {
    // Needles are ASCII: a lossy conversion keeps every ASCII run intact.
    let text = String::from_utf8_lossy(haystack).to_ascii_lowercase();
    for needle in needles() {
        assert!(
            !text.contains(&needle.to_ascii_lowercase()),
            "{what} contains {needle:?}"
        );
    }
}

/// The process-wide log capture.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = CaptureWriter;

    fn make_writer(&'a self) -> Self::Writer {
        CaptureWriter(self.0.clone())
    }
}

/// Per job name: dispatch, poll and release attempts, and the body it was dispatched with.
#[derive(Default)]
struct JobLog {
    dispatches: usize,
    polls: usize,
    releases: usize,
    body: String,
}

/// A scheduler that fails in every way once, echoing whatever it was sent.
fn hostile(
    state: &Mutex<(usize, usize, HashMap<String, JobLog>)>,
    seen: &Seen,
) -> actix_web::HttpResponse {
    let mut guard = state.lock().unwrap();
    let (token_calls, tokens_issued, jobs) = &mut *guard;
    let echo = json!({
        "headers": seen.headers,
        "body": String::from_utf8_lossy(&seen.body),
    });
    let auth = seen.header("authorization").unwrap_or_default().to_owned();
    match (seen.method.as_str(), seen.path.as_str()) {
        ("POST", "/oauth/token") => {
            *token_calls += 1;
            if *token_calls == 1 {
                return answer(503, json!({"error": "try later", "echo": echo}));
            }
            *tokens_issued += 1;
            answer(
                200,
                json!({"access_token": format!("{ACCESS_TOKEN_MARK}{tokens_issued}-Qw8"), "expires_in": 3600}),
            )
        }
        ("POST", "/jobs") => {
            let body: Value = serde_json::from_slice(&seen.body).unwrap_or_default();
            let name = body["name"].as_str().unwrap_or_default().to_owned();
            let job = jobs.entry(name.clone()).or_default();
            job.dispatches += 1;
            if name.starts_with("reject") {
                return answer(400, json!({"message": "refused", "echo": echo}));
            }
            if job.dispatches == 1 {
                return answer(500, json!({"message": "internal error", "echo": echo}));
            }
            job.body = String::from_utf8_lossy(&seen.body).into_owned();
            answer(201, json!({"metadata": {"uid": format!("u-{name}")}}))
        }
        ("GET", path) => {
            let name = path.trim_start_matches("/jobs/").to_owned();
            if auth == format!("Bearer {ACCESS_TOKEN_MARK}1-Qw8") {
                return answer(401, json!({"error": "invalid_token", "seen": auth}));
            }
            let job = jobs.entry(name.clone()).or_default();
            if job.body.is_empty() {
                // Never created (its only dispatch was answered 500): unknown, as a real API says.
                return answer(404, json!({"message": "no such job"}));
            }
            job.polls += 1;
            if job.polls == 1 {
                return actix_web::HttpResponse::BadGateway().body(format!(
                    "upstream failed; request had Authorization: {auth}; X-Api-Key: {}",
                    seen.header("x-api-key").unwrap_or_default()
                ));
            }
            if job.polls == 2 || name.starts_with("slow") {
                return answer(200, json!({"status": "Running"}));
            }
            if name.starts_with("fail") {
                let token =
                    serde_json::from_str::<Value>(&job.body).unwrap_or_default()["spec"]["ghToken"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                return answer(
                    200,
                    json!({"status": "Failed", "message": format!("job died; env GH_TOKEN={token}")}),
                );
            }
            answer(200, json!({"status": "Complete"}))
        }
        ("DELETE", path) => {
            let job = jobs
                .entry(path.trim_start_matches("/jobs/").to_owned())
                .or_default();
            job.releases += 1;
            if job.releases == 1 {
                return answer(500, json!({"message": "cannot delete", "echo": echo}));
            }
            answer(200, json!({}))
        }
        _ => answer(404, json!({})),
    }
}

fn job(n: usize) -> Value {
    json!({"ghToken": JOB_TOKEN, "note": JOB_CREDENTIAL, "n": n})
}

async fn api_answers(app: &TestApp, job_ids: &[&str]) -> Vec<u8> {
    let mut all = Vec::new();
    let mut paths = vec![
        "/v1/pools".to_owned(),
        "/v1/pools/bearer".to_owned(),
        "/v1/pools/oauth".to_owned(),
        "/v1/runs".to_owned(),
    ];
    for id in job_ids {
        paths.push(format!("/v1/runs/{id}"));
        paths.push(format!("/v1/runs/{id}/events"));
    }
    for path in paths {
        let Reply { status, body, .. } = app.get(&path).await;
        assert_eq!(status, 200, "{path}");
        all.extend(body.to_string().into_bytes());
    }
    let metrics = app.scrape(None).await;
    assert_eq!(metrics.status, 200, "/metrics");
    all.extend(metrics.text.into_bytes());
    all
}

#[actix_web::test]
async fn no_secret_and_no_job_token_reaches_logs_api_answers_or_the_database() {
    let capture = Capture::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(capture.clone())
        .try_init()
        .expect("the capture is the only subscriber of this binary");

    let state = Arc::new(Mutex::new((0, 0, HashMap::new())));
    let shared = state.clone();
    let scheduler = Recorder::start(move |seen| hostile(&shared, seen)).await;
    let app = spawn_app().await;

    let mut bearer = simple_manifest(&scheduler.base_url);
    bearer["retry"] = json!({"maxAttempts": 5, "initialBackoffMs": 10, "maxBackoffMs": 50});
    bearer["polling"]["maxConsecutiveErrors"] = json!(5);
    for op in ["dispatch", "poll", "release"] {
        bearer[op]["request"]["headers"] = json!({"X-Api-Key": "{{secret \"API_KEY\"}}"});
    }
    let Reply { status, body, .. } = app
        .put_pool(
            "bearer",
            bearer.clone(),
            json!({"SCHED_TOKEN": SCHED_TOKEN, "API_KEY": API_KEY}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let mut oauth = bearer;
    oauth["auth"] = json!({
        "type": "oauth2_client_credentials",
        "tokenUrl": format!("{}/oauth/token", scheduler.base_url),
        "clientIdSecretRef": {"key": "CLIENT_ID"},
        "clientSecretSecretRef": {"key": "CLIENT_SECRET"}
    });
    let Reply { status, body, .. } = app
        .put_pool(
            "oauth",
            oauth,
            json!({"CLIENT_ID": CLIENT_ID, "CLIENT_SECRET": CLIENT_SECRET, "API_KEY": API_KEY}),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let runs = [
        ("bearer", "ok-1"),
        ("bearer", "fail-1"),
        ("bearer", "reject-1"),
        ("bearer", "slow-1"),
        ("oauth", "oauth-ok-1"),
    ];
    for (n, (pool, id)) in runs.iter().enumerate() {
        let Reply { status, body, .. } = app
            .dispatch(pool, json!({"jobId": id, "job": job(n)}))
            .await;
        assert_eq!(status, 202, "{body}");
    }
    let expected = [
        ("ok-1", "done"),
        ("fail-1", "failed"),
        ("reject-1", "failed"),
        ("oauth-ok-1", "done"),
    ];
    for (id, state) in expected {
        let run = app.wait_settled(id).await;
        assert_eq!(run["state"], state, "{run}");
    }
    app.wait_for("slow-1", RUN_LIMIT, |run| run["state"] == "running")
        .await;

    // While slow-1 runs its job body is stored (sealed): the raw database holds no secret.
    let (_, jobs) = app.db.sealed_rows();
    assert!(
        jobs.iter().any(|(id, _)| id == "slow-1"),
        "a job body is stored"
    );
    assert_clean(
        "the database while a run is in flight",
        &app.db.raw_contents(),
    );

    assert_eq!(app.cancel("slow-1").await.status, 202);
    for id in ["ok-1", "fail-1", "slow-1", "oauth-ok-1"] {
        let run = app
            .wait_for(id, RUN_LIMIT, |run| run["released"] == true)
            .await;
        assert!(run["state"] != "running", "{run}");
    }

    // The hostile echoes did happen, and were redacted.
    let failed = app.wait_settled("fail-1").await;
    assert!(
        failed["error"].as_str().unwrap().contains("[redacted]"),
        "{failed}"
    );
    let ok_events = app.get("/v1/runs/ok-1/events").await.body.to_string();
    assert!(ok_events.contains("[redacted]"), "{ok_events}");
    let tokens_issued = state.lock().unwrap().1;
    assert_eq!(tokens_issued, 2, "the 401 brought a second token");

    // Job bodies are dropped once their runs are finished and released.
    wait::until(
        "the job bodies to be dropped",
        std::time::Duration::from_secs(10),
        CHECK_EVERY,
        async || {
            let (_, jobs) = app.db.sealed_rows();
            let stored: Vec<&String> = jobs.iter().map(|(id, _)| id).collect();
            if stored.is_empty() {
                Ok(())
            } else {
                Err(format!("job bodies still stored: {stored:?}"))
            }
        },
    )
    .await;
    assert_clean("the database at the end", &app.db.raw_contents());
    let ids: Vec<&str> = runs.iter().map(|(_, id)| *id).collect();
    assert_clean("the API answers", &api_answers(&app, &ids).await);

    // Every line logged so far, at every level, by every thread of the process.
    let logs = capture.0.lock().unwrap().clone();
    let text = String::from_utf8_lossy(&logs);
    assert!(
        text.contains("TRACE") && text.contains("pool registered"),
        "the capture works"
    );
    assert!(text.lines().count() > 100, "a full lifecycle was logged");
    assert_clean("the logs", &logs);
}
