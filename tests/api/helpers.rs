//! Shared test setup: the application on port 0 with a fresh database (a temporary SQLite file,
//! or a throw-away PostgreSQL database when `TEST_DATABASE_URL` is set), an HTTP client with an
//! admin token, the local pool as a separate `cattery local-pool` process, and polling helpers.

use cattery::app::{Application, Secrets};
use cattery::config::Settings;
use serde_json::{Value, json};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const READER_TOKEN: &str = "test-reader-token-0123456789";
pub const DISPATCHER_TOKEN: &str = "test-dispatcher-token-0123456789";
/// A fixed test master key (base64 of 32 bytes).
pub const MASTER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// The path of the real binary built for these tests.
pub fn cattery_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cattery"))
}

/// A throw-away database: a temporary SQLite file, or a PostgreSQL database dropped on drop
/// (when `TEST_DATABASE_URL` is set).
pub struct TestDatabase {
    inner: cattery::store::testing::TestDatabase,
}

impl TestDatabase {
    pub async fn create() -> TestDatabase {
        let backend = cattery::store::testing::TestBackend::from_env();
        TestDatabase {
            inner: cattery::store::testing::TestDatabase::create(backend)
                .await
                .expect("a test database"),
        }
    }

    pub fn url(&self) -> &str {
        self.inner.url()
    }

    pub fn is_postgres(&self) -> bool {
        self.url().starts_with("postgres")
    }

    /// The SQLite file, when the database is SQLite.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self.url().strip_prefix("sqlite://").map(PathBuf::from)
    }

    /// Runs one SQL statement straight on the database (behind the gateway's back), returning
    /// the number of rows it changed.
    pub fn execute_sql(&self, sql: &str) -> usize {
        use diesel::RunQueryDsl as _;
        if self.is_postgres() {
            diesel::sql_query(sql).execute(&mut self.pg()).unwrap()
        } else {
            diesel::sql_query(sql).execute(&mut self.sqlite()).unwrap()
        }
    }

    /// A PostgreSQL connection of its own to the test database.
    pub fn pg(&self) -> diesel::PgConnection {
        use diesel::Connection as _;
        diesel::PgConnection::establish(self.url()).unwrap()
    }

    /// An SQLite connection of its own to the test database, which waits up to 10 s for the
    /// gateway's write lock (or a store closing its connections) instead of failing at once.
    pub fn sqlite(&self) -> diesel::SqliteConnection {
        use diesel::{Connection as _, RunQueryDsl as _};
        let path = self.sqlite_path().unwrap();
        let mut conn = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        diesel::sql_query("PRAGMA busy_timeout = 10000")
            .execute(&mut conn)
            .unwrap();
        conn
    }
}

/// Test settings: port 0, a data dir, the database, fast defaults, the local pool off unless asked.
pub fn test_settings(db: &TestDatabase, data_dir: &std::path::Path) -> Settings {
    let mut settings = Settings::default();
    settings.server.bind = "127.0.0.1:0".to_owned();
    settings.data_dir = data_dir.to_owned();
    settings.database.url = db.url().to_owned();
    settings.database.pool_size = 4;
    settings.local_pool.enabled = false;
    // The schedulers of these tests listen on plain http on loopback, which the default egress
    // policy refuses: allow exactly that.
    settings.egress.allow_http = true;
    settings.egress.allow_hosts = vec!["127.0.0.1".to_owned()];
    settings.local_pool.command =
        vec![cattery_bin().display().to_string(), "sample-job".to_owned()];
    settings.logging.level = "warn".to_owned();
    settings.defaults.polling.interval_ms = 50;
    settings.defaults.polling.max_interval_ms = 200;
    settings.defaults.retry.initial_backoff_ms = 20;
    settings.defaults.retry.max_backoff_ms = 200;
    settings.api.tokens = vec![
        token_entry("reader", READER_TOKEN, "reader"),
        token_entry("dispatcher", DISPATCHER_TOKEN, "dispatcher"),
    ];
    settings
}

fn token_entry(name: &str, token: &str, role: &str) -> cattery::config::ApiToken {
    cattery::config::ApiToken {
        name: name.to_owned(),
        sha256: cattery::crypto::sha256_hex(token.as_bytes()),
        role: role.to_owned(),
    }
}

/// A running application and a client for it.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub db: TestDatabase,
    /// The data dir, which lives as long as the app.
    pub data_dir: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_prepared(adjust, |_| {}).await
}

/// The one way every test binary starts the application in process: [`test_settings`] on a
/// fresh database and data dir, adjusted by `adjust`, then `prepare` with the built application
/// in hand (to pin a name in its egress policy, for instance), then served on loopback.
pub async fn spawn_app_prepared(
    adjust: impl FnOnce(&mut Settings),
    prepare: impl FnOnce(&Application),
) -> TestApp {
    if std::env::var("TEST_LOG").is_ok() {
        cattery::telemetry::init(&cattery::config::LoggingSettings {
            format: "pretty".into(),
            level: "debug".into(),
        });
    }
    let db = TestDatabase::create().await;
    let data_dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(&db, data_dir.path());
    adjust(&mut settings);
    let secrets = Secrets {
        master_key: Some(MASTER_KEY.to_owned()),
        admin_token: Some(ADMIN_TOKEN.to_owned()),
    };
    let app = Application::build(settings, secrets)
        .await
        .expect("the application starts");
    prepare(&app);
    let address = format!("http://127.0.0.1:{}", app.port());
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        address,
        client: cattery::scheduler::http::plain_client().unwrap(),
        db,
        data_dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn put_pool(&self, name: &str, manifest: Value, secrets: Value) -> reqwest::Response {
        self.client
            .put(self.url(&format!("/v1/pools/{name}")))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"manifest": manifest, "secrets": secrets}))
            .send()
            .await
            .unwrap()
    }

    pub async fn dispatch(&self, pool: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/pools/{pool}/runs")))
            .bearer_auth(DISPATCHER_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(self.url(path))
            .bearer_auth(READER_TOKEN)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn run(&self, job_id: &str) -> Value {
        let (status, body) = self.get_json(&format!("/v1/runs/{job_id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn cancel(&self, job_id: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/runs/{job_id}/cancel")))
            .bearer_auth(DISPATCHER_TOKEN)
            .send()
            .await
            .unwrap()
    }

    pub async fn events(&self, job_id: &str) -> Vec<Value> {
        let (status, body) = self.get_json(&format!("/v1/runs/{job_id}/events")).await;
        assert_eq!(status, 200, "{body}");
        body["events"].as_array().cloned().unwrap_or_default()
    }

    /// Polls the run until `done` says so, failing the test after `limit`.
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
            assert!(
                start.elapsed() < limit,
                "run {job_id} did not reach the expected state: {run}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the run is final and its release question is settled.
    pub async fn wait_settled(&self, job_id: &str) -> Value {
        self.wait_for(job_id, Duration::from_secs(20), |run| {
            matches!(run["state"].as_str(), Some("done" | "failed" | "cancelled"))
        })
        .await
    }
}

/// A free loopback port (bound, then released for a child process to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed on drop.
pub struct ChildProcess {
    pub child: Child,
    pub base_url: String,
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `cattery serve` (the real binary) on `db`, listening on `port`, with the test master key and
/// admin token, egress to loopback allowed and the local pool off; its output is not yet
/// directed.
pub fn serve_command(db: &TestDatabase, data_dir: &std::path::Path, port: u16) -> Command {
    let mut command = Command::new(cattery_bin());
    command
        .arg("serve")
        .env("CATTERY_DATABASE_URL", db.url())
        .env("CATTERY_BIND", format!("127.0.0.1:{port}"))
        .env("CATTERY__DATADIR", data_dir)
        .env("CATTERY__LOCALPOOL__ENABLED", "false")
        .env("CATTERY__EGRESS__ALLOWHTTP", "true")
        .env("CATTERY__EGRESS__ALLOWHOSTS", "[127.0.0.1]")
        .env("CATTERY__LOGGING__LEVEL", "warn")
        .env("CATTERY_MASTER_KEY", MASTER_KEY)
        .env("CATTERY_ADMIN_TOKEN", ADMIN_TOKEN);
    command
}

/// Starts `command` (a [`serve_command`]) as a gateway process killed on drop, output silenced.
pub fn spawn_gateway(mut command: Command, port: u16) -> ChildProcess {
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ChildProcess {
        child,
        base_url: format!("http://127.0.0.1:{port}"),
    }
}

/// Waits until `url` answers 200.
pub async fn wait_healthy(url: &str) {
    let client = cattery::scheduler::http::plain_client().unwrap();
    let start = Instant::now();
    loop {
        if let Ok(response) = client.get(url).send().await
            && response.status().is_success()
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{url} did not become healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts `cattery local-pool` as a separate process with a token.
pub async fn start_local_pool(token: &str) -> ChildProcess {
    let port = free_port();
    let child = Command::new(cattery_bin())
        .args([
            "local-pool",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--token",
            token,
        ])
        .env("CATTERY__LOGGING__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base_url = format!("http://127.0.0.1:{port}");
    wait_healthy(&format!("{base_url}/health")).await;
    ChildProcess { child, base_url }
}

/// The shipped local manifest pointed at `base_url`, with fast polling.
pub fn local_manifest(base_url: &str) -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/local.yaml"))
            .unwrap();
    let mut manifest: Value = yaml_serde::from_str(&text).unwrap();
    manifest["baseUrl"] = json!(base_url);
    manifest["polling"] =
        json!({"intervalMs": 50, "maxIntervalMs": 200, "maxConsecutiveErrors": 8});
    manifest
}

/// A manifest for the scripted test scheduler: bearer auth, a body tree, a capture used by
/// poll, a status map, release by DELETE.
pub fn scheduler_manifest(base_url: &str) -> Value {
    json!({
        "apiVersion": "cattery/v1",
        "description": "the scripted test scheduler",
        "baseUrl": base_url,
        "auth": {"type": "bearer", "secretRef": {"key": "SCHED_TOKEN"}},
        "polling": {"intervalMs": 30, "maxIntervalMs": 100, "maxConsecutiveErrors": 3},
        "retry": {"maxAttempts": 3, "initialBackoffMs": 10, "maxBackoffMs": 50},
        "dispatch": {
            "request": {
                "method": "POST",
                "path": "/jobs",
                "headers": {"X-Job-Kind": "{{input.kind}}"},
                "body": {"name": "{{run.dispatchId}}", "spec": "{{input.job}}", "attempt": "{{run.attempt}}", "note": "id={{input.jobId}}"}
            },
            "expect": [201],
            "alreadyExists": [409],
            "capture": {"uid": "metadata.uid"}
        },
        "poll": {
            "request": {"method": "GET", "path": "/jobs/{{run.dispatchId}}", "query": {"uid": "{{capture.uid}}"}},
            "notFound": "lost",
            "map": {
                "state": "status",
                "statusMap": {"Complete": "done", "Failed": "failed", "Queued": "pending"},
                "error": "message",
                "result": "output",
                "progress": {"completed": "done", "total": "total"}
            }
        },
        "release": {
            "request": {"method": "DELETE", "path": "/jobs/{{run.dispatchId}}"},
            "expect": [200]
        }
    })
}

/// The secret bundle of [`scheduler_manifest`].
pub const SCHED_TOKEN: &str = "sched-secret-token-value-42";
