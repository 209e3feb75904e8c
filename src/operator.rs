//! Commands for the operator of an installation: `cattery config check` (the effective
//! configuration with its secrets masked, and every problem `serve` would stop at or silently
//! work around) and `cattery backup FILE` (a consistent copy of the SQLite database while the
//! gateway runs).

use crate::app::Secrets;
use crate::config::Settings;
use crate::routes::auth::Role;
use crate::routes::facade::{Facade, FacadeConfigError};
use crate::store::backup::{self, BackupError, BackupReport};
use std::path::Path;

/// What masked values are shown as.
pub const MASK: &str = "***";

/// One configuration problem: the key it is about and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The setting (`server.bind`, `api.tokens.0.sha256`, `CATTERY_MASTER_KEY`, …).
    pub key: String,
    /// What is wrong and what to write instead.
    pub message: String,
}

fn problem(key: impl Into<String>, message: impl Into<String>) -> ConfigProblem {
    ConfigProblem {
        key: key.into(),
        message: message.into(),
    }
}

/// The settings with every secret masked: the database URL's password, the proxy's password,
/// the API token digests, the facade's harness secret, the webhook secret. (The master keys and the admin token come
/// from the environment or files, never from the settings.)
pub fn masked(settings: &Settings) -> Settings {
    let mut masked = settings.clone();
    masked.database.url = mask_url(&settings.database.url);
    if let Some(proxy) = &mut masked.egress.proxy {
        proxy.url = mask_url(&proxy.url);
    }
    for token in &mut masked.api.tokens {
        token.sha256 = MASK.to_owned();
    }
    for secret in [
        &mut masked.facade.harness_secret,
        &mut masked.webhooks.secret,
    ] {
        if !secret.is_empty() {
            *secret = MASK.to_owned();
        }
    }
    masked
}

/// A database URL with its password (in the authority or as a `password` parameter) masked.
pub fn mask_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return raw.to_owned();
    };
    if !url.has_host() {
        return raw.to_owned();
    }
    if url.password().is_some() {
        let _ = url.set_password(Some(MASK));
    }
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if pairs
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("password"))
    {
        let mut query = url.query_pairs_mut();
        query.clear();
        for (key, value) in &pairs {
            if key.eq_ignore_ascii_case("password") {
                query.append_pair(key, MASK);
            } else {
                query.append_pair(key, value);
            }
        }
    }
    url.to_string()
}

/// Whether `value` looks like `HOST:PORT`.
fn check_bind(key: &str, value: &str, problems: &mut Vec<ConfigProblem>) {
    let port = value
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty())
        .and_then(|(_, port)| port.parse::<u16>().ok());
    if port.is_none() {
        problems.push(problem(
            key,
            format!("{value:?} is not HOST:PORT (for example 127.0.0.1:8080)"),
        ));
    }
}

/// Every problem of the settings and the secrets from the environment: what `serve` refuses
/// at start, and values it would quietly read otherwise (a logging format that is neither
/// `pretty` nor `json`). Reads files (the master key file) but creates and changes nothing.
pub fn problems(settings: &Settings, secrets: &Secrets) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    check_bind("server.bind", &settings.server.bind, &mut problems);
    if settings.server.max_body_bytes == 0 {
        problems.push(problem("server.maxBodyBytes", "must be more than 0"));
    }
    if settings.data_dir.exists() && !settings.data_dir.is_dir() {
        problems.push(problem(
            "dataDir",
            format!(
                "{} exists and is not a directory",
                settings.data_dir.display()
            ),
        ));
    }
    if let Err(e) = backup::backend_of(&settings.database_url()) {
        problems.push(problem("database.url", e.to_string()));
    }
    if settings.database.pool_size == 0 {
        problems.push(problem("database.poolSize", "must be at least 1"));
    }
    check_master_keys(settings, secrets, &mut problems);
    for (i, token) in settings.api.tokens.iter().enumerate() {
        if Role::parse(&token.role).is_none() {
            problems.push(problem(
                format!("api.tokens.{i}.role"),
                format!(
                    "{:?} is not a role; use admin, dispatcher or reader",
                    token.role
                ),
            ));
        }
        if !(token.sha256.len() == 64 && token.sha256.chars().all(|c| c.is_ascii_hexdigit())) {
            problems.push(problem(
                format!("api.tokens.{i}.sha256"),
                "must be the 64-character hex SHA-256 digest of the token (sha256sum)",
            ));
        }
    }
    if let Err(bad) = crate::egress::EgressPolicy::from_settings(&settings.egress) {
        problems.push(problem(
            "egress.allowHosts",
            format!("{:?}: {}", bad.entry, bad.reason),
        ));
    }
    if let Err(e) = crate::proxy::from_settings(&settings.egress, |name| std::env::var(name).ok()) {
        let key = match &e {
            crate::proxy::ProxyError::Both => "egress.proxy".to_owned(),
            crate::proxy::ProxyError::BadUrl { key, .. } => key.clone(),
        };
        let message = match e {
            crate::proxy::ProxyError::BadUrl { problem, .. } => problem,
            both => both.to_string(),
        };
        problems.push(problem(&key, message));
    }
    if let Err(message) = settings.defaults.polling.check() {
        problems.push(problem("defaults.polling.deadlineSeconds", message));
    }
    let local = settings
        .local_pool
        .enabled
        .then(|| crate::domain::ids::PoolName::parse(crate::app::LOCAL_POOL).ok())
        .flatten()
        .map(|name| (name, settings.local_pool.capabilities.as_slice()));
    if let Err(e) = Facade::from_settings(&settings.facade, local) {
        let (key, message) = match &e {
            FacadeConfigError::PoolName { field, source } => {
                (format!("facade.{field}"), source.to_string())
            }
            FacadeConfigError::Capability { field, .. } => (field.clone(), e.to_string()),
            FacadeConfigError::MaxJobBytes { .. } => {
                ("facade.maxJobBytes".to_owned(), e.to_string())
            }
        };
        problems.push(problem(key, message));
    }
    if settings.local_pool.enabled {
        check_bind("localPool.bind", &settings.local_pool.bind, &mut problems);
    }
    if !matches!(settings.logging.format.as_str(), "pretty" | "json") {
        problems.push(problem(
            "logging.format",
            format!(
                "{:?} is neither pretty nor json (serve would log pretty)",
                settings.logging.format
            ),
        ));
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&settings.logging.level) {
        problems.push(problem(
            "logging.level",
            format!(
                "{:?} is not a filter directive ({e}); use info, debug, cattery=debug, …",
                settings.logging.level
            ),
        ));
    }
    problems
}

/// The master keys load (from the environment, the key file, or an existing
/// `<dataDir>/master.key`); a missing data-dir key is not a problem: `serve` creates it.
fn check_master_keys(settings: &Settings, secrets: &Secrets, problems: &mut Vec<ConfigProblem>) {
    let key_file = (!settings.security.master_key_file.is_empty())
        .then(|| Path::new(&settings.security.master_key_file).to_owned());
    let data_dir_key = settings.data_dir.join(crate::crypto::MASTER_KEY_FILE);
    let key = if secrets.master_key.is_some() {
        "CATTERY_MASTER_KEY"
    } else if key_file.is_some() {
        "security.masterKeyFile"
    } else if data_dir_key.exists() {
        "dataDir"
    } else {
        return;
    };
    // With a key from the environment or a key file given, nothing is created.
    if let Err(e) = crate::crypto::Sealer::load_or_create(
        &settings.data_dir,
        secrets.master_key.as_deref(),
        key_file.as_deref(),
    ) {
        problems.push(problem(key, e.to_string()));
    }
}

/// The lines `config check` prints before the YAML: where the secrets that are not in the
/// settings come from, masked.
pub fn environment_notes(settings: &Settings, secrets: &Secrets) -> Vec<String> {
    let mut notes = Vec::new();
    notes.push(if secrets.master_key.is_some() {
        format!("# master keys: from CATTERY_MASTER_KEYS / CATTERY_MASTER_KEY ({MASK})")
    } else if !settings.security.master_key_file.is_empty() {
        format!(
            "# master keys: from the file {}",
            settings.security.master_key_file
        )
    } else {
        format!(
            "# master keys: from {} (created on first start when missing)",
            settings
                .data_dir
                .join(crate::crypto::MASTER_KEY_FILE)
                .display()
        )
    });
    if secrets.admin_token.is_some() {
        notes.push(format!("# admin token: from CATTERY_ADMIN_TOKEN ({MASK})"));
    } else if settings.api.tokens.is_empty() {
        notes.push(format!(
            "# admin token: none configured; serve creates {}",
            settings.data_dir.join("admin.token").display()
        ));
    }
    notes
}

/// Takes a backup of the configured database (see [`crate::store::backup`]).
///
/// # Errors
/// [`BackupError`].
pub async fn backup(
    settings: &Settings,
    target: &Path,
    force: bool,
) -> Result<BackupReport, BackupError> {
    backup::backup(&settings.database_url(), target, force).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_database_urls_are_masked() {
        assert_eq!(
            mask_url("postgres://cattery:hunter2@db.internal:5432/cattery?sslmode=require"),
            "postgres://cattery:***@db.internal:5432/cattery?sslmode=require"
        );
        let masked = mask_url("postgres://db.internal/cattery?user=c&password=hunter2");
        assert!(!masked.contains("hunter2"), "{masked}");
        assert!(masked.contains("password=***") || masked.contains("password=%2A%2A%2A"));
        assert_eq!(
            mask_url("sqlite://data/cattery.db"),
            "sqlite://data/cattery.db"
        );
        assert_eq!(mask_url(""), "");
    }

    #[test]
    fn the_default_settings_have_no_problem() {
        let settings = Settings {
            data_dir: std::env::temp_dir().join(format!("cattery-check-{}", uuid::Uuid::new_v4())),
            ..Settings::default()
        };
        assert_eq!(problems(&settings, &Secrets::default()), Vec::new());
    }

    #[test]
    fn each_problem_names_its_key() {
        let mut settings = Settings::default();
        settings.server.bind = "8080".into();
        settings.logging.format = "jsno".into();
        settings.api.tokens.push(crate::config::ApiToken {
            name: "ci".into(),
            sha256: "abc".into(),
            role: "root".into(),
        });
        settings.egress.allow_hosts.push("https://x".into());
        settings.defaults.polling.deadline_seconds = Some(0);
        settings.facade.max_job_bytes = 1;
        settings.database.url = "mysql://x".into();
        let secrets = Secrets {
            master_key: Some("not-base64!".into()),
            admin_token: None,
        };
        let keys: Vec<String> = problems(&settings, &secrets)
            .into_iter()
            .map(|p| p.key)
            .collect();
        for key in [
            "server.bind",
            "logging.format",
            "api.tokens.0.role",
            "api.tokens.0.sha256",
            "egress.allowHosts",
            "defaults.polling.deadlineSeconds",
            "facade.maxJobBytes",
            "database.url",
            "CATTERY_MASTER_KEY",
        ] {
            assert!(
                keys.contains(&key.to_owned()),
                "{key} missing from {keys:?}"
            );
        }
    }

    #[test]
    fn secrets_are_masked_in_the_printed_tree() {
        let mut settings = Settings::default();
        settings.database.url = "postgres://u:hunter2@h/db".into();
        settings.egress.proxy = Some(crate::config::ProxySettings {
            url: "http://ops:proxy-pass@proxy.corp:3128".into(),
            no_proxy: Vec::new(),
        });
        settings.webhooks.secret = "whsec-value".into();
        settings.facade.harness_secret = "harness-value".into();
        settings.api.tokens.push(crate::config::ApiToken {
            name: "ci".into(),
            sha256: "a".repeat(64),
            role: "reader".into(),
        });
        let text = serde_json::to_string(&masked(&settings)).unwrap();
        assert!(text.contains("proxy.corp:3128"), "{text}");
        for secret in [
            "hunter2",
            "proxy-pass",
            "whsec-value",
            "harness-value",
            &"a".repeat(64),
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
}
