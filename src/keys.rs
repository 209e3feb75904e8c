//! Master key rotation: re-seals every stored secret bundle, job body and gateway-wide key (the
//! idempotency digest key) under the current sealing key, row by row, while the gateway may keep
//! running. The gateway-wide keys themselves never change, so idempotency digests made before a
//! rotation still match after it, even once the old master key is removed.
//!
//! Each row is replaced with a compare-and-swap (only if it still holds the envelope that was
//! read), so a concurrent write by a running gateway is never overwritten: the row is read
//! again and judged anew. Rows already sealed under the newest key are skipped, so an
//! interrupted rotation simply continues when run again. A job body dropped meanwhile (its run
//! finished) needs nothing.
//!
//! The procedure: give every gateway the new key first and the old ones after it
//! (`CATTERY_MASTER_KEYS=new,old` or a key file, newest first) and restart them, so that they
//! seal with the new key and still open the old envelopes; run `cattery keys rotate` with the
//! same keys; once it reports nothing left under an old key, the old keys can be removed.

use crate::crypto::{CryptoError, Sealer, binding};
use crate::domain::ids::{JobId, PoolName};
use crate::store::{Store, StoreError};

/// How often one row is re-read after losing a race with a concurrent writer.
const RACE_RETRIES: usize = 5;

/// Why rotation stopped.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The database failed.
    #[error("the database failed during key rotation")]
    Store(#[from] StoreError),
}

/// What a rotation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// Secret bundles re-sealed under the newest key.
    pub pools_resealed: usize,
    /// Secret bundles that were already under the newest key.
    pub pools_current: usize,
    /// Job bodies re-sealed under the newest key.
    pub jobs_resealed: usize,
    /// Job bodies that were already under the newest key.
    pub jobs_current: usize,
    /// Job bodies dropped while the rotation ran (their runs finished).
    pub jobs_gone: usize,
    /// Gateway-wide keys re-sealed under the newest key.
    pub keys_resealed: usize,
    /// Gateway-wide keys that were already under the newest key.
    pub keys_current: usize,
    /// Rows that could not be re-sealed, with the reason (never any plaintext).
    pub failures: Vec<String>,
}

enum RowOutcome {
    Resealed,
    Current,
    Gone,
}

/// Re-seals every row that is not under `sealer`'s sealing key.
///
/// # Errors
/// [`KeysError::Store`] when the database fails; a row that cannot be opened (sealed under a
/// key that is not configured, or corrupt) is listed in [`RotationReport::failures`] and the
/// rotation goes on.
pub async fn rotate(store: &Store, sealer: &Sealer) -> Result<RotationReport, KeysError> {
    let mut report = RotationReport::default();
    for pool in store.list_pools().await? {
        match rotate_pool(store, sealer, &pool.name).await {
            Ok(RowOutcome::Resealed) => report.pools_resealed += 1,
            Ok(RowOutcome::Current | RowOutcome::Gone) => report.pools_current += 1,
            Err(RowError::Store(e)) => return Err(e.into()),
            Err(RowError::Crypto(e)) => report
                .failures
                .push(format!("secrets of pool {}: {e}", pool.name)),
            Err(RowError::Race) => report.failures.push(format!(
                "secrets of pool {}: changed concurrently {RACE_RETRIES} times; run again",
                pool.name
            )),
        }
    }
    for name in store.gateway_key_names().await? {
        match rotate_gateway_key(store, sealer, &name).await {
            Ok(RowOutcome::Resealed) => report.keys_resealed += 1,
            Ok(RowOutcome::Current | RowOutcome::Gone) => report.keys_current += 1,
            Err(RowError::Store(e)) => return Err(e.into()),
            Err(RowError::Crypto(e)) => report.failures.push(format!("gateway key {name}: {e}")),
            Err(RowError::Race) => report.failures.push(format!(
                "gateway key {name}: changed concurrently {RACE_RETRIES} times; run again"
            )),
        }
    }
    for job_id in store.sealed_job_ids().await? {
        match rotate_job(store, sealer, &job_id).await {
            Ok(RowOutcome::Resealed) => report.jobs_resealed += 1,
            Ok(RowOutcome::Current) => report.jobs_current += 1,
            Ok(RowOutcome::Gone) => report.jobs_gone += 1,
            Err(RowError::Store(e)) => return Err(e.into()),
            Err(RowError::Crypto(e)) => report
                .failures
                .push(format!("job body of run {job_id}: {e}")),
            Err(RowError::Race) => report.failures.push(format!(
                "job body of run {job_id}: changed concurrently {RACE_RETRIES} times; run again"
            )),
        }
    }
    tracing::info!(
        pools_resealed = report.pools_resealed,
        jobs_resealed = report.jobs_resealed,
        failures = report.failures.len(),
        key_id = sealer.key_ids().first().map_or("", String::as_str),
        "key rotation pass finished"
    );
    Ok(report)
}

enum RowError {
    Store(StoreError),
    Crypto(CryptoError),
    Race,
}

impl From<StoreError> for RowError {
    fn from(error: StoreError) -> Self {
        RowError::Store(error)
    }
}

impl From<CryptoError> for RowError {
    fn from(error: CryptoError) -> Self {
        RowError::Crypto(error)
    }
}

async fn rotate_pool(
    store: &Store,
    sealer: &Sealer,
    name: &PoolName,
) -> Result<RowOutcome, RowError> {
    let aad = binding::pool_secrets(name.as_str());
    for _ in 0..RACE_RETRIES {
        let Some(record) = store.get_pool(name).await? else {
            return Ok(RowOutcome::Gone);
        };
        let old = record.secrets_sealed;
        if !sealer.needs_reseal(&old)? {
            return Ok(RowOutcome::Current);
        }
        let new = sealer.reseal(&old, &aad)?;
        if store.replace_pool_secrets_sealed(name, old, new).await? {
            return Ok(RowOutcome::Resealed);
        }
    }
    Err(RowError::Race)
}

async fn rotate_gateway_key(
    store: &Store,
    sealer: &Sealer,
    name: &str,
) -> Result<RowOutcome, RowError> {
    let aad = binding::gateway_key(name);
    for _ in 0..RACE_RETRIES {
        let Some(old) = store.gateway_key(name).await? else {
            return Ok(RowOutcome::Gone);
        };
        if !sealer.needs_reseal(&old)? {
            return Ok(RowOutcome::Current);
        }
        let new = sealer.reseal(&old, &aad)?;
        if store.replace_gateway_key(name, old, new).await? {
            return Ok(RowOutcome::Resealed);
        }
    }
    Err(RowError::Race)
}

async fn rotate_job(
    store: &Store,
    sealer: &Sealer,
    job_id: &JobId,
) -> Result<RowOutcome, RowError> {
    let aad = binding::run_job(job_id.as_str());
    for _ in 0..RACE_RETRIES {
        let Some(old) = store.get_job_sealed(job_id).await? else {
            return Ok(RowOutcome::Gone);
        };
        if !sealer.needs_reseal(&old)? {
            return Ok(RowOutcome::Current);
        }
        let new = sealer.reseal(&old, &aad)?;
        if store.replace_job_sealed(job_id, old, new).await? {
            return Ok(RowOutcome::Resealed);
        }
    }
    Err(RowError::Race)
}
