//! Shared setup: the gateway on port 0 with a fresh database and an egress policy that allows the
//! loopback schedulers, the settings of the real schedulers, the shipped manifests, and polling
//! helpers.

use cattery::config::Settings;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use crate::helpers::{ADMIN_TOKEN, DISPATCHER_TOKEN};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A shipped manifest, parsed.
pub fn shipped_manifest(name: &str) -> Value {
    let path = repo_root().join("manifests").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    yaml_serde::from_str(&text).unwrap()
}

/// The connection settings of one real scheduler, read from the file its start script wrote.
pub struct SchedulerEnv {
    values: HashMap<String, String>,
}

impl SchedulerEnv {
    /// The settings of `name` (`slurm`, `podman`, `kube`), or `None` when that scheduler is not
    /// running here: the caller skips its test, after saying why on stderr. With `CI` set a
    /// missing scheduler fails the test instead.
    pub fn load(name: &str) -> Option<SchedulerEnv> {
        let dir = std::env::var("CATTERY_SCHEDULERS_DIR")
            .unwrap_or_else(|_| "/tmp/cattery-schedulers".to_owned());
        let path = PathBuf::from(dir).join(format!("{name}.env"));
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let values = text
                    .lines()
                    .filter_map(|line| line.split_once('='))
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .collect();
                Some(SchedulerEnv { values })
            }
            Err(err) => {
                let reason = format!(
                    "{name} is not running here ({} unreadable: {err}); start it with \
                     `bash .ci/start-schedulers.sh` (as root)",
                    path.display()
                );
                assert!(std::env::var_os("CI").is_none(), "CI is set and {reason}");
                // Printed on the real stderr, so that a skip is visible even when the test
                // harness captures output.
                let _ = writeln!(std::io::stderr(), "SKIPPED: {reason}");
                None
            }
        }
    }

    pub fn get(&self, key: &str) -> String {
        self.values
            .get(key)
            .unwrap_or_else(|| panic!("the scheduler settings lack {key}"))
            .clone()
    }
}

/// Runs one of the `.ci/schedulers/<name>.sh` scripts (restart, for example) and fails the test
/// when it fails.
pub async fn scheduler_script(name: &str, verb: &str) {
    let script = repo_root()
        .join(".ci/schedulers")
        .join(format!("{name}.sh"));
    // Async, so that the gateway on this runtime keeps working meanwhile.
    let output = tokio::process::Command::new("bash")
        .arg(&script)
        .arg(verb)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{} {verb} failed: {}{}",
        script.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The gateway of [`crate::helpers::TestApp`], with answers that must succeed asserted.
pub struct TestApp(crate::helpers::TestApp);

impl std::ops::Deref for TestApp {
    type Target = crate::helpers::TestApp;

    fn deref(&self) -> &crate::helpers::TestApp {
        &self.0
    }
}

/// Starts the gateway as every test binary does (a fresh database, PostgreSQL when
/// `TEST_DATABASE_URL` is set; the local pool off; plain http to 127.0.0.1 allowed, where every
/// scheduler of these tests listens), with the shipped pool defaults: the real schedulers are
/// driven at the cadence an operator gets.
pub async fn spawn_app() -> TestApp {
    TestApp(
        crate::helpers::spawn_app_with(|settings| {
            settings.defaults = Settings::default().defaults;
        })
        .await,
    )
}

impl TestApp {
    /// Registers a pool and fails the test unless it is created.
    pub async fn register(&self, name: &str, manifest: Value, secrets: Value) {
        let response = self
            .client
            .put(self.url(&format!("/v1/pools/{name}")))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"manifest": manifest, "secrets": secrets}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert_eq!(status, 201, "registering {name}: {body}");
    }

    /// Submits a run and fails the test unless it is accepted.
    pub async fn dispatch(&self, pool: &str, body: Value) {
        let response = self
            .client
            .post(self.url(&format!("/v1/pools/{pool}/runs")))
            .bearer_auth(DISPATCHER_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(status, 202, "dispatching to {pool}: {text}");
    }

    pub async fn cancel(&self, job_id: &str) {
        let response = self
            .client
            .post(self.url(&format!("/v1/runs/{job_id}/cancel")))
            .bearer_auth(DISPATCHER_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 202);
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(self.url(path))
            .bearer_auth(DISPATCHER_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    pub async fn run(&self, job_id: &str) -> Value {
        self.get(&format!("/v1/runs/{job_id}")).await
    }

    pub async fn events(&self, job_id: &str) -> Vec<Value> {
        self.get(&format!("/v1/runs/{job_id}/events")).await["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Polls the run until `done` says so; fails the test after `limit`, showing the run and its
    /// history.
    pub async fn wait_for(
        &self,
        job_id: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let run = self.run(job_id).await;
            if done(&run) {
                return run;
            }
            if start.elapsed() > limit {
                let events = self.events(job_id).await;
                panic!("run {job_id} did not reach the expected state: {run}\nevents: {events:#?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the run is in `state` and its release is confirmed.
    pub async fn wait_released(&self, job_id: &str, state: &str, limit: Duration) -> Value {
        self.wait_for(job_id, limit, |run| {
            run["state"] == state && run["released"] == true
        })
        .await
    }
}

/// Polls `check` until it returns `Some`, failing the test after `limit` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A unique suffix for names, so that runs of the suite never collide on a shared scheduler.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..10])
}

/// Fast polling and retries for a test pool.
pub fn fast(manifest: &mut Value) {
    manifest["polling"] =
        json!({"intervalMs": 200, "maxIntervalMs": 1000, "maxConsecutiveErrors": 8});
    manifest["retry"] = json!({"maxAttempts": 4, "initialBackoffMs": 100, "maxBackoffMs": 1000});
}

/// The event types of a run's history.
pub fn event_types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["type"].as_str().map(str::to_owned))
        .collect()
}

/// Serialises the tests that restart a shared scheduler against the others of that scheduler:
/// the restart test holds the write half, every other test a read half.
pub static SLURM_LOCK: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());
/// See [`SLURM_LOCK`].
pub static PODMAN_LOCK: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());
/// See [`SLURM_LOCK`].
pub static KUBE_LOCK: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A test scheduler's HTTP server on a fixed loopback port that can be stopped and started
/// again while its state lives on, like a scheduler restarting over its persisted state.
pub struct StubServer {
    pub base_url: String,
    port: u16,
    handle: Option<actix_web::dev::ServerHandle>,
    serve: Box<dyn Fn(std::net::TcpListener) -> actix_web::dev::Server>,
}

impl StubServer {
    /// Starts `serve` on a free loopback port.
    pub fn start(
        serve: impl Fn(std::net::TcpListener) -> actix_web::dev::Server + 'static,
    ) -> StubServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = serve(listener);
        let handle = server.handle();
        actix_web::rt::spawn(server);
        StubServer {
            base_url: format!("http://127.0.0.1:{port}"),
            port,
            handle: Some(handle),
            serve: Box::new(serve),
        }
    }

    /// Stops the server (connections are dropped), waits `down`, and starts it again on the
    /// same port.
    pub async fn restart(&mut self, down: Duration) {
        if let Some(handle) = self.handle.take() {
            handle.stop(false).await;
        }
        tokio::time::sleep(down).await;
        let listener = std::net::TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        let server = (self.serve)(listener);
        self.handle = Some(server.handle());
        actix_web::rt::spawn(server);
    }
}

/// A request a test scheduler received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The path, percent-decoded.
    pub path: String,
    pub query: HashMap<String, String>,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn of(req: &actix_web::HttpRequest, body: &[u8]) -> Seen {
        Seen {
            method: req.method().to_string(),
            path: percent_encoding::percent_decode_str(req.path())
                .decode_utf8_lossy()
                .into_owned(),
            query: url::form_urlencoded::parse(req.query_string().as_bytes())
                .into_owned()
                .collect(),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect(),
            body: body.to_vec(),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}
