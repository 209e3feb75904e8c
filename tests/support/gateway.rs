//! The real binary as a process: `cattery serve` on a loopback port of its own, started from
//! its environment the way an operator starts it, waited for until `/readyz` answers, killed
//! with SIGKILL and started again on the same port and database; and `cattery local-pool`, the
//! built-in local scheduler, as a separate process. Every process is killed when dropped.

use super::client::{Api, Tokens};
use super::database::TestDatabase;
use super::wait::{self, CHECK_EVERY};
use super::{ADMIN_TOKEN, MASTER_KEY};
use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a gateway may take to get ready: generous, as one resuming thousands of runs on a
/// busy machine takes long.
const READY_LIMIT: Duration = Duration::from_secs(60);

/// How often `/readyz` is asked while a gateway starts: often, because the benchmark reports
/// the time from the spawn to ready.
const READY_CHECK_EVERY: Duration = Duration::from_millis(5);

/// The path of the real binary built for these tests.
pub fn cattery_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cattery"))
}

/// A free loopback port (bound, then released for a child process to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How a `cattery serve` process is started: on a test database and data dir, on a free
/// loopback port, with the test master key and admin token, egress to plain http on 127.0.0.1
/// allowed (where every scheduler of the tests listens), the local pool off and warnings only
/// logged; each of those can be changed before the start.
#[derive(Clone)]
pub struct Launch {
    bin: PathBuf,
    port: u16,
    /// Applied in order: a value sets a variable, `None` removes it.
    env: Vec<(String, Option<String>)>,
    /// Where the process's stderr goes (appended); nowhere when `None`.
    log: Option<PathBuf>,
}

impl Launch {
    pub fn new(db: &TestDatabase, data_dir: &Path) -> Launch {
        let port = free_port();
        let defaults = [
            ("CATTERY_DATABASE_URL", db.url().to_owned()),
            ("CATTERY_BIND", format!("127.0.0.1:{port}")),
            ("CATTERY__DATADIR", data_dir.display().to_string()),
            ("CATTERY__LOCALPOOL__ENABLED", "false".to_owned()),
            ("CATTERY__EGRESS__ALLOWHTTP", "true".to_owned()),
            ("CATTERY__EGRESS__ALLOWHOSTS", "[127.0.0.1]".to_owned()),
            ("CATTERY__LOGGING__LEVEL", "warn".to_owned()),
            ("CATTERY_MASTER_KEY", MASTER_KEY.to_owned()),
            ("CATTERY_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ];
        Launch {
            bin: cattery_bin(),
            port,
            env: defaults
                .into_iter()
                .map(|(key, value)| (key.to_owned(), Some(value)))
                .collect(),
            log: None,
        }
    }

    /// Sets an environment variable of the process.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Launch {
        self.env.push((key.to_owned(), Some(value.into())));
        self
    }

    /// Starts the process without this variable (one of the defaults, or one this process has).
    pub fn env_remove(mut self, key: &str) -> Launch {
        self.env.push((key.to_owned(), None));
        self
    }

    /// Appends the process's stderr (its log) to `path`, for a failure to show.
    pub fn log_to(mut self, path: PathBuf) -> Launch {
        self.log = Some(path);
        self
    }

    /// Starts another build of the gateway instead of this one's (to compare builds).
    pub fn bin(mut self, bin: PathBuf) -> Launch {
        self.bin = bin;
        self
    }

    /// `cattery serve` with this environment; its output is not yet directed. For a process
    /// the test expects to fail; [`Gateway::spawn`] starts one that serves.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.bin);
        command.arg("serve");
        for (key, value) in &self.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        command
    }

    fn spawn(&self) -> Child {
        let stderr = match &self.log {
            Some(path) => Stdio::from(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap(),
            ),
            None => Stdio::null(),
        };
        self.command()
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap()
    }
}

/// A running `cattery serve` and a client for it (every call of [`Api`] is a call of this
/// process, with the admin token, the only one it has); killed (SIGKILL) when dropped.
pub struct Gateway {
    pub api: Api,
    launch: Launch,
    child: Option<Child>,
    /// When the current process was spawned.
    pub spawned: Instant,
}

impl std::ops::Deref for Gateway {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Gateway {
    /// Spawns the process; it is not ready yet.
    pub fn spawn(launch: Launch) -> Gateway {
        let spawned = Instant::now();
        let child = launch.spawn();
        Gateway {
            api: Api::new(format!("http://127.0.0.1:{}", launch.port), Tokens::ADMIN),
            launch,
            child: Some(child),
            spawned,
        }
    }

    /// Spawns the process and waits until it is ready.
    pub async fn start(launch: Launch) -> Gateway {
        let mut gateway = Gateway::spawn(launch);
        gateway.ready().await;
        gateway
    }

    /// Waits until `/readyz` answers 2xx; answers the time since the spawn. Fails the test at
    /// once when the process exits meanwhile, with the end of its log.
    pub async fn ready(&mut self) -> Duration {
        let url = self.url("/readyz");
        let client = self.api.client.clone();
        wait::until(
            "the gateway to get ready",
            READY_LIMIT,
            READY_CHECK_EVERY,
            async || {
                if client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    return Ok(self.spawned.elapsed());
                }
                if let Some(status) = self.child().try_wait().unwrap() {
                    panic!("the gateway exited ({status}):\n{}", self.log_tail());
                }
                Err(self.log_tail())
            },
        )
        .await
    }

    /// SIGKILL, and reap the process: it ends without a chance to finish anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts the gateway again, as it was started (same port, database and data dir), once
    /// the one before is gone (killed here if it still runs), and waits until it is ready.
    pub async fn restart(&mut self) {
        self.kill9();
        self.spawned = Instant::now();
        self.child = Some(self.launch.spawn());
        self.ready().await;
    }

    /// The running process (to signal it, or to see whether it exited).
    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("the gateway runs")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the gateway runs").id()
    }

    /// The last lines of the gateway's log (when it has one), for a failure message.
    pub fn log_tail(&self) -> String {
        let Some(log) = &self.launch.log else {
            return "(no log kept)".to_owned();
        };
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// `cattery local-pool`, the built-in local scheduler, as a separate process with a token;
/// killed when dropped.
pub struct LocalPool {
    child: Child,
    pub base_url: String,
    token: String,
}

impl Drop for LocalPool {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LocalPool {
    /// Registers it as pool `local` on `api` (its manifest and its token); asserts 201.
    pub async fn register_on(&self, api: &super::client::Api) {
        api.register(
            "local",
            super::manifests::local_manifest(&self.base_url),
            self.secrets(),
        )
        .await;
    }

    /// The secret bundle of its manifest: its token.
    pub fn secrets(&self) -> serde_json::Value {
        serde_json::json!({"LOCAL_POOL_TOKEN": self.token})
    }

    /// Starts it on a free loopback port and waits until `/health` answers.
    pub async fn start(token: &str) -> LocalPool {
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
        let pool = LocalPool {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            token: token.to_owned(),
        };
        let client = cattery::scheduler::http::plain_client().unwrap();
        let health = format!("{}/health", pool.base_url);
        wait::until(
            "the local pool to answer",
            Duration::from_secs(20),
            CHECK_EVERY,
            async || match client.get(&health).send().await {
                Ok(response) if response.status().is_success() => Ok(()),
                Ok(response) => Err(response.status().to_string()),
                Err(err) => Err(err.to_string()),
            },
        )
        .await;
        pool
    }
}
