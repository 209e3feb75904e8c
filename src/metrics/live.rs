//! Gauges of what stands at scrape time: unfinished runs by pool and state, each pool's queue,
//! slots and limits, and its circuit breaker.
//!
//! They are read when Prometheus scrapes (one grouped store query, one message to each pool
//! actor, the adapter's breakers) instead of being kept up to date on every transition: the
//! store and the pool actors already hold these numbers exactly, a scrape every few seconds costs
//! less than bookkeeping on every step of every run, and a value read from the source cannot
//! drift from it (after a restart, a quarantined row or a retention sweep, say). The snapshot is
//! turned into a registry of its own for one encoding, so nothing is shared or locked between
//! scrapes.

use super::{PREFIX, PoolLabels, PoolStateLabels};
use crate::domain::ids::PoolName;
use crate::domain::state::RunState;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A pool's circuit breaker, as the `cattery_pool_breaker_state` gauge encodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    /// Calls flow (0).
    Closed,
    /// One trial call may go out (1).
    HalfOpen,
    /// Calls are held back (2).
    Open,
}

impl Breaker {
    /// The gauge value: 0 closed, 1 half open, 2 open (so `> 0` means "not healthy").
    pub fn value(self) -> i64 {
        match self {
            Breaker::Closed => 0,
            Breaker::HalfOpen => 1,
            Breaker::Open => 2,
        }
    }
}

/// One live pool at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSnapshot {
    /// The pool.
    pub name: PoolName,
    /// Runs waiting for a slot (those being admitted as queued included), as admission counts.
    pub queued: usize,
    /// Runs holding one of the pool's slots.
    pub in_flight: usize,
    /// The manifest's `limits.maxInFlight`.
    pub max_in_flight: usize,
    /// The manifest's `limits.maxQueued`.
    pub max_queued: usize,
    /// Its circuit breaker.
    pub breaker: Breaker,
}

/// What a scrape read from the store, the pool actors and the adapter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// The live pools (those with a pool actor).
    pub pools: Vec<PoolSnapshot>,
    /// Unfinished runs by pool and state; `None` when the store could not be read (the series
    /// are left out rather than reported as zero).
    pub runs: Option<Vec<RunCount>>,
}

/// Unfinished runs of one pool in one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCount {
    /// The pool.
    pub pool: PoolName,
    /// The state (an unfinished one).
    pub state: RunState,
    /// How many runs.
    pub runs: i64,
    /// How many of them are past their deadline (runs the gateway is not getting to: it fails
    /// a run when its deadline passes).
    pub past_deadline: i64,
}

fn usize_gauge(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The snapshot as a registry of gauges (every name under [`PREFIX`]).
pub(super) fn registry(snapshot: &Snapshot) -> Registry {
    let runs = Family::<PoolStateLabels, Gauge>::default();
    let past_deadline = Family::<PoolStateLabels, Gauge>::default();
    let queued = Family::<PoolLabels, Gauge>::default();
    let in_flight = Family::<PoolLabels, Gauge>::default();
    let max_in_flight = Family::<PoolLabels, Gauge>::default();
    let max_queued = Family::<PoolLabels, Gauge>::default();
    let breaker = Family::<PoolLabels, Gauge>::default();
    for pool in &snapshot.pools {
        let labels = PoolLabels {
            pool: pool.name.to_string(),
        };
        queued.get_or_create(&labels).set(usize_gauge(pool.queued));
        in_flight
            .get_or_create(&labels)
            .set(usize_gauge(pool.in_flight));
        max_in_flight
            .get_or_create(&labels)
            .set(usize_gauge(pool.max_in_flight));
        max_queued
            .get_or_create(&labels)
            .set(usize_gauge(pool.max_queued));
        breaker.get_or_create(&labels).set(pool.breaker.value());
    }
    let mut registry = Registry::with_prefix(PREFIX);
    if let Some(counts) = &snapshot.runs {
        // Every live pool shows every unfinished state, 0 included.
        for pool in &snapshot.pools {
            for state in RunState::ALL.into_iter().filter(|s| !s.is_final()) {
                let labels = PoolStateLabels {
                    pool: pool.name.to_string(),
                    state: state.as_str(),
                };
                runs.get_or_create(&labels).set(0);
                past_deadline.get_or_create(&labels).set(0);
            }
        }
        for count in counts {
            let labels = PoolStateLabels {
                pool: count.pool.to_string(),
                state: count.state.as_str(),
            };
            runs.get_or_create(&labels).set(count.runs);
            past_deadline
                .get_or_create(&labels)
                .set(count.past_deadline);
        }
        registry.register(
            "runs",
            "Unfinished runs by pool and state, as stored (read at scrape time)",
            runs,
        );
        registry.register(
            "runs_past_deadline",
            "Unfinished runs whose deadline has passed, by pool and state: the gateway fails a \
             run at its deadline, so a value that stays above 0 means runs it is not getting to",
            past_deadline,
        );
    }
    registry.register(
        "pool_queue_depth",
        "Runs waiting in cattery for a slot of the pool (those being admitted included)",
        queued,
    );
    registry.register(
        "pool_in_flight",
        "Runs holding one of the pool's slots (dispatching, pending or running)",
        in_flight,
    );
    registry.register(
        "pool_max_in_flight",
        "The pool's limits.maxInFlight",
        max_in_flight,
    );
    registry.register(
        "pool_max_queued",
        "The pool's limits.maxQueued (runs that may wait beyond the free slots)",
        max_queued,
    );
    registry.register(
        "pool_breaker_state",
        "The pool's circuit breaker: 0 closed, 1 half open (one trial call), 2 open (calls \
         held back)",
        breaker,
    );
    registry
}
