//! `GET /metrics`: the Prometheus exposition, gated by a reader token unless `metrics.public`.

use super::auth::{Caller, Role};
use crate::actors::supervisor::AllPoolStats;
use crate::error::ApiError;
use crate::metrics::{Breaker, Format, Metrics, PoolSnapshot, RunCount, Snapshot};
use crate::scheduler::guard::Circuit;
use crate::service::Gateway;
use actix_web::{FromRequest as _, HttpRequest, HttpResponse, get, web};
use std::sync::Arc;

/// What the route serves: the gateway's metrics, and whether a scrape needs a token.
#[derive(Debug, Clone)]
pub struct MetricsEndpoint {
    /// The gateway's registry.
    pub metrics: Arc<Metrics>,
    /// `metrics.public`: scrapes need no token.
    pub public: bool,
}

/// The exposition, in OpenMetrics text when the scraper asks for it (Prometheus does), else in
/// the Prometheus text format. Counters and histograms come from the registry; the gauges of
/// runs, queues and breakers are read now (see [`crate::metrics::live`]).
#[get("/metrics")]
pub async fn scrape(
    req: HttpRequest,
    endpoint: web::Data<MetricsEndpoint>,
    gateway: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    if !endpoint.public {
        Caller::extract(&req).await?.require(Role::Reader)?;
    }
    let snapshot = snapshot(&gateway).await;
    let format = Format::from_accept(
        req.headers()
            .get(actix_web::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    let body = endpoint
        .metrics
        .encode(&snapshot, format)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("cannot encode the metrics: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type(format.content_type())
        .insert_header(("Cache-Control", "no-store"))
        .body(body))
}

/// Reads the gauges of a scrape: each live pool's counts from its actor and its breaker from
/// the adapter, the unfinished runs from the store. A part that cannot be read is left out (and
/// logged) so that the counters still reach the scraper.
async fn snapshot(gateway: &Gateway) -> Snapshot {
    let live = match gateway.supervisor.send(AllPoolStats).await {
        Ok(live) => live,
        Err(e) => {
            tracing::warn!(error = %e, "metrics: the supervisor did not answer; pool gauges left out");
            Vec::new()
        }
    };
    let pools = live
        .into_iter()
        .map(|(name, stats)| {
            let breaker = match gateway.deps.adapter.health(&name).circuit {
                Circuit::Closed => Breaker::Closed,
                Circuit::HalfOpen => Breaker::HalfOpen,
                Circuit::Open => Breaker::Open,
            };
            PoolSnapshot {
                name,
                queued: stats.queued,
                in_flight: stats.in_flight,
                max_in_flight: stats.max_in_flight,
                max_queued: stats.max_queued,
                breaker,
            }
        })
        .collect();
    let now = crate::domain::run::now_millis();
    let runs = match gateway.deps.store.count_unfinished(now).await {
        Ok(counts) => Some(
            counts
                .into_iter()
                .map(|count| RunCount {
                    pool: count.pool,
                    state: count.state,
                    runs: count.runs,
                    past_deadline: count.past_deadline,
                })
                .collect(),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot count the unfinished runs; cattery_runs and cattery_runs_past_deadline left out");
            None
        }
    };
    Snapshot { pools, runs }
}
