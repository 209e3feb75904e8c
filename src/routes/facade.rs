//! The runner-protocol facade: Cat-Factory's executor-harness job protocol served over cattery runs.
//!
//! `GET /health`, `POST /jobs`, `GET /jobs/{id}` and `DELETE /jobs/{id}` behave like the
//! executor harness (CATFACTORY.md §6), so a Cat-Factory deployment can register cattery as its
//! runner pool with a transparent manifest. A posted job spec becomes a run of the pool its
//! routing rules pick; a repeated `POST /jobs` re-attaches to the existing run; the job view is
//! the harness's shape. Answers use the harness's error shape `{"error": "…"}`, not
//! problem+json, because that is what harness clients read.
//!
//! What Cat-Factory reads from it, and how cattery's own outcomes are put in its words:
//! - `state` is `running`, `done` or `failed`, except for a run whose job the scheduler lost for
//!   good (cattery has no re-dispatch left): its state is an eviction word (`lost` when the
//!   scheduler no longer knew the job, the scheduler's own word such as `evicted` or
//!   `preempted` when it reported one), which Cat-Factory answers with its eviction recovery.
//!   While cattery re-dispatches a lost job itself, the job is `running`.
//! - `failureCause` only ever holds one of Cat-Factory's causes (a deadline is `max-duration`);
//!   any other cause is left out and named in `detail`.
//! - `capabilities` is answered on `POST /jobs` and `GET /health`, like the harness's handshake.
//! - the drain-on-read channels (`spans`, `followUps`, `callMetrics`) hand every item the
//!   scheduler reported to the reader once, in order (see [`Drains`]).
//! - every path but `/health` is gated, unknown ones included, so a wrong credential is told
//!   apart from a wrong address.

use super::auth::{ApiAuth, Role};
use super::dto::{HarnessError, HarnessHealth, JobAccepted, JobSpec, JobView};
use crate::config::{FacadeRoute, FacadeSettings};
use crate::crypto::constant_time_eq;
use crate::domain::channels::{self, DRAIN_CHANNELS};
use crate::domain::ids::{InvalidId, JobId, PoolName};
use crate::domain::run::RunRecord;
use crate::domain::state::RunState;
use crate::manifest::catfactory_coerce::FAILURE_CAUSES;
use crate::manifest::vocabulary::LOST_WORDS;
use crate::service::runs::Submission;
use crate::service::{Gateway, ServiceError};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, delete, get, post, web};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How long `DELETE /jobs/{id}` waits for a cancelled run to settle (the harness waits about 6 s).
const CANCEL_SETTLE: Duration = Duration::from_secs(6);

/// The text Cat-Factory looks for in an eviction's error.
const EVICTION_SENTINEL: &str = "(container evicted or crashed)";

/// The largest `facade.maxJobBytes` accepted (64 MiB): the rendered dispatch body, which holds
/// the job, is capped a little above it.
pub const MAX_JOB_BYTES_LIMIT: usize = 64 * 1024 * 1024;

/// The smallest `facade.maxJobBytes` accepted.
const MIN_JOB_BYTES: usize = 1024;

/// How much of an over-limit body is still read (and dropped) before the 413, so that a client
/// that is still sending reads the answer instead of a reset connection.
const OVERSIZE_DRAIN_BYTES: usize = 256 * 1024 * 1024;

/// Most capabilities one list may declare, and the longest name.
const MAX_CAPABILITIES: usize = 64;
const MAX_CAPABILITY_CHARS: usize = 64;

/// Most bytes of drained items one job view hands out. Cat-Factory refuses a poll answer over
/// 200,000 bytes; what does not fit waits for the next read, in order.
const DRAIN_PAGE_BYTES: usize = 128 * 1024;

/// Most runs whose reader position is remembered; beyond it the least recently read go first.
const MAX_CURSORS: usize = 100_000;

/// A facade setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FacadeConfigError {
    /// A pool name in `facade.defaultPool` or `facade.routes` is not a valid pool name.
    #[error("facade.{field}: {source}")]
    PoolName {
        /// The setting, e.g. `routes.1.pool`.
        field: String,
        /// Why the name is invalid.
        #[source]
        source: InvalidId,
    },
    /// A capability list holds a name that is not one.
    #[error(
        "{field}: {value:?} is not a capability name (1-{MAX_CAPABILITY_CHARS} letters, digits, _ or -; at most {MAX_CAPABILITIES} per list)"
    )]
    Capability {
        /// The setting, e.g. `facade.routes.0.capabilities`.
        field: String,
        /// The offending entry.
        value: String,
    },
    /// `facade.maxJobBytes` is out of its bounds.
    #[error(
        "facade.maxJobBytes is {value}; it must lie in {MIN_JOB_BYTES}..={MAX_JOB_BYTES_LIMIT}"
    )]
    MaxJobBytes {
        /// The configured value.
        value: usize,
    },
}

/// Checks a capability list: names of letters, digits, `_` and `-`, duplicates dropped.
///
/// # Errors
/// [`FacadeConfigError::Capability`] naming the first bad entry.
pub fn capability_list(field: &str, list: &[String]) -> Result<Vec<String>, FacadeConfigError> {
    let bad = |value: &str| FacadeConfigError::Capability {
        field: field.to_owned(),
        value: value.to_owned(),
    };
    if list.len() > MAX_CAPABILITIES {
        return Err(bad(&format!("{} entries", list.len())));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for name in list {
        let valid = !name.is_empty()
            && name.chars().count() <= MAX_CAPABILITY_CHARS
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(bad(name));
        }
        if !out.contains(name) {
            out.push(name.clone());
        }
    }
    Ok(out)
}

/// One routing rule, validated.
#[derive(Debug, Clone)]
struct Route {
    conditions: Vec<(&'static str, String)>,
    pool: PoolName,
    capabilities: Option<Vec<String>>,
}

/// The facade's configuration, validated at start, and what it remembers while it serves.
#[derive(Debug)]
pub struct Facade {
    enabled: bool,
    default_pool: Option<PoolName>,
    routes: Vec<Route>,
    harness_secret: Option<String>,
    /// `facade.capabilities`.
    capabilities: Option<Vec<String>>,
    /// The built-in local pool's name and declared capabilities, when it runs.
    local_pool: Option<(PoolName, Vec<String>)>,
    /// `facade.maxJobBytes`.
    max_job_bytes: usize,
    /// The capability list each pool's scheduler last reported at dispatch.
    reported: Mutex<HashMap<PoolName, Vec<String>>>,
    /// Where each reader of a run stands in its drain-on-read channels.
    drains: Mutex<Drains>,
}

/// Locks a mutex; a panic elsewhere while it was held leaves data that is still consistent
/// (every update is a single insert), so a poisoned lock is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Facade {
    /// Validates the `facade` settings; `local_pool` is the built-in local pool's name and
    /// `localPool.capabilities` when that pool runs.
    ///
    /// # Errors
    /// A pool name or a capability that is not valid, or `maxJobBytes` out of bounds.
    pub fn from_settings(
        settings: &FacadeSettings,
        local_pool: Option<(PoolName, &[String])>,
    ) -> Result<Facade, FacadeConfigError> {
        let pool = |field: String, name: &str| {
            PoolName::parse(name).map_err(|source| FacadeConfigError::PoolName { field, source })
        };
        let default_pool = if settings.default_pool.is_empty() {
            None
        } else {
            Some(pool("defaultPool".to_owned(), &settings.default_pool)?)
        };
        let mut routes = Vec::with_capacity(settings.routes.len());
        for (i, route) in settings.routes.iter().enumerate() {
            routes.push(Route {
                conditions: conditions(route),
                pool: pool(format!("routes.{i}.pool"), &route.pool)?,
                capabilities: route
                    .capabilities
                    .as_deref()
                    .map(|list| capability_list(&format!("facade.routes.{i}.capabilities"), list))
                    .transpose()?,
            });
        }
        if !(MIN_JOB_BYTES..=MAX_JOB_BYTES_LIMIT).contains(&settings.max_job_bytes) {
            return Err(FacadeConfigError::MaxJobBytes {
                value: settings.max_job_bytes,
            });
        }
        Ok(Facade {
            enabled: settings.enabled,
            default_pool,
            routes,
            harness_secret: Some(settings.harness_secret.clone()).filter(|s| !s.is_empty()),
            capabilities: settings
                .capabilities
                .as_deref()
                .map(|list| capability_list("facade.capabilities", list))
                .transpose()?,
            local_pool: local_pool
                .map(|(name, list)| {
                    capability_list("localPool.capabilities", list).map(|list| (name, list))
                })
                .transpose()?,
            max_job_bytes: settings.max_job_bytes,
            reported: Mutex::new(HashMap::new()),
            drains: Mutex::new(Drains::default()),
        })
    }

    /// The route and pool a job spec goes to: the first matching route, else the default pool.
    fn pool_for(&self, spec: &Map<String, Value>) -> Option<(Option<&Route>, &PoolName)> {
        self.routes
            .iter()
            .find(|route| {
                route
                    .conditions
                    .iter()
                    .all(|(field, wanted)| spec.get(*field).and_then(Value::as_str) == Some(wanted))
            })
            .map(|route| (Some(route), &route.pool))
            .or_else(|| self.default_pool.as_ref().map(|pool| (None, pool)))
    }

    /// The capabilities declared for a job of `pool` picked by `route` (`None`: the default
    /// pool): what the pool's scheduler last reported at dispatch, else the route's list, else
    /// `facade.capabilities`, else the built-in local pool's list for its jobs, else none.
    fn capabilities_for(&self, route: Option<&Route>, pool: &PoolName) -> Vec<String> {
        if let Some(list) = lock(&self.reported).get(pool) {
            return list.clone();
        }
        route
            .and_then(|r| r.capabilities.clone())
            .or_else(|| self.capabilities.clone())
            .or_else(|| {
                self.local_pool
                    .as_ref()
                    .filter(|(name, _)| name == pool)
                    .map(|(_, list)| list.clone())
            })
            .unwrap_or_default()
    }

    /// The capabilities `GET /health` and `GET /` declare: those of the default pool's jobs.
    fn default_capabilities(&self) -> Vec<String> {
        match &self.default_pool {
            Some(pool) => self.capabilities_for(None, pool),
            None => self.capabilities.clone().unwrap_or_default(),
        }
    }

    /// Remembers the capability list a run's scheduler reported at dispatch, for its pool.
    fn learn(&self, run: &RunRecord) {
        if let Some(list) = reported_capabilities(run) {
            lock(&self.reported).insert(run.pool.clone(), list);
        }
    }
}

fn conditions(route: &FacadeRoute) -> Vec<(&'static str, String)> {
    [
        ("kind", &route.kind),
        ("mode", &route.mode),
        ("instanceType", &route.instance_type),
        ("cloudProvider", &route.cloud_provider),
        ("image", &route.image),
    ]
    .into_iter()
    .filter_map(|(field, value)| value.clone().map(|v| (field, v)))
    .collect()
}

/// Where readers stand in each run's drain-on-read channels: how many items of each channel
/// have been handed out. Kept in memory: after a restart the items a run still keeps are handed
/// out again (once), rather than lost.
#[derive(Debug, Default)]
struct Drains {
    cursors: HashMap<JobId, Cursor>,
    /// Counts reads, to find the least recently read runs.
    clock: u64,
}

/// One run's reader position.
#[derive(Debug, Default)]
struct Cursor {
    /// Channel name → items handed out so far (of all the channel ever carried).
    handed: HashMap<&'static str, u64>,
    /// The read that last moved it.
    touched: u64,
}

/// The drained items one job view hands out, and whether more wait.
#[derive(Debug, Default)]
struct Page {
    items: Vec<(&'static str, Vec<Value>)>,
    /// Items remain that did not fit in this view.
    pending: bool,
}

impl Drains {
    /// Takes the items of `run`'s drain channels that this reader has not had yet, oldest first,
    /// up to [`DRAIN_PAGE_BYTES`] (at least one item), and moves the reader past them.
    fn take(&mut self, run: &RunRecord) -> Page {
        let mut page = Page::default();
        let any = DRAIN_CHANNELS
            .iter()
            .any(|name| channels::seen(&run.fields, name) > 0);
        if !any {
            return page;
        }
        self.clock += 1;
        let clock = self.clock;
        let cursor = self.cursors.entry(run.job_id.clone()).or_default();
        cursor.touched = clock;
        let mut budget = DRAIN_PAGE_BYTES;
        let mut handed_any = false;
        for name in DRAIN_CHANNELS {
            let kept: &[Value] = run
                .fields
                .get(*name)
                .and_then(Value::as_array)
                .map_or(&[], Vec::as_slice);
            let seen = channels::seen(&run.fields, name);
            let kept_len = u64::try_from(kept.len()).unwrap_or(u64::MAX);
            let first_kept = seen.saturating_sub(kept_len);
            let handed = cursor.handed.get(name).copied().unwrap_or(0);
            let start = usize::try_from(handed.max(first_kept) - first_kept).unwrap_or(usize::MAX);
            let mut taken = Vec::new();
            for item in kept.iter().skip(start) {
                let size = channels::json_len(item);
                if handed_any && size > budget {
                    page.pending = true;
                    break;
                }
                budget = budget.saturating_sub(size);
                handed_any = true;
                taken.push(item.clone());
            }
            let now_handed = first_kept
                .saturating_add(u64::try_from(start.saturating_add(taken.len())).unwrap_or(0))
                .min(seen);
            cursor.handed.insert(name, now_handed);
            if !taken.is_empty() {
                page.items.push((name, taken));
            }
        }
        self.evict_if_full();
        page
    }

    /// Forgets the least recently read tenth of the runs once more than [`MAX_CURSORS`] are
    /// remembered.
    fn evict_if_full(&mut self) {
        if self.cursors.len() <= MAX_CURSORS {
            return;
        }
        let mut touched: Vec<u64> = self.cursors.values().map(|c| c.touched).collect();
        touched.sort_unstable();
        let cut = touched[touched.len() / 10];
        self.cursors.retain(|_, cursor| cursor.touched > cut);
    }
}

/// A harness-shaped error answer.
fn error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(HarnessError {
        error: message.into(),
        request_id: None,
    })
}

/// A request the facade refuses before doing anything: its status and message.
#[derive(Debug)]
struct Refusal(StatusCode, &'static str);

impl Refusal {
    fn answer(self) -> HttpResponse {
        error(self.0, self.1)
    }
}

/// The facade when it is served, or the 404 the harness gives for an unknown route.
fn served(facade: Option<&web::Data<Facade>>) -> Result<&Facade, Refusal> {
    match facade {
        Some(facade) if facade.enabled => Ok(facade),
        _ => Err(Refusal(StatusCode::NOT_FOUND, "not found")),
    }
}

/// The facade, if served, and the caller, if let in: with the harness secret, or a bearer
/// token of at least `needed`.
fn admit<'a>(
    req: &HttpRequest,
    facade: Option<&'a web::Data<Facade>>,
    needed: Role,
) -> Result<&'a Facade, Refusal> {
    let facade = served(facade)?;
    gate(req, facade, needed)?;
    Ok(facade)
}

/// Lets a request in with the harness secret, or a bearer token of at least `needed`.
fn gate(req: &HttpRequest, facade: &Facade, needed: Role) -> Result<(), Refusal> {
    if let (Some(expected), Some(given)) = (
        facade.harness_secret.as_deref(),
        req.headers().get("x-harness-secret"),
    ) && constant_time_eq(given.as_bytes(), expected.as_bytes())
    {
        return Ok(());
    }
    let token = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let role = match (token, req.app_data::<web::Data<ApiAuth>>()) {
        (Some(token), Some(auth)) => auth.role_of(token).map(|(role, _)| role),
        _ => None,
    };
    match role {
        Some(role) if role >= needed => Ok(()),
        Some(_) => Err(Refusal(StatusCode::FORBIDDEN, "forbidden")),
        None => Err(Refusal(StatusCode::UNAUTHORIZED, "unauthorized")),
    }
}

/// The harness state of a run (what `statusPath: state` reads): `running` until it is final,
/// then `done`, `failed`, or, for a job the scheduler lost for good, an eviction word.
fn harness_state(run: &RunRecord) -> String {
    match run.state {
        RunState::Done => "done".to_owned(),
        RunState::Failed if run.failure_cause.as_deref() == Some("lost") => eviction_word(run),
        RunState::Failed | RunState::Cancelled => "failed".to_owned(),
        RunState::Queued | RunState::Dispatching | RunState::Pending | RunState::Running => {
            "running".to_owned()
        }
    }
}

/// The eviction word of a lost run: the scheduler's own word when Cat-Factory knows it as an
/// eviction (`evicted`, `preempted`, `oomkilled`, …), else `lost` (the scheduler no longer knew
/// the job, or named its loss in a word of its own).
fn eviction_word(run: &RunRecord) -> String {
    run.scheduler_state
        .as_deref()
        .map(|word| word.trim().to_lowercase())
        .filter(|word| LOST_WORDS.contains(&word.as_str()))
        .unwrap_or_else(|| "lost".to_owned())
}

/// A failure cause as Cat-Factory reads it: one of its own causes (CATFACTORY.md §6.7) as it is,
/// cattery's `deadline` as `max-duration`, anything else nothing.
fn harness_cause(cause: &str) -> Option<&'static str> {
    if cause == "deadline" {
        return Some("max-duration");
    }
    FAILURE_CAUSES.iter().copied().find(|known| *known == cause)
}

/// What `detail` says about a cause `failureCause` cannot carry as it is.
fn cause_note(cause: &str) -> String {
    let why = match cause {
        "deadline" => "the run's deadline passed; reported as max-duration",
        "lost" => {
            "the scheduler lost the job (it no longer knew it, or reported it evicted) and \
             cattery has no re-dispatch left for it"
        }
        "cancelled" => "the run was cancelled",
        "dispatch_rejected" => "the scheduler refused the job, or dispatching it kept failing",
        "poll_errors" => {
            "the scheduler's answers about the job could not be read, too often in a row"
        }
        "scheduler" => "the scheduler reported the job failed without naming a cause",
        "job_unreadable" => "the stored job could not be read, so it was not sent",
        "corrupt" => "the stored run could not be read",
        _ => "reported by the scheduler",
    };
    format!("cattery failure cause: {cause} ({why})")
}

/// A heartbeat as epoch milliseconds: numeric text, or an RFC 3339 time.
fn heartbeat_millis(text: &str) -> Option<Value> {
    let trimmed = text.trim();
    if let Ok(n) = trimmed.parse::<i64>() {
        return Some(json!(n));
    }
    if let Some(n) = trimmed.parse::<f64>().ok().filter(|n| n.is_finite()) {
        return serde_json::Number::from_f64(n).map(Value::Number);
    }
    chrono::DateTime::parse_from_rfc3339(trimmed)
        .ok()
        .map(|t| json!(t.timestamp_millis()))
}

/// The harness job view of a run (CATFACTORY.md §6.4), with the drained items of `page`. The
/// extra channels a manifest maps (`poll.map.fields`: `phase`, `coldStart`, …) are members of
/// it too; the run's own members come after them and win. A finished run whose drained items
/// did not all fit is still `running` until the reader has had them all.
fn job_view(run: &RunRecord, page: Page) -> Value {
    let mut view = channels::visible(&run.fields);
    for name in DRAIN_CHANNELS {
        view.remove(*name);
    }
    let held = page.pending && run.state.is_final();
    for (name, items) in page.items {
        view.insert(name.to_owned(), Value::Array(items));
    }
    view.insert("id".into(), json!(run.job_id.as_str()));
    let state = if held {
        "running".to_owned()
    } else {
        harness_state(run)
    };
    view.insert("state".into(), json!(state));
    if let Some(at) = run.dispatched_at {
        view.insert("startedAt".into(), json!(at));
    }
    if let Some(beat) = run.heartbeat_at.as_deref().and_then(heartbeat_millis) {
        view.insert("heartbeatAt".into(), beat);
    }
    if let Some(progress) = run.progress {
        view.insert(
            "progress".into(),
            json!({
                "completed": progress.completed,
                "inProgress": progress.in_progress,
                "total": progress.total,
            }),
        );
    }
    let mut detail = run.detail.clone();
    match run.state {
        _ if held => {}
        RunState::Done => {
            view.insert(
                "result".into(),
                run.result.clone().unwrap_or_else(|| json!({})),
            );
        }
        RunState::Failed | RunState::Cancelled => {
            let mut text = run
                .error
                .clone()
                .unwrap_or_else(|| "the job failed".to_owned());
            if run.failure_cause.as_deref() == Some("lost") && !text.contains(EVICTION_SENTINEL) {
                text = format!("{text} {EVICTION_SENTINEL}");
            }
            view.insert("error".into(), json!(text));
            if let Some(cause) = &run.failure_cause {
                let kept = harness_cause(cause);
                if let Some(kept) = kept {
                    view.insert("failureCause".into(), json!(kept));
                }
                if kept != Some(cause.as_str()) {
                    let note = cause_note(cause);
                    detail = Some(match detail {
                        Some(text) if !text.is_empty() => format!("{text}\n{note}"),
                        _ => note,
                    });
                }
            }
        }
        _ => {}
    }
    if let Some(detail) = detail {
        view.insert("detail".into(), json!(detail));
    }
    if let Some(list) = reported_capabilities(run) {
        view.insert("capabilities".into(), json!(list));
    }
    Value::Object(view)
}

/// The capabilities the scheduler declared when it accepted the job (a dispatch capture
/// named `capabilities` holding a list of strings), if any.
fn reported_capabilities(run: &RunRecord) -> Option<Vec<String>> {
    let list = run.captures.get("capabilities")?.as_array()?;
    list.iter().map(|v| v.as_str().map(str::to_owned)).collect()
}

/// The short answer of `POST /jobs` and `DELETE /jobs/{id}`, with `capabilities` when given.
fn accepted(run: &RunRecord, capabilities: Option<Vec<String>>) -> JobAccepted {
    JobAccepted {
        job_id: run.job_id.to_string(),
        state: harness_state(run),
        capabilities,
    }
}

/// The answer to `POST /jobs` for a run: its capabilities are the ones its scheduler reported,
/// else those declared for its pool.
fn submitted(facade: &Facade, run: &RunRecord, route: Option<&Route>) -> HttpResponse {
    facade.learn(run);
    let capabilities =
        reported_capabilities(run).unwrap_or_else(|| facade.capabilities_for(route, &run.pool));
    HttpResponse::Accepted().json(accepted(run, Some(capabilities)))
}

/// Maps a use-case failure onto a harness-shaped answer; internal causes go to the log.
fn failure(e: ServiceError) -> HttpResponse {
    match e {
        ServiceError::RunNotFound(_) => error(StatusCode::NOT_FOUND, "job not found"),
        ServiceError::PoolNotFound(pool) => error(
            StatusCode::NOT_FOUND,
            format!("no pool serves this job: pool {pool} is not registered"),
        ),
        ServiceError::Validation(problems) => error(
            StatusCode::BAD_REQUEST,
            problems
                .iter()
                .map(|p| format!("{}: {}", p.path, p.message))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        ServiceError::Saturated { .. } => {
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, e.to_string());
            response.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                actix_web::http::header::HeaderValue::from_static("5"),
            );
            response
        }
        ServiceError::ShuttingDown | ServiceError::Unavailable => {
            error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        ServiceError::JobIdConflict(_)
        | ServiceError::RunFinished(_)
        | ServiceError::PoolBusy(_) => error(StatusCode::CONFLICT, e.to_string()),
        ServiceError::MissingSecrets(_) => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        ServiceError::Internal(cause) => {
            let id = uuid::Uuid::new_v4().to_string();
            tracing::error!(request_id = %id, error = ?cause, "internal error in the facade");
            HttpResponse::InternalServerError().json(HarnessError {
                error: "internal error".to_owned(),
                request_id: Some(id),
            })
        }
    }
}

/// The harness's health answer: `{"status": "ok", "capabilities": [...]}`.
fn health_answer(facade: &Facade) -> HttpResponse {
    HttpResponse::Ok().json(HarnessHealth {
        status: "ok",
        capabilities: facade.default_capabilities(),
    })
}

/// `GET /health`: 200 `{"status": "ok", "capabilities"}`, never gated.
#[utoipa::path(
    operation_id = "harnessHealth",
    tag = "facade",
    security(()),
    responses(
        (status = 200, description = "The facade is served", body = HarnessHealth),
        (status = 404, description = "The facade is not served (`facade.enabled: false`)", body = HarnessError),
    )
)]
#[get("/health")]
pub async fn health(facade: Option<web::Data<Facade>>) -> HttpResponse {
    match served(facade.as_ref()) {
        Ok(facade) => health_answer(facade),
        Err(refusal) => refusal.answer(),
    }
}

/// The answer for a path no route serves, when the facade is served and the path is not under
/// `/v1`; `None` otherwise (the API's own problem+json 404 applies). Like a harness with a
/// secret, every such path is gated: 401/403 without a good credential, then `GET /` answers
/// like `/health` and anything else 404 `{"error": "not found"}`.
pub fn unknown_route(req: &HttpRequest) -> Option<HttpResponse> {
    let path = req.path();
    if path == "/v1" || path.starts_with("/v1/") {
        return None;
    }
    let facade = req.app_data::<web::Data<Facade>>();
    let Ok(facade) = served(facade) else {
        return None;
    };
    if let Err(refusal) = gate(req, facade, Role::Reader) {
        return Some(refusal.answer());
    }
    Some(if path == "/" && req.method() == Method::GET {
        health_answer(facade)
    } else {
        error(StatusCode::NOT_FOUND, "not found")
    })
}

/// Why a job spec body was not read.
enum BodyError {
    /// Over `facade.maxJobBytes`.
    TooLarge,
    /// The connection failed mid-body.
    Unreadable,
}

/// Reads a job spec of at most `limit` bytes. An over-limit body is read on (and dropped) for up
/// to [`OVERSIZE_DRAIN_BYTES`] more, so that the client reads the refusal.
async fn read_spec(mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, BodyError> {
    let mut body = web::BytesMut::new();
    let mut total: usize = 0;
    let mut over = false;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| BodyError::Unreadable)?;
        total = total.saturating_add(chunk.len());
        if over || total > limit {
            if !over {
                over = true;
                body = web::BytesMut::new();
            }
            if total > limit.saturating_add(OVERSIZE_DRAIN_BYTES) {
                break;
            }
            continue;
        }
        body.extend_from_slice(&chunk);
    }
    if over {
        Err(BodyError::TooLarge)
    } else {
        Ok(body)
    }
}

/// `POST /jobs`: the body is the harness job spec (with `jobId`); 202 `{"jobId", "state",
/// "capabilities"}`. A repeat for a known `jobId` re-attaches and answers 202 with the run's
/// current state.
#[utoipa::path(
    operation_id = "submitJob",
    tag = "facade",
    request_body(content = JobSpec, description = "The harness job spec"),
    responses(
        (status = 202, description = "Accepted, or re-attached to the run of a known jobId", body = JobAccepted),
        (status = 400, description = "Not a job spec object, or a bad jobId", body = HarnessError),
        (status = 404, description = "No route matches and there is no default pool, or the pool is not registered", body = HarnessError),
        (status = 409, description = "The jobId is used by another submission", body = HarnessError),
        (status = 413, description = "Larger than `facade.maxJobBytes`", body = HarnessError),
        (status = 422, description = "The pool's manifest needs secrets it does not have", body = HarnessError),
        (status = 429, description = "The pool's queue is full; see `Retry-After`", body = HarnessError),
        (status = 503, description = "Shutting down, or the supervisor is not running", body = HarnessError),
    )
)]
#[post("/jobs")]
pub async fn submit(
    req: HttpRequest,
    facade: Option<web::Data<Facade>>,
    gateway: web::Data<Gateway>,
    payload: web::Payload,
) -> HttpResponse {
    let facade = match admit(&req, facade.as_ref(), Role::Dispatcher) {
        Ok(facade) => facade,
        Err(refusal) => return refusal.answer(),
    };
    let body = match read_spec(payload, facade.max_job_bytes).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the job spec is larger than {} bytes (facade.maxJobBytes)",
                    facade.max_job_bytes
                ),
            );
        }
        Err(BodyError::Unreadable) => {
            return error(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            );
        }
    };
    let Ok(Value::Object(spec)) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object: the job spec",
        );
    };
    drop(body);
    let job_id = match spec.get("jobId").and_then(Value::as_str).map(JobId::parse) {
        Some(Ok(id)) => id,
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("jobId: {e}")),
        None => return error(StatusCode::BAD_REQUEST, "jobId is required (a string)"),
    };
    let target = facade.pool_for(&spec);
    let route = target.and_then(|(route, _)| route);
    match gateway.run(&job_id).await {
        Ok(run) => return submitted(facade, &run, route.filter(|r| r.pool == run.pool)),
        Err(ServiceError::RunNotFound(_)) => {}
        Err(e) => return failure(e),
    }
    let kind = spec.get("kind").and_then(Value::as_str).map(str::to_owned);
    let Some((route, pool)) = target else {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "unknown job kind '{}': no facade route matches and facade.defaultPool is empty",
                kind.as_deref().unwrap_or_default()
            ),
        );
    };
    let submission = Submission {
        job_id: job_id.clone(),
        kind: kind.filter(|k| !k.is_empty() && k.len() <= 100 && !k.chars().any(char::is_control)),
        job: Some(spec),
        labels: Map::new(),
        deadline_seconds: None,
        priority: 0,
    };
    match gateway.submit_run(pool, submission).await {
        Ok((run, _)) => submitted(facade, &run, route),
        // Posted twice at once with different bodies: the first one is the job.
        Err(ServiceError::JobIdConflict(_)) => match gateway.run(&job_id).await {
            Ok(run) => submitted(facade, &run, route.filter(|r| r.pool == run.pool)),
            Err(e) => failure(e),
        },
        Err(e) => failure(e),
    }
}

fn job_id_of(raw: &str) -> Result<JobId, Refusal> {
    JobId::parse(raw).map_err(|_| Refusal(StatusCode::NOT_FOUND, "job not found"))
}

/// `GET /jobs/{id}`: 200 with the job view; 404 `{"error": "job not found"}`. Like the harness,
/// a read takes the drain-on-read channels' new items.
#[utoipa::path(
    operation_id = "getJob",
    tag = "facade",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The harness job view", body = JobView),
        (status = 404, description = "`{\"error\": \"job not found\"}`", body = HarnessError),
        (status = 503, description = "The supervisor is not running", body = HarnessError),
    )
)]
#[get("/jobs/{id}")]
pub async fn get(
    req: HttpRequest,
    facade: Option<web::Data<Facade>>,
    gateway: web::Data<Gateway>,
    path: web::Path<String>,
) -> HttpResponse {
    let facade = match admit(&req, facade.as_ref(), Role::Reader) {
        Ok(facade) => facade,
        Err(refusal) => return refusal.answer(),
    };
    let job_id = match job_id_of(&path) {
        Ok(id) => id,
        Err(refusal) => return refusal.answer(),
    };
    match gateway.run(&job_id).await {
        Ok(run) => {
            facade.learn(&run);
            let page = lock(&facade.drains).take(&run);
            HttpResponse::Ok().json(job_view(&run, page))
        }
        Err(e) => failure(e),
    }
}

/// `DELETE /jobs/{id}`: cancels the run, waits a few seconds for it to settle, answers 200
/// `{"jobId", "state"}` with the state it reached. Idempotent: a finished run answers its state.
/// An unknown id answers 404 `{"error": "job not found"}`, as the harness does.
#[utoipa::path(
    operation_id = "cancelJob",
    tag = "facade",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "Cancelled (or already finished): the state it reached within a few seconds", body = JobAccepted),
        (status = 404, description = "`{\"error\": \"job not found\"}`", body = HarnessError),
        (status = 503, description = "The supervisor is not running", body = HarnessError),
    )
)]
#[delete("/jobs/{id}")]
pub async fn cancel(
    req: HttpRequest,
    facade: Option<web::Data<Facade>>,
    gateway: web::Data<Gateway>,
    path: web::Path<String>,
) -> HttpResponse {
    let facade = match admit(&req, facade.as_ref(), Role::Dispatcher) {
        Ok(facade) => facade,
        Err(refusal) => return refusal.answer(),
    };
    let job_id = match job_id_of(&path) {
        Ok(id) => id,
        Err(refusal) => return refusal.answer(),
    };
    let answer = |run: &RunRecord| {
        facade.learn(run);
        HttpResponse::Ok().json(accepted(run, None))
    };
    let mut changes = gateway.deps.bus.subscribe();
    let run = match gateway.cancel_run(&job_id).await {
        Ok(run) => run,
        Err(ServiceError::RunFinished(_)) => match gateway.run(&job_id).await {
            Ok(run) => run,
            Err(e) => return failure(e),
        },
        Err(e) => return failure(e),
    };
    if run.state.is_final() {
        return answer(&run);
    }
    let deadline = tokio::time::Instant::now() + CANCEL_SETTLE;
    loop {
        match tokio::time::timeout_at(deadline, changes.recv()).await {
            Ok(Ok(change)) if change.run.job_id == job_id && change.run.state.is_final() => {
                return answer(&change.run);
            }
            Ok(Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) | Err(_) => break,
        }
    }
    match gateway.run(&job_id).await {
        Ok(run) => answer(&run),
        Err(e) => failure(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(routes: Vec<FacadeRoute>, default_pool: &str) -> FacadeSettings {
        FacadeSettings {
            enabled: true,
            default_pool: default_pool.to_owned(),
            routes,
            harness_secret: String::new(),
            capabilities: None,
            max_job_bytes: 16 * 1024 * 1024,
        }
    }

    fn facade(routes: Vec<FacadeRoute>, default_pool: &str) -> Facade {
        Facade::from_settings(&settings(routes, default_pool), None).unwrap()
    }

    fn route(kind: Option<&str>, instance_type: Option<&str>, pool: &str) -> FacadeRoute {
        FacadeRoute {
            kind: kind.map(str::to_owned),
            mode: None,
            instance_type: instance_type.map(str::to_owned),
            cloud_provider: None,
            image: None,
            pool: pool.to_owned(),
            capabilities: None,
        }
    }

    fn spec(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    fn run(fields: Value) -> RunRecord {
        let mut run = RunRecord::queued(
            JobId::parse("job-1").unwrap(),
            PoolName::parse("local").unwrap(),
            1,
        );
        run.state = RunState::Running;
        run.fields = spec(fields);
        run
    }

    #[test]
    fn routes_match_in_order_and_fall_back_to_the_default_pool() {
        let f = facade(
            vec![
                route(Some("deploy"), None, "deployers"),
                route(Some("agent"), Some("c7g.xlarge"), "large"),
                route(Some("agent"), None, "agents"),
            ],
            "local",
        );
        let pool = |v: Value| f.pool_for(&spec(v)).map(|(_, p)| p.to_string());
        assert_eq!(
            pool(json!({"kind": "deploy"})).as_deref(),
            Some("deployers")
        );
        assert_eq!(
            pool(json!({"kind": "agent", "instanceType": "c7g.xlarge"})).as_deref(),
            Some("large")
        );
        assert_eq!(
            pool(json!({"kind": "agent", "instanceType": "t3"})).as_deref(),
            Some("agents")
        );
        assert_eq!(pool(json!({"kind": "inline"})).as_deref(), Some("local"));
        let no_default = facade(vec![route(Some("agent"), None, "agents")], "");
        assert!(
            no_default
                .pool_for(&spec(json!({"kind": "deploy"})))
                .is_none()
        );
    }

    #[test]
    fn a_bad_pool_name_capability_or_size_in_the_settings_is_refused_with_its_setting() {
        let err = Facade::from_settings(
            &settings(vec![route(None, None, "Not A Pool")], "local"),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("facade.routes.0.pool"), "{err}");
        let mut bad = route(None, None, "agents");
        bad.capabilities = Some(vec!["skills".into(), "mcp servers".into()]);
        let err = Facade::from_settings(&settings(vec![bad], "local"), None).unwrap_err();
        assert!(
            err.to_string().starts_with("facade.routes.0.capabilities"),
            "{err}"
        );
        let mut big = settings(vec![], "local");
        big.max_job_bytes = MAX_JOB_BYTES_LIMIT + 1;
        let err = Facade::from_settings(&big, None).unwrap_err();
        assert!(err.to_string().starts_with("facade.maxJobBytes"), "{err}");
    }

    #[test]
    fn capabilities_come_from_the_scheduler_then_the_route_then_the_settings() {
        let mut with_list = route(Some("agent"), None, "agents");
        with_list.capabilities = Some(vec!["skills".into(), "skills".into()]);
        let mut s = settings(vec![with_list], "local");
        s.capabilities = Some(vec!["mcpServers".into()]);
        let local = PoolName::parse("local").unwrap();
        let f =
            Facade::from_settings(&s, Some((local.clone(), &["designImages".to_owned()]))).unwrap();
        let agents = PoolName::parse("agents").unwrap();
        let (route, pool) = f.pool_for(&spec(json!({"kind": "agent"}))).unwrap();
        assert_eq!(f.capabilities_for(route, pool), ["skills"]);
        assert_eq!(f.default_capabilities(), ["mcpServers"]);
        let mut reported = run(json!({}));
        reported.pool = agents.clone();
        reported.captures = spec(json!({"capabilities": ["generateImages"]}));
        f.learn(&reported);
        assert_eq!(f.capabilities_for(route, &agents), ["generateImages"]);

        let plain = Facade::from_settings(
            &settings(vec![], "local"),
            Some((local.clone(), &["designImages".to_owned()])),
        )
        .unwrap();
        assert_eq!(plain.default_capabilities(), ["designImages"]);
        assert!(plain.capabilities_for(None, &agents).is_empty());
    }

    #[test]
    fn causes_outside_cat_factorys_list_are_left_out_and_a_deadline_is_max_duration() {
        assert_eq!(harness_cause("deadline"), Some("max-duration"));
        assert_eq!(harness_cause("branch-contended"), Some("branch-contended"));
        for cause in ["lost", "scheduler", "cancelled", "poll_errors", "oom"] {
            assert_eq!(harness_cause(cause), None, "{cause}");
        }
        let mut lost = run(json!({}));
        lost.state = RunState::Failed;
        lost.failure_cause = Some("lost".into());
        lost.scheduler_state = Some(" Preempted ".into());
        assert_eq!(harness_state(&lost), "preempted");
        lost.scheduler_state = Some("running".into());
        assert_eq!(harness_state(&lost), "lost");
    }

    #[test]
    fn a_reader_gets_each_drained_item_once_in_pages_and_a_finished_run_waits_for_them() {
        let big = "x".repeat(DRAIN_PAGE_BYTES / 2);
        let mut fields = Map::new();
        channels::merge(
            &mut fields,
            &spec(json!({"followUps": [{"title": "a"}], "callMetrics": [{"seq": 1, "t": big}]})),
        );
        let mut r = run(Value::Object(fields.clone()));
        let mut drains = Drains::default();
        let page = drains.take(&r);
        assert!(!page.pending);
        assert_eq!(page.items.len(), 2);
        assert!(drains.take(&r).items.is_empty(), "nothing new");

        channels::merge(
            &mut fields,
            &spec(json!({"callMetrics": [{"seq": 2, "t": big}, {"seq": 3, "t": big}]})),
        );
        r.fields = fields.clone();
        r.state = RunState::Done;
        let view = job_view(&r, drains.take(&r));
        assert_eq!(view["state"], "running", "one item is still waiting");
        assert!(view.get("result").is_none());
        assert_eq!(view["callMetrics"].as_array().unwrap().len(), 1);
        assert_eq!(view["callMetrics"][0]["seq"], 2);
        let view = job_view(&r, drains.take(&r));
        assert_eq!(view["state"], "done");
        assert_eq!(view["callMetrics"][0]["seq"], 3);
        assert!(view.get(channels::SEEN_KEY).is_none());
        let view = job_view(&r, drains.take(&r));
        assert_eq!(view["state"], "done");
        assert!(view.get("callMetrics").is_none());
    }

    #[test]
    fn heartbeats_become_epoch_milliseconds() {
        assert_eq!(
            heartbeat_millis("1700000000000"),
            Some(json!(1_700_000_000_000_i64))
        );
        assert_eq!(
            heartbeat_millis("2024-01-01T00:00:01Z"),
            Some(json!(1_704_067_201_000_i64))
        );
        assert_eq!(heartbeat_millis("yesterday"), None);
    }
}
