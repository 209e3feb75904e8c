//! A throw-away database per test: a temporary SQLite file, or a PostgreSQL database dropped on
//! drop (when `TEST_DATABASE_URL` is set), and ways to read or change it behind the gateway's
//! back, as an attacker with the database or a crash half-way through a write would.

use cattery::store::testing::TestBackend;
use std::path::PathBuf;

/// A throw-away database: a temporary SQLite file, or a PostgreSQL database dropped on drop.
pub struct TestDatabase {
    inner: cattery::store::testing::TestDatabase,
}

impl TestDatabase {
    /// A database of the backend the environment asks for (`TEST_DATABASE_URL`: PostgreSQL).
    pub async fn create() -> TestDatabase {
        TestDatabase::create_on(TestBackend::from_env()).await
    }

    /// A database of `backend`, whatever the environment says (a benchmark measures both).
    pub async fn create_on(backend: TestBackend) -> TestDatabase {
        TestDatabase {
            inner: cattery::store::testing::TestDatabase::create(backend)
                .await
                .expect("a test database"),
        }
    }

    pub fn url(&self) -> &str {
        self.inner.url()
    }

    pub fn is_postgres(&self) -> bool {
        self.url().starts_with("postgres")
    }

    /// The PostgreSQL database's name, when the database is PostgreSQL.
    pub fn postgres_name(&self) -> Option<String> {
        self.is_postgres().then(|| {
            url::Url::parse(self.url())
                .unwrap()
                .path()
                .trim_start_matches('/')
                .to_owned()
        })
    }

    /// The SQLite file, when the database is SQLite.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self.url().strip_prefix("sqlite://").map(PathBuf::from)
    }

    /// Runs one SQL statement straight on the database (behind the gateway's back), returning
    /// the number of rows it changed.
    pub fn execute_sql(&self, sql: &str) -> usize {
        use diesel::RunQueryDsl as _;
        if self.is_postgres() {
            diesel::sql_query(sql).execute(&mut self.pg()).unwrap()
        } else {
            diesel::sql_query(sql).execute(&mut self.sqlite()).unwrap()
        }
    }

    /// A PostgreSQL connection of its own to the test database.
    pub fn pg(&self) -> diesel::PgConnection {
        use diesel::Connection as _;
        diesel::PgConnection::establish(self.url()).unwrap()
    }

    /// An SQLite connection of its own to the test database, which waits up to 10 s for the
    /// gateway's write lock (or a store closing its connections) instead of failing at once.
    pub fn sqlite(&self) -> diesel::SqliteConnection {
        use diesel::{Connection as _, RunQueryDsl as _};
        let path = self.sqlite_path().unwrap();
        let mut conn = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        diesel::sql_query("PRAGMA busy_timeout = 10000")
            .execute(&mut conn)
            .unwrap();
        conn
    }

    /// The sealed secret bundles `(pool, envelope)` and job bodies `(jobId, envelope)`, read
    /// straight from the database.
    pub fn sealed_rows(&self) -> (SealedRows, SealedRows) {
        use diesel::RunQueryDsl as _;
        let pairs = |rows: Vec<SealedRow>| rows.into_iter().map(|r| (r.id, r.sealed)).collect();
        if self.is_postgres() {
            let mut conn = self.pg();
            let pools = diesel::sql_query(POOL_ROWS).load(&mut conn).unwrap();
            let jobs = diesel::sql_query(JOB_ROWS).load(&mut conn).unwrap();
            (pairs(pools), pairs(jobs))
        } else {
            let mut conn = self.sqlite();
            let pools = diesel::sql_query(POOL_ROWS).load(&mut conn).unwrap();
            let jobs = diesel::sql_query(JOB_ROWS).load(&mut conn).unwrap();
            (pairs(pools), pairs(jobs))
        }
    }

    /// Overwrites one run's sealed job body straight in the database.
    pub fn update_job_sealed(&self, job_id: &str, sealed: &[u8]) {
        use diesel::RunQueryDsl as _;
        use diesel::sql_types::{Binary, Text};
        let changed = if self.is_postgres() {
            let mut conn = self.pg();
            diesel::sql_query("UPDATE run_jobs SET job_sealed = $1 WHERE job_id = $2")
                .bind::<Binary, _>(sealed)
                .bind::<Text, _>(job_id)
                .execute(&mut conn)
                .unwrap()
        } else {
            let mut conn = self.sqlite();
            diesel::sql_query("UPDATE run_jobs SET job_sealed = ? WHERE job_id = ?")
                .bind::<Binary, _>(sealed)
                .bind::<Text, _>(job_id)
                .execute(&mut conn)
                .unwrap()
        };
        assert_eq!(changed, 1);
    }

    /// Everything an attacker holding the database could read: the SQLite file with its WAL and
    /// shared memory, or every row of every PostgreSQL table rendered as text (bytea as hex).
    pub fn raw_contents(&self) -> Vec<u8> {
        if let Some(path) = self.sqlite_path() {
            let mut bytes = Vec::new();
            for suffix in ["", "-wal", "-shm"] {
                let file = format!("{}{suffix}", path.display());
                if let Ok(content) = std::fs::read(&file) {
                    bytes.extend(content);
                }
            }
            assert!(bytes.len() > 4096, "the database file was read");
            return bytes;
        }
        use diesel::RunQueryDsl as _;
        #[derive(diesel::QueryableByName)]
        struct Text {
            #[diesel(sql_type = diesel::sql_types::Text)]
            text: String,
        }
        let mut conn = self.pg();
        let tables: Vec<Text> = diesel::sql_query(
            "SELECT table_name::text AS text FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .load(&mut conn)
        .unwrap();
        assert!(tables.len() >= 3, "the tables were listed");
        let mut dump = Vec::new();
        for table in tables {
            let rows: Vec<Text> = diesel::sql_query(format!(
                "SELECT coalesce(string_agg(t::text, E'\\n'), '') AS text FROM public.\"{}\" t",
                table.text
            ))
            .load(&mut conn)
            .unwrap();
            for row in rows {
                dump.extend(row.text.into_bytes());
            }
        }
        dump
    }
}

/// `(row id, envelope)` pairs.
pub type SealedRows = Vec<(String, Vec<u8>)>;

#[derive(diesel::QueryableByName)]
struct SealedRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
    #[diesel(sql_type = diesel::sql_types::Binary)]
    sealed: Vec<u8>,
}

const POOL_ROWS: &str = "SELECT name AS id, secrets_sealed AS sealed FROM pools ORDER BY name";
const JOB_ROWS: &str = "SELECT job_id AS id, job_sealed AS sealed FROM run_jobs ORDER BY job_id";
