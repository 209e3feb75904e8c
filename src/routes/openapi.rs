//! `GET /openapi.json`: the OpenAPI 3.1 document of the API, generated from the code.
//!
//! The paths come from the route table itself ([`super::routes`], through `utoipa-actix-web`):
//! each handler's `#[utoipa::path]` describes its parameters, body and answers, and the shapes
//! are the `ToSchema` types the handlers serialise. What every route of a family shares is added
//! here once: the security requirement, and the 401/403/413/500/503 answers, whose body is the
//! problem+json component `Problem` under `/v1` and the harness's `HarnessError` on the facade.

use crate::error::{ApiError, ProblemBody};
use crate::manifest::Problem;
use actix_web::{HttpResponse, get};
use std::sync::OnceLock;
use utoipa::OpenApi;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa_actix_web::AppExt;

/// The security scheme of the API's bearer tokens.
pub const BEARER: &str = "bearer";
/// The security scheme of the facade's shared secret header.
pub const HARNESS_SECRET: &str = "harnessSecret";

/// The document's fixed parts; the paths are collected from the route table.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "cattery",
        description = "A runner-pool gateway: drives any scheduler's HTTP API through a declarative manifest. \
                       `/v1` is cattery's own API (bearer tokens with a role: admin, dispatcher, reader; \
                       errors are `application/problem+json`); `/health` and `/jobs` are the runner-protocol \
                       facade, which speaks Cat-Factory's executor-harness protocol and its error shape.",
    ),
    components(schemas(ProblemBody, Problem)),
    tags(
        (name = "pools", description = "Registered schedulers: a manifest and its secrets"),
        (name = "runs", description = "Jobs submitted to pools, their views, history and change stream"),
        (name = "facade", description = "The executor-harness job protocol, served over cattery runs"),
        (name = "operations", description = "Liveness, readiness and this document"),
    )
)]
struct ApiDoc;

/// Builds the document: the fixed parts, the paths of the route table, then what each family
/// of routes shares.
pub fn build() -> utoipa::openapi::OpenApi {
    let (_, collected) = actix_web::App::new()
        .into_utoipa_app()
        .configure(super::routes)
        .split_for_parts();
    let mut doc = ApiDoc::openapi();
    doc.merge(collected);
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API token (`Authorization: Bearer <token>`); its role decides what it may do",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        HARNESS_SECRET,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "x-harness-secret",
            "The facade's shared secret (`facade.harnessSecret`)",
        ))),
    );
    for (path, item) in &mut doc.paths.paths {
        let family = Family::of(path);
        for operation in operations(item) {
            family.complete(operation);
        }
    }
    doc
}

/// Every (method, path) the route table serves, as the document lists them (methods in upper
/// case, paths in the document's `{param}` form).
pub fn served() -> Vec<(String, String)> {
    let doc = build();
    let mut out = Vec::new();
    for (path, item) in doc.paths.paths {
        for (method, operation) in [
            ("GET", item.get),
            ("PUT", item.put),
            ("POST", item.post),
            ("DELETE", item.delete),
            ("PATCH", item.patch),
            ("HEAD", item.head),
            ("OPTIONS", item.options),
            ("TRACE", item.trace),
        ] {
            if operation.is_some() {
                out.push((method.to_owned(), path.clone()));
            }
        }
    }
    out
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
        item.head.as_mut(),
        item.options.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// The families of routes, by what their answers share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// `/v1/…`: bearer tokens, problem+json errors.
    Api,
    /// The facade's gated routes: a bearer token or the harness secret, harness errors.
    Facade,
    /// Never gated (`/healthz`, `/readyz`, `/health`, this document).
    Open,
}

impl Family {
    fn of(path: &str) -> Family {
        if path.starts_with("/v1/") {
            Family::Api
        } else if path == "/jobs" || path.starts_with("/jobs/") {
            Family::Facade
        } else {
            Family::Open
        }
    }

    /// Adds the family's security requirement and shared error answers (those the handler's
    /// own `#[utoipa::path]` does not describe).
    fn complete(self, operation: &mut Operation) {
        let (errors, schema, media): (&[(&str, &str)], &str, &str) = match self {
            Family::Open => return,
            Family::Api => (
                &[
                    (
                        "401",
                        "No token, or a token that is not accepted (`unauthorized`)",
                    ),
                    ("403", "The token's role may not do this (`forbidden`)"),
                    (
                        "500",
                        "An internal error: an opaque message and a `requestId` to find the cause in the log",
                    ),
                    (
                        "503",
                        "Shutting down (`shutting_down`) or the supervisor is not answering (`unavailable`); see `Retry-After`",
                    ),
                ],
                "Problem",
                "application/problem+json",
            ),
            Family::Facade => (
                &[
                    (
                        "401",
                        "Neither a bearer token nor the harness secret is accepted",
                    ),
                    ("403", "The token's role may not do this"),
                    (
                        "500",
                        "An internal error, with a `requestId` to find it in the log",
                    ),
                ],
                "HarnessError",
                "application/json",
            ),
        };
        let body_errors: &[(&str, &str)] = match self {
            Family::Api if operation.request_body.is_some() => &[
                (
                    "413",
                    "The body is larger than `server.maxBodyBytes` (`payload_too_large`)",
                ),
                (
                    "422",
                    "The body is not JSON (`malformed_json`) or not what the route takes (`validation_failed`)",
                ),
            ],
            _ => &[],
        };
        let responses = &mut operation.responses.responses;
        for (status, description) in errors.iter().chain(body_errors) {
            responses.entry((*status).to_owned()).or_insert_with(|| {
                ResponseBuilder::new()
                    .description(*description)
                    .content(
                        media,
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name(schema)))
                            .build(),
                    )
                    .build()
                    .into()
            });
        }
        let requirements = match self {
            Family::Facade => vec![
                SecurityRequirement::new(BEARER, Vec::<String>::new()),
                SecurityRequirement::new(HARNESS_SECRET, Vec::<String>::new()),
            ],
            _ => vec![SecurityRequirement::new(BEARER, Vec::<String>::new())],
        };
        operation.security = Some(requirements);
    }
}

/// The document as served, built once.
fn rendered() -> &'static Result<String, String> {
    static DOCUMENT: OnceLock<Result<String, String>> = OnceLock::new();
    DOCUMENT.get_or_init(|| build().to_json().map_err(|e| e.to_string()))
}

/// `GET /openapi.json`: this API's OpenAPI 3.1 document. Never gated.
#[utoipa::path(
    operation_id = "openapi",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object),
    )
)]
#[get("/openapi.json")]
pub async fn document() -> Result<HttpResponse, ApiError> {
    match rendered() {
        Ok(json) => Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body(json.clone())),
        Err(e) => Err(ApiError::internal(anyhow::anyhow!(
            "cannot render the OpenAPI document: {e}"
        ))),
    }
}
