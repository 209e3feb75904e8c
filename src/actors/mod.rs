//! The actor layer: Supervisor → one PoolActor per pool → one RunActor per live run.
//!
//! Actors are thin shells. They own who-runs-what (slots, queues, timers) and delegate every
//! decision about a run to [`crate::lifecycle`], every scheduler call to [`crate::scheduler`]
//! and every write to [`crate::store`]. A change is committed before anything is told about it.

pub mod pool;
pub mod run;
pub mod supervisor;

use crate::bus::EventBus;
use crate::crypto::Sealer;
use crate::scheduler::{Adapter, PoolRuntime};
use crate::store::Store;
use std::sync::{Arc, RwLock};

/// What every actor needs: the store, the sealer, the adapter and the event bus.
#[derive(Clone)]
pub struct Deps {
    /// Persistence.
    pub store: Store,
    /// Opens sealed job bodies.
    pub sealer: Arc<Sealer>,
    /// The generic adapter.
    pub adapter: Arc<Adapter>,
    /// Where committed changes are published.
    pub bus: EventBus,
}

/// A pool's current runtime, shared by its PoolActor and RunActors, swapped on replacement so
/// that the next call of every unfinished run uses the new manifest revision.
#[derive(Debug, Clone)]
pub struct SharedRuntime(Arc<RwLock<Arc<PoolRuntime>>>);

impl SharedRuntime {
    /// Wraps a runtime.
    pub fn new(runtime: PoolRuntime) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(runtime))))
    }

    /// The current runtime.
    pub fn current(&self) -> Arc<PoolRuntime> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the runtime.
    pub fn replace(&self, runtime: PoolRuntime) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(runtime);
    }
}

/// The lifecycle policy of a runtime's manifest.
pub fn policy_of(runtime: &PoolRuntime) -> crate::lifecycle::Policy {
    let m = &runtime.manifest;
    crate::lifecycle::Policy {
        max_attempts: m.retry.max_attempts,
        initial_backoff_ms: m.retry.initial_backoff_ms,
        max_backoff_ms: m.retry.max_backoff_ms,
        poll_interval_ms: m.polling.interval_ms,
        poll_max_interval_ms: m.polling.max_interval_ms,
        max_consecutive_errors: m.polling.max_consecutive_errors,
        lost_redispatch: m.lost_redispatch,
        has_release: m.release.is_some(),
    }
}
