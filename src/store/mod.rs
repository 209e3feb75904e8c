//! Persistence: pools, runs and run events in SQLite or PostgreSQL, behind one async `Store`.
//!
//! This is the only module that names diesel. Every method runs its blocking database work off
//! the async threads: reads and pool writes on tokio's blocking pool, run inserts and commits on
//! the single writer thread (`store/writer.rs`), which group-commits them.
//!
//! Layout: `conn` (connection enum, pool, write transactions), `schema` (hand-written
//! `table!`s), `models` (rows ↔ domain types), `migrate` (embedded migrations), `pools`, `runs`,
//! `events` (queries), `writer` (group commit), `setwise` (a batch in one statement per table on
//! PostgreSQL), `lock` (one gateway per database), `testing`
//! (throw-away databases for tests).

pub mod backup;
mod conn;
mod events;
mod gateway_keys;
mod lock;
mod migrate;
mod models;
mod pools;
mod runs;
mod schema;
mod setwise;
pub mod testing;
mod writer;

#[cfg(test)]
mod tests;

use crate::domain::ids::{JobId, PoolName};
use crate::domain::pool::PoolRecord;
use crate::domain::run::{EventRecord, Millis, NewEvent, RunRecord};
use crate::domain::state::RunState;
use conn::{Backend, DbConn, DbPool, PooledConn, Target};
pub use lock::InstanceLock;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::{mpsc, oneshot};
use writer::{WriteRequest, WriterStats};

/// The largest page of runs or events one call returns.
pub const MAX_PAGE: u32 = 1000;

/// A boxed error from a lower layer (connection, pool, migration).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a store operation failed. Messages name records by id only: never secrets or job bodies.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL cannot be used.
    #[error("the database URL is not usable: {reason}")]
    InvalidUrl {
        /// What is wrong and what to write instead.
        reason: String,
    },
    /// The database cannot be reached (at start, or no connection became free in time).
    #[error("cannot connect to the {backend} database")]
    Connect {
        /// `sqlite` or `postgres`.
        backend: &'static str,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// Applying the migrations failed.
    #[error("the database migrations failed")]
    Migrate {
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// A query failed.
    #[error("a database query failed")]
    Query {
        /// The cause.
        #[from]
        source: diesel::result::Error,
    },
    /// A stored row does not parse back into a domain value.
    #[error("stored data is corrupt: {what}")]
    Corrupt {
        /// Which row and column.
        what: String,
    },
    /// A write kept losing races with concurrent writers.
    #[error("{what} was changed concurrently; try again")]
    Conflict {
        /// Which record.
        what: String,
    },
    /// A commit was derived from an older version of the record than the one stored: another
    /// writer changed it since. Nothing was written; the caller reloads instead of overwriting.
    #[error("{what} changed since it was read (version {read}, stored {stored}); reload it")]
    Stale {
        /// Which record.
        what: String,
        /// The version the commit was derived from.
        read: i64,
        /// The version stored now.
        stored: i64,
    },
    /// The database is already driven by another gateway.
    #[error(
        "{what} is already in use by another cattery gateway{holder}; several gateways on one \
         database are not supported yet: stop the other one first"
    )]
    InUse {
        /// Which database (never its URL, which may carry a password).
        what: String,
        /// Who holds it, when known (`" (process 1234)"`), else empty.
        holder: String,
    },
    /// The record to change does not exist.
    #[error("{what} does not exist")]
    NotFound {
        /// Which record.
        what: String,
    },
    /// A list cursor this store did not issue.
    #[error("the page cursor is not valid; use the `next` value of a previous page")]
    BadCursor,
    /// The caller asked for something inconsistent (a bug in the caller).
    #[error("invalid store request: {what}")]
    Invalid {
        /// What was inconsistent.
        what: String,
    },
    /// The writer thread or a blocking task stopped.
    #[error("the store is shutting down or its worker stopped")]
    Closed,
}

impl StoreError {
    /// True when the cause is a unique-key violation.
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            StoreError::Query {
                source: diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::UniqueViolation,
                    _
                )
            }
        )
    }
}

/// Run counts of one pool, by state group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Runs waiting for a slot.
    pub queued: i64,
    /// Runs in `dispatching`, `pending` or `running`.
    pub in_flight: i64,
    /// Finished successfully.
    pub done: i64,
    /// Finished unsuccessfully.
    pub failed: i64,
    /// Cancelled.
    pub cancelled: i64,
}

impl PoolStats {
    fn from_counts(counts: &[(RunState, i64)]) -> Self {
        counts
            .iter()
            .fold(PoolStats::default(), |mut stats, &(state, n)| {
                match state {
                    RunState::Queued => stats.queued += n,
                    RunState::Dispatching | RunState::Pending | RunState::Running => {
                        stats.in_flight += n;
                    }
                    RunState::Done => stats.done += n,
                    RunState::Failed => stats.failed += n,
                    RunState::Cancelled => stats.cancelled += n,
                }
                stats
            })
    }
}

/// Unfinished runs of one pool in one state ([`Store::count_unfinished`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnfinishedCount {
    /// The pool.
    pub pool: PoolName,
    /// The state (never a final one).
    pub state: RunState,
    /// How many runs.
    pub runs: i64,
    /// How many of them have a deadline that has passed: the gateway fails a run at its
    /// deadline, so these are runs it is not getting to.
    pub past_deadline: i64,
}

/// Which runs [`Store::list_runs`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFilter {
    /// Only this pool's runs.
    pub pool: Option<PoolName>,
    /// Only runs in this state.
    pub state: Option<RunState>,
    /// Page size, clamped to `1..=1000`.
    pub limit: u32,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
}

impl Default for RunFilter {
    fn default() -> Self {
        Self {
            pool: None,
            state: None,
            limit: 100,
            after: None,
        }
    }
}

/// One page of runs, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPage {
    /// The runs, by `(created_at, job_id)` descending.
    pub runs: Vec<RunRecord>,
    /// The cursor of the next page; None on the last page.
    pub next: Option<String>,
}

/// What [`Store::insert_run`] did.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "one value per insert, matched at once and never stored in bulk"
)]
pub enum InsertOutcome {
    /// The run was new: it is stored with its first events, returned as committed.
    Inserted(Vec<EventRecord>),
    /// A run with this `jobId` already exists; nothing was written. The caller compares it.
    Existing(RunRecord),
}

/// A run as stored, with its sealed job body (`None` once the body was dropped).
pub type RunWithBody = (RunRecord, Option<Vec<u8>>);

/// The persistence handle: cheap to clone, safe to share.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    pool: DbPool,
    backend: Backend,
    /// Requests for the single writer thread; the thread ends when the last `Store` drops this.
    writer: mpsc::UnboundedSender<WriteRequest>,
    stats: Arc<WriterStats>,
    /// Held for as long as the store lives when it was opened with [`Store::connect_exclusive`].
    _instance: Option<InstanceLock>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.inner.backend.name())
            .finish_non_exhaustive()
    }
}

/// Checks a connection out of the pool.
fn checkout(pool: &DbPool, backend: Backend) -> Result<PooledConn, StoreError> {
    pool.get().map_err(|source| StoreError::Connect {
        backend: backend.name(),
        source: Box::new(source),
    })
}

impl Store {
    /// Connects to `url` (`sqlite://path`, a bare path, or `postgres://…`) with up to
    /// `pool_size` connections for reads and one for the writer, and applies pending migrations. A SQLite file's directory is
    /// created when missing.
    ///
    /// # Errors
    /// [`StoreError::InvalidUrl`], [`StoreError::Connect`], [`StoreError::Migrate`].
    pub async fn connect(url: &str, pool_size: u32) -> Result<Store, StoreError> {
        Self::open(url, pool_size, false).await
    }

    /// Like [`Store::connect`], but first takes the database's instance lock, held until the
    /// store is dropped or the process ends (however it ends): a gateway that drives runs opens
    /// its database this way, so that a second one on the same database refuses to start
    /// instead of driving every run a second time. Tools that only read or re-seal
    /// (`cattery migrate`, `cattery keys rotate`) use [`Store::connect`].
    ///
    /// # Errors
    /// [`StoreError::InUse`] when another gateway holds the lock; else as [`Store::connect`].
    pub async fn connect_exclusive(url: &str, pool_size: u32) -> Result<Store, StoreError> {
        Self::open(url, pool_size, true).await
    }

    async fn open(url: &str, pool_size: u32, exclusive: bool) -> Result<Store, StoreError> {
        let target = Target::parse(url)?;
        let backend = target.backend();
        // Before anything else, migrations included: a newer gateway started next to a running
        // one must not change the schema under it.
        let instance = if exclusive {
            let target = target.clone();
            Some(blocking(move || lock::acquire(&target)).await?)
        } else {
            None
        };
        // One connection more than asked: the writer keeps one of its own for good.
        let size = pool_size.max(1).saturating_add(1);
        let pool = blocking(move || conn::build_pool(&target, size)).await?;
        let stats = Arc::new(WriterStats::default());
        let writer = writer::spawn(pool.clone(), backend, stats.clone())?;
        let store = Store {
            inner: Arc::new(Inner {
                pool,
                backend,
                writer,
                stats,
                _instance: instance,
            }),
        };
        let applied = store.migrate().await?;
        if applied > 0 {
            tracing::info!(
                db.backend = backend.name(),
                migrations = applied,
                "applied {applied} database migrations"
            );
        }
        Ok(store)
    }

    /// Applies pending migrations (already done by [`Store::connect`]); returns how many ran.
    ///
    /// # Errors
    /// [`StoreError::Migrate`] or [`StoreError::Connect`].
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        self.with_conn(migrate::run_pending).await
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        self.inner.backend.name()
    }

    /// Checks that the database answers (for `/readyz`).
    ///
    /// # Errors
    /// [`StoreError::Connect`] or [`StoreError::Query`].
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.with_conn(|conn| {
            use diesel::RunQueryDsl as _;
            diesel::sql_query("SELECT 1").execute(conn)?;
            Ok(())
        })
        .await
    }

    /// How many transactions the writer has committed (each holds one or more inserts/commits).
    pub fn write_transactions(&self) -> u64 {
        self.inner.stats.transactions.load(Ordering::Relaxed)
    }

    /// How many inserts and commits the writer has completed.
    pub fn writes(&self) -> u64 {
        self.inner.stats.writes.load(Ordering::Relaxed)
    }

    /// From now on, every write transaction and the run events it appends are counted in
    /// `metrics` (once durable). A store takes one set of metrics; later calls change nothing.
    pub fn observe_with(&self, metrics: Arc<crate::metrics::Metrics>) {
        let _ = self.inner.stats.metrics.set(metrics);
    }

    /// Unfinished runs counted by pool and state, with those whose deadline is `now` or
    /// earlier, in one grouped read (for the metrics).
    ///
    /// # Errors
    /// [`StoreError::Query`] or [`StoreError::Corrupt`].
    pub async fn count_unfinished(&self, now: Millis) -> Result<Vec<UnfinishedCount>, StoreError> {
        self.with_conn(move |conn| runs::count_unfinished(conn, now))
            .await
    }

    // ---- pools ----

    /// Inserts or replaces a pool and returns it as stored. On insert, `revision` is 1 and
    /// `created_at` is the record's `updated_at`; on replace, `created_at` is kept and `revision`
    /// goes up by one only when `digest` changed. The caller's `revision` and `created_at` are
    /// ignored: the store decides them atomically.
    ///
    /// # Errors
    /// [`StoreError::Query`], or [`StoreError::Conflict`] after repeated concurrent replaces.
    pub async fn put_pool(&self, record: PoolRecord) -> Result<PoolRecord, StoreError> {
        self.with_conn(move |conn| pools::put(conn, record)).await
    }

    /// Replaces a pool's sealed secret bundle and key list; None when the pool does not exist.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn put_pool_secrets(
        &self,
        name: &PoolName,
        sealed: Vec<u8>,
        keys: Vec<String>,
        updated_at: Millis,
    ) -> Result<Option<PoolRecord>, StoreError> {
        let name = name.clone();
        self.with_conn(move |conn| pools::put_secrets(conn, &name, sealed, &keys, updated_at))
            .await
    }

    /// Replaces a pool's sealed bundle with `new` only if it is still `old` (for key rotation);
    /// true when replaced.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn replace_pool_secrets_sealed(
        &self,
        name: &PoolName,
        old: Vec<u8>,
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let name = name.clone();
        self.with_conn(move |conn| pools::replace_secrets_sealed(conn, &name, old, new))
            .await
    }

    /// The sealed envelope of the gateway-wide key `name` (see [`crate::crypto::DigestKey`]).
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn gateway_key(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let name = name.to_owned();
        self.with_conn(move |conn| gateway_keys::get(conn, &name))
            .await
    }

    /// Stores `sealed` as the gateway-wide key `name` unless one exists already; returns the
    /// envelope that is stored (another gateway's, when it created the key first).
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn create_gateway_key(
        &self,
        name: &str,
        sealed: Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        let name = name.to_owned();
        let now = crate::domain::run::now_millis();
        self.with_conn(move |conn| gateway_keys::create(conn, &name, sealed, now))
            .await
    }

    /// Replaces a gateway-wide key's envelope if it is still `old` (key rotation).
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn replace_gateway_key(
        &self,
        name: &str,
        old: Vec<u8>,
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.with_conn(move |conn| gateway_keys::replace(conn, &name, old, new))
            .await
    }

    /// The names of the stored gateway-wide keys.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn gateway_key_names(&self) -> Result<Vec<String>, StoreError> {
        self.with_conn(gateway_keys::names).await
    }

    /// One pool.
    ///
    /// # Errors
    /// [`StoreError::Query`] or [`StoreError::Corrupt`].
    pub async fn get_pool(&self, name: &PoolName) -> Result<Option<PoolRecord>, StoreError> {
        let name = name.clone();
        self.with_conn(move |conn| pools::get(conn, &name)).await
    }

    /// Every pool, by name.
    ///
    /// # Errors
    /// [`StoreError::Query`] or [`StoreError::Corrupt`].
    pub async fn list_pools(&self) -> Result<Vec<PoolRecord>, StoreError> {
        self.with_conn(pools::list).await
    }

    /// Deletes a pool (its runs and their events stay); true when it existed.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn delete_pool(&self, name: &PoolName) -> Result<bool, StoreError> {
        let name = name.clone();
        self.with_conn(move |conn| pools::delete(conn, &name)).await
    }

    /// Run counts of a pool by state group.
    ///
    /// # Errors
    /// [`StoreError::Query`] or [`StoreError::Corrupt`].
    pub async fn pool_stats(&self, name: &PoolName) -> Result<PoolStats, StoreError> {
        let name = name.clone();
        let counts = self
            .with_conn(move |conn| runs::count_by_state(conn, &name))
            .await?;
        Ok(PoolStats::from_counts(&counts))
    }

    // ---- runs ----

    /// Stores a new run with its sealed job body and its first events (its acceptance, and its
    /// slot when it starts at once), atomically; answers once the transaction has committed. When a run with this `jobId` exists, returns it and writes
    /// nothing. Goes through the group-committing writer, like [`Store::commit`].
    ///
    /// # Errors
    /// [`StoreError::Query`], [`StoreError::Invalid`] when the event belongs to another run,
    /// [`StoreError::Closed`].
    pub async fn insert_run(
        &self,
        run: RunRecord,
        job_sealed: Option<Vec<u8>>,
        events: Vec<NewEvent>,
    ) -> Result<InsertOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(WriteRequest::Insert {
            run,
            job_sealed,
            events,
            reply,
        })?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// One run.
    ///
    /// # Errors
    /// [`StoreError::Query`] or [`StoreError::Corrupt`].
    pub async fn get_run(&self, job_id: &JobId) -> Result<Option<RunRecord>, StoreError> {
        let job_id = job_id.clone();
        self.with_conn(move |conn| runs::get(conn, &job_id)).await
    }

    /// Several runs by id, in one read (unknown ids are left out).
    ///
    /// # Errors
    /// [`StoreError::Query`] or [`StoreError::Corrupt`].
    pub async fn get_runs(&self, job_ids: Vec<JobId>) -> Result<Vec<RunRecord>, StoreError> {
        self.with_conn(move |conn| runs::get_many(conn, &job_ids))
            .await
    }

    /// Several runs by id with their sealed job bodies, in one connection (unknown ids are
    /// left out; a run whose body was dropped comes with `None`): what a pool needs to start
    /// the runs it just granted slots to, without a read per run.
    ///
    /// # Errors
    /// [`StoreError::Query`] or [`StoreError::Corrupt`].
    pub async fn get_runs_with_bodies(
        &self,
        job_ids: Vec<JobId>,
    ) -> Result<Vec<RunWithBody>, StoreError> {
        self.with_conn(move |conn| runs::get_many_with_bodies(conn, &job_ids))
            .await
    }

    /// A run's sealed job body; None when the run is unknown or its body was dropped.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn get_job_sealed(&self, job_id: &JobId) -> Result<Option<Vec<u8>>, StoreError> {
        let job_id = job_id.clone();
        self.with_conn(move |conn| runs::job_sealed(conn, &job_id))
            .await
    }

    /// Drops the job bodies that finished runs still hold (final, no release pending); returns
    /// how many. A commit that makes a run final drops its body itself; this sweeps what an
    /// older version or a crash left behind, at start.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn clear_finished_job_bodies(&self) -> Result<usize, StoreError> {
        self.with_conn(runs::clear_finished_job_bodies).await
    }

    /// Deletes at most `limit` finished runs (done, failed or cancelled, their release over)
    /// that finished before `finished_before`, with their events and job bodies, in one
    /// statement; returns how many.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn delete_expired_runs(
        &self,
        finished_before: Millis,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn(move |conn| runs::delete_expired(conn, finished_before, limit))
            .await
    }

    /// Drops a run's job body once nothing needs it (no further dispatch can happen).
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn clear_job_sealed(&self, job_id: &JobId) -> Result<(), StoreError> {
        let job_id = job_id.clone();
        self.with_conn(move |conn| runs::clear_job_sealed(conn, &job_id))
            .await
    }

    /// Replaces a run's job body with `new` only if it is still `old` (for key rotation); true
    /// when replaced.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn replace_job_sealed(
        &self,
        job_id: &JobId,
        old: Vec<u8>,
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let job_id = job_id.clone();
        self.with_conn(move |conn| runs::replace_job_sealed(conn, &job_id, old, new))
            .await
    }

    /// Ids of the runs that still hold a job body (for key rotation).
    ///
    /// # Errors
    /// [`StoreError::Query`] or [`StoreError::Corrupt`].
    pub async fn sealed_job_ids(&self) -> Result<Vec<JobId>, StoreError> {
        self.with_conn(runs::sealed_job_ids).await
    }

    /// A page of runs, newest first by `(created_at, job_id)`.
    ///
    /// # Errors
    /// [`StoreError::BadCursor`] for a cursor this store did not issue; [`StoreError::Query`],
    /// [`StoreError::Corrupt`].
    pub async fn list_runs(&self, filter: RunFilter) -> Result<RunPage, StoreError> {
        self.with_conn(move |conn| runs::list(conn, &filter)).await
    }

    /// Runs that still need work (state not final, or release pending), oldest first.
    ///
    /// A row among them that does not parse back into a run (or whose state is no known word)
    /// must not stop the gateway from starting, nor take the other runs down with it: it is
    /// quarantined instead — committed as `failed` with cause `corrupt`, its unreadable columns
    /// emptied, never called again — and logged by id and column names only.
    ///
    /// # Errors
    /// [`StoreError::Query`], or [`StoreError::Closed`] when the writer stopped.
    pub async fn load_unfinished(&self) -> Result<Vec<RunRecord>, StoreError> {
        let (runs, corrupt) = self
            .with_conn(|conn| runs::load_unfinished(conn, None))
            .await?;
        for row in corrupt {
            self.quarantine(row).await?;
        }
        Ok(runs)
    }

    /// [`Store::load_unfinished`] for the runs of one pool (a pool actor taking over its runs
    /// reads only those, however many runs the other pools have).
    ///
    /// # Errors
    /// [`StoreError::Query`], or [`StoreError::Closed`] when the writer stopped.
    pub async fn load_unfinished_of(&self, pool: &PoolName) -> Result<Vec<RunRecord>, StoreError> {
        let pool = pool.clone();
        let (runs, corrupt) = self
            .with_conn(move |conn| runs::load_unfinished(conn, Some(&pool)))
            .await?;
        for row in corrupt {
            self.quarantine(row).await?;
        }
        Ok(runs)
    }

    /// Commits a corrupt row as a failed run (see [`Store::load_unfinished`]).
    async fn quarantine(&self, row: models::RunRow) -> Result<(), StoreError> {
        let columns = row.corrupt_columns();
        let job_id = row.job_id.clone();
        let (run, was) = match row.quarantine(&columns, crate::domain::run::now_millis()) {
            Ok(repaired) => repaired,
            Err(e) => {
                // Its key or pool is what is broken: it cannot be addressed as a run.
                tracing::error!(job_id = %job_id.escape_debug(), columns = ?columns, error = %e, "a stored run is corrupt beyond repair; it is left out");
                return Ok(());
            }
        };
        let event = NewEvent {
            job_id: run.job_id.clone(),
            at: run.updated_at,
            kind: "transition".to_owned(),
            from: was,
            to: Some(RunState::Failed),
            detail: Some(format!(
                "quarantined at start: unreadable {}",
                columns.join(", ")
            )),
        };
        match self.commit(run.clone(), vec![event]).await {
            Ok(_) => {
                tracing::error!(job_id = %run.job_id, columns = ?columns, "run {} is corrupt in the database ({}); marked failed with cause corrupt", run.job_id, columns.join(", "));
                Ok(())
            }
            // Changed meanwhile: whoever changed it wrote a readable row.
            Err(StoreError::Stale { .. } | StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `(queued, in flight)` run counts of a pool; in flight is dispatching + pending + running.
    ///
    /// # Errors
    /// [`StoreError::Query`] or [`StoreError::Corrupt`].
    pub async fn count_active(&self, pool: &PoolName) -> Result<(i64, i64), StoreError> {
        let stats = self.pool_stats(pool).await?;
        Ok((stats.queued, stats.in_flight))
    }

    /// Overwrites a run and appends its events, atomically; answers once the transaction has
    /// committed. What is set only when a run is created is not overwritten: its id, pool,
    /// creation time, `kind`, `deadline_at` and `callback_url` keep their stored values (and its
    /// job body is not part of a commit). When the run no longer needs work (final, no release
    /// pending), its job body is dropped in the same transaction. Concurrent commits are grouped
    /// into few transactions by the writer thread. Event sequence numbers increase in commit
    /// order.
    ///
    /// `run.version` must be the version the run was read at: the commit is refused when the
    /// stored row has moved on, so a writer working from an old state never overwrites a newer
    /// one. On success the stored version is one more ([`RunRecord::committed`]).
    ///
    /// # Errors
    /// [`StoreError::Stale`] when the row changed since `run` was read, [`StoreError::NotFound`]
    /// when the run does not exist, [`StoreError::Invalid`] when an event belongs to another
    /// run, [`StoreError::Query`], [`StoreError::Closed`].
    pub async fn commit(
        &self,
        run: RunRecord,
        events: Vec<NewEvent>,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(WriteRequest::Commit { run, events, reply })?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// A run's events, by sequence number.
    ///
    /// # Errors
    /// [`StoreError::Query`] or [`StoreError::Corrupt`].
    pub async fn run_events(&self, job_id: &JobId) -> Result<Vec<EventRecord>, StoreError> {
        let job_id = job_id.clone();
        self.with_conn(move |conn| events::of_run(conn, &job_id))
            .await
    }

    /// The sequence number of the newest event (0 when the log is empty): where a stream that
    /// starts at the present begins.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn last_event_seq(&self) -> Result<i64, StoreError> {
        self.with_conn(events::last_seq).await
    }

    /// Up to `limit` (clamped to `1..=1000`) events with `seq > after_seq`, optionally of one
    /// pool and/or one run, by sequence number (for the event stream and `Last-Event-ID`).
    ///
    /// # Errors
    /// [`StoreError::Query`] or [`StoreError::Corrupt`].
    pub async fn events_after(
        &self,
        after_seq: i64,
        pool: Option<&PoolName>,
        job_id: Option<&JobId>,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let pool = pool.cloned();
        let job_id = job_id.cloned();
        self.with_conn(move |conn| {
            events::after(conn, after_seq, pool.as_ref(), job_id.as_ref(), limit)
        })
        .await
    }

    // ---- plumbing ----

    fn send(&self, request: WriteRequest) -> Result<(), StoreError> {
        self.inner
            .writer
            .send(request)
            .map_err(|_| StoreError::Closed)
    }

    /// Runs `f` with a pooled connection on tokio's blocking pool.
    async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.inner.pool.clone();
        let backend = self.inner.backend;
        blocking(move || {
            let mut conn = checkout(&pool, backend)?;
            f(&mut conn)
        })
        .await
    }
}

/// Runs blocking work on tokio's blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| StoreError::Closed)?
}
