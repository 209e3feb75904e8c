//! Operational routes: liveness and readiness.

use super::dto::{Liveness, Readiness};
use crate::service::Gateway;
use actix_web::{HttpResponse, get, web};

/// Liveness: the process answers.
#[utoipa::path(
    operation_id = "healthz",
    tag = "operations",
    security(()),
    responses((status = 200, description = "The process answers", body = Liveness))
)]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Liveness { status: "ok" })
}

/// Readiness: the database answers and the supervisor runs.
#[utoipa::path(
    operation_id = "readyz",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready: the database does not answer, the supervisor is not running, or shutdown began", body = Readiness),
    )
)]
#[get("/readyz")]
pub async fn readyz(gateway: web::Data<Gateway>) -> HttpResponse {
    let database = gateway.deps.store.ping().await.is_ok();
    let supervisor = gateway.supervisor.connected();
    let body = Readiness {
        status: if database && supervisor {
            "ready"
        } else {
            "not_ready"
        },
        database,
        backend: gateway.deps.store.backend_name(),
        supervisor,
        shutting_down: gateway.is_shutting_down(),
        recovery_ms: gateway.recovery_ms(),
    };
    if database && supervisor && !gateway.is_shutting_down() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
