//! The runner-protocol facade: Cat-Factory's executor-harness job protocol served over cattery runs.
//!
//! `GET /health`, `POST /jobs`, `GET /jobs/{id}` and `DELETE /jobs/{id}` behave like the
//! executor harness (CATFACTORY.md §6), so a Cat-Factory deployment can register cattery as its
//! runner pool with a transparent manifest. A posted job spec becomes a run of the pool its
//! routing rules pick; a repeated `POST /jobs` re-attaches to the existing run; the job view is
//! the harness's shape (`state` is `running`, `done` or `failed`). Answers use the harness's
//! error shape `{"error": "…"}`, not problem+json, because that is what harness clients read.

use super::BodyLimit;
use super::auth::{ApiAuth, Role};
use super::body::read_limited;
use crate::config::{FacadeRoute, FacadeSettings};
use crate::crypto::constant_time_eq;
use crate::domain::ids::{InvalidId, JobId, PoolName};
use crate::domain::run::RunRecord;
use crate::domain::state::RunState;
use crate::service::runs::{MAX_JOB_BYTES, Submission};
use crate::service::{Gateway, ServiceError};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, delete, get, post, web};
use serde_json::{Map, Value, json};
use std::time::Duration;

/// How long `DELETE /jobs/{id}` waits for a cancelled run to settle (the harness waits about 6 s).
const CANCEL_SETTLE: Duration = Duration::from_secs(6);

/// The text Cat-Factory looks for in an eviction's error.
const EVICTION_SENTINEL: &str = "(container evicted or crashed)";

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
}

/// One routing rule, validated.
#[derive(Debug, Clone)]
struct Route {
    conditions: Vec<(&'static str, String)>,
    pool: PoolName,
}

/// The facade's configuration, validated at start.
#[derive(Debug, Clone)]
pub struct Facade {
    enabled: bool,
    default_pool: Option<PoolName>,
    routes: Vec<Route>,
    harness_secret: Option<String>,
}

impl Facade {
    /// Validates the `facade` settings.
    ///
    /// # Errors
    /// A pool name that is not valid.
    pub fn from_settings(settings: &FacadeSettings) -> Result<Facade, FacadeConfigError> {
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
            });
        }
        Ok(Facade {
            enabled: settings.enabled,
            default_pool,
            routes,
            harness_secret: Some(settings.harness_secret.clone()).filter(|s| !s.is_empty()),
        })
    }

    /// The pool a job spec goes to: the first matching route, else the default pool.
    fn pool_for(&self, spec: &Map<String, Value>) -> Option<&PoolName> {
        self.routes
            .iter()
            .find(|route| {
                route
                    .conditions
                    .iter()
                    .all(|(field, wanted)| spec.get(*field).and_then(Value::as_str) == Some(wanted))
            })
            .map(|route| &route.pool)
            .or(self.default_pool.as_ref())
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

/// A harness-shaped error answer.
fn error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message.into() }))
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

/// The harness state of a run: `running` until it is final, then `done` or `failed`.
fn harness_state(state: RunState) -> &'static str {
    match state {
        RunState::Done => "done",
        RunState::Failed | RunState::Cancelled => "failed",
        RunState::Queued | RunState::Dispatching | RunState::Pending | RunState::Running => {
            "running"
        }
    }
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

/// The harness job view of a run (CATFACTORY.md §6.4). The extra channels a manifest maps
/// (`poll.map.fields`: `phase`, `followUps`, `callMetrics`, `coldStart`, …) are members of it
/// too; the run's own members come after them and win.
pub fn job_view(run: &RunRecord) -> Value {
    let mut view = run.fields.clone();
    view.insert("id".into(), json!(run.job_id.as_str()));
    view.insert("state".into(), json!(harness_state(run.state)));
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
    match run.state {
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
                view.insert("failureCause".into(), json!(cause));
            }
        }
        _ => {}
    }
    if let Some(detail) = &run.detail {
        view.insert("detail".into(), json!(detail));
    }
    if let Some(list) = capabilities(run) {
        view.insert("capabilities".into(), list);
    }
    Value::Object(view)
}

/// The capabilities the scheduler declared when it accepted the job (a dispatch capture
/// named `capabilities` holding a list of strings), if any.
fn capabilities(run: &RunRecord) -> Option<Value> {
    run.captures
        .get("capabilities")
        .filter(|v| v.as_array().is_some_and(|a| a.iter().all(Value::is_string)))
        .cloned()
}

/// The short answer of `POST /jobs` and `DELETE /jobs/{id}` (with the capabilities once the
/// scheduler declared them).
fn accepted(run: &RunRecord) -> Value {
    let mut answer = json!({ "jobId": run.job_id.as_str(), "state": harness_state(run.state) });
    if let (Some(list), Value::Object(map)) = (capabilities(run), &mut answer) {
        map.insert("capabilities".into(), list);
    }
    answer
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
            HttpResponse::InternalServerError()
                .json(json!({ "error": "internal error", "requestId": id }))
        }
    }
}

/// `GET /health`: 200 `{"status": "ok"}`, never gated.
#[get("/health")]
pub async fn health(facade: Option<web::Data<Facade>>) -> HttpResponse {
    match served(facade.as_ref()) {
        Ok(_) => HttpResponse::Ok().json(json!({ "status": "ok" })),
        Err(refusal) => refusal.answer(),
    }
}

/// `POST /jobs`: the body is the harness job spec (with `jobId`); 202 `{"jobId", "state"}`.
/// A repeat for a known `jobId` re-attaches and answers 202 with the run's current state.
#[post("/jobs")]
pub async fn submit(
    req: HttpRequest,
    facade: Option<web::Data<Facade>>,
    gateway: web::Data<Gateway>,
    limit: web::Data<BodyLimit>,
    payload: web::Payload,
) -> HttpResponse {
    let facade = match admit(&req, facade.as_ref(), Role::Dispatcher) {
        Ok(facade) => facade,
        Err(refusal) => return refusal.answer(),
    };
    let body = match read_limited(payload, limit.0).await {
        Ok(body) => body,
        Err(e) => {
            return error(
                e.status(),
                "the request body could not be read or is too large",
            );
        }
    };
    let Ok(Value::Object(spec)) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object: the job spec",
        );
    };
    let job_id = match spec.get("jobId").and_then(Value::as_str).map(JobId::parse) {
        Some(Ok(id)) => id,
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("jobId: {e}")),
        None => return error(StatusCode::BAD_REQUEST, "jobId is required (a string)"),
    };
    match gateway.run(&job_id).await {
        Ok(run) => return HttpResponse::Accepted().json(accepted(&run)),
        Err(ServiceError::RunNotFound(_)) => {}
        Err(e) => return failure(e),
    }
    let kind = spec.get("kind").and_then(Value::as_str).map(str::to_owned);
    let Some(pool) = facade.pool_for(&spec).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "unknown job kind '{}': no facade route matches and facade.defaultPool is empty",
                kind.as_deref().unwrap_or_default()
            ),
        );
    };
    if serde_json::to_vec(&spec).map_or(0, |bytes| bytes.len()) > MAX_JOB_BYTES {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the job spec is larger than {MAX_JOB_BYTES} bytes"),
        );
    }
    let submission = Submission {
        job_id: job_id.clone(),
        kind: kind.filter(|k| !k.is_empty() && k.len() <= 100 && !k.chars().any(char::is_control)),
        job: Some(spec),
        labels: Map::new(),
        deadline_seconds: None,
    };
    match gateway.submit_run(&pool, submission).await {
        Ok((run, _)) => HttpResponse::Accepted().json(accepted(&run)),
        // Posted twice at once with different bodies: the first one is the job.
        Err(ServiceError::JobIdConflict(_)) => match gateway.run(&job_id).await {
            Ok(run) => HttpResponse::Accepted().json(accepted(&run)),
            Err(e) => failure(e),
        },
        Err(e) => failure(e),
    }
}

fn job_id_of(raw: &str) -> Result<JobId, Refusal> {
    JobId::parse(raw).map_err(|_| Refusal(StatusCode::NOT_FOUND, "job not found"))
}

/// `GET /jobs/{id}`: 200 with the job view; 404 `{"error": "job not found"}`.
#[get("/jobs/{id}")]
pub async fn get(
    req: HttpRequest,
    facade: Option<web::Data<Facade>>,
    gateway: web::Data<Gateway>,
    path: web::Path<String>,
) -> HttpResponse {
    if let Err(refusal) = admit(&req, facade.as_ref(), Role::Reader) {
        return refusal.answer();
    }
    let job_id = match job_id_of(&path) {
        Ok(id) => id,
        Err(refusal) => return refusal.answer(),
    };
    match gateway.run(&job_id).await {
        Ok(run) => HttpResponse::Ok().json(job_view(&run)),
        Err(e) => failure(e),
    }
}

/// `DELETE /jobs/{id}`: cancels the run, waits a few seconds for it to settle, answers 200
/// `{"jobId", "state"}` with the state it reached. Idempotent: a finished run answers its state.
#[delete("/jobs/{id}")]
pub async fn cancel(
    req: HttpRequest,
    facade: Option<web::Data<Facade>>,
    gateway: web::Data<Gateway>,
    path: web::Path<String>,
) -> HttpResponse {
    if let Err(refusal) = admit(&req, facade.as_ref(), Role::Dispatcher) {
        return refusal.answer();
    }
    let job_id = match job_id_of(&path) {
        Ok(id) => id,
        Err(refusal) => return refusal.answer(),
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
        return HttpResponse::Ok().json(accepted(&run));
    }
    let deadline = tokio::time::Instant::now() + CANCEL_SETTLE;
    loop {
        match tokio::time::timeout_at(deadline, changes.recv()).await {
            Ok(Ok(change)) if change.run.job_id == job_id && change.run.state.is_final() => {
                return HttpResponse::Ok().json(accepted(&change.run));
            }
            Ok(Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) | Err(_) => break,
        }
    }
    match gateway.run(&job_id).await {
        Ok(run) => HttpResponse::Ok().json(accepted(&run)),
        Err(e) => failure(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facade(routes: Vec<FacadeRoute>, default_pool: &str) -> Facade {
        Facade::from_settings(&FacadeSettings {
            enabled: true,
            default_pool: default_pool.to_owned(),
            routes,
            harness_secret: String::new(),
        })
        .unwrap()
    }

    fn route(kind: Option<&str>, instance_type: Option<&str>, pool: &str) -> FacadeRoute {
        FacadeRoute {
            kind: kind.map(str::to_owned),
            mode: None,
            instance_type: instance_type.map(str::to_owned),
            cloud_provider: None,
            image: None,
            pool: pool.to_owned(),
        }
    }

    fn spec(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
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
        let pool = |v: Value| f.pool_for(&spec(v)).map(|p| p.to_string());
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
    fn a_bad_pool_name_in_the_settings_is_refused_with_its_setting() {
        let err = Facade::from_settings(&FacadeSettings {
            enabled: true,
            default_pool: "local".to_owned(),
            routes: vec![route(None, None, "Not A Pool")],
            harness_secret: String::new(),
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("facade.routes.0.pool"), "{err}");
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
