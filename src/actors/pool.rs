//! PoolActor: one per pool; owns the pool's queue and its `maxInFlight` slots, and starts a
//! RunActor for every run that holds a slot or still has a release to make.

use super::run::{CancelRun, RunActor};
use super::{Deps, SharedRuntime, policy_of};
use crate::domain::ids::JobId;
use crate::domain::run::{RunRecord, now_millis};
use crate::lifecycle::{self, Env};
use crate::scheduler::PoolRuntime;
use actix::prelude::*;
use std::collections::{HashMap, VecDeque};
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
    /// Runs holding a slot (counted separately: a run that releases holds no slot).
    in_flight: usize,
    retired: bool,
}

impl PoolActor {
    /// A pool actor for `runtime`.
    pub fn new(runtime: PoolRuntime, deps: Deps) -> Self {
        Self {
            runtime: SharedRuntime::new(runtime),
            deps,
            queue: VecDeque::new(),
            runs: HashMap::new(),
            in_flight: 0,
            retired: false,
        }
    }

    fn max_in_flight(&self) -> usize {
        usize::try_from(self.runtime.current().manifest.limits.max_in_flight).unwrap_or(usize::MAX)
    }

    /// Grants free slots to queued runs, oldest first.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        while self.in_flight < self.max_in_flight() {
            let Some(run) = self.queue.pop_front() else {
                break;
            };
            self.start_run(run, true, ctx);
        }
        self.maybe_stop(ctx);
    }

    fn start_run(&mut self, run: RunRecord, granted: bool, ctx: &mut Context<Self>) {
        if granted || run.state.holds_slot() {
            self.in_flight += 1;
        }
        let job_id = run.job_id.clone();
        let actor = RunActor::new(
            run,
            self.runtime.clone(),
            self.deps.clone(),
            ctx.address(),
            granted,
        );
        self.runs.insert(job_id, actor.start());
    }

    fn maybe_stop(&mut self, ctx: &mut Context<Self>) {
        if self.retired && self.runs.is_empty() && self.queue.is_empty() {
            ctx.stop();
        }
    }
}

impl Actor for PoolActor {
    type Context = Context<Self>;
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
        for run in msg.0 {
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

    fn handle(&mut self, _msg: SlotFreed, ctx: &mut Self::Context) {
        self.in_flight = self.in_flight.saturating_sub(1);
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
            in_flight: self.in_flight,
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
            let deps = self.deps.clone();
            let fut = async move {
                let committed = deps.store.commit(step.run.clone(), step.events).await;
                match committed {
                    Ok(records) => {
                        deps.bus.publish(records, &step.run);
                        // Never dispatched: its job body is not needed any more.
                        if let Err(e) = deps.store.clear_job_sealed(&step.run.job_id).await {
                            tracing::warn!(job_id = %step.run.job_id, error = %e, "cannot drop a cancelled run's job body");
                        }
                        let _ = msg.reply.send(Ok(step.run));
                        None
                    }
                    Err(e) => {
                        tracing::error!(job_id = %run.job_id, error = %e, "cannot commit a cancellation");
                        let _ = msg.reply.send(Err(CancelError::Store));
                        Some(run)
                    }
                }
            };
            ctx.spawn(fut.into_actor(self).map(|unqueued, actor, ctx| {
                // A cancellation that could not be committed leaves the run queued.
                if let Some(run) = unqueued {
                    actor.queue.push_front(run);
                }
                actor.maybe_stop(ctx);
            }));
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
