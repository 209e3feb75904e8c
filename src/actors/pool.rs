//! PoolActor: one per pool; owns the pool's queue and its `maxInFlight` slots, and starts a
//! RunActor for every run that holds a slot or still has a release to make.

use super::fair::{FairQueue, Slots, Waiting};
use super::run::{CancelRun, RunActor, Start};
use super::{Deps, SharedRuntime, policy_of};
use crate::domain::ids::JobId;
use crate::domain::run::{NewEvent, RunRecord, now_millis};
use crate::domain::state::RunState;
use crate::lifecycle::{self, Env, Input};
use crate::scheduler::PoolRuntime;
use crate::store::RunWithBody;
use actix::prelude::*;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::oneshot;

/// A new run to accept. The pool decides, in step with its own slot accounting, whether it
/// admits the run at all (`maxQueued`), and whether it starts at once (a slot is free and no
/// run waits) or waits in the queue; it then commits the run in that state with its first
/// events, and answers once that is durable. A run that starts at once is stored straight in
/// `dispatching` and its actor gets the job body from here, so nothing is read back.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Admit {
    /// The run as submitted, `queued`; the pool fills in its manifest revision and, when the
    /// submission set none, the manifest's default deadline.
    pub run: RunRecord,
    /// The submission's own deadline, in seconds from the run's creation.
    pub deadline_seconds: Option<u64>,
    /// The sealed job body, as stored.
    pub sealed: Vec<u8>,
    /// The job body in clear, for a dispatch that starts at once (dropped after it).
    pub job: Value,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<Admitted, AdmitError>>,
}

/// What [`Admit`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Admitted {
    /// The run is stored (queued, or dispatching when it started at once).
    Created(RunRecord),
    /// A run with this `jobId` exists already; nothing was written. The caller compares them.
    Existing(RunRecord),
}

/// Why [`Admit`] accepted nothing.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// The pool has no actor (it is not registered, or could not be loaded).
    #[error("the pool has no live actor")]
    NoPool,
    /// Every slot is taken and `maxQueued` runs wait already.
    #[error("the pool is saturated ({queued} runs queued)")]
    Saturated {
        /// Runs waiting.
        queued: usize,
    },
    /// The run could not be stored.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Unfinished runs reloaded from the store at start.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resume(pub Vec<RunRecord>);

/// A run left the slot-holding states.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SlotFreed(pub JobId);

/// Grant the free slots now (sent by the pool to itself, behind the messages already waiting).
#[derive(Message)]
#[rtype(result = "()")]
struct Pump;

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
    /// The manifest's `maxInFlight`.
    pub max_in_flight: usize,
    /// The manifest's `maxQueued`.
    pub max_queued: usize,
    /// The manifest revision in use.
    pub revision: i64,
}

impl LiveStats {
    /// Whether one more run may be accepted: `maxQueued` bounds only the runs that would be left
    /// waiting, so a pool with a free slot takes a run whatever its `maxQueued` (even 0).
    pub fn admits_one_more(&self) -> bool {
        let free = self.max_in_flight.saturating_sub(self.in_flight);
        let waiting_after = self.queued.saturating_add(1).saturating_sub(free);
        waiting_after <= self.max_queued
    }
}

/// Read the pool's live counts.
#[derive(Message)]
#[rtype(result = "LiveStats")]
pub struct GetStats;

/// How many runs of the same tenant wait ahead of a queued run (`None` when it does not wait
/// in this pool's queue).
#[derive(Message)]
#[rtype(result = "Option<usize>")]
pub struct QueuePlace(pub JobId);

/// The pool was deleted: stop once the live runs are done.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

/// Why a run leaves the queue without reaching the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unqueue {
    /// A caller cancelled it.
    Cancel,
    /// Its deadline passed while it waited.
    Deadline,
}

/// How long a cancel (or a repeated submission) waits before it is handled again when its run
/// is between the queue and its actor (the run's record is being loaded or stored).
const CANCEL_RETRY: Duration = Duration::from_millis(20);
/// How often queued runs are checked against their deadlines.
const QUEUE_DEADLINES: Duration = Duration::from_secs(1);
/// How long the pool waits before granting again after the store failed to load a granted run.
const GRANT_RETRY: Duration = Duration::from_millis(500);

/// How the pool came to start a run's actor.
enum Begin {
    /// A new run stored straight in `dispatching`, with its clear job body.
    New(Value),
    /// A queued run granted a slot, with its sealed job body as the store had it.
    Granted(Option<Vec<u8>>),
    /// A run reloaded from the store (at start, after a pause, or when it moved on elsewhere).
    Reloaded,
}

/// The actor of one pool.
pub struct PoolActor {
    runtime: SharedRuntime,
    deps: Deps,
    /// Committed `queued` runs, in the order slots go to them (fair share across tenants,
    /// then priority, then arrival).
    queue: FairQueue,
    /// Runs granted a slot whose record is being loaded (or, for a new run that starts at
    /// once, stored) to start their actor.
    granting: HashSet<JobId>,
    /// New runs being stored as `queued`: they count against `maxQueued` already.
    admitting: HashSet<JobId>,
    /// Live run actors.
    runs: HashMap<JobId, Addr<RunActor>>,
    /// Runs holding a slot, with their tenants (a finished run that still releases holds
    /// none).
    slots: Slots,
    /// A [`Pump`] is on its way to this actor.
    pump_due: bool,
    retired: bool,
}

/// How often the pool checks that its run actors are alive.
const SWEEP: Duration = Duration::from_secs(2);
/// At most this long is spread the first calls of runs reloaded overdue at start.
const MAX_RESUME_SPREAD_MS: u64 = 10_000;

impl PoolActor {
    /// A pool actor for `runtime`.
    pub fn new(runtime: PoolRuntime, deps: Deps) -> Self {
        Self {
            runtime: SharedRuntime::new(runtime),
            deps,
            queue: FairQueue::default(),
            granting: HashSet::new(),
            admitting: HashSet::new(),
            runs: HashMap::new(),
            slots: Slots::default(),
            pump_due: false,
            retired: false,
        }
    }

    /// The live counts: runs being stored as `queued` count as queued already.
    fn live_stats(&self) -> LiveStats {
        let runtime = self.runtime.current();
        LiveStats {
            queued: self.queue.len() + self.admitting.len(),
            in_flight: self.slots.len(),
            max_in_flight: self.max_in_flight(),
            max_queued: usize::try_from(runtime.manifest.limits.max_queued).unwrap_or(usize::MAX),
            revision: runtime.revision,
        }
    }

    /// How the queue keeps `run`: its tenant (by the pool's tenant label) and priority.
    fn waiting_of(&self, run: &RunRecord) -> Waiting {
        Waiting {
            job_id: run.job_id.clone(),
            deadline_at: run.deadline_at,
            tenant: self
                .runtime
                .current()
                .manifest
                .fair_share
                .tenant_of(&run.labels),
            priority: run.priority,
        }
    }

    fn max_in_flight(&self) -> usize {
        usize::try_from(self.runtime.current().manifest.limits.max_in_flight).unwrap_or(usize::MAX)
    }

    /// Grants free slots to queued runs in fair-share order (none while the gateway drains).
    /// The slots are taken at once; the granted runs' records and sealed job bodies are loaded
    /// from the store in one read, and their actors started when it arrives.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let mut batch = Vec::new();
        let runtime = self.runtime.current();
        let share = &runtime.manifest.fair_share;
        while self.slots.len() < self.max_in_flight() && !self.deps.activity.is_draining() {
            let Some(waiting) = self.queue.next(share, &self.slots) else {
                break;
            };
            if waiting.expired(now_millis()) {
                // Its deadline passed while it waited: it fails instead of starting.
                self.end_waiting(waiting, Unqueue::Deadline, None, ctx);
                continue;
            }
            self.slots
                .insert(waiting.job_id.clone(), waiting.tenant.clone());
            self.granting.insert(waiting.job_id.clone());
            batch.push(waiting);
        }
        if !batch.is_empty() {
            let store = self.deps.store.clone();
            let ids = batch.iter().map(|w| w.job_id.clone()).collect();
            let fut = async move { store.get_runs_with_bodies(ids).await };
            ctx.spawn(
                fut.into_actor(self)
                    .map(move |loaded, actor, ctx| actor.granted_batch(batch, loaded, ctx)),
            );
        }
        self.maybe_stop(ctx);
    }

    /// Starts the actors of the runs of `batch` once their records are loaded; when the read
    /// failed, they go back to the head of the queue, in order, and the pool tries again later.
    fn granted_batch(
        &mut self,
        batch: Vec<Waiting>,
        loaded: Result<Vec<RunWithBody>, crate::store::StoreError>,
        ctx: &mut Context<Self>,
    ) {
        match loaded {
            Ok(found) => {
                let mut found: HashMap<JobId, RunWithBody> = found
                    .into_iter()
                    .map(|(run, body)| (run.job_id.clone(), (run, body)))
                    .collect();
                for waiting in batch {
                    let loaded = found.remove(&waiting.job_id);
                    self.granted(waiting, loaded, ctx);
                }
            }
            Err(e) => {
                tracing::error!(runs = batch.len(), error = %e, "cannot load the runs granted a slot; they wait");
                for waiting in batch.into_iter().rev() {
                    self.granting.remove(&waiting.job_id);
                    self.slots.remove(&waiting.job_id);
                    self.queue.push_front(waiting);
                }
                ctx.run_later(GRANT_RETRY, |actor, ctx| actor.pump(ctx));
            }
        }
    }

    /// Fails every queued run whose deadline passed: a run that never got a slot must not wait
    /// forever.
    fn expire_queued(&mut self, ctx: &mut Context<Self>) {
        let now = now_millis();
        if self.deps.activity.is_draining() || !self.queue.any_expired(now) {
            return;
        }
        for waiting in self.queue.take_expired(now) {
            self.end_waiting(waiting, Unqueue::Deadline, None, ctx);
        }
    }

    /// Starts the actor of a run granted a slot, once its record (and sealed job body) is
    /// loaded; `None` when the store no longer has it.
    fn granted(&mut self, waiting: Waiting, loaded: Option<RunWithBody>, ctx: &mut Context<Self>) {
        self.granting.remove(&waiting.job_id);
        match loaded {
            Some((run, sealed)) if run.state == RunState::Queued => {
                self.start_actor(run, Begin::Granted(sealed), ctx);
            }
            Some((run, _)) if run.needs_work() && !self.runs.contains_key(&run.job_id) => {
                // It moved on without this pool's grant (another replica took it): drive it as
                // it stands.
                self.start_run(run, None, ctx);
                self.pump(ctx);
            }
            _ => {
                self.slots.remove(&waiting.job_id);
                self.pump(ctx);
            }
        }
    }

    /// Whether the run is waiting in the queue or being granted a slot.
    fn is_waiting(&self, job_id: &JobId) -> bool {
        self.granting.contains(job_id)
            || self.admitting.contains(job_id)
            || self.queue.contains(job_id)
    }

    /// Starts the actor of a run. `job` is the clear job body of a new run that starts at once
    /// (stored straight in `dispatching`); `None` for a run reloaded from the store, whose
    /// actor opens the stored body when it dispatches.
    fn start_run(&mut self, run: RunRecord, job: Option<Value>, ctx: &mut Context<Self>) {
        let begin = match job {
            Some(job) => Begin::New(job),
            None => Begin::Reloaded,
        };
        self.start_actor(run, begin, ctx);
    }

    fn start_actor(&mut self, run: RunRecord, begin: Begin, ctx: &mut Context<Self>) {
        let Some(ownership) = self.deps.owners.claim(&run.job_id) else {
            // An old actor of this run (of a pool actor that died) is still finishing a step:
            // try again from the store once it is gone.
            self.restart_later(run.job_id, ctx);
            return;
        };
        let granted = matches!(begin, Begin::Granted(_));
        if granted || run.state.holds_slot() {
            let tenant = self.waiting_of(&run).tenant;
            self.slots.insert(run.job_id.clone(), tenant);
        } else {
            self.slots.remove(&run.job_id);
        }
        let job_id = run.job_id.clone();
        let runtime = self.runtime.current();
        let start = match begin {
            // Stored in `dispatching` a moment ago with its body in hand: not sent anywhere yet.
            Begin::New(job) => Start::New(job),
            Begin::Granted(sealed) => Start::Granted(sealed),
            Begin::Reloaded
                if lifecycle::recovery(&run, runtime.manifest.reconcile_op().is_some())
                    == lifecycle::Recovery::Reconcile =>
            {
                Start::Reconcile
            }
            Begin::Reloaded => Start::Resume,
        };
        let actor = RunActor::new(
            run,
            self.runtime.clone(),
            self.deps.clone(),
            ctx.address(),
            start,
            ownership,
        );
        self.runs
            .insert(job_id, self.deps.arbiters.start_actor(actor));
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
            Ok((_, Some(run))) if run.state == RunState::Queued => {
                if !self.is_waiting(&run.job_id) {
                    self.queue.push_back(self.waiting_of(&run));
                }
                self.pump(ctx);
            }
            Ok((_, Some(run))) if run.needs_work() && !self.runs.contains_key(&run.job_id) => {
                self.start_run(run, None, ctx);
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
        if self.retired
            && self.runs.is_empty()
            && self.queue.is_empty()
            && self.granting.is_empty()
            && self.admitting.is_empty()
        {
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

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if self.retired {
            // The pool was deleted and its last calls (releases after a forced delete) are made:
            // its breaker, rate budget and tokens, which those calls may have brought back, go.
            // (Were the name registered again meanwhile, its new pool only starts afresh.)
            self.deps.adapter.forget_pool(&self.runtime.current().name);
        }
    }
}

impl Handler<Admit> for PoolActor {
    type Result = ();

    fn handle(&mut self, msg: Admit, ctx: &mut Self::Context) {
        if self.is_waiting(&msg.run.job_id) || self.runs.contains_key(&msg.run.job_id) {
            // A repeat of a run this pool holds or is storing right now (a client's retry): it
            // takes no slot or place of its own, and is answered with the stored run once the
            // first one's write has landed.
            let store = self.deps.store.clone();
            let job_id = msg.run.job_id.clone();
            let fut = async move { store.get_run(&job_id).await };
            ctx.spawn(
                fut.into_actor(self)
                    .map(move |stored, _actor, ctx| match stored {
                        Ok(Some(existing)) => {
                            let _ = msg.reply.send(Ok(Admitted::Existing(existing)));
                        }
                        Ok(None) => {
                            ctx.notify_later(msg, CANCEL_RETRY);
                        }
                        Err(e) => {
                            let _ = msg.reply.send(Err(AdmitError::Store(e)));
                        }
                    }),
            );
            return;
        }
        let Admit {
            mut run,
            deadline_seconds,
            sealed,
            job,
            reply,
        } = msg;
        let live = self.live_stats();
        if !live.admits_one_more() {
            let _ = reply.send(Err(AdmitError::Saturated {
                queued: live.queued,
            }));
            return;
        }
        let runtime = self.runtime.current();
        run.manifest_revision = runtime.revision;
        run.deadline_at = deadline_seconds
            .or(runtime.manifest.polling.deadline_seconds)
            .map(|seconds| {
                let millis = i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
                run.created_at.saturating_add(millis)
            });
        let mut events = vec![NewEvent {
            job_id: run.job_id.clone(),
            at: run.created_at,
            kind: "transition".to_owned(),
            from: None,
            to: Some(RunState::Queued),
            detail: Some(format!("accepted for pool {}", run.pool)),
        }];
        let tenant = runtime.manifest.fair_share.tenant_of(&run.labels);
        let starts = self.slots.len() < self.max_in_flight()
            && runtime
                .manifest
                .fair_share
                .admits(self.slots.held_by(&tenant))
            && self.queue.is_empty()
            && self.admitting.is_empty()
            && !self.deps.activity.is_draining();
        let job_id = run.job_id.clone();
        if starts {
            // The slot is taken now; the run is stored already holding it.
            let granted = lifecycle::apply(
                &run,
                Input::SlotGranted,
                &policy_of(&runtime),
                Env {
                    now: run.created_at,
                    jitter: fastrand::f64(),
                },
            );
            run = granted.run;
            events.extend(granted.events);
            self.slots.insert(job_id.clone(), tenant);
            self.granting.insert(job_id.clone());
        } else {
            self.admitting.insert(job_id.clone());
        }
        let store = self.deps.store.clone();
        let stored = run.clone();
        self.deps.activity.enter();
        let fut = async move { store.insert_run(stored, Some(sealed), events).await };
        ctx.spawn(fut.into_actor(self).map(move |inserted, actor, ctx| {
            actor.deps.activity.leave();
            actor.granting.remove(&job_id);
            actor.admitting.remove(&job_id);
            let answer = match inserted {
                Ok(crate::store::InsertOutcome::Inserted(records)) => {
                    actor.deps.bus.publish(records, &run);
                    if starts {
                        actor.start_run(run.clone(), Some(job), ctx);
                    } else {
                        actor.queue.push_back(actor.waiting_of(&run));
                    }
                    Ok(Admitted::Created(run))
                }
                Ok(crate::store::InsertOutcome::Existing(existing)) => {
                    Ok(Admitted::Existing(existing))
                }
                Err(e) => Err(AdmitError::Store(e)),
            };
            if starts && (answer.is_err() || matches!(answer, Ok(Admitted::Existing(_)))) {
                // Nothing new was stored: the slot taken for it is free again.
                actor.slots.remove(&job_id);
            }
            let _ = reply.send(answer);
            actor.pump(ctx);
        }));
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
            if self.runs.contains_key(&run.job_id) || self.is_waiting(&run.job_id) {
                continue;
            }
            if run.state == RunState::Queued {
                self.queue.push_back(self.waiting_of(&run));
            } else {
                // Dispatching, pending, running: they hold a slot already (recomputed here from
                // the store); finished runs with a release due hold none.
                self.start_run(run, None, ctx);
            }
        }
        self.pump(ctx);
    }
}

impl Handler<SlotFreed> for PoolActor {
    type Result = ();

    fn handle(&mut self, msg: SlotFreed, ctx: &mut Self::Context) {
        self.slots.remove(&msg.0);
        if self.queue.is_empty() {
            self.maybe_stop(ctx);
        } else if !self.pump_due {
            // Slots come free in bursts (one group commit finishes many runs): grant after the
            // messages already waiting, so that one read loads every run granted in the burst.
            self.pump_due = true;
            ctx.address().do_send(Pump);
        }
    }
}

impl Handler<Pump> for PoolActor {
    type Result = ();

    fn handle(&mut self, _msg: Pump, ctx: &mut Self::Context) {
        self.pump_due = false;
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
        MessageResult(self.live_stats())
    }
}

impl Handler<QueuePlace> for PoolActor {
    type Result = Option<usize>;

    fn handle(&mut self, msg: QueuePlace, _ctx: &mut Self::Context) -> Option<usize> {
        self.queue.position(&msg.0)
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
        if self.granting.contains(&msg.job_id) || self.admitting.contains(&msg.job_id) {
            // Its actor starts (or it joins the queue) as soon as its record is loaded or
            // stored: ask again then.
            ctx.notify_later(msg, CANCEL_RETRY);
            return;
        }
        if let Some(waiting) = self.queue.remove(&msg.job_id) {
            self.end_waiting(waiting, Unqueue::Cancel, Some(msg.reply), ctx);
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

impl PoolActor {
    /// Ends a run taken out of the queue (cancelled, or past its deadline) from its stored
    /// record, and answers `reply` when a caller waits. A step that cannot be committed puts
    /// the run back at the head of the queue.
    fn end_waiting(
        &mut self,
        waiting: Waiting,
        why: Unqueue,
        reply: Option<oneshot::Sender<Result<RunRecord, CancelError>>>,
        ctx: &mut Context<Self>,
    ) {
        let deps = self.deps.clone();
        let policy = policy_of(&self.runtime.current());
        deps.activity.enter();
        let fut = async move {
            let outcome = end_queued(&deps, &waiting.job_id, &policy, why).await;
            deps.activity.leave();
            let (answer, unqueued) = match outcome {
                Ok(Some(run)) => (Ok(run), None),
                Ok(None) => (Err(CancelError::NotLive), None),
                Err(e) => {
                    tracing::error!(job_id = %waiting.job_id, error = %e, "cannot commit the end of a queued run");
                    (Err(CancelError::Store), Some(waiting))
                }
            };
            if let Some(reply) = reply {
                let _ = reply.send(answer);
            }
            unqueued
        };
        ctx.spawn(fut.into_actor(self).map(|unqueued, actor, ctx| {
            // A step that could not be committed leaves the run queued.
            if let Some(waiting) = unqueued {
                actor.queue.push_front(waiting);
            }
            actor.maybe_stop(ctx);
        }));
    }
}

/// Commits the end of a queued run (its cancellation, or its failure at its deadline); `None`
/// when the run is no longer queued. The store drops its job body in the same commit.
async fn end_queued(
    deps: &Deps,
    job_id: &JobId,
    policy: &lifecycle::Policy,
    why: Unqueue,
) -> Result<Option<RunRecord>, crate::store::StoreError> {
    let Some(run) = deps.store.get_run(job_id).await? else {
        return Ok(None);
    };
    if run.state != RunState::Queued {
        return Ok(None);
    }
    let env = Env {
        now: now_millis(),
        jitter: fastrand::f64(),
    };
    let step = match why {
        Unqueue::Cancel => lifecycle::request_cancel(&run, policy, env),
        Unqueue::Deadline => Some(lifecycle::apply(&run, Input::DeadlinePassed, policy, env)),
    };
    let Some(step) = step else {
        return Ok(None);
    };
    match deps.store.commit(step.run.clone(), step.events).await {
        Ok(records) => {
            deps.bus.publish(records, &step.run);
            Ok(Some(step.run.committed()))
        }
        // Changed meanwhile by someone else: the stored state stands.
        Err(crate::store::StoreError::Stale { .. }) => Ok(None),
        Err(e) => Err(e),
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

#[cfg(test)]
mod tests {
    use super::LiveStats;

    fn stats(
        queued: usize,
        in_flight: usize,
        max_in_flight: usize,
        max_queued: usize,
    ) -> LiveStats {
        LiveStats {
            queued,
            in_flight,
            max_in_flight,
            max_queued,
            ..LiveStats::default()
        }
    }

    #[test]
    fn max_queued_bounds_only_the_runs_left_waiting() {
        assert!(
            stats(0, 0, 1, 0).admits_one_more(),
            "a free slot takes a run"
        );
        assert!(stats(0, 1, 2, 0).admits_one_more());
        assert!(
            !stats(0, 2, 2, 0).admits_one_more(),
            "no slot, nothing may wait"
        );
        assert!(stats(1, 2, 2, 2).admits_one_more());
        assert!(!stats(2, 2, 2, 2).admits_one_more());
        // While draining, runs wait even with free slots: they count against maxQueued.
        assert!(!stats(3, 0, 2, 1).admits_one_more());
    }
}
