//! Supervisor: the single owner of the pool → PoolActor map; routes run messages to pools.

use super::Deps;
use super::pool::{
    self, Admit, AdmitError, Cancel, CancelError, GetStats, LiveStats, PoolActor, QueuePlace,
    Resume, Retire, UpdateRuntime,
};
use crate::domain::ids::{JobId, PoolName};
use crate::domain::run::RunRecord;
use crate::scheduler::PoolRuntime;
use actix::prelude::*;
use std::collections::HashMap;
use tokio::sync::oneshot;

/// Start a pool, or swap the manifest of a running one. A runtime whose revision is older than
/// the one the pool already runs is ignored: concurrent registrations may reach the supervisor
/// in any order, and the newest stored revision must win.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UpsertPool(pub PoolRuntime);

/// A pool registered or replaced through the API: like [`UpsertPool`], and when the pool has no
/// actor yet, its unfinished runs in the store are handed to the new actor (runs left behind
/// when the pool could not be loaded at start, or accepted while it had no actor).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RegisterPool(pub PoolRuntime);

/// The pool was deleted.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemovePool(pub PoolName);

/// Hand a new run to its pool, which stores it and answers on the message's reply channel
/// ([`AdmitError::NoPool`] when the pool has no actor).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AdmitRun(pub Admit);

/// Hand reloaded unfinished runs to their pools. Answers the runs whose pool is unknown.
#[derive(Message)]
#[rtype(result = "Vec<RunRecord>")]
pub struct ResumeRuns(pub Vec<RunRecord>);

/// Cancel a live run.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CancelRunOf {
    /// Its pool.
    pub pool: PoolName,
    /// The run.
    pub job_id: JobId,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<RunRecord, CancelError>>,
}

/// Read a pool's live counts (`None` when the pool has no actor).
#[derive(Message)]
#[rtype(result = "Option<LiveStats>")]
pub struct PoolStats(pub PoolName);

/// A queued run's place in its tenant's line in its pool's queue (`None` when it does not wait
/// there, or the pool has no actor).
#[derive(Message)]
#[rtype(result = "Option<usize>")]
pub struct QueuePlaceOf {
    /// Its pool.
    pub pool: PoolName,
    /// The run.
    pub job_id: JobId,
}

/// Read the live counts of every pool that has an actor (for the metrics).
#[derive(Message)]
#[rtype(result = "Vec<(PoolName, LiveStats)>")]
pub struct AllPoolStats;

/// The supervisor actor.
pub struct Supervisor {
    deps: Deps,
    pools: HashMap<PoolName, Addr<PoolActor>>,
    /// The latest runtime of each pool, to restart a pool actor that died.
    runtimes: HashMap<PoolName, PoolRuntime>,
}

/// How often the supervisor checks that its pool actors are alive.
const SWEEP: std::time::Duration = std::time::Duration::from_secs(2);

impl Supervisor {
    /// A supervisor with no pools yet.
    pub fn new(deps: Deps) -> Self {
        Self {
            deps,
            pools: HashMap::new(),
            runtimes: HashMap::new(),
        }
    }

    /// Restarts every pool actor that stopped unexpectedly (it panicked), with its latest
    /// runtime, and hands it its unfinished runs from the store: one bad pool cannot take the
    /// others down, and its runs are not lost.
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        let dead: Vec<PoolName> = self
            .pools
            .iter()
            .filter(|(_, addr)| !addr.connected())
            .map(|(name, _)| name.clone())
            .collect();
        for name in dead {
            let Some(runtime) = self.runtimes.get(&name).cloned() else {
                self.pools.remove(&name);
                continue;
            };
            tracing::warn!(pool = %name, "a pool actor stopped unexpectedly; restarting it from the store");
            let addr = PoolActor::new(runtime, self.deps.clone()).start();
            self.pools.insert(name.clone(), addr.clone());
            self.adopt_stored_runs(name, addr, ctx);
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(SWEEP, |actor, ctx| actor.sweep(ctx));
    }
}

impl Supervisor {
    /// Starts or updates a pool's actor. Returns the address of a new actor, if one was started.
    /// A runtime older than the revision already running is ignored: concurrent registrations
    /// cannot leave an older manifest in charge.
    fn upsert(&mut self, runtime: PoolRuntime) -> Option<Addr<PoolActor>> {
        let name = runtime.name.clone();
        if let Some(current) = self.runtimes.get(&name)
            && current.revision > runtime.revision
        {
            tracing::info!(
                pool = %name,
                revision = runtime.revision,
                running = current.revision,
                "ignoring an older revision of a pool: a newer one is already running"
            );
            return None;
        }
        self.runtimes.insert(name.clone(), runtime.clone());
        match self.pools.get(&name) {
            Some(addr) if addr.connected() => {
                addr.do_send(UpdateRuntime(runtime));
                None
            }
            // A dead pool actor: the sweep restarts it with this runtime and its runs.
            Some(_) => None,
            None => {
                let addr = PoolActor::new(runtime, self.deps.clone()).start();
                self.pools.insert(name, addr.clone());
                Some(addr)
            }
        }
    }

    /// Hands a new pool actor the unfinished runs of its pool that are in the store.
    fn adopt_stored_runs(&self, name: PoolName, addr: Addr<PoolActor>, ctx: &mut Context<Self>) {
        let store = self.deps.store.clone();
        let fut = async move {
            match store.load_unfinished_of(&name).await {
                Ok(runs) => {
                    if !runs.is_empty() {
                        tracing::info!(pool = %name, runs = runs.len(), "resuming the unfinished runs of a pool");
                        addr.do_send(Resume(runs));
                    }
                }
                Err(e) => {
                    tracing::error!(pool = %name, error = %e, "cannot reload the runs of a pool")
                }
            }
        };
        ctx.spawn(fut.into_actor(self));
    }
}

impl Handler<UpsertPool> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: UpsertPool, _ctx: &mut Self::Context) {
        // At start the runs are resumed all at once afterwards (`ResumeRuns`).
        self.upsert(msg.0);
    }
}

impl Handler<RegisterPool> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: RegisterPool, ctx: &mut Self::Context) {
        let name = msg.0.name.clone();
        if let Some(addr) = self.upsert(msg.0) {
            self.adopt_stored_runs(name, addr, ctx);
        }
    }
}

impl Handler<RemovePool> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: RemovePool, _ctx: &mut Self::Context) {
        self.runtimes.remove(&msg.0);
        if let Some(addr) = self.pools.remove(&msg.0) {
            addr.do_send(Retire);
        }
    }
}

impl Handler<AdmitRun> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: AdmitRun, _ctx: &mut Self::Context) {
        match self.pools.get(&msg.0.run.pool) {
            Some(addr) if addr.connected() => addr.do_send(msg.0),
            _ => {
                let _ = msg.0.reply.send(Err(AdmitError::NoPool));
            }
        }
    }
}

impl Handler<ResumeRuns> for Supervisor {
    type Result = MessageResult<ResumeRuns>;

    fn handle(&mut self, msg: ResumeRuns, _ctx: &mut Self::Context) -> Self::Result {
        let mut by_pool: HashMap<PoolName, Vec<RunRecord>> = HashMap::new();
        let mut orphans = Vec::new();
        for run in msg.0 {
            if self.pools.contains_key(&run.pool) {
                by_pool.entry(run.pool.clone()).or_default().push(run);
            } else {
                orphans.push(run);
            }
        }
        for (pool, runs) in by_pool {
            if let Some(addr) = self.pools.get(&pool) {
                addr.do_send(Resume(runs));
            }
        }
        MessageResult(orphans)
    }
}

impl Handler<CancelRunOf> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: CancelRunOf, _ctx: &mut Self::Context) {
        match self.pools.get(&msg.pool) {
            Some(addr) => addr.do_send(Cancel {
                job_id: msg.job_id,
                reply: msg.reply,
            }),
            None => {
                let _ = msg.reply.send(Err(pool::CancelError::NotLive));
            }
        }
    }
}

impl Handler<PoolStats> for Supervisor {
    type Result = ResponseFuture<Option<LiveStats>>;

    fn handle(&mut self, msg: PoolStats, _ctx: &mut Self::Context) -> Self::Result {
        let addr = self.pools.get(&msg.0).cloned();
        Box::pin(async move {
            match addr {
                Some(addr) => addr.send(GetStats).await.ok(),
                None => None,
            }
        })
    }
}

impl Handler<QueuePlaceOf> for Supervisor {
    type Result = ResponseFuture<Option<usize>>;

    fn handle(&mut self, msg: QueuePlaceOf, _ctx: &mut Self::Context) -> Self::Result {
        let addr = self.pools.get(&msg.pool).cloned();
        Box::pin(async move {
            match addr {
                Some(addr) => addr.send(QueuePlace(msg.job_id)).await.ok().flatten(),
                None => None,
            }
        })
    }
}

impl Handler<AllPoolStats> for Supervisor {
    type Result = ResponseFuture<Vec<(PoolName, LiveStats)>>;

    fn handle(&mut self, _msg: AllPoolStats, _ctx: &mut Self::Context) -> Self::Result {
        let asks: Vec<_> = self
            .pools
            .iter()
            .map(|(name, addr)| {
                let (name, answer) = (name.clone(), addr.send(GetStats));
                async move { answer.await.ok().map(|stats| (name, stats)) }
            })
            .collect();
        Box::pin(async move {
            let mut all: Vec<_> = futures_util::future::join_all(asks)
                .await
                .into_iter()
                .flatten()
                .collect();
            all.sort_by(|a, b| a.0.cmp(&b.0));
            all
        })
    }
}

/// Test-only: the address of a pool's actor.
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "Option<Addr<PoolActor>>")]
pub struct PoolAddr(pub PoolName);

#[cfg(test)]
impl Handler<PoolAddr> for Supervisor {
    type Result = Option<Addr<PoolActor>>;

    fn handle(&mut self, msg: PoolAddr, _ctx: &mut Self::Context) -> Self::Result {
        self.pools.get(&msg.0).cloned()
    }
}
