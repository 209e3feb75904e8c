//! Application wiring: store, keys, tokens, actors, the local pool and the HTTP server.
//!
//! [`Application::build`] does everything `serve` needs and returns the port it really bound,
//! so tests start it on port 0. It must run inside an actix system (`#[actix_web::main]` or
//! `#[actix_web::test]`), which hosts the actors.

use crate::actors::Deps;
use crate::actors::supervisor::Supervisor;
use crate::bus::EventBus;
use crate::config::Settings;
use crate::crypto::{KeySource, Sealer, sha256_hex};
use crate::domain::ids::PoolName;
use crate::egress::{Egress, EgressPolicy};
use crate::error::ApiError;
use crate::localpool::{LocalPool, LocalPoolConfig};
use crate::manifest::{Defaults, Limits, Polling, RetryPolicy};
use crate::routes::auth::{ApiAuth, Role, TokenEntry};
use crate::routes::{self, BodyLimit};
use crate::scheduler::Adapter;
use crate::service::Gateway;
use crate::service::pools::ManifestInput;
use crate::store::Store;
use actix::Actor;
use actix_web::dev::{Server, ServerHandle};
use actix_web::http::StatusCode;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// The shipped manifest of the built-in local pool.
pub const LOCAL_MANIFEST: &str = include_str!("../manifests/local.yaml");
/// The name the built-in local pool is registered under.
pub const LOCAL_POOL: &str = "local";

/// Secrets handed to the application from the environment (never from config files).
#[derive(Clone, Default)]
pub struct Secrets {
    /// `CATTERY_MASTER_KEYS` then `CATTERY_MASTER_KEY`: base64 32-byte keys, comma-separated;
    /// the first seals, all open.
    pub master_key: Option<String>,
    /// `CATTERY_ADMIN_TOKEN`: one admin token.
    pub admin_token: Option<String>,
}

impl Secrets {
    /// Reads `CATTERY_MASTER_KEYS`, `CATTERY_MASTER_KEY` and `CATTERY_ADMIN_TOKEN`.
    pub fn from_env() -> Self {
        let read = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Self {
            master_key: master_keys(read("CATTERY_MASTER_KEYS"), read("CATTERY_MASTER_KEY")),
            admin_token: read("CATTERY_ADMIN_TOKEN"),
        }
    }
}

/// The key list from `CATTERY_MASTER_KEYS` (newest first) and `CATTERY_MASTER_KEY`: the keys of
/// the first, then those of the second that it does not list. The first key seals.
pub fn master_keys(keys: Option<String>, key: Option<String>) -> Option<String> {
    let mut list: Vec<String> = Vec::new();
    for value in [keys, key].into_iter().flatten() {
        for part in value.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            if !list.iter().any(|k| k == part) {
                list.push(part.to_owned());
            }
        }
    }
    (!list.is_empty()).then(|| list.join(","))
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("master_key", &self.master_key.as_ref().map(|_| "***"))
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A built, listening application.
pub struct Application {
    port: u16,
    server: Server,
    gateway: web::Data<Gateway>,
    local_pool: Option<LocalPool>,
    admin_token_file: Option<PathBuf>,
    recovery_ms: u128,
    grace: std::time::Duration,
}

impl Application {
    /// Builds everything and binds the listener; the server runs once awaited.
    ///
    /// # Errors
    /// When the database, the keys, the local pool or the listener cannot be set up.
    pub async fn build(settings: Settings, secrets: Secrets) -> anyhow::Result<Application> {
        let started = Instant::now();
        crate::scheduler::http::install_crypto_provider();
        settings
            .defaults
            .polling
            .check()
            .map_err(|message| anyhow::anyhow!(message))?;
        std::fs::create_dir_all(&settings.data_dir).with_context(|| {
            format!("cannot create the data dir {}", settings.data_dir.display())
        })?;
        // Exclusive: a second gateway on this database refuses to start (see `store::lock`).
        let store = Store::connect_exclusive(&settings.database_url(), settings.database.pool_size)
            .await
            .context("cannot open the database")?;
        let metrics = Arc::new(crate::metrics::Metrics::new());
        store.observe_with(metrics.clone());
        let dropped = store
            .clear_finished_job_bodies()
            .await
            .context("cannot drop the job bodies of finished runs")?;
        if dropped > 0 {
            tracing::info!(
                runs = dropped,
                "dropped the job bodies that {dropped} finished runs still held"
            );
        }
        actix_web::rt::spawn(crate::retention::sweep_forever(
            store.clone(),
            settings.retention.clone(),
        ));
        let key_file = (!settings.security.master_key_file.is_empty())
            .then(|| PathBuf::from(&settings.security.master_key_file));
        let (sealer, source) = Sealer::load_or_create(
            &settings.data_dir,
            secrets.master_key.as_deref(),
            key_file.as_deref(),
        )
        .context("cannot load the master key")?;
        match &source {
            KeySource::Created(path) => {
                tracing::warn!(path = %path.display(), "created a new master key; back it up: without it stored secrets cannot be read");
            }
            other => tracing::info!(source = ?other, "master key loaded"),
        }
        let (auth, admin_token_file) = api_tokens(&settings, &secrets)?;
        let deps = Deps {
            store,
            sealer: Arc::new(sealer),
            adapter: Arc::new(
                Adapter::with_egress(Egress::with_proxy(
                    EgressPolicy::from_settings(&settings.egress)?,
                    crate::proxy::from_settings(&settings.egress, |name| std::env::var(name).ok())?,
                ))
                .with_metrics(metrics.clone()),
            ),
            bus: EventBus::new(),
            activity: Arc::new(crate::actors::Activity::default()),
            owners: crate::actors::Owners::default(),
            arbiters: crate::actors::RunArbiters::per_core(),
        };
        let supervisor = Supervisor::new(deps.clone()).start();
        let gateway = web::Data::new(Gateway::new(deps, supervisor, defaults_of(&settings)));
        let pools = gateway.load_pools().await?;
        let local_pool = if settings.local_pool.enabled {
            Some(start_local_pool(&settings, &gateway).await?)
        } else {
            None
        };
        let (resumed, orphaned) = gateway.resume_runs().await?;
        let recovery_ms = started.elapsed().as_millis();
        gateway.set_recovery_ms(u64::try_from(recovery_ms).unwrap_or(u64::MAX));
        metrics.set_recovery(started.elapsed());
        tracing::info!(pools, resumed, orphaned, recovery_ms, "recovered state");

        let listener = TcpListener::bind(&settings.server.bind)
            .with_context(|| format!("cannot listen on {}", settings.server.bind))?;
        let port = listener.local_addr()?.port();
        let limit = BodyLimit(settings.server.max_body_bytes);
        let server_gateway = gateway.clone();
        let auth = web::Data::new(auth);
        let metrics = web::Data::new(crate::routes::metrics::MetricsEndpoint {
            metrics,
            public: settings.metrics.public,
        });
        let facade = web::Data::new(
            crate::routes::facade::Facade::from_settings(
                &settings.facade,
                settings
                    .local_pool
                    .enabled
                    .then(|| {
                        PoolName::parse(LOCAL_POOL)
                            .map(|name| (name, settings.local_pool.capabilities.as_slice()))
                    })
                    .transpose()
                    .map_err(|e| anyhow::anyhow!(e))?,
            )
            .context("invalid facade settings")?,
        );
        let server = HttpServer::new(move || {
            App::new()
                .app_data(server_gateway.clone())
                .app_data(auth.clone())
                .app_data(facade.clone())
                .app_data(metrics.clone())
                .app_data(web::Data::new(limit))
                .app_data(web::QueryConfig::default().error_handler(|e, _| {
                    ApiError::validation(vec![crate::manifest::Problem {
                        path: "query".into(),
                        message: e.to_string(),
                    }])
                    .into()
                }))
                .app_data(web::PathConfig::default().error_handler(|e, _| {
                    ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()).into()
                }))
                .configure(routes::configure)
        })
        .workers(2)
        // Signals are handled by `run_until_stopped`, which drains the actors first (within
        // `shutdown.graceSeconds`); API requests still in flight then get one more second.
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)?
        .run();
        tracing::info!(address = %format!("http://{}", settings.server.bind), port, "cattery is listening");
        Ok(Application {
            port,
            server,
            gateway,
            local_pool,
            admin_token_file,
            recovery_ms,
            grace: std::time::Duration::from_secs(settings.shutdown.grace_seconds),
        })
    }

    /// The port really bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The generated admin token file, when one is used.
    pub fn admin_token_file(&self) -> Option<&Path> {
        self.admin_token_file.as_deref()
    }

    /// How long loading pools and resuming runs took at start.
    pub fn recovery_ms(&self) -> u128 {
        self.recovery_ms
    }

    /// The gateway, for in-process callers.
    pub fn gateway(&self) -> web::Data<Gateway> {
        self.gateway.clone()
    }

    /// A handle that stops the server.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until the server stops (SIGTERM / SIGINT, or a handle), then stops the local pool.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let server = self.server;
        tokio::pin!(server);
        let result = tokio::select! {
            result = &mut server => result,
            signal = shutdown_signal() => {
                tracing::info!(signal, grace_seconds = self.grace.as_secs(), "shutting down: no new runs; letting calls in flight finish");
                self.gateway.begin_shutdown();
                let activity = &self.gateway.deps.activity;
                activity.drain();
                if activity.wait_idle(self.grace).await {
                    tracing::info!("every call in flight finished and is committed");
                } else {
                    tracing::warn!(busy = activity.busy(), "the grace period ended with calls in flight; they resume on the next start");
                }
                // The server future processes the stop command, so it must be polled meanwhile.
                let (_, result) = tokio::join!(handle.stop(true), &mut server);
                result
            }
        };
        self.gateway.begin_shutdown();
        self.gateway.deps.arbiters.stop();
        if let Some(local_pool) = self.local_pool {
            local_pool.stop().await;
        }
        result.context("the HTTP server failed")
    }
}

/// Waits for SIGTERM or SIGINT and names it.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

/// Manifest defaults from the `defaults` settings.
pub fn defaults_of(settings: &Settings) -> Defaults {
    let d = &settings.defaults;
    let base = Defaults::default();
    Defaults {
        limits: Limits {
            max_in_flight: d.limits.max_in_flight,
            max_queued: d.limits.max_queued,
            timeout_ms: d.limits.timeout_ms,
            ..base.limits
        },
        retry: RetryPolicy {
            max_attempts: d.retry.max_attempts,
            initial_backoff_ms: d.retry.initial_backoff_ms,
            max_backoff_ms: d.retry.max_backoff_ms,
        },
        polling: Polling {
            interval_ms: d.polling.interval_ms,
            max_interval_ms: d.polling.max_interval_ms,
            max_consecutive_errors: d.polling.max_consecutive_errors,
            deadline_seconds: d.polling.deadline_seconds,
        },
    }
}

/// The accepted API tokens: configured digests, the admin token from the environment, and
/// else a generated `<dataDir>/admin.token`.
fn api_tokens(
    settings: &Settings,
    secrets: &Secrets,
) -> anyhow::Result<(ApiAuth, Option<PathBuf>)> {
    let mut entries = Vec::new();
    for token in &settings.api.tokens {
        let role = Role::parse(&token.role).with_context(|| {
            format!(
                "api.tokens {:?}: role must be admin, dispatcher or reader",
                token.name
            )
        })?;
        anyhow::ensure!(
            token.sha256.len() == 64 && token.sha256.chars().all(|c| c.is_ascii_hexdigit()),
            "api.tokens {:?}: sha256 must be the 64-character hex digest of the token",
            token.name
        );
        entries.push(TokenEntry {
            name: token.name.clone(),
            sha256: token.sha256.to_ascii_lowercase(),
            role,
        });
    }
    if let Some(admin) = &secrets.admin_token {
        entries.push(TokenEntry {
            name: "CATTERY_ADMIN_TOKEN".to_owned(),
            sha256: sha256_hex(admin.as_bytes()),
            role: Role::Admin,
        });
    }
    let mut generated = None;
    if entries.is_empty() {
        let path = settings.data_dir.join("admin.token");
        let token = read_or_create_token(&path)?;
        tracing::info!(path = %path.display(), "no API token configured; the admin token is in this file");
        entries.push(TokenEntry {
            name: "admin.token".to_owned(),
            sha256: sha256_hex(token.as_bytes()),
            role: Role::Admin,
        });
        generated = Some(path);
    }
    Ok((ApiAuth::new(entries), generated))
}

fn read_or_create_token(path: &Path) -> anyhow::Result<String> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        let token = existing.trim().to_owned();
        anyhow::ensure!(!token.is_empty(), "{} is empty", path.display());
        return Ok(token);
    }
    let token = random_token();
    write_private(path, &token)?;
    Ok(token)
}

/// A random URL-safe token of 256 bits.
pub fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(content.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// Starts the in-process local pool and registers it as pool `local`.
async fn start_local_pool(settings: &Settings, gateway: &Gateway) -> anyhow::Result<LocalPool> {
    let token = random_token();
    let mut config = LocalPoolConfig {
        token: Some(token.clone()),
        ..LocalPoolConfig::default()
    };
    if !settings.local_pool.command.is_empty() {
        config.command = settings.local_pool.command.clone();
    }
    config.capabilities = settings.local_pool.capabilities.clone();
    let pool = LocalPool::start(&settings.local_pool.bind, config)
        .await
        .context("cannot start the local pool")?;
    let mut document: serde_json::Value =
        yaml_serde::from_str(LOCAL_MANIFEST).context("manifests/local.yaml is not YAML")?;
    if let Some(object) = document.as_object_mut() {
        object.insert(
            "baseUrl".to_owned(),
            serde_json::Value::String(pool.base_url()),
        );
    }
    let name = PoolName::parse(LOCAL_POOL).map_err(|e| anyhow::anyhow!(e))?;
    // The local pool's address is cattery's own listener: exempt from the egress policy.
    let origin = url::Url::parse(&pool.base_url())
        .context("the local pool's address is not a URL")?
        .origin();
    gateway.deps.adapter.egress().exempt(LOCAL_POOL, origin);
    let secrets = BTreeMap::from([("LOCAL_POOL_TOKEN".to_owned(), token)]);
    gateway
        .register_pool(name, ManifestInput::Document(document), Some(secrets))
        .await
        .map_err(|e| anyhow::anyhow!("cannot register the local pool: {e:?}"))?;
    tracing::info!(address = %pool.base_url(), "local pool started");
    Ok(pool)
}
