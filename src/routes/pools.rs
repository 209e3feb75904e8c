//! `/v1/pools…`: register or replace, read, list, rotate secrets, delete.

use super::auth::{Caller, Role};
use super::body::{parse_json, read_limited};
use super::dto::PoolView;
use super::{BodyLimit, parse_id};
use crate::domain::ids::PoolName;
use crate::error::ApiError;
use crate::manifest::Problem;
use crate::service::Gateway;
use crate::service::pools::ManifestInput;
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

/// `PUT /v1/pools/{name}`: register (201) or replace (200) a pool.
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
        if key != "manifest" && key != "secrets" {
            problems.push(problem(key, "unknown field; expected manifest and secrets"));
        }
    }
    let manifest = match object.get("manifest") {
        Some(Value::Object(_)) => object.get("manifest").cloned().map(ManifestInput::Document),
        Some(Value::String(text)) => Some(ManifestInput::Text(text.clone())),
        Some(_) => {
            problems.push(problem(
                "manifest",
                "must be an object, or YAML or JSON text",
            ));
            None
        }
        None => {
            problems.push(problem("manifest", "is required"));
            None
        }
    };
    let secrets = secrets_of(&body, &mut problems);
    let Some(manifest) = manifest.filter(|_| problems.is_empty()) else {
        return Err(ApiError::validation(problems));
    };
    let (record, created) = gateway.register_pool(name, manifest, secrets).await?;
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
