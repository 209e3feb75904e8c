//! Queries on the `run_events` table: appending events and reading them back in order.

use super::StoreError;
use super::conn::DbConn;
use super::models::{EventRow, NewEventRow};
use super::schema::run_events;
use crate::domain::ids::{JobId, PoolName};
use crate::domain::run::{EventRecord, NewEvent};
use diesel::prelude::*;
use diesel::sql_types::BigInt;

/// Advisory lock key taken by every event-writing transaction on PostgreSQL, so that sequence
/// numbers become visible in the order they were drawn even with several replicas (a `BIGSERIAL`
/// value is drawn at insert time, not at commit time).
const EVENT_LOCK: i64 = 0x6361_7474_0000_0002; // "catt" + 2

/// Serialises event writers across processes (PostgreSQL); a no-op on SQLite, whose
/// `BEGIN IMMEDIATE` already holds the database's single write lock.
pub(crate) fn lock_for_append(conn: &mut DbConn) -> Result<(), StoreError> {
    if let DbConn::Pg(pg) = conn {
        diesel::sql_query(format!("SELECT pg_advisory_xact_lock({EVENT_LOCK})")).execute(pg)?;
    }
    Ok(())
}

/// Appends one event of a run in `pool`; returns it with its sequence number.
pub(crate) fn append(
    conn: &mut DbConn,
    pool: &PoolName,
    event: NewEvent,
) -> Result<EventRecord, StoreError> {
    let row = NewEventRow::new(pool, &event);
    let insert = diesel::insert_into(run_events::table).values(&row);
    let seq = match conn {
        DbConn::Pg(pg) => insert.returning(run_events::seq).get_result::<i64>(pg)?,
        DbConn::Sqlite(sqlite) => {
            insert.execute(sqlite)?;
            diesel::select(diesel::dsl::sql::<BigInt>("last_insert_rowid()"))
                .get_result::<i64>(sqlite)?
        }
    };
    Ok(EventRecord {
        seq,
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
