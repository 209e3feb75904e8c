//! Operational routes: liveness and readiness.

use crate::service::Gateway;
use actix_web::{HttpResponse, get, web};
use serde_json::json;

/// Liveness: the process answers.
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Readiness: the database answers and the supervisor runs.
#[get("/readyz")]
pub async fn readyz(gateway: web::Data<Gateway>) -> HttpResponse {
    let database = gateway.deps.store.ping().await.is_ok();
    let supervisor = gateway.supervisor.connected();
    let body = json!({
        "status": if database && supervisor { "ready" } else { "not_ready" },
        "database": database,
        "backend": gateway.deps.store.backend_name(),
        "supervisor": supervisor,
        "shuttingDown": gateway.is_shutting_down(),
        "recoveryMs": gateway.recovery_ms(),
    });
    if database && supervisor && !gateway.is_shutting_down() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
