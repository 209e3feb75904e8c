//! Manifests: the cattery/v1 model, parsed strictly, validated and compiled once at registration.
//!
//! [`Manifest::parse`] turns YAML or JSON into a [`Manifest`] whose templates and JMESPath
//! expressions are all compiled, or reports every problem with its path. A compiled manifest
//! cannot fail to render for lack of a variable.
//!
//! The public value types live here; the walk of the document is in `validate`, `operation`
//! and `auth`, the status vocabulary in `vocabulary`, and the compiled templates and
//! expressions in [`crate::template`].

mod auth;
mod catfactory;
pub(crate) mod catfactory_coerce;
#[cfg(test)]
mod fixtures;
mod model;
mod operation;
mod source;
mod validate;
pub(crate) mod vocabulary;
mod walk;

pub use catfactory::{Converted, convert_catfactory};
pub use model::{Defaults, Manifest, Operation};

pub(crate) use auth::is_secret_key;
pub(crate) use vocabulary::classify;

use crate::domain::run::Progress;
use crate::domain::state::MappedState;
use serde_json::{Map, Value};

/// One problem found in a manifest: where, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = FieldProblem)]
pub struct Problem {
    /// A dotted path such as `poll.map.state` or `dispatch.request.headers.X-Token`.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// A manifest that did not validate: every problem found, not just the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the manifest is invalid ({} problem(s))", problems.len())]
pub struct ManifestError {
    /// Every problem, in document order.
    pub problems: Vec<Problem>,
}

/// A non-fatal remark about a registered manifest (for example "no release operation").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Warning {
    /// Stable snake_case code.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

/// The format a manifest was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    /// `apiVersion: cattery/v1`.
    CatteryV1,
    /// Cat-Factory's runner-pool manifest, detected by its shape and converted to cattery/v1.
    CatFactory,
}

impl ManifestFormat {
    /// The name PoolView reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ManifestFormat::CatteryV1 => "cattery/v1",
            ManifestFormat::CatFactory => "cat-factory",
        }
    }
}

/// The operations of a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// Create the job.
    Dispatch,
    /// Find a job that an earlier dispatch attempt may have created (optional). Asked before a
    /// dispatch whose predecessor may have reached the scheduler, so that the job is re-attached
    /// instead of created twice.
    Lookup,
    /// Read the job's status.
    Poll,
    /// Cancel / clean up the job.
    Release,
    /// Fetch the end of a failed job's log (optional; its text answer extends the run's error).
    FailureLog,
}

impl OpKind {
    /// The operation's name in a manifest (`dispatch`, `lookup`, `poll`, `release`, `failureLog`).
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Dispatch => "dispatch",
            OpKind::Lookup => "lookup",
            OpKind::Poll => "poll",
            OpKind::Release => "release",
            OpKind::FailureLog => "failureLog",
        }
    }
}

/// HTTP methods a manifest may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
}

impl Method {
    /// The method name in upper case.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// What a 404 answer means for an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotFound {
    /// Poll: the scheduler lost the job (default for poll).
    Lost,
    /// Poll: an unreadable poll; try again later.
    Retry,
    /// Release: the job is gone already, which counts as released (default for release).
    Success,
    /// Dispatch: a 404 is an ordinary rejection (the only meaning for dispatch).
    Reject,
}

/// The pool's call limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Runs in dispatching/pending/running at once (default 100).
    pub max_in_flight: u32,
    /// Runs waiting for a slot before the API answers 429 (default 10000).
    pub max_queued: u32,
    /// Rate budget shared by all calls of the pool (None: unlimited).
    pub requests_per_second: Option<f64>,
    /// Default timeout of one call (default 10000).
    pub timeout_ms: u64,
    /// Requests to the scheduler in flight at once, and idle connections kept (default 64):
    /// a burst of runs waits for a connection instead of opening one each.
    pub max_connections: u32,
}

/// Retry policy for retryable call failures.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included (default 5).
    pub max_attempts: u32,
    /// First backoff (default 250).
    pub initial_backoff_ms: u64,
    /// Backoff cap (default 30000).
    pub max_backoff_ms: u64,
}

/// Poll cadence and budgets.
#[derive(Debug, Clone, PartialEq)]
pub struct Polling {
    /// Base interval between polls (default 5000).
    pub interval_ms: u64,
    /// Upper bound while nothing changes (default: 6 × interval, at least interval).
    pub max_interval_ms: u64,
    /// Default deadline of a run, when the run sets none.
    pub deadline_seconds: Option<u64>,
    /// Unreadable polls in a row before the run fails with `poll_errors` (default 8).
    pub max_consecutive_errors: u32,
}

/// Scheduler authentication.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    /// No credentials.
    None,
    /// `<headerName>: <valuePrefix><secret>`.
    ApiKey {
        /// Header to set.
        header_name: String,
        /// Secret key holding the value.
        secret_key: String,
        /// Text put before the secret (no separator added).
        value_prefix: String,
    },
    /// `Authorization: Bearer <secret>`.
    Bearer {
        /// Secret key holding the token.
        secret_key: String,
    },
    /// `Authorization: Basic base64(user:pass)`.
    Basic {
        /// Secret key holding the user name.
        username_key: String,
        /// Secret key holding the password.
        password_key: String,
    },
    /// OAuth2 client credentials; the token is sent as a bearer token.
    OAuth2ClientCredentials {
        /// Token endpoint (static, absolute URL).
        token_url: url::Url,
        /// Secret key holding the client id.
        client_id_key: String,
        /// Secret key holding the client secret.
        client_secret_key: String,
        /// Optional scope.
        scope: Option<String>,
        /// Optional audience.
        audience: Option<String>,
    },
    /// One header per entry, each set to a secret.
    CustomHeaders(Vec<(String, String)>),
}

/// Values a template can see, except secrets. Built per call by the caller.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RenderInput {
    /// `input.jobId`
    pub job_id: String,
    /// `input.kind` (empty string when absent)
    pub kind: Option<String>,
    /// `input.job` (the job object; `{}` when absent)
    pub job: Value,
    /// `input.labels`
    pub labels: Map<String, Value>,
    /// `run.dispatchId`
    pub dispatch_id: String,
    /// `run.attempt` (1-based dispatch attempt)
    pub attempt: u32,
    /// `capture.*` (values captured from the dispatch answer)
    pub captures: Map<String, Value>,
    /// `pool.name`
    pub pool_name: String,
}

/// A request ready to send: relative to the manifest's `baseUrl`.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedRequest {
    /// The method.
    pub method: Method,
    /// The full URL (base URL + rendered path + query), confined to the base URL's scheme, host and port.
    pub url: url::Url,
    /// Headers in order: auth headers first (except OAuth2, which the sender adds), then template headers.
    /// Values may hold secrets: never log them.
    pub headers: Vec<(String, String)>,
    /// The body, if any.
    pub body: Option<Vec<u8>>,
    /// The content type of the body, if any (`application/json` for body trees).
    pub content_type: Option<String>,
}

/// What a rendered poll (or pollMany item) answer means, mapped onto the canonical view.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observation {
    /// The mapped state (Running when unmapped or absent).
    pub state: Option<MappedState>,
    /// The scheduler's own status word, if one was read.
    pub scheduler_state: Option<String>,
    /// True when a word was read that neither the statusMap nor the built-in vocabulary knows.
    pub unmapped: bool,
    /// Mapped progress.
    pub progress: Option<Progress>,
    /// Mapped result.
    pub result: Option<Value>,
    /// Mapped error text.
    pub error: Option<String>,
    /// Mapped failure cause.
    pub failure_cause: Option<String>,
    /// Mapped detail.
    pub detail: Option<String>,
    /// Mapped heartbeat (as text).
    pub heartbeat: Option<String>,
    /// Mapped external id, if the map has `externalId`.
    pub external_id: Option<String>,
    /// Extra channels named in `map.fields` (name → value), null values left out.
    pub fields: Map<String, Value>,
}

/// A response body that could not be read as the manifest expects (an unreadable poll).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The body is not JSON.
    #[error("the answer is not JSON")]
    NotJson,
    /// An expression failed on this body.
    #[error("expression {path} failed: {message}")]
    Expression {
        /// The manifest path of the expression, e.g. `poll.map.progress.total`.
        path: String,
        /// What failed.
        message: String,
    },
}

/// A template that could not be rendered for this run (for example a header with a newline).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rendering {path} failed: {message}")]
pub struct RenderError {
    /// Manifest path of the template.
    pub path: String,
    /// What failed; never contains a secret value.
    pub message: String,
}
