//! The one HTTP error type: every failure becomes an `application/problem+json` answer here.
//!
//! [`ApiError`] is the only type that implements `ResponseError`. Internal causes are logged
//! once, here, with a request id that the opaque 500 answer repeats; they never reach the client.

use crate::manifest::Problem;
use crate::service::ServiceError;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// The problem+json envelope (SPEC §2): the body of every 4xx and 5xx answer of the API.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Problem)]
pub struct ProblemBody {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened, for this request.
    pub detail: String,
    /// Stable snake_case code.
    pub code: String,
    /// Per-field problems.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<Problem>>,
    /// The request id of an internal error (to find it in the log).
    #[serde(rename = "requestId", skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// An HTTP failure.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: String,
    errors: Option<Vec<Problem>>,
    retry_after: Option<u64>,
    internal: Option<anyhow::Error>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.detail)
    }
}

impl ApiError {
    /// A failure with a status, a stable code and a message.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            errors: None,
            retry_after: None,
            internal: None,
        }
    }

    /// 422 `validation_failed` with every problem.
    pub fn validation(problems: Vec<Problem>) -> Self {
        let detail = match problems.len() {
            1 => "1 problem was found; see errors".to_owned(),
            n => format!("{n} problems were found; see errors"),
        };
        Self {
            errors: Some(problems),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                detail,
            )
        }
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(detail: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// 403 `forbidden`.
    pub fn forbidden(detail: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 500 with an opaque message; the cause is logged once when the answer is built.
    pub fn internal(cause: anyhow::Error) -> Self {
        Self {
            internal: Some(cause),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "an internal error occurred; the request id identifies it in the log",
            )
        }
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        let detail = error.to_string();
        match error {
            ServiceError::Validation(problems) => ApiError::validation(problems),
            ServiceError::MissingSecrets(keys) => {
                let problems = keys
                    .iter()
                    .map(|key| Problem {
                        path: format!("secrets.{key}"),
                        message: "the manifest references this secret; give it a value".to_owned(),
                    })
                    .collect();
                Self {
                    errors: Some(problems),
                    ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "missing_secrets", detail)
                }
            }
            ServiceError::PoolNotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "pool_not_found", detail)
            }
            ServiceError::RunNotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "run_not_found", detail)
            }
            ServiceError::JobIdConflict(_) => {
                Self::new(StatusCode::CONFLICT, "job_id_conflict", detail)
            }
            ServiceError::PoolBusy(_) => Self::new(StatusCode::CONFLICT, "pool_has_runs", detail),
            ServiceError::RunFinished(_) => Self::new(StatusCode::CONFLICT, "run_finished", detail),
            ServiceError::Saturated { .. } => Self {
                retry_after: Some(5),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "pool_saturated", detail)
            },
            ServiceError::ShuttingDown => Self {
                retry_after: Some(5),
                ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", detail)
            },
            ServiceError::Unavailable => Self {
                retry_after: Some(1),
                ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
            },
            ServiceError::Internal(cause) => ApiError::internal(cause),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let request_id = self.internal.as_ref().map(|cause| {
            let id = uuid::Uuid::new_v4().to_string();
            tracing::error!(request_id = %id, error = ?cause, "internal error");
            id
        });
        let body = ProblemBody {
            kind: format!(
                "https://cattery.dev/problems/{}",
                self.code.replace('_', "-")
            ),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.to_owned(),
            errors: self.errors.clone(),
            request_id,
        };
        let mut response = HttpResponse::build(self.status);
        response.content_type("application/problem+json");
        if let Some(seconds) = self.retry_after {
            response.insert_header(("Retry-After", seconds.to_string()));
        }
        response.body(serde_json::to_string(&body).unwrap_or_default())
    }
}
