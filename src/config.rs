//! Settings: `config/default.yaml`, then an optional file, then `CATTERY__SECTION__KEY` variables.
//!
//! The committed `config/default.yaml` is embedded in the binary and is the single source of the
//! defaults; a unit test keeps it equal to [`Settings::default`]. Layers are merged as JSON trees
//! and the result is deserialised strictly (an unknown key is an error that names it).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The committed defaults, embedded so that the binary runs from any directory.
pub const DEFAULT_YAML: &str = include_str!("../config/default.yaml");

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A configuration file could not be read.
    #[error("cannot read the configuration file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A layer is not valid YAML.
    #[error("{origin} is not valid YAML: {message}")]
    Syntax {
        /// Which layer.
        origin: String,
        /// The parser's message.
        message: String,
    },
    /// The merged settings do not fit the schema.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Settings {
    /// The HTTP listener.
    pub server: ServerSettings,
    /// Where cattery keeps its files (database, generated key and token).
    pub data_dir: PathBuf,
    /// The database.
    pub database: DatabaseSettings,
    /// Encryption at rest.
    pub security: SecuritySettings,
    /// API authentication.
    pub api: ApiSettings,
    /// Outbound call policy.
    pub egress: EgressSettings,
    /// Pool defaults for what a manifest leaves out.
    pub defaults: PoolDefaults,
    /// The built-in local pool.
    pub local_pool: LocalPoolSettings,
    /// The runner-protocol facade.
    pub facade: FacadeSettings,
    /// State-change callbacks.
    pub webhooks: WebhookSettings,
    /// Graceful shutdown.
    pub shutdown: ShutdownSettings,
    /// How long finished runs are kept.
    pub retention: RetentionSettings,
    /// Logs.
    pub logging: LoggingSettings,
    /// `GET /metrics`.
    pub metrics: MetricsSettings,
}

/// `server.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerSettings {
    /// Listen address.
    pub bind: String,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
}

/// `database.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://path` (relative to the working directory) or `postgres://…`; empty means
    /// `sqlite://<dataDir>/cattery.db`.
    pub url: String,
    /// Connections in the pool for reads; the store's writer keeps one more of its own.
    pub pool_size: u32,
}

/// `security.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecuritySettings {
    /// A file of base64 master keys, one per line, newest first; empty means
    /// `CATTERY_MASTER_KEYS` / `CATTERY_MASTER_KEY` or `<dataDir>/master.key`.
    pub master_key_file: String,
}

/// `api.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiSettings {
    /// Accepted tokens, by SHA-256 digest.
    pub tokens: Vec<ApiToken>,
}

/// One configured API token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiToken {
    /// A name for logs.
    pub name: String,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    /// `admin`, `dispatcher` or `reader`.
    pub role: String,
}

/// `egress.*`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressSettings {
    /// Allow plain `http` (to any host the rest of the policy allows).
    pub allow_http: bool,
    /// Host names, `.suffix` entries, IP addresses (matched when a URL names them) and CIDRs
    /// (matched against every address connected to) that may be called although the policy
    /// refuses them by default. Cloud metadata and unspecified addresses are never allowed.
    pub allow_hosts: Vec<String>,
    /// A forward proxy for every scheduler call (a manifest may override it): see
    /// [`crate::proxy`]. Off by default.
    pub proxy: Option<ProxySettings>,
    /// Take the proxy from `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` (off by default: a
    /// variable set by accident never redirects scheduler traffic).
    pub use_env_proxy: bool,
}

/// `egress.proxy`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxySettings {
    /// `http://[user:password@]host:port` (or https): the proxy.
    pub url: String,
    /// Targets reached directly, in `NO_PROXY` syntax: host names, `.suffix`, IPs, CIDRs.
    #[serde(default)]
    pub no_proxy: Vec<String>,
}

/// `defaults.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolDefaults {
    /// Default `limits`.
    pub limits: LimitDefaults,
    /// Default `retry`.
    pub retry: RetryDefaults,
    /// Default `polling`.
    pub polling: PollingDefaults,
}

/// `defaults.limits.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitDefaults {
    /// Runs in flight per pool.
    pub max_in_flight: u32,
    /// Runs waiting for a slot per pool.
    pub max_queued: u32,
    /// Timeout of one scheduler call.
    pub timeout_ms: u64,
}

/// `defaults.retry.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryDefaults {
    /// Attempts per call.
    pub max_attempts: u32,
    /// First backoff.
    pub initial_backoff_ms: u64,
    /// Backoff cap.
    pub max_backoff_ms: u64,
}

/// `defaults.polling.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PollingDefaults {
    /// Base poll interval.
    pub interval_ms: u64,
    /// Poll interval cap.
    pub max_interval_ms: u64,
    /// Unreadable polls in a row before a run fails.
    pub max_consecutive_errors: u32,
    /// Deadline of a run whose pool and submission set none (seconds from submission; `None`:
    /// no deadline). A run that passes it fails with cause `deadline`, queued runs included.
    pub deadline_seconds: Option<u64>,
}

/// The longest deadline a pool default may set (a year), as in manifests.
pub const MAX_DEADLINE_SECONDS: u64 = 31_536_000;

impl PollingDefaults {
    /// Checks the values that have bounds.
    ///
    /// # Errors
    /// A message naming the key and its bounds.
    pub fn check(&self) -> Result<(), String> {
        match self.deadline_seconds {
            Some(seconds) if !(1..=MAX_DEADLINE_SECONDS).contains(&seconds) => Err(format!(
                "defaults.polling.deadlineSeconds is {seconds}; it must lie in 1..={MAX_DEADLINE_SECONDS} \
                 (or be null for no deadline)"
            )),
            _ => Ok(()),
        }
    }
}

/// `localPool.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalPoolSettings {
    /// Start the local pool inside `serve` and register it as pool `local`.
    pub enabled: bool,
    /// Where it listens (port 0: any free port).
    pub bind: String,
    /// The program run for each job, argv form; empty means the built-in sample job.
    pub command: Vec<String>,
    /// The optional job-spec fields that program parses (`mcpServers`, `skills`,
    /// `designImages`, `generateImages`): the local pool declares them like an executor harness
    /// does (CATFACTORY.md §6.5). Empty: none (the built-in sample job parses none).
    pub capabilities: Vec<String>,
}

/// `facade.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FacadeSettings {
    /// Serve the runner-protocol facade (`/health`, `/jobs`).
    pub enabled: bool,
    /// The pool jobs go to when no route matches.
    pub default_pool: String,
    /// Routing rules, matched in order; the first whose conditions all hold picks the pool.
    pub routes: Vec<FacadeRoute>,
    /// When set, a request carrying `x-harness-secret: <this value>` is let in, as well as a
    /// bearer token with the dispatcher role. Empty: only bearer tokens.
    pub harness_secret: String,
    /// The capabilities (optional job-spec fields the runner parses, CATFACTORY.md §6.5)
    /// declared for jobs of the default pool and on `GET /health`. `None`: the built-in local
    /// pool's `localPool.capabilities` when the default pool is that pool, else none.
    pub capabilities: Option<Vec<String>>,
    /// The largest job spec `POST /jobs` accepts, in bytes of JSON.
    pub max_job_bytes: usize,
}

/// One facade routing rule: every condition given must equal the job spec's top-level field
/// of that name; a rule without conditions matches every job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FacadeRoute {
    /// The job's `kind` (`agent`, `deploy`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The job's `mode` (`explore`, `coding`, `preview`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The job's `instanceType`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// The job's `cloudProvider`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_provider: Option<String>,
    /// The job's `image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The pool the matching jobs go to.
    pub pool: String,
    /// The capabilities declared for the matching jobs; `None`: those of `facade.capabilities`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
}

/// `webhooks.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookSettings {
    /// HMAC key for callback signatures.
    pub secret: String,
}

/// `shutdown.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShutdownSettings {
    /// How long calls in flight may take to finish after SIGTERM.
    pub grace_seconds: u64,
}

/// `retention.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetentionSettings {
    /// Days a finished run (with its events and job body) is kept after it finished; 0 keeps
    /// every run for good.
    pub finished_runs_days: u32,
    /// Seconds between two sweeps for finished runs past their retention (the first sweep
    /// comes at most 30 s after start).
    pub sweep_interval_seconds: u64,
}

/// `logging.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoggingSettings {
    /// `pretty` or `json`.
    pub format: String,
    /// An `EnvFilter` directive such as `info` or `cattery=debug`.
    pub level: String,
}

/// `metrics.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsSettings {
    /// Serve `GET /metrics` without a token (for a scraper on a trusted network); by default it
    /// needs a token with at least the reader role, like every other read.
    pub public: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            server: ServerSettings {
                bind: "127.0.0.1:8080".to_owned(),
                max_body_bytes: 2 * 1024 * 1024,
            },
            data_dir: PathBuf::from("./data"),
            database: DatabaseSettings {
                url: String::new(),
                pool_size: 8,
            },
            security: SecuritySettings {
                master_key_file: String::new(),
            },
            api: ApiSettings { tokens: Vec::new() },
            egress: EgressSettings {
                allow_http: false,
                allow_hosts: Vec::new(),
                proxy: None,
                use_env_proxy: false,
            },
            defaults: PoolDefaults {
                limits: LimitDefaults {
                    max_in_flight: 100,
                    max_queued: 10_000,
                    timeout_ms: 10_000,
                },
                retry: RetryDefaults {
                    max_attempts: 5,
                    initial_backoff_ms: 250,
                    max_backoff_ms: 30_000,
                },
                polling: PollingDefaults {
                    interval_ms: 5_000,
                    max_interval_ms: 30_000,
                    max_consecutive_errors: 8,
                    deadline_seconds: Some(86_400),
                },
            },
            local_pool: LocalPoolSettings {
                enabled: true,
                bind: "127.0.0.1:0".to_owned(),
                command: Vec::new(),
                capabilities: Vec::new(),
            },
            facade: FacadeSettings {
                enabled: true,
                default_pool: "local".to_owned(),
                routes: Vec::new(),
                harness_secret: String::new(),
                capabilities: None,
                max_job_bytes: 16 * 1024 * 1024,
            },
            webhooks: WebhookSettings {
                secret: String::new(),
            },
            shutdown: ShutdownSettings { grace_seconds: 10 },
            retention: RetentionSettings {
                finished_runs_days: 30,
                sweep_interval_seconds: 3600,
            },
            logging: LoggingSettings {
                format: "pretty".to_owned(),
                level: "info".to_owned(),
            },
            metrics: MetricsSettings { public: false },
        }
    }
}

impl Settings {
    /// Loads the defaults, then `file` if given, then the environment (`vars`).
    ///
    /// # Errors
    /// When a file cannot be read, a layer is not YAML, or the result does not fit the schema.
    pub fn load(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut tree = parse_yaml(DEFAULT_YAML, "config/default.yaml")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let layer = parse_yaml(&text, &path.display().to_string())?;
            merge(&mut tree, layer);
        }
        for (name, value) in vars {
            apply_env(&mut tree, &name, &value)?;
        }
        serde_json::from_value(tree).map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// The database URL, with the default SQLite file under the data dir when none is set.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("cattery.db").display())
        } else {
            self.database.url.clone()
        }
    }
}

fn parse_yaml(text: &str, origin: &str) -> Result<Value, ConfigError> {
    let value: Value = yaml_serde::from_str(text).map_err(|e| ConfigError::Syntax {
        origin: origin.to_owned(),
        message: e.to_string(),
    })?;
    Ok(if value.is_null() {
        Value::Object(serde_json::Map::new())
    } else {
        value
    })
}

/// Deep-merges `layer` into `base`: objects merge key by key, anything else replaces.
fn merge(base: &mut Value, layer: Value) {
    match (base, layer) {
        (Value::Object(base), Value::Object(layer)) => {
            for (key, value) in layer {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, layer) => *base = layer,
    }
}

/// Applies one environment variable: the short forms, then `CATTERY__SECTION__KEY`.
fn apply_env(tree: &mut Value, name: &str, value: &str) -> Result<(), ConfigError> {
    let path: Vec<String> = match name {
        "CATTERY_DATABASE_URL" => vec!["database".into(), "url".into()],
        "CATTERY_BIND" => vec!["server".into(), "bind".into()],
        _ => match name.strip_prefix("CATTERY__") {
            Some(rest) => rest.split("__").map(str::to_owned).collect(),
            None => return Ok(()),
        },
    };
    let parsed = parse_yaml(value, name).unwrap_or_else(|_| Value::String(value.to_owned()));
    // Strings stay strings where the default is a string (a bind address is not a YAML map).
    set_path(tree, &path, parsed, value, name)
}

fn set_path(
    tree: &mut Value,
    path: &[String],
    parsed: Value,
    raw: &str,
    name: &str,
) -> Result<(), ConfigError> {
    let Some((first, rest)) = path.split_first() else {
        return Ok(());
    };
    let Value::Object(map) = tree else {
        return Err(ConfigError::Invalid(format!(
            "{name} does not name a setting"
        )));
    };
    // Keys are matched case-insensitively so that CATTERY__LOCALPOOL__ENABLED finds localPool.
    let key = map
        .keys()
        .find(|k| k.eq_ignore_ascii_case(first))
        .cloned()
        .ok_or_else(|| ConfigError::Invalid(format!("{name}: unknown setting {first:?}")))?;
    let Some(slot) = map.get_mut(&key) else {
        return Ok(());
    };
    if rest.is_empty() {
        *slot = if slot.is_string() {
            Value::String(raw.to_owned())
        } else {
            parsed
        };
        Ok(())
    } else {
        set_path(slot, rest, parsed, raw, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_default_yaml_equals_the_code_defaults() {
        let loaded = Settings::load(None, Vec::new()).unwrap();
        assert_eq!(loaded, Settings::default());
    }

    #[test]
    fn environment_variables_override_nested_keys_case_insensitively() {
        let vars = [
            ("CATTERY__LOCALPOOL__ENABLED".to_owned(), "false".to_owned()),
            ("CATTERY__SHUTDOWN__GRACESECONDS".to_owned(), "3".to_owned()),
            ("CATTERY_BIND".to_owned(), "127.0.0.1:9999".to_owned()),
            (
                "CATTERY_DATABASE_URL".to_owned(),
                "postgres://x@127.0.0.1/db".to_owned(),
            ),
            ("UNRELATED".to_owned(), "1".to_owned()),
        ];
        let settings = Settings::load(None, vars).unwrap();
        assert!(!settings.local_pool.enabled);
        assert_eq!(settings.shutdown.grace_seconds, 3);
        assert_eq!(settings.server.bind, "127.0.0.1:9999");
        assert_eq!(settings.database_url(), "postgres://x@127.0.0.1/db");
    }

    #[test]
    fn metrics_are_gated_by_default_and_can_be_made_public() {
        assert!(!Settings::default().metrics.public);
        assert!(!Settings::load(None, Vec::new()).unwrap().metrics.public);
        let vars = [("CATTERY__METRICS__PUBLIC".to_owned(), "true".to_owned())];
        assert!(Settings::load(None, vars).unwrap().metrics.public);
    }

    #[test]
    fn an_unknown_environment_setting_is_an_error_naming_it() {
        let vars = [("CATTERY__SERVER__PORTT".to_owned(), "1".to_owned())];
        let err = Settings::load(None, vars).unwrap_err().to_string();
        assert!(err.contains("PORTT"), "{err}");
    }

    #[test]
    fn a_file_layer_merges_over_the_defaults_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.yaml");
        std::fs::write(
            &good,
            "server:\n  bind: 127.0.0.1:7000\nlogging: { level: debug }\n",
        )
        .unwrap();
        let settings = Settings::load(Some(&good), Vec::new()).unwrap();
        assert_eq!(settings.server.bind, "127.0.0.1:7000");
        assert_eq!(
            settings.server.max_body_bytes,
            Settings::default().server.max_body_bytes
        );
        assert_eq!(settings.logging.level, "debug");
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "server:\n  bindd: x\n").unwrap();
        let err = Settings::load(Some(&bad), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("bindd"), "{err}");
    }

    #[test]
    fn the_default_database_is_a_sqlite_file_in_the_data_dir() {
        assert_eq!(
            Settings::default().database_url(),
            "sqlite://./data/cattery.db"
        );
    }
}
