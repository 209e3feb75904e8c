//! Queries on the `pools` table.

use super::StoreError;
use super::conn::{DbConn, write_tx};
use super::models::{PoolRow, keys_json};
use super::schema::pools;
use crate::domain::ids::PoolName;
use crate::domain::pool::PoolRecord;
use crate::domain::run::Millis;
use diesel::prelude::*;

/// How many times a pool write is retried after losing a race with another writer.
const RACE_RETRIES: usize = 5;

fn find(conn: &mut DbConn, name: &str) -> Result<Option<PoolRow>, StoreError> {
    Ok(pools::table
        .find(name)
        .select(PoolRow::as_select())
        .first(conn)
        .optional()?)
}

/// One pool.
pub(crate) fn get(conn: &mut DbConn, name: &PoolName) -> Result<Option<PoolRecord>, StoreError> {
    find(conn, name.as_str())?
        .map(PoolRow::into_record)
        .transpose()
}

/// Every pool, by name.
pub(crate) fn list(conn: &mut DbConn) -> Result<Vec<PoolRecord>, StoreError> {
    pools::table
        .order(pools::name.asc())
        .select(PoolRow::as_select())
        .load(conn)?
        .into_iter()
        .map(PoolRow::into_record)
        .collect()
}

/// What one attempt of [`put`] did.
enum Put {
    Stored(PoolRow),
    LostRace,
}

/// Inserts or replaces a pool. The store decides `revision` (1, then +1 when the digest changes)
/// and `created_at` (kept on replace; on insert, the record's `updated_at`).
pub(crate) fn put(conn: &mut DbConn, record: PoolRecord) -> Result<PoolRecord, StoreError> {
    let mut row = PoolRow::from_record(record);
    for _ in 0..RACE_RETRIES {
        match write_tx(conn, |c| put_once(c, &mut row)) {
            Ok(Put::Stored(stored)) => return stored.into_record(),
            Ok(Put::LostRace) => continue,
            // Another replica inserted the same pool first (PostgreSQL; SQLite's write lock
            // prevents it). The transaction is rolled back; read the row again.
            Err(err) if err.is_unique_violation() => continue,
            Err(err) => return Err(err),
        }
    }
    Err(StoreError::Conflict {
        what: format!("pool {}", row.name),
    })
}

/// Reads a pool row for update: on PostgreSQL it is locked until the transaction ends, so
/// concurrent replaces queue up instead of racing; SQLite's `BEGIN IMMEDIATE` already serialises.
fn find_for_update(conn: &mut DbConn, name: &str) -> Result<Option<PoolRow>, StoreError> {
    match conn {
        DbConn::Pg(pg) => Ok(pools::table
            .find(name)
            .select(PoolRow::as_select())
            .for_update()
            .first(pg)
            .optional()?),
        DbConn::Sqlite(_) => find(conn, name),
    }
}

fn put_once(conn: &mut DbConn, row: &mut PoolRow) -> Result<Put, StoreError> {
    match find_for_update(conn, &row.name)? {
        None => {
            row.revision = 1;
            row.created_at = row.updated_at;
            diesel::insert_into(pools::table)
                .values(&*row)
                .execute(conn)?;
            Ok(Put::Stored(row.clone()))
        }
        Some(old) => {
            row.created_at = old.created_at;
            row.revision = if old.digest == row.digest {
                old.revision
            } else {
                old.revision + 1
            };
            // Optimistic: only if nobody bumped the revision since we read it.
            let changed = diesel::update(
                pools::table
                    .filter(pools::name.eq(&old.name))
                    .filter(pools::revision.eq(old.revision)),
            )
            .set(&*row)
            .execute(conn)?;
            Ok(if changed == 1 {
                Put::Stored(row.clone())
            } else {
                Put::LostRace
            })
        }
    }
}

/// Replaces a pool's sealed secret bundle; None when the pool does not exist.
pub(crate) fn put_secrets(
    conn: &mut DbConn,
    name: &PoolName,
    sealed: Vec<u8>,
    keys: &[String],
    updated_at: Millis,
) -> Result<Option<PoolRecord>, StoreError> {
    write_tx(conn, |c| {
        let changed = diesel::update(pools::table.find(name.as_str()))
            .set((
                pools::secrets_sealed.eq(sealed),
                pools::secret_keys.eq(keys_json(keys)),
                pools::updated_at.eq(updated_at),
            ))
            .execute(c)?;
        if changed == 0 {
            return Ok(None);
        }
        get(c, name)
    })
}

/// Replaces a pool's sealed bundle only if it still is `old` (key rotation).
pub(crate) fn replace_secrets_sealed(
    conn: &mut DbConn,
    name: &PoolName,
    old: Vec<u8>,
    new: Vec<u8>,
) -> Result<bool, StoreError> {
    let changed = diesel::update(
        pools::table
            .filter(pools::name.eq(name.as_str()))
            .filter(pools::secrets_sealed.eq(old)),
    )
    .set(pools::secrets_sealed.eq(new))
    .execute(conn)?;
    Ok(changed > 0)
}

/// Deletes a pool; true when it existed.
pub(crate) fn delete(conn: &mut DbConn, name: &PoolName) -> Result<bool, StoreError> {
    let deleted = diesel::delete(pools::table.find(name.as_str())).execute(conn)?;
    Ok(deleted > 0)
}
