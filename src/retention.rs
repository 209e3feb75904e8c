//! Retention: finished runs are deleted, with their events and job bodies, once they finished
//! longer ago than `retention.finishedRunsDays`, so the database does not grow without bound.
//!
//! A run is only ever deleted when nothing can change it again: its state is final and its
//! release is over (or was never needed). Deleting goes in batches of [`BATCH`] runs, one
//! statement each, so a sweep never holds the database's write lock for long.

use crate::config::RetentionSettings;
use crate::domain::run::{Millis, now_millis};
use crate::store::{Store, StoreError};
use std::time::Duration;

/// Runs deleted per statement.
pub const BATCH: usize = 500;

/// The longest wait before the first sweep after start: a gateway that restarts more often
/// than the sweep interval still sweeps.
const FIRST_SWEEP_WITHIN: Duration = Duration::from_secs(30);

const DAY_MILLIS: Millis = 86_400_000;

/// Sweeps now and then, for good (returns at once when retention is off: 0 days).
pub async fn sweep_forever(store: Store, settings: RetentionSettings) {
    if settings.finished_runs_days == 0 {
        return;
    }
    let period = Duration::from_secs(settings.sweep_interval_seconds.max(1));
    let mut wait = period.min(FIRST_SWEEP_WITHIN);
    loop {
        tokio::time::sleep(wait).await;
        wait = period;
        match sweep(&store, settings.finished_runs_days, now_millis()).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(
                runs = deleted,
                days = settings.finished_runs_days,
                "deleted finished runs past their retention"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot delete finished runs past their retention; trying again at the next sweep");
            }
        }
    }
}

/// Deletes every finished run that finished more than `days` days before `now`, in batches;
/// returns how many.
///
/// # Errors
/// [`StoreError`] when the store cannot be written; what was deleted before stays deleted.
pub async fn sweep(store: &Store, days: u32, now: Millis) -> Result<usize, StoreError> {
    let cutoff = now.saturating_sub(DAY_MILLIS.saturating_mul(Millis::from(days)));
    let mut deleted = 0;
    loop {
        let batch = store.delete_expired_runs(cutoff, BATCH).await?;
        deleted += batch;
        if batch < BATCH {
            return Ok(deleted);
        }
        // Let other writers in between two batches.
        tokio::task::yield_now().await;
    }
}
