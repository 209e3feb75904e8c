//! Database connections: the two-backend connection enum, its r2d2 pool, and write transactions.

use super::StoreError;
use diesel::connection::SimpleConnection as _;
use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, BoxedSqlQuery, Query, QueryFragment, QueryId, SqlQuery};
use diesel::r2d2::{CustomizeConnection, ManageConnection, Pool, R2D2Connection};
use diesel::sql_types::{Array, BigInt, Binary, Bool, Nullable, Text, Untyped};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One connection to either backend. `Sqlite` is last because it accepts any path (diesel's
/// `establish` tries variants in order); [`DbManager`] picks the variant explicitly anyway.
#[derive(diesel::MultiConnection)]
pub(crate) enum DbConn {
    /// A PostgreSQL connection.
    Pg(PgConnection),
    /// A SQLite connection.
    Sqlite(SqliteConnection),
}

/// The backend shared by both variants (diesel's generated multi-backend).
pub(crate) type Db = <DbConn as Connection>::Backend;

/// The pool of connections.
pub(crate) type DbPool = Pool<DbManager>;

/// A connection checked out of the pool.
pub(crate) type PooledConn = diesel::r2d2::PooledConnection<DbManager>;

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

impl Backend {
    /// The backend's short name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// A parsed database URL.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// A `postgres://` or `postgresql://` URL, passed to libpq as is.
    Postgres(String),
    /// A SQLite database file.
    Sqlite(PathBuf),
}

impl Target {
    /// Parses `postgres://…`, `postgresql://…`, `sqlite://path` or a bare path.
    pub(crate) fn parse(url: &str) -> Result<Self, StoreError> {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Target::Postgres(url.to_owned()));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        if path.is_empty() {
            return Err(StoreError::InvalidUrl {
                reason: "the SQLite URL names no file; use sqlite://path/to/cattery.db".to_owned(),
            });
        }
        if path == ":memory:" || path.starts_with("file:") || path.contains("mode=memory") {
            return Err(StoreError::InvalidUrl {
                reason: "an in-memory SQLite database is not shared between connections; use a file such as sqlite://data/cattery.db".to_owned(),
            });
        }
        if url.contains("://") && !url.starts_with("sqlite://") {
            return Err(StoreError::InvalidUrl {
                reason: "unsupported database URL scheme; use sqlite://path or postgres://…"
                    .to_owned(),
            });
        }
        Ok(Target::Sqlite(PathBuf::from(path)))
    }

    /// The backend this target uses.
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Target::Postgres(_) => Backend::Postgres,
            Target::Sqlite(_) => Backend::Sqlite,
        }
    }
}

/// Opens connections of the variant the URL named (never guessing from the string).
#[derive(Debug)]
pub(crate) struct DbManager {
    target: Target,
}

impl ManageConnection for DbManager {
    type Connection = DbConn;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<DbConn, Self::Error> {
        match &self.target {
            Target::Postgres(url) => PgConnection::establish(url).map(DbConn::Pg),
            Target::Sqlite(path) => {
                SqliteConnection::establish(&path.to_string_lossy()).map(DbConn::Sqlite)
            }
        }
        .map_err(diesel::r2d2::Error::ConnectionError)
    }

    fn is_valid(&self, conn: &mut DbConn) -> Result<(), Self::Error> {
        conn.ping().map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConn) -> bool {
        std::thread::panicking() || conn.is_broken()
    }
}

/// Per-connection settings, applied when the pool opens a connection: what makes a committed
/// transaction durable, whatever the server or file was configured with.
///
/// SQLite: `journal_mode=WAL` with `synchronous=FULL`. In WAL mode `FULL` syncs the WAL file on
/// every commit, so a transaction is on stable storage before `COMMIT` returns: it survives a
/// `kill -9` of the process and also a power loss or kernel crash (with `NORMAL` it would survive
/// only the former, the last commits before a power loss being lost). The cost is one fsync per
/// transaction, which the writer's group commit spreads over every write of a batch.
/// `busy_timeout` makes a second writer (another process, or a reader upgrading) wait instead of
/// failing at once; `foreign_keys` enforces `run_events → runs` and `run_jobs → runs`.
///
/// PostgreSQL: `synchronous_commit = on`, so `COMMIT` returns only once the transaction's WAL is
/// flushed (and, where synchronous standbys are configured, acknowledged by them): a server or
/// database configured with `off` or `local` cannot make an acknowledged run vanish when the server
/// crashes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionSettings;

/// The pragmas [`SessionSettings`] runs on SQLite.
/// `busy_timeout` comes first so that switching to WAL waits for a concurrent writer too.
const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;";

/// The session settings [`SessionSettings`] runs on PostgreSQL.
const POSTGRES_SETTINGS: &str = "SET synchronous_commit = on;";

impl CustomizeConnection<DbConn, diesel::r2d2::Error> for SessionSettings {
    fn on_acquire(&self, conn: &mut DbConn) -> Result<(), diesel::r2d2::Error> {
        match conn {
            DbConn::Sqlite(sqlite) => sqlite.batch_execute(SQLITE_PRAGMAS),
            DbConn::Pg(pg) => pg.batch_execute(POSTGRES_SETTINGS),
        }
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// How long a caller waits for a free connection before the store reports it unreachable.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the pool; fails when the first connection cannot be opened.
pub(crate) fn build_pool(target: &Target, size: u32) -> Result<DbPool, StoreError> {
    if let Target::Sqlite(path) = target {
        create_parent_dir(path)?;
    }
    let backend = target.backend().name();
    Pool::builder()
        .max_size(size.max(1))
        // Connections are opened on demand only, never by the pool's background threads: a
        // PostgreSQL connection still being opened (TLS included) by such a thread when the
        // process exits can crash it at exit, after a command did all its work.
        .min_idle(Some(0))
        .connection_timeout(CHECKOUT_TIMEOUT)
        .connection_customizer(Box::new(SessionSettings))
        .build(DbManager {
            target: target.clone(),
        })
        .map_err(|source| StoreError::Connect {
            backend,
            source: Box::new(source),
        })
}

fn create_parent_dir(path: &Path) -> Result<(), StoreError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Connect {
                backend: Backend::Sqlite.name(),
                source: Box::new(source),
            })
        }
        _ => Ok(()),
    }
}

/// Runs `f` in a write transaction: `BEGIN IMMEDIATE` on SQLite (so a transaction that reads
/// before it writes takes the write lock up front and cannot fail half-way with `SQLITE_BUSY`),
/// a plain `BEGIN` on PostgreSQL. Commits on `Ok`, rolls back on `Err`.
pub(crate) fn write_tx<T, E, F>(conn: &mut DbConn, f: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConn) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    write_tx_beginning(conn, "BEGIN", f)
}

/// [`write_tx`], beginning the transaction on PostgreSQL with `pg_begin` (`BEGIN` and what
/// must come first, sent in one round trip).
pub(crate) fn write_tx_beginning<T, E, F>(conn: &mut DbConn, pg_begin: &str, f: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConn) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    match conn {
        DbConn::Sqlite(sqlite) => {
            AnsiTransactionManager::begin_transaction_sql(sqlite, "BEGIN IMMEDIATE")?;
        }
        DbConn::Pg(pg) => AnsiTransactionManager::begin_transaction_sql(pg, pg_begin)?,
    }
    match f(conn) {
        Ok(value) => {
            <DbConn as TransactionManager<DbConn>>::commit_transaction(conn)?;
            Ok(value)
        }
        Err(err) => match <DbConn as TransactionManager<DbConn>>::rollback_transaction(conn) {
            Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => Err(err),
            Err(rollback) => Err(rollback.into()),
        },
    }
}

/// A value bound to a raw query.
#[derive(Debug, Clone)]
pub(crate) enum Bind {
    /// `Text`.
    Text(String),
    /// `Nullable<Text>`.
    OptText(Option<String>),
    /// `BigInt`.
    BigInt(i64),
    /// `Nullable<BigInt>`.
    OptBigInt(Option<i64>),
    /// `Bool`.
    Bool(bool),
    /// `Binary`.
    Binary(Vec<u8>),
}

/// A raw query over both backends: `sql` uses `?` placeholders, rewritten to `$1, $2, …` for
/// PostgreSQL; `binds` are applied in order. The SQL must not contain `?` anywhere else.
pub(crate) fn raw_query(
    conn: &DbConn,
    sql: &str,
    binds: Vec<Bind>,
) -> BoxedSqlQuery<'static, Db, SqlQuery> {
    let sql = match conn {
        DbConn::Pg(_) => numbered_placeholders(sql),
        DbConn::Sqlite(_) => sql.to_owned(),
    };
    binds.into_iter().fold(
        diesel::sql_query(sql).into_boxed::<Db>(),
        |q, bind| match bind {
            Bind::Text(v) => q.bind::<Text, _>(v),
            Bind::OptText(v) => q.bind::<Nullable<Text>, _>(v),
            Bind::BigInt(v) => q.bind::<BigInt, _>(v),
            Bind::OptBigInt(v) => q.bind::<Nullable<BigInt>, _>(v),
            Bind::Bool(v) => q.bind::<Bool, _>(v),
            Bind::Binary(v) => q.bind::<Binary, _>(v),
        },
    )
}

/// A statement whose SQL text is fixed (only its bind values change), run through diesel's
/// prepared-statement cache: each connection prepares it once and reuses it, where a
/// [`raw_query`] is parsed (SQLite) or planned (PostgreSQL) anew every time.
///
/// The text uses `?` placeholders and must contain no `?` anywhere else; diesel's query builder
/// writes each placeholder as the backend's own (`?` on SQLite, `$1, $2, …` on PostgreSQL), so
/// one text serves both. The cache is keyed by `K`, a type of its own for each place in the
/// code that runs a statement (the [`cached!`] macro declares one there): a lookup costs a
/// `TypeId` comparison, where a key of SQL text would have the statement's text written out and
/// hashed again on every execution. So one place must always run the same text, and never text
/// built from varying input such as an `IN` list of any length or optional filters, which stay
/// [`raw_query`]s.
///
/// `B` is the kind of bind value: [`Bind`] for statements that run on either backend (through
/// [`DbConn`]), [`PgBind`] for PostgreSQL-only statements that bind arrays.
#[must_use = "a query runs only when executed or loaded"]
pub(crate) struct Cached<K, B = Bind> {
    sql: &'static str,
    /// `sql` split at its placeholders, once per call site.
    parts: &'static [&'static str],
    binds: Vec<B>,
    key: std::marker::PhantomData<fn() -> K>,
}

/// A [`Cached`] statement: `sql` with `binds` applied in order, cached under the key type `K`;
/// `parts` holds the split text, kept for the life of the process (use [`cached!`], which gives
/// each call site its own key and split).
pub(crate) fn cached_as<K, B>(
    sql: &'static str,
    parts: &'static std::sync::OnceLock<Vec<&'static str>>,
    binds: Vec<B>,
) -> Cached<K, B> {
    Cached {
        sql,
        parts: parts.get_or_init(|| sql.split('?').collect()),
        binds,
        key: std::marker::PhantomData,
    }
}

/// `cached!(SQL, binds)`: a [`Cached`] statement keyed by a type declared at this call site,
/// its text split at the placeholders once.
macro_rules! cached {
    ($sql:expr, $binds:expr $(,)?) => {{
        /// The statement cache key of this call site.
        struct Key;
        static PARTS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
        $crate::store::conn::cached_as::<Key, _>($sql, &PARTS, $binds)
    }};
}
pub(crate) use cached;

/// A value that a [`Cached`] statement binds on backend `DB`.
pub(crate) trait BindValue<DB: diesel::backend::Backend> {
    /// Binds this value at the placeholder just written.
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, DB>) -> QueryResult<()>;
}

impl BindValue<Db> for Bind {
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Db>) -> QueryResult<()> {
        match self {
            Bind::Text(v) => out.push_bind_param::<Text, _>(v),
            Bind::OptText(v) => out.push_bind_param::<Nullable<Text>, _>(v),
            Bind::BigInt(v) => out.push_bind_param::<BigInt, _>(v),
            Bind::OptBigInt(v) => out.push_bind_param::<Nullable<BigInt>, _>(v),
            Bind::Bool(v) => out.push_bind_param::<Bool, _>(v),
            Bind::Binary(v) => out.push_bind_param::<Binary, _>(v),
        }
    }
}

/// A value bound to a PostgreSQL-only [`Cached`] statement: one column of a set-based write, as
/// an array (`unnest`ed by the statement), or a scalar.
#[derive(Debug, Clone)]
pub(crate) enum PgBind {
    /// `BigInt`.
    BigInt(i64),
    /// `Array<Text>`.
    Texts(Vec<String>),
    /// `Array<Nullable<Text>>`.
    OptTexts(Vec<Option<String>>),
    /// `Array<BigInt>`.
    BigInts(Vec<i64>),
    /// `Array<Nullable<BigInt>>`.
    OptBigInts(Vec<Option<i64>>),
    /// `Array<Bool>`.
    Bools(Vec<bool>),
    /// `Array<Binary>`.
    Bytes(Vec<Vec<u8>>),
}

impl BindValue<Pg> for PgBind {
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        match self {
            PgBind::BigInt(v) => out.push_bind_param::<BigInt, _>(v),
            PgBind::Texts(v) => out.push_bind_param::<Array<Text>, _>(v),
            PgBind::OptTexts(v) => out.push_bind_param::<Array<Nullable<Text>>, _>(v),
            PgBind::BigInts(v) => out.push_bind_param::<Array<BigInt>, _>(v),
            PgBind::OptBigInts(v) => out.push_bind_param::<Array<Nullable<BigInt>>, _>(v),
            PgBind::Bools(v) => out.push_bind_param::<Array<Bool>, _>(v),
            PgBind::Bytes(v) => out.push_bind_param::<Array<Binary>, _>(v),
        }
    }
}

impl<K, B> Cached<K, B> {
    fn placeholder_mismatch(&self) -> diesel::result::Error {
        diesel::result::Error::QueryBuilderError(
            format!(
                "a cached statement has {} placeholders but {} binds",
                self.sql.matches('?').count(),
                self.binds.len()
            )
            .into(),
        )
    }
}

impl<DB, K, B> QueryFragment<DB> for Cached<K, B>
where
    DB: diesel::backend::Backend,
    B: BindValue<DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let mut parts = self.parts.iter().copied();
        let mut binds = self.binds.iter();
        if let Some(first) = parts.next() {
            out.push_sql(first);
        }
        for part in parts {
            let bind = binds.next().ok_or_else(|| self.placeholder_mismatch())?;
            bind.push(&mut out)?;
            out.push_sql(part);
        }
        if binds.next().is_some() {
            return Err(self.placeholder_mismatch());
        }
        Ok(())
    }
}

impl<K: 'static, B> QueryId for Cached<K, B> {
    type QueryId = K;

    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<K, B> Query for Cached<K, B> {
    // Rows are read by column name (`QueryableByName`), as with `sql_query`.
    type SqlType = Untyped;
}

impl<K> RunQueryDsl<DbConn> for Cached<K, Bind> {}

impl<K> RunQueryDsl<PgConnection> for Cached<K, PgBind> {}

fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_name_their_backend() {
        assert!(matches!(
            Target::parse("postgres://u@h/db").unwrap(),
            Target::Postgres(_)
        ));
        assert!(matches!(
            Target::parse("postgresql://u@h/db").unwrap(),
            Target::Postgres(_)
        ));
        match Target::parse("sqlite://data/cattery.db").unwrap() {
            Target::Sqlite(path) => assert_eq!(path, PathBuf::from("data/cattery.db")),
            other => panic!("{other:?}"),
        }
        match Target::parse("sqlite:///var/lib/cattery.db").unwrap() {
            Target::Sqlite(path) => assert_eq!(path, PathBuf::from("/var/lib/cattery.db")),
            other => panic!("{other:?}"),
        }
        match Target::parse("./x.db").unwrap() {
            Target::Sqlite(path) => assert_eq!(path, PathBuf::from("./x.db")),
            other => panic!("{other:?}"),
        }
        for bad in [
            "",
            "sqlite://",
            "sqlite://:memory:",
            ":memory:",
            "mysql://h/db",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn postgres_placeholders_are_numbered_in_order() {
        assert_eq!(
            numbered_placeholders("a = ? AND (b < ? OR c = ?)"),
            "a = $1 AND (b < $2 OR c = $3)"
        );
    }
}
