//! Database rows and their conversions to and from the domain types.

use super::StoreError;
use super::schema::{pools, run_events};
use crate::domain::ids::{JobId, PoolName};
use crate::domain::pool::PoolRecord;
use crate::domain::run::{Attempts, EventRecord, NewEvent, Progress, ReleaseState, RunRecord};
use crate::domain::state::RunState;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Binary, Bool, Nullable, Text};
use serde_json::{Map, Value};

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt { what: what.into() }
}

pub(crate) fn parse_pool_name(value: &str, what: &str) -> Result<PoolName, StoreError> {
    PoolName::parse(value).map_err(|_| corrupt(format!("{what}: pool name")))
}

pub(crate) fn parse_job_id(value: &str, what: &str) -> Result<JobId, StoreError> {
    JobId::parse(value).map_err(|_| corrupt(format!("{what}: job id")))
}

pub(crate) fn parse_state(value: &str, what: &str) -> Result<RunState, StoreError> {
    value
        .parse::<RunState>()
        .map_err(|_| corrupt(format!("{what}: state {value:?}")))
}

fn parse_opt_state(value: Option<&str>, what: &str) -> Result<Option<RunState>, StoreError> {
    value.map(|v| parse_state(v, what)).transpose()
}

/// A `pools` row (read and written whole).
#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = pools)]
#[diesel(treat_none_as_null = true)]
pub(crate) struct PoolRow {
    pub name: String,
    pub revision: i64,
    pub digest: String,
    pub format: String,
    pub manifest: String,
    pub secrets_sealed: Vec<u8>,
    pub secret_keys: String,
    pub warnings: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl PoolRow {
    pub(crate) fn from_record(record: PoolRecord) -> Self {
        Self {
            name: record.name.as_str().to_owned(),
            revision: record.revision,
            digest: record.digest,
            format: record.format,
            manifest: record.manifest,
            secrets_sealed: record.secrets_sealed,
            secret_keys: keys_json(&record.secret_keys),
            warnings: record.warnings,
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }

    pub(crate) fn into_record(self) -> Result<PoolRecord, StoreError> {
        let what = format!("pool {}", self.name);
        let name = parse_pool_name(&self.name, &what)?;
        let secret_keys: Vec<String> = serde_json::from_str(&self.secret_keys)
            .map_err(|_| corrupt(format!("{what}: secret_keys")))?;
        Ok(PoolRecord {
            name,
            revision: self.revision,
            digest: self.digest,
            format: self.format,
            manifest: self.manifest,
            secrets_sealed: self.secrets_sealed,
            secret_keys,
            warnings: self.warnings,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// The secret keys of a pool as stored: a JSON array of strings.
pub(crate) fn keys_json(keys: &[String]) -> String {
    serde_json::to_string(keys).unwrap_or_else(|_| "[]".to_owned())
}

/// A `run_events` row as read.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = run_events)]
pub(crate) struct EventRow {
    pub seq: i64,
    pub job_id: String,
    pub pool: String,
    pub at: i64,
    pub kind: String,
    pub from_state: Option<String>,
    pub to_state: Option<String>,
    pub detail: Option<String>,
}

impl EventRow {
    pub(crate) fn into_record(self) -> Result<EventRecord, StoreError> {
        let what = format!("event {}", self.seq);
        Ok(EventRecord {
            seq: self.seq,
            pool: parse_pool_name(&self.pool, &what)?,
            event: NewEvent {
                job_id: parse_job_id(&self.job_id, &what)?,
                at: self.at,
                kind: self.kind,
                from: parse_opt_state(self.from_state.as_deref(), &what)?,
                to: parse_opt_state(self.to_state.as_deref(), &what)?,
                detail: self.detail,
            },
        })
    }
}

/// A `runs` row as read (see `runs::RUN_COLUMNS` for the order of columns when writing).
#[derive(Debug, Clone, QueryableByName)]
pub(crate) struct RunRow {
    #[diesel(sql_type = Text)]
    pub job_id: String,
    #[diesel(sql_type = Text)]
    pub pool: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub kind: Option<String>,
    #[diesel(sql_type = Text)]
    pub labels: String,
    #[diesel(sql_type = Text)]
    pub request_digest: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub deadline_at: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    pub callback_url: Option<String>,
    #[diesel(sql_type = Text)]
    pub state: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub scheduler_state: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub external_id: Option<String>,
    #[diesel(sql_type = Text)]
    pub dispatch_id: String,
    #[diesel(sql_type = Text)]
    pub captures: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub progress: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub result: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub error: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub failure_cause: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub detail: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub heartbeat_at: Option<String>,
    #[diesel(sql_type = Bool)]
    pub cancel_requested: bool,
    #[diesel(sql_type = Text)]
    pub release_state: String,
    #[diesel(sql_type = BigInt)]
    pub attempts_dispatch: i64,
    #[diesel(sql_type = BigInt)]
    pub attempts_poll: i64,
    #[diesel(sql_type = BigInt)]
    pub attempts_release: i64,
    #[diesel(sql_type = BigInt)]
    pub attempts_redispatch: i64,
    #[diesel(sql_type = BigInt)]
    pub poll_errors: i64,
    #[diesel(sql_type = BigInt)]
    pub poll_interval_ms: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub next_at: Option<i64>,
    #[diesel(sql_type = Bool)]
    pub unmapped_seen: bool,
    #[diesel(sql_type = BigInt)]
    pub manifest_revision: i64,
    #[diesel(sql_type = BigInt)]
    pub created_at: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub dispatched_at: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub finished_at: Option<i64>,
    #[diesel(sql_type = BigInt)]
    pub updated_at: i64,
    #[diesel(sql_type = Text)]
    pub fields: String,
    #[diesel(sql_type = BigInt)]
    pub version: i64,
    #[diesel(sql_type = BigInt)]
    pub priority: i64,
}

fn json_object(text: &str, what: &str) -> Result<Map<String, Value>, StoreError> {
    serde_json::from_str(text).map_err(|_| corrupt(what.to_owned()))
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Serialising maps, values and plain structs to a string cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

impl RunRow {
    pub(crate) fn from_record(run: &RunRecord) -> Self {
        Self {
            job_id: run.job_id.as_str().to_owned(),
            pool: run.pool.as_str().to_owned(),
            kind: run.kind.clone(),
            labels: to_json(&run.labels),
            request_digest: run.request_digest.clone(),
            deadline_at: run.deadline_at,
            callback_url: run.callback_url.clone(),
            state: run.state.as_str().to_owned(),
            scheduler_state: run.scheduler_state.clone(),
            external_id: run.external_id.clone(),
            dispatch_id: run.dispatch_id.clone(),
            captures: to_json(&run.captures),
            progress: run.progress.as_ref().map(to_json),
            result: run.result.as_ref().map(to_json),
            error: run.error.clone(),
            failure_cause: run.failure_cause.clone(),
            detail: run.detail.clone(),
            heartbeat_at: run.heartbeat_at.clone(),
            cancel_requested: run.cancel_requested,
            release_state: run.release.as_str().to_owned(),
            attempts_dispatch: run.attempts.dispatch,
            attempts_poll: run.attempts.poll,
            attempts_release: run.attempts.release,
            attempts_redispatch: run.attempts.redispatch,
            poll_errors: run.poll_errors,
            poll_interval_ms: run.poll_interval_ms,
            next_at: run.next_at,
            unmapped_seen: run.unmapped_seen,
            manifest_revision: run.manifest_revision,
            created_at: run.created_at,
            dispatched_at: run.dispatched_at,
            finished_at: run.finished_at,
            updated_at: run.updated_at,
            fields: to_json(&run.fields),
            version: run.version,
            priority: i64::from(run.priority),
        }
    }

    pub(crate) fn into_record(self) -> Result<RunRecord, StoreError> {
        let what = format!("run {}", self.job_id);
        let field = |name: &str| format!("{what}: {name}");
        let progress = self
            .progress
            .as_deref()
            .map(|text| {
                serde_json::from_str::<Progress>(text).map_err(|_| corrupt(field("progress")))
            })
            .transpose()?;
        let result = self
            .result
            .as_deref()
            .map(|text| serde_json::from_str::<Value>(text).map_err(|_| corrupt(field("result"))))
            .transpose()?;
        Ok(RunRecord {
            job_id: parse_job_id(&self.job_id, &what)?,
            pool: parse_pool_name(&self.pool, &what)?,
            kind: self.kind,
            labels: json_object(&self.labels, &field("labels"))?,
            request_digest: self.request_digest,
            deadline_at: self.deadline_at,
            callback_url: self.callback_url,
            state: parse_state(&self.state, &what)?,
            scheduler_state: self.scheduler_state,
            external_id: self.external_id,
            dispatch_id: self.dispatch_id,
            captures: json_object(&self.captures, &field("captures"))?,
            progress,
            result,
            error: self.error,
            failure_cause: self.failure_cause,
            detail: self.detail,
            heartbeat_at: self.heartbeat_at,
            fields: json_object(&self.fields, &field("fields"))?,
            cancel_requested: self.cancel_requested,
            release: ReleaseState::parse(&self.release_state).ok_or_else(|| {
                corrupt(field(&format!("release_state {:?}", self.release_state)))
            })?,
            attempts: Attempts {
                dispatch: self.attempts_dispatch,
                poll: self.attempts_poll,
                release: self.attempts_release,
                redispatch: self.attempts_redispatch,
            },
            poll_errors: self.poll_errors,
            poll_interval_ms: self.poll_interval_ms,
            next_at: self.next_at,
            unmapped_seen: self.unmapped_seen,
            manifest_revision: self.manifest_revision,
            created_at: self.created_at,
            dispatched_at: self.dispatched_at,
            finished_at: self.finished_at,
            updated_at: self.updated_at,
            version: self.version,
            priority: i32::try_from(self.priority)
                .map_err(|_| corrupt(field(&format!("priority {}", self.priority))))?,
        })
    }
}

/// The `failureCause` of a run whose stored row could not be read back.
pub const CORRUPT_CAUSE: &str = "corrupt";

impl RunRow {
    /// The columns of this row that do not parse back into a run (names only, never values).
    pub(crate) fn corrupt_columns(&self) -> Vec<&'static str> {
        let object = |text: &str| serde_json::from_str::<Map<String, Value>>(text).is_ok();
        let optional = |text: &Option<String>, ok: fn(&str) -> bool| text.as_deref().is_none_or(ok);
        [
            ("job_id", JobId::parse(&self.job_id).is_ok()),
            ("pool", PoolName::parse(&self.pool).is_ok()),
            ("state", self.state.parse::<RunState>().is_ok()),
            (
                "release_state",
                ReleaseState::parse(&self.release_state).is_some(),
            ),
            ("labels", object(&self.labels)),
            ("captures", object(&self.captures)),
            ("fields", object(&self.fields)),
            (
                "progress",
                optional(&self.progress, |t| {
                    serde_json::from_str::<Progress>(t).is_ok()
                }),
            ),
            (
                "result",
                optional(&self.result, |t| serde_json::from_str::<Value>(t).is_ok()),
            ),
        ]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(column, _)| column)
        .collect()
    }

    /// A corrupt row made readable as a failed run: every column that does not parse is reset
    /// to its empty value, the run is `failed` with cause [`CORRUPT_CAUSE`], and nothing will
    /// call its scheduler again (its captures and job may be what is broken). The version is the
    /// stored one, so the repair commits only over the row as it was read. Returns the repaired
    /// run and the state it was in, when that could be read.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the key or the pool name is what is broken: such a row
    /// cannot be addressed as a run at all.
    pub(crate) fn quarantine(
        mut self,
        columns: &[&str],
        now: i64,
    ) -> Result<(RunRecord, Option<RunState>), StoreError> {
        let was = self.state.parse::<RunState>().ok();
        for column in columns {
            match *column {
                "labels" => self.labels = "{}".to_owned(),
                "captures" => self.captures = "{}".to_owned(),
                "fields" => self.fields = "{}".to_owned(),
                "progress" => self.progress = None,
                "result" => self.result = None,
                _ => {}
            }
        }
        self.state = RunState::Failed.as_str().to_owned();
        self.release_state = ReleaseState::NotNeeded.as_str().to_owned();
        self.failure_cause = Some(CORRUPT_CAUSE.to_owned());
        self.error = Some(format!(
            "the stored run could not be read ({} unreadable); cattery marked it failed and will \
             not call its scheduler again",
            columns.join(", ")
        ));
        self.next_at = None;
        self.finished_at = Some(self.finished_at.unwrap_or(now));
        self.updated_at = now;
        Ok((self.into_record()?, was))
    }
}

/// One `state, count` pair of a grouped count.
#[derive(Debug, Clone, QueryableByName)]
pub(crate) struct StateCount {
    #[diesel(sql_type = Text)]
    pub state: String,
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

/// A count of runs in one state of one pool, and of those past their deadline.
#[derive(Debug, Clone, QueryableByName)]
pub(crate) struct PoolStateCount {
    #[diesel(sql_type = Text)]
    pub pool: String,
    #[diesel(sql_type = Text)]
    pub state: String,
    #[diesel(sql_type = BigInt)]
    pub n: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub overdue: Option<i64>,
}

/// A `run_jobs` body column alone.
#[derive(Debug, Clone, QueryableByName)]
pub(crate) struct JobSealedRow {
    #[diesel(sql_type = Binary)]
    pub job_sealed: Vec<u8>,
}

/// A `run_jobs` row: whose body, and the body.
#[derive(Debug, Clone, QueryableByName)]
pub(crate) struct JobBodyRow {
    #[diesel(sql_type = Text)]
    pub job_id: String,
    #[diesel(sql_type = Binary)]
    pub job_sealed: Vec<u8>,
}

/// The sequence number an event append returns.
#[derive(Debug, Clone, QueryableByName)]
pub(crate) struct SeqRow {
    #[diesel(sql_type = BigInt)]
    pub seq: i64,
}

/// A job id column alone.
#[derive(Debug, Clone, QueryableByName)]
pub(crate) struct JobIdRow {
    #[diesel(sql_type = Text)]
    pub job_id: String,
}

/// A run's row version alone.
#[derive(Debug, Clone, QueryableByName)]
pub(crate) struct VersionRow {
    #[diesel(sql_type = BigInt)]
    pub version: i64,
}
