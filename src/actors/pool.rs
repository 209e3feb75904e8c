//! PoolActor: one per pool; owns the pool's queue and its `maxInFlight` slots, and starts a
//! RunActor for every run that holds a slot or still has a release to make.

use super::run::{CancelRun, RunActor};
use super::{Deps, SharedRuntime, policy_of};
use crate::domain::ids::JobId;
use crate::domain::run::{RunRecord, now_millis};
use crate::lifecycle::{self, Env, Input, Step};
use crate::scheduler::PoolRuntime;
use actix::prelude::*;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;
use tokio::sync::oneshot;

/// A new run, already committed as `queued`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Submit(pub RunRecord);

/// Unfinished runs reloaded from the store at start.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resume(pub Vec<RunRecord>);

/// A run left the slot-holding states.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SlotFreed(pub JobId);

/// A run's actor has nothing left to do.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RunFinished(pub JobId);

/// Swap the pool's manifest and secrets; unfinished runs use them from their next call.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UpdateRuntime(pub PoolRuntime);

/// Why a cancel could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CancelError {
    /// The pool has no live run with that id (it is finished, or unknown).
    #[error("the run is not live in this pool")]
    NotLive,
    /// The cancellation could not be committed.
    #[error("the cancellation could not be committed")]
    Store,
}

/// Cancel a run of this pool; answers with the run after the cancel is committed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Cancel {
    /// The run.
    pub job_id: JobId,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<RunRecord, CancelError>>,
}

/// The pool's live counts and the limits that admission needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LiveStats {
    /// Runs waiting for a slot.
    pub queued: usize,
    /// Runs holding a slot.
    pub in_flight: usize,
    /// The manifest's `maxQueued`.
    pub max_queued: usize,
    /// The manifest's default deadline.
    pub deadline_seconds: Option<u64>,
    /// The manifest revision in use.
    pub revision: i64,
}

/// Read the pool's live counts.
#[derive(Message)]
#[rtype(result = "LiveStats")]
pub struct GetStats;

/// The pool was deleted: stop once the live runs are done.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

/// The actor of one pool.
pub struct PoolActor {
    runtime: SharedRuntime,
    deps: Deps,
    /// Committed `queued` runs, oldest first.
    queue: VecDeque<RunRecord>,
    /// Live run actors.
    runs: HashMap<JobId, Addr<RunActor>>,
    /// Runs holding a slot (a finished run that still releases holds none). A set, not a
    /// counter, so that restarting a run's actor can never leak or double a slot.
    slots: HashSet<JobId>,
    retired: bool,
}

/// How often the pool checks that its run actors are alive.
const SWEEP: Duration = Duration::from_secs(2);
/// How often queued runs are checked against their deadlines.
const QUEUE_DEADLINES: Duration = Duration::from_secs(1);
/// At most this long is spread the first calls of runs reloaded overdue at start.
const MAX_RESUME_SPREAD_MS: u64 = 10_000;

impl PoolActor {
    /// A pool actor for `runtime`.
    pub fn new(runtime: PoolRuntime, deps: Deps) -> Self {
        Self {
            runtime: SharedRuntime::new(runtime),
            deps,
            queue: VecDeque::new(),
            runs: HashMap::new(),
            slots: HashSet::new(),
            retired: false,
        }
    }

    fn max_in_flight(&self) -> usize {
        usize::try_from(self.runtime.current().manifest.limits.max_in_flight).unwrap_or(usize::MAX)
    }

    /// Grants free slots to queued runs, oldest first (none while the gateway drains). A run
    /// whose deadline passed while it waited fails instead of starting.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        while self.slots.len() < self.max_in_flight() && !self.deps.activity.is_draining() {
            let Some(run) = self.queue.pop_front() else {
                break;
            };
            if run
                .deadline_at
                .is_some_and(|deadline| deadline <= now_millis())
            {
                self.expire_unqueued(run, ctx);
                continue;
            }
            self.start_run(run, true, ctx);
        }
        self.maybe_stop(ctx);
    }

    /// Fails every queued run whose deadline passed: a run that never got a slot must not wait
    /// forever.
    fn expire_queued(&mut self, ctx: &mut Context<Self>) {
        if self.deps.activity.is_draining() {
            return;
        }
        let now = now_millis();
        if !self
            .queue
            .iter()
            .any(|run| run.deadline_at.is_some_and(|deadline| deadline <= now))
        {
            return;
        }
        let (expired, waiting): (VecDeque<RunRecord>, VecDeque<RunRecord>) = self
            .queue
            .drain(..)
            .partition(|run| run.deadline_at.is_some_and(|deadline| deadline <= now));
        self.queue = waiting;
        for run in expired {
            self.expire_unqueued(run, ctx);
        }
    }

    /// Fails a run taken out of the queue because its deadline passed.
    fn expire_unqueued(&mut self, run: RunRecord, ctx: &mut Context<Self>) {
        let env = Env {
            now: now_millis(),
            jitter: fastrand::f64(),
        };
        let policy = policy_of(&self.runtime.current());
        let step = lifecycle::apply(&run, Input::DeadlinePassed, &policy, env);
        self.finish_unqueued(run, step, None, ctx);
    }

    /// Commits the final step of a run taken out of the queue before it reached the scheduler
    /// (cancelled, or past its deadline), publishes it and answers `reply`. A step that cannot
    /// be committed puts the run back at the head of the queue.
    fn finish_unqueued(
        &mut self,
        run: RunRecord,
        step: Step,
        reply: Option<oneshot::Sender<Result<RunRecord, CancelError>>>,
        ctx: &mut Context<Self>,
    ) {
        let deps = self.deps.clone();
        deps.activity.enter();
        let fut = async move {
            let committed = deps.store.commit(step.run.clone(), step.events).await;
            deps.activity.leave();
            match committed {
                Ok(records) => {
                    // The store dropped the job body in the same commit: nothing needs it now.
                    deps.bus.publish(records, &step.run);
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(step.run));
                    }
                    None
                }
                Err(e) => {
                    tracing::error!(job_id = %run.job_id, error = %e, "cannot commit the end of a queued run");
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(CancelError::Store));
                    }
                    Some(run)
                }
            }
        };
        ctx.spawn(fut.into_actor(self).map(|unqueued, actor, ctx| {
            // A step that could not be committed leaves the run queued.
            if let Some(run) = unqueued {
                actor.queue.push_front(run);
            }
            actor.maybe_stop(ctx);
        }));
    }

    fn start_run(&mut self, run: RunRecord, granted: bool, ctx: &mut Context<Self>) {
        let Some(ownership) = self.deps.owners.claim(&run.job_id) else {
            // An old actor of this run (of a pool actor that died) is still finishing a step:
            // try again from the store once it is gone.
            self.restart_later(run.job_id, ctx);
            return;
        };
        if granted || run.state.holds_slot() {
            self.slots.insert(run.job_id.clone());
        } else {
            self.slots.remove(&run.job_id);
        }
        let job_id = run.job_id.clone();
        let runtime = self.runtime.current();
        let reconcile = !granted
            && lifecycle::recovery(&run, runtime.manifest.reconcile_op().is_some())
                == lifecycle::Recovery::Reconcile;
        let actor = RunActor::new(
            run,
            self.runtime.clone(),
            self.deps.clone(),
            ctx.address(),
            granted,
            reconcile,
            ownership,
        );
        self.runs.insert(job_id, actor.start());
    }

    /// Reloads a run from the store after a pause and starts its actor if it still needs one.
    fn restart_later(&mut self, job_id: JobId, ctx: &mut Context<Self>) {
        ctx.run_later(SWEEP, move |actor, ctx| {
            let store = actor.deps.store.clone();
            let fut = async move { store.get_run(&job_id).await.map(|run| (job_id, run)) };
            ctx.spawn(
                fut.into_actor(actor)
                    .map(|loaded, actor, ctx| actor.adopt(loaded, ctx)),
            );
        });
    }

    /// Starts a reloaded run's actor when the run still needs work; else forgets its slot.
    fn adopt(
        &mut self,
        loaded: Result<(JobId, Option<RunRecord>), crate::store::StoreError>,
        ctx: &mut Context<Self>,
    ) {
        match loaded {
            Ok((_, Some(run))) if run.state == crate::domain::state::RunState::Queued => {
                if !self.queue.iter().any(|q| q.job_id == run.job_id) {
                    self.queue.push_back(run);
                }
                self.pump(ctx);
            }
            Ok((_, Some(run))) if run.needs_work() && !self.runs.contains_key(&run.job_id) => {
                self.start_run(run, false, ctx);
            }
            Ok((job_id, _)) => {
                if !self.runs.contains_key(&job_id) {
                    self.slots.remove(&job_id);
                }
                self.pump(ctx);
            }
            Err(e) => tracing::error!(error = %e, "cannot reload a run to restart its actor"),
        }
    }

    /// Restarts, from the store, every run whose actor stopped without saying it finished
    /// (it panicked): one bad run cannot strand itself or its slot.
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        let dead: Vec<JobId> = self
            .runs
            .iter()
            .filter(|(_, addr)| !addr.connected())
            .map(|(id, _)| id.clone())
            .collect();
        for job_id in dead {
            tracing::warn!(job_id = %job_id, "a run actor stopped unexpectedly; restarting it from the store");
            self.runs.remove(&job_id);
            let store = self.deps.store.clone();
            let fut = async move { store.get_run(&job_id).await.map(|run| (job_id, run)) };

            ctx.spawn(
                fut.into_actor(self)
                    .map(|loaded, actor, ctx| actor.adopt(loaded, ctx)),
            );
        }
    }

    fn maybe_stop(&mut self, ctx: &mut Context<Self>) {
        if self.retired && self.runs.is_empty() && self.queue.is_empty() {
            ctx.stop();
        }
    }
}

impl Actor for PoolActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(SWEEP, |actor, ctx| actor.sweep(ctx));
        ctx.run_interval(QUEUE_DEADLINES, |actor, ctx| actor.expire_queued(ctx));
    }
}

impl Handler<Submit> for PoolActor {
    type Result = ();

    fn handle(&mut self, msg: Submit, ctx: &mut Self::Context) {
        self.queue.push_back(msg.0);
        self.pump(ctx);
    }
}

impl Handler<Resume> for PoolActor {
    type Result = ();

    fn handle(&mut self, msg: Resume, ctx: &mut Self::Context) {
        let policy = policy_of(&self.runtime.current());
        let spread = policy.poll_interval_ms.min(MAX_RESUME_SPREAD_MS);
        for mut run in msg.0 {
            let env = Env {
                now: now_millis(),
                jitter: fastrand::f64(),
            };
            run.next_at = lifecycle::resume_at(&run, env, spread);
            if self.runs.contains_key(&run.job_id)
                || self.queue.iter().any(|q| q.job_id == run.job_id)
            {
                continue;
            }
            if run.state == crate::domain::state::RunState::Queued {
                self.queue.push_back(run);
            } else {
                // Dispatching, pending, running: they hold a slot already (recomputed here from
                // the store); finished runs with a release due hold none.
                self.start_run(run, false, ctx);
            }
        }
        self.pump(ctx);
    }
}

impl Handler<SlotFreed> for PoolActor {
    type Result = ();

    fn handle(&mut self, msg: SlotFreed, ctx: &mut Self::Context) {
        self.slots.remove(&msg.0);
        self.pump(ctx);
    }
}

impl Handler<RunFinished> for PoolActor {
    type Result = ();

    fn handle(&mut self, msg: RunFinished, ctx: &mut Self::Context) {
        self.runs.remove(&msg.0);
        self.maybe_stop(ctx);
    }
}

impl Handler<UpdateRuntime> for PoolActor {
    type Result = ();

    fn handle(&mut self, msg: UpdateRuntime, ctx: &mut Self::Context) {
        self.runtime.replace(msg.0);
        // A larger maxInFlight may free slots at once.
        self.pump(ctx);
    }
}

impl Handler<GetStats> for PoolActor {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _msg: GetStats, _ctx: &mut Self::Context) -> Self::Result {
        let runtime = self.runtime.current();
        MessageResult(LiveStats {
            queued: self.queue.len(),
            in_flight: self.slots.len(),
            max_queued: usize::try_from(runtime.manifest.limits.max_queued).unwrap_or(usize::MAX),
            deadline_seconds: runtime.manifest.polling.deadline_seconds,
            revision: runtime.revision,
        })
    }
}

impl Handler<Retire> for PoolActor {
    type Result = ();

    fn handle(&mut self, _msg: Retire, ctx: &mut Self::Context) {
        self.retired = true;
        self.maybe_stop(ctx);
    }
}

impl Handler<Cancel> for PoolActor {
    type Result = ();

    fn handle(&mut self, msg: Cancel, ctx: &mut Self::Context) {
        if let Some(position) = self.queue.iter().position(|run| run.job_id == msg.job_id) {
            let Some(run) = self.queue.remove(position) else {
                let _ = msg.reply.send(Err(CancelError::NotLive));
                return;
            };
            let env = Env {
                now: now_millis(),
                jitter: fastrand::f64(),
            };
            let policy = policy_of(&self.runtime.current());
            let Some(step) = lifecycle::request_cancel(&run, &policy, env) else {
                let _ = msg.reply.send(Err(CancelError::NotLive));
                return;
            };
            self.finish_unqueued(run, step, Some(msg.reply), ctx);
            return;
        }
        match self.runs.get(&msg.job_id) {
            Some(actor) => actor.do_send(CancelRun(forward(msg.reply))),
            None => {
                let _ = msg.reply.send(Err(CancelError::NotLive));
            }
        }
    }
}

/// Adapts the run actor's plain answer to the pool's `Result` answer.
fn forward(reply: oneshot::Sender<Result<RunRecord, CancelError>>) -> oneshot::Sender<RunRecord> {
    let (sender, receiver) = oneshot::channel::<RunRecord>();
    actix::spawn(async move {
        let answer = receiver.await.map_err(|_| CancelError::NotLive);
        let _ = reply.send(answer);
    });
    sender
}

/// Test-only: makes a run's actor (`Some`) or the pool actor itself (`None`) die as if a
/// handler had panicked.
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Crash(pub Option<JobId>);

#[cfg(test)]
impl Handler<Crash> for PoolActor {
    type Result = bool;

    fn handle(&mut self, msg: Crash, _ctx: &mut Self::Context) -> bool {
        match msg.0 {
            Some(job_id) => match self.runs.get(&job_id) {
                Some(addr) => {
                    addr.do_send(super::run::Crash);
                    true
                }
                None => false,
            },
            None => panic!("a pool actor crashes on purpose"),
        }
    }
}
