//! `cattery backup`: a consistent copy of a SQLite database taken while a gateway may be
//! writing to it, and the database URL check of `cattery config check`.
//!
//! The copy is SQLite's `VACUUM INTO`, which reads one snapshot of the database in a single
//! read transaction (WAL mode lets the gateway go on committing meanwhile) and writes it as a
//! compact, self-contained file: no `-wal` file to copy along. It is written beside the target
//! under a temporary name, synced, made private (0600: it holds the sealed secrets and the
//! digests of submissions), and renamed into place, so a reader never sees half a backup. No
//! migration runs and no instance lock is taken: a backup never changes the database it reads.

use super::StoreError;
use super::conn::{Backend, Target};
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use std::path::{Path, PathBuf};

/// Why a backup was not made.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The database is PostgreSQL, which has its own tools.
    #[error(
        "the database is PostgreSQL: cattery backup copies SQLite databases only; back up \
         PostgreSQL with pg_dump (for example `pg_dump --format=custom --file=cattery.dump \
         <database URL>`) and restore with pg_restore"
    )]
    Postgres,
    /// The target exists and `--force` was not given.
    #[error("{0} exists already; choose another file or pass --force to replace it")]
    Exists(PathBuf),
    /// The SQLite database file does not exist.
    #[error("there is no database at {0}")]
    NoDatabase(PathBuf),
    /// The database URL is not usable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The copy could not be written.
    #[error("cannot write the backup {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// SQLite refused the copy.
    #[error("SQLite could not copy the database")]
    Copy {
        /// The cause.
        #[source]
        source: diesel::result::Error,
    },
}

/// What a backup copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// The database file that was read.
    pub source: PathBuf,
    /// The backup file.
    pub target: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Which backend a database URL names (`"sqlite"` or `"postgres"`), without connecting.
///
/// # Errors
/// [`StoreError::InvalidUrl`] with what to write instead.
pub fn backend_of(url: &str) -> Result<&'static str, StoreError> {
    Ok(Target::parse(url)?.backend().name())
}

/// Copies the SQLite database `url` to `target` (see the module doc); refuses an existing
/// `target` unless `force`.
///
/// # Errors
/// [`BackupError`]: PostgreSQL, an existing target, a missing database, a failed copy.
pub async fn backup(url: &str, target: &Path, force: bool) -> Result<BackupReport, BackupError> {
    let source = match Target::parse(url)? {
        Target::Postgres(_) => return Err(BackupError::Postgres),
        Target::Sqlite(path) => path,
    };
    if !source.exists() {
        return Err(BackupError::NoDatabase(source));
    }
    if target.exists() && !force {
        return Err(BackupError::Exists(target.to_owned()));
    }
    let target = target.to_owned();
    tokio::task::spawn_blocking(move || copy(&source, &target, force))
        .await
        .map_err(|_| BackupError::Store(StoreError::Closed))?
}

fn copy(source: &Path, target: &Path, force: bool) -> Result<BackupReport, BackupError> {
    let write_error = |source| BackupError::Write {
        path: target.to_owned(),
        source,
    };
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".to_owned());
    let partial = dir.join(format!(".{name}.partial-{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut conn = SqliteConnection::establish(&source.to_string_lossy()).map_err(|e| {
            StoreError::Connect {
                backend: Backend::Sqlite.name(),
                source: Box::new(e),
            }
        })?;
        // Wait for a writer's lock instead of failing at once; never change the journal mode.
        conn.batch_execute("PRAGMA busy_timeout = 10000;")
            .map_err(|source| BackupError::Copy { source })?;
        diesel::sql_query("VACUUM INTO ?")
            .bind::<diesel::sql_types::Text, _>(partial.to_string_lossy().into_owned())
            .execute(&mut conn)
            .map_err(|source| BackupError::Copy { source })?;
        drop(conn);
        let file = std::fs::File::open(&partial).map_err(write_error)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(write_error)?;
        }
        file.sync_all().map_err(write_error)?;
        let bytes = file.metadata().map_err(write_error)?.len();
        if !force && target.exists() {
            return Err(BackupError::Exists(target.to_owned()));
        }
        std::fs::rename(&partial, target).map_err(write_error)?;
        // The rename is durable once the directory is synced.
        if let Ok(dir) = std::fs::File::open(&dir) {
            let _ = dir.sync_all();
        }
        Ok(BackupReport {
            source: source.to_owned(),
            target: target.to_owned(),
            bytes,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}
