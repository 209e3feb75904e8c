//! The pool probe: checks a pool's scheduler without creating a job.
//!
//! [`Adapter::probe`] fetches an OAuth2 token when the manifest uses one (a fresh one, so that
//! a cached token cannot hide a credential that no longer works), then renders and sends the
//! manifest's `poll` for a dispatch id that cannot exist (`cattery-probe-<uuid>`), through the
//! pool's own client, egress guard and redaction, exactly as a run's poll goes out. A healthy
//! pool answers that poll with "not found": the scheduler is reachable, the credentials are
//! accepted, and a job the scheduler no longer knows will be noticed. The probe bypasses the
//! pool's circuit breaker and rate budget and counts toward neither: it is a diagnosis, not a
//! run's call.

use super::auth::TokenError;
use super::{Adapter, Exchange, PoolRuntime, classify};
use crate::domain::secrets::SecretValue;
use crate::domain::state::MappedState;
use crate::lifecycle::CallOutcome;
use crate::manifest::{Auth, Manifest, NotFound, OpKind, RenderInput};
use serde::Serialize;
use serde_json::{Map, Value};
use std::time::{Duration, Instant};

/// The prefix of the dispatch id a probe polls (a UUID follows, so no job can have it).
pub const PROBE_ID_PREFIX: &str = "cattery-probe-";

/// What became of the pool's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum AuthOutcome {
    /// The scheduler (and the OAuth2 token endpoint, if any) took them.
    Accepted,
    /// The token endpoint or the scheduler refused them (400/401/403 from the token endpoint,
    /// 401/403 from the scheduler).
    Rejected,
    /// The manifest sends no credentials.
    None,
    /// They could not be tried: a secret is missing, the token endpoint failed otherwise, or
    /// the scheduler did not answer.
    Error,
}

/// How the probe's poll answer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum Classified {
    /// The scheduler does not know the job (404 or 410, or a mapped `lost`): what is expected.
    NotFound,
    /// Mapped as pending.
    Pending,
    /// Mapped as running (also a word nothing recognises).
    Running,
    /// Mapped as done.
    Done,
    /// Mapped as failed or cancelled.
    Failed,
    /// An answer the manifest cannot read (an unexpected status, a body that does not map).
    Unreadable,
    /// No answer: the connection failed, timed out, or the egress policy refused the call.
    TransportError,
}

/// One finding of a probe: a stable code and what it means for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Finding {
    /// Stable snake_case code.
    pub code: String,
    /// What was found and what to do about it (never a secret).
    pub message: String,
}

impl Finding {
    fn new(code: &str, message: impl Into<String>) -> Finding {
        Finding {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The scheduler answered the poll over HTTP (any status).
    pub reachable: bool,
    /// The credentials' outcome.
    pub auth: AuthOutcome,
    /// The poll answer's status, when one came.
    pub http_status: Option<u16>,
    /// How the poll answer reads.
    pub classified: Classified,
    /// How long the poll took, from sending to the end of the answer (milliseconds).
    pub latency_ms: u64,
    /// What went wrong, in the order it was found.
    pub problems: Vec<Finding>,
    /// What the manifest leaves out (no `release`, no state mapping, …), found without a call.
    pub gaps: Vec<Finding>,
}

impl Probe {
    /// True when the scheduler answered, the credentials were not refused, and the poll of a
    /// job that cannot exist read as not found.
    pub fn ok(&self) -> bool {
        self.reachable
            && !matches!(self.auth, AuthOutcome::Rejected | AuthOutcome::Error)
            && self.classified == Classified::NotFound
    }
}

/// The render input of the probe's poll: the probe id as job id and dispatch id, an empty job,
/// and the probe id for every value the dispatch would have captured.
fn probe_input(manifest: &Manifest, pool: &str, id: &str) -> RenderInput {
    RenderInput {
        job_id: id.to_owned(),
        kind: None,
        job: Value::Object(Map::new()),
        labels: Map::new(),
        dispatch_id: id.to_owned(),
        attempt: 1,
        captures: manifest
            .dispatch
            .captures
            .0
            .iter()
            .map(|(name, _)| (name.clone(), Value::String(id.to_owned())))
            .collect(),
        pool_name: pool.to_owned(),
    }
}

/// What the manifest leaves out, found without calling anything: its registration warnings,
/// then what they do not cover.
pub fn gaps(manifest: &Manifest) -> Vec<Finding> {
    let mut gaps: Vec<Finding> = manifest
        .warnings
        .iter()
        .map(|w| Finding::new(&w.code, w.message.clone()))
        .collect();
    if let Some(map) = &manifest.poll.map
        && map.state.is_some()
        && !map.status_map.is_empty()
    {
        let missing: Vec<&str> = [MappedState::Done, MappedState::Failed]
            .into_iter()
            .filter(|state| !map.status_map.iter().any(|(_, to)| to == state))
            .map(MappedState::as_str)
            .collect();
        if !missing.is_empty() {
            gaps.push(Finding::new(
                "status_map_incomplete",
                format!(
                    "poll.map.statusMap maps no scheduler word to {}: only the built-in words \
                     (done, succeeded, failed, error, …) reach those states; a scheduler word \
                     nothing recognises reads as running",
                    missing.join(" or ")
                ),
            ));
        }
    }
    if manifest.poll.not_found == NotFound::Retry {
        gaps.push(Finding::new(
            "poll_not_found_retry",
            "poll.notFound is retry: a job the scheduler no longer knows is polled again until \
             the run's deadline or its poll error budget, instead of being noticed as lost",
        ));
    }
    if manifest.reconcile_op().is_none() {
        gaps.push(Finding::new(
            "no_reconcile",
            "the manifest has no lookup and its poll needs a captured value: a dispatch whose \
             answer was lost is sent again, and only the scheduler's own idempotency prevents a \
             duplicate job",
        ));
    }
    gaps
}

impl Adapter {
    /// Probes a pool (see the module documentation). Never fails: every failure is a finding.
    pub async fn probe(&self, pool: &PoolRuntime) -> Probe {
        let manifest = &pool.manifest;
        let id = format!("{PROBE_ID_PREFIX}{}", uuid::Uuid::new_v4());
        let input = probe_input(manifest, pool.name.as_str(), &id);
        let values = crate::redact::known_values(&pool.secrets, &input.job);
        let clean = |text: &str| crate::redact::redact(text, &values);
        let timeout = Duration::from_millis(
            manifest
                .poll
                .timeout_ms
                .unwrap_or(manifest.limits.timeout_ms),
        );
        let mut probe = Probe {
            reachable: false,
            auth: AuthOutcome::None,
            http_status: None,
            classified: Classified::TransportError,
            latency_ms: 0,
            problems: Vec::new(),
            gaps: gaps(manifest),
        };

        // The credentials: a fresh OAuth2 token, or the static ones the request carries.
        let mut token: Option<SecretValue> = None;
        let sends_credentials = match &manifest.auth {
            Auth::None => false,
            Auth::OAuth2ClientCredentials { .. } => {
                // A probe is not run traffic: its token request is not counted in the metrics.
                match super::auth::fetch(
                    &manifest.auth,
                    &pool.secrets,
                    &pool.client,
                    &pool.egress,
                    timeout,
                    &|_, _| {},
                )
                .await
                {
                    Ok((fetched, _)) => {
                        // The token endpoint took them; the scheduler may still refuse the token.
                        probe.auth = AuthOutcome::Accepted;
                        token = Some(fetched);
                        true
                    }
                    Err(TokenError::Status(status @ (400 | 401 | 403))) => {
                        probe.auth = AuthOutcome::Rejected;
                        probe.problems.push(Finding::new(
                            "oauth2_rejected",
                            format!(
                                "the OAuth2 token endpoint refused the client credentials \
                                 ({status}); check the client id and secret, scope and audience"
                            ),
                        ));
                        false
                    }
                    Err(e) => {
                        probe.auth = AuthOutcome::Error;
                        probe
                            .problems
                            .push(Finding::new("oauth2_failed", clean(&e.to_string())));
                        false
                    }
                }
            }
            Auth::ApiKey { .. }
            | Auth::Bearer { .. }
            | Auth::Basic { .. }
            | Auth::CustomHeaders(_) => true,
        };

        let request = match manifest.render(OpKind::Poll, &input, &pool.secrets) {
            Ok(request) => request,
            Err(e) => {
                if sends_credentials && probe.auth == AuthOutcome::None {
                    probe.auth = AuthOutcome::Error;
                }
                probe.classified = Classified::Unreadable;
                probe
                    .problems
                    .push(Finding::new("poll_not_rendered", clean(&e.to_string())));
                return probe;
            }
        };
        let started = Instant::now();
        let sent = self.send_with(pool, "probe", request, timeout, token).await;
        probe.latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let exchange = match sent {
            Ok(exchange) => exchange,
            Err(outcome) => {
                if sends_credentials && probe.auth == AuthOutcome::None {
                    // No answer: static credentials could not be tried.
                    probe.auth = AuthOutcome::Error;
                }
                let (code, message) = match outcome {
                    CallOutcome::Rejected { message } => ("call_refused", message),
                    CallOutcome::Retryable { message, .. } => ("unreachable", message),
                    other => ("unreachable", format!("{other:?}")),
                };
                probe
                    .problems
                    .push(Finding::new(code, clean(&format!("poll: {message}"))));
                return probe;
            }
        };
        probe.reachable = true;
        let status = exchange.status;
        probe.http_status = Some(status);
        let refused = matches!(status, 401 | 403);
        if sends_credentials {
            probe.auth = if refused {
                AuthOutcome::Rejected
            } else {
                AuthOutcome::Accepted
            };
        }
        // Without the token the endpoint refused, a refusal here is expected and reported.
        if refused && (sends_credentials || probe.auth == AuthOutcome::None) {
            let message = match &manifest.auth {
                Auth::None => format!(
                    "the scheduler answered {status}: it asks for credentials and the manifest's \
                     auth is none"
                ),
                _ => format!(
                    "the scheduler refused the credentials ({status}); check the pool's secrets \
                     and the manifest's auth"
                ),
            };
            probe.problems.push(Finding::new("auth_rejected", message));
        }
        probe.classified = read_answer(pool, &id, exchange, &clean, &mut probe.problems);
        probe
    }
}

/// Classifies the probe's poll answer as a run's poll answer is classified, and says what is
/// wrong when it does not read as not found.
fn read_answer(
    pool: &PoolRuntime,
    id: &str,
    exchange: Exchange,
    clean: &dyn Fn(&str) -> String,
    problems: &mut Vec<Finding>,
) -> Classified {
    let status = exchange.status;
    if matches!(status, 404 | 410) {
        return Classified::NotFound;
    }
    let outcome = classify::classify(
        &pool.manifest.poll,
        id,
        status,
        exchange.retry_after_ms,
        exchange.body,
    );
    let classified = match &outcome {
        CallOutcome::NotFound => Classified::NotFound,
        CallOutcome::Observed(observation) => match observation.state {
            Some(MappedState::Lost) => Classified::NotFound,
            Some(MappedState::Pending) => Classified::Pending,
            Some(MappedState::Done) => Classified::Done,
            Some(MappedState::Failed | MappedState::Cancelled) => Classified::Failed,
            Some(MappedState::Running) | None => Classified::Running,
        },
        _ => Classified::Unreadable,
    };
    match (classified, outcome) {
        (Classified::NotFound, _) => {}
        (
            Classified::Unreadable,
            CallOutcome::Retryable { message, .. } | CallOutcome::Rejected { message },
        ) => {
            if !matches!(status, 401 | 403) {
                problems.push(Finding::new("poll_unreadable", clean(&message)));
            }
        }
        (Classified::Unreadable, _) => problems.push(Finding::new(
            "poll_unreadable",
            format!("poll → {status}: the answer cannot be read"),
        )),
        (read, _) => problems.push(Finding::new(
            "unknown_job_found",
            format!(
                "the poll of a job id that cannot exist answered {status} and reads as {}: a \
                 job the scheduler loses would never be noticed; make poll answer 404 for an \
                 unknown job (or map the scheduler's not-found answer to lost)",
                classified_word(read)
            ),
        )),
    }
    classified
}

fn classified_word(classified: Classified) -> &'static str {
    match classified {
        Classified::NotFound => "notFound",
        Classified::Pending => "pending",
        Classified::Running => "running",
        Classified::Done => "done",
        Classified::Failed => "failed",
        Classified::Unreadable => "unreadable",
        Classified::TransportError => "transportError",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Defaults;

    fn manifest(text: &str) -> Manifest {
        Manifest::parse(text, &Defaults::default()).unwrap()
    }

    #[test]
    fn gaps_name_what_the_manifest_leaves_out() {
        let bare = manifest(
            r#"
apiVersion: cattery/v1
baseUrl: https://scheduler.example
dispatch: { request: { method: POST, path: /jobs }, capture: { uid: metadata.uid } }
poll:
  request: { method: GET, path: "/jobs/{{capture.uid}}" }
  notFound: retry
  map: { state: status, statusMap: { Succeeded: done } }
"#,
        );
        let codes: Vec<String> = gaps(&bare).into_iter().map(|g| g.code).collect();
        assert_eq!(
            codes,
            [
                "no_release",
                "status_map_incomplete",
                "poll_not_found_retry",
                "no_reconcile"
            ]
        );
        let complete = manifest(
            r#"
apiVersion: cattery/v1
baseUrl: https://scheduler.example
dispatch: { request: { method: POST, path: /jobs } }
poll:
  request: { method: GET, path: "/jobs/{{run.dispatchId}}" }
  map: { state: status, statusMap: { Succeeded: done, Broken: failed } }
release: { request: { method: DELETE, path: "/jobs/{{run.dispatchId}}" } }
"#,
        );
        assert!(gaps(&complete).is_empty(), "{:?}", gaps(&complete));
    }

    #[test]
    fn only_a_reachable_accepted_not_found_answer_is_ok() {
        let healthy = Probe {
            reachable: true,
            auth: AuthOutcome::Accepted,
            http_status: Some(404),
            classified: Classified::NotFound,
            latency_ms: 3,
            problems: Vec::new(),
            gaps: Vec::new(),
        };
        assert!(healthy.ok());
        assert!(
            Probe {
                auth: AuthOutcome::None,
                ..healthy.clone()
            }
            .ok()
        );
        for broken in [
            Probe {
                auth: AuthOutcome::Rejected,
                ..healthy.clone()
            },
            Probe {
                auth: AuthOutcome::Error,
                ..healthy.clone()
            },
            Probe {
                classified: Classified::Running,
                ..healthy.clone()
            },
            Probe {
                reachable: false,
                ..healthy.clone()
            },
        ] {
            assert!(!broken.ok(), "{broken:?}");
        }
    }
}
