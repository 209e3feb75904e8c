//! Set-based group commit on PostgreSQL: a batch's run updates, body drops and event appends as
//! one statement each, instead of one statement per request.
//!
//! On PostgreSQL every statement is a round trip to the server and a pass through its executor;
//! a batch of a few hundred commits written one by one spends most of its time there. Here the
//! runs of every commit in the batch are updated by one `UPDATE … FROM unnest(…)` whose
//! `RETURNING` names the rows it changed (matched by key, never by position), new runs are
//! inserted by one `INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING` (with their bodies in
//! one more statement; a run that existed already is read back and answered), the bodies of runs
//! that no longer need them go in one `DELETE`, and every event of the batch goes in one
//! `INSERT … SELECT FROM unnest(…)`. The statements bind one array per column, so their text
//! never changes with the batch size and each is prepared once per connection.
//!
//! Event sequence numbers are drawn from the table's sequence first, in one statement, while the
//! transaction holds the event lock (`events::BEGIN_APPENDING`), then given to the events in
//! request order: the number each event gets is known without relying on any row order in
//! `RETURNING`, and the numbers still increase in commit order.
//!
//! When any commit of the batch is stale or its run is missing, the whole transaction fails and
//! the writer writes each request alone, as it does for any failed batch: the answers are those
//! of the one-by-one path.

use super::InsertOutcome;
use super::StoreError;
use super::conn::{Bind, DbConn, PgBind, cached};
use super::models::{JobIdRow, RunRow, SeqRow};
use super::runs::{self, IMMUTABLE, RUN_COLUMNS, VERSION};
use super::writer::{Outcome, WriteRequest, check_event_owner};
use crate::domain::ids::PoolName;
use crate::domain::run::{EventRecord, NewEvent, RunRecord};
use diesel::{PgConnection, RunQueryDsl as _};
use std::collections::HashSet;
use std::sync::LazyLock;

/// The columns a commit sets, in [`RUN_COLUMNS`] order (as in the one-by-one `UPDATE`).
fn mutable_columns() -> impl Iterator<Item = &'static str> {
    RUN_COLUMNS
        .into_iter()
        .filter(|c| !IMMUTABLE.contains(c) && *c != VERSION)
}

/// Updates every run of a batch whose stored version is the one its commit was derived from;
/// returns the ids of the rows it changed. Binds: the ids, the versions read, then one array per
/// column of [`mutable_columns`].
static UPDATE_MANY: LazyLock<String> = LazyLock::new(|| {
    let columns: Vec<&str> = mutable_columns().collect();
    let sets: Vec<String> = columns.iter().map(|c| format!("{c} = v.{c}")).collect();
    format!(
        "UPDATE runs AS r SET {}, {VERSION} = r.{VERSION} + 1 \
         FROM unnest({}) AS v(job_id, read_version, {}) \
         WHERE r.job_id = v.job_id AND r.{VERSION} = v.read_version RETURNING r.job_id",
        sets.join(", "),
        vec!["?"; columns.len() + 2].join(", "),
        columns.join(", ")
    )
});

/// Inserts new runs unless a run with the same id exists (stored before, or earlier in the same
/// statement); returns the ids it inserted. Binds: one array per column of [`RUN_COLUMNS`].
static INSERT_MANY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO runs ({}) SELECT * FROM unnest({}) ON CONFLICT (job_id) DO NOTHING \
         RETURNING job_id",
        RUN_COLUMNS.join(", "),
        vec!["?"; RUN_COLUMNS.len()].join(", ")
    )
});

/// Stores the sealed job bodies of new runs. Binds: the ids, the bodies.
const INSERT_BODIES: &str = "INSERT INTO run_jobs (job_id, job_sealed) SELECT * FROM unnest(?, ?)";

/// Drops the job bodies of the given runs.
const DELETE_BODIES: &str = "DELETE FROM run_jobs WHERE job_id = ANY(?)";

/// Draws the given number of event sequence numbers.
const NEXT_SEQS: &str = "SELECT nextval(pg_get_serial_sequence('run_events', 'seq')) AS seq \
     FROM generate_series(1, ?)";

/// Appends events with the sequence numbers drawn for them.
const INSERT_EVENTS: &str = "INSERT INTO run_events \
     (seq, job_id, pool, at, kind, from_state, to_state, detail) \
     SELECT * FROM unnest(?, ?, ?, ?, ?, ?, ?, ?)";

/// Writes `batch` set-based inside the current transaction (which holds the event lock) and
/// returns each request's outcome, in order; None when the batch is not worth it or not suited
/// (not PostgreSQL, fewer than two commits, or one run committed twice), and then nothing was
/// written.
///
/// # Errors
/// [`StoreError::Conflict`] when a commit's run is stale or missing (the writer then writes each
/// request alone, which tells each caller what happened to its own), [`StoreError::Invalid`]
/// for an event of another run, [`StoreError::Query`].
pub(super) fn write(
    conn: &mut DbConn,
    batch: &[WriteRequest],
) -> Result<Option<Vec<Outcome>>, StoreError> {
    if !matches!(conn, DbConn::Pg(_)) {
        return Ok(None);
    }
    let mut commits: Vec<&RunRecord> = Vec::new();
    let mut inserts: Vec<&RunRecord> = Vec::new();
    for request in batch {
        match request {
            WriteRequest::Commit { run, .. } => commits.push(run),
            WriteRequest::Insert { run, .. } => inserts.push(run),
        }
    }
    let distinct: HashSet<&str> = commits.iter().map(|run| run.job_id.as_str()).collect();
    if commits.len() + inserts.len() < 2 || distinct.len() != commits.len() {
        return Ok(None);
    }
    for request in batch {
        match request {
            WriteRequest::Insert { run, events, .. } | WriteRequest::Commit { run, events, .. } => {
                for event in events {
                    check_event_owner(run, event)?;
                }
            }
        }
    }

    let updated: Vec<JobIdRow> = if commits.is_empty() {
        Vec::new()
    } else {
        cached!(&UPDATE_MANY, update_binds(&commits)?).load(pg(conn)?)?
    };
    if updated.len() != commits.len() {
        return Err(StoreError::Conflict {
            what: format!(
                "{} of the {} runs of a group commit",
                commits.len() - updated.len(),
                commits.len()
            ),
        });
    }

    // Inserts in request order (a duplicate inserted earlier in the batch is found), and every
    // event of the batch in request order.
    let mut appended: Vec<(&PoolName, &NewEvent)> = Vec::new();
    let mut existing: Vec<Option<RunRecord>> = Vec::with_capacity(batch.len());
    let mut finished: Vec<String> = Vec::new();
    // New runs in one statement; a run that exists already (stored before, or twice in this
    // batch) is left as it is and answered with the stored row below.
    let mut inserted: HashSet<String> = if inserts.is_empty() {
        HashSet::new()
    } else {
        cached!(&INSERT_MANY, insert_binds(&inserts)?)
            .load::<JobIdRow>(pg(conn)?)?
            .into_iter()
            .map(|row| row.job_id)
            .collect()
    };
    let mut bodies: (Vec<String>, Vec<Vec<u8>>) = (Vec::new(), Vec::new());
    for request in batch {
        match request {
            WriteRequest::Insert {
                run,
                job_sealed,
                events,
                ..
            } => {
                // The first request of each inserted id is the one that created it.
                if inserted.remove(run.job_id.as_str()) {
                    if let Some(body) = job_sealed {
                        bodies.0.push(run.job_id.as_str().to_owned());
                        bodies.1.push(body.clone());
                    }
                    appended.extend(events.iter().map(|event| (&run.pool, event)));
                    existing.push(None);
                } else {
                    let stored =
                        runs::get(conn, &run.job_id)?.ok_or_else(|| StoreError::Invalid {
                            what: format!("run {} was neither inserted nor found", run.job_id),
                        })?;
                    existing.push(Some(stored));
                }
            }
            WriteRequest::Commit { run, events, .. } => {
                appended.extend(events.iter().map(|event| (&run.pool, event)));
                if !run.needs_work() {
                    // As on the one-by-one path: the body goes with the state that makes it
                    // useless, in the same transaction.
                    finished.push(run.job_id.as_str().to_owned());
                }
                existing.push(None);
            }
        }
    }
    if !bodies.0.is_empty() {
        cached!(
            INSERT_BODIES,
            vec![PgBind::Texts(bodies.0), PgBind::Bytes(bodies.1)],
        )
        .execute(pg(conn)?)?;
    }
    if !finished.is_empty() {
        cached!(DELETE_BODIES, vec![PgBind::Texts(finished)]).execute(pg(conn)?)?;
    }
    let mut records = append_events(pg(conn)?, &appended)?.into_iter();

    let mut outcomes = Vec::with_capacity(batch.len());
    for (request, existing) in batch.iter().zip(existing) {
        let outcome = match (request, existing) {
            (WriteRequest::Insert { .. }, Some(stored)) => {
                Outcome::Insert(InsertOutcome::Existing(stored))
            }
            (WriteRequest::Insert { events, .. }, None) => {
                Outcome::Insert(InsertOutcome::Inserted(
                    (0..events.len())
                        .map(|_| records.next().ok_or_else(lost_event))
                        .collect::<Result<_, _>>()?,
                ))
            }
            (WriteRequest::Commit { events, .. }, _) => Outcome::Commit(
                (0..events.len())
                    .map(|_| records.next().ok_or_else(lost_event))
                    .collect::<Result<_, _>>()?,
            ),
        };
        outcomes.push(outcome);
    }
    Ok(Some(outcomes))
}

fn pg(conn: &mut DbConn) -> Result<&mut PgConnection, StoreError> {
    match conn {
        DbConn::Pg(pg) => Ok(pg),
        DbConn::Sqlite(_) => Err(StoreError::Invalid {
            what: "a set-based group commit on SQLite".to_owned(),
        }),
    }
}

fn lost_event() -> StoreError {
    StoreError::Invalid {
        what: "a group commit appended fewer events than it was given".to_owned(),
    }
}

/// The binds of [`UPDATE_MANY`]: the runs' rows turned into one array per column.
fn update_binds(commits: &[&RunRecord]) -> Result<Vec<PgBind>, StoreError> {
    let rows: Vec<Vec<Bind>> = commits
        .iter()
        .map(|run| {
            runs::run_binds(RunRow::from_record(run))
                .into_iter()
                .zip(RUN_COLUMNS)
                .filter(|(_, column)| !IMMUTABLE.contains(column) && *column != VERSION)
                .map(|(bind, _)| bind)
                .collect()
        })
        .collect();
    let mut binds = vec![
        PgBind::Texts(
            commits
                .iter()
                .map(|run| run.job_id.as_str().to_owned())
                .collect(),
        ),
        PgBind::BigInts(commits.iter().map(|run| run.version).collect()),
    ];
    let width = rows.first().map_or(0, Vec::len);
    let mut columns: Vec<Vec<Bind>> = (0..width).map(|_| Vec::with_capacity(rows.len())).collect();
    for row in rows {
        for (column, bind) in columns.iter_mut().zip(row) {
            column.push(bind);
        }
    }
    for column in columns {
        binds.push(array(column)?);
    }
    Ok(binds)
}

/// The binds of [`INSERT_MANY`]: the new runs' rows turned into one array per column.
fn insert_binds(inserts: &[&RunRecord]) -> Result<Vec<PgBind>, StoreError> {
    let rows = inserts
        .iter()
        .map(|run| runs::run_binds(RunRow::from_record(run)));
    let mut columns: Vec<Vec<Bind>> = (0..RUN_COLUMNS.len())
        .map(|_| Vec::with_capacity(inserts.len()))
        .collect();
    for row in rows {
        for (column, bind) in columns.iter_mut().zip(row) {
            column.push(bind);
        }
    }
    columns.into_iter().map(array).collect()
}

/// One column of binds (all of one kind, as [`runs::run_binds`] makes them) as an array bind.
fn array(column: Vec<Bind>) -> Result<PgBind, StoreError> {
    fn collect<T>(
        column: Vec<Bind>,
        pick: impl Fn(Bind) -> Option<T>,
    ) -> Result<Vec<T>, StoreError> {
        column
            .into_iter()
            .map(|bind| {
                pick(bind).ok_or_else(|| StoreError::Invalid {
                    what: "a run column mixes value kinds".to_owned(),
                })
            })
            .collect()
    }
    Ok(match column.first() {
        Some(Bind::Text(_)) | None => PgBind::Texts(collect(column, |b| match b {
            Bind::Text(v) => Some(v),
            _ => None,
        })?),
        Some(Bind::OptText(_)) => PgBind::OptTexts(collect(column, |b| match b {
            Bind::OptText(v) => Some(v),
            _ => None,
        })?),
        Some(Bind::BigInt(_)) => PgBind::BigInts(collect(column, |b| match b {
            Bind::BigInt(v) => Some(v),
            _ => None,
        })?),
        Some(Bind::OptBigInt(_)) => PgBind::OptBigInts(collect(column, |b| match b {
            Bind::OptBigInt(v) => Some(v),
            _ => None,
        })?),
        Some(Bind::Bool(_)) => PgBind::Bools(collect(column, |b| match b {
            Bind::Bool(v) => Some(v),
            _ => None,
        })?),
        Some(Bind::Binary(_)) => {
            return Err(StoreError::Invalid {
                what: "a run column holds binary data".to_owned(),
            });
        }
    })
}

/// Appends `events` (with their runs' pools) in one statement; returns them in the same order
/// with their sequence numbers.
fn append_events(
    pg: &mut PgConnection,
    events: &[(&PoolName, &NewEvent)],
) -> Result<Vec<EventRecord>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let count = i64::try_from(events.len()).map_err(|_| StoreError::Invalid {
        what: "too many events in one group commit".to_owned(),
    })?;
    let mut seqs: Vec<i64> = cached!(NEXT_SEQS, vec![PgBind::BigInt(count)])
        .load::<SeqRow>(pg)?
        .into_iter()
        .map(|row| row.seq)
        .collect();
    if seqs.len() != events.len() {
        return Err(lost_event());
    }
    // Drawn under the event lock, so ascending numbers are this batch's, in the order drawn.
    seqs.sort_unstable();
    let text = |f: fn(&NewEvent, &PoolName) -> String| -> Vec<String> {
        events.iter().map(|(pool, e)| f(e, pool)).collect()
    };
    let opt = |f: fn(&NewEvent) -> Option<String>| -> Vec<Option<String>> {
        events.iter().map(|(_, e)| f(e)).collect()
    };
    let binds = vec![
        PgBind::BigInts(seqs.clone()),
        PgBind::Texts(text(|e, _| e.job_id.as_str().to_owned())),
        PgBind::Texts(text(|_, pool| pool.as_str().to_owned())),
        PgBind::BigInts(events.iter().map(|(_, e)| e.at).collect()),
        PgBind::Texts(text(|e, _| e.kind.clone())),
        PgBind::OptTexts(opt(|e| e.from.map(|s| s.as_str().to_owned()))),
        PgBind::OptTexts(opt(|e| e.to.map(|s| s.as_str().to_owned()))),
        PgBind::OptTexts(opt(|e| e.detail.clone())),
    ];
    let inserted = cached!(INSERT_EVENTS, binds).execute(pg)?;
    if inserted != events.len() {
        return Err(lost_event());
    }
    Ok(seqs
        .into_iter()
        .zip(events)
        .map(|(seq, (pool, event))| EventRecord {
            seq,
            pool: (*pool).clone(),
            event: (*event).clone(),
        })
        .collect())
}
