//! Queries on the `runs` table and on `run_jobs`, the sealed job bodies kept apart from it (raw
//! SQL over both backends; see `schema.rs` for why).
//!
//! A body lives in its own table because it is the bulk of a run (an encrypted blob of a few
//! kilobytes) and is written once and read rarely, while the run's row is rewritten by every
//! commit: kept in `runs`, every commit rewrote the blob with it.

use super::conn::{Bind, DbConn, PgBind, cached, raw_query};
use super::models::{
    JobBodyRow, JobIdRow, JobSealedRow, PoolStateCount, RunRow, StateCount, VersionRow,
    parse_job_id, parse_state,
};
use super::{RunFilter, RunPage, RunWithBody, StoreError, UnfinishedCount};
use crate::domain::ids::{JobId, PoolName};
use crate::domain::run::{Millis, ReleaseState, RunRecord};
use crate::domain::state::RunState;
use base64::Engine as _;
use diesel::RunQueryDsl as _;
use std::collections::HashMap;
use std::sync::LazyLock;

/// Every column of `runs`, in the order of [`RunRow`]'s fields and of
/// [`run_binds`]. Keep it in step with `migrations/*/…/up.sql`.
pub(crate) const RUN_COLUMNS: [&str; 36] = [
    "job_id",
    "pool",
    "kind",
    "labels",
    "request_digest",
    "deadline_at",
    "callback_url",
    "state",
    "scheduler_state",
    "external_id",
    "dispatch_id",
    "captures",
    "progress",
    "result",
    "error",
    "failure_cause",
    "detail",
    "heartbeat_at",
    "cancel_requested",
    "release_state",
    "attempts_dispatch",
    "attempts_poll",
    "attempts_release",
    "attempts_redispatch",
    "poll_errors",
    "poll_interval_ms",
    "next_at",
    "unmapped_seen",
    "manifest_revision",
    "created_at",
    "dispatched_at",
    "finished_at",
    "updated_at",
    "fields",
    "version",
    "priority",
];

/// Columns a commit never changes, left out of the `UPDATE`'s `SET` list.
///
/// The rule: a column belongs here when nothing assigns it after the run was built for
/// `insert_run` — no lifecycle step, no service call, no repair (the quarantine of a corrupt row
/// resets `labels`, so `labels` is not here) and no test that commits a changed value
/// (`tests/api/runs_idempotency.rs` commits a legacy `request_digest`, so that is not here
/// either). What a commit passes for these columns is ignored: the stored value stays. Leaving
/// them out matters most for indexed columns (`pool`, `created_at`, the key), whose index
/// entries SQLite rewrites whenever they appear in a `SET` list, changed or not.
pub(crate) const IMMUTABLE: [&str; 7] = [
    "job_id",
    "pool",
    "kind",
    "deadline_at",
    "callback_url",
    "created_at",
    "priority",
];

/// The row version: a commit moves it up by one, and only from the version the caller read.
pub(crate) const VERSION: &str = "version";

/// The binds of a row, in [`RUN_COLUMNS`] order.
pub(crate) fn run_binds(row: RunRow) -> Vec<Bind> {
    vec![
        Bind::Text(row.job_id),
        Bind::Text(row.pool),
        Bind::OptText(row.kind),
        Bind::Text(row.labels),
        Bind::Text(row.request_digest),
        Bind::OptBigInt(row.deadline_at),
        Bind::OptText(row.callback_url),
        Bind::Text(row.state),
        Bind::OptText(row.scheduler_state),
        Bind::OptText(row.external_id),
        Bind::Text(row.dispatch_id),
        Bind::Text(row.captures),
        Bind::OptText(row.progress),
        Bind::OptText(row.result),
        Bind::OptText(row.error),
        Bind::OptText(row.failure_cause),
        Bind::OptText(row.detail),
        Bind::OptText(row.heartbeat_at),
        Bind::Bool(row.cancel_requested),
        Bind::Text(row.release_state),
        Bind::BigInt(row.attempts_dispatch),
        Bind::BigInt(row.attempts_poll),
        Bind::BigInt(row.attempts_release),
        Bind::BigInt(row.attempts_redispatch),
        Bind::BigInt(row.poll_errors),
        Bind::BigInt(row.poll_interval_ms),
        Bind::OptBigInt(row.next_at),
        Bind::Bool(row.unmapped_seen),
        Bind::BigInt(row.manifest_revision),
        Bind::BigInt(row.created_at),
        Bind::OptBigInt(row.dispatched_at),
        Bind::OptBigInt(row.finished_at),
        Bind::BigInt(row.updated_at),
        Bind::Text(row.fields),
        Bind::BigInt(row.version),
        Bind::BigInt(row.priority),
    ]
}

static SELECT: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {} FROM runs", RUN_COLUMNS.join(", ")));

static GET: LazyLock<String> = LazyLock::new(|| format!("{} WHERE job_id = ?", *SELECT));

/// Runs whose ids are in a JSON array (SQLite).
static GET_MANY_SQLITE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} WHERE job_id IN (SELECT value FROM json_each(?))",
        *SELECT
    )
});

/// Runs whose ids are in an array (PostgreSQL).
static GET_MANY_PG: LazyLock<String> =
    LazyLock::new(|| format!("{} WHERE job_id = ANY(?)", *SELECT));

/// Job bodies of the runs whose ids are in a JSON array (SQLite).
const BODIES_SQLITE: &str =
    "SELECT job_id, job_sealed FROM run_jobs WHERE job_id IN (SELECT value FROM json_each(?))";

/// Job bodies of the runs whose ids are in an array (PostgreSQL).
const BODIES_PG: &str = "SELECT job_id, job_sealed FROM run_jobs WHERE job_id = ANY(?)";

static INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO runs ({}) VALUES ({}) ON CONFLICT (job_id) DO NOTHING",
        RUN_COLUMNS.join(", "),
        vec!["?"; RUN_COLUMNS.len()].join(", ")
    )
});

static UPDATE: LazyLock<String> = LazyLock::new(|| {
    let sets: Vec<String> = RUN_COLUMNS
        .iter()
        .filter(|c| !IMMUTABLE.contains(c))
        .map(|c| {
            if *c == VERSION {
                format!("{c} = {c} + 1")
            } else {
                format!("{c} = ?")
            }
        })
        .collect();
    format!(
        "UPDATE runs SET {} WHERE job_id = ? AND {VERSION} = ?",
        sets.join(", ")
    )
});

const STORED_VERSION: &str = "SELECT version FROM runs WHERE job_id = ?";

const INSERT_BODY: &str = "INSERT INTO run_jobs (job_id, job_sealed) VALUES (?, ?)";
const GET_BODY: &str = "SELECT job_sealed FROM run_jobs WHERE job_id = ?";
const DELETE_BODY: &str = "DELETE FROM run_jobs WHERE job_id = ?";
const REPLACE_BODY: &str = "UPDATE run_jobs SET job_sealed = ? WHERE job_id = ? AND job_sealed = ?";
const BODY_IDS: &str = "SELECT job_id FROM run_jobs ORDER BY job_id";
const COUNT_BY_STATE: &str = "SELECT state, COUNT(*) AS n FROM runs WHERE pool = ? GROUP BY state";

/// `'queued', 'dispatching', 'pending', 'running'`, for SQL.
static UNFINISHED_STATES: LazyLock<String> = LazyLock::new(|| {
    RunState::ALL
        .iter()
        .filter(|s| !s.is_final())
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
});

/// Unfinished runs by pool and state, and how many of them are past their deadline (one `?`:
/// now): read through the `state` index, never a finished run.
static UNFINISHED_COUNTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT pool, state, COUNT(*) AS n, \
         SUM(CASE WHEN deadline_at <= ? THEN 1 ELSE 0 END) AS overdue \
         FROM runs WHERE state IN ({}) GROUP BY pool, state",
        *UNFINISHED_STATES
    )
});

/// `'done', 'failed', 'cancelled'`, for SQL.
static FINAL_STATES: LazyLock<String> = LazyLock::new(|| {
    RunState::ALL
        .iter()
        .filter(|s| s.is_final())
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
});

fn load(conn: &mut DbConn, sql: &str, binds: Vec<Bind>) -> Result<Vec<RunRecord>, StoreError> {
    let rows: Vec<RunRow> = raw_query(conn, sql, binds).load(conn)?;
    rows.into_iter().map(RunRow::into_record).collect()
}

fn text(value: &str) -> Bind {
    Bind::Text(value.to_owned())
}

/// Inserts a new run, and its sealed job body when it has one.
pub(crate) fn insert(
    conn: &mut DbConn,
    run: &RunRecord,
    job_sealed: Option<Vec<u8>>,
) -> Result<Inserted, StoreError> {
    let rows = cached!(&INSERT, run_binds(RunRow::from_record(run))).execute(conn)?;
    if rows == 0 {
        // A run with this id exists: nothing of this one is written.
        return Ok(Inserted::Exists);
    }
    if let Some(body) = job_sealed {
        cached!(
            INSERT_BODY,
            vec![text(run.job_id.as_str()), Bind::Binary(body)],
        )
        .execute(conn)?;
    }
    Ok(Inserted::New)
}

/// What [`insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inserted {
    /// The run was written.
    New,
    /// A run with this id already exists; nothing was written.
    Exists,
}

/// What [`update`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Updated {
    /// The row was overwritten; its version went up by one.
    Done,
    /// No run has this id.
    Missing,
    /// The row's version is no longer the one the caller read: it was not touched.
    Stale {
        /// The version stored now.
        stored: i64,
    },
}

/// Overwrites every column of an existing run that a commit may change (all but
/// [`IMMUTABLE`]), if the stored row still has `run.version`; the row's version then goes up by
/// one.
pub(crate) fn update(conn: &mut DbConn, run: &RunRecord) -> Result<Updated, StoreError> {
    let binds: Vec<Bind> = run_binds(RunRow::from_record(run))
        .into_iter()
        .zip(RUN_COLUMNS)
        .filter(|(_, column)| !IMMUTABLE.contains(column) && *column != VERSION)
        .map(|(bind, _)| bind)
        .chain([text(run.job_id.as_str()), Bind::BigInt(run.version)])
        .collect();
    if cached!(&UPDATE, binds).execute(conn)? > 0 {
        return Ok(Updated::Done);
    }
    let rows: Vec<VersionRow> =
        cached!(STORED_VERSION, vec![text(run.job_id.as_str())]).load(conn)?;
    Ok(match rows.first() {
        Some(row) => Updated::Stale {
            stored: row.version,
        },
        None => Updated::Missing,
    })
}

/// One run by id.
pub(crate) fn get(conn: &mut DbConn, job_id: &JobId) -> Result<Option<RunRecord>, StoreError> {
    let rows: Vec<RunRow> = cached!(&GET, vec![text(job_id.as_str())]).load(conn)?;
    rows.into_iter().next().map(RunRow::into_record).transpose()
}

/// Runs by id, in no particular order (unknown ids are left out), in one prepared statement
/// whatever the number of ids: they are bound as one value (a JSON array on SQLite, an array on
/// PostgreSQL), so no list meets a backend's limit on bound parameters.
pub(crate) fn get_many(conn: &mut DbConn, job_ids: &[JobId]) -> Result<Vec<RunRecord>, StoreError> {
    if job_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<RunRow> = match conn {
        DbConn::Pg(pg) => {
            cached!(&GET_MANY_PG, vec![PgBind::Texts(id_strings(job_ids))]).load(pg)?
        }
        DbConn::Sqlite(_) => {
            cached!(&GET_MANY_SQLITE, vec![Bind::Text(id_json(job_ids)?)]).load(conn)?
        }
    };
    rows.into_iter().map(RunRow::into_record).collect()
}

/// Runs by id with their sealed job bodies, in no particular order (unknown ids are left out;
/// a run without a body comes with `None`): [`get_many`], then the bodies the same way.
pub(crate) fn get_many_with_bodies(
    conn: &mut DbConn,
    job_ids: &[JobId],
) -> Result<Vec<RunWithBody>, StoreError> {
    let runs = get_many(conn, job_ids)?;
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    let bodies: Vec<JobBodyRow> = match conn {
        DbConn::Pg(pg) => cached!(BODIES_PG, vec![PgBind::Texts(id_strings(job_ids))]).load(pg)?,
        DbConn::Sqlite(_) => {
            cached!(BODIES_SQLITE, vec![Bind::Text(id_json(job_ids)?)]).load(conn)?
        }
    };
    let mut bodies: HashMap<String, Vec<u8>> = bodies
        .into_iter()
        .map(|row| (row.job_id, row.job_sealed))
        .collect();
    Ok(runs
        .into_iter()
        .map(|run| {
            let body = bodies.remove(run.job_id.as_str());
            (run, body)
        })
        .collect())
}

fn id_strings(job_ids: &[JobId]) -> Vec<String> {
    job_ids.iter().map(|id| id.as_str().to_owned()).collect()
}

/// The ids as one JSON array, for `json_each(?)`.
fn id_json(job_ids: &[JobId]) -> Result<String, StoreError> {
    serde_json::to_string(&id_strings(job_ids)).map_err(|e| StoreError::Invalid {
        what: format!("a list of run ids: {e}"),
    })
}

/// A page of runs, newest first.
pub(crate) fn list(conn: &mut DbConn, filter: &RunFilter) -> Result<RunPage, StoreError> {
    let limit = filter.limit.clamp(1, super::MAX_PAGE);
    let mut sql = format!("{} WHERE 1 = 1", *SELECT);
    let mut binds = Vec::new();
    if let Some(pool) = &filter.pool {
        sql.push_str(" AND pool = ?");
        binds.push(Bind::Text(pool.as_str().to_owned()));
    }
    if let Some(state) = filter.state {
        sql.push_str(" AND state = ?");
        binds.push(Bind::Text(state.as_str().to_owned()));
    }
    if let Some(cursor) = &filter.after {
        let (created_at, job_id) = decode_cursor(cursor)?;
        sql.push_str(" AND (created_at < ? OR (created_at = ? AND job_id < ?))");
        binds.extend([
            Bind::BigInt(created_at),
            Bind::BigInt(created_at),
            Bind::Text(job_id),
        ]);
    }
    sql.push_str(" ORDER BY created_at DESC, job_id DESC LIMIT ?");
    // One more than asked, to know whether another page follows.
    binds.push(Bind::BigInt(i64::from(limit) + 1));
    let mut runs = load(conn, &sql, binds)?;
    let more = runs.len() > limit as usize;
    runs.truncate(limit as usize);
    let next = match runs.last() {
        Some(last) if more => Some(encode_cursor(last.created_at, &last.job_id)),
        _ => None,
    };
    Ok(RunPage { runs, next })
}

/// Every run state and release state, quoted for SQL: a row holding anything else is corrupt.
static ALL_STATES: LazyLock<(String, String)> = LazyLock::new(|| {
    let quote = |names: Vec<&str>| {
        names
            .into_iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let releases = [
        ReleaseState::NotYet,
        ReleaseState::Pending,
        ReleaseState::Done,
        ReleaseState::GaveUp,
        ReleaseState::NotNeeded,
    ];
    (
        quote(RunState::ALL.iter().map(|s| s.as_str()).collect()),
        quote(releases.iter().map(|r| r.as_str()).collect()),
    )
});

/// The `WHERE` condition of [`load_unfinished`]: runs that still need work, and rows whose
/// state words are unknown. It is also the condition of the partial index `runs_needing_work`
/// (migration `2026-12-05-000000_runs_needing_work`), word for word and with no bound value, so
/// that both databases read those runs from that index alone.
pub(crate) static NEEDS_WORK: LazyLock<String> = LazyLock::new(|| {
    let (states, releases) = &*ALL_STATES;
    format!(
        "(state IN ({}) OR release_state = '{}' OR state NOT IN ({states}) \
         OR release_state NOT IN ({releases}))",
        *UNFINISHED_STATES,
        ReleaseState::Pending.as_str()
    )
});

pub(crate) static UNFINISHED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} WHERE {} ORDER BY created_at ASC, job_id ASC",
        *SELECT, *NEEDS_WORK
    )
});

static UNFINISHED_OF_POOL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} WHERE pool = ? AND {} ORDER BY created_at ASC, job_id ASC",
        *SELECT, *NEEDS_WORK
    )
});

/// Runs that still need work (unfinished, or finished with a release pending), oldest first,
/// and apart from them the rows among those, or among rows whose state words are unknown,
/// that do not parse back into a run.
pub(crate) fn load_unfinished(
    conn: &mut DbConn,
    pool: Option<&PoolName>,
) -> Result<(Vec<RunRecord>, Vec<RunRow>), StoreError> {
    let rows: Vec<RunRow> = match pool {
        Some(pool) => cached!(&UNFINISHED_OF_POOL, vec![text(pool.as_str())]).load(conn)?,
        None => cached!(&UNFINISHED, Vec::new()).load(conn)?,
    };
    let mut runs = Vec::with_capacity(rows.len());
    let mut corrupt = Vec::new();
    for row in rows {
        if row.corrupt_columns().is_empty() {
            runs.push(row.into_record()?);
        } else {
            corrupt.push(row);
        }
    }
    Ok((runs, corrupt))
}

/// How many runs of `pool` are in each state.
pub(crate) fn count_by_state(
    conn: &mut DbConn,
    pool: &PoolName,
) -> Result<Vec<(RunState, i64)>, StoreError> {
    let rows: Vec<StateCount> = cached!(COUNT_BY_STATE, vec![text(pool.as_str())]).load(conn)?;
    rows.into_iter()
        .map(|row| Ok((parse_state(&row.state, &format!("runs of {pool}"))?, row.n)))
        .collect()
}

/// Unfinished runs counted by pool and state, with those whose deadline is `now` or earlier. A
/// row whose pool is not a valid name is no run of any pool (`load_unfinished` leaves it out
/// too) and is not counted.
pub(crate) fn count_unfinished(
    conn: &mut DbConn,
    now: Millis,
) -> Result<Vec<UnfinishedCount>, StoreError> {
    let rows: Vec<PoolStateCount> =
        cached!(&UNFINISHED_COUNTS, vec![Bind::BigInt(now)]).load(conn)?;
    rows.into_iter()
        .filter_map(|row| {
            let pool = PoolName::parse(&row.pool).ok()?;
            Some(
                parse_state(&row.state, "unfinished runs").map(|state| UnfinishedCount {
                    pool,
                    state,
                    runs: row.n,
                    past_deadline: row.overdue.unwrap_or(0),
                }),
            )
        })
        .collect()
}

/// The sealed job body of a run (None when the run is unknown or its body was dropped).
pub(crate) fn job_sealed(conn: &mut DbConn, job_id: &JobId) -> Result<Option<Vec<u8>>, StoreError> {
    let rows: Vec<JobSealedRow> = cached!(GET_BODY, vec![text(job_id.as_str())]).load(conn)?;
    Ok(rows.into_iter().next().map(|row| row.job_sealed))
}

/// Drops a run's job body (nothing happens when it has none).
pub(crate) fn clear_job_sealed(conn: &mut DbConn, job_id: &JobId) -> Result<(), StoreError> {
    cached!(DELETE_BODY, vec![text(job_id.as_str())]).execute(conn)?;
    Ok(())
}

/// Deletes the bodies of the runs that no longer need one (one `?`: the pending release state).
/// It reads the bodies kept (few: those of runs still needing work) and looks each run up by its
/// key, never the finished runs, however many the database keeps.
static DELETE_FINISHED_BODIES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "DELETE FROM run_jobs WHERE EXISTS (SELECT 1 FROM runs \
         WHERE runs.job_id = run_jobs.job_id AND runs.state IN ({}) \
         AND runs.release_state <> ?)",
        *FINAL_STATES
    )
});

/// Drops the job bodies of every run that no longer needs one (final, no release pending):
/// leftovers of a crash, or of a version that dropped bodies after the final commit. Returns how
/// many were dropped.
pub(crate) fn clear_finished_job_bodies(conn: &mut DbConn) -> Result<usize, StoreError> {
    Ok(cached!(
        &DELETE_FINISHED_BODIES,
        vec![text(ReleaseState::Pending.as_str())],
    )
    .execute(conn)?)
}

/// Deletes up to `?` finished runs (final, no release pending) that finished before `?`; their
/// events and job bodies go with them (`ON DELETE CASCADE`).
static DELETE_EXPIRED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "DELETE FROM runs WHERE job_id IN (SELECT job_id FROM runs \
         WHERE state IN ({}) AND release_state <> ? AND finished_at IS NOT NULL \
         AND finished_at < ? LIMIT ?)",
        *FINAL_STATES
    )
});

/// Deletes at most `limit` finished runs (final, their release over) that finished before
/// `finished_before`, with their events and job bodies; returns how many.
pub(crate) fn delete_expired(
    conn: &mut DbConn,
    finished_before: i64,
    limit: i64,
) -> Result<usize, StoreError> {
    Ok(cached!(
        &DELETE_EXPIRED,
        vec![
            text(ReleaseState::Pending.as_str()),
            Bind::BigInt(finished_before),
            Bind::BigInt(limit),
        ],
    )
    .execute(conn)?)
}

/// Replaces a run's job body only if it still is `old` (so a body dropped meanwhile stays dropped).
pub(crate) fn replace_job_sealed(
    conn: &mut DbConn,
    job_id: &JobId,
    old: Vec<u8>,
    new: Vec<u8>,
) -> Result<bool, StoreError> {
    let changed = cached!(
        REPLACE_BODY,
        vec![Bind::Binary(new), text(job_id.as_str()), Bind::Binary(old)],
    )
    .execute(conn)?;
    Ok(changed > 0)
}

/// Ids of the runs that still hold a job body.
pub(crate) fn sealed_job_ids(conn: &mut DbConn) -> Result<Vec<JobId>, StoreError> {
    let rows: Vec<JobIdRow> = cached!(BODY_IDS, Vec::new()).load(conn)?;
    rows.into_iter()
        .map(|row| parse_job_id(&row.job_id, "runs with a job body"))
        .collect()
}

/// The opaque list cursor: base64url of `<created_at>.<job_id>`.
pub(crate) fn encode_cursor(created_at: i64, job_id: &JobId) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{created_at}.{job_id}"))
}

fn decode_cursor(cursor: &str) -> Result<(i64, String), StoreError> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| StoreError::BadCursor)?;
    let text = String::from_utf8(bytes).map_err(|_| StoreError::BadCursor)?;
    let (created_at, job_id) = text.split_once('.').ok_or(StoreError::BadCursor)?;
    let created_at = created_at.parse().map_err(|_| StoreError::BadCursor)?;
    let job_id = JobId::parse(job_id).map_err(|_| StoreError::BadCursor)?;
    Ok((created_at, job_id.as_str().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_job_ids_may_contain_dots() {
        let id = JobId::parse("a.b.c").unwrap();
        let cursor = encode_cursor(-5, &id);
        assert_eq!(decode_cursor(&cursor).unwrap(), (-5, "a.b.c".to_owned()));
    }

    #[test]
    fn foreign_cursors_are_rejected() {
        let bad_id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("12.a b");
        let no_dot = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("12");
        for bad in [
            "",
            "!!!",
            "bm90LWEtY3Vyc29y",
            bad_id.as_str(),
            no_dot.as_str(),
        ] {
            assert!(
                matches!(decode_cursor(bad), Err(StoreError::BadCursor)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_update_statement_binds_every_mutable_column_then_the_key() {
        let placeholders = UPDATE.matches('?').count();
        // Every mutable column but the version, then the key and the version read.
        assert_eq!(placeholders, RUN_COLUMNS.len() - IMMUTABLE.len() - 1 + 2);
        assert_eq!(INSERT.matches('?').count(), RUN_COLUMNS.len());
        // An immutable column is not even named in the SET list (SQLite would rewrite its
        // index entries), and every immutable column is a real column.
        let sets = UPDATE
            .split_once(" SET ")
            .and_then(|(_, rest)| rest.split_once(" WHERE "))
            .map(|(sets, _)| sets)
            .unwrap();
        for column in IMMUTABLE {
            assert!(RUN_COLUMNS.contains(&column), "{column}");
            assert!(
                !sets
                    .split(", ")
                    .any(|set| set.starts_with(&format!("{column} "))),
                "{column} is in the SET list: {sets}"
            );
        }
    }
}
