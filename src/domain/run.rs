//! The run record: everything cattery knows about one run, as persisted and as reported.

use super::ids::{JobId, PoolName};
use super::state::RunState;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Milliseconds since the Unix epoch (UTC). All stored times use it.
pub type Millis = i64;

/// Where a finished run stands with its release call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseState {
    /// The run is not finished yet, so release does not apply yet.
    NotYet,
    /// Finished; the release call still has to be made (or retried).
    Pending,
    /// The scheduler confirmed the release.
    Done,
    /// The release budget is spent without a confirmation.
    GaveUp,
    /// The manifest has no release operation, or the run never reached the scheduler.
    NotNeeded,
}

impl ReleaseState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseState::NotYet => "not_yet",
            ReleaseState::Pending => "pending",
            ReleaseState::Done => "done",
            ReleaseState::GaveUp => "gave_up",
            ReleaseState::NotNeeded => "not_needed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            ReleaseState::NotYet,
            ReleaseState::Pending,
            ReleaseState::Done,
            ReleaseState::GaveUp,
            ReleaseState::NotNeeded,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// Subtask counts reported by a scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Finished subtasks.
    pub completed: i64,
    /// Subtasks under way.
    pub in_progress: i64,
    /// All subtasks.
    pub total: i64,
}

/// Call counters of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempts {
    /// Dispatch calls made (including retries).
    pub dispatch: i64,
    /// Poll calls made.
    pub poll: i64,
    /// Release calls made.
    pub release: i64,
    /// Re-dispatches after the scheduler lost the job.
    pub redispatch: i64,
}

/// One run, as persisted. The sealed job body is stored beside it, never inside it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// The caller's id, unique across pools.
    pub job_id: JobId,
    /// The pool the run was submitted to.
    pub pool: PoolName,
    /// The caller's job kind, if given.
    pub kind: Option<String>,
    /// Caller labels (string values).
    pub labels: Map<String, Value>,
    /// SHA-256 (hex) of the submission (pool, kind, job, labels, deadline, callback), for idempotency.
    pub request_digest: String,
    /// The run's deadline, if any.
    pub deadline_at: Option<Millis>,
    /// Where state changes are POSTed, if anywhere.
    pub callback_url: Option<String>,
    /// The canonical state.
    pub state: RunState,
    /// The scheduler's own status word, as last seen.
    pub scheduler_state: Option<String>,
    /// An id the scheduler gave the job, when the manifest captures one as `externalId`.
    pub external_id: Option<String>,
    /// The id the current dispatch used: `jobId`, then `jobId-<n>` after a lost-job re-dispatch.
    pub dispatch_id: String,
    /// Values captured from the dispatch answer (`capture.*`).
    pub captures: Map<String, Value>,
    /// Last reported progress.
    pub progress: Option<Progress>,
    /// The mapped result, once done.
    pub result: Option<Value>,
    /// A human-readable error, when failed.
    pub error: Option<String>,
    /// Why the run failed (see the API reference for the causes cattery decides).
    pub failure_cause: Option<String>,
    /// Extra diagnostic text mapped from the scheduler.
    pub detail: Option<String>,
    /// The scheduler's last heartbeat, as it reported it.
    pub heartbeat_at: Option<String>,
    /// Extra channels mapped by `poll.map.fields`: the latest value each one had.
    pub fields: Map<String, Value>,
    /// True once a caller asked for cancellation.
    pub cancel_requested: bool,
    /// Release progress.
    pub release: ReleaseState,
    /// Call counters.
    pub attempts: Attempts,
    /// Failed calls in a row in the current phase (unreadable polls, retried dispatches or
    /// releases); reset by every success and every phase change.
    pub poll_errors: i64,
    /// The current poll interval (adaptive).
    pub poll_interval_ms: i64,
    /// When the next scheduler call (dispatch retry, poll, release) is due.
    pub next_at: Option<Millis>,
    /// True once an `unmapped_status` event was recorded for this run.
    pub unmapped_seen: bool,
    /// The manifest revision of the last call.
    pub manifest_revision: i64,
    /// Its place among the queued runs of its tenant: higher first (`priority` at submission,
    /// -1000 to 1000, default 0).
    pub priority: i32,
    /// Creation time.
    pub created_at: Millis,
    /// When the scheduler accepted the job.
    pub dispatched_at: Option<Millis>,
    /// When the run reached a final state.
    pub finished_at: Option<Millis>,
    /// Last change.
    pub updated_at: Millis,
    /// The stored row's version: how many commits it has seen. A commit carries the version it
    /// was derived from, and the store refuses it when the row has moved on since (another
    /// writer changed the run), instead of overwriting a newer state.
    pub version: i64,
}

impl RunRecord {
    /// A new run waiting for a slot in `pool`: dispatched under its own id, nothing counted,
    /// no deadline, manifest revision 1 (callers set what they know).
    pub fn queued(job_id: JobId, pool: PoolName, now: Millis) -> RunRecord {
        RunRecord {
            dispatch_id: job_id.to_string(),
            job_id,
            pool,
            kind: None,
            labels: Map::new(),
            request_digest: String::new(),
            deadline_at: None,
            callback_url: None,
            state: RunState::Queued,
            scheduler_state: None,
            external_id: None,
            captures: Map::new(),
            progress: None,
            result: None,
            error: None,
            failure_cause: None,
            detail: None,
            heartbeat_at: None,
            fields: Map::new(),
            cancel_requested: false,
            release: ReleaseState::NotYet,
            attempts: Attempts::default(),
            poll_errors: 0,
            poll_interval_ms: 0,
            next_at: None,
            unmapped_seen: false,
            manifest_revision: 1,
            priority: 0,
            created_at: now,
            dispatched_at: None,
            finished_at: None,
            updated_at: now,
            version: 0,
        }
    }

    /// This record as the store holds it once a commit of it succeeded: one version later.
    #[must_use]
    pub fn committed(mut self) -> RunRecord {
        self.version += 1;
        self
    }

    /// True while the run still needs work from cattery: unfinished, or finished with a release due.
    pub fn needs_work(&self) -> bool {
        !self.state.is_final() || self.release == ReleaseState::Pending
    }
}

/// One entry of a run's append-only history, before it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The run it belongs to.
    pub job_id: JobId,
    /// When it happened.
    pub at: Millis,
    /// `created`, `transition`, `retry`, `unmapped_status`, `release`, `poll_error`, …
    pub kind: String,
    /// The state before, for transitions.
    pub from: Option<RunState>,
    /// The state after, for transitions.
    pub to: Option<RunState>,
    /// Operator-facing text; never a secret or a job body.
    pub detail: Option<String>,
}

/// A stored event, with its global sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// Global, strictly increasing sequence number (the SSE event id).
    pub seq: i64,
    /// The run's pool (for filtering streams).
    pub pool: PoolName,
    /// The event itself.
    pub event: NewEvent,
}

/// The current time in epoch milliseconds.
pub fn now_millis() -> Millis {
    chrono::Utc::now().timestamp_millis()
}
