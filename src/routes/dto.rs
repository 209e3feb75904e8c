//! The JSON shapes of the API (RunView, PoolView, events), kept apart from domain and rows.

use crate::domain::run::{Attempts, EventRecord, Millis, Progress, ReleaseState, RunRecord};
use crate::manifest::Warning;
use crate::service::pools::{PoolSummary, stored_warnings};
use serde::Serialize;
use serde_json::Value;

/// RFC 3339 UTC with milliseconds.
pub fn timestamp(millis: Millis) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(millis)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The canonical, scheduler-independent view of a run (SPEC §2.2). It never holds the job.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    job_id: String,
    pool: String,
    kind: Option<String>,
    state: &'static str,
    scheduler_state: Option<String>,
    external_id: Option<String>,
    dispatch_id: String,
    labels: serde_json::Map<String, Value>,
    priority: i32,
    progress: Option<Progress>,
    result: Option<Value>,
    error: Option<String>,
    failure_cause: Option<String>,
    detail: Option<String>,
    heartbeat_at: Option<String>,
    /// Extra channels mapped by `poll.map.fields` (absent when there are none).
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    fields: serde_json::Map<String, Value>,
    cancel_requested: bool,
    released: bool,
    attempts: Attempts,
    manifest_revision: i64,
    deadline_at: Option<String>,
    created_at: String,
    dispatched_at: Option<String>,
    finished_at: Option<String>,
    updated_at: String,
}

impl From<&RunRecord> for RunView {
    fn from(run: &RunRecord) -> Self {
        RunView {
            job_id: run.job_id.to_string(),
            pool: run.pool.to_string(),
            kind: run.kind.clone(),
            state: run.state.as_str(),
            scheduler_state: run.scheduler_state.clone(),
            external_id: run.external_id.clone(),
            dispatch_id: run.dispatch_id.clone(),
            labels: run.labels.clone(),
            priority: run.priority,
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
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatsView {
    queued: i64,
    in_flight: i64,
    done: i64,
    failed: i64,
    cancelled: i64,
}

/// The pool's call health.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthView {
    circuit: &'static str,
    last_error: Option<String>,
}

/// A registered pool (SPEC §2.1). Never holds secret values.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolView {
    name: String,
    revision: i64,
    digest: String,
    format: String,
    secret_keys: Vec<String>,
    warnings: Vec<Warning>,
    created_at: String,
    updated_at: String,
    stats: PoolStatsView,
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
#[derive(Debug, Serialize)]
pub struct EventView {
    seq: i64,
    at: String,
    #[serde(rename = "type")]
    kind: String,
    from: Option<&'static str>,
    to: Option<&'static str>,
    detail: Option<String>,
}

impl From<&EventRecord> for EventView {
    fn from(record: &EventRecord) -> Self {
        EventView {
            seq: record.seq,
            at: timestamp(record.event.at),
            kind: record.event.kind.clone(),
            from: record.event.from.map(|s| s.as_str()),
            to: record.event.to.map(|s| s.as_str()),
            detail: record.event.detail.clone(),
        }
    }
}
