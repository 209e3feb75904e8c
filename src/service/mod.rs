//! The gateway's use cases (register pools, submit and cancel runs, read views), independent of HTTP.
//!
//! Routes and the CLI call [`Gateway`]; it validates input, seals what must be sealed, commits
//! through the store and then tells the actors. Every failure is a [`ServiceError`], which the
//! HTTP edge maps once onto a problem+json answer.

pub mod pools;
pub mod probe;
pub mod runs;

use crate::actors::Deps;
use crate::actors::supervisor::Supervisor;
use crate::manifest::{Defaults, Problem};
use actix::Addr;
use std::sync::atomic::{AtomicBool, Ordering};

/// Everything a use case can fail with. Messages are safe to show to API callers.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The input is invalid; every problem is listed.
    #[error("the request is invalid")]
    Validation(Vec<Problem>),
    /// The pool's manifest references secrets that were not given.
    #[error("secrets are missing: {}", .0.join(", "))]
    MissingSecrets(Vec<String>),
    /// No such pool.
    #[error("pool {0:?} does not exist")]
    PoolNotFound(String),
    /// No such run.
    #[error("run {0:?} does not exist")]
    RunNotFound(String),
    /// The job id is taken by a different submission.
    #[error("jobId {0:?} is already used by a different submission (another pool or another body)")]
    JobIdConflict(String),
    /// The pool still has unfinished runs.
    #[error("pool {0:?} has unfinished runs; cancel them first or delete with ?force=true")]
    PoolBusy(String),
    /// The run is finished already.
    #[error("run {0:?} is already finished")]
    RunFinished(String),
    /// The pool's queue is full.
    #[error("pool {pool:?} has {queued} runs waiting, its maxQueued")]
    Saturated {
        /// The pool.
        pool: String,
        /// Runs waiting.
        queued: usize,
    },
    /// The gateway is shutting down.
    #[error("cattery is shutting down and takes no new runs")]
    ShuttingDown,
    /// The actor system is not answering.
    #[error("the supervisor is not running")]
    Unavailable,
    /// Storage or encryption failed; the cause is logged, not shown.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<crate::store::StoreError> for ServiceError {
    fn from(error: crate::store::StoreError) -> Self {
        ServiceError::Internal(error.into())
    }
}

impl From<crate::crypto::CryptoError> for ServiceError {
    fn from(error: crate::crypto::CryptoError) -> Self {
        ServiceError::Internal(error.into())
    }
}

/// One validation problem.
pub fn problem(path: &str, message: impl Into<String>) -> Problem {
    Problem {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// The gateway: dependencies of the use cases.
pub struct Gateway {
    /// Store, sealer, adapter, bus.
    pub deps: Deps,
    /// The supervisor actor.
    pub supervisor: Addr<Supervisor>,
    /// Manifest defaults from the configuration.
    pub defaults: Defaults,
    shutting_down: AtomicBool,
    recovery_ms: std::sync::atomic::AtomicU64,
    /// The idempotency digest key, loaded (or created) on the first submission.
    pub(crate) digest_key: tokio::sync::OnceCell<crate::crypto::DigestKey>,
}

impl Gateway {
    /// A gateway over running actors.
    pub fn new(deps: Deps, supervisor: Addr<Supervisor>, defaults: Defaults) -> Self {
        Self {
            deps,
            supervisor,
            defaults,
            shutting_down: AtomicBool::new(false),
            recovery_ms: std::sync::atomic::AtomicU64::new(0),
            digest_key: tokio::sync::OnceCell::new(),
        }
    }

    /// Records how long loading pools and resuming runs took at start.
    pub fn set_recovery_ms(&self, millis: u64) {
        self.recovery_ms.store(millis, Ordering::SeqCst);
    }

    /// How long loading pools and resuming runs took at start.
    pub fn recovery_ms(&self) -> u64 {
        self.recovery_ms.load(Ordering::SeqCst)
    }

    /// From now on, new runs are refused with [`ServiceError::ShuttingDown`].
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// True once shutdown began.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}

/// Serialises JSON with object keys sorted at every level, so that equal documents have equal
/// digests whatever order their keys came in.
pub fn canonical_json(value: &serde_json::Value) -> String {
    fn sorted(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                serde_json::Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.clone(), sorted(v)))
                        .collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(sorted).collect())
            }
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_ignores_key_order() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[{"q":1,"p":2}],"x":2}}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"a":{"x":2,"y":[{"p":2,"q":1}]},"b":1}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":2,"y":[{"p":2,"q":1}]},"b":1}"#
        );
    }
}
