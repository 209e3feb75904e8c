//! The instance lock: one gateway at a time drives the runs of a database.
//!
//! Several gateways on one database would each resume and drive every run (two dispatches, two
//! releases). Until replicas share the work, a gateway takes this lock before it touches the
//! database and refuses to start when another holds it. The lock dies with its holder, however
//! it ends (`kill -9` included): an exclusive `flock` on `<database file>.lock` for SQLite, and a
//! session advisory lock held on a dedicated connection for PostgreSQL (the server drops it when
//! that connection closes).
//!
//! That connection can break while the gateway lives (PostgreSQL restarted, a proxy cut it), and
//! the lock goes with it. A watcher checks the connection every few seconds and takes the lock
//! again on a new one; when another gateway took it meanwhile, this one stops the process at once
//! (fail-stop): everything it did is committed, and two gateways must never drive the same runs.

use super::StoreError;
use super::conn::Target;
use diesel::prelude::*;
use diesel::sql_types::Bool;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

/// Advisory lock key of the instance lock on PostgreSQL (the migration and event locks use 1, 2).
const INSTANCE_LOCK: i64 = 0x6361_7474_0000_0003; // "catt" + 3

/// A held instance lock; released when dropped or when the process ends.
pub struct InstanceLock {
    _held: Held,
}

impl std::fmt::Debug for InstanceLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self._held {
            Held::File { .. } => "lock file",
            Held::Postgres { .. } => "advisory lock",
        };
        f.debug_struct("InstanceLock").field("held", &kind).finish()
    }
}

enum Held {
    /// The open, `flock`ed lock file.
    File { _file: File },
    /// The watcher thread that owns the connection holding the session advisory lock.
    Postgres { _watch: Watch },
}

/// How often the watcher checks the connection that holds the PostgreSQL lock.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The exit status of a gateway that lost its instance lock to another one.
const LOST_LOCK_EXIT: i32 = 75;

/// The connection holding the PostgreSQL lock, shared by the watcher and its [`Watch`].
type LockConnection = std::sync::Arc<std::sync::Mutex<Option<PgConnection>>>;

/// Stops the watcher when dropped and closes the connection, which releases the lock at once.
struct Watch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conn: LockConnection,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // The watcher holds the connection only while it checks or replaces it; should it be
        // doing so now, it closes the connection itself when it sees `stop`.
        if let Ok(mut conn) = self.conn.try_lock() {
            conn.take();
        }
    }
}

/// Keeps the advisory lock of `url` held on `conn` until the returned [`Watch`] is dropped (see
/// the module docs).
fn watch(url: String, conn: PgConnection) -> Result<Watch, StoreError> {
    use std::sync::atomic::Ordering;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let conn: LockConnection = std::sync::Arc::new(std::sync::Mutex::new(Some(conn)));
    let (stopped, held) = (stop.clone(), conn.clone());
    std::thread::Builder::new()
        .name("cattery-instance-lock".to_owned())
        .spawn(move || {
            let tick = std::time::Duration::from_millis(100);
            loop {
                let mut waited = std::time::Duration::ZERO;
                while waited < WATCH_EVERY {
                    if stopped.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(tick);
                    waited += tick;
                }
                let mut guard = held
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if stopped.load(Ordering::SeqCst) {
                    guard.take();
                    return;
                }
                let Some(current) = guard.as_mut() else {
                    return;
                };
                if diesel::sql_query("SELECT 1").execute(current).is_ok() {
                    continue;
                }
                tracing::warn!("the connection holding the instance lock broke; taking the lock again");
                match advisory_lock(&url) {
                    Ok(again) => {
                        *guard = Some(again);
                        tracing::info!("instance lock taken again");
                    }
                    Err(e @ StoreError::InUse { .. }) => {
                        tracing::error!(error = %e, "another gateway took the instance lock while this one was cut off from the database; stopping at once so that only one gateway drives the runs (everything done so far is committed)");
                        std::process::exit(LOST_LOCK_EXIT);
                    }
                    Err(e) => {
                        // The database is out of reach: this gateway's commits fail as well and
                        // nothing moves; try again at the next check.
                        tracing::warn!(error = %e, "cannot take the instance lock again yet");
                    }
                }
            }
        })
        .map_err(|source| StoreError::Connect {
            backend: "postgres",
            source: Box::new(source),
        })?;
    Ok(Watch { stop, conn })
}

/// Takes the instance lock of `target`, or says who holds it.
pub(crate) fn acquire(target: &Target) -> Result<InstanceLock, StoreError> {
    let held = match target {
        Target::Sqlite(path) => Held::File {
            _file: lock_file(path)?,
        },
        Target::Postgres(url) => Held::Postgres {
            _watch: watch(url.clone(), advisory_lock(url)?)?,
        },
    };
    Ok(InstanceLock { _held: held })
}

/// `<database file>.lock`, beside the database so that every gateway naming that file finds it.
pub(crate) fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

fn lock_file(database: &Path) -> Result<File, StoreError> {
    let path = lock_path(database);
    let io_error = |source: std::io::Error| StoreError::Connect {
        backend: "sqlite",
        source: Box::new(source),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_error)?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_error)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            // The holder wrote its process id into the file: name it to help the operator.
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(StoreError::InUse {
                what: format!("the SQLite database {}", database.display()),
                holder: if pid.is_empty() || !pid.chars().all(|c| c.is_ascii_digit()) {
                    format!(" (it holds {})", path.display())
                } else {
                    format!(" (process {pid} holds {})", path.display())
                },
            });
        }
        Err(TryLockError::Error(source)) => return Err(io_error(source)),
    }
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| writeln!(file, "{}", std::process::id()))
        .map_err(io_error)?;
    Ok(file)
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

fn advisory_lock(url: &str) -> Result<PgConnection, StoreError> {
    let connect_error = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Connect {
        backend: "postgres",
        source,
    };
    let mut conn = PgConnection::establish(url).map_err(|e| connect_error(Box::new(e)))?;
    let answer: Locked = diesel::sql_query(format!(
        "SELECT pg_try_advisory_lock({INSTANCE_LOCK}) AS locked"
    ))
    .get_result(&mut conn)?;
    if answer.locked {
        return Ok(conn);
    }
    let database: Option<DatabaseName> = diesel::sql_query("SELECT current_database() AS name")
        .get_result(&mut conn)
        .ok();
    Err(StoreError::InUse {
        what: match database {
            Some(db) => format!("the PostgreSQL database {:?}", db.name),
            None => "the PostgreSQL database".to_owned(),
        },
        holder: String::new(),
    })
}

#[derive(QueryableByName)]
struct DatabaseName {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_sqlite_file_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::Sqlite(dir.path().join("db").join("cattery.db"));
        let first = acquire(&target).unwrap();
        let refused = acquire(&target).unwrap_err();
        let message = refused.to_string();
        assert!(matches!(refused, StoreError::InUse { .. }), "{message}");
        assert!(
            message.contains(&format!("process {}", std::process::id())),
            "{message}"
        );
        drop(first);
        acquire(&target).unwrap();
    }
}
