//! The job table: every known local job, how many are running, and which finished ones to forget.

use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

/// The longest job id, in characters.
const MAX_JOB_ID_LEN: usize = 256;

/// A job id as the local pool accepts it: 1-256 characters of `[A-Za-z0-9._-]`, not `.` or `..`
/// (those would vanish from a URL path when clients normalise it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct JobId(String);

impl JobId {
    /// Parses a job id, or says what a valid one looks like.
    pub(crate) fn parse(value: &str) -> Result<JobId, &'static str> {
        let valid_chars = value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if value.is_empty() || value.len() > MAX_JOB_ID_LEN || !valid_chars {
            return Err("jobId must be 1-256 characters of A-Z, a-z, 0-9, '.', '_' and '-'");
        }
        if value == "." || value == ".." {
            return Err("jobId cannot be '.' or '..'");
        }
        Ok(JobId(value.to_owned()))
    }

    /// The id as text.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a local job stands. `Running` is the only non-final state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum JobState {
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    pub(crate) fn is_final(self) -> bool {
        self != JobState::Running
    }
}

/// The last progress a job reported; a field it left out or gave as something other than a
/// non-negative integer is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Progress {
    pub(crate) completed: Option<u64>,
    pub(crate) in_progress: Option<u64>,
    pub(crate) total: Option<u64>,
}

/// Everything the API shows about a job. Times are epoch milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JobStatus {
    pub(crate) state: JobState,
    pub(crate) exit_code: Option<i32>,
    pub(crate) progress: Option<Progress>,
    /// `Some` once the job printed a `result` line (the value itself may be JSON null).
    pub(crate) result: Option<Value>,
    pub(crate) error: Option<String>,
    pub(crate) started_at: i64,
    pub(crate) finished_at: Option<i64>,
    pub(crate) heartbeat_at: i64,
}

/// One local job: its status, shared between the HTTP handlers and the task that supervises its
/// process.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) id: JobId,
    /// Tells this job apart from an earlier or later job with the same id.
    seq: u64,
    /// Held only for short, non-blocking updates; never across an `.await`.
    status: Mutex<JobStatus>,
    /// Set to `true` to ask the supervising task to kill the process group.
    cancel: watch::Sender<bool>,
    /// Set to `true` by the supervising task once the state is final and the process reaped.
    finished: watch::Sender<bool>,
}

impl Job {
    /// A copy of the job's current status.
    pub(crate) fn snapshot(&self) -> JobStatus {
        self.lock_status().clone()
    }

    /// Changes the status under its lock; `change` must not block.
    pub(crate) fn update(&self, change: impl FnOnce(&mut JobStatus)) {
        change(&mut self.lock_status());
    }

    /// Asks the supervising task to kill the job's process group.
    pub(crate) fn request_cancel(&self) {
        self.cancel.send_replace(true);
    }

    /// A receiver that turns `true` when a cancel was asked for.
    pub(crate) fn cancel_requested(&self) -> watch::Receiver<bool> {
        self.cancel.subscribe()
    }

    /// Whether a cancel was asked for.
    pub(crate) fn is_cancel_requested(&self) -> bool {
        *self.cancel.borrow()
    }

    /// Marks the job as settled: its state is final and its process is gone.
    pub(crate) fn mark_finished(&self) {
        self.finished.send_replace(true);
    }

    /// Waits until the job is settled or `limit` passes; returns whether it settled.
    pub(crate) async fn wait_finished(&self, limit: Duration) -> bool {
        let mut finished = self.finished.subscribe();
        matches!(
            tokio::time::timeout(limit, finished.wait_for(|done| *done)).await,
            Ok(Ok(_))
        )
    }

    fn lock_status(&self) -> MutexGuard<'_, JobStatus> {
        // A poisoned lock only means a panic elsewhere; the status itself is still consistent.
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The outcome of asking to run a new job.
#[derive(Debug)]
pub(crate) enum Admission {
    /// The job is registered as running; start its process.
    Admitted(Arc<Job>),
    /// A job with this id is already known, in this state.
    Exists(JobState),
    /// `max_jobs` processes are running.
    Full,
}

#[derive(Debug)]
struct Slot {
    job: Arc<Job>,
    finished: bool,
}

#[derive(Debug, Default)]
struct Table {
    jobs: HashMap<JobId, Slot>,
    /// Job processes not yet reaped, including cancelled jobs that were already forgotten; this
    /// is what `max_jobs` bounds.
    running: usize,
    /// Finished jobs in the order they finished, as (id, seq). Entries whose job was deleted
    /// stay until they reach the front or the queue is compacted.
    finished_order: VecDeque<(JobId, u64)>,
    /// How many jobs in `jobs` are finished.
    finished_live: usize,
}

/// The table of local jobs.
#[derive(Debug)]
pub(crate) struct Registry {
    /// Held only for short map operations; never across an `.await`, never while a job's status
    /// lock is held.
    table: Mutex<Table>,
    next_seq: AtomicU64,
    max_jobs: usize,
    max_finished: usize,
}

impl Registry {
    pub(crate) fn new(max_jobs: usize, max_finished: usize) -> Registry {
        Registry {
            table: Mutex::new(Table::default()),
            next_seq: AtomicU64::new(1),
            max_jobs,
            max_finished,
        }
    }

    /// Registers a new running job, unless the id is taken or the pool is full.
    pub(crate) fn admit(&self, id: JobId, now_ms: i64) -> Admission {
        let mut table = self.lock_table();
        if let Some(slot) = table.jobs.get(&id) {
            return Admission::Exists(slot.job.snapshot().state);
        }
        if table.running >= self.max_jobs {
            return Admission::Full;
        }
        let job = Arc::new(Job {
            id: id.clone(),
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
            status: Mutex::new(JobStatus {
                state: JobState::Running,
                exit_code: None,
                progress: None,
                result: None,
                error: None,
                started_at: now_ms,
                finished_at: None,
                heartbeat_at: now_ms,
            }),
            cancel: watch::Sender::new(false),
            finished: watch::Sender::new(false),
        });
        table.running += 1;
        table.jobs.insert(
            id,
            Slot {
                job: Arc::clone(&job),
                finished: false,
            },
        );
        Admission::Admitted(job)
    }

    /// The job with this id, if it is known.
    pub(crate) fn get(&self, id: &str) -> Option<Arc<Job>> {
        let id = JobId::parse(id).ok()?;
        self.lock_table()
            .jobs
            .get(&id)
            .map(|slot| Arc::clone(&slot.job))
    }

    /// Forgets the job with this id and returns it, if it was known. A running job keeps
    /// counting against `max_jobs` until its process is reaped.
    pub(crate) fn remove(&self, id: &str) -> Option<Arc<Job>> {
        let id = JobId::parse(id).ok()?;
        let mut table = self.lock_table();
        let slot = table.jobs.remove(&id)?;
        if slot.finished {
            table.finished_live -= 1;
        }
        Some(slot.job)
    }

    /// Every job whose process may still be running.
    pub(crate) fn running_jobs(&self) -> Vec<Arc<Job>> {
        self.lock_table()
            .jobs
            .values()
            .filter(|slot| !slot.finished)
            .map(|slot| Arc::clone(&slot.job))
            .collect()
    }

    /// Records that `job`'s process is gone and its state final: frees its running slot and,
    /// when the job is still in the table, queues it for eviction, forgetting the oldest
    /// finished jobs beyond `max_finished`.
    pub(crate) fn finish(&self, job: &Job) {
        let mut table = self.lock_table();
        table.running = table.running.saturating_sub(1);
        let Some(slot) = table.jobs.get_mut(&job.id) else {
            return;
        };
        if slot.job.seq != job.seq || slot.finished {
            return;
        }
        slot.finished = true;
        table.finished_live += 1;
        table.finished_order.push_back((job.id.clone(), job.seq));
        while table.finished_live > self.max_finished {
            let Some((id, seq)) = table.finished_order.pop_front() else {
                break;
            };
            let is_that_job = table
                .jobs
                .get(&id)
                .is_some_and(|slot| slot.finished && slot.job.seq == seq);
            if is_that_job {
                table.jobs.remove(&id);
                table.finished_live -= 1;
            }
        }
        // Released jobs leave stale entries behind; drop them before they outgrow the table.
        if table.finished_order.len() > 2 * self.max_finished.max(table.finished_live) + 64 {
            let Table {
                jobs,
                finished_order,
                ..
            } = &mut *table;
            finished_order.retain(|(id, seq)| {
                jobs.get(id)
                    .is_some_and(|slot| slot.finished && slot.job.seq == *seq)
            });
        }
    }

    fn lock_table(&self) -> MutexGuard<'_, Table> {
        // A poisoned lock only means a panic elsewhere; every update keeps the table consistent.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(value: &str) -> JobId {
        JobId::parse(value).unwrap()
    }

    fn admit(registry: &Registry, value: &str) -> Arc<Job> {
        match registry.admit(id(value), 0) {
            Admission::Admitted(job) => job,
            other => panic!("not admitted: {other:?}"),
        }
    }

    fn finish(registry: &Registry, job: &Job) {
        job.update(|status| status.state = JobState::Done);
        registry.finish(job);
    }

    #[test]
    fn job_ids_follow_the_documented_alphabet() {
        for good in ["a", "run-1.attempt_2", &"x".repeat(256)] {
            assert!(JobId::parse(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(257)] {
            assert!(JobId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_known_id_is_reported_with_its_state() {
        let registry = Registry::new(4, 4);
        admit(&registry, "a");
        assert!(matches!(
            registry.admit(id("a"), 0),
            Admission::Exists(JobState::Running)
        ));
    }

    #[test]
    fn admission_stops_at_max_jobs_until_a_process_is_reaped() {
        let registry = Registry::new(1, 4);
        let first = admit(&registry, "a");
        assert!(matches!(registry.admit(id("b"), 0), Admission::Full));
        // Forgetting a running job does not free its slot: its process is still alive.
        registry.remove("a");
        assert!(matches!(registry.admit(id("b"), 0), Admission::Full));
        registry.finish(&first);
        admit(&registry, "b");
    }

    #[test]
    fn the_oldest_finished_jobs_are_forgotten_beyond_max_finished() {
        let registry = Registry::new(10, 2);
        for name in ["a", "b", "c"] {
            let job = admit(&registry, name);
            finish(&registry, &job);
        }
        assert!(registry.get("a").is_none());
        assert!(registry.get("b").is_some());
        assert!(registry.get("c").is_some());
    }

    #[test]
    fn a_released_job_does_not_count_towards_max_finished() {
        let registry = Registry::new(10, 2);
        let a = admit(&registry, "a");
        finish(&registry, &a);
        registry.remove("a");
        for name in ["b", "c"] {
            let job = admit(&registry, name);
            finish(&registry, &job);
        }
        assert!(registry.get("b").is_some());
        assert!(registry.get("c").is_some());
    }

    #[test]
    fn an_old_job_finishing_late_does_not_touch_a_new_job_with_the_same_id() {
        let registry = Registry::new(10, 1);
        let old = admit(&registry, "a");
        registry.remove("a");
        let new = admit(&registry, "a");
        finish(&registry, &old);
        let still_there = registry.get("a").unwrap();
        assert!(Arc::ptr_eq(&still_there, &new));
        assert_eq!(registry.running_jobs().len(), 1);
    }

    #[test]
    fn stale_entries_of_released_jobs_are_compacted() {
        let registry = Registry::new(10, 1);
        for n in 0..500 {
            let name = format!("job-{n}");
            let job = admit(&registry, &name);
            finish(&registry, &job);
            registry.remove(&name);
        }
        assert!(registry.lock_table().finished_order.len() <= 2 + 64 + 1);
    }
}
