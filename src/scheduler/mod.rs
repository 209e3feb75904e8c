//! The generic adapter: render a manifest operation, send it, classify the answer.
//!
//! This is the only code that talks to schedulers. [`Adapter::call`] renders the operation of
//! a [`PoolRuntime`] for one run, adds OAuth2 tokens, sends the request with the operation's
//! timeout, reads the answer under a size cap and turns it into a lifecycle [`CallOutcome`]:
//! success (with captures or an observation), already-exists, not-found, retryable or rejected.

pub mod auth;
pub mod classify;
pub mod guard;
pub mod http;
pub mod probe;

use crate::domain::ids::PoolName;
use crate::domain::run::now_millis;
use crate::domain::secrets::SecretBundle;
use crate::lifecycle::CallOutcome;
use crate::manifest::{Auth, Manifest, OpKind, RenderInput, RenderedRequest};
use guard::{Admission, Circuit, Permit, PoolGuard, Signal};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

/// Largest scheduler answer read (bytes); a larger one is an unreadable answer.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// A registered pool as the adapter needs it: the compiled manifest, its secrets, its client.
#[derive(Debug, Clone)]
pub struct PoolRuntime {
    /// The pool's name.
    pub name: PoolName,
    /// The manifest revision.
    pub revision: i64,
    /// The compiled manifest.
    pub manifest: Arc<Manifest>,
    /// The decrypted secret bundle (kept in memory only).
    pub secrets: SecretBundle,
    /// The HTTP client built for this manifest (its TLS roots, no redirects).
    pub client: reqwest::Client,
    /// The egress policy as this pool sees it (checked before every request and redirect hop).
    pub egress: Arc<crate::egress::EgressGuard>,
    /// One permit per request in flight to the scheduler (`limits.maxConnections`): with the
    /// client keeping no more idle connections than that, a burst of runs shares a bounded set
    /// of connections instead of opening one each.
    pub connections: Arc<tokio::sync::Semaphore>,
}

impl PoolRuntime {
    /// Builds the runtime of a pool, with its own HTTP client guarded by `egress`.
    ///
    /// # Errors
    /// When the manifest's TLS settings cannot be used.
    pub fn new(
        name: PoolName,
        revision: i64,
        manifest: Arc<Manifest>,
        secrets: SecretBundle,
        egress: &crate::egress::Egress,
    ) -> Result<Self, http::ClientError> {
        let (guard, proxy) = egress.route(name.as_str(), &manifest.proxy);
        let client = http::build_client(&manifest, &guard, proxy.as_ref())?;
        let permits = usize::try_from(manifest.limits.max_connections).unwrap_or(usize::MAX);
        Ok(Self {
            name,
            revision,
            manifest,
            secrets,
            client,
            egress: guard,
            connections: Arc::new(tokio::sync::Semaphore::new(permits.max(1))),
        })
    }
}

/// The adapter: stateless but for the OAuth2 token cache shared by all pools.
#[derive(Debug, Default)]
pub struct Adapter {
    tokens: auth::TokenCache,
    /// Rate budget and circuit breaker per pool, kept across manifest replacements.
    guards: std::sync::Mutex<HashMap<PoolName, Arc<PoolGuard>>>,
    /// The egress policy (the default is the strictest: https to public addresses only).
    egress: Arc<crate::egress::Egress>,
    /// Where every request sent to a scheduler is counted and timed.
    metrics: Arc<crate::metrics::Metrics>,
}

/// A pool's call health, for PoolView.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolHealth {
    /// The circuit breaker's state.
    pub circuit: Circuit,
    /// The last failure seen (operator-facing, without secrets).
    pub last_error: Option<String>,
}

/// How long the breaker stays open the first time, and at most: derived from the pool's
/// backoff settings (four first backoffs, at least 200 ms; at most the backoff cap).
fn cooldowns(manifest: &Manifest) -> (Duration, Duration) {
    let max = Duration::from_millis(manifest.retry.max_backoff_ms.max(200));
    let base = Duration::from_millis(manifest.retry.initial_backoff_ms.saturating_mul(4).max(200))
        .min(max);
    (base, max)
}

/// What an outcome says about the scheduler's health.
fn signal_of(outcome: &CallOutcome) -> Signal {
    match outcome {
        CallOutcome::Retryable {
            message,
            unreadable: false,
            ..
        } => Signal::Failing(message.clone()),
        CallOutcome::Deferred { .. } => Signal::Neutral,
        _ => Signal::Healthy,
    }
}

/// The metrics class of a call that got no usable answer: a redirect not followed was still
/// an answer (3xx); a refusal of the egress policy sent nothing.
pub(crate) fn call_class_of(error: &http::SendError) -> crate::metrics::CallClass {
    match error {
        http::SendError::Refused(_) => crate::metrics::CallClass::Refused,
        http::SendError::Redirect(_) => crate::metrics::CallClass::Status(300),
        http::SendError::Transport(_) => crate::metrics::CallClass::Transport,
    }
}

/// What was sent and what came back, before classification.
struct Exchange {
    status: u16,
    retry_after_ms: Option<u64>,
    body: Result<Vec<u8>, String>,
    /// The OAuth2 token sent, if any (a 401 drops exactly this one).
    token: Option<crate::domain::secrets::SecretValue>,
}

impl Adapter {
    /// A new adapter with an empty token cache and the default (strictest) egress policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new adapter enforcing `egress`.
    pub fn with_egress(egress: crate::egress::Egress) -> Self {
        Self {
            egress: Arc::new(egress),
            ..Self::default()
        }
    }

    /// Counts and times every scheduler request in `metrics` (instead of a set of its own).
    pub fn with_metrics(self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        Self { metrics, ..self }
    }

    /// The egress policy (registration checks it; pool runtimes take their guard from it).
    pub fn egress(&self) -> &crate::egress::Egress {
        &self.egress
    }

    /// Drops what the adapter keeps for a deleted pool: its rate budget and breaker, its
    /// OAuth2 tokens and its metric series (a pool registered again under the name starts
    /// afresh).
    pub fn forget_pool(&self, pool: &PoolName) {
        self.guards
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(pool);
        self.tokens.forget_pool(pool);
        self.metrics.forget_pool(pool);
    }

    /// Drops the OAuth2 tokens of credentials a pool no longer uses, once its manifest or its
    /// secrets were replaced by `runtime`'s.
    pub fn prune_tokens(&self, runtime: &PoolRuntime) {
        self.tokens
            .retain_current(&runtime.name, &runtime.manifest.auth, &runtime.secrets);
    }

    /// Test-only: whether the adapter keeps a breaker and rate budget for `pool`.
    #[cfg(test)]
    pub(crate) fn keeps_state_of(&self, pool: &PoolName) -> bool {
        self.guards
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(pool)
    }

    fn guard(&self, pool: &PoolName) -> Arc<PoolGuard> {
        let mut guards = self
            .guards
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guards.entry(pool.clone()).or_default().clone()
    }

    /// The pool's call health.
    pub fn health(&self, pool: &PoolName) -> PoolHealth {
        let (circuit, last_error) = self.guard(pool).health(Instant::now());
        PoolHealth {
            circuit,
            last_error,
        }
    }

    /// Renders and sends `op` of `pool` for one run and classifies the answer. The pool's
    /// circuit breaker may defer the call, and its rate budget may delay it.
    pub async fn call(&self, pool: &PoolRuntime, op: OpKind, input: &RenderInput) -> CallOutcome {
        let guard = self.guard(&pool.name);
        let (base, max) = cooldowns(&pool.manifest);
        // A request that cannot be rendered is refused before the breaker is asked: it says
        // nothing about the scheduler's health.
        let manifest = &pool.manifest;
        let Some(operation) = manifest.operation(op) else {
            return CallOutcome::Rejected {
                message: format!("the manifest has no {} operation", op.as_str()),
            };
        };
        let request = match manifest.render(op, input, &pool.secrets) {
            Ok(request) => request,
            Err(e) => {
                let rejected = CallOutcome::Rejected {
                    message: e.to_string(),
                };
                return crate::redact::scrub_outcome(rejected, &pool.secrets, &input.job);
            }
        };
        let now = Instant::now();
        let permit = match guard.admit(now) {
            // A trial whose call never reports back (a panic, a dropped task) counts as failed.
            Admission::Go { trial } => Permit::new(guard.clone(), trial, base, max),
            Admission::Hold(until) => {
                let wait = i64::try_from(until.saturating_duration_since(now).as_millis())
                    .unwrap_or(i64::MAX);
                return CallOutcome::Deferred {
                    until: now_millis().saturating_add(wait),
                };
            }
        };
        let mut outcome = self
            .call_admitted(pool, op, operation, request, &input.dispatch_id, &guard)
            .await;
        if op == OpKind::Dispatch
            && outcome == CallOutcome::AlreadyExists
            && manifest.lookup.is_some()
        {
            outcome = self.already_existing(pool, input, &guard).await;
        }
        if let CallOutcome::Observed(observation) = &mut outcome
            && observation.state == Some(crate::domain::state::MappedState::Failed)
            && pool.manifest.failure_log.is_some()
            && let Some(tail) = self.failure_log(pool, input, &guard).await
        {
            observation.error = Some(match observation.error.take() {
                Some(error) => format!("{error}; log tail: {tail}"),
                None => format!("log tail: {tail}"),
            });
        }
        // No secret and no job value leaves the adapter in a message.
        let outcome = crate::redact::scrub_outcome(outcome, &pool.secrets, &input.job);
        permit.record(signal_of(&outcome), Instant::now());
        outcome
    }

    /// A dispatch answered `alreadyExists` and the manifest has a `lookup`: reads the existing
    /// job's captures with it, so that polls that need them work after the re-attach. Without
    /// a clear lookup answer the outcome stays [`CallOutcome::AlreadyExists`].
    async fn already_existing(
        &self,
        pool: &PoolRuntime,
        input: &RenderInput,
        guard: &PoolGuard,
    ) -> CallOutcome {
        let manifest = &pool.manifest;
        let (Some(operation), Ok(request)) = (
            manifest.lookup.as_ref(),
            manifest.render(OpKind::Lookup, input, &pool.secrets),
        ) else {
            return CallOutcome::AlreadyExists;
        };
        match self
            .call_admitted(
                pool,
                OpKind::Lookup,
                operation,
                request,
                &input.dispatch_id,
                guard,
            )
            .await
        {
            CallOutcome::Accepted { captures, .. } => CallOutcome::Accepted {
                captures,
                note: Some("the scheduler already had the job; re-attached".to_owned()),
            },
            _ => CallOutcome::AlreadyExists,
        }
    }

    /// Fetches the end of a failed job's log with the manifest's `failureLog` operation. Best
    /// effort: any failure only means the error has no log tail.
    async fn failure_log(
        &self,
        pool: &PoolRuntime,
        input: &RenderInput,
        guard: &PoolGuard,
    ) -> Option<String> {
        let manifest = &pool.manifest;
        let operation = manifest.failure_log.as_ref()?;
        let request = manifest
            .render(OpKind::FailureLog, input, &pool.secrets)
            .ok()?;
        let wait = guard.reserve(manifest.limits.requests_per_second, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let timeout =
            Duration::from_millis(operation.timeout_ms.unwrap_or(manifest.limits.timeout_ms));
        let exchange = self
            .send(pool, OpKind::FailureLog, request, timeout)
            .await
            .ok()?;
        if !operation.is_success(exchange.status) {
            return None;
        }
        let tail = log_tail(&exchange.body.ok()?);
        (!tail.is_empty()).then_some(tail)
    }

    async fn call_admitted(
        &self,
        pool: &PoolRuntime,
        op: OpKind,
        operation: &crate::manifest::Operation,
        request: RenderedRequest,
        dispatch_id: &str,
        guard: &PoolGuard,
    ) -> CallOutcome {
        let manifest = &pool.manifest;
        let wait = guard.reserve(manifest.limits.requests_per_second, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let timeout =
            Duration::from_millis(operation.timeout_ms.unwrap_or(manifest.limits.timeout_ms));
        let exchange = match self.send(pool, op, request, timeout).await {
            Ok(exchange) => exchange,
            Err(outcome) => return outcome,
        };
        if exchange.status == 401 && matches!(manifest.auth, Auth::OAuth2ClientCredentials { .. }) {
            // The token may have expired or been revoked: drop it and try again with a new one.
            self.tokens
                .invalidate(
                    &pool.name,
                    &manifest.auth,
                    &pool.secrets,
                    exchange.token.as_ref(),
                )
                .await;
            return CallOutcome::Retryable {
                message: format!(
                    "{} → 401: the OAuth2 token was refused; fetching a new one",
                    op.as_str()
                ),
                retry_after_ms: None,
                unreadable: false,
            };
        }
        classify::classify(
            operation,
            dispatch_id,
            exchange.status,
            exchange.retry_after_ms,
            exchange.body,
        )
    }

    async fn send(
        &self,
        pool: &PoolRuntime,
        op: OpKind,
        request: RenderedRequest,
        timeout: Duration,
    ) -> Result<Exchange, CallOutcome> {
        let mut token = None;
        if let Auth::OAuth2ClientCredentials { .. } = pool.manifest.auth {
            token = Some(
                self.tokens
                    .token_observed(
                        &pool.name,
                        &pool.manifest.auth,
                        &pool.secrets,
                        &pool.client,
                        &pool.egress,
                        timeout,
                        &|class, elapsed| {
                            self.metrics
                                .scheduler_call(&pool.name, "token", class, elapsed);
                        },
                    )
                    .await
                    .map_err(|e| CallOutcome::Retryable {
                        message: e.to_string(),
                        retry_after_ms: None,
                        unreadable: false,
                    })?,
            );
        }
        self.send_with(pool, op.as_str(), request, timeout, token)
            .await
    }

    /// Sends a rendered request on the pool's client, with `token` as its bearer token when
    /// given (the OAuth2 token [`Adapter::send`] took from the cache, or the probe's own).
    async fn send_with(
        &self,
        pool: &PoolRuntime,
        op: &'static str,
        request: RenderedRequest,
        timeout: Duration,
        token: Option<crate::domain::secrets::SecretValue>,
    ) -> Result<Exchange, CallOutcome> {
        // Held until the answer is read, so the connection is back in the client's pool before
        // another request may start. The semaphore is never closed.
        let _connection = pool
            .connections
            .acquire()
            .await
            .map_err(|_| CallOutcome::Retryable {
                message: "the pool's connections are closed".to_owned(),
                retry_after_ms: None,
                unreadable: false,
            })?;
        let method =
            reqwest::Method::from_bytes(request.method.as_str().as_bytes()).map_err(|_| {
                CallOutcome::Rejected {
                    message: "unsupported method".to_owned(),
                }
            })?;
        let mut builder = pool
            .client
            .request(method, request.url.clone())
            .timeout(timeout)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(token) = &token {
            builder = builder.bearer_auth(token.expose());
        }
        let sent_token = token;
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if let Some(body) = request.body {
            if let Some(content_type) = &request.content_type {
                builder = builder.header(reqwest::header::CONTENT_TYPE, content_type.as_str());
            }
            builder = builder.body(body);
        }
        // Egress: the URL and every redirect hop are checked, and every resolved address.
        let started = Instant::now();
        let response = http::send(builder, &pool.egress, pool.manifest.follow_redirects)
            .await
            .inspect_err(|e| {
                let class = call_class_of(e);
                self.metrics
                    .scheduler_call(&pool.name, op, class, started.elapsed());
            })
            .map_err(|e| match e {
                http::SendError::Transport(message) => CallOutcome::Retryable {
                    message,
                    retry_after_ms: None,
                    unreadable: false,
                },
                refused => CallOutcome::Rejected {
                    message: refused.to_string(),
                },
            })?;
        let status = response.status().as_u16();
        let retry_after_ms = http::retry_after_ms(response.headers(), chrono::Utc::now());
        let body = http::read_capped(response, MAX_RESPONSE_BYTES).await;
        let class = crate::metrics::CallClass::Status(status);
        self.metrics
            .scheduler_call(&pool.name, op, class, started.elapsed());
        Ok(Exchange {
            status,
            retry_after_ms,
            body,
            token: sent_token,
        })
    }
}

/// How much of the end of a failure log is kept.
const LOG_TAIL_CHARS: usize = 1_000;

/// The end of a log as one line of text: control characters (including the frame headers of
/// Docker-style multiplexed log streams) become spaces, runs of spaces shrink to one.
fn log_tail(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut cleaned = String::with_capacity(text.len().min(64 * 1024));
    let mut last_space = true;
    for c in text.chars() {
        let c = if c.is_control() || c == char::REPLACEMENT_CHARACTER {
            ' '
        } else {
            c
        };
        if c == ' ' {
            if !last_space {
                cleaned.push(' ');
            }
            last_space = true;
        } else {
            cleaned.push(c);
            last_space = false;
        }
    }
    let trimmed = cleaned.trim();
    let count = trimmed.chars().count();
    if count <= LOG_TAIL_CHARS {
        trimmed.to_owned()
    } else {
        let tail: String = trimmed.chars().skip(count - LOG_TAIL_CHARS).collect();
        format!("…{tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::log_tail;
    use super::{Adapter, PoolName};
    use std::time::{Duration, Instant};

    #[test]
    fn a_forgotten_pool_leaves_no_guard_behind() {
        let adapter = Adapter::new();
        let gone = PoolName::parse("gone").unwrap();
        let kept = PoolName::parse("kept").unwrap();
        for pool in [&gone, &kept] {
            let guard = adapter.guard(pool);
            for _ in 0..super::guard::FAILURE_THRESHOLD {
                guard.record(
                    false,
                    super::Signal::Failing("503".into()),
                    Instant::now(),
                    Duration::from_secs(60),
                    Duration::from_secs(60),
                );
            }
        }
        adapter.forget_pool(&gone);
        let guards = adapter.guards.lock().unwrap();
        assert!(!guards.contains_key(&gone));
        assert!(guards.contains_key(&kept));
        drop(guards);
        assert_eq!(adapter.health(&gone).circuit, super::Circuit::Closed);
        assert_eq!(adapter.health(&kept).circuit, super::Circuit::Open);
    }

    #[test]
    fn a_log_tail_is_one_clean_line_of_the_last_characters() {
        // A Docker-style frame header (stream 2, size 12) before the text.
        let framed =
            b"\x02\x00\x00\x00\x00\x00\x00\x0cboom: failed\n\x01\x00\x00\x00\x00\x00\x00\x03ok\n";
        assert_eq!(log_tail(framed), "boom: failed ok");
        let long = "x".repeat(5_000) + " the end";
        let tail = log_tail(long.as_bytes());
        assert!(tail.starts_with('…'));
        assert!(tail.ends_with("the end"));
        assert_eq!(tail.chars().count(), 1_001);
        assert_eq!(log_tail(b"  \n\t "), "");
    }
}
