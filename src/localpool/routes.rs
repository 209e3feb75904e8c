//! The local pool's HTTP surface: `/health` and `/jobs`, shaped like a real scheduler's API.

use super::registry::{Admission, JobId, JobState, Progress, Registry};
use super::runner::{self, Launch};
use crate::crypto::constant_time_eq;
use actix_web::http::StatusCode;
use actix_web::http::header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;

/// The largest request body accepted, in bytes: a job of up to 64 MiB (the most
/// `facade.maxJobBytes` allows) in its dispatch body, with room to spare.
const MAX_BODY_BYTES: usize = 72 * 1024 * 1024;
/// The longest job kind accepted, in bytes (it is passed on in an environment variable).
const MAX_KIND_BYTES: usize = 1024;
/// How long a DELETE waits for a killed job's process to be reaped before answering; below the
/// 5 s call timeout of `manifests/local.yaml`.
const CANCEL_WAIT: Duration = Duration::from_secs(3);

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) registry: Arc<Registry>,
    /// The program and arguments run for each job.
    pub(crate) command: Arc<[String]>,
    /// The bearer token required on every route but `/health`, if any.
    pub(crate) token: Option<String>,
    /// The optional job-spec fields the command parses, declared like a harness's.
    pub(crate) capabilities: Arc<[String]>,
    /// The runtime the pool was started on. Job tasks run there rather than on an HTTP worker's
    /// runtime, so they outlive any one worker.
    pub(crate) runtime: Handle,
}

/// The whole route table.
pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/health")
                .route(web::get().to(health))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/jobs")
                .route(web::post().to(create_job))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/jobs/{id}")
                .route(web::get().to(get_job))
                .route(web::delete().to(delete_job))
                .default_service(web::to(method_not_allowed)),
        )
        .default_service(web::to(not_found));
}

/// A job as `GET /jobs/{id}` shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct JobView<'a> {
    id: &'a str,
    state: JobState,
    exit_code: Option<i32>,
    progress: Option<Progress>,
    result: Option<Value>,
    error: Option<String>,
    started_at: i64,
    finished_at: Option<i64>,
    heartbeat_at: i64,
}

/// A parsed `POST /jobs` body.
#[derive(Debug)]
struct CreateJobRequest {
    id: JobId,
    kind: Option<String>,
    job: Map<String, Value>,
}

impl CreateJobRequest {
    /// Parses `{"jobId", "kind"?, "job"?}`; other fields are ignored. An empty kind is no kind.
    fn parse(body: &[u8]) -> Result<CreateJobRequest, String> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|error| format!("the body is not valid JSON: {error}"))?;
        let Value::Object(mut body) = value else {
            return Err("the body must be a JSON object".into());
        };
        let id = match body.get("jobId") {
            Some(Value::String(id)) => JobId::parse(id).map_err(str::to_owned)?,
            Some(_) => return Err("jobId must be a string".into()),
            None => return Err("jobId is required".into()),
        };
        let kind = match body.remove("kind") {
            None | Some(Value::Null) => None,
            Some(Value::String(kind)) if kind.is_empty() => None,
            Some(Value::String(kind)) => {
                if kind.len() > MAX_KIND_BYTES || kind.contains('\0') {
                    return Err(format!(
                        "kind must be at most {MAX_KIND_BYTES} bytes without NUL characters"
                    ));
                }
                Some(kind)
            }
            Some(_) => return Err("kind must be a string or null".into()),
        };
        let job = match body.remove("job") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(job)) => job,
            Some(_) => return Err("job must be an object or null".into()),
        };
        Ok(CreateJobRequest { id, kind, job })
    }
}

async fn health(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok", "capabilities": &*state.capabilities }))
}

async fn create_job(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(refusal) = authorize(&request, &state) {
        return refusal.into_response();
    }
    let body = match read_body(payload).await {
        Ok(body) => body,
        Err(refusal) => return refusal.into_response(),
    };
    let parsed = match CreateJobRequest::parse(&body) {
        Ok(parsed) => parsed,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let job = match state.registry.admit(parsed.id.clone(), runner::now_ms()) {
        Admission::Admitted(job) => job,
        Admission::Exists(existing) => {
            return HttpResponse::Conflict().json(json!({
                "error": "job already exists",
                "id": parsed.id.as_str(),
                "state": existing,
            }));
        }
        Admission::Full => {
            tracing::warn!(job.id = %parsed.id, "local pool is full; job {} refused", parsed.id);
            return HttpResponse::TooManyRequests()
                .insert_header((RETRY_AFTER, "1"))
                .json(json!({ "error": "local pool is full" }));
        }
    };
    let mut input = Value::Object(parsed.job).to_string().into_bytes();
    input.push(b'\n');
    let started = runner::launch(
        &state.runtime,
        Launch {
            registry: Arc::clone(&state.registry),
            job: Arc::clone(&job),
            command: Arc::clone(&state.command),
            kind: parsed.kind,
            input,
        },
    );
    // Fires once the process is started or has failed to start; an error only means the
    // runtime is shutting down, and the state then says what is known.
    let _ = started.await;
    HttpResponse::Created().json(json!({
        "id": job.id.as_str(),
        "state": job.snapshot().state,
        "capabilities": &*state.capabilities,
    }))
}

async fn get_job(
    request: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(refusal) = authorize(&request, &state) {
        return refusal.into_response();
    }
    let Some(job) = state.registry.get(&id) else {
        return job_not_found();
    };
    let status = job.snapshot();
    HttpResponse::Ok().json(JobView {
        id: job.id.as_str(),
        state: status.state,
        exit_code: status.exit_code,
        progress: status.progress,
        result: status.result,
        error: status.error,
        started_at: status.started_at,
        finished_at: status.finished_at,
        heartbeat_at: status.heartbeat_at,
    })
}

async fn delete_job(
    request: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(refusal) = authorize(&request, &state) {
        return refusal.into_response();
    }
    let Some(job) = state.registry.remove(&id) else {
        return job_not_found();
    };
    let mut final_state = job.snapshot().state;
    if !final_state.is_final() {
        job.request_cancel();
        if !job.wait_finished(CANCEL_WAIT).await {
            tracing::warn!(
                job.id = %job.id,
                "local job {} was killed but its process was not reaped in time",
                job.id
            );
        }
        final_state = match job.snapshot().state {
            // Killed, even if not reaped yet.
            JobState::Running => JobState::Cancelled,
            settled => settled,
        };
    }
    tracing::debug!(job.id = %job.id, state = ?final_state, "local job {} released", job.id);
    HttpResponse::Ok().json(json!({ "id": job.id.as_str(), "state": final_state }))
}

async fn not_found(request: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Err(refusal) = authorize(&request, &state) {
        return refusal.into_response();
    }
    error(StatusCode::NOT_FOUND, "not found")
}

async fn method_not_allowed() -> HttpResponse {
    error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

fn job_not_found() -> HttpResponse {
    error(StatusCode::NOT_FOUND, "job not found")
}

fn error(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message }))
}

/// A request turned away before its handler's work: the status and the error message.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn into_response(self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((WWW_AUTHENTICATE, "Bearer"));
        }
        response.json(json!({ "error": self.message }))
    }
}

/// Checks the bearer token, when one is configured, in constant time.
fn authorize(request: &HttpRequest, state: &AppState) -> Result<(), Refusal> {
    let Some(expected) = state.token.as_deref() else {
        return Ok(());
    };
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token);
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(()),
        _ => Err(Refusal {
            status: StatusCode::UNAUTHORIZED,
            message: "unauthorized".into(),
        }),
    }
}

/// The token of an `Authorization: Bearer <token>` value (the scheme is case-insensitive).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// Reads the whole body, up to [`MAX_BODY_BYTES`].
async fn read_body(mut payload: web::Payload) -> Result<Vec<u8>, Refusal> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| Refusal {
            status: StatusCode::BAD_REQUEST,
            message: "the request body could not be read".into(),
        })?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(Refusal {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_request_needs_a_valid_job_id() {
        for (body, expected) in [
            (r#"{"kind": "x"}"#, "jobId is required"),
            (r#"{"jobId": 5}"#, "jobId must be a string"),
            (r#"{"jobId": "a b"}"#, "jobId must be"),
            (r#"[1]"#, "must be a JSON object"),
            (r#"{"jobId": "#, "not valid JSON"),
        ] {
            let problem = CreateJobRequest::parse(body.as_bytes()).unwrap_err();
            assert!(problem.contains(expected), "{body}: {problem}");
        }
    }

    #[test]
    fn an_empty_or_null_kind_is_no_kind_and_a_null_job_is_empty() {
        for body in [
            r#"{"jobId": "a", "kind": "", "job": null}"#,
            r#"{"jobId": "a", "kind": null}"#,
            r#"{"jobId": "a"}"#,
        ] {
            let parsed = CreateJobRequest::parse(body.as_bytes()).unwrap();
            assert_eq!(parsed.kind, None, "{body}");
            assert!(parsed.job.is_empty(), "{body}");
        }
    }

    #[test]
    fn a_job_that_is_not_an_object_is_refused() {
        let problem = CreateJobRequest::parse(br#"{"jobId": "a", "job": [1]}"#).unwrap_err();
        assert!(problem.contains("job must be an object"), "{problem}");
        let problem = CreateJobRequest::parse(br#"{"jobId": "a", "kind": 3}"#).unwrap_err();
        assert!(problem.contains("kind must be a string"), "{problem}");
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer  "), None);
    }
}
