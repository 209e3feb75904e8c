//! What the scheduler tests set up beyond the shared support: the gateway at the cadence an
//! operator gets, the connection settings and scripts of the real schedulers on this machine,
//! unique names on a shared scheduler, fast polling for a test pool, and the locks that keep a
//! scheduler's restart away from its other tests.

use crate::support::app::{TestApp, spawn_app_with};
use crate::support::manifests::repo_root;
use cattery::config::Settings;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

/// Starts the gateway as every test binary does (a fresh database, PostgreSQL when
/// `TEST_DATABASE_URL` is set; the local pool off; plain http to 127.0.0.1 allowed, where every
/// scheduler of these tests listens), with the shipped pool defaults: the real schedulers are
/// driven at the cadence an operator gets.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|settings| {
        settings.defaults = Settings::default().defaults;
    })
    .await
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

/// Serialises the tests that restart a shared scheduler against the others of that scheduler:
/// the restart test holds the write half, every other test a read half.
pub static SLURM_LOCK: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());
/// See [`SLURM_LOCK`].
pub static PODMAN_LOCK: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());
/// See [`SLURM_LOCK`].
pub static KUBE_LOCK: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());
