//! Queries on the `gateway_keys` table: gateway-wide keys, stored only as sealed envelopes.

use super::StoreError;
use super::conn::DbConn;
use super::schema::gateway_keys;
use diesel::prelude::*;

/// The envelope of the key `name`, if it exists.
pub(crate) fn get(conn: &mut DbConn, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(gateway_keys::table
        .find(name)
        .select(gateway_keys::sealed)
        .first(conn)
        .optional()?)
}

/// Stores `sealed` as the key `name` unless one exists; returns the envelope stored, which is
/// the other one when another gateway created the key first.
pub(crate) fn create(
    conn: &mut DbConn,
    name: &str,
    sealed: Vec<u8>,
    now: i64,
) -> Result<Vec<u8>, StoreError> {
    if let Some(existing) = get(conn, name)? {
        return Ok(existing);
    }
    let inserted = diesel::insert_into(gateway_keys::table)
        .values((
            gateway_keys::name.eq(name),
            gateway_keys::sealed.eq(&sealed),
            gateway_keys::created_at.eq(now),
        ))
        .execute(conn);
    match inserted {
        Ok(_) => Ok(sealed),
        Err(e) => {
            let error = StoreError::from(e);
            if !error.is_unique_violation() {
                return Err(error);
            }
            get(conn, name)?.ok_or(error)
        }
    }
}

/// Replaces the envelope of `name` only if it still is `old` (a compare-and-swap for key
/// rotation); true when replaced.
pub(crate) fn replace(
    conn: &mut DbConn,
    name: &str,
    old: Vec<u8>,
    new: Vec<u8>,
) -> Result<bool, StoreError> {
    let changed = diesel::update(
        gateway_keys::table
            .filter(gateway_keys::name.eq(name))
            .filter(gateway_keys::sealed.eq(old)),
    )
    .set(gateway_keys::sealed.eq(new))
    .execute(conn)?;
    Ok(changed > 0)
}

/// The names of every stored key.
pub(crate) fn names(conn: &mut DbConn) -> Result<Vec<String>, StoreError> {
    Ok(gateway_keys::table
        .order(gateway_keys::name.asc())
        .select(gateway_keys::name)
        .load(conn)?)
}
