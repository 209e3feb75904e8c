//! The JSON shapes of the API (RunView, PoolView, events), kept apart from domain and rows.
//!
//! Every shape derives `ToSchema`: the OpenAPI document (`GET /openapi.json`) is generated from
//! these types. The request bodies at the end are described here too; their handlers read them
//! by hand, so that every problem of a body is reported with its path.

use crate::domain::run::{Attempts, EventRecord, Millis, Progress, ReleaseState, RunRecord};
use crate::domain::state::RunState;
use crate::manifest::Warning;
use crate::scheduler::probe::{AuthOutcome, Classified, Finding, Probe};
use crate::service::pools::{PoolSummary, stored_warnings};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// RFC 3339 UTC with milliseconds.
pub fn timestamp(millis: Millis) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(millis)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The canonical, scheduler-independent view of a run (SPEC §2.2). It never holds the job.
/// Absent values are `null`; times are RFC 3339 UTC.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunView {
    /// The caller's id of the run.
    job_id: String,
    /// The pool it runs on.
    pool: String,
    /// The run's kind, if the submission gave one.
    #[schema(required = true)]
    kind: Option<String>,
    /// The canonical state.
    state: RunState,
    /// The scheduler's own status word, as last read.
    #[schema(required = true)]
    scheduler_state: Option<String>,
    /// The scheduler's id of the job, when mapped.
    #[schema(required = true)]
    external_id: Option<String>,
    /// The id the job was dispatched under (`jobId`, or `jobId-<n>` after a re-dispatch).
    dispatch_id: String,
    /// The submission's labels.
    #[schema(value_type = Object)]
    labels: serde_json::Map<String, Value>,
    /// Its place among its tenant's queued runs: higher first (-1000 to 1000).
    priority: i32,
    /// A queued run read by `GET /v1/runs/{jobId}`: how many runs of its tenant wait ahead of
    /// it in its pool's queue (slots go by fair share across tenants, then priority, then age);
    /// null otherwise.
    #[schema(required = true)]
    queue_position: Option<u64>,
    /// Subtask counts, when the scheduler reports them.
    #[schema(required = true)]
    progress: Option<Progress>,
    /// The job's result, once done.
    #[schema(required = true, value_type = Value)]
    result: Option<Value>,
    /// The error text of a failed run.
    #[schema(required = true)]
    error: Option<String>,
    /// Why a run failed (`dispatch_rejected`, `deadline`, `lost`, `poll_errors`, `scheduler`,
    /// `cancelled`, or the mapped cause).
    #[schema(required = true)]
    failure_cause: Option<String>,
    /// Mapped detail text.
    #[schema(required = true)]
    detail: Option<String>,
    /// The last heartbeat the scheduler reported.
    #[schema(required = true)]
    heartbeat_at: Option<String>,
    /// Extra channels mapped by `poll.map.fields` (absent when there are none).
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    #[schema(value_type = Object, required = false)]
    fields: serde_json::Map<String, Value>,
    /// A cancel was asked for.
    cancel_requested: bool,
    /// The scheduler confirmed the job's release.
    released: bool,
    /// Call counters.
    attempts: Attempts,
    /// The manifest revision the run was dispatched with.
    manifest_revision: i64,
    /// When the run's deadline passes, if it has one.
    #[schema(required = true)]
    deadline_at: Option<String>,
    /// When the run was accepted.
    created_at: String,
    /// When the scheduler took the job.
    #[schema(required = true)]
    dispatched_at: Option<String>,
    /// When the run reached a final state.
    #[schema(required = true)]
    finished_at: Option<String>,
    /// The last change.
    updated_at: String,
}

impl RunView {
    /// The view with the run's place in its pool's queue, where the pool told it.
    #[must_use]
    pub fn with_queue_position(mut self, place: Option<usize>) -> Self {
        self.queue_position = place.and_then(|ahead| u64::try_from(ahead).ok());
        self
    }
}

impl From<&RunRecord> for RunView {
    fn from(run: &RunRecord) -> Self {
        RunView {
            job_id: run.job_id.to_string(),
            pool: run.pool.to_string(),
            kind: run.kind.clone(),
            state: run.state,
            scheduler_state: run.scheduler_state.clone(),
            external_id: run.external_id.clone(),
            dispatch_id: run.dispatch_id.clone(),
            labels: run.labels.clone(),
            priority: run.priority,
            queue_position: None,
            progress: run.progress,
            result: run.result.clone(),
            error: run.error.clone(),
            failure_cause: run.failure_cause.clone(),
            detail: run.detail.clone(),
            heartbeat_at: run.heartbeat_at.clone(),
            fields: crate::domain::channels::visible(&run.fields),
            cancel_requested: run.cancel_requested,
            released: run.release == ReleaseState::Done,
            attempts: run.attempts,
            manifest_revision: run.manifest_revision,
            deadline_at: run.deadline_at.map(timestamp),
            created_at: timestamp(run.created_at),
            dispatched_at: run.dispatched_at.map(timestamp),
            finished_at: run.finished_at.map(timestamp),
            updated_at: timestamp(run.updated_at),
        }
    }
}

/// Counts of a pool's runs by state.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = PoolStats)]
pub struct PoolStatsView {
    /// Waiting for a slot.
    queued: i64,
    /// Dispatching, pending or running.
    in_flight: i64,
    /// Done.
    done: i64,
    /// Failed.
    failed: i64,
    /// Cancelled.
    cancelled: i64,
}

/// The pool's call health.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = PoolHealth)]
pub struct HealthView {
    /// The circuit breaker: `closed`, `open` or `half_open`.
    #[schema(example = "closed")]
    circuit: &'static str,
    /// The last failure seen (without secrets).
    #[schema(required = true)]
    last_error: Option<String>,
}

/// A registered pool (SPEC §2.1). Never holds secret values.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolView {
    /// The pool's name.
    name: String,
    /// Increases with every manifest or secrets change.
    revision: i64,
    /// SHA-256 of the manifest as registered (canonical JSON).
    digest: String,
    /// `cattery/v1` or `cat-factory`.
    #[schema(example = "cattery/v1")]
    format: String,
    /// The keys of the secret bundle (never the values).
    secret_keys: Vec<String>,
    /// Non-fatal remarks about the manifest.
    warnings: Vec<Warning>,
    /// When it was first registered.
    created_at: String,
    /// The last change.
    updated_at: String,
    /// Its runs by state.
    stats: PoolStatsView,
    /// Its call health.
    health: HealthView,
}

impl From<&PoolSummary> for PoolView {
    fn from(summary: &PoolSummary) -> Self {
        let record = &summary.record;
        let stats = &summary.stats;
        PoolView {
            name: record.name.to_string(),
            revision: record.revision,
            digest: record.digest.clone(),
            format: record.format.clone(),
            secret_keys: record.secret_keys.clone(),
            warnings: stored_warnings(record),
            created_at: timestamp(record.created_at),
            updated_at: timestamp(record.updated_at),
            stats: PoolStatsView {
                queued: stats.queued,
                in_flight: stats.in_flight,
                done: stats.done,
                failed: stats.failed,
                cancelled: stats.cancelled,
            },
            health: HealthView {
                circuit: summary.health.circuit.as_str(),
                last_error: summary.health.last_error.clone(),
            },
        }
    }
}

/// One entry of a run's history.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventView {
    /// The event's position in the log (what `after` and `Last-Event-ID` take).
    seq: i64,
    /// When it happened.
    at: String,
    /// What happened (`transition`, `retry`, `unmapped_status`, `release`, …).
    #[serde(rename = "type")]
    kind: String,
    /// The state before a transition.
    #[schema(required = true)]
    from: Option<RunState>,
    /// The state after a transition.
    #[schema(required = true)]
    to: Option<RunState>,
    /// What it was about.
    #[schema(required = true)]
    detail: Option<String>,
}

impl From<&EventRecord> for EventView {
    fn from(record: &EventRecord) -> Self {
        EventView {
            seq: record.seq,
            at: timestamp(record.event.at),
            kind: record.event.kind.clone(),
            from: record.event.from,
            to: record.event.to,
            detail: record.event.detail.clone(),
        }
    }
}

/// `GET /v1/pools`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolList {
    /// Every registered pool.
    pub pools: Vec<PoolView>,
}

/// A page of `GET /v1/runs`, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunPage {
    /// The runs.
    pub runs: Vec<RunView>,
    /// The `after` cursor of the next page; `null` on the last page.
    #[schema(required = true)]
    pub next: Option<String>,
}

/// A page of a run's history, oldest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventPage {
    /// The events.
    pub events: Vec<EventView>,
    /// The `after` of the next page; `null` on the last page.
    #[schema(required = true)]
    pub next: Option<i64>,
}

/// `GET /healthz`: the process answers.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Liveness {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// `GET /readyz`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Readiness {
    /// `ready`, or `not_ready` (then the answer is 503).
    #[schema(example = "ready")]
    pub status: &'static str,
    /// The database answers.
    pub database: bool,
    /// `sqlite` or `postgres`.
    #[schema(example = "sqlite")]
    pub backend: &'static str,
    /// The supervisor actor runs.
    pub supervisor: bool,
    /// Shutdown began (new runs are refused).
    pub shutting_down: bool,
    /// How long loading pools and resuming runs took at start.
    pub recovery_ms: u64,
}

/// The probe's poll of a job that cannot exist.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbePoll {
    /// The answer's status; `null` when no answer came.
    #[schema(required = true)]
    pub http_status: Option<u16>,
    /// How the answer reads.
    pub classified: Classified,
    /// What a healthy pool answers: always `notFound`.
    pub expected: Classified,
}

/// `POST /v1/pools/{name}/probe` (SPEC §2.1): what a poll of a job that cannot exist says
/// about the pool. Never holds a secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeReport {
    /// The pool probed.
    pub pool: String,
    /// Reachable, credentials not refused, and the poll read as `notFound`.
    pub ok: bool,
    /// The scheduler answered the poll over HTTP.
    pub reachable: bool,
    /// What became of the credentials.
    pub auth: AuthOutcome,
    /// The poll.
    pub poll: ProbePoll,
    /// How long the poll took.
    pub latency_ms: u64,
    /// What went wrong.
    pub problems: Vec<Finding>,
    /// What the manifest leaves out (`no_release`, `no_state_mapping`, …).
    pub gaps: Vec<Finding>,
}

impl ProbeReport {
    /// The report of a probe of pool `pool`.
    pub fn new(pool: &crate::domain::ids::PoolName, probe: &Probe) -> Self {
        ProbeReport {
            pool: pool.to_string(),
            ok: probe.ok(),
            reachable: probe.reachable,
            auth: probe.auth,
            poll: ProbePoll {
                http_status: probe.http_status,
                classified: probe.classified,
                expected: Classified::NotFound,
            },
            latency_ms: probe.latency_ms,
            problems: probe.problems.clone(),
            gaps: probe.gaps.clone(),
        }
    }
}

/// The runner-protocol facade's `GET /health` (and gated `GET /`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HarnessHealth {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// The optional job fields the default pool's jobs understand.
    pub capabilities: Vec<String>,
}

/// The short answer of `POST /jobs` and `DELETE /jobs/{id}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobAccepted {
    /// The job's id.
    pub job_id: String,
    /// `running`, `done`, `failed`, or an eviction word (`lost`, `evicted`, …).
    pub state: String,
    /// The optional job fields the job's pool understands (on `POST /jobs` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
}

/// The facade's error answer: the executor harness's shape, not problem+json, because that is
/// what harness clients read.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HarnessError {
    /// What went wrong.
    pub error: String,
    /// The request id of an internal error (to find it in the log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// The harness job view of `GET /jobs/{id}` (CATFACTORY.md §6.4). Channels a manifest maps
/// (`poll.map.fields`) are members too, so other members may appear.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    /// The job's id.
    id: String,
    /// `running`, `done`, `failed`, or an eviction word (`lost`, `evicted`, …).
    state: String,
    /// When the scheduler took the job (epoch milliseconds).
    #[serde(rename = "startedAt")]
    started_at: Option<i64>,
    /// The last heartbeat (epoch milliseconds).
    #[serde(rename = "heartbeatAt")]
    heartbeat_at: Option<f64>,
    /// Subtask counts.
    progress: Option<Progress>,
    /// The result of a done job.
    #[schema(value_type = Object, required = false)]
    result: Option<Value>,
    /// The error of a failed job.
    error: Option<String>,
    /// One of Cat-Factory's failure causes.
    #[serde(rename = "failureCause")]
    failure_cause: Option<String>,
    /// Detail text.
    detail: Option<String>,
    /// The capabilities the scheduler reported at dispatch.
    capabilities: Option<Vec<String>>,
}

/// Body of `PUT /v1/pools/{name}`: a manifest and its secret bundle, or Cat-Factory's
/// registration envelope (`config` instead of `manifest`).
#[derive(Debug, Serialize, ToSchema)]
pub struct PoolBody {
    /// A cattery/v1 or Cat-Factory manifest: an object, or YAML or JSON text.
    #[schema(value_type = Value, required = false)]
    manifest: Option<Value>,
    /// Cat-Factory's envelope: `{"kind": "manifest", "manifest": …}` (instead of `manifest`).
    #[schema(value_type = Object, required = false)]
    config: Option<Value>,
    /// The whole secret bundle: key → value. Omitted on a replace: the stored bundle stays.
    secrets: Option<std::collections::BTreeMap<String, String>>,
}

/// Body of `PUT /v1/pools/{name}/secrets`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretsBody {
    /// The whole secret bundle: key → value.
    secrets: std::collections::BTreeMap<String, String>,
}

/// Body of `POST /v1/pools/{pool}/runs`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubmissionBody {
    /// The caller's id: `^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$`, globally unique.
    job_id: String,
    /// A kind of 1-100 printable characters.
    kind: Option<String>,
    /// The job: an object of at most 1 MiB, sealed at rest, never shown.
    #[schema(value_type = Object, required = false)]
    job: Option<Value>,
    /// Labels: string values.
    labels: Option<std::collections::BTreeMap<String, String>>,
    /// The run's deadline in seconds.
    deadline_seconds: Option<u64>,
    /// Its place among its tenant's queued runs: -1000 to 1000, higher first (default 0).
    priority: Option<i32>,
}

/// Body of `POST /jobs`: the executor harness job spec. Every member is forwarded with the job.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobSpec {
    /// The job's id.
    #[serde(rename = "jobId")]
    job_id: String,
    /// The job's kind (routing matches on it).
    kind: Option<String>,
}
