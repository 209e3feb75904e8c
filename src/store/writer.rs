//! The single writer: a thread that group-commits run inserts and run commits in few transactions.
//!
//! Every write that appends run events (`insert_run`, `commit`) goes through this one thread, so
//! event sequence numbers are strictly increasing in commit order within a process (across
//! processes on PostgreSQL, an advisory lock in each transaction does the same). The thread takes
//! the first waiting request, then whatever else is already queued (up to [`MAX_BATCH`]), writes
//! them all in one transaction, and answers each caller only after that transaction committed
//! (write-ahead: nobody reports a transition that is not durable yet). On PostgreSQL a batch with
//! several commits is written set-based, one statement per table (`store/setwise.rs`); elsewhere,
//! request by request. When the batch transaction fails, each request is retried alone, so one bad
//! request cannot fail the others.

use super::conn::{Backend, DbConn, DbPool, PooledConn, write_tx_beginning};
use super::{InsertOutcome, StoreError, events, runs, setwise};
use crate::domain::run::{EventRecord, NewEvent, RunRecord};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// The most requests written in one transaction.
///
/// Large enough to absorb a burst of hundreds of runs changing state at once; small enough that
/// one transaction stays short and a retry one by one after a failure stays cheap.
pub(crate) const MAX_BATCH: usize = 256;

/// One write waiting for the writer.
pub(crate) enum WriteRequest {
    /// `Store::insert_run`.
    Insert {
        run: RunRecord,
        job_sealed: Option<Vec<u8>>,
        events: Vec<NewEvent>,
        reply: oneshot::Sender<Result<InsertOutcome, StoreError>>,
    },
    /// `Store::commit`.
    Commit {
        run: RunRecord,
        events: Vec<NewEvent>,
        reply: oneshot::Sender<Result<Vec<EventRecord>, StoreError>>,
    },
}

/// The result of one request inside a transaction, delivered only after the commit.
#[expect(
    clippy::large_enum_variant,
    reason = "at most one batch of outcomes exists at a time"
)]
pub(super) enum Outcome {
    Insert(InsertOutcome),
    Commit(Vec<EventRecord>),
}

/// Counters shared with the store, for tests and metrics.
#[derive(Debug, Default)]
pub(crate) struct WriterStats {
    /// Transactions the writer committed (batches and single retries).
    pub transactions: AtomicU64,
    /// Requests the writer answered successfully.
    pub writes: AtomicU64,
    /// Where committed transactions and their run events are counted (set once by the app).
    pub metrics: OnceLock<Arc<crate::metrics::Metrics>>,
}

/// Starts the writer thread. It stops when every sender (every `Store` clone) is gone.
pub(crate) fn spawn(
    pool: DbPool,
    backend: Backend,
    stats: Arc<WriterStats>,
) -> Result<mpsc::UnboundedSender<WriteRequest>, StoreError> {
    let (tx, mut rx) = mpsc::unbounded_channel::<WriteRequest>();
    std::thread::Builder::new()
        .name("cattery-store-writer".to_owned())
        .spawn(move || {
            let mut writer = Writer {
                pool,
                backend,
                stats,
                conn: None,
            };
            while let Some(first) = rx.blocking_recv() {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                // A panic must not take the writer down with it: the callers of this batch see
                // their reply dropped (`StoreError::Closed`), later writes go on.
                let written =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| writer.write(batch)));
                if written.is_err() {
                    tracing::error!(
                        "the store writer panicked while writing a batch; its callers got an error"
                    );
                }
            }
        })
        .map_err(|_| StoreError::Closed)?;
    Ok(tx)
}

struct Writer {
    pool: DbPool,
    backend: Backend,
    stats: Arc<WriterStats>,
    /// The writer's own connection, kept between transactions: no pool checkout (and its
    /// liveness check, a round trip on PostgreSQL) per transaction, and on SQLite a page cache
    /// that no other connection's write invalidates. Dropped after a failed transaction, so a
    /// broken connection is replaced by a fresh, checked one.
    conn: Option<PooledConn>,
}

impl Writer {
    fn write(&mut self, batch: Vec<WriteRequest>) {
        if batch.len() > 1 {
            let started = Instant::now();
            match self.write_batch(&batch) {
                Ok(outcomes) => {
                    self.stats.transactions.fetch_add(1, Ordering::Relaxed);
                    observe(&self.stats, batch.iter().zip(&outcomes), started);
                    for (request, outcome) in batch.into_iter().zip(outcomes) {
                        self.deliver(request, Ok(outcome));
                    }
                    return;
                }
                Err(err) => tracing::warn!(
                    error = ?err,
                    batch.size = batch.len(),
                    "group commit of {} writes failed; writing them one by one",
                    batch.len()
                ),
            }
        }
        for request in batch {
            let started = Instant::now();
            let result = self.write_one(&request);
            if let Ok(outcome) = &result {
                self.stats.transactions.fetch_add(1, Ordering::Relaxed);
                observe(&self.stats, std::iter::once((&request, outcome)), started);
            }
            self.deliver(request, result);
        }
    }

    fn write_batch(&mut self, batch: &[WriteRequest]) -> Result<Vec<Outcome>, StoreError> {
        self.in_transaction(|c| {
            if let Some(outcomes) = setwise::write(c, batch)? {
                return Ok(outcomes);
            }
            batch.iter().map(|request| apply(c, request)).collect()
        })
    }

    fn write_one(&mut self, request: &WriteRequest) -> Result<Outcome, StoreError> {
        self.in_transaction(|c| apply(c, request))
    }

    /// Runs `f` in one write transaction on the writer's connection (checked out when it has
    /// none), holding the event lock from its start (`events::BEGIN_APPENDING`; on SQLite,
    /// `BEGIN IMMEDIATE` is the lock); a failure drops the connection.
    fn in_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut DbConn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => super::checkout(&self.pool, self.backend)?,
        };
        let result = write_tx_beginning(&mut conn, &events::BEGIN_APPENDING, f);
        if result.is_ok() {
            self.conn = Some(conn);
        }
        result
    }

    fn deliver(&self, request: WriteRequest, result: Result<Outcome, StoreError>) {
        if result.is_ok() {
            self.stats.writes.fetch_add(1, Ordering::Relaxed);
        }
        // A caller that stopped waiting does not undo a committed write; ignore the closed reply.
        match request {
            WriteRequest::Insert { reply, .. } => {
                let _ = reply.send(result.and_then(|outcome| match outcome {
                    Outcome::Insert(inserted) => Ok(inserted),
                    Outcome::Commit(_) => Err(StoreError::Closed),
                }));
            }
            WriteRequest::Commit { reply, .. } => {
                let _ = reply.send(result.and_then(|outcome| match outcome {
                    Outcome::Commit(events) => Ok(events),
                    Outcome::Insert(_) => Err(StoreError::Closed),
                }));
            }
        }
    }
}

/// Applies one request inside the current transaction.
fn apply(conn: &mut DbConn, request: &WriteRequest) -> Result<Outcome, StoreError> {
    match request {
        WriteRequest::Insert {
            run,
            job_sealed,
            events,
            ..
        } => {
            for event in events {
                check_event_owner(run, event)?;
            }
            if runs::insert(conn, run, job_sealed.clone())? == runs::Inserted::Exists {
                // Read only on a conflict: a new run costs one statement, not a read first.
                let existing =
                    runs::get(conn, &run.job_id)?.ok_or_else(|| StoreError::NotFound {
                        what: format!("run {}", run.job_id),
                    })?;
                return Ok(Outcome::Insert(InsertOutcome::Existing(existing)));
            }
            let stored = events
                .iter()
                .map(|event| events::append(conn, &run.pool, event.clone()))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Outcome::Insert(InsertOutcome::Inserted(stored)))
        }
        WriteRequest::Commit { run, events, .. } => {
            for event in events {
                check_event_owner(run, event)?;
            }
            match runs::update(conn, run)? {
                runs::Updated::Done => {}
                runs::Updated::Missing => {
                    return Err(StoreError::NotFound {
                        what: format!("run {}", run.job_id),
                    });
                }
                runs::Updated::Stale { stored } => {
                    return Err(StoreError::Stale {
                        what: format!("run {}", run.job_id),
                        read: run.version,
                        stored,
                    });
                }
            }
            if !run.needs_work() {
                // Nothing will dispatch or release this run again: its job body (which carries
                // the caller's short-lived credentials) goes in the same transaction as the
                // state that makes it useless, so no crash or failed follow-up can leave it.
                runs::clear_job_sealed(conn, &run.job_id)?;
            }
            events
                .iter()
                .map(|event| events::append(conn, &run.pool, event.clone()))
                .collect::<Result<Vec<_>, _>>()
                .map(Outcome::Commit)
        }
    }
}

/// Reports a committed transaction (begun at `started`) and the run events it appended to the
/// metrics, when the store has them. Runs on the writer thread after the commit and before the
/// callers are answered (a few atomic adds), so whatever a caller goes on to show is counted.
fn observe<'a>(
    stats: &WriterStats,
    written: impl ExactSizeIterator<Item = (&'a WriteRequest, &'a Outcome)>,
    started: Instant,
) {
    let Some(metrics) = stats.metrics.get() else {
        return;
    };
    metrics.store_committed(written.len(), started.elapsed());
    for (request, outcome) in written {
        match (request, outcome) {
            (
                WriteRequest::Insert { run, .. },
                Outcome::Insert(InsertOutcome::Inserted(events)),
            )
            | (WriteRequest::Commit { run, .. }, Outcome::Commit(events)) => {
                metrics.run_events(&run.pool, run.state, events);
            }
            _ => {}
        }
    }
}

pub(super) fn check_event_owner(run: &RunRecord, event: &NewEvent) -> Result<(), StoreError> {
    if event.job_id == run.job_id {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            what: format!(
                "an event of run {} was committed with run {}",
                event.job_id, run.job_id
            ),
        })
    }
}
