//! Throw-away databases for tests: a temporary SQLite file, or a fresh PostgreSQL database.
//!
//! Used by this module's tests and by the integration tests. PostgreSQL needs
//! `TEST_DATABASE_URL` (an admin URL such as `postgres://postgres@127.0.0.1:5432/postgres`): each
//! [`TestDatabase`] creates `cattery_test_<random>` there and drops it (forcibly) when dropped.

use super::StoreError;
use diesel::{Connection as _, PgConnection, RunQueryDsl as _};

/// The environment variable naming the PostgreSQL server tests may use.
pub const TEST_DATABASE_URL: &str = "TEST_DATABASE_URL";

/// Which backend a test database uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBackend {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A new database on the server of `TEST_DATABASE_URL`.
    Postgres,
}

impl TestBackend {
    /// PostgreSQL when `TEST_DATABASE_URL` is set, else SQLite (what integration tests use).
    pub fn from_env() -> Self {
        if admin_url().is_some() {
            TestBackend::Postgres
        } else {
            TestBackend::Sqlite
        }
    }
}

/// The admin URL from `TEST_DATABASE_URL`, when set and not empty.
pub fn admin_url() -> Option<String> {
    std::env::var(TEST_DATABASE_URL)
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// A database that exists for as long as this value does.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    _guard: Guard,
}

#[derive(Debug)]
enum Guard {
    /// The directory is deleted when this is dropped.
    Sqlite {
        _dir: tempfile::TempDir,
    },
    Postgres {
        admin_url: String,
        name: String,
    },
}

impl TestDatabase {
    /// Creates an empty database of `backend` (migrations are run by `Store::connect`).
    ///
    /// # Errors
    /// [`StoreError::InvalidUrl`] when PostgreSQL is asked for without `TEST_DATABASE_URL`;
    /// [`StoreError::Connect`] or [`StoreError::Query`] when it cannot be created.
    pub async fn create(backend: TestBackend) -> Result<TestDatabase, StoreError> {
        tokio::task::spawn_blocking(move || Self::create_blocking(backend))
            .await
            .map_err(|_| StoreError::Closed)?
    }

    fn create_blocking(backend: TestBackend) -> Result<TestDatabase, StoreError> {
        match backend {
            TestBackend::Sqlite => {
                let dir = tempfile::Builder::new()
                    .prefix("cattery-test-")
                    .tempdir()
                    .map_err(|source| StoreError::Connect {
                        backend: "sqlite",
                        source: Box::new(source),
                    })?;
                let url = format!("sqlite://{}", dir.path().join("cattery.db").display());
                Ok(TestDatabase {
                    url,
                    _guard: Guard::Sqlite { _dir: dir },
                })
            }
            TestBackend::Postgres => {
                let admin_url = admin_url().ok_or_else(|| StoreError::InvalidUrl {
                    reason: format!("set {TEST_DATABASE_URL} to run PostgreSQL tests"),
                })?;
                let name = format!("cattery_test_{}", uuid::Uuid::new_v4().simple());
                let mut admin = connect_admin(&admin_url)?;
                diesel::sql_query(format!("CREATE DATABASE \"{name}\"")).execute(&mut admin)?;
                let url = database_url(&admin_url, &name)?;
                Ok(TestDatabase {
                    url,
                    _guard: Guard::Postgres { admin_url, name },
                })
            }
        }
    }

    /// The URL to give `Store::connect`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

fn connect_admin(admin_url: &str) -> Result<PgConnection, StoreError> {
    PgConnection::establish(admin_url).map_err(|source| StoreError::Connect {
        backend: "postgres",
        source: Box::new(source),
    })
}

/// The admin URL with its database replaced by `name`.
fn database_url(admin_url: &str, name: &str) -> Result<String, StoreError> {
    let mut url = url::Url::parse(admin_url).map_err(|_| StoreError::InvalidUrl {
        reason: format!("{TEST_DATABASE_URL} is not a URL"),
    })?;
    url.set_path(&format!("/{name}"));
    Ok(url.into())
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::Postgres { admin_url, name } = self {
            // FORCE ends connections a pool may still hold while its writer thread winds down.
            let dropped = connect_admin(admin_url).and_then(|mut admin| {
                diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut admin)
                    .map_err(StoreError::from)
            });
            if let Err(err) = dropped {
                tracing::warn!(error = %err, db.name = %name, "could not drop test database {name}");
            }
        }
    }
}
