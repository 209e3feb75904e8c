//! Per-pool protection of a scheduler: a rate budget that spaces calls out, and a circuit
//! breaker that holds calls back while the scheduler keeps failing.
//!
//! Both are plain state machines driven with an explicit `now`, so they are unit-tested without
//! a clock. The rate budget never rejects: it hands out the next free slot, one every
//! `1 / requestsPerSecond` (with a small margin), and the caller waits for it. The breaker opens
//! after [`FAILURE_THRESHOLD`] consecutive failures (transport errors, timeouts, 408/429/5xx);
//! while open, calls are deferred, not failed; when the cool-down ends one trial call goes out
//! (half-open); its success closes the breaker, its failure opens it again for twice as long.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Consecutive failures that open the breaker.
pub const FAILURE_THRESHOLD: u32 = 5;
/// Margin added to the spacing of calls, so that arrival jitter on the wire cannot put more than
/// the budget into any one-second window.
const SPACING_MARGIN: f64 = 1.05;
/// How long a caller waits before asking again while a trial call is out.
const TRIAL_WAIT: Duration = Duration::from_millis(200);

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
        let spacing = Duration::from_secs_f64(SPACING_MARGIN / rate);
        let mut inner = self.lock();
        let slot = inner.next_free.map_or(now, |free| free.max(now));
        inner.next_free = Some(slot + spacing);
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
            } => Admission::Hold(now + TRIAL_WAIT),
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
                        let cooldown = (cooldown * 2).min(max_cooldown.max(base_cooldown));
                        State::Open {
                            until: now + cooldown,
                            cooldown,
                        }
                    }
                    State::Closed { failures } if failures + 1 >= FAILURE_THRESHOLD => {
                        State::Open {
                            until: now + base_cooldown,
                            cooldown: base_cooldown,
                        }
                    }
                    State::Closed { failures } => State::Closed {
                        failures: failures + 1,
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
}
