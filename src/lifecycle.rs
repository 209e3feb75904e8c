//! The run lifecycle as a pure state machine: what is due next, and what an outcome changes.
//!
//! The RunActor is a thin shell around two functions. [`next_action`] reads a persisted
//! [`RunRecord`] and says what is due (a call now, a wait, nothing). [`apply`] takes the record
//! and one [`Input`] (a slot was granted, a call came back, a cancel, a deadline) and returns the
//! new record with the events to append. Neither does I/O, so every rule here is unit-tested, and
//! the same rules drive recovery after a restart: a reloaded record yields the same action.

use crate::backoff;
use crate::domain::run::{Attempts, Millis, NewEvent, ReleaseState, RunRecord};
use crate::domain::state::{MappedState, RunState};
use crate::manifest::{Observation, OpKind};
use serde_json::Map;

/// The knobs of a pool that the lifecycle needs (taken from its manifest).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Attempts per call before giving up (the first included).
    pub max_attempts: u32,
    /// First retry backoff.
    pub initial_backoff_ms: u64,
    /// Backoff cap.
    pub max_backoff_ms: u64,
    /// Base poll interval.
    pub poll_interval_ms: u64,
    /// Poll interval cap while nothing changes.
    pub poll_max_interval_ms: u64,
    /// Unreadable polls in a row before the run fails with `poll_errors`.
    pub max_consecutive_errors: u32,
    /// Re-dispatches allowed after the scheduler lost a job.
    pub lost_redispatch: u32,
    /// Whether the manifest has a release operation.
    pub has_release: bool,
}

/// The environment of one step: the time and a uniform random sample for jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Env {
    /// Now, in epoch milliseconds.
    pub now: Millis,
    /// A uniform sample from `[0, 1)`.
    pub jitter: f64,
}

/// What is due for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Queued: waiting for the pool to grant a slot.
    WaitForSlot,
    /// Nothing is due before this time.
    WaitUntil(Millis),
    /// Make this call now.
    Call(OpKind),
    /// Apply [`Input::Cancel`] now (a cancel was requested).
    Cancel,
    /// Apply [`Input::DeadlinePassed`] now.
    Expire,
    /// Nothing left to do: final, and released or not to be released.
    Finished,
}

/// How a call ended, as the adapter classified it.
#[derive(Debug, Clone, PartialEq)]
pub enum CallOutcome {
    /// Success. For dispatch: the captured values; for poll: the observation.
    Accepted {
        /// `capture.*` values (dispatch only).
        captures: Map<String, serde_json::Value>,
        /// A remark worth recording (for example a capture that failed).
        note: Option<String>,
    },
    /// Dispatch only: the scheduler already has the job (an `alreadyExists` status).
    AlreadyExists,
    /// Poll only: the mapped answer.
    Observed(Box<Observation>),
    /// Poll: a not-found answer meaning the job is lost. Release: gone, which counts as released.
    NotFound,
    /// A failure worth retrying (transport error, timeout, 408/425/429/5xx, unreadable poll).
    Retryable {
        /// Operator-facing reason, without secrets.
        message: String,
        /// The scheduler's `Retry-After` (or `RateLimit-Reset`), if any.
        retry_after_ms: Option<u64>,
        /// True when the answer could not be read (counts as a poll error rather than a retry).
        unreadable: bool,
    },
    /// A failure that retrying will not fix (a non-retryable status, a render error).
    Rejected {
        /// Operator-facing reason, without secrets.
        message: String,
    },
    /// The call was not made: the pool's circuit breaker holds calls back until `until`.
    /// Nothing is counted; the run simply tries again then (its deadline still applies).
    Deferred {
        /// When to try again.
        until: Millis,
    },
}

/// Something that happens to a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The pool granted a slot to a queued run.
    SlotGranted,
    /// A call came back.
    Called(OpKind, CallOutcome),
    /// A caller asked for cancellation (the flag is set by [`request_cancel`]).
    Cancel,
    /// The run's deadline passed.
    DeadlinePassed,
    /// The job body to dispatch cannot be had: it is gone or cannot be decrypted (the key that
    /// sealed it is no longer configured). Sending anything else would run a job that was never
    /// submitted, so the run fails with cause `job_unreadable` and nothing is sent.
    JobUnreadable(String),
}

/// The result of [`apply`]: the new record and the events to append with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The run after the input.
    pub run: RunRecord,
    /// Events to commit together with the run.
    pub events: Vec<NewEvent>,
}

/// Whether a step must be committed before the run goes on. A poll that saw nothing new (same
/// state, word, progress, detail, heartbeat; no event) changes only its own bookkeeping: the
/// poll counter, the stretched interval and the time of the next poll. Those stay in memory:
/// after a restart the stored interval and a fresh `resume_at` schedule the next poll just as
/// well, so a long job's steady polls cost no write. Everything else is committed.
pub fn needs_commit(before: &RunRecord, step: &Step) -> bool {
    if !step.events.is_empty() {
        return true;
    }
    let after = &step.run;
    let bookkeeping_only = RunRecord {
        attempts: Attempts {
            poll: before.attempts.poll,
            ..after.attempts
        },
        poll_interval_ms: before.poll_interval_ms,
        next_at: before.next_at,
        updated_at: before.updated_at,
        ..after.clone()
    };
    bookkeeping_only != *before
}

/// What is due for `run` at `now`.
pub fn next_action(run: &RunRecord, now: Millis) -> Action {
    if !run.state.is_final() {
        if run.cancel_requested && run.state != RunState::Queued {
            return Action::Cancel;
        }
        if run.deadline_at.is_some_and(|deadline| deadline <= now) {
            return Action::Expire;
        }
    }
    let op = match run.state {
        RunState::Queued => return Action::WaitForSlot,
        RunState::Dispatching => OpKind::Dispatch,
        RunState::Pending | RunState::Running => OpKind::Poll,
        RunState::Done | RunState::Failed | RunState::Cancelled => {
            if run.release == ReleaseState::Pending {
                OpKind::Release
            } else {
                return Action::Finished;
            }
        }
    };
    let mut due = run.next_at.unwrap_or(now);
    if let Some(deadline) = run.deadline_at.filter(|_| !run.state.is_final()) {
        due = due.min(deadline);
    }
    if due > now {
        Action::WaitUntil(due)
    } else {
        Action::Call(op)
    }
}

/// How an unfinished run reloaded at start is picked up again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Queued: back into the pool's queue.
    WaitForSlot,
    /// Caught in `dispatching` after a dispatch call may have gone out, with a way to ask the
    /// scheduler about `run.dispatchId` (the manifest's `lookup`, or a poll that needs no
    /// captured value): ask before dispatching again.
    Reconcile,
    /// Everything else: [`next_action`] decides (dispatch again under the same dispatch id, poll
    /// at the persisted time, release, or nothing).
    Resume,
}

/// The recovery decision for a reloaded run; `can_ask` says whether the manifest can ask the
/// scheduler about a job by its dispatch id (see `Manifest::reconcile_op`).
pub fn recovery(run: &RunRecord, can_ask: bool) -> Recovery {
    match run.state {
        RunState::Queued => Recovery::WaitForSlot,
        RunState::Dispatching if run.attempts.dispatch >= 1 && can_ask => Recovery::Reconcile,
        _ => Recovery::Resume,
    }
}

/// True when the dispatch due for `run` follows an attempt of the same dispatch id that failed
/// in a way that leaves open whether it reached the scheduler (a timeout, a cut connection, a
/// 5xx: every retryable outcome). Such a dispatch must be preceded by asking the scheduler
/// about the job, as after a restart, or a scheduler without idempotency runs the job twice.
///
/// The dispatch failures of the current dispatch id are counted in `poll_errors` (persisted),
/// which a new dispatch id (a lost-job re-dispatch) resets.
pub fn dispatch_may_exist(run: &RunRecord) -> bool {
    run.state == RunState::Dispatching && run.poll_errors > 0
}

/// What a reconciling poll says about a job whose dispatch may or may not have gone out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconciled {
    /// The scheduler has the job: re-attach and poll on.
    Known,
    /// The scheduler does not know it: dispatch.
    Unknown,
    /// No clear answer (a transport error, an unreadable answer): ask again later.
    Unsure,
}

/// Reads a reconciling poll's or lookup's outcome: an observation (poll) or a found job with
/// its captures (lookup) is known; a not-found answer unknown; anything else unsure.
pub fn reconciled(outcome: &CallOutcome) -> Reconciled {
    match outcome {
        CallOutcome::Observed(_) | CallOutcome::Accepted { .. } => Reconciled::Known,
        CallOutcome::NotFound => Reconciled::Unknown,
        _ => Reconciled::Unsure,
    }
}

/// Re-attaches a dispatching run to the job the scheduler already has, as a reconciling call
/// (`outcome`, read as [`Reconciled::Known`]) found it: the run goes on polling with the
/// captures a lookup read, or with the ones it has after a poll. `restarted` says whether the
/// question was asked after a restart or after an ambiguous dispatch failure (for the event).
pub fn reattach(
    run: &RunRecord,
    outcome: CallOutcome,
    restarted: bool,
    policy: &Policy,
    env: Env,
) -> Step {
    let why = if restarted {
        "recovered after a restart"
    } else {
        "an earlier dispatch attempt had reached the scheduler"
    };
    let detail = format!("{why}: the scheduler has the job; re-attached");
    let accepted = match outcome {
        CallOutcome::Accepted { captures, .. } => CallOutcome::Accepted {
            captures,
            note: Some(detail),
        },
        _ => CallOutcome::Accepted {
            captures: run.captures.clone(),
            note: Some(detail),
        },
    };
    apply(run, Input::Called(OpKind::Dispatch, accepted), policy, env)
}

/// A reconciling call (lookup or poll) that gave no clear answer, for the `failures`-th time in
/// a row: the run asks again after a backoff, or, once `policy.max_attempts` such answers came,
/// dispatches again under the same `run.dispatchId` (relying on the scheduler's idempotency).
/// Recorded as a `retry` event, so that the run's history shows every call.
pub fn reconcile_unsure(
    run: &RunRecord,
    outcome: &CallOutcome,
    failures: u32,
    policy: &Policy,
    env: Env,
) -> Step {
    let mut step = Step {
        run: run.clone(),
        events: Vec::new(),
    };
    step.run.updated_at = env.now;
    let retry_after_ms = match outcome {
        CallOutcome::Retryable { retry_after_ms, .. } => *retry_after_ms,
        _ => None,
    };
    let delay = retry_delay(policy, failures, env, retry_after_ms);
    step.run.next_at = Some(env.now.saturating_add(delay));
    let message = match outcome {
        CallOutcome::Retryable { message, .. } | CallOutcome::Rejected { message } => {
            message.as_str()
        }
        _ => "the answer said neither found nor not found",
    };
    let then = if failures >= policy.max_attempts {
        "no clear answer: dispatching again under the same id"
    } else {
        "asking again"
    };
    step.events.push(event(
        run,
        env,
        "retry",
        Some(format!(
            "asking the scheduler whether an earlier attempt created the job: {message}; {then} in {delay} ms"
        )),
    ));
    step
}

/// Spreads overdue calls of reloaded runs over `spread_ms`, so that a restart with many runs
/// does not burst the scheduler. A call that is not due yet keeps its time.
pub fn resume_at(run: &RunRecord, env: Env, spread_ms: u64) -> Option<Millis> {
    let due = run.next_at?;
    if due > env.now {
        return Some(due);
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_precision_loss,
        reason = "the product lies in [0, spread_ms]"
    )]
    let offset = (spread_ms as f64 * env.jitter.clamp(0.0, 1.0)) as i64;
    Some(env.now.saturating_add(offset))
}

/// Marks a run as cancel-requested. Returns `None` when the run is already final (nothing to
/// cancel). A queued run is cancelled at once; an in-flight run keeps its state until the actor
/// applies [`Input::Cancel`].
pub fn request_cancel(run: &RunRecord, policy: &Policy, env: Env) -> Option<Step> {
    if run.state.is_final() {
        return None;
    }
    if run.state == RunState::Queued {
        return Some(apply(run, Input::Cancel, policy, env));
    }
    let mut next = run.clone();
    next.cancel_requested = true;
    next.updated_at = env.now;
    let events = if run.cancel_requested {
        Vec::new()
    } else {
        vec![event(run, env, "cancel_requested", None)]
    };
    Some(Step { run: next, events })
}

/// Applies one input to a run.
pub fn apply(run: &RunRecord, input: Input, policy: &Policy, env: Env) -> Step {
    let mut step = Step {
        run: run.clone(),
        events: Vec::new(),
    };
    if let Input::Called(_, CallOutcome::Deferred { until }) = input {
        // Held back, not failed: no counter moves and nothing is recorded.
        step.run.next_at = Some(until.max(env.now));
        return step;
    }
    step.run.updated_at = env.now;
    match input {
        Input::SlotGranted => {
            if run.state == RunState::Queued {
                step.run.attempts.dispatch += 1;
                step.run.poll_errors = 0;
                step.run.next_at = Some(env.now);
                transition(&mut step, env, RunState::Dispatching, dispatch_detail(run));
            }
        }
        Input::Cancel => {
            if !run.state.is_final() {
                step.run.cancel_requested = true;
                step.run.failure_cause = Some("cancelled".to_owned());
                step.run.error = Some("cancelled on request".to_owned());
                let reached_scheduler = run.state != RunState::Queued;
                finish(
                    &mut step,
                    env,
                    RunState::Cancelled,
                    policy,
                    reached_scheduler,
                    None,
                );
            }
        }
        Input::DeadlinePassed => {
            if !run.state.is_final() {
                step.run.failure_cause = Some("deadline".to_owned());
                step.run.error = Some("the run's deadline passed before it finished".to_owned());
                let reached_scheduler = run.state != RunState::Queued;
                finish(
                    &mut step,
                    env,
                    RunState::Failed,
                    policy,
                    reached_scheduler,
                    None,
                );
            }
        }
        Input::JobUnreadable(reason) => {
            if run.state == RunState::Dispatching {
                step.run.failure_cause = Some("job_unreadable".to_owned());
                step.run.error = Some(format!(
                    "the job body cannot be read, so nothing was sent: {reason}"
                ));
                // An earlier attempt may have reached the scheduler (a retry after a timeout).
                let maybe_sent = run.attempts.dispatch > 1;
                finish(&mut step, env, RunState::Failed, policy, maybe_sent, None);
            }
        }
        Input::Called(OpKind::Dispatch, outcome) => apply_dispatch(&mut step, outcome, policy, env),
        Input::Called(OpKind::Poll, outcome) => apply_poll(&mut step, outcome, policy, env),
        Input::Called(OpKind::Release, outcome) => apply_release(&mut step, outcome, policy, env),
        // The failure log is fetched by the adapter on the way to a failed observation.
        Input::Called(OpKind::FailureLog, _) => {}
        // A lookup changes nothing by itself: [`reconciled`] reads it and [`reattach`] applies it.
        Input::Called(OpKind::Lookup, _) => {}
    }
    step
}

fn apply_dispatch(step: &mut Step, outcome: CallOutcome, policy: &Policy, env: Env) {
    if step.run.state != RunState::Dispatching {
        return;
    }
    match outcome {
        CallOutcome::Accepted { captures, note } => {
            step.run.captures = captures;
            accept(
                step,
                env,
                policy,
                note.unwrap_or_else(|| "the scheduler accepted the job".to_owned()),
            );
        }
        CallOutcome::AlreadyExists => {
            accept(
                step,
                env,
                policy,
                "the scheduler already had the job; re-attached".to_owned(),
            );
        }
        CallOutcome::Retryable {
            message,
            retry_after_ms,
            ..
        } => {
            let failures = step.run.poll_errors + 1;
            if failures >= i64::from(policy.max_attempts) {
                step.run.failure_cause = Some("dispatch_rejected".to_owned());
                step.run.error = Some(format!(
                    "dispatch failed after {failures} attempts; last error: {message}"
                ));
                // The job may exist at the scheduler (a timed-out call can still have created it).
                finish(step, env, RunState::Failed, policy, true, None);
            } else {
                step.run.poll_errors = failures;
                step.run.attempts.dispatch += 1;
                let delay = retry_delay(policy, to_u32(failures), env, retry_after_ms);
                step.run.next_at = Some(env.now.saturating_add(delay));
                step.events.push(event(
                    &step.run,
                    env,
                    "retry",
                    Some(format!(
                        "dispatch: {message}; attempt {} in {delay} ms",
                        step.run.attempts.dispatch
                    )),
                ));
            }
        }
        CallOutcome::Rejected { message } => {
            step.run.failure_cause = Some("dispatch_rejected".to_owned());
            step.run.error = Some(message);
            finish(step, env, RunState::Failed, policy, false, None);
        }
        CallOutcome::Deferred { .. } => {}
        CallOutcome::NotFound | CallOutcome::Observed(_) => {
            step.run.failure_cause = Some("dispatch_rejected".to_owned());
            step.run.error = Some("the scheduler answered the dispatch with not found".to_owned());
            finish(step, env, RunState::Failed, policy, false, None);
        }
    }
}

fn accept(step: &mut Step, env: Env, policy: &Policy, detail: String) {
    step.run.poll_errors = 0;
    step.run.dispatched_at = Some(env.now);
    step.run.poll_interval_ms = to_i64(policy.poll_interval_ms);
    // First poll right after acceptance.
    step.run.next_at = Some(env.now);
    transition(step, env, RunState::Running, Some(detail));
}

fn apply_poll(step: &mut Step, outcome: CallOutcome, policy: &Policy, env: Env) {
    if !matches!(step.run.state, RunState::Pending | RunState::Running) {
        return;
    }
    step.run.attempts.poll += 1;
    match outcome {
        CallOutcome::Observed(observation) => observe(step, *observation, policy, env),
        CallOutcome::NotFound => lose(
            step,
            env,
            policy,
            "the scheduler answered the poll with not found".to_owned(),
        ),
        CallOutcome::Retryable {
            message,
            retry_after_ms,
            unreadable,
        } => poll_failed(step, env, policy, &message, retry_after_ms, unreadable),
        CallOutcome::Rejected { message } => poll_failed(step, env, policy, &message, None, true),
        CallOutcome::Deferred { .. } => {}
        CallOutcome::Accepted { .. } | CallOutcome::AlreadyExists => {
            poll_failed(
                step,
                env,
                policy,
                "the poll answer carried no observation",
                None,
                true,
            );
        }
    }
}

fn poll_failed(
    step: &mut Step,
    env: Env,
    policy: &Policy,
    message: &str,
    retry_after_ms: Option<u64>,
    unreadable: bool,
) {
    if !unreadable {
        // The scheduler did not answer (transport error, timeout, 408/429/5xx). The job itself
        // may be fine, so this never fails the run: back off and ask again, honouring
        // Retry-After; the run's deadline still applies. The poll interval doubles per failure
        // (it is persisted, so the backoff survives a restart) and snaps back on the next answer.
        let ceiling = policy.max_backoff_ms.max(policy.poll_max_interval_ms);
        let interval = to_u64(step.run.poll_interval_ms)
            .max(policy.initial_backoff_ms)
            .saturating_mul(2)
            .min(ceiling.max(policy.initial_backoff_ms));
        step.run.poll_interval_ms = to_i64(interval);
        let jittered = backoff::delay_ms(1, interval, interval, env.jitter, retry_after_ms);
        let delay = to_i64(jittered.max(policy.initial_backoff_ms.min(interval)));
        step.run.next_at = Some(env.now.saturating_add(delay));
        step.events.push(event(
            &step.run,
            env,
            "retry",
            Some(format!("poll: {message}; next poll in {delay} ms")),
        ));
        return;
    }
    let failures = step.run.poll_errors + 1;
    step.run.poll_errors = failures;
    if failures >= i64::from(policy.max_consecutive_errors) {
        step.run.failure_cause = Some("poll_errors".to_owned());
        step.run.error = Some(format!(
            "{failures} polls in a row could not be read; last error: {message}"
        ));
        step.events.push(event(
            &step.run,
            env,
            "poll_error",
            Some(format!("poll: {message}")),
        ));
        finish(step, env, RunState::Failed, policy, true, None);
        return;
    }
    let delay = retry_delay(policy, to_u32(failures), env, retry_after_ms).max(to_i64(
        backoff::spread_ms(policy.poll_interval_ms, env.jitter),
    ));
    step.run.next_at = Some(env.now.saturating_add(delay));
    step.events.push(event(
        &step.run,
        env,
        "poll_error",
        Some(format!(
            "poll: {message}; {failures} unreadable in a row, next poll in {delay} ms"
        )),
    ));
}

fn observe(step: &mut Step, observation: Observation, policy: &Policy, env: Env) {
    let before = step.run.clone();
    step.run.poll_errors = 0;
    if observation.scheduler_state.is_some() {
        step.run.scheduler_state = observation.scheduler_state.clone();
    }
    if observation.progress.is_some() {
        step.run.progress = observation.progress;
    }
    if observation.heartbeat.is_some() {
        step.run.heartbeat_at = observation.heartbeat.clone();
    }
    if observation.detail.is_some() {
        step.run.detail = observation.detail.clone();
    }
    if observation.external_id.is_some() {
        step.run.external_id = observation.external_id.clone();
    }
    // Each extra channel keeps the latest value a poll reported for it; a drain channel keeps
    // every batch (bounded).
    crate::domain::channels::merge(&mut step.run.fields, &observation.fields);
    if observation.unmapped && !step.run.unmapped_seen {
        step.run.unmapped_seen = true;
        step.events.push(event(&step.run, env, "unmapped_status",
            Some(format!(
                "the scheduler word {:?} is not in the statusMap nor the built-in vocabulary; read as running",
                observation.scheduler_state.as_deref().unwrap_or("")
            )),
        ));
    }
    let mapped = observation.state.unwrap_or(MappedState::Running);
    match mapped {
        MappedState::Pending | MappedState::Running => {
            let target = if mapped == MappedState::Pending {
                RunState::Pending
            } else {
                RunState::Running
            };
            let changed = target != before.state
                || step.run.scheduler_state != before.scheduler_state
                || step.run.progress != before.progress;
            let interval = if changed {
                to_i64(policy.poll_interval_ms)
            } else {
                // Nothing changed: stretch towards the maximum interval.
                let stretched = before.poll_interval_ms.max(1).saturating_mul(3) / 2;
                stretched.clamp(
                    to_i64(policy.poll_interval_ms),
                    to_i64(policy.poll_max_interval_ms.max(policy.poll_interval_ms)),
                )
            };
            step.run.poll_interval_ms = interval;
            step.run.next_at = Some(
                env.now
                    .saturating_add(to_i64(backoff::spread_ms(to_u64(interval), env.jitter))),
            );
            if target != before.state {
                transition(step, env, target, step.run.scheduler_state.clone());
            }
        }
        MappedState::Done => {
            step.run.result = observation.result;
            step.run.error = None;
            finish(
                step,
                env,
                RunState::Done,
                policy,
                true,
                step.run.scheduler_state.clone(),
            );
        }
        MappedState::Failed => {
            step.run.error = Some(
                observation
                    .error
                    .unwrap_or_else(|| "the scheduler reported the job failed".to_owned()),
            );
            step.run.failure_cause = Some(
                observation
                    .failure_cause
                    .unwrap_or_else(|| "scheduler".to_owned()),
            );
            finish(
                step,
                env,
                RunState::Failed,
                policy,
                true,
                step.run.scheduler_state.clone(),
            );
        }
        MappedState::Cancelled => {
            step.run.error = Some(
                observation
                    .error
                    .unwrap_or_else(|| "the scheduler cancelled the job".to_owned()),
            );
            step.run.failure_cause = Some(
                observation
                    .failure_cause
                    .unwrap_or_else(|| "cancelled".to_owned()),
            );
            finish(
                step,
                env,
                RunState::Cancelled,
                policy,
                true,
                step.run.scheduler_state.clone(),
            );
        }
        MappedState::Lost => {
            let word = step.run.scheduler_state.clone().unwrap_or_default();
            lose(
                step,
                env,
                policy,
                format!("the scheduler reported the job as lost ({word})"),
            );
        }
    }
}

fn lose(step: &mut Step, env: Env, policy: &Policy, reason: String) {
    if step.run.attempts.redispatch < i64::from(policy.lost_redispatch) {
        step.run.attempts.redispatch += 1;
        step.run.attempts.dispatch += 1;
        step.run.dispatch_id = format!("{}-{}", step.run.job_id, step.run.attempts.redispatch);
        step.run.captures = Map::new();
        step.run.scheduler_state = None;
        step.run.poll_errors = 0;
        step.run.next_at = Some(env.now);
        step.events
            .push(event(&step.run, env, "lost", Some(reason)));
        transition(step, env, RunState::Dispatching, dispatch_detail(&step.run));
    } else {
        step.run.failure_cause = Some("lost".to_owned());
        step.run.error = Some(reason);
        finish(step, env, RunState::Failed, policy, true, None);
    }
}

fn apply_release(step: &mut Step, outcome: CallOutcome, policy: &Policy, env: Env) {
    if step.run.release != ReleaseState::Pending {
        return;
    }
    step.run.attempts.release += 1;
    match outcome {
        CallOutcome::Accepted { .. }
        | CallOutcome::NotFound
        | CallOutcome::AlreadyExists
        | CallOutcome::Observed(_) => {
            step.run.release = ReleaseState::Done;
            step.run.poll_errors = 0;
            step.run.next_at = None;
            step.events.push(event(
                &step.run,
                env,
                "release",
                Some("released at the scheduler".to_owned()),
            ));
        }
        CallOutcome::Retryable {
            message,
            retry_after_ms,
            ..
        } => {
            let failures = step.run.poll_errors + 1;
            if step.run.attempts.release >= i64::from(policy.max_attempts) {
                give_up_release(step, env, &message);
            } else {
                step.run.poll_errors = failures;
                let delay = retry_delay(policy, to_u32(failures), env, retry_after_ms);
                step.run.next_at = Some(env.now.saturating_add(delay));
                step.events.push(event(
                    &step.run,
                    env,
                    "retry",
                    Some(format!("release: {message}; next attempt in {delay} ms")),
                ));
            }
        }
        CallOutcome::Rejected { message } => give_up_release(step, env, &message),
        CallOutcome::Deferred { .. } => {}
    }
}

fn give_up_release(step: &mut Step, env: Env, message: &str) {
    step.run.release = ReleaseState::GaveUp;
    step.run.next_at = None;
    step.events.push(event(
        &step.run,
        env,
        "release_failed",
        Some(format!(
            "release gave up after {} attempt(s): {message}",
            step.run.attempts.release
        )),
    ));
}

/// Moves the run to a final state and decides whether a release is due.
fn finish(
    step: &mut Step,
    env: Env,
    to: RunState,
    policy: &Policy,
    reached_scheduler: bool,
    detail: Option<String>,
) {
    step.run.finished_at = Some(env.now);
    step.run.poll_errors = 0;
    step.run.release = if policy.has_release && reached_scheduler {
        step.run.next_at = Some(env.now);
        ReleaseState::Pending
    } else {
        step.run.next_at = None;
        ReleaseState::NotNeeded
    };
    let detail = detail.or_else(|| step.run.error.clone());
    transition(step, env, to, detail);
}

fn transition(step: &mut Step, env: Env, to: RunState, detail: Option<String>) {
    let from = step.run.state;
    step.run.state = to;
    step.events.push(NewEvent {
        job_id: step.run.job_id.clone(),
        at: env.now,
        kind: "transition".to_owned(),
        from: Some(from),
        to: Some(to),
        detail,
    });
}

fn dispatch_detail(run: &RunRecord) -> Option<String> {
    Some(format!(
        "dispatch attempt {} as {}",
        run.attempts.dispatch.max(1),
        run.dispatch_id
    ))
}

fn retry_delay(policy: &Policy, failures: u32, env: Env, retry_after_ms: Option<u64>) -> Millis {
    to_i64(backoff::delay_ms(
        failures,
        policy.initial_backoff_ms,
        policy.max_backoff_ms,
        env.jitter,
        retry_after_ms,
    ))
}

/// An event that is not a transition (retry, poll error, release, …).
fn event(run: &RunRecord, env: Env, kind: &str, detail: Option<String>) -> NewEvent {
    NewEvent {
        job_id: run.job_id.clone(),
        at: env.now,
        kind: kind.to_owned(),
        from: None,
        to: None,
        detail,
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn to_u32(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::{JobId, PoolName};
    use crate::domain::run::Progress;

    fn policy() -> Policy {
        Policy {
            max_attempts: 3,
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
            poll_interval_ms: 1_000,
            poll_max_interval_ms: 4_000,
            max_consecutive_errors: 3,
            lost_redispatch: 1,
            has_release: true,
        }
    }

    fn env(now: Millis) -> Env {
        Env { now, jitter: 0.5 }
    }

    fn queued() -> RunRecord {
        RunRecord {
            request_digest: "d".to_owned(),
            poll_interval_ms: 1_000,
            created_at: 0,
            updated_at: 0,
            ..RunRecord::queued(
                JobId::parse("job-1").unwrap(),
                PoolName::parse("pool").unwrap(),
                0,
            )
        }
    }

    fn running() -> RunRecord {
        let step = apply(&queued(), Input::SlotGranted, &policy(), env(10));
        accepted(&step.run, 20)
    }

    fn accepted(run: &RunRecord, now: Millis) -> RunRecord {
        let outcome = CallOutcome::Accepted {
            captures: Map::new(),
            note: None,
        };
        apply(
            run,
            Input::Called(OpKind::Dispatch, outcome),
            &policy(),
            env(now),
        )
        .run
    }

    fn observed(state: Option<MappedState>, word: &str) -> Input {
        Input::Called(
            OpKind::Poll,
            CallOutcome::Observed(Box::new(Observation {
                state,
                scheduler_state: Some(word.to_owned()),
                ..Observation::default()
            })),
        )
    }

    fn retryable(message: &str, retry_after_ms: Option<u64>, unreadable: bool) -> CallOutcome {
        CallOutcome::Retryable {
            message: message.to_owned(),
            retry_after_ms,
            unreadable,
        }
    }

    fn transitions(step: &Step) -> Vec<(Option<RunState>, Option<RunState>)> {
        step.events
            .iter()
            .filter(|e| e.kind == "transition")
            .map(|e| (e.from, e.to))
            .collect()
    }

    #[test]
    fn a_queued_run_waits_for_a_slot() {
        assert_eq!(next_action(&queued(), 0), Action::WaitForSlot);
    }

    #[test]
    fn a_granted_slot_commits_dispatching_with_the_attempt_before_the_call() {
        let step = apply(&queued(), Input::SlotGranted, &policy(), env(10));
        assert_eq!(step.run.state, RunState::Dispatching);
        assert_eq!(step.run.attempts.dispatch, 1);
        assert_eq!(step.run.dispatch_id, "job-1");
        assert_eq!(
            transitions(&step),
            [(Some(RunState::Queued), Some(RunState::Dispatching))]
        );
        assert_eq!(next_action(&step.run, 10), Action::Call(OpKind::Dispatch));
    }

    #[test]
    fn an_accepted_dispatch_runs_and_polls_at_once() {
        let run = running();
        assert_eq!(run.state, RunState::Running);
        assert_eq!(run.dispatched_at, Some(20));
        assert_eq!(next_action(&run, 20), Action::Call(OpKind::Poll));
    }

    #[test]
    fn already_exists_reattaches_like_an_acceptance() {
        let dispatching = apply(&queued(), Input::SlotGranted, &policy(), env(10)).run;
        let step = apply(
            &dispatching,
            Input::Called(OpKind::Dispatch, CallOutcome::AlreadyExists),
            &policy(),
            env(11),
        );
        assert_eq!(step.run.state, RunState::Running);
        assert!(
            step.events[0]
                .detail
                .as_deref()
                .unwrap()
                .contains("re-attached")
        );
    }

    #[test]
    fn a_rejected_dispatch_fails_without_release() {
        let dispatching = apply(&queued(), Input::SlotGranted, &policy(), env(10)).run;
        let outcome = CallOutcome::Rejected {
            message: "dispatch → 422: bad".to_owned(),
        };
        let step = apply(
            &dispatching,
            Input::Called(OpKind::Dispatch, outcome),
            &policy(),
            env(11),
        );
        assert_eq!(step.run.state, RunState::Failed);
        assert_eq!(step.run.failure_cause.as_deref(), Some("dispatch_rejected"));
        assert_eq!(step.run.release, ReleaseState::NotNeeded);
        assert_eq!(next_action(&step.run, 11), Action::Finished);
    }

    #[test]
    fn retryable_dispatch_failures_back_off_then_give_up() {
        let mut run = apply(&queued(), Input::SlotGranted, &policy(), env(0)).run;
        let first = apply(
            &run,
            Input::Called(OpKind::Dispatch, retryable("503", None, false)),
            &policy(),
            env(1_000),
        );
        assert_eq!(first.run.state, RunState::Dispatching);
        assert_eq!(first.run.attempts.dispatch, 2);
        assert_eq!(first.run.next_at, Some(1_050));
        assert_eq!(first.events[0].kind, "retry");
        assert_eq!(next_action(&first.run, 1_000), Action::WaitUntil(1_050));
        run = first.run;
        let second = apply(
            &run,
            Input::Called(OpKind::Dispatch, retryable("503", Some(700), false)),
            &policy(),
            env(2_000),
        );
        assert_eq!(second.run.next_at, Some(2_700), "Retry-After is a floor");
        let third = apply(
            &second.run,
            Input::Called(OpKind::Dispatch, retryable("503", None, false)),
            &policy(),
            env(3_000),
        );
        assert_eq!(third.run.state, RunState::Failed);
        assert!(
            third
                .run
                .error
                .as_deref()
                .unwrap()
                .contains("after 3 attempts")
        );
        assert_eq!(
            third.run.release,
            ReleaseState::Pending,
            "a timed-out dispatch may have created the job"
        );
    }

    #[test]
    fn a_done_poll_finishes_with_the_result_and_schedules_release() {
        let run = running();
        let input = Input::Called(
            OpKind::Poll,
            CallOutcome::Observed(Box::new(Observation {
                state: Some(MappedState::Done),
                scheduler_state: Some("Complete".to_owned()),
                result: Some(serde_json::json!({"summary": "ok"})),
                progress: Some(Progress {
                    completed: 3,
                    in_progress: 0,
                    total: 3,
                }),
                ..Observation::default()
            })),
        );
        let step = apply(&run, input, &policy(), env(100));
        assert_eq!(step.run.state, RunState::Done);
        assert_eq!(step.run.result, Some(serde_json::json!({"summary": "ok"})));
        assert_eq!(step.run.finished_at, Some(100));
        assert_eq!(step.run.attempts.poll, 1);
        assert_eq!(step.run.release, ReleaseState::Pending);
        assert_eq!(next_action(&step.run, 100), Action::Call(OpKind::Release));
        let released = apply(
            &step.run,
            Input::Called(
                OpKind::Release,
                CallOutcome::Accepted {
                    captures: Map::new(),
                    note: None,
                },
            ),
            &policy(),
            env(120),
        );
        assert_eq!(released.run.release, ReleaseState::Done);
        assert_eq!(next_action(&released.run, 120), Action::Finished);
    }

    #[test]
    fn a_failed_poll_uses_the_mapped_error_or_a_default_cause() {
        let run = running();
        let step = apply(
            &run,
            observed(Some(MappedState::Failed), "FAILED"),
            &policy(),
            env(100),
        );
        assert_eq!(step.run.state, RunState::Failed);
        assert_eq!(step.run.failure_cause.as_deref(), Some("scheduler"));
        assert_eq!(
            step.run.error.as_deref(),
            Some("the scheduler reported the job failed")
        );
    }

    #[test]
    fn an_unmapped_word_is_recorded_once_and_reads_as_running() {
        let run = running();
        let observation = |word: &str| {
            Input::Called(
                OpKind::Poll,
                CallOutcome::Observed(Box::new(Observation {
                    state: Some(MappedState::Running),
                    scheduler_state: Some(word.to_owned()),
                    unmapped: true,
                    ..Observation::default()
                })),
            )
        };
        let first = apply(&run, observation("wibble"), &policy(), env(100));
        assert_eq!(first.run.state, RunState::Running);
        assert_eq!(
            first
                .events
                .iter()
                .filter(|e| e.kind == "unmapped_status")
                .count(),
            1
        );
        let second = apply(&first.run, observation("wibble"), &policy(), env(200));
        assert!(second.events.iter().all(|e| e.kind != "unmapped_status"));
    }

    #[test]
    fn polling_stretches_while_nothing_changes_and_snaps_back_on_change() {
        let mut run = running();
        let mut intervals = Vec::new();
        for i in 0..5 {
            run = apply(
                &run,
                observed(Some(MappedState::Running), "Running"),
                &policy(),
                env(100 * i),
            )
            .run;
            intervals.push(run.poll_interval_ms);
        }
        assert_eq!(intervals, [1_000, 1_500, 2_250, 3_375, 4_000]);
        let changed = apply(
            &run,
            observed(Some(MappedState::Pending), "Queued"),
            &policy(),
            env(1_000),
        )
        .run;
        assert_eq!(changed.poll_interval_ms, 1_000);
        assert_eq!(changed.state, RunState::Pending);
        assert_eq!(changed.next_at, Some(1_000 + 1_000));
    }

    #[test]
    fn unreadable_polls_fail_the_run_past_the_limit_and_reset_on_success() {
        let run = running();
        let bad = || {
            Input::Called(
                OpKind::Poll,
                retryable("the answer is not JSON", None, true),
            )
        };
        let one = apply(&run, bad(), &policy(), env(100));
        assert_eq!(one.run.poll_errors, 1);
        assert_eq!(one.events[0].kind, "poll_error");
        let reset = apply(
            &one.run,
            observed(Some(MappedState::Running), "Running"),
            &policy(),
            env(200),
        );
        assert_eq!(reset.run.poll_errors, 0);
        let mut current = reset.run;
        for i in 0..3 {
            current = apply(&current, bad(), &policy(), env(300 + i)).run;
        }
        assert_eq!(current.state, RunState::Failed);
        assert_eq!(current.failure_cause.as_deref(), Some("poll_errors"));
        assert!(current.error.as_deref().unwrap().contains("not JSON"));
    }

    #[test]
    fn a_lost_job_is_dispatched_again_under_a_new_id_then_fails() {
        let run = running();
        let step = apply(
            &run,
            Input::Called(OpKind::Poll, CallOutcome::NotFound),
            &policy(),
            env(100),
        );
        assert_eq!(step.run.state, RunState::Dispatching);
        assert_eq!(step.run.dispatch_id, "job-1-1");
        assert_eq!(step.run.attempts.redispatch, 1);
        assert_eq!(step.run.attempts.dispatch, 2);
        let again = accepted(&step.run, 110);
        let lost = apply(
            &again,
            observed(Some(MappedState::Lost), "NodeLost"),
            &policy(),
            env(120),
        );
        assert_eq!(lost.run.state, RunState::Failed);
        assert_eq!(lost.run.failure_cause.as_deref(), Some("lost"));
        assert!(lost.run.error.as_deref().unwrap().contains("NodeLost"));
    }

    #[test]
    fn cancelling_a_queued_run_needs_no_scheduler_call() {
        let step = request_cancel(&queued(), &policy(), env(5)).unwrap();
        assert_eq!(step.run.state, RunState::Cancelled);
        assert_eq!(step.run.release, ReleaseState::NotNeeded);
        assert_eq!(next_action(&step.run, 5), Action::Finished);
    }

    #[test]
    fn cancelling_a_running_run_sets_the_flag_then_cancels_and_releases() {
        let run = running();
        let requested = request_cancel(&run, &policy(), env(30)).unwrap();
        assert!(requested.run.cancel_requested);
        assert_eq!(requested.run.state, RunState::Running);
        assert_eq!(requested.events[0].kind, "cancel_requested");
        assert_eq!(next_action(&requested.run, 30), Action::Cancel);
        let cancelled = apply(&requested.run, Input::Cancel, &policy(), env(31));
        assert_eq!(cancelled.run.state, RunState::Cancelled);
        assert_eq!(cancelled.run.release, ReleaseState::Pending);
        assert!(request_cancel(&cancelled.run, &policy(), env(32)).is_none());
    }

    #[test]
    fn a_passed_deadline_fails_the_run_and_releases_it() {
        let mut run = running();
        run.deadline_at = Some(500);
        run.next_at = Some(10_000);
        assert_eq!(next_action(&run, 100), Action::WaitUntil(500));
        assert_eq!(next_action(&run, 500), Action::Expire);
        let step = apply(&run, Input::DeadlinePassed, &policy(), env(500));
        assert_eq!(step.run.state, RunState::Failed);
        assert_eq!(step.run.failure_cause.as_deref(), Some("deadline"));
        assert_eq!(step.run.release, ReleaseState::Pending);
    }

    #[test]
    fn release_retries_within_the_budget_then_gives_up() {
        let run = running();
        let done = apply(
            &run,
            observed(Some(MappedState::Done), "ok"),
            &policy(),
            env(100),
        )
        .run;
        let mut current = done;
        for i in 0..2 {
            current = apply(
                &current,
                Input::Called(OpKind::Release, retryable("503", None, false)),
                &policy(),
                env(200 + i),
            )
            .run;
            assert_eq!(current.release, ReleaseState::Pending);
        }
        let last = apply(
            &current,
            Input::Called(OpKind::Release, retryable("503", None, false)),
            &policy(),
            env(300),
        );
        assert_eq!(last.run.release, ReleaseState::GaveUp);
        assert_eq!(last.events[0].kind, "release_failed");
        assert_eq!(next_action(&last.run, 300), Action::Finished);
    }

    #[test]
    fn no_release_template_means_nothing_to_release() {
        let mut without = policy();
        without.has_release = false;
        let run = running();
        let step = apply(
            &run,
            observed(Some(MappedState::Done), "ok"),
            &without,
            env(100),
        );
        assert_eq!(step.run.release, ReleaseState::NotNeeded);
        assert_eq!(next_action(&step.run, 100), Action::Finished);
    }

    #[test]
    fn outcomes_for_a_phase_the_run_has_left_change_nothing() {
        let run = running();
        let step = apply(
            &run,
            Input::Called(OpKind::Dispatch, CallOutcome::AlreadyExists),
            &policy(),
            env(100),
        );
        assert_eq!(step.run.state, RunState::Running);
        assert!(step.events.is_empty());
    }

    #[test]
    fn the_recovery_decision_follows_the_persisted_phase() {
        let queued = queued();
        assert_eq!(recovery(&queued, true), Recovery::WaitForSlot);
        let dispatching = apply(&queued, Input::SlotGranted, &policy(), env(1)).run;
        assert_eq!(
            recovery(&dispatching, true),
            Recovery::Reconcile,
            "ask first when the manifest can (a lookup, or a poll that needs no capture)"
        );
        assert_eq!(
            recovery(&dispatching, false),
            Recovery::Resume,
            "else dispatch again under the same id"
        );
        assert_eq!(next_action(&dispatching, 1), Action::Call(OpKind::Dispatch));
        assert_eq!(dispatching.dispatch_id, "job-1");
        let running = running();
        assert_eq!(recovery(&running, true), Recovery::Resume);
        assert_eq!(next_action(&running, 20), Action::Call(OpKind::Poll));
        let done = apply(
            &running,
            observed(Some(MappedState::Done), "ok"),
            &policy(),
            env(30),
        )
        .run;
        assert_eq!(recovery(&done, true), Recovery::Resume);
        assert_eq!(
            next_action(&done, 30),
            Action::Call(OpKind::Release),
            "a release still due is made"
        );
        let released = apply(
            &done,
            Input::Called(
                OpKind::Release,
                CallOutcome::Accepted {
                    captures: Map::new(),
                    note: None,
                },
            ),
            &policy(),
            env(31),
        )
        .run;
        assert!(!released.needs_work());
        assert_eq!(next_action(&released, 31), Action::Finished);
    }

    #[test]
    fn a_dispatch_retried_after_an_ambiguous_failure_asks_the_scheduler_first() {
        let dispatching = apply(&queued(), Input::SlotGranted, &policy(), env(1)).run;
        assert!(
            !dispatch_may_exist(&dispatching),
            "the first attempt of a dispatch id has no predecessor"
        );
        let timed_out = apply(
            &dispatching,
            Input::Called(
                OpKind::Dispatch,
                retryable("dispatch → timed out", None, false),
            ),
            &policy(),
            env(2),
        )
        .run;
        assert_eq!(timed_out.state, RunState::Dispatching);
        assert!(
            dispatch_may_exist(&timed_out),
            "the timed-out call may have created the job"
        );
        let found = CallOutcome::Accepted {
            captures: serde_json::json!({"jobId": 42})
                .as_object()
                .cloned()
                .unwrap(),
            note: None,
        };
        assert_eq!(reconciled(&found), Reconciled::Known);
        let step = reattach(&timed_out, found, false, &policy(), env(3));
        assert_eq!(step.run.state, RunState::Running);
        assert_eq!(step.run.captures["jobId"], 42);
        assert_eq!(step.run.poll_errors, 0);
        assert!(!dispatch_may_exist(&step.run));
        let detail = step.events.last().and_then(|e| e.detail.clone()).unwrap();
        assert!(detail.contains("re-attached"), "{detail}");
        // A poll says nothing about captures: the run keeps the ones it has.
        let polled = reattach(
            &timed_out,
            CallOutcome::Observed(Box::default()),
            true,
            &policy(),
            env(3),
        );
        assert_eq!(polled.run.state, RunState::Running);
        assert!(polled.run.captures.is_empty());
        assert!(
            polled
                .events
                .last()
                .and_then(|e| e.detail.clone())
                .unwrap()
                .contains("restart")
        );
        // A lost job is dispatched again under a new id: nothing to ask about.
        let lost = apply(
            &running(),
            Input::Called(OpKind::Poll, CallOutcome::NotFound),
            &policy(),
            env(4),
        )
        .run;
        assert_eq!(lost.state, RunState::Dispatching);
        assert!(!dispatch_may_exist(&lost));
    }

    #[test]
    fn a_reconciling_poll_is_read_as_known_unknown_or_unsure() {
        assert_eq!(
            reconciled(&CallOutcome::Observed(Box::default())),
            Reconciled::Known
        );
        assert_eq!(reconciled(&CallOutcome::NotFound), Reconciled::Unknown);
        assert_eq!(
            reconciled(&retryable("503", None, false)),
            Reconciled::Unsure
        );
        assert_eq!(
            reconciled(&CallOutcome::Rejected {
                message: "403".into()
            }),
            Reconciled::Unsure
        );
        assert_eq!(
            reconciled(&CallOutcome::Deferred { until: 5 }),
            Reconciled::Unsure
        );
    }

    #[test]
    fn overdue_calls_of_reloaded_runs_are_spread_and_future_ones_kept() {
        let mut run = running();
        run.next_at = Some(500);
        let spread = |jitter: f64| resume_at(&run, Env { now: 1_000, jitter }, 2_000);
        assert_eq!(spread(0.0), Some(1_000));
        assert_eq!(spread(0.5), Some(2_000));
        run.next_at = Some(5_000);
        assert_eq!(
            resume_at(
                &run,
                Env {
                    now: 1_000,
                    jitter: 0.9
                },
                2_000
            ),
            Some(5_000)
        );
        run.next_at = None;
        assert_eq!(
            resume_at(
                &run,
                Env {
                    now: 1_000,
                    jitter: 0.9
                },
                2_000
            ),
            None
        );
    }

    #[test]
    fn a_deferred_call_moves_the_next_call_and_counts_nothing() {
        let run = running();
        let step = apply(
            &run,
            Input::Called(OpKind::Poll, CallOutcome::Deferred { until: 9_000 }),
            &policy(),
            env(100),
        );
        assert_eq!(step.run.next_at, Some(9_000));
        assert_eq!(step.run.attempts, run.attempts);
        assert_eq!(step.run.poll_errors, run.poll_errors);
        assert!(step.events.is_empty());
    }

    #[test]
    fn scheduler_outages_during_polling_back_off_and_never_fail_the_run() {
        let mut run = running();
        let mut delays = Vec::new();
        for i in 0..30 {
            let now = 1_000 * i;
            run = apply(
                &run,
                Input::Called(OpKind::Poll, retryable("poll → 503", None, false)),
                &policy(),
                Env { now, jitter: 1.0 },
            )
            .run;
            assert_eq!(run.state, RunState::Running);
            delays.push(run.next_at.unwrap() - now);
        }
        assert_eq!(run.poll_errors, 0, "outages are not unreadable polls");
        assert_eq!(
            &delays[..3],
            [2_000, 4_000, 4_000],
            "doubling up to the larger cap"
        );
        let honoured = apply(
            &run,
            Input::Called(OpKind::Poll, retryable("poll → 429", Some(9_000), false)),
            &policy(),
            Env {
                now: 0,
                jitter: 0.0,
            },
        );
        assert_eq!(honoured.run.next_at, Some(9_000), "Retry-After is a floor");
        let back = apply(
            &run,
            observed(Some(MappedState::Running), "Running"),
            &policy(),
            env(50_000),
        )
        .run;
        assert_eq!(
            back.poll_interval_ms, 1_000,
            "the interval snaps back once the scheduler answers"
        );
    }

    #[test]
    fn an_unreadable_job_body_fails_the_dispatch_without_a_call() {
        let dispatching = apply(&queued(), Input::SlotGranted, &policy(), env(10)).run;
        let step = apply(
            &dispatching,
            Input::JobUnreadable("the stored job body is gone".to_owned()),
            &policy(),
            env(20),
        );
        assert_eq!(step.run.state, RunState::Failed);
        assert_eq!(step.run.failure_cause.as_deref(), Some("job_unreadable"));
        assert!(
            step.run
                .error
                .as_deref()
                .unwrap()
                .contains("nothing was sent")
        );
        // First attempt: nothing can be at the scheduler, so nothing to release.
        assert_eq!(step.run.release, ReleaseState::NotNeeded);
        assert_eq!(next_action(&step.run, 20), Action::Finished);

        // After a retried attempt, an earlier call may have created the job: release it.
        let mut retried = dispatching.clone();
        retried.attempts.dispatch = 2;
        let step = apply(
            &retried,
            Input::JobUnreadable("gone".to_owned()),
            &policy(),
            env(20),
        );
        assert_eq!(step.run.release, ReleaseState::Pending);

        // Outside dispatching it changes nothing.
        let step = apply(
            &running(),
            Input::JobUnreadable("gone".to_owned()),
            &policy(),
            env(30),
        );
        assert_eq!(step.run.state, RunState::Running);
    }

    #[test]
    fn an_unclear_reconciling_answer_is_recorded_and_asked_again_after_a_backoff() {
        let dispatching = apply(&queued(), Input::SlotGranted, &policy(), env(10)).run;
        let unclear = CallOutcome::Retryable {
            message: "cannot resolve sched.invalid".to_owned(),
            retry_after_ms: Some(700),
            unreadable: false,
        };
        let step = reconcile_unsure(&dispatching, &unclear, 1, &policy(), env(100));
        assert_eq!(step.run.state, RunState::Dispatching);
        assert_eq!(step.run.next_at, Some(800), "Retry-After is a floor");
        assert_eq!(step.events.len(), 1);
        let detail = step.events[0].detail.as_deref().unwrap();
        assert_eq!(step.events[0].kind, "retry");
        assert!(detail.contains("cannot resolve sched.invalid"), "{detail}");
        assert!(detail.contains("asking again"), "{detail}");
        let last = reconcile_unsure(&dispatching, &unclear, 3, &policy(), env(100));
        let detail = last.events[0].detail.as_deref().unwrap();
        assert!(
            detail.contains("dispatching again under the same id"),
            "{detail}"
        );
    }

    #[test]
    fn a_poll_that_saw_nothing_new_needs_no_commit_and_any_news_does() {
        let running = running();
        let seen = Input::Called(
            OpKind::Poll,
            CallOutcome::Observed(Box::new(Observation {
                state: Some(MappedState::Running),
                scheduler_state: running.scheduler_state.clone(),
                ..Observation::default()
            })),
        );
        let first = apply(&running, seen.clone(), &policy(), env(30));
        let quiet = apply(&first.run, seen, &policy(), env(40));
        assert!(quiet.events.is_empty());
        assert_eq!(quiet.run.attempts.poll, first.run.attempts.poll + 1);
        assert!(!needs_commit(&first.run, &quiet));
        let news = [
            Observation {
                state: Some(MappedState::Running),
                scheduler_state: Some("Busy".to_owned()),
                ..Observation::default()
            },
            Observation {
                state: Some(MappedState::Running),
                scheduler_state: first.run.scheduler_state.clone(),
                detail: Some("step 2 of 3".to_owned()),
                ..Observation::default()
            },
            Observation {
                state: Some(MappedState::Done),
                scheduler_state: first.run.scheduler_state.clone(),
                ..Observation::default()
            },
        ];
        for observation in news {
            let step = apply(
                &first.run,
                Input::Called(
                    OpKind::Poll,
                    CallOutcome::Observed(Box::new(observation.clone())),
                ),
                &policy(),
                env(40),
            );
            assert!(needs_commit(&first.run, &step), "{observation:?}");
        }
        // A poll that failed moves the persisted backoff: committed.
        let failed = apply(
            &first.run,
            Input::Called(
                OpKind::Poll,
                CallOutcome::Retryable {
                    message: "HTTP 503".to_owned(),
                    retry_after_ms: None,
                    unreadable: false,
                },
            ),
            &policy(),
            env(40),
        );
        assert!(needs_commit(&first.run, &failed));
    }
}
