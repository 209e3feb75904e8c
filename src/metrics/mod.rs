//! Prometheus metrics: the one registry of a gateway, its counter and histogram families, and
//! the encoding of a scrape.
//!
//! Only this module names `prometheus_client`. The engine reports into it through a few plain
//! calls ([`Metrics::run_events`] from the store's writer, [`Metrics::scheduler_call`] from the
//! adapter, [`Metrics::store_committed`], [`Metrics::set_recovery`]); gauges of what stands now
//! (runs by state, queues, breakers) are read at scrape time into a [`Snapshot`] instead of being
//! kept up to date on the hot path (see [`live`]). Process metrics come from `/proc` through a
//! collector (see [`process`]).
//!
//! Labels are bounded: a pool name (validated, chosen by the operator), an operation, a status
//! class, a run state. Never a job id, a URL, a token or any other value of a job.

pub mod live;
pub mod process;

use crate::domain::ids::PoolName;
use crate::domain::run::EventRecord;
use crate::domain::state::RunState;
use prometheus_client::encoding::{EncodeLabelSet, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

pub use live::{Breaker, PoolSnapshot, RunCount, Snapshot};

/// The prefix of every cattery series (process metrics keep their conventional `process_`).
pub const PREFIX: &str = "cattery";

/// Bucket bounds of scheduler call latencies (seconds): from a loopback answer to a call that
/// ran into a long `timeoutMs`.
const CALL_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Bucket bounds of store commit latencies (seconds): an fsync on a fast disk takes well under
/// a millisecond, a loaded PostgreSQL server up to seconds.
const COMMIT_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Bucket bounds of the writes per store transaction, up to the writer's batch limit (256).
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// The operations of scheduler calls, as the `op` label spells them: the manifest's operation
/// names, and `token` for OAuth2 token requests.
pub const CALL_OPS: [&str; 6] = [
    "dispatch",
    "lookup",
    "poll",
    "release",
    "failureLog",
    "token",
];

/// The `class` label of scheduler calls: the answer's status class, `transport` when no answer
/// came (connection refused or reset, timeout, name resolution), `refused` when the egress
/// policy stopped the call before it went out.
pub const CALL_CLASSES: [&str; 7] = ["1xx", "2xx", "3xx", "4xx", "5xx", "transport", "refused"];

/// The phases whose retries are counted (`op` of `cattery_scheduler_retries_total`).
pub const RETRY_OPS: [&str; 3] = ["dispatch", "poll", "release"];

/// How a scheduler call ended, for its `class` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallClass {
    /// The scheduler answered with this HTTP status.
    Status(u16),
    /// No answer: the transport failed or the call timed out.
    Transport,
    /// The egress policy refused the call; nothing was sent.
    Refused,
}

impl CallClass {
    /// The index of the class in [`CALL_CLASSES`].
    fn index(self) -> usize {
        match self {
            CallClass::Status(status) => match status {
                100..=199 => 0,
                200..=299 => 1,
                300..=399 => 2,
                400..=499 => 3,
                // Anything else a server may send (5xx, and nonsense above) is a server fault.
                _ => 4,
            },
            CallClass::Transport => 5,
            CallClass::Refused => 6,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        CALL_CLASSES.get(self.index()).copied().unwrap_or("5xx")
    }
}

/// The label set of a per-pool series (also of the gauges read at scrape time).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PoolLabels {
    pub(crate) pool: String,
}

/// The label set of a per-pool, per-state series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PoolStateLabels {
    pub(crate) pool: String,
    pub(crate) state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolOpLabels {
    pool: String,
    op: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    pool: String,
    op: &'static str,
    class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// A histogram family's constructor: a plain function, so the family type can be named.
type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

fn call_histogram() -> Histogram {
    Histogram::new(CALL_BUCKETS)
}

/// The families with a `pool` label.
#[derive(Debug)]
struct PoolFamilies {
    transitions: Family<PoolStateLabels, Counter>,
    unmapped: Family<PoolLabels, Counter>,
    retries: Family<PoolOpLabels, Counter>,
    calls: Family<CallLabels, Counter>,
    call_duration: HistogramFamily<PoolOpLabels>,
}

/// One pool's series, taken from the families once, so that counting is an atomic add: no label
/// set is built and no lock of a family is taken on the hot path.
#[derive(Debug)]
struct PoolSeries {
    /// By the index of the state in [`RunState::ALL`]; created up front (at 0), so that
    /// `increase()` over the first transition of a pool works.
    transitions: [Counter; 7],
    /// Created up front, for the same reason (an alert on the first unmapped status).
    unmapped: Counter,
    /// By the index in [`RETRY_OPS`]; created up front.
    retries: [Counter; 3],
    /// By the index in [`CALL_OPS`], then in [`CALL_CLASSES`]; created on first use, so that a
    /// pool shows the operations and classes it really had, not 42 zeros.
    calls: [[OnceLock<Counter>; 7]; 6],
    /// By the index in [`CALL_OPS`]; created on first use.
    durations: [OnceLock<Histogram>; 6],
}

impl PoolSeries {
    fn new(families: &PoolFamilies, pool: &PoolName) -> Self {
        let name = pool.to_string();
        let transitions = RunState::ALL.map(|state| {
            families.transitions.get_or_create_owned(&PoolStateLabels {
                pool: name.clone(),
                state: state.as_str(),
            })
        });
        let retries = RETRY_OPS.map(|op| {
            families.retries.get_or_create_owned(&PoolOpLabels {
                pool: name.clone(),
                op,
            })
        });
        Self {
            transitions,
            unmapped: families
                .unmapped
                .get_or_create_owned(&PoolLabels { pool: name }),
            retries,
            calls: Default::default(),
            durations: Default::default(),
        }
    }
}

/// The metrics of one gateway: a registry and its families. One per [`crate::app::Application`]
/// (never a process-wide static, so that several gateways in one test process count apart).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    families: PoolFamilies,
    commit_duration: Histogram,
    commit_batch: Histogram,
    recovery: Gauge<f64, AtomicU64>,
    /// Each pool's series. Read-locked per count (a map lookup by name, no allocation); written
    /// once per pool, and when a pool is forgotten.
    pools: RwLock<HashMap<PoolName, Arc<PoolSeries>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every family registered, and the process collector.
    pub fn new() -> Self {
        let families = PoolFamilies {
            transitions: Family::default(),
            unmapped: Family::default(),
            retries: Family::default(),
            calls: Family::default(),
            call_duration: Family::new_with_constructor(call_histogram),
        };
        let commit_duration = Histogram::new(COMMIT_BUCKETS);
        let commit_batch = Histogram::new(BATCH_BUCKETS);
        let recovery = Gauge::<f64, AtomicU64>::default();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(process::ProcessCollector));
        let ours = registry.sub_registry_with_prefix(PREFIX);
        ours.register(
            "build",
            "The running cattery build (always 1; the version is the label)",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        ours.register(
            "run_transitions",
            "Runs that entered a state (every committed transition, the first queued included)",
            families.transitions.clone(),
        );
        ours.register(
            "unmapped_statuses",
            "Scheduler status words that neither the statusMap nor the built-in vocabulary \
             knows (recorded once per run as an unmapped_status event; read as running)",
            families.unmapped.clone(),
        );
        ours.register(
            "scheduler_retries",
            "Retries of scheduler calls decided for runs (each one a retry event of its run), \
             by phase: dispatch (with the lookups before it), poll, release",
            families.retries.clone(),
        );
        ours.register(
            "scheduler_calls",
            "HTTP requests sent to schedulers, by operation and answer class (1xx-5xx; \
             transport: no answer; refused: stopped by the egress policy)",
            families.calls.clone(),
        );
        ours.register_with_unit(
            "scheduler_call_duration",
            "Time from sending a scheduler request to the end of its answer's body",
            Unit::Seconds,
            families.call_duration.clone(),
        );
        ours.register_with_unit(
            "store_commit_duration",
            "Duration of each write transaction of the store's writer (a group of run inserts \
             and commits), its durable commit included",
            Unit::Seconds,
            commit_duration.clone(),
        );
        ours.register(
            "store_commit_batch_size",
            "Run inserts and commits written together in each write transaction",
            commit_batch.clone(),
        );
        ours.register_with_unit(
            "recovery_duration",
            "How long loading the pools and resuming the unfinished runs took at start",
            Unit::Seconds,
            recovery.clone(),
        );
        Self {
            registry,
            families,
            commit_duration,
            commit_batch,
            recovery,
            pools: RwLock::new(HashMap::new()),
        }
    }

    /// The series of `pool`, created at the first call.
    fn pool(&self, pool: &PoolName) -> Arc<PoolSeries> {
        if let Some(series) = self
            .pools
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(pool)
        {
            return series.clone();
        }
        let mut pools = self
            .pools
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pools
            .entry(pool.clone())
            .or_insert_with(|| Arc::new(PoolSeries::new(&self.families, pool)))
            .clone()
    }

    /// Makes sure `pool`'s counters exist (at 0) before anything happened in it.
    pub fn know_pool(&self, pool: &PoolName) {
        self.pool(pool);
    }

    /// Drops every series of a deleted pool; it starts from zero if registered again.
    pub fn forget_pool(&self, pool: &PoolName) {
        // Held until the families are cleared too: a count arriving meanwhile waits, then
        // creates the pool's series afresh, instead of adding to series about to be dropped.
        let mut pools = self
            .pools
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pools.remove(pool).is_none() {
            return;
        }
        let name = pool.to_string();
        let families = &self.families;
        for state in RunState::ALL {
            families.transitions.remove(&PoolStateLabels {
                pool: name.clone(),
                state: state.as_str(),
            });
        }
        families.unmapped.remove(&PoolLabels { pool: name.clone() });
        for op in RETRY_OPS {
            families.retries.remove(&PoolOpLabels {
                pool: name.clone(),
                op,
            });
        }
        for op in CALL_OPS {
            families.call_duration.remove(&PoolOpLabels {
                pool: name.clone(),
                op,
            });
            for class in CALL_CLASSES {
                families.calls.remove(&CallLabels {
                    pool: name.clone(),
                    op,
                    class,
                });
            }
        }
        drop(pools);
    }

    /// Counts the events a committed write appended for one run of `pool`, whose state after
    /// the write is `state`: each transition into its target state, each unmapped status, each
    /// retry (by the phase the run is in: `dispatching` → dispatch, `pending`/`running` → poll,
    /// final → release, which is where the lifecycle decides retries).
    ///
    /// Called by the store's writer once the transaction is durable, so the counts are those of
    /// the run histories (`GET /v1/runs/{jobId}/events`), exactly.
    pub fn run_events(&self, pool: &PoolName, state: RunState, events: &[EventRecord]) {
        if events.is_empty() {
            return;
        }
        let series = self.pool(pool);
        for record in events {
            let event = &record.event;
            match event.kind.as_str() {
                "transition" => {
                    if let Some(counter) = event
                        .to
                        .and_then(|to| RunState::ALL.iter().position(|s| *s == to))
                        .and_then(|index| series.transitions.get(index))
                    {
                        counter.inc();
                    }
                }
                "unmapped_status" => {
                    series.unmapped.inc();
                }
                "retry" => {
                    let phase = match state {
                        RunState::Queued | RunState::Dispatching => 0,
                        RunState::Pending | RunState::Running => 1,
                        RunState::Done | RunState::Failed | RunState::Cancelled => 2,
                    };
                    if let Some(counter) = series.retries.get(phase) {
                        counter.inc();
                    }
                }
                _ => {}
            }
        }
    }

    /// Counts one HTTP request to `pool`'s scheduler (`op` one of [`CALL_OPS`]) and its
    /// latency.
    pub fn scheduler_call(
        &self,
        pool: &PoolName,
        op: &'static str,
        class: CallClass,
        elapsed: Duration,
    ) {
        let series = self.pool(pool);
        let Some(index) = CALL_OPS.iter().position(|known| *known == op) else {
            // Not an operation this module knows: left out rather than an unbounded label.
            tracing::debug!(
                op,
                "a scheduler call of an unknown operation is not counted"
            );
            return;
        };
        let class_index = class.index();
        if let Some(slot) = series.calls.get(index).and_then(|row| row.get(class_index)) {
            slot.get_or_init(|| {
                self.families.calls.get_or_create_owned(&CallLabels {
                    pool: pool.to_string(),
                    op,
                    class: class.as_str(),
                })
            })
            .inc();
        }
        if let Some(slot) = series.durations.get(index) {
            slot.get_or_init(|| {
                self.families
                    .call_duration
                    .get_or_create_owned(&PoolOpLabels {
                        pool: pool.to_string(),
                        op,
                    })
            })
            .observe(elapsed.as_secs_f64());
        }
    }

    /// Records one write transaction of the store: how many requests it held, how long it took.
    pub fn store_committed(&self, writes: usize, elapsed: Duration) {
        #[expect(
            clippy::cast_precision_loss,
            reason = "a batch holds at most a few hundred writes"
        )]
        self.commit_batch.observe(writes as f64);
        self.commit_duration.observe(elapsed.as_secs_f64());
    }

    /// Records how long the recovery at start took.
    pub fn set_recovery(&self, elapsed: Duration) {
        self.recovery.set(elapsed.as_secs_f64());
    }

    /// The exposition of every series: the registry's, then the gauges of `snapshot`.
    ///
    /// # Errors
    /// Only when writing to the string fails (it does not).
    pub fn encode(&self, snapshot: &Snapshot, format: Format) -> Result<String, std::fmt::Error> {
        for pool in &snapshot.pools {
            // A pool that had no activity yet still shows its counters at 0.
            self.know_pool(&pool.name);
        }
        let now = live::registry(snapshot);
        let mut out = String::new();
        match format {
            Format::OpenMetrics => {
                text::encode_registry(&mut out, &self.registry)?;
                text::encode_registry(&mut out, &now)?;
                text::encode_eof(&mut out)?;
            }
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
                prometheus_client::encoding::prometheus_text::encode(&mut out, &now)?;
            }
        }
        Ok(out)
    }
}

/// The two text formats a scrape may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text (what Prometheus asks for first), ending with `# EOF`.
    OpenMetrics,
    /// The Prometheus text format 0.0.4 (what a plain `curl` gets).
    Prometheus,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it names it, else the
    /// Prometheus text format.
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    /// The `Content-Type` of the format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::JobId;
    use crate::domain::run::NewEvent;

    fn record(pool: &PoolName, kind: &str, to: Option<RunState>) -> EventRecord {
        EventRecord {
            seq: 1,
            pool: pool.clone(),
            event: NewEvent {
                job_id: JobId::parse("job-secret-id").unwrap(),
                at: 0,
                kind: kind.to_owned(),
                from: None,
                to,
                detail: Some("detail".to_owned()),
            },
        }
    }

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn events_are_counted_by_pool_state_and_phase() {
        let metrics = Metrics::new();
        let pool = PoolName::parse("k8s").unwrap();
        metrics.run_events(
            &pool,
            RunState::Running,
            &[
                record(&pool, "transition", Some(RunState::Running)),
                record(&pool, "unmapped_status", None),
                record(&pool, "retry", None),
            ],
        );
        metrics.run_events(
            &pool,
            RunState::Done,
            &[
                record(&pool, "transition", Some(RunState::Done)),
                record(&pool, "retry", None),
            ],
        );
        let text = metrics
            .encode(&Snapshot::default(), Format::Prometheus)
            .unwrap();
        assert_eq!(
            line(
                &text,
                r#"cattery_run_transitions_total{pool="k8s",state="running"}"#
            ),
            Some(r#"cattery_run_transitions_total{pool="k8s",state="running"} 1"#)
        );
        assert!(text.contains(r#"cattery_run_transitions_total{pool="k8s",state="done"} 1"#));
        assert!(text.contains(r#"cattery_run_transitions_total{pool="k8s",state="queued"} 0"#));
        assert!(text.contains(r#"cattery_unmapped_statuses_total{pool="k8s"} 1"#));
        assert!(text.contains(r#"cattery_scheduler_retries_total{pool="k8s",op="poll"} 1"#));
        assert!(text.contains(r#"cattery_scheduler_retries_total{pool="k8s",op="release"} 1"#));
        assert!(!text.contains("job-secret-id"), "{text}");
    }

    #[test]
    fn calls_are_counted_by_class_and_timed() {
        let metrics = Metrics::new();
        let pool = PoolName::parse("p").unwrap();
        for (class, n) in [
            (CallClass::Status(201), 2),
            (CallClass::Status(503), 1),
            (CallClass::Transport, 1),
            (CallClass::Refused, 1),
        ] {
            for _ in 0..n {
                metrics.scheduler_call(&pool, "dispatch", class, Duration::from_millis(20));
            }
        }
        metrics.scheduler_call(&pool, "nonsense", CallClass::Status(200), Duration::ZERO);
        let text = metrics
            .encode(&Snapshot::default(), Format::OpenMetrics)
            .unwrap();
        for expected in [
            r#"cattery_scheduler_calls_total{pool="p",op="dispatch",class="2xx"} 2"#,
            r#"cattery_scheduler_calls_total{pool="p",op="dispatch",class="5xx"} 1"#,
            r#"cattery_scheduler_calls_total{pool="p",op="dispatch",class="transport"} 1"#,
            r#"cattery_scheduler_calls_total{pool="p",op="dispatch",class="refused"} 1"#,
            r#"cattery_scheduler_call_duration_seconds_count{pool="p",op="dispatch"} 5"#,
            r#"cattery_scheduler_call_duration_seconds_bucket{le="0.025",pool="p",op="dispatch"} 5"#,
            "# UNIT cattery_scheduler_call_duration_seconds seconds",
        ] {
            assert!(text.contains(expected), "{expected} in\n{text}");
        }
        assert!(!text.contains("nonsense"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn a_forgotten_pool_leaves_no_series_and_starts_afresh() {
        let metrics = Metrics::new();
        let gone = PoolName::parse("gone").unwrap();
        let kept = PoolName::parse("kept").unwrap();
        for pool in [&gone, &kept] {
            metrics.scheduler_call(pool, "poll", CallClass::Status(200), Duration::ZERO);
            metrics.run_events(
                pool,
                RunState::Queued,
                &[record(pool, "transition", Some(RunState::Queued))],
            );
        }
        metrics.forget_pool(&gone);
        let text = metrics
            .encode(&Snapshot::default(), Format::Prometheus)
            .unwrap();
        assert!(!text.contains(r#"pool="gone""#), "{text}");
        assert!(
            text.contains(r#"cattery_scheduler_calls_total{pool="kept",op="poll",class="2xx"} 1"#)
        );
        metrics.run_events(
            &gone,
            RunState::Queued,
            &[record(&gone, "transition", Some(RunState::Queued))],
        );
        let text = metrics
            .encode(&Snapshot::default(), Format::Prometheus)
            .unwrap();
        assert!(text.contains(r#"cattery_run_transitions_total{pool="gone",state="queued"} 1"#));
    }

    #[test]
    fn the_accept_header_picks_the_format() {
        assert_eq!(Format::from_accept(None), Format::Prometheus);
        assert_eq!(
            Format::from_accept(Some("text/plain;version=0.0.4")),
            Format::Prometheus
        );
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3"
            )),
            Format::OpenMetrics
        );
        assert_eq!(CallClass::Status(404).as_str(), "4xx");
        assert_eq!(CallClass::Status(999).as_str(), "5xx");
    }
}
