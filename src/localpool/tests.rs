//! End-to-end tests of the local pool: the real server on port 0, real processes, real HTTP.

use super::{LocalPool, LocalPoolConfig};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long any wait in these tests may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(15);

struct TestPool {
    pool: LocalPool,
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

async fn spawn_pool(script: &str) -> TestPool {
    spawn_pool_with(LocalPoolConfig {
        command: sh(script),
        ..LocalPoolConfig::default()
    })
    .await
}

async fn spawn_pool_with(config: LocalPoolConfig) -> TestPool {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let token = config.token.clone();
    let pool = LocalPool::start("127.0.0.1:0", config).await.unwrap();
    let base = pool.base_url();
    assert_eq!(base, format!("http://127.0.0.1:{}", pool.addr().port()));
    TestPool {
        pool,
        client: reqwest::Client::builder().build().unwrap(),
        base,
        token,
    }
}

impl TestPool {
    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.json().await.unwrap();
        (status, body)
    }

    async fn post(&self, body: Value) -> (u16, Value) {
        self.send(self.client.post(format!("{}/jobs", self.base)).json(&body))
            .await
    }

    async fn post_job(&self, id: &str, job: Value) -> (u16, Value) {
        self.post(json!({ "jobId": id, "kind": null, "job": job }))
            .await
    }

    async fn get(&self, id: &str) -> (u16, Value) {
        self.send(self.client.get(format!("{}/jobs/{id}", self.base)))
            .await
    }

    async fn delete(&self, id: &str) -> (u16, Value) {
        self.send(self.client.delete(format!("{}/jobs/{id}", self.base)))
            .await
    }

    /// Polls the job until it is no longer running, and returns its view.
    async fn wait_until_finished(&self, id: &str) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (status, view) = self.get(id).await;
            assert_eq!(status, 200, "{view}");
            if view["state"] != "running" {
                return view;
            }
            assert!(Instant::now() < deadline, "job {id} still running: {view}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Polls `condition` until it holds, failing the test after [`DEADLINE`].
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `pid` is a live process. A zombie counts as dead: it has exited and only waits to be
/// reaped, which this sandbox's init may never do for orphans.
fn process_is_alive(pid: u32) -> bool {
    let signalable = std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !signalable {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| matches!(rest.trim_start().chars().next(), Some('Z' | 'X'))),
        Err(_) => false,
    }
}

/// Waits for a job to write its pid into `path`, and returns it.
async fn read_pid(path: &Path) -> u32 {
    let mut pid = None;
    wait_until("the job wrote its pid", || {
        pid = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse().ok());
        pid.is_some()
    })
    .await;
    pid.unwrap()
}

#[tokio::test]
async fn health_answers_ok() {
    let app = spawn_pool("true").await;
    let response = app
        .client
        .get(format!("{}/health", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ok", "capabilities": []})
    );
    app.pool.stop().await;
}

#[tokio::test]
async fn the_declared_capabilities_are_answered_on_health_and_on_every_accepted_job() {
    let app = spawn_pool_with(LocalPoolConfig {
        command: sh("true"),
        capabilities: vec!["skills".into(), "mcpServers".into()],
        ..LocalPoolConfig::default()
    })
    .await;
    let health = app
        .client
        .get(format!("{}/health", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({"status": "ok", "capabilities": ["skills", "mcpServers"]})
    );
    let (status, created) = app.post_job("job-1", json!({})).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["capabilities"], json!(["skills", "mcpServers"]));
    app.pool.stop().await;

    let refused = LocalPool::start(
        "127.0.0.1:0",
        LocalPoolConfig {
            capabilities: vec!["mcp servers".into()],
            ..LocalPoolConfig::default()
        },
    )
    .await
    .unwrap_err();
    assert!(refused.to_string().contains("capabilities"), "{refused}");
}

#[tokio::test]
async fn a_job_that_prints_progress_then_a_result_ends_done_with_both() {
    let app = spawn_pool(
        r#"echo '{"progress":{"completed":1,"inProgress":1,"total":2}}'
           echo 'plain text is ignored'
           echo '{"progress":{"completed":2,"inProgress":0,"total":2}}'
           echo '{"result":{"first":true}}'
           echo '{"result":{"answer":42}}'"#,
    )
    .await;
    let (status, created) = app.post_job("job-1", json!({})).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["id"], "job-1");

    let view = app.wait_until_finished("job-1").await;
    assert_eq!(view["state"], "done", "{view}");
    assert_eq!(view["exitCode"], 0);
    assert_eq!(
        view["progress"],
        json!({"completed": 2, "inProgress": 0, "total": 2})
    );
    assert_eq!(view["result"], json!({"answer": 42}));
    assert_eq!(view["error"], Value::Null);
    assert!(view["finishedAt"].as_i64().unwrap() >= view["startedAt"].as_i64().unwrap());
    app.pool.stop().await;
}

#[tokio::test]
async fn a_non_zero_exit_fails_with_the_stderr_tail_and_the_exit_code() {
    let app = spawn_pool("echo 'step one' >&2; echo '  it broke  ' >&2; exit 3").await;
    app.post_job("job-1", json!({})).await;
    let view = app.wait_until_finished("job-1").await;
    assert_eq!(view["state"], "failed", "{view}");
    assert_eq!(view["exitCode"], 3);
    assert_eq!(view["error"], "step one\n  it broke");
    assert!(view["finishedAt"].is_i64());
    app.pool.stop().await;
}

#[tokio::test]
async fn a_silent_failure_names_its_exit_code() {
    let app = spawn_pool("exit 4").await;
    app.post_job("job-1", json!({})).await;
    let view = app.wait_until_finished("job-1").await;
    assert_eq!(view["state"], "failed");
    assert_eq!(view["exitCode"], 4);
    assert_eq!(view["error"], "exited with code 4");
    app.pool.stop().await;
}

#[tokio::test]
async fn a_program_that_does_not_exist_fails_at_once_with_a_readable_error() {
    let app = spawn_pool_with(LocalPoolConfig {
        command: vec!["/nonexistent/cattery-no-such-program".into()],
        ..LocalPoolConfig::default()
    })
    .await;
    let (status, created) = app.post_job("job-1", json!({})).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["state"], "failed");

    let (_, view) = app.get("job-1").await;
    assert_eq!(view["state"], "failed");
    assert_eq!(view["exitCode"], Value::Null);
    let error = view["error"].as_str().unwrap();
    assert!(
        error.contains("cannot start") && error.contains("cattery-no-such-program"),
        "{error}"
    );
    assert!(error.contains("No such file"), "{error}");
    app.pool.stop().await;
}

#[tokio::test]
async fn the_job_arrives_on_stdin_with_its_id_and_kind_in_the_environment() {
    let app = spawn_pool(
        r#"input=$(cat)
           printf '{"result":{"input":%s,"id":"%s","kind":"%s"}}\n' "$input" "$CATTERY_JOB_ID" "$CATTERY_JOB_KIND""#,
    )
    .await;
    let job = json!({"x": [1, "two"], "nested": {"ok": true}});
    let (status, _) = app
        .post(json!({"jobId": "with-kind", "kind": "build", "job": job}))
        .await;
    assert_eq!(status, 201);
    let (status, _) = app
        .post(json!({"jobId": "no-kind", "kind": "", "job": null}))
        .await;
    assert_eq!(status, 201);

    let view = app.wait_until_finished("with-kind").await;
    assert_eq!(view["state"], "done", "{view}");
    assert_eq!(
        view["result"],
        json!({"input": job, "id": "with-kind", "kind": "build"})
    );
    let view = app.wait_until_finished("no-kind").await;
    assert_eq!(
        view["result"],
        json!({"input": {}, "id": "no-kind", "kind": ""})
    );
    app.pool.stop().await;
}

#[tokio::test]
async fn any_output_bumps_the_heartbeat() {
    let app = spawn_pool("sleep 0.3; echo tick >&2").await;
    app.post_job("job-1", json!({})).await;
    let view = app.wait_until_finished("job-1").await;
    let started = view["startedAt"].as_i64().unwrap();
    let heartbeat = view["heartbeatAt"].as_i64().unwrap();
    assert!(heartbeat >= started + 300, "{view}");
    app.pool.stop().await;
}

#[tokio::test]
async fn posting_a_known_id_again_answers_409_with_its_state() {
    let app = spawn_pool("sleep 30").await;
    assert_eq!(app.post_job("job-1", json!({})).await.0, 201);
    let (status, body) = app.post_job("job-1", json!({})).await;
    assert_eq!(status, 409);
    assert_eq!(
        body,
        json!({"error": "job already exists", "id": "job-1", "state": "running"})
    );
    app.pool.stop().await;
}

#[tokio::test]
async fn deleting_a_running_job_kills_its_whole_process_group_and_forgets_it() {
    let dir = tempfile::tempdir().unwrap();
    let child_pid = dir.path().join("sh.pid");
    let grandchild_pid = dir.path().join("sleep.pid");
    let app = spawn_pool(&format!(
        "echo $$ > {}; sleep 30 & echo $! > {}; wait",
        child_pid.display(),
        grandchild_pid.display()
    ))
    .await;
    assert_eq!(app.post_job("job-1", json!({})).await.0, 201);
    let child = read_pid(&child_pid).await;
    let grandchild = read_pid(&grandchild_pid).await;
    assert!(process_is_alive(child) && process_is_alive(grandchild));

    let (status, body) = app.delete("job-1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"id": "job-1", "state": "cancelled"}));
    wait_until("the job's process is gone", || !process_is_alive(child)).await;
    wait_until("the job's grandchild is gone", || {
        !process_is_alive(grandchild)
    })
    .await;

    assert_eq!(app.get("job-1").await.0, 404);
    // The id is free again.
    assert_eq!(app.post_job("job-1", json!({})).await.0, 201);
    app.pool.stop().await;
}

#[tokio::test]
async fn deleting_a_finished_job_reports_its_state_and_forgets_it() {
    let app = spawn_pool("exit 0").await;
    app.post_job("job-1", json!({})).await;
    app.wait_until_finished("job-1").await;
    let (status, body) = app.delete("job-1").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"id": "job-1", "state": "done"}));
    assert_eq!(app.get("job-1").await.0, 404);
    app.pool.stop().await;
}

#[tokio::test]
async fn processes_left_behind_by_a_finished_job_are_killed() {
    let dir = tempfile::tempdir().unwrap();
    let leftover_pid = dir.path().join("leftover.pid");
    let app = spawn_pool(&format!(
        "sleep 30 & echo $! > {}; echo '{{\"result\":1}}'",
        leftover_pid.display()
    ))
    .await;
    app.post_job("job-1", json!({})).await;
    let view = app.wait_until_finished("job-1").await;
    assert_eq!(view["state"], "done", "{view}");
    assert_eq!(view["result"], 1);
    let leftover = read_pid(&leftover_pid).await;
    wait_until("the leftover process is gone", || {
        !process_is_alive(leftover)
    })
    .await;
    app.pool.stop().await;
}

#[tokio::test]
async fn unknown_ids_answer_404() {
    let app = spawn_pool("true").await;
    assert_eq!(
        app.get("nope").await,
        (404, json!({"error": "job not found"}))
    );
    assert_eq!(
        app.delete("nope").await,
        (404, json!({"error": "job not found"}))
    );
    app.pool.stop().await;
}

#[tokio::test]
async fn malformed_bodies_answer_400_with_the_problem() {
    let app = spawn_pool("true").await;
    for body in [
        json!({"kind": "x"}),
        json!({"jobId": ""}),
        json!({"jobId": "has space"}),
        json!({"jobId": "ok", "job": "not an object"}),
        json!(["not", "an", "object"]),
    ] {
        let (status, answer) = app.post(body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    let (status, answer) = app
        .send(
            app.client
                .post(format!("{}/jobs", app.base))
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
    assert_eq!(status, 400);
    assert!(answer["error"].as_str().unwrap().contains("not valid JSON"));
    app.pool.stop().await;
}

#[tokio::test]
async fn a_configured_token_is_required_everywhere_but_health() {
    let mut app = spawn_pool_with(LocalPoolConfig {
        command: sh("true"),
        token: Some("s3cret".into()),
        ..LocalPoolConfig::default()
    })
    .await;
    assert_eq!(app.get("job-1").await.0, 404, "the right token is let in");
    assert_eq!(app.post_job("job-1", json!({})).await.0, 201);

    app.token = None;
    assert_eq!(
        app.get("job-1").await,
        (401, json!({"error": "unauthorized"}))
    );
    assert_eq!(app.post_job("job-2", json!({})).await.0, 401);
    assert_eq!(app.delete("job-1").await.0, 401);
    app.token = Some("wrong".into());
    assert_eq!(app.get("job-1").await.0, 401);
    let health = app
        .client
        .get(format!("{}/health", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    app.pool.stop().await;
}

#[tokio::test]
async fn a_full_pool_answers_429_with_retry_after() {
    let app = spawn_pool_with(LocalPoolConfig {
        command: sh("sleep 30"),
        max_jobs: 1,
        ..LocalPoolConfig::default()
    })
    .await;
    assert_eq!(app.post_job("job-1", json!({})).await.0, 201);
    let response = app
        .client
        .post(format!("{}/jobs", app.base))
        .json(&json!({"jobId": "job-2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": "local pool is full"})
    );
    // Releasing the running job frees its slot.
    assert_eq!(app.delete("job-1").await.0, 200);
    assert_eq!(app.post_job("job-2", json!({})).await.0, 201);
    app.pool.stop().await;
}

#[tokio::test]
async fn the_oldest_finished_job_is_forgotten_beyond_max_finished() {
    let app = spawn_pool_with(LocalPoolConfig {
        command: sh("true"),
        max_finished: 2,
        ..LocalPoolConfig::default()
    })
    .await;
    for id in ["job-1", "job-2", "job-3"] {
        app.post_job(id, json!({})).await;
        app.wait_until_finished(id).await;
    }
    assert_eq!(app.get("job-1").await.0, 404);
    assert_eq!(app.get("job-2").await.0, 200);
    assert_eq!(app.get("job-3").await.0, 200);
    app.pool.stop().await;
}

#[tokio::test]
async fn stopping_the_pool_kills_running_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let grandchild_pid = dir.path().join("sleep.pid");
    let app = spawn_pool(&format!(
        "sleep 30 & echo $! > {}; wait",
        grandchild_pid.display()
    ))
    .await;
    app.post_job("job-1", json!({})).await;
    let grandchild = read_pid(&grandchild_pid).await;
    app.pool.stop().await;
    wait_until("the job's processes are gone", || {
        !process_is_alive(grandchild)
    })
    .await;
}

#[tokio::test]
async fn an_unusable_configuration_is_refused_at_start() {
    let error = LocalPool::start(
        "127.0.0.1:0",
        LocalPoolConfig {
            command: vec![],
            ..LocalPoolConfig::default()
        },
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("command is empty"), "{error}");
    let error = LocalPool::start("256.0.0.1:0", LocalPoolConfig::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, super::LocalPoolError::Bind { .. }),
        "{error}"
    );
}

#[test]
fn the_shipped_local_manifest_validates() {
    let text = include_str!("../../manifests/local.yaml");
    if let Err(error) =
        crate::manifest::Manifest::parse(text, &crate::manifest::Defaults::default())
    {
        panic!("manifests/local.yaml is invalid: {:#?}", error.problems);
    }
}
