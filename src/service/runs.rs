//! Run use cases: submit (idempotent by jobId), read, list, cancel, history, and resume at start.

use super::{Gateway, ServiceError, canonical_json, problem};
use crate::actors::pool::{Admit, AdmitError, Admitted};
use crate::actors::supervisor::{AdmitRun, CancelRunOf, ResumeRuns};
use crate::crypto::{CryptoError, DigestKey, binding, constant_time_eq, sha256_hex};
use crate::domain::ids::{JobId, PoolName};
use crate::domain::run::{EventRecord, RunRecord, now_millis};
use crate::manifest::Problem;
use crate::store::{RunFilter, RunPage};
use serde_json::{Map, Value};
use tokio::sync::oneshot;

/// Largest accepted job body, as JSON text.
pub const MAX_JOB_BYTES: usize = 1024 * 1024;
/// Most labels a run may carry: labels are kept with the run and shown in every RunView and
/// event, so their count and size are bounded like the job's.
pub const MAX_LABELS: usize = 64;
/// Longest label name, in characters.
pub const MAX_LABEL_NAME_CHARS: usize = 63;
/// Longest label value, in bytes of UTF-8.
pub const MAX_LABEL_VALUE_BYTES: usize = 256;
/// Marks an idempotency digest keyed with the gateway's [`DigestKey`] (HMAC-SHA256, hex). Runs
/// stored before it carry a bare SHA-256 hex digest, which [`Submission::has_digest`] still
/// recognises.
pub const DIGEST_PREFIX: &str = "v2:";
/// The largest priority, and minus the smallest.
const MAX_PRIORITY: i64 = 1_000;
/// Longest accepted deadline (30 days).
const MAX_DEADLINE_SECONDS: u64 = 30 * 24 * 3600;

/// A validated run submission.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    /// The caller's id.
    pub job_id: JobId,
    /// The job kind.
    pub kind: Option<String>,
    /// The job body (an object).
    pub job: Option<Map<String, Value>>,
    /// Labels (string values).
    pub labels: Map<String, Value>,
    /// The run's deadline.
    pub deadline_seconds: Option<u64>,
    /// Its place among its tenant's queued runs (higher first; 0 by default).
    pub priority: i32,
}

impl Submission {
    /// Validates a submission body, reporting every problem.
    ///
    /// # Errors
    /// Every problem with its path.
    pub fn parse(body: &Value) -> Result<Submission, Vec<Problem>> {
        let mut problems = Vec::new();
        let Some(object) = body.as_object() else {
            return Err(vec![problem("", "the body must be a JSON object")]);
        };
        for key in object.keys() {
            if ![
                "jobId",
                "kind",
                "job",
                "labels",
                "deadlineSeconds",
                "priority",
                "callbackUrl",
            ]
            .contains(&key.as_str())
            {
                problems.push(problem(
                    key,
                    "unknown field; expected jobId, kind, job, labels, deadlineSeconds, priority",
                ));
            }
        }
        let job_id = match object.get("jobId") {
            Some(Value::String(id)) => match JobId::parse(id) {
                Ok(id) => Some(id),
                Err(e) => {
                    problems.push(problem("jobId", e.to_string()));
                    None
                }
            },
            Some(_) => {
                problems.push(problem("jobId", "must be a string"));
                None
            }
            None => {
                problems.push(problem("jobId", "is required"));
                None
            }
        };
        let kind = match object.get("kind") {
            None | Some(Value::Null) => None,
            Some(Value::String(kind))
                if !kind.is_empty() && kind.len() <= 100 && !kind.chars().any(char::is_control) =>
            {
                Some(kind.clone())
            }
            Some(_) => {
                problems.push(problem(
                    "kind",
                    "must be a string of 1-100 printable characters",
                ));
                None
            }
        };
        let job = match object.get("job") {
            None | Some(Value::Null) => None,
            Some(Value::Object(job)) => {
                if serde_json::to_vec(job).map_or(0, |bytes| bytes.len()) > MAX_JOB_BYTES {
                    problems.push(problem("job", "must be at most 1 MiB of JSON"));
                }
                Some(job.clone())
            }
            Some(_) => {
                problems.push(problem("job", "must be a JSON object"));
                None
            }
        };
        let labels = match object.get("labels") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(labels)) => {
                check_labels(labels, &mut problems);
                labels.clone()
            }
            Some(_) => {
                problems.push(problem("labels", "must be an object of strings"));
                Map::new()
            }
        };
        let deadline_seconds = match object.get("deadlineSeconds") {
            None | Some(Value::Null) => None,
            Some(value) => match value.as_u64() {
                Some(seconds) if (1..=MAX_DEADLINE_SECONDS).contains(&seconds) => Some(seconds),
                _ => {
                    problems.push(problem(
                        "deadlineSeconds",
                        format!(
                            "must be a whole number of seconds from 1 to {MAX_DEADLINE_SECONDS}"
                        ),
                    ));
                    None
                }
            },
        };
        let priority = match object.get("priority") {
            None | Some(Value::Null) => 0,
            Some(value) => match value
                .as_i64()
                .filter(|p| (-MAX_PRIORITY..=MAX_PRIORITY).contains(p))
                .and_then(|p| i32::try_from(p).ok())
            {
                Some(priority) => priority,
                None => {
                    problems.push(problem(
                        "priority",
                        format!(
                            "must be a whole number from -{MAX_PRIORITY} to {MAX_PRIORITY} \
                             (higher is granted a slot first within its tenant)"
                        ),
                    ));
                    0
                }
            },
        };
        if object.get("callbackUrl").is_some_and(|v| !v.is_null()) {
            problems.push(problem(
                "callbackUrl",
                "callbacks are not supported by this version; poll GET /v1/runs/{jobId} or stream GET /v1/events",
            ));
        }
        match job_id {
            Some(job_id) if problems.is_empty() => Ok(Submission {
                job_id,
                kind,
                job,
                labels,
                deadline_seconds,
                priority,
            }),
            _ => Err(problems),
        }
    }

    /// What the idempotency digest covers, as canonical JSON: equal submissions to the same
    /// pool give equal documents whatever the order of their keys.
    fn document(&self, pool: &PoolName) -> String {
        let mut document = serde_json::json!({
            "pool": pool.as_str(),
            "kind": self.kind,
            "job": self.job,
            "labels": self.labels,
            "deadlineSeconds": self.deadline_seconds,
        });
        // Only when set, so that the digests of runs stored before priorities existed still
        // match their repeats.
        if self.priority != 0 {
            document["priority"] = Value::from(self.priority);
        }
        canonical_json(&document)
    }

    /// The idempotency digest stored with a new run: [`DIGEST_PREFIX`] and the HMAC-SHA256 of
    /// the submission under `key`, so that the stored digest cannot be used to guess a job.
    ///
    /// # Errors
    /// [`CryptoError::Seal`] when the MAC cannot be computed.
    pub fn digest(&self, pool: &PoolName, key: &DigestKey) -> Result<String, CryptoError> {
        Ok(format!(
            "{DIGEST_PREFIX}{}",
            key.mac_hex(self.document(pool).as_bytes())?
        ))
    }

    /// Whether `stored`, the digest of an existing run, is the digest of this submission to
    /// `pool`. Digests of runs stored before keyed digests (bare SHA-256 hex, no prefix) are
    /// still recognised, so their repeats keep answering 200.
    pub fn has_digest(&self, pool: &PoolName, stored: &str, key: &DigestKey) -> bool {
        let expected = if stored.starts_with(DIGEST_PREFIX) {
            match self.digest(pool, key) {
                Ok(digest) => digest,
                Err(_) => return false,
            }
        } else {
            sha256_hex(self.document(pool).as_bytes())
        };
        constant_time_eq(stored.as_bytes(), expected.as_bytes())
    }
}

/// Checks the labels' count, names and values, adding a problem for each bound broken. A bad
/// name is reported on `labels` without repeating it, since it may be arbitrarily long.
fn check_labels(labels: &Map<String, Value>, problems: &mut Vec<Problem>) {
    if labels.len() > MAX_LABELS {
        problems.push(problem(
            "labels",
            format!(
                "at most {MAX_LABELS} labels are allowed, found {}",
                labels.len()
            ),
        ));
    }
    let bad_names = labels.keys().filter(|name| !label_name_ok(name)).count();
    if bad_names > 0 {
        problems.push(problem(
            "labels",
            format!(
                "label names must be 1-{MAX_LABEL_NAME_CHARS} printable characters; {bad_names} are not"
            ),
        ));
    }
    for (name, value) in labels {
        let path = if label_name_ok(name) {
            format!("labels.{name}")
        } else {
            "labels".to_owned()
        };
        match value {
            Value::String(text) if text.len() > MAX_LABEL_VALUE_BYTES => problems.push(problem(
                &path,
                format!("a label value must be at most {MAX_LABEL_VALUE_BYTES} bytes"),
            )),
            Value::String(_) => {}
            _ => problems.push(problem(&path, "label values must be strings")),
        }
    }
}

fn label_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_LABEL_NAME_CHARS
        && !name.chars().any(char::is_control)
}

/// A page of a run's history.
#[derive(Debug, Clone)]
pub struct EventPage {
    /// The events, oldest first.
    pub events: Vec<EventRecord>,
    /// The sequence number to pass as `after` for the next page; `None` on the last page.
    pub next: Option<i64>,
}

impl Gateway {
    /// Submits a run. Returns the run and whether it was created (false: an identical
    /// submission existed already).
    ///
    /// # Errors
    /// Unknown pool, a conflicting jobId, a saturated pool, shutdown, or an internal failure.
    pub async fn submit_run(
        &self,
        pool: &PoolName,
        submission: Submission,
    ) -> Result<(RunRecord, bool), ServiceError> {
        if self.is_shutting_down() {
            return Err(ServiceError::ShuttingDown);
        }
        let key = self.digest_key().await?;
        let now = now_millis();
        let run = RunRecord {
            kind: submission.kind.clone(),
            labels: submission.labels.clone(),
            priority: submission.priority,
            request_digest: submission.digest(pool, key)?,
            ..RunRecord::queued(submission.job_id.clone(), pool.clone(), now)
        };
        let job = Value::Object(submission.job.clone().unwrap_or_default());
        let clear = serde_json::to_vec(&job).map_err(|e| ServiceError::Internal(e.into()))?;
        let sealed = self
            .deps
            .sealer
            .seal(&clear, &binding::run_job(run.job_id.as_str()))?;
        // The pool admits the run (or not), decides whether it starts at once, and stores it:
        // one message and one write, with no read before it. An identical submission that was
        // stored already comes back as `Existing` from the same write.
        let (reply, answer) = oneshot::channel();
        self.supervisor.do_send(AdmitRun(Admit {
            run,
            deadline_seconds: submission.deadline_seconds,
            sealed,
            job,
            reply,
        }));
        let refused = match answer.await.map_err(|_| ServiceError::Unavailable)? {
            Ok(Admitted::Created(run)) => return Ok((run, true)),
            Ok(Admitted::Existing(existing)) => {
                return same_submission(existing, pool, &submission, key);
            }
            Err(AdmitError::Store(e)) => return Err(e.into()),
            Err(refused) => refused,
        };
        // Refused before anything was stored: a retry of a run that exists is still answered
        // with that run, whatever the pool's state now.
        if let Some(existing) = self.deps.store.get_run(&submission.job_id).await? {
            return same_submission(existing, pool, &submission, key);
        }
        match refused {
            AdmitError::Saturated { queued } => Err(ServiceError::Saturated {
                pool: pool.to_string(),
                queued,
            }),
            _ => {
                // Unknown pool (404), or known but without a live actor (503).
                self.pool(pool).await?;
                Err(ServiceError::Unavailable)
            }
        }
    }

    /// The idempotency digest key: read from the store (and opened) once, created there by the
    /// first gateway that needs it.
    async fn digest_key(&self) -> Result<&DigestKey, ServiceError> {
        self.digest_key
            .get_or_try_init(|| async {
                let sealer = &self.deps.sealer;
                let sealed = match self.deps.store.gateway_key(DigestKey::NAME).await? {
                    Some(sealed) => sealed,
                    None => {
                        let (_, sealed) = DigestKey::generate(sealer)?;
                        self.deps
                            .store
                            .create_gateway_key(DigestKey::NAME, sealed)
                            .await?
                    }
                };
                Ok::<_, ServiceError>(DigestKey::open(sealer, &sealed)?)
            })
            .await
    }

    /// A run.
    ///
    /// # Errors
    /// [`ServiceError::RunNotFound`] or an internal failure.
    pub async fn run(&self, job_id: &JobId) -> Result<RunRecord, ServiceError> {
        self.deps
            .store
            .get_run(job_id)
            .await?
            .ok_or_else(|| ServiceError::RunNotFound(job_id.to_string()))
    }

    /// How many runs of its tenant wait ahead of a queued run in its pool's queue (its place in
    /// its tenant's line: the next slot goes by fair share across tenants); `None` for a run
    /// that is not queued. One message to the run's pool; nothing is read from the store.
    pub async fn queue_place(&self, run: &RunRecord) -> Option<usize> {
        if run.state != crate::domain::state::RunState::Queued {
            return None;
        }
        self.supervisor
            .send(crate::actors::supervisor::QueuePlaceOf {
                pool: run.pool.clone(),
                job_id: run.job_id.clone(),
            })
            .await
            .ok()
            .flatten()
    }

    /// A page of runs, newest first.
    ///
    /// # Errors
    /// A bad cursor or an internal failure.
    pub async fn list_runs(&self, filter: RunFilter) -> Result<RunPage, ServiceError> {
        self.deps
            .store
            .list_runs(filter)
            .await
            .map_err(|e| match e {
                crate::store::StoreError::BadCursor => ServiceError::Validation(vec![problem(
                    "after",
                    "not a cursor returned by this API",
                )]),
                other => other.into(),
            })
    }

    /// Cancels a run: at once when queued, else through its actor (release follows).
    ///
    /// # Errors
    /// Unknown run, a finished run, or an internal failure.
    pub async fn cancel_run(&self, job_id: &JobId) -> Result<RunRecord, ServiceError> {
        let run = self.run(job_id).await?;
        if run.state.is_final() {
            return Err(ServiceError::RunFinished(job_id.to_string()));
        }
        let (reply, answer) = oneshot::channel();
        self.supervisor
            .send(CancelRunOf {
                pool: run.pool.clone(),
                job_id: job_id.clone(),
                reply,
            })
            .await
            .map_err(|_| ServiceError::Unavailable)?;
        match answer.await {
            Ok(Ok(run)) => Ok(run),
            Ok(Err(crate::actors::pool::CancelError::Store)) => Err(ServiceError::Unavailable),
            Ok(Err(crate::actors::pool::CancelError::NotLive)) | Err(_) => {
                let now = self.run(job_id).await?;
                if now.state.is_final() {
                    Err(ServiceError::RunFinished(job_id.to_string()))
                } else {
                    Err(ServiceError::Unavailable)
                }
            }
        }
    }

    /// A page of a run's persisted history: up to `limit` events after sequence number
    /// `after`, oldest first, with the sequence number to continue after when the page is full.
    ///
    /// # Errors
    /// Unknown run or an internal failure.
    pub async fn run_events(
        &self,
        job_id: &JobId,
        after: i64,
        limit: u32,
    ) -> Result<EventPage, ServiceError> {
        self.run(job_id).await?;
        let events = self
            .deps
            .store
            .events_after(after, None, Some(job_id), limit)
            .await?;
        let next = if events.len() >= limit as usize {
            events.last().map(|event| event.seq)
        } else {
            None
        };
        Ok(EventPage { events, next })
    }

    /// Hands every unfinished run in the store to its pool. Returns (resumed, orphaned).
    ///
    /// # Errors
    /// An internal failure reading the store.
    pub async fn resume_runs(&self) -> Result<(usize, usize), ServiceError> {
        let runs = self.deps.store.load_unfinished().await?;
        let total = runs.len();
        let orphans = self
            .supervisor
            .send(ResumeRuns(runs))
            .await
            .map_err(|_| ServiceError::Unavailable)?;
        for run in &orphans {
            tracing::warn!(job_id = %run.job_id, pool = %run.pool, "an unfinished run belongs to a pool that is not loaded; it waits");
        }
        Ok((total - orphans.len(), orphans.len()))
    }
}

fn same_submission(
    existing: RunRecord,
    pool: &PoolName,
    submission: &Submission,
    key: &DigestKey,
) -> Result<(RunRecord, bool), ServiceError> {
    if &existing.pool == pool && submission.has_digest(pool, &existing.request_digest, key) {
        Ok((existing, false))
    } else {
        Err(ServiceError::JobIdConflict(existing.job_id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_valid_submission_parses() {
        let parsed = Submission::parse(&json!({
            "jobId": "exec-1", "kind": "agent", "job": {"a": 1}, "labels": {"team": "x"}, "deadlineSeconds": 60
        }))
        .unwrap();
        assert_eq!(parsed.job_id.as_str(), "exec-1");
        assert_eq!(parsed.kind.as_deref(), Some("agent"));
        assert_eq!(parsed.deadline_seconds, Some(60));
    }

    #[test]
    fn every_problem_of_a_submission_is_reported_with_its_path() {
        let problems = Submission::parse(&json!({
            "jobId": "bad id", "job": [1], "labels": {"n": 1}, "deadlineSeconds": -1, "extra": true
        }))
        .unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for expected in ["extra", "jobId", "job", "labels.n", "deadlineSeconds"] {
            assert!(
                paths.contains(&expected),
                "{expected} missing from {paths:?}"
            );
        }
    }

    #[test]
    fn digests_ignore_key_order_but_not_content_or_pool() {
        let pool = PoolName::parse("p").unwrap();
        let a = Submission::parse(&json!({"jobId": "j", "job": {"x": 1, "y": 2}})).unwrap();
        let b = Submission::parse(&json!({"job": {"y": 2, "x": 1}, "jobId": "j"})).unwrap();
        let c = Submission::parse(&json!({"jobId": "j", "job": {"x": 1, "y": 3}})).unwrap();
        let (key, _) = DigestKey::generate(&crate::crypto::Sealer::for_testing()).unwrap();
        let digest = |s: &Submission, p: &PoolName| s.digest(p, &key).unwrap();
        assert_eq!(digest(&a, &pool), digest(&b, &pool));
        assert_ne!(digest(&a, &pool), digest(&c, &pool));
        assert_ne!(
            digest(&a, &pool),
            digest(&a, &PoolName::parse("q").unwrap())
        );
        assert!(b.has_digest(&pool, &digest(&a, &pool), &key));
        assert!(!c.has_digest(&pool, &digest(&a, &pool), &key));
    }

    #[test]
    fn digests_are_keyed_and_bare_sha256_digests_of_older_runs_are_still_recognised() {
        let pool = PoolName::parse("p").unwrap();
        let sealer = crate::crypto::Sealer::for_testing();
        let (one, _) = DigestKey::generate(&sealer).unwrap();
        let (two, _) = DigestKey::generate(&sealer).unwrap();
        let a = Submission::parse(&json!({"jobId": "j", "job": {"x": 1}})).unwrap();
        let c = Submission::parse(&json!({"jobId": "j", "job": {"x": 2}})).unwrap();
        let keyed = a.digest(&pool, &one).unwrap();
        assert!(keyed.starts_with(DIGEST_PREFIX));
        assert_ne!(keyed, a.digest(&pool, &two).unwrap(), "the key matters");
        assert!(!keyed.contains(&sha256_hex(a.document(&pool).as_bytes())));
        let legacy = sha256_hex(a.document(&pool).as_bytes());
        assert!(a.has_digest(&pool, &legacy, &one));
        assert!(!c.has_digest(&pool, &legacy, &one));
    }
}
