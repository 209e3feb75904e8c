//! The actor layer: Supervisor → one PoolActor per pool → one RunActor per live run.
//!
//! Actors are thin shells. They own who-runs-what (slots, queues, timers) and delegate every
//! decision about a run to [`crate::lifecycle`], every scheduler call to [`crate::scheduler`]
//! and every write to [`crate::store`]. A change is committed before anything is told about it.

pub mod fair;
pub mod pool;
pub mod run;
pub mod supervisor;
#[cfg(test)]
mod tests;

use crate::bus::EventBus;
use crate::crypto::Sealer;
use crate::scheduler::{Adapter, PoolRuntime};
use crate::store::Store;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Tracks calls and commits in flight, and whether the gateway is draining for shutdown.
///
/// While draining, actors start no new scheduler call; what is already in flight finishes and is
/// committed. Shutdown waits for `busy` to reach zero (or for its grace period).
#[derive(Debug, Default)]
pub struct Activity {
    draining: AtomicBool,
    busy: AtomicUsize,
    idle: tokio::sync::Notify,
}

impl Activity {
    /// A call or commit starts.
    pub fn enter(&self) {
        self.busy.fetch_add(1, Ordering::SeqCst);
    }

    /// A call or commit ended.
    pub fn leave(&self) {
        if self.busy.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// From now on no new call starts.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// True once draining began.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Calls and commits in flight.
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::SeqCst)
    }

    /// Waits until nothing is in flight, or `grace` passed. True when idle.
    pub async fn wait_idle(&self, grace: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let notified = self.idle.notified();
            if self.busy() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.busy() == 0;
            }
        }
    }
}

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
    /// In-flight work and the drain flag.
    pub activity: Arc<Activity>,
    /// Which runs have a live actor: never two actors for one run.
    pub owners: Owners,
    /// Where run actors live: spread over one arbiter per core.
    pub arbiters: RunArbiters,
}

/// The arbiters (one event-loop thread each) that run actors are spread over, round robin, so
/// that the work of many runs (rendering, mapping, HTTP client tasks) uses every core instead
/// of the one thread the supervisor and the pool actors share. Empty: run actors start on the
/// current arbiter (tests that build actors by hand).
#[derive(Clone, Default)]
pub struct RunArbiters {
    handles: Arc<[actix::dev::ArbiterHandle]>,
    next: Arc<AtomicUsize>,
}

impl std::fmt::Debug for RunArbiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunArbiters")
            .field("arbiters", &self.handles.len())
            .finish()
    }
}

impl RunArbiters {
    /// Starts `count` arbiters in the current actix system; they stop with it (or on
    /// [`RunArbiters::stop`]).
    pub fn start(count: usize) -> Self {
        let handles: Vec<_> = (0..count).map(|_| actix::Arbiter::new().handle()).collect();
        Self {
            handles: handles.into(),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// One arbiter per available core.
    pub fn per_core() -> Self {
        Self::start(std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
    }

    /// Starts `actor` on the next arbiter.
    pub fn start_actor<A>(&self, actor: A) -> actix::Addr<A>
    where
        A: actix::Actor<Context = actix::Context<A>> + Send,
    {
        if self.handles.is_empty() {
            return actor.start();
        }
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        A::start_in_arbiter(&self.handles[index], move |_| actor)
    }

    /// Stops the arbiters once the actors on them have nothing left to run.
    pub fn stop(&self) {
        for handle in self.handles.iter() {
            handle.stop();
        }
    }
}

/// The set of runs that have a live RunActor. An actor claims its run when it is created and
/// releases it when it is dropped, also when it dies by panicking (drop runs during unwinding),
/// so a restarted pool cannot start a second actor for a run whose old actor is still busy.
#[derive(Debug, Clone, Default)]
pub struct Owners(Arc<std::sync::Mutex<std::collections::HashSet<crate::domain::ids::JobId>>>);

/// Proof that an actor owns a run; dropping it releases the run.
#[derive(Debug)]
pub struct Ownership {
    owners: Owners,
    job_id: crate::domain::ids::JobId,
}

impl Owners {
    fn set(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashSet<crate::domain::ids::JobId>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Claims a run; `None` while another actor owns it.
    pub fn claim(&self, job_id: &crate::domain::ids::JobId) -> Option<Ownership> {
        self.set().insert(job_id.clone()).then(|| Ownership {
            owners: self.clone(),
            job_id: job_id.clone(),
        })
    }

    /// True while some actor owns the run.
    pub fn is_owned(&self, job_id: &crate::domain::ids::JobId) -> bool {
        self.set().contains(job_id)
    }
}

impl Drop for Ownership {
    fn drop(&mut self) {
        self.owners.set().remove(&self.job_id);
    }
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
