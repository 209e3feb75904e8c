//! The local pool as a running server: binding, serving on the caller's runtime, and stopping
//! with every job's process group killed.

use super::config::LocalPoolConfig;
use super::registry::Registry;
use super::routes::{self, AppState};
use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// HTTP worker threads: the pool answers a handful of small, non-blocking calls per job.
const HTTP_WORKERS: usize = 2;
/// How long a stopping server lets requests in flight finish, in seconds.
const SHUTDOWN_TIMEOUT_SECS: u64 = 5;
/// How long stopping waits, in all, for the killed jobs' processes to be reaped.
const STOP_JOBS_WAIT: Duration = Duration::from_secs(5);

/// Why the local pool could not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalPoolError {
    /// The configuration cannot work; the reason says what to change.
    #[error("invalid local pool configuration: {reason}")]
    Config {
        /// What is wrong and what to do about it.
        reason: String,
    },
    /// The address could not be bound (in use, not local, not resolvable…).
    #[error("cannot bind the local pool to {addr}")]
    Bind {
        /// The address as given.
        addr: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The HTTP server could not be set up on the bound socket.
    #[error("cannot serve the local pool on {addr}")]
    Serve {
        /// The bound address.
        addr: SocketAddr,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// A running local pool: an HTTP server plus the jobs it started.
///
/// Stop it with [`LocalPool::stop`]; dropping it leaves the server and its jobs running until
/// the runtime ends.
#[derive(Debug)]
pub struct LocalPool {
    addr: SocketAddr,
    server: ServerHandle,
    task: JoinHandle<io::Result<()>>,
    registry: Arc<Registry>,
}

impl LocalPool {
    /// Binds `bind` (`host:port`; port 0 picks a free port) and serves the local pool's API on
    /// the current Tokio (or actix) runtime, returning at once. Jobs run on this runtime too.
    ///
    /// # Errors
    /// [`LocalPoolError::Config`] for an unusable configuration, [`LocalPoolError::Bind`] when
    /// the address cannot be bound, [`LocalPoolError::Serve`] when the server cannot use it.
    ///
    /// # Panics
    /// When called outside a Tokio runtime.
    pub async fn start(bind: &str, config: LocalPoolConfig) -> Result<LocalPool, LocalPoolError> {
        if let Some(reason) = config.problems() {
            return Err(LocalPoolError::Config { reason });
        }
        let listener =
            std::net::TcpListener::bind(bind).map_err(|source| LocalPoolError::Bind {
                addr: bind.to_owned(),
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| LocalPoolError::Serve {
                addr: unspecified(),
                source,
            })?;
        let registry = Arc::new(Registry::new(config.max_jobs, config.max_finished));
        let state = web::Data::new(AppState {
            registry: Arc::clone(&registry),
            command: config.command.into(),
            token: config.token,
            capabilities: config.capabilities.into(),
            runtime: Handle::current(),
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .configure(routes::configure)
        })
        .workers(HTTP_WORKERS)
        .disable_signals()
        .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
        .listen(listener)
        .map_err(|source| LocalPoolError::Serve { addr, source })?
        .run();
        let handle = server.handle();
        let task = tokio::spawn(server);
        tracing::info!(local_pool.addr = %addr, "local pool listening on {addr}");
        Ok(LocalPool {
            addr,
            server: handle,
            task,
            registry,
        })
    }

    /// The address the server is bound to (with the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to reach the pool from this machine, such as `http://127.0.0.1:7071`; an
    /// unspecified bind address (`0.0.0.0`, `::`) becomes the loopback address.
    pub fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// Stops the server (requests in flight get a few seconds to finish), then kills every
    /// running job's process group and waits for the processes to be reaped.
    pub async fn stop(self) {
        self.server.stop(true).await;
        cancel_all(&self.registry).await;
        if let Err(error) = self.task.await {
            tracing::warn!(%error, "the local pool's server task ended abnormally");
        }
        tracing::info!(local_pool.addr = %self.addr, "local pool stopped");
    }

    /// Serves until the server stops or the process receives SIGINT or SIGTERM; either way every
    /// running job's process group is killed before it returns. For `cattery local-pool`.
    ///
    /// # Errors
    /// The server's own error, if it stopped because of one.
    pub async fn wait(mut self) -> io::Result<()> {
        tokio::select! {
            ended = &mut self.task => {
                cancel_all(&self.registry).await;
                ended.map_err(io::Error::other)?
            }
            () = shutdown_signal() => {
                tracing::info!("local pool shutting down on signal");
                self.stop().await;
                Ok(())
            }
        }
    }
}

/// Kills every running job and waits, at most [`STOP_JOBS_WAIT`] in all, for them to settle.
async fn cancel_all(registry: &Registry) {
    let jobs = registry.running_jobs();
    for job in &jobs {
        job.request_cancel();
    }
    let deadline = Instant::now() + STOP_JOBS_WAIT;
    for job in &jobs {
        let left = deadline.saturating_duration_since(Instant::now());
        if !job.wait_finished(left).await {
            tracing::warn!(job.id = %job.id, "local job {} did not stop in time", job.id);
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM; never, if neither can be listened for.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = terminate => {}
        () = interrupt => {}
    }
}

fn unspecified() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
}
