//! `/v1/pools…`: register or replace, read, list, rotate secrets, delete, probe.

use super::auth::{Caller, Role};
use super::body::{parse_json, read_limited};
use super::dto::{PoolList, PoolView, ProbeReport};
use super::{BodyLimit, parse_id};
use crate::domain::ids::PoolName;
use crate::error::{ApiError, ProblemBody};
use crate::manifest::Problem;
use crate::service::pools::ManifestInput;
use crate::service::probe::ProbeInput;
use crate::service::{Gateway, ServiceError};
use actix_web::{HttpResponse, delete, get, post, put, web};
use serde_json::Value;
use std::collections::BTreeMap;

fn pool_name(raw: &str) -> Result<PoolName, ApiError> {
    parse_id(raw, "name", PoolName::parse)
}

fn problem(path: &str, message: &str) -> Problem {
    Problem {
        path: path.to_owned(),
        message: message.to_owned(),
    }
}

/// Reads `secrets` as a map of strings (or absent), reporting every bad entry.
fn secrets_of(body: &Value, problems: &mut Vec<Problem>) -> Option<BTreeMap<String, String>> {
    match body.get("secrets") {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => {
            let mut out = BTreeMap::new();
            for (key, value) in map {
                match value.as_str() {
                    Some(text) => {
                        out.insert(key.clone(), text.to_owned());
                    }
                    None => problems.push(problem(
                        &format!("secrets.{key}"),
                        "secret values must be strings",
                    )),
                }
            }
            Some(out)
        }
        Some(_) => {
            problems.push(problem("secrets", "must be an object of strings"));
            None
        }
    }
}

/// The manifest inside Cat-Factory's `config` union; only the `manifest` kind is served.
fn config_manifest<'a>(
    config: Option<&'a Value>,
    problems: &mut Vec<Problem>,
) -> Option<&'a Value> {
    let Some(Value::Object(config)) = config else {
        problems.push(problem(
            "config",
            "must be an object {\"kind\": \"manifest\", \"manifest\": …}",
        ));
        return None;
    };
    match config.get("kind").and_then(Value::as_str).map(str::trim) {
        Some("manifest") => config.get("manifest"),
        Some(kind @ ("kubernetes" | "eks")) => {
            problems.push(problem(
                "config.kind",
                &format!(
                    "the native {kind} backend is not served by cattery; register a manifest \
                     (for example a cattery/v1 Kubernetes Job manifest) with kind \"manifest\""
                ),
            ));
            None
        }
        Some(kind) => {
            problems.push(problem(
                "config.kind",
                &format!("unknown runner backend kind {kind:?}; cattery serves kind \"manifest\""),
            ));
            None
        }
        None => {
            problems.push(problem("config.kind", "is required; use \"manifest\""));
            None
        }
    }
}

/// A pool body as `PUT /v1/pools/{name}` and the probe read it.
struct PoolBody {
    manifest: Option<ManifestInput>,
    secrets: Option<BTreeMap<String, String>>,
    /// Sent in Cat-Factory's envelope: problems are reported under `config.manifest`.
    envelope: bool,
}

/// Reads `{"manifest", "secrets"}` or Cat-Factory's `{"config": {"kind": "manifest",
/// "manifest"}, "secrets"}`, reporting every problem; the manifest may be left out only when it
/// is not `required`.
fn pool_body(body: &Value, required: bool) -> Result<PoolBody, ApiError> {
    let mut problems = Vec::new();
    let Some(object) = body.as_object() else {
        return Err(ApiError::validation(vec![problem(
            "",
            "the body must be a JSON object",
        )]));
    };
    for key in object.keys() {
        if !matches!(key.as_str(), "manifest" | "secrets" | "config") {
            problems.push(problem(
                key,
                "unknown field; expected manifest and secrets (or Cat-Factory's config and secrets)",
            ));
        }
    }
    // Cat-Factory's registration envelope: {"config": {"kind": "manifest", "manifest": …}, "secrets": …}.
    let envelope = object.contains_key("config");
    let (manifest_value, manifest_path) = if envelope {
        if object.contains_key("manifest") {
            problems.push(problem(
                "manifest",
                "send either manifest or config.manifest, not both",
            ));
        }
        (
            config_manifest(object.get("config"), &mut problems),
            "config.manifest",
        )
    } else {
        (object.get("manifest"), "manifest")
    };
    let manifest = match manifest_value {
        Some(Value::Object(_)) => manifest_value.cloned().map(ManifestInput::Document),
        Some(Value::String(text)) => Some(ManifestInput::Text(text.clone())),
        Some(_) => {
            problems.push(problem(
                manifest_path,
                "must be an object, or YAML or JSON text",
            ));
            None
        }
        None => {
            if required && (!envelope || problems.is_empty()) {
                problems.push(problem(manifest_path, "is required"));
            }
            None
        }
    };
    let secrets = secrets_of(body, &mut problems);
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }
    Ok(PoolBody {
        manifest,
        secrets,
        envelope,
    })
}

/// The problems of a manifest sent in Cat-Factory's envelope, reported where the caller wrote
/// them: under `config.manifest`.
fn in_envelope(found: Vec<Problem>) -> ApiError {
    ApiError::validation(
        found
            .into_iter()
            .map(|p| Problem {
                path: match p.path.strip_prefix("manifest") {
                    Some(rest) => format!("config.manifest{rest}"),
                    None => p.path,
                },
                message: p.message,
            })
            .collect(),
    )
}

/// `PUT /v1/pools/{name}`: register (201) or replace (200) a pool.
///
/// The body is `{"manifest", "secrets"}`, or Cat-Factory's registration shape
/// `{"config": {"kind": "manifest", "manifest"}, "secrets"}`.
#[utoipa::path(
    operation_id = "putPool",
    tag = "pools",
    params(("name" = String, Path, description = "The pool's name: `^[a-z0-9][a-z0-9-]{0,62}$`")),
    request_body(content = super::dto::PoolBody, description = "The manifest and its secret bundle"),
    responses(
        (status = 201, description = "Registered", body = PoolView),
        (status = 200, description = "Replaced", body = PoolView),
        (status = 422, description = "An invalid manifest (`validation_failed`, every problem with its path), missing secrets (`missing_secrets`) or malformed JSON", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[put("/pools/{name}")]
pub async fn put(
    caller: Caller,
    gateway: web::Data<Gateway>,
    limit: web::Data<BodyLimit>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let name = pool_name(&path)?;
    let body = parse_json(&read_limited(payload, limit.0).await?)?;
    let PoolBody {
        manifest,
        secrets,
        envelope,
    } = pool_body(&body, true)?;
    let Some(manifest) = manifest else {
        return Err(ApiError::validation(vec![problem(
            "manifest",
            "is required",
        )]));
    };
    let registered = gateway.register_pool(name, manifest, secrets).await;
    let (record, created) = match registered {
        Err(ServiceError::Validation(found)) if envelope => return Err(in_envelope(found)),
        other => other?,
    };
    let view = PoolView::from(&gateway.pool_summary(record).await?);
    Ok(if created {
        HttpResponse::Created().json(view)
    } else {
        HttpResponse::Ok().json(view)
    })
}

/// `POST /v1/pools/{name}/probe`: checks the pool's scheduler without creating a job (SPEC
/// §2.1). The optional body is `PUT`'s, to try a manifest or secrets before saving them; what it
/// leaves out is the stored pool's. 200 with the report, whatever the scheduler answered.
#[utoipa::path(
    operation_id = "probePool",
    tag = "pools",
    params(("name" = String, Path, description = "The pool's name")),
    request_body(content = Option<super::dto::PoolBody>, description = "Optional: a manifest and/or secrets to try before saving them; an empty body probes the stored pool"),
    responses(
        (status = 200, description = "The probe's report, whatever the scheduler answered", body = ProbeReport),
        (status = 404, description = "The pool is not stored and the body does not give what is needed (`pool_not_found`)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "An invalid inline manifest or secrets, as `PUT` reports them", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[post("/pools/{name}/probe")]
pub async fn probe(
    caller: Caller,
    gateway: web::Data<Gateway>,
    limit: web::Data<BodyLimit>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let name = pool_name(&path)?;
    let raw = read_limited(payload, limit.0).await?;
    let (input, envelope) = if raw.iter().all(u8::is_ascii_whitespace) {
        (ProbeInput::default(), false)
    } else {
        let body = pool_body(&parse_json(&raw)?, false)?;
        let input = ProbeInput {
            manifest: body.manifest,
            secrets: body.secrets,
        };
        (input, body.envelope)
    };
    let probe = match gateway.probe_pool(&name, input).await {
        Err(ServiceError::Validation(found)) if envelope => return Err(in_envelope(found)),
        other => other?,
    };
    Ok(HttpResponse::Ok().json(ProbeReport::new(&name, &probe)))
}

/// `PUT /v1/pools/{name}/secrets`: replace the whole secret bundle.
#[utoipa::path(
    operation_id = "putPoolSecrets",
    tag = "pools",
    params(("name" = String, Path, description = "The pool's name")),
    request_body(content = super::dto::SecretsBody, description = "The whole secret bundle"),
    responses(
        (status = 200, description = "Replaced", body = PoolView),
        (status = 404, description = "No such pool (`pool_not_found`)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "A secret the manifest references is missing (`missing_secrets`), or a bad body", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[put("/pools/{name}/secrets")]
pub async fn put_secrets(
    caller: Caller,
    gateway: web::Data<Gateway>,
    limit: web::Data<BodyLimit>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let name = pool_name(&path)?;
    let body = parse_json(&read_limited(payload, limit.0).await?)?;
    let mut problems = Vec::new();
    if let Some(object) = body.as_object() {
        for key in object.keys().filter(|k| *k != "secrets") {
            problems.push(problem(key, "unknown field; expected secrets"));
        }
    } else {
        problems.push(problem("", "the body must be a JSON object"));
    }
    let secrets = secrets_of(&body, &mut problems);
    let Some(secrets) = secrets.filter(|_| problems.is_empty()) else {
        if problems.is_empty() {
            problems.push(problem("secrets", "is required"));
        }
        return Err(ApiError::validation(problems));
    };
    let record = gateway.set_secrets(&name, secrets).await?;
    Ok(HttpResponse::Ok().json(PoolView::from(&gateway.pool_summary(record).await?)))
}

/// `GET /v1/pools`
#[utoipa::path(
    operation_id = "listPools",
    tag = "pools",
    responses((status = 200, description = "Every registered pool", body = PoolList))
)]
#[get("/pools")]
pub async fn list(caller: Caller, gateway: web::Data<Gateway>) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Reader)?;
    let pools: Vec<PoolView> = gateway
        .list_pools()
        .await?
        .iter()
        .map(PoolView::from)
        .collect();
    Ok(HttpResponse::Ok().json(PoolList { pools }))
}

/// `GET /v1/pools/{name}`
#[utoipa::path(
    operation_id = "getPool",
    tag = "pools",
    params(("name" = String, Path, description = "The pool's name")),
    responses(
        (status = 200, description = "The pool (never its secret values)", body = PoolView),
        (status = 404, description = "No such pool (`pool_not_found`)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Not a pool name", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[get("/pools/{name}")]
pub async fn get(
    caller: Caller,
    gateway: web::Data<Gateway>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Reader)?;
    let name = pool_name(&path)?;
    let record = gateway.pool(&name).await?;
    Ok(HttpResponse::Ok().json(PoolView::from(&gateway.pool_summary(record).await?)))
}

/// Query of `DELETE /v1/pools/{name}`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Cancel the pool's unfinished runs first, instead of answering 409.
    force: Option<bool>,
}

/// `DELETE /v1/pools/{name}`: 204; 409 with unfinished runs unless `?force=true`.
#[utoipa::path(
    operation_id = "deletePool",
    tag = "pools",
    params(("name" = String, Path, description = "The pool's name"), DeleteQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such pool (`pool_not_found`)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The pool has unfinished runs (`pool_has_runs`); delete with `?force=true`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "A bad name or query", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[delete("/pools/{name}")]
pub async fn delete(
    caller: Caller,
    gateway: web::Data<Gateway>,
    path: web::Path<String>,
    query: web::Query<DeleteQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let name = pool_name(&path)?;
    gateway
        .delete_pool(&name, query.force.unwrap_or(false))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
