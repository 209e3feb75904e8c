//! RunActor: drives one run through its lifecycle, one committed step at a time.
//!
//! The actor loop is: ask [`lifecycle::next_action`] what is due; wait, call the scheduler, or
//! apply a cancel or deadline; commit the resulting step; publish it; repeat. Only one call or
//! commit is in flight at a time (`busy`), so steps never interleave. A cancel that arrives while
//! busy is parked and applied as soon as the current step is committed.

use super::pool::{PoolActor, RunFinished, SlotFreed};
use super::{Deps, Ownership, SharedRuntime, policy_of};
use crate::crypto::binding;
use crate::domain::run::{RunRecord, now_millis};
use crate::lifecycle::{self, Action, CallOutcome, Env, Input, Reconciled, Step};
use crate::manifest::{OpKind, RenderInput};
use actix::prelude::*;
use serde_json::Value;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long to wait before retrying a commit that failed (the database was unreachable).
const COMMIT_RETRY: Duration = Duration::from_secs(1);

/// Asks a run to cancel; answers with the run once `cancelRequested` is committed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CancelRun(pub oneshot::Sender<RunRecord>);

/// The actor of one live run.
pub struct RunActor {
    run: RunRecord,
    runtime: SharedRuntime,
    deps: Deps,
    pool: Addr<PoolActor>,
    /// A call or a commit is in flight; `drive` does nothing until it lands.
    busy: bool,
    /// The pending wake-up, cancelled when something else wakes the run first.
    timer: Option<SpawnHandle>,
    /// True while this run counts against the pool's `maxInFlight`.
    holds_slot: bool,
    /// True when the pool granted a slot to a queued run that must now start dispatching.
    granted: bool,
    /// Callers waiting for a cancel to be committed.
    cancel_waiters: Vec<oneshot::Sender<RunRecord>>,
    /// The decrypted job body, loaded lazily for dispatch and dropped after acceptance.
    job: Option<Value>,
    /// Reloaded in `dispatching` after a restart: ask the scheduler (the manifest's lookup, or
    /// a poll of `run.dispatchId`) before dispatching again.
    reconcile: bool,
    /// Reconciling calls in a row that gave no clear answer.
    reconcile_failures: u32,
    /// The dispatch attempt for which asking is over (the scheduler does not know the job, or
    /// gave no clear answer too often): that attempt is sent.
    asked_attempt: Option<i64>,
    /// This actor's claim on the run, released when the actor is dropped.
    _ownership: Ownership,
}

impl RunActor {
    /// A run actor for `run`. `granted` means the pool just gave a queued run a slot;
    /// `reconcile` that the run was reloaded in `dispatching` and the scheduler must be asked
    /// about it before dispatching again.
    pub fn new(
        run: RunRecord,
        runtime: SharedRuntime,
        deps: Deps,
        pool: Addr<PoolActor>,
        granted: bool,
        reconcile: bool,
        ownership: Ownership,
    ) -> Self {
        let holds_slot = granted || run.state.holds_slot();
        Self {
            run,
            runtime,
            deps,
            pool,
            busy: false,
            timer: None,
            holds_slot,
            granted,
            cancel_waiters: Vec::new(),
            job: None,
            reconcile,
            reconcile_failures: 0,
            asked_attempt: None,
            _ownership: ownership,
        }
    }

    fn env() -> Env {
        Env {
            now: now_millis(),
            jitter: fastrand::f64(),
        }
    }

    fn policy(&self) -> lifecycle::Policy {
        policy_of(&self.runtime.current())
    }

    /// Decides and starts the next thing due.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        if !self.pool.connected() {
            // The pool actor died and a new one took over: leave the run to it.
            ctx.stop();
            return;
        }
        if let Some(handle) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        if !self.cancel_waiters.is_empty() {
            let env = Self::env();
            match lifecycle::request_cancel(&self.run, &self.policy(), env) {
                Some(step) => return self.commit(step, ctx),
                None => self.answer_cancel_waiters(),
            }
        }
        if self.deps.activity.is_draining() {
            // Shutting down: start nothing new; the next start resumes from the store.
            return;
        }
        let now = now_millis();
        match lifecycle::next_action(&self.run, now) {
            Action::WaitForSlot => {
                // Only the pool grants slots; a queued run has no actor of its own.
                ctx.stop();
            }
            Action::WaitUntil(at) => {
                let delay = Duration::from_millis(u64::try_from(at - now).unwrap_or(0));
                self.timer = Some(ctx.run_later(delay, |actor, ctx| {
                    actor.timer = None;
                    actor.drive(ctx);
                }));
            }
            Action::Call(OpKind::Dispatch) if self.must_ask() => self.reconcile(ctx),
            Action::Call(op) => self.call(op, ctx),
            Action::Cancel => {
                let step = lifecycle::apply(&self.run, Input::Cancel, &self.policy(), Self::env());
                self.commit(step, ctx);
            }
            Action::Expire => {
                let step = lifecycle::apply(
                    &self.run,
                    Input::DeadlinePassed,
                    &self.policy(),
                    Self::env(),
                );
                self.commit(step, ctx);
            }
            Action::Finished => {
                self.free_slot();
                self.drop_job_body();
                self.pool.do_send(RunFinished(self.run.job_id.clone()));
                ctx.stop();
            }
        }
    }

    /// True when the dispatch due must wait for the scheduler to say whether it has the job:
    /// after a restart in `dispatching`, or after an attempt of the same dispatch id that may
    /// have reached the scheduler (a timeout, a 5xx), when the manifest can ask at all.
    fn must_ask(&self) -> bool {
        (self.reconcile || lifecycle::dispatch_may_exist(&self.run))
            && self.asked_attempt != Some(self.run.attempts.dispatch)
            && self.runtime.current().manifest.reconcile_op().is_some()
    }

    /// Asks the scheduler about `run.dispatchId` (the manifest's lookup, or a poll) to learn
    /// whether an earlier dispatch attempt created the job: re-attach to it if so, dispatch if
    /// not.
    fn reconcile(&mut self, ctx: &mut Context<Self>) {
        let runtime = self.runtime.current();
        let Some(op) = runtime.manifest.reconcile_op() else {
            self.asked_attempt = Some(self.run.attempts.dispatch);
            return self.drive(ctx);
        };
        self.busy = true;
        self.deps.activity.enter();
        let adapter = self.deps.adapter.clone();
        let input = render_input(&self.run, Value::Null, &runtime.name);
        let revision = runtime.revision;
        let fut = async move { adapter.call(&runtime, op, &input).await };
        ctx.spawn(fut.into_actor(self).map(move |outcome, actor, ctx| {
            actor.busy = false;
            actor.deps.activity.leave();
            let policy = actor.policy();
            match lifecycle::reconciled(&outcome) {
                Reconciled::Known => {
                    let restarted = actor.reconcile;
                    actor.reconcile = false;
                    actor.reconcile_failures = 0;
                    let mut step =
                        lifecycle::reattach(&actor.run, outcome, restarted, &policy, Self::env());
                    step.run.manifest_revision = revision;
                    actor.commit(step, ctx);
                }
                Reconciled::Unknown => {
                    actor.reconcile = false;
                    actor.reconcile_failures = 0;
                    actor.asked_attempt = Some(actor.run.attempts.dispatch);
                    actor.drive(ctx);
                }
                Reconciled::Unsure => {
                    let env = Self::env();
                    actor.run.next_at = Some(match outcome {
                        CallOutcome::Deferred { until } => until,
                        _ => {
                            actor.reconcile_failures += 1;
                            if actor.reconcile_failures >= policy.max_attempts {
                                // No clear answer: dispatch again under the same id and rely on
                                // the scheduler's idempotency (alreadyExists, a fixed name, a key).
                                actor.reconcile = false;
                                actor.reconcile_failures = 0;
                                actor.asked_attempt = Some(actor.run.attempts.dispatch);
                            }
                            let delay = crate::backoff::delay_ms(
                                actor.reconcile_failures.max(1),
                                policy.initial_backoff_ms,
                                policy.max_backoff_ms,
                                env.jitter,
                                None,
                            );
                            env.now + i64::try_from(delay).unwrap_or(i64::MAX)
                        }
                    });
                    actor.drive(ctx);
                }
            }
        }));
    }

    fn call(&mut self, op: OpKind, ctx: &mut Context<Self>) {
        self.busy = true;
        self.deps.activity.enter();
        let runtime = self.runtime.current();
        let deps = self.deps.clone();
        let run = self.run.clone();
        let cached_job = self.job.clone();
        let fut = async move {
            let job = match (op, cached_job) {
                (OpKind::Dispatch, None) => load_job(&deps, &run).await,
                (_, cached) => cached,
            };
            let input = render_input(&run, job.clone().unwrap_or(Value::Null), &runtime.name);
            let outcome = deps.adapter.call(&runtime, op, &input).await;
            (outcome, job, runtime.revision)
        };
        ctx.spawn(
            fut.into_actor(self)
                .map(move |(outcome, job, revision), actor, ctx| {
                    actor.busy = false;
                    actor.deps.activity.leave();
                    actor.job = job;
                    if let CallOutcome::Deferred { until } = outcome {
                        // Held back by the circuit breaker: nothing happened, nothing to commit.
                        actor.run.next_at = Some(until);
                        return actor.drive(ctx);
                    }
                    let policy = actor.policy();
                    let mut step = lifecycle::apply(
                        &actor.run,
                        Input::Called(op, outcome),
                        &policy,
                        Self::env(),
                    );
                    step.run.manifest_revision = revision;
                    if op == OpKind::Dispatch
                        && !step.run.state.is_final()
                        && step.run.state != actor.run.state
                    {
                        // Accepted: the body is not needed again unless the job is lost.
                        actor.job = None;
                    }
                    actor.commit(step, ctx);
                }),
        );
    }

    /// Commits a step, then adopts and publishes it, then drives on.
    fn commit(&mut self, step: Step, ctx: &mut Context<Self>) {
        self.busy = true;
        self.deps.activity.enter();
        let store = self.deps.store.clone();
        let Step { run, events } = step;
        let pending = run.clone();
        let fut = async move { store.commit(pending, events).await };
        ctx.spawn(fut.into_actor(self).map(move |result, actor, ctx| {
            actor.busy = false;
            actor.deps.activity.leave();
            match result {
                Ok(records) => {
                    actor.run = run;
                    actor.deps.bus.publish(records, &actor.run);
                    if actor.run.cancel_requested || actor.run.state.is_final() {
                        actor.answer_cancel_waiters();
                    }
                    if !actor.run.state.holds_slot() {
                        actor.free_slot();
                    }
                    actor.drive(ctx);
                }
                Err(e) => {
                    tracing::error!(job_id = %actor.run.job_id, error = %e, "cannot commit a run step; retrying");
                    ctx.run_later(COMMIT_RETRY, |actor, ctx| actor.drive(ctx));
                }
            }
        }));
    }

    /// A finished run that needs no more calls does not need its job body (which carries
    /// short-lived credentials) any more: drop it from the store.
    fn drop_job_body(&mut self) {
        self.job = None;
        let store = self.deps.store.clone();
        let job_id = self.run.job_id.clone();
        // Detached from the actor, which stops right away.
        actix::spawn(async move {
            if let Err(e) = store.clear_job_sealed(&job_id).await {
                tracing::warn!(job_id = %job_id, error = %e, "cannot drop a finished run's job body");
            }
        });
    }

    fn answer_cancel_waiters(&mut self) {
        for waiter in self.cancel_waiters.drain(..) {
            let _ = waiter.send(self.run.clone());
        }
    }

    fn free_slot(&mut self) {
        if self.holds_slot {
            self.holds_slot = false;
            self.pool.do_send(SlotFreed(self.run.job_id.clone()));
        }
    }
}

/// Opens the run's sealed job body. A missing or unreadable body dispatches `null`: the
/// render then fails or sends what the manifest makes of it, and the run's events say so.
async fn load_job(deps: &Deps, run: &RunRecord) -> Option<Value> {
    let sealed = match deps.store.get_job_sealed(&run.job_id).await {
        Ok(sealed) => sealed?,
        Err(e) => {
            tracing::error!(job_id = %run.job_id, error = %e, "cannot read the job body");
            return None;
        }
    };
    let clear = match deps
        .sealer
        .open(&sealed, &binding::run_job(run.job_id.as_str()))
    {
        Ok(clear) => clear,
        Err(e) => {
            tracing::error!(job_id = %run.job_id, error = %e, "cannot open the job body");
            return None;
        }
    };
    serde_json::from_slice(&clear).ok()
}

/// The template variables of one call of `run`.
pub fn render_input(
    run: &RunRecord,
    job: Value,
    pool: &crate::domain::ids::PoolName,
) -> RenderInput {
    RenderInput {
        job_id: run.job_id.to_string(),
        kind: run.kind.clone(),
        job: if job.is_null() {
            Value::Object(serde_json::Map::new())
        } else {
            job
        },
        labels: run.labels.clone(),
        dispatch_id: run.dispatch_id.clone(),
        attempt: u32::try_from(run.attempts.dispatch.max(1)).unwrap_or(u32::MAX),
        captures: run.captures.clone(),
        pool_name: pool.to_string(),
    }
}

impl Actor for RunActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.granted {
            self.granted = false;
            let step = lifecycle::apply(&self.run, Input::SlotGranted, &self.policy(), Self::env());
            self.commit(step, ctx);
        } else {
            self.drive(ctx);
        }
    }
}

impl Handler<CancelRun> for RunActor {
    type Result = ();

    fn handle(&mut self, msg: CancelRun, ctx: &mut Self::Context) {
        if self.run.state.is_final() || self.run.cancel_requested {
            let _ = msg.0.send(self.run.clone());
            return;
        }
        self.cancel_waiters.push(msg.0);
        self.drive(ctx);
    }
}

/// Test-only: makes the actor die as if a handler had panicked.
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

#[cfg(test)]
impl Handler<Crash> for RunActor {
    type Result = ();

    fn handle(&mut self, _msg: Crash, _ctx: &mut Self::Context) {
        panic!("a run actor crashes on purpose");
    }
}
