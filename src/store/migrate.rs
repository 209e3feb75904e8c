//! The embedded migrations of both backends and the functions that apply them.

use super::StoreError;
use super::conn::DbConn;
use diesel::RunQueryDsl as _;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

/// The SQLite migrations (`migrations/sqlite`).
const SQLITE: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
/// The PostgreSQL migrations (`migrations/postgres`), named one-to-one like SQLite's.
const POSTGRES: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Advisory lock key that serialises migrations of several replicas on one PostgreSQL database.
const MIGRATION_LOCK: i64 = 0x6361_7474_0000_0001; // "catt" + 1

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn migrate_error(source: BoxError) -> StoreError {
    StoreError::Migrate { source }
}

/// Applies every pending migration; returns how many ran.
pub(crate) fn run_pending(conn: &mut DbConn) -> Result<usize, StoreError> {
    match conn {
        DbConn::Sqlite(sqlite) => sqlite
            .run_pending_migrations(SQLITE)
            .map(|applied| applied.len())
            .map_err(migrate_error),
        DbConn::Pg(pg) => {
            // Two replicas starting together must not both apply the same migration.
            diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})")).execute(pg)?;
            let result = pg
                .run_pending_migrations(POSTGRES)
                .map(|applied| applied.len())
                .map_err(migrate_error);
            let unlocked =
                diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
                    .execute(pg);
            let count = result?;
            unlocked?;
            Ok(count)
        }
    }
}

/// Reverts every applied migration (tests only: it drops all data).
#[cfg(test)]
pub(crate) fn revert_all(conn: &mut DbConn) -> Result<usize, StoreError> {
    match conn {
        DbConn::Sqlite(sqlite) => sqlite
            .revert_all_migrations(SQLITE)
            .map(|reverted| reverted.len())
            .map_err(migrate_error),
        DbConn::Pg(pg) => pg
            .revert_all_migrations(POSTGRES)
            .map(|reverted| reverted.len())
            .map_err(migrate_error),
    }
}

/// Applies the pending migrations whose directory name sorts before `name` (tests only: builds a
/// database as an older version of cattery left it); returns how many ran.
#[cfg(test)]
pub(crate) fn run_pending_before(conn: &mut DbConn, name: &str) -> Result<usize, StoreError> {
    fn before<DB, C>(
        conn: &mut C,
        source: EmbeddedMigrations,
        name: &str,
    ) -> Result<usize, BoxError>
    where
        DB: diesel::backend::Backend,
        C: MigrationHarness<DB>,
        EmbeddedMigrations: diesel::migration::MigrationSource<DB>,
    {
        let pending = conn.pending_migrations(source)?;
        let mut applied = 0;
        for migration in pending
            .iter()
            .filter(|m| m.name().to_string().as_str() < name)
        {
            conn.run_migration(migration.as_ref())?;
            applied += 1;
        }
        Ok(applied)
    }
    match conn {
        DbConn::Sqlite(sqlite) => before(sqlite, SQLITE, name),
        DbConn::Pg(pg) => before(pg, POSTGRES, name),
    }
    .map_err(migrate_error)
}
