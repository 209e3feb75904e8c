//! Per-pool protection of a scheduler: a rate budget that spaces calls out, and a circuit
//! breaker that holds calls back while the scheduler keeps failing.
//!
//! Both are plain state machines driven with an explicit `now`, so they are unit-tested without
//! a clock. The rate budget never rejects: it hands out the next free slot, one every
//! `1 / requestsPerSecond` (with a small margin), and the caller waits for it. The breaker opens
//! after [`FAILURE_THRESHOLD`] consecutive failures (transport errors, timeouts, 408/429/5xx);
//! while open, calls are deferred, not failed; when the cool-down ends one trial call goes out
//! (half-open); its success closes the breaker, its failure opens it again for twice as long.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Consecutive failures that open the breaker.
pub const FAILURE_THRESHOLD: u32 = 5;
/// Margin added to the spacing of calls, so that arrival jitter on the wire cannot put more than
/// the budget into any one-second window.
const SPACING_MARGIN: f64 = 1.05;
/// How long a caller waits before asking again while a trial call is out.
const TRIAL_WAIT: Duration = Duration::from_millis(200);
/// The longest spacing of the rate budget (validation keeps rates at or above one call every
/// 1000 s; this bounds the arithmetic whatever rate arrives).
const MAX_SPACING: Duration = Duration::from_secs(3_600);
/// How far ahead an instant is pushed at most: a sum that would overflow the clock ends here.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3_600);

/// `now + by`, saturating at a far-future instant instead of panicking on overflow.
fn later(now: Instant, by: Duration) -> Instant {
    now.checked_add(by)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

/// The breaker's state as PoolView shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    /// Calls flow.
    Closed,
    /// Calls are held back.
    Open,
    /// One trial call is allowed.
    HalfOpen,
}

impl Circuit {
    /// `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::Open => "open",
            Circuit::HalfOpen => "half_open",
        }
    }
}

/// May a call go out now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Yes; `trial` when it is the half-open trial call.
    Go {
        /// This call decides whether the breaker closes.
        trial: bool,
    },
    /// No: ask again at this instant.
    Hold(Instant),
}

/// What a finished call says about the scheduler's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// The scheduler answered (whatever it answered).
    Healthy,
    /// The scheduler did not answer usefully (transport error, timeout, 408/429/5xx).
    Failing(String),
    /// Nothing to learn (for example the call was not made).
    Neutral,
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant, cooldown: Duration },
    HalfOpen { trial_out: bool, cooldown: Duration },
}

#[derive(Debug)]
struct Inner {
    state: State,
    next_free: Option<Instant>,
    last_error: Option<String>,
}

/// The guard of one pool.
#[derive(Debug)]
pub struct PoolGuard {
    inner: Mutex<Inner>,
}

impl Default for PoolGuard {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                state: State::Closed { failures: 0 },
                next_free: None,
                last_error: None,
            }),
        }
    }
}

impl PoolGuard {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reserves the next slot of the rate budget and returns how long to wait for it.
    /// `None` means no budget: go at once.
    pub fn reserve(&self, requests_per_second: Option<f64>, now: Instant) -> Duration {
        let Some(rate) = requests_per_second.filter(|r| r.is_finite() && *r > 0.0) else {
            return Duration::ZERO;
        };
        let spacing = Duration::try_from_secs_f64(SPACING_MARGIN / rate)
            .unwrap_or(MAX_SPACING)
            .min(MAX_SPACING);
        let mut inner = self.lock();
        let slot = inner.next_free.map_or(now, |free| free.max(now));
        inner.next_free = Some(later(slot, spacing));
        slot.saturating_duration_since(now)
    }

    /// Asks the breaker whether a call may go out.
    pub fn admit(&self, now: Instant) -> Admission {
        let mut inner = self.lock();
        match inner.state {
            State::Closed { .. } => Admission::Go { trial: false },
            State::Open { until, cooldown } if now >= until => {
                inner.state = State::HalfOpen {
                    trial_out: true,
                    cooldown,
                };
                Admission::Go { trial: true }
            }
            State::Open { until, .. } => Admission::Hold(until),
            State::HalfOpen {
                trial_out: false,
                cooldown,
            } => {
                inner.state = State::HalfOpen {
                    trial_out: true,
                    cooldown,
                };
                Admission::Go { trial: true }
            }
            State::HalfOpen {
                trial_out: true, ..
            } => Admission::Hold(later(now, TRIAL_WAIT)),
        }
    }

    /// Records how an admitted call went. `base_cooldown` is how long the breaker stays open
    /// the first time; it doubles after each failed trial, up to `max_cooldown`.
    pub fn record(
        &self,
        trial: bool,
        signal: Signal,
        now: Instant,
        base_cooldown: Duration,
        max_cooldown: Duration,
    ) {
        let mut inner = self.lock();
        match signal {
            Signal::Neutral => {
                if trial {
                    // The trial told nothing: let another call try.
                    if let State::HalfOpen { cooldown, .. } = inner.state {
                        inner.state = State::HalfOpen {
                            trial_out: false,
                            cooldown,
                        };
                    }
                }
            }
            Signal::Healthy => {
                if trial || matches!(inner.state, State::Closed { .. }) {
                    inner.state = State::Closed { failures: 0 };
                }
            }
            Signal::Failing(reason) => {
                inner.last_error = Some(reason);
                inner.state = match inner.state {
                    State::HalfOpen { cooldown, .. } if trial => {
                        let cooldown = cooldown
                            .saturating_mul(2)
                            .min(max_cooldown.max(base_cooldown));
                        State::Open {
                            until: later(now, cooldown),
                            cooldown,
                        }
                    }
                    State::Closed { failures }
                        if failures.saturating_add(1) >= FAILURE_THRESHOLD =>
                    {
                        State::Open {
                            until: later(now, base_cooldown),
                            cooldown: base_cooldown,
                        }
                    }
                    State::Closed { failures } => State::Closed {
                        failures: failures.saturating_add(1),
                    },
                    // A call admitted before the breaker opened: it changes nothing.
                    ref other => clone_state(other),
                };
            }
        }
    }

    /// The breaker's state and the last failure seen.
    pub fn health(&self, now: Instant) -> (Circuit, Option<String>) {
        let inner = self.lock();
        let circuit = match inner.state {
            State::Closed { .. } => Circuit::Closed,
            State::Open { until, .. } if now >= until => Circuit::HalfOpen,
            State::Open { .. } => Circuit::Open,
            State::HalfOpen { .. } => Circuit::HalfOpen,
        };
        (circuit, inner.last_error.clone())
    }
}

/// An admitted call's duty to report back to the breaker. A trial call that ends without a
/// report (its task panicked or was dropped) counts as failed when its permit is dropped, so
/// that the breaker can never stay half-open with a trial that will never report.
#[derive(Debug)]
pub struct Permit {
    guard: Arc<PoolGuard>,
    trial: bool,
    base_cooldown: Duration,
    max_cooldown: Duration,
    reported: bool,
}

impl Permit {
    /// The permit of a call admitted with `trial`; see [`PoolGuard::record`] for the cool-downs.
    pub fn new(
        guard: Arc<PoolGuard>,
        trial: bool,
        base_cooldown: Duration,
        max_cooldown: Duration,
    ) -> Permit {
        Permit {
            guard,
            trial,
            base_cooldown,
            max_cooldown,
            reported: false,
        }
    }

    /// Records how the call went ([`PoolGuard::record`]).
    pub fn record(mut self, signal: Signal, now: Instant) {
        self.reported = true;
        self.guard.record(
            self.trial,
            signal,
            now,
            self.base_cooldown,
            self.max_cooldown,
        );
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.trial && !self.reported {
            self.guard.record(
                true,
                Signal::Failing("the trial call did not complete".to_owned()),
                Instant::now(),
                self.base_cooldown,
                self.max_cooldown,
            );
        }
    }
}

fn clone_state(state: &State) -> State {
    match *state {
        State::Closed { failures } => State::Closed { failures },
        State::Open { until, cooldown } => State::Open { until, cooldown },
        State::HalfOpen {
            trial_out,
            cooldown,
        } => State::HalfOpen {
            trial_out,
            cooldown,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(8);

    fn fail(guard: &PoolGuard, trial: bool, now: Instant) {
        guard.record(trial, Signal::Failing("503".into()), now, BASE, MAX);
    }

    #[test]
    fn the_rate_budget_spaces_calls_evenly_and_never_rejects() {
        let guard = PoolGuard::default();
        let now = Instant::now();
        let waits: Vec<Duration> = (0..5).map(|_| guard.reserve(Some(10.0), now)).collect();
        let spacing = Duration::from_secs_f64(SPACING_MARGIN / 10.0);
        for (i, wait) in waits.iter().enumerate() {
            assert_eq!(*wait, spacing * u32::try_from(i).unwrap());
        }
        // After a quiet period the next call goes at once.
        assert_eq!(
            guard.reserve(Some(10.0), now + Duration::from_secs(5)),
            Duration::ZERO
        );
        assert_eq!(guard.reserve(None, now), Duration::ZERO);
    }

    #[test]
    fn a_budget_never_puts_more_calls_than_allowed_in_any_second() {
        let guard = PoolGuard::default();
        let start = Instant::now();
        let slots: Vec<Duration> = (0..100).map(|_| guard.reserve(Some(7.0), start)).collect();
        for (i, first) in slots.iter().enumerate() {
            let in_window = slots[i..]
                .iter()
                .filter(|s| **s < *first + Duration::from_secs(1))
                .count();
            assert!(in_window <= 7, "{in_window} calls in one second");
        }
    }

    #[test]
    fn consecutive_failures_open_the_breaker_and_a_success_in_between_resets_them() {
        let guard = PoolGuard::default();
        let now = Instant::now();
        for _ in 0..FAILURE_THRESHOLD - 1 {
            fail(&guard, false, now);
        }
        guard.record(false, Signal::Healthy, now, BASE, MAX);
        for _ in 0..FAILURE_THRESHOLD - 1 {
            fail(&guard, false, now);
        }
        assert_eq!(guard.health(now).0, Circuit::Closed);
        fail(&guard, false, now);
        assert_eq!(guard.health(now), (Circuit::Open, Some("503".into())));
        assert_eq!(guard.admit(now), Admission::Hold(now + BASE));
    }

    #[test]
    fn one_trial_call_half_opens_and_its_outcome_decides() {
        let guard = PoolGuard::default();
        let now = Instant::now();
        for _ in 0..FAILURE_THRESHOLD {
            fail(&guard, false, now);
        }
        let later = now + BASE;
        assert_eq!(guard.admit(later), Admission::Go { trial: true });
        // While the trial is out, everyone else waits.
        assert!(matches!(guard.admit(later), Admission::Hold(_)));
        assert_eq!(guard.health(later).0, Circuit::HalfOpen);
        // The trial fails: open again, for twice as long.
        fail(&guard, true, later);
        assert_eq!(guard.admit(later), Admission::Hold(later + BASE * 2));
        let again = later + BASE * 2;
        assert_eq!(guard.admit(again), Admission::Go { trial: true });
        guard.record(true, Signal::Healthy, again, BASE, MAX);
        assert_eq!(guard.health(again).0, Circuit::Closed);
        assert_eq!(guard.admit(again), Admission::Go { trial: false });
    }

    #[test]
    fn the_cooldown_is_capped() {
        let guard = PoolGuard::default();
        let mut now = Instant::now();
        for _ in 0..FAILURE_THRESHOLD {
            fail(&guard, false, now);
        }
        for _ in 0..10 {
            let Admission::Hold(until) = guard.admit(now) else {
                panic!("expected the breaker to hold");
            };
            assert!(until - now <= MAX);
            now = until;
            assert_eq!(guard.admit(now), Admission::Go { trial: true });
            fail(&guard, true, now);
        }
    }

    #[test]
    fn a_neutral_trial_lets_another_call_try() {
        let guard = PoolGuard::default();
        let now = Instant::now();
        for _ in 0..FAILURE_THRESHOLD {
            fail(&guard, false, now);
        }
        let later = now + BASE;
        assert_eq!(guard.admit(later), Admission::Go { trial: true });
        guard.record(true, Signal::Neutral, later, BASE, MAX);
        assert_eq!(guard.admit(later), Admission::Go { trial: true });
    }

    #[test]
    fn a_trial_that_never_reports_opens_the_breaker_again_instead_of_leaving_it_half_open() {
        let guard = Arc::new(PoolGuard::default());
        let now = Instant::now();
        for _ in 0..FAILURE_THRESHOLD {
            fail(&guard, false, now);
        }
        let later = now + BASE;
        assert_eq!(guard.admit(later), Admission::Go { trial: true });
        let permit = Permit::new(guard.clone(), true, BASE, MAX);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _permit = permit;
            panic!("the call panicked");
        }));
        assert!(panicked.is_err());
        assert_eq!(guard.health(later).0, Circuit::Open);
        let Admission::Hold(until) = guard.admit(Instant::now()) else {
            panic!("expected the breaker to hold");
        };
        assert_eq!(guard.admit(until), Admission::Go { trial: true });
        // A permit that reports is not counted twice; a non-trial permit never reports on drop.
        Permit::new(guard.clone(), true, BASE, MAX).record(Signal::Healthy, until);
        assert_eq!(guard.health(until).0, Circuit::Closed);
        drop(Permit::new(guard.clone(), false, BASE, MAX));
        assert_eq!(
            guard.health(until),
            (
                Circuit::Closed,
                Some("the trial call did not complete".into())
            )
        );
    }

    #[test]
    fn extreme_rates_and_cooldowns_saturate_instead_of_overflowing() {
        let guard = PoolGuard::default();
        let now = Instant::now();
        for rate in [1e-300, 1e-20, f64::MIN_POSITIVE, 1e300, f64::MAX] {
            let first = guard.reserve(Some(rate), now);
            let second = guard.reserve(Some(rate), now);
            assert!(first <= MAX_SPACING * 10 && second <= MAX_SPACING * 10);
        }
        let huge = Duration::MAX;
        for _ in 0..FAILURE_THRESHOLD {
            guard.record(false, Signal::Failing("x".into()), now, huge, huge);
        }
        let Admission::Hold(until) = guard.admit(now) else {
            panic!("expected the breaker to hold");
        };
        assert!(until > now);
    }
}
