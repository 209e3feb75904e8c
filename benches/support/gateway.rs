//! The real gateway as a process: `cattery serve` (or `CATTERY_BIN`) on a loopback port.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The admin token the gateways are started with.
pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";
const MASTER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// A running `cattery serve`; killed (SIGKILL) when dropped.
pub struct Gateway {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// When the process was spawned.
    pub spawned: Instant,
    log: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// Spawns a gateway on `database_url` with `data_dir`; its warnings go to `data_dir/<log>`.
    pub fn spawn(database_url: &str, data_dir: &Path, log: &str) -> Gateway {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = data_dir.join(log);
        // CATTERY_BIN drives another build of the gateway (an earlier one, to compare).
        let bin = std::env::var("CATTERY_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_cattery").to_owned());
        let spawned = Instant::now();
        let child = Command::new(bin)
            .arg("serve")
            .env("CATTERY_DATABASE_URL", database_url)
            .env("CATTERY_BIND", format!("127.0.0.1:{port}"))
            .env("CATTERY__DATADIR", data_dir)
            .env("CATTERY__LOCALPOOL__ENABLED", "false")
            .env("CATTERY__EGRESS__ALLOWHTTP", "true")
            .env("CATTERY__EGRESS__ALLOWHOSTS", "[127.0.0.1]")
            .env("CATTERY__LOGGING__LEVEL", "warn")
            .env("CATTERY_MASTER_KEY", MASTER_KEY)
            .env("CATTERY_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Gateway {
            child,
            base: format!("http://127.0.0.1:{port}"),
            spawned,
            log,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `/readyz` answers 2xx (checked every 5 ms); answers the time since the spawn.
    pub async fn ready(&mut self, client: &reqwest::Client) -> Duration {
        loop {
            if client
                .get(format!("{}/readyz", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return self.spawned.elapsed();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the gateway exited ({status}):\n{}", self.log_tail());
            }
            assert!(
                self.spawned.elapsed() < Duration::from_secs(60),
                "the gateway did not get ready in 60 s:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGKILL, and reap the process: it ends without a chance to finish anything.
    pub fn sigkill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// The last lines of the gateway's log, for a failure message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}
