//! The HTTP surface: the whole route table in one place.

pub mod auth;
pub mod body;
pub mod dto;
pub mod events;
pub mod facade;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod pools;
pub mod runs;
pub mod ui;

use crate::error::ApiError;
use actix_web::http::StatusCode;
use actix_web::web;
use utoipa_actix_web::scope;
use utoipa_actix_web::service_config::ServiceConfig;

/// Request limits shared by the handlers.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// Registers every route: the API of [`routes`], and the pages and text outside the API
/// document (the dashboard's HTML for browsers, `GET /metrics` for Prometheus).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(ui::scope()).service(metrics::scrape);
    routes(&mut ServiceConfig::new(cfg));
}

/// The route table. Every handler carries `#[utoipa::path]` (registering one without it does
/// not compile), so the OpenAPI document of `GET /openapi.json` is collected from exactly what
/// this table serves; [`openapi::served`] lists it.
///
/// The dashboard (`/ui`) and `GET /metrics` are served beside it by [`configure`]: they are not
/// part of the JSON API the document describes.
pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(ops::healthz)
        .service(ops::readyz)
        .service(openapi::document)
        .service(facade::health)
        .service(facade::submit)
        .service(facade::get)
        .service(facade::cancel)
        .service(
            scope("/v1")
                .service(pools::list)
                .service(pools::get)
                .service(pools::put)
                .service(pools::put_secrets)
                .service(pools::delete)
                .service(pools::probe)
                .service(runs::dispatch)
                .service(runs::list)
                .service(runs::get)
                .service(runs::cancel)
                .service(runs::history)
                .service(events::stream),
        )
        .default_service(web::to(not_found));
}

/// A path no route serves: the facade's gated harness answer outside `/v1` (when the facade is
/// served), else the API's 404.
async fn not_found(req: actix_web::HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    if let Some(answer) = facade::unknown_route(&req) {
        return Ok(answer);
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route",
    ))
}

/// Parses a path segment into a typed id, or answers 422 naming the segment.
pub fn parse_id<T>(
    value: &str,
    field: &str,
    parse: impl Fn(&str) -> Result<T, crate::domain::ids::InvalidId>,
) -> Result<T, ApiError> {
    parse(value).map_err(|e| {
        ApiError::validation(vec![crate::manifest::Problem {
            path: field.to_owned(),
            message: e.to_string(),
        }])
    })
}
