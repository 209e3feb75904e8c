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
use crate::store::StoreError;
use actix::prelude::*;
use serde_json::Value;
use std::time::Duration;
use tokio::sync::oneshot;

/// The first wait before retrying a commit that failed or a job body that could not be read
/// (the database was unreachable); it doubles up to [`STORE_RETRY_MAX`].
const STORE_RETRY: Duration = Duration::from_millis(250);

/// The longest wait between two tries at the store.
const STORE_RETRY_MAX: Duration = Duration::from_secs(10);

/// Asks a run to cancel; answers with the run once `cancelRequested` is committed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CancelRun(pub oneshot::Sender<RunRecord>);

/// How a run actor begins.
#[derive(Debug)]
pub enum Start {
    /// The pool just gave this queued run a slot: commit that, then dispatch. It comes with
    /// its sealed job body when the pool read it along with the run, so the dispatch opens it
    /// instead of reading it again.
    Granted(Option<Vec<u8>>),
    /// Reloaded in `dispatching` (after a restart or a lost commit race): ask the scheduler
    /// whether an earlier attempt created the job before dispatching again.
    Reconcile,
    /// Reloaded in any other state: drive it on from there.
    Resume,
    /// A new run, stored straight in `dispatching` a moment ago, with its clear job body: the
    /// dispatch uses it instead of reading the body back, and drops it once accepted.
    New(Value),
}

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
    /// The job body for the dispatch, when the actor has it at hand (clear for a new run,
    /// sealed as the pool read it for a granted one; otherwise read from the store when the
    /// dispatch is due), dropped after acceptance.
    job: Option<Body>,
    /// Reloaded in `dispatching` after a restart: ask the scheduler (the manifest's lookup, or
    /// a poll of `run.dispatchId`) before dispatching again.
    reconcile: bool,
    /// Reconciling calls in a row that gave no clear answer.
    reconcile_failures: u32,
    /// The dispatch attempt for which asking is over (the scheduler does not know the job, or
    /// gave no clear answer too often): that attempt is sent.
    asked_attempt: Option<i64>,
    /// Failed tries at the store in a row (a commit, or reading the job body), for backoff.
    store_failures: u32,
    /// This actor's claim on the run, released when the actor is dropped.
    _ownership: Ownership,
}

impl RunActor {
    /// A run actor for `run`, started as `start` says.
    pub fn new(
        run: RunRecord,
        runtime: SharedRuntime,
        deps: Deps,
        pool: Addr<PoolActor>,
        start: Start,
        ownership: Ownership,
    ) -> Self {
        let granted = matches!(start, Start::Granted(_));
        let holds_slot = granted || run.state.holds_slot();
        let (reconcile, job) = match start {
            Start::Reconcile => (true, None),
            Start::New(job) => (false, Some(Body::Clear(job))),
            Start::Granted(sealed) => (false, sealed.map(Body::Sealed)),
            Start::Resume => (false, None),
        };
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
            job,
            reconcile,
            reconcile_failures: 0,
            asked_attempt: None,
            store_failures: 0,
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
                // The final commit dropped the stored body; drop the decrypted copy too.
                self.job = None;
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
                    if let CallOutcome::Deferred { until } = outcome {
                        // Held back by the circuit breaker: nothing was asked.
                        actor.run.next_at = Some(until);
                        return actor.drive(ctx);
                    }
                    actor.reconcile_failures += 1;
                    let failures = actor.reconcile_failures;
                    if failures >= policy.max_attempts {
                        // No clear answer: dispatch again under the same id and rely on the
                        // scheduler's idempotency (alreadyExists, a fixed name, a key).
                        actor.reconcile = false;
                        actor.reconcile_failures = 0;
                        actor.asked_attempt = Some(actor.run.attempts.dispatch);
                    }
                    let step = lifecycle::reconcile_unsure(
                        &actor.run,
                        &outcome,
                        failures,
                        &policy,
                        Self::env(),
                    );
                    actor.commit(step, ctx);
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
        let at_hand = if op == OpKind::Dispatch {
            self.job.take()
        } else {
            None
        };
        let fut = async move {
            let job = match (op, at_hand) {
                (OpKind::Dispatch, Some(Body::Clear(job))) => Some(job),
                (OpKind::Dispatch, Some(Body::Sealed(sealed))) => {
                    match open_job(&deps, &run, &sealed) {
                        Ok(job) => Some(job),
                        Err(e) => return Called::NoJob(e),
                    }
                }
                (OpKind::Dispatch, None) => match load_job(&deps, &run).await {
                    Ok(job) => Some(job),
                    // Never dispatch anything but the submitted job.
                    Err(e) => return Called::NoJob(e),
                },
                (_, _) => None,
            };
            let input = render_input(&run, job.clone().unwrap_or(Value::Null), &runtime.name);
            let mut outcome = deps.adapter.call(&runtime, op, &input).await;
            if job.is_none() && carries_new_text(&outcome, &run) {
                // The adapter could redact only the pool's secrets here: the job body is opened
                // for dispatch alone. Text from the scheduler can echo the job's values (a
                // failing job that prints its token), so open the body now to redact them too.
                outcome = redact_job_values(&deps, &run, &runtime.secrets, outcome).await;
            }
            Called::Outcome(outcome, job, runtime.revision)
        };
        ctx.spawn(fut.into_actor(self).map(move |called, actor, ctx| {
            actor.busy = false;
            actor.deps.activity.leave();
            let (outcome, job, revision) = match called {
                Called::Outcome(outcome, job, revision) => (outcome, job, revision),
                Called::NoJob(JobBodyError::Store(e)) => {
                    // The store could not be read now: nothing was sent; try again later.
                    actor.store_failures = actor.store_failures.saturating_add(1);
                    let delay = store_retry_delay(actor.store_failures);
                    tracing::warn!(job_id = %actor.run.job_id, error = %e, "cannot read the job body; retrying");
                    actor.run.next_at = Some(now_millis().saturating_add(millis(delay)));
                    return actor.drive(ctx);
                }
                Called::NoJob(JobBodyError::Unreadable(reason)) => {
                    tracing::error!(job_id = %actor.run.job_id, reason, "the job body cannot be read; the run fails and nothing is sent");
                    let step = lifecycle::apply(
                        &actor.run,
                        Input::JobUnreadable(reason.to_owned()),
                        &actor.policy(),
                        Self::env(),
                    );
                    return actor.commit(step, ctx);
                }
            };
            actor.store_failures = 0;
            actor.job = job.map(Body::Clear);
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
            if !lifecycle::needs_commit(&actor.run, &step) {
                // A poll that saw nothing new: its bookkeeping stays in memory (same version).
                actor.run = step.run;
                return actor.drive(ctx);
            }
            actor.commit(step, ctx);
        }));
    }

    /// Commits a step, then adopts and publishes it, then drives on.
    ///
    /// A commit that fails is tried again with the same step (after a backoff) until it lands:
    /// the step may record a call's outcome (an accepted dispatch, say), and driving on from the
    /// old state would repeat that call.
    fn commit(&mut self, step: Step, ctx: &mut Context<Self>) {
        self.busy = true;
        self.deps.activity.enter();
        let store = self.deps.store.clone();
        let retry = step.clone();
        let Step { run, events } = step;
        let pending = run.clone();
        let fut = async move { store.commit(pending, events).await };
        ctx.spawn(fut.into_actor(self).map(move |result, actor, ctx| {
            actor.deps.activity.leave();
            match result {
                Ok(records) => {
                    actor.busy = false;
                    actor.store_failures = 0;
                    actor.run = run.committed();
                    actor.deps.bus.publish(records, &actor.run);
                    if actor.run.cancel_requested || actor.run.state.is_final() {
                        actor.answer_cancel_waiters();
                    }
                    if !actor.run.state.holds_slot() {
                        actor.free_slot();
                    }
                    actor.drive(ctx);
                }
                Err(e @ crate::store::StoreError::Stale { .. }) => {
                    // Someone else changed the run since this actor read it: never overwrite
                    // that. Stopping lets the pool restart the run from the stored state.
                    tracing::warn!(job_id = %actor.run.job_id, error = %e, "a run step lost to a newer stored state; reloading the run");
                    ctx.stop();
                }
                Err(e) => {
                    // Still busy: nothing else may start before this step is committed.
                    actor.store_failures = actor.store_failures.saturating_add(1);
                    let delay = store_retry_delay(actor.store_failures);
                    tracing::error!(job_id = %actor.run.job_id, error = %e, retry_in_ms = millis(delay), "cannot commit a run step; retrying the same step");
                    ctx.run_later(delay, move |actor, ctx| actor.commit(retry, ctx));
                }
            }
        }));
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

/// A run's job body as its actor holds it between start and dispatch.
enum Body {
    /// Decrypted: a new run's body as submitted.
    Clear(Value),
    /// Sealed, as read from the store along with the run.
    Sealed(Vec<u8>),
}

/// What a call of the run actor brought back.
enum Called {
    /// The call was made (or deferred): its outcome, the job body used, the manifest revision.
    Outcome(CallOutcome, Option<Value>, i64),
    /// A dispatch was due but the job body could not be had: nothing was sent.
    NoJob(JobBodyError),
}

/// Why a run's job body could not be had.
#[derive(Debug, thiserror::Error)]
enum JobBodyError {
    /// The store could not be read now; a later try may succeed.
    #[error("the job body cannot be read now")]
    Store(#[from] StoreError),
    /// The body is gone or cannot be opened; it never will be.
    #[error("{0}")]
    Unreadable(&'static str),
}

/// Opens the run's sealed job body.
///
/// # Errors
/// [`JobBodyError::Store`] when the store cannot be read now, [`JobBodyError::Unreadable`] when
/// the body is gone, cannot be decrypted with the configured keys, or is not JSON.
async fn load_job(deps: &Deps, run: &RunRecord) -> Result<Value, JobBodyError> {
    let sealed = deps
        .store
        .get_job_sealed(&run.job_id)
        .await?
        .ok_or(JobBodyError::Unreadable("the stored job body is gone"))?;
    open_job(deps, run, &sealed)
}

/// Opens a sealed job body of `run` as the store holds it.
///
/// # Errors
/// [`JobBodyError::Unreadable`] when it cannot be decrypted with the configured keys or is not
/// JSON.
fn open_job(deps: &Deps, run: &RunRecord, sealed: &[u8]) -> Result<Value, JobBodyError> {
    let clear = deps
        .sealer
        .open(sealed, &binding::run_job(run.job_id.as_str()))
        .map_err(|_| {
            JobBodyError::Unreadable(
                "the job body cannot be decrypted with the configured master keys",
            )
        })?;
    serde_json::from_slice(&clear)
        .map_err(|_| JobBodyError::Unreadable("the decrypted job body is not JSON"))
}

/// True when `outcome` carries scheduler text that the run does not show yet and that may echo
/// one of the job's values (an error, a message, a new detail or status word): the job body is
/// opened then, to redact them. A text too short to hold a job value, and a status word the
/// manifest or the protocol knows (its `statusMap`, the built-in words: vocabulary, not
/// output), never needs it.
fn carries_new_text(outcome: &CallOutcome, run: &RunRecord) -> bool {
    let may_echo = |text: &String| crate::redact::may_hold_job_value(text);
    match outcome {
        CallOutcome::Retryable { message, .. } | CallOutcome::Rejected { message } => {
            may_echo(message)
        }
        CallOutcome::Accepted { note, .. } => note.as_ref().is_some_and(may_echo),
        CallOutcome::Observed(o) => {
            o.error.as_ref().is_some_and(may_echo)
                || o.failure_cause.as_ref().is_some_and(may_echo)
                || o.detail
                    .as_ref()
                    .is_some_and(|d| run.detail.as_ref() != Some(d) && may_echo(d))
                || (o.unmapped
                    && o.scheduler_state
                        .as_ref()
                        .is_some_and(|w| run.scheduler_state.as_ref() != Some(w) && may_echo(w)))
        }
        CallOutcome::AlreadyExists | CallOutcome::NotFound | CallOutcome::Deferred { .. } => false,
    }
}

/// Redacts the job's values from the text of `outcome`. When the body cannot be opened, the
/// text is withheld rather than kept unredacted.
async fn redact_job_values(
    deps: &Deps,
    run: &RunRecord,
    secrets: &crate::domain::secrets::SecretBundle,
    outcome: CallOutcome,
) -> CallOutcome {
    match load_job(deps, run).await {
        Ok(job) => crate::redact::scrub_outcome(outcome, secrets, &job),
        Err(e) => {
            tracing::warn!(job_id = %run.job_id, error = %e, "cannot open the job body to redact a scheduler answer; its text is withheld");
            crate::redact::withhold_text(outcome)
        }
    }
}

/// The wait before try number `failures + 1` at the store.
fn store_retry_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    STORE_RETRY
        .saturating_mul(1 << exponent)
        .min(STORE_RETRY_MAX)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
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

#[cfg(test)]
mod tests {
    use super::carries_new_text;
    use crate::domain::ids::{JobId, PoolName};
    use crate::domain::run::RunRecord;
    use crate::lifecycle::CallOutcome;
    use crate::manifest::Observation;

    fn run() -> RunRecord {
        RunRecord::queued(JobId::parse("j").unwrap(), PoolName::parse("p").unwrap(), 1)
    }

    fn observed(observation: Observation) -> CallOutcome {
        CallOutcome::Observed(Box::new(observation))
    }

    #[test]
    fn only_new_text_long_enough_to_hold_a_job_value_needs_the_job_body() {
        let run = run();
        // Known vocabulary (statusMap or built-in words), however long: never the job's text.
        let known = Observation {
            scheduler_state: Some("Complete-and-released".to_owned()),
            ..Observation::default()
        };
        assert!(!carries_new_text(&observed(known), &run));
        // An unknown status word: it may echo the job when it is long enough to hold a value.
        let short = Observation {
            scheduler_state: Some("Wobbly".to_owned()),
            unmapped: true,
            ..Observation::default()
        };
        assert!(!carries_new_text(&observed(short), &run));
        let long = Observation {
            scheduler_state: Some("echo-of-a-job-value".to_owned()),
            unmapped: true,
            ..Observation::default()
        };
        assert!(carries_new_text(&observed(long.clone()), &run));
        // The same word again is not new.
        let mut seen = run.clone();
        seen.scheduler_state = long.scheduler_state.clone();
        assert!(!carries_new_text(&observed(long), &seen));
        // Errors and messages: by length.
        let error = Observation {
            error: Some("token s3cr3t-value leaked".to_owned()),
            ..Observation::default()
        };
        assert!(carries_new_text(&observed(error), &run));
        let terse = Observation {
            error: Some("failed".to_owned()),
            ..Observation::default()
        };
        assert!(!carries_new_text(&observed(terse), &run));
        let rejected = CallOutcome::Rejected {
            message: "HTTP 400: bad job s3cr3t-value".to_owned(),
        };
        assert!(carries_new_text(&rejected, &run));
    }
}
