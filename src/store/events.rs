//! Queries on the `run_events` table: appending events and reading them back in order.

use super::StoreError;
use super::conn::{Bind, DbConn, cached};
use super::models::{EventRow, SeqRow};
use super::schema::run_events;
use crate::domain::ids::{JobId, PoolName};
use crate::domain::run::{EventRecord, NewEvent};
use diesel::prelude::*;

/// Advisory lock key taken by every event-writing transaction on PostgreSQL, so that sequence
/// numbers become visible in the order they were drawn even with several replicas (a `BIGSERIAL`
/// value is drawn at insert time, not at commit time).
pub(crate) const EVENT_LOCK: i64 = 0x6361_7474_0000_0002; // "catt" + 2

/// The beginning of an event-writing transaction on PostgreSQL: `BEGIN` and [`EVENT_LOCK`],
/// held for the rest of the transaction, in one round trip. It serialises event writers across
/// processes; SQLite needs nothing more than its `BEGIN IMMEDIATE`, which already holds the
/// database's single write lock.
pub(crate) static BEGIN_APPENDING: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("BEGIN; SELECT pg_advisory_xact_lock({EVENT_LOCK})"));

/// Appends one event, returning its sequence number in the same statement on both backends
/// (SQLite has `RETURNING` since 3.35; the bundled one is newer). `seq` stays `AUTOINCREMENT`
/// on SQLite, so a number is never handed out twice, even after the newest row is deleted.
const APPEND: &str = "INSERT INTO run_events (job_id, pool, at, kind, from_state, to_state, detail) \
     VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING seq";

/// Appends one event of a run in `pool`; returns it with its sequence number.
pub(crate) fn append(
    conn: &mut DbConn,
    pool: &PoolName,
    event: NewEvent,
) -> Result<EventRecord, StoreError> {
    let binds = vec![
        Bind::Text(event.job_id.as_str().to_owned()),
        Bind::Text(pool.as_str().to_owned()),
        Bind::BigInt(event.at),
        Bind::Text(event.kind.clone()),
        Bind::OptText(event.from.map(|s| s.as_str().to_owned())),
        Bind::OptText(event.to.map(|s| s.as_str().to_owned())),
        Bind::OptText(event.detail.clone()),
    ];
    let row: SeqRow = cached!(APPEND, binds).get_result(conn)?;
    Ok(EventRecord {
        seq: row.seq,
        pool: pool.clone(),
        event,
    })
}

fn decode(rows: Vec<EventRow>) -> Result<Vec<EventRecord>, StoreError> {
    rows.into_iter().map(EventRow::into_record).collect()
}

/// A run's events, by sequence number.
pub(crate) fn of_run(conn: &mut DbConn, job_id: &JobId) -> Result<Vec<EventRecord>, StoreError> {
    decode(
        run_events::table
            .filter(run_events::job_id.eq(job_id.as_str()))
            .order(run_events::seq.asc())
            .select(EventRow::as_select())
            .load(conn)?,
    )
}

/// The newest sequence number, or 0 when there is no event.
pub(crate) fn last_seq(conn: &mut DbConn) -> Result<i64, StoreError> {
    let newest: Option<i64> = run_events::table
        .select(diesel::dsl::max(run_events::seq))
        .first(conn)?;
    Ok(newest.unwrap_or(0))
}

/// Events after `after_seq`, optionally of one pool and/or one run, oldest first.
pub(crate) fn after(
    conn: &mut DbConn,
    after_seq: i64,
    pool: Option<&PoolName>,
    job_id: Option<&JobId>,
    limit: u32,
) -> Result<Vec<EventRecord>, StoreError> {
    let mut query = run_events::table
        .filter(run_events::seq.gt(after_seq))
        .into_boxed();
    if let Some(pool) = pool {
        query = query.filter(run_events::pool.eq(pool.as_str().to_owned()));
    }
    if let Some(job_id) = job_id {
        query = query.filter(run_events::job_id.eq(job_id.as_str().to_owned()));
    }
    decode(
        query
            .order(run_events::seq.asc())
            .limit(i64::from(limit.clamp(1, super::MAX_PAGE)))
            .select(EventRow::as_select())
            .load(conn)?,
    )
}
