//! `/v1/pools…`: register or replace, read, list, rotate secrets, delete.

use super::auth::{Caller, Role};
use super::body::{parse_json, read_limited};
use super::dto::PoolView;
use super::{BodyLimit, parse_id};
use crate::domain::ids::PoolName;
use crate::error::ApiError;
use crate::manifest::Problem;
use crate::service::pools::ManifestInput;
use crate::service::{Gateway, ServiceError};
use actix_web::{HttpResponse, delete, get, put, web};
use serde_json::{Value, json};
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

/// `PUT /v1/pools/{name}`: register (201) or replace (200) a pool.
///
/// The body is `{"manifest", "secrets"}`, or Cat-Factory's registration shape
/// `{"config": {"kind": "manifest", "manifest"}, "secrets"}`.
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
            if !envelope || problems.is_empty() {
                problems.push(problem(manifest_path, "is required"));
            }
            None
        }
    };
    let secrets = secrets_of(&body, &mut problems);
    let Some(manifest) = manifest.filter(|_| problems.is_empty()) else {
        return Err(ApiError::validation(problems));
    };
    let registered = gateway.register_pool(name, manifest, secrets).await;
    let (record, created) = match registered {
        Err(ServiceError::Validation(found)) if envelope => {
            // Problems are reported where the caller wrote them: under config.manifest.
            return Err(ApiError::validation(
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
            ));
        }
        other => other?,
    };
    let view = PoolView::from(&gateway.pool_summary(record).await?);
    Ok(if created {
        HttpResponse::Created().json(view)
    } else {
        HttpResponse::Ok().json(view)
    })
}

/// `PUT /v1/pools/{name}/secrets`: replace the whole secret bundle.
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
#[get("/pools")]
pub async fn list(caller: Caller, gateway: web::Data<Gateway>) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Reader)?;
    let pools: Vec<PoolView> = gateway
        .list_pools()
        .await?
        .iter()
        .map(PoolView::from)
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "pools": pools })))
}

/// `GET /v1/pools/{name}`
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
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    force: Option<bool>,
}

/// `DELETE /v1/pools/{name}`: 204; 409 with unfinished runs unless `?force=true`.
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
