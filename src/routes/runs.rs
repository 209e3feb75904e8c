//! `/v1/pools/{pool}/runs` and `/v1/runs…`: dispatch, read, list, cancel, history.

use super::auth::{Caller, Role};
use super::body::{parse_json, read_limited};
use super::dto::{EventPage, EventView, RunPage, RunView};
use super::{BodyLimit, parse_id};
use crate::domain::ids::{JobId, PoolName};
use crate::domain::state::RunState;
use crate::error::{ApiError, ProblemBody};
use crate::manifest::Problem;
use crate::service::Gateway;
use crate::service::runs::Submission;
use crate::store::RunFilter;
use actix_web::{HttpResponse, get, post, web};

fn job_id(raw: &str) -> Result<JobId, ApiError> {
    parse_id(raw, "jobId", JobId::parse)
}

/// `POST /v1/pools/{pool}/runs`: 202 when created, 200 for an identical repeat.
#[utoipa::path(
    operation_id = "dispatchRun",
    tag = "runs",
    params(("pool" = String, Path, description = "The pool's name")),
    request_body(content = super::dto::SubmissionBody, description = "The run"),
    responses(
        (status = 202, description = "Accepted: durable before this answer", body = RunView),
        (status = 200, description = "An identical repeat: the existing run", body = RunView),
        (status = 404, description = "No such pool (`pool_not_found`)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The jobId is used by another pool or body (`job_id_conflict`)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "A bad body; every problem is in `errors`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "The pool's queue is full (`pool_saturated`); see `Retry-After`", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[post("/pools/{pool}/runs")]
pub async fn dispatch(
    caller: Caller,
    gateway: web::Data<Gateway>,
    limit: web::Data<BodyLimit>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Dispatcher)?;
    let pool = parse_id(&path, "pool", PoolName::parse)?;
    let body = parse_json(&read_limited(payload, limit.0).await?)?;
    let submission = Submission::parse(&body).map_err(ApiError::validation)?;
    let (run, created) = gateway.submit_run(&pool, submission).await?;
    let view = RunView::from(&run);
    Ok(if created {
        HttpResponse::Accepted().json(view)
    } else {
        HttpResponse::Ok().json(view)
    })
}

/// `GET /v1/runs/{jobId}`
#[utoipa::path(
    operation_id = "getRun",
    tag = "runs",
    params(("job_id" = String, Path, description = "The run's jobId")),
    responses(
        (status = 200, description = "The run", body = RunView),
        (status = 404, description = "No such run (`run_not_found`)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Not a jobId", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[get("/runs/{job_id}")]
pub async fn get(
    caller: Caller,
    gateway: web::Data<Gateway>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Reader)?;
    let run = gateway.run(&job_id(&path)?).await?;
    let place = gateway.queue_place(&run).await;
    Ok(HttpResponse::Ok().json(RunView::from(&run).with_queue_position(place)))
}

/// Query of `GET /v1/runs`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this pool's runs.
    pool: Option<String>,
    /// Only runs in this state.
    #[param(value_type = Option<RunState>)]
    state: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// The `next` cursor of the page before.
    after: Option<String>,
}

/// `GET /v1/runs?pool=&state=&limit=&after=`: newest first.
#[utoipa::path(
    operation_id = "listRuns",
    tag = "runs",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of runs, newest first", body = RunPage),
        (status = 422, description = "A bad query", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[get("/runs")]
pub async fn list(
    caller: Caller,
    gateway: web::Data<Gateway>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Reader)?;
    let query = query.into_inner();
    let mut problems = Vec::new();
    let pool = match query.pool.as_deref() {
        Some(raw) => match PoolName::parse(raw) {
            Ok(pool) => Some(pool),
            Err(e) => {
                problems.push(Problem {
                    path: "pool".into(),
                    message: e.to_string(),
                });
                None
            }
        },
        None => None,
    };
    let state = match query.state.as_deref() {
        Some(raw) => match raw.parse::<RunState>() {
            Ok(state) => Some(state),
            Err(e) => {
                problems.push(Problem {
                    path: "state".into(),
                    message: e.to_string(),
                });
                None
            }
        },
        None => None,
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        problems.push(Problem {
            path: "limit".into(),
            message: "must be from 1 to 1000".into(),
        });
    }
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }
    let page = gateway
        .list_runs(RunFilter {
            pool,
            state,
            limit,
            after: query.after,
        })
        .await?;
    let runs: Vec<RunView> = page.runs.iter().map(RunView::from).collect();
    Ok(HttpResponse::Ok().json(RunPage {
        runs,
        next: page.next,
    }))
}

/// `POST /v1/runs/{jobId}/cancel`: 202 with the run; 409 when finished.
#[utoipa::path(
    operation_id = "cancelRun",
    tag = "runs",
    params(("job_id" = String, Path, description = "The run's jobId")),
    responses(
        (status = 202, description = "Cancelled (queued) or cancelling (in flight)", body = RunView),
        (status = 404, description = "No such run (`run_not_found`)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The run is finished (`run_finished`)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Not a jobId", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[post("/runs/{job_id}/cancel")]
pub async fn cancel(
    caller: Caller,
    gateway: web::Data<Gateway>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Dispatcher)?;
    let run = gateway.cancel_run(&job_id(&path)?).await?;
    Ok(HttpResponse::Accepted().json(RunView::from(&run)))
}

/// Default page size of a run's history.
const DEFAULT_EVENTS_LIMIT: u32 = 100;
/// Largest page size of a run's history.
const MAX_EVENTS_LIMIT: u32 = 1000;

/// Query of `GET /v1/runs/{jobId}/events`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// The `seq` after which the page starts (the `next` of the page before).
    after: Option<i64>,
}

/// `GET /v1/runs/{jobId}/events?limit=&after=`: the persisted history, oldest first, a page at
/// a time (a run that retries for days has a long one).
#[utoipa::path(
    operation_id = "runEvents",
    tag = "runs",
    params(("job_id" = String, Path, description = "The run's jobId"), HistoryQuery),
    responses(
        (status = 200, description = "A page of the run's history, oldest first", body = EventPage),
        (status = 404, description = "No such run (`run_not_found`)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "A bad jobId or query", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[get("/runs/{job_id}/events")]
pub async fn history(
    caller: Caller,
    gateway: web::Data<Gateway>,
    path: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Reader)?;
    let job_id = job_id(&path)?;
    let mut problems = Vec::new();
    let limit = query.limit.unwrap_or(DEFAULT_EVENTS_LIMIT);
    if !(1..=MAX_EVENTS_LIMIT).contains(&limit) {
        problems.push(Problem {
            path: "limit".into(),
            message: format!("must be from 1 to {MAX_EVENTS_LIMIT}"),
        });
    }
    let after = query.after.unwrap_or(0);
    if after < 0 {
        problems.push(Problem {
            path: "after".into(),
            message: "must be the seq of an event (0 or more)".into(),
        });
    }
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }
    let page = gateway.run_events(&job_id, after, limit).await?;
    let views: Vec<EventView> = page.events.iter().map(EventView::from).collect();
    Ok(HttpResponse::Ok().json(EventPage {
        events: views,
        next: page.next,
    }))
}
