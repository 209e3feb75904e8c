//! `GET /v1/events`: a server-sent event per run change, resumable from the persisted log.
//!
//! The stream subscribes to the live bus first, then sends what the persisted log holds after
//! `Last-Event-ID`, then reads the log again whenever the bus says a matching run changed. The
//! log is in commit order, so ids only grow and a client that resumes from the last id it saw
//! misses nothing. Without `Last-Event-ID` the stream starts at the present: a new client gets
//! the changes from now on, not the whole history (`Last-Event-ID: 0` asks for all of it).

use super::auth::{Caller, Role};
use super::dto::RunView;
use super::parse_id;
use crate::domain::ids::{JobId, PoolName};
use crate::domain::run::{EventRecord, RunRecord};
use crate::error::{ApiError, ProblemBody};
use crate::service::Gateway;
use actix_web::{HttpRequest, HttpResponse, get, web};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// Events read from the log per page while replaying.
const REPLAY_PAGE: u32 = 500;
/// A comment line is sent this often so that proxies keep the connection open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Query of `GET /v1/events`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Only this pool's runs.
    pool: Option<String>,
    /// Only this run.
    job_id: Option<String>,
}

/// `GET /v1/events?pool=&jobId=`
#[utoipa::path(
    operation_id = "streamEvents",
    tag = "runs",
    params(
        StreamQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event id (`0`: the whole persisted log); without it the stream starts at the present"),
    ),
    responses(
        (status = 200, description = "Server-sent events: one `run` event per change (`id:` the event's seq, `data:` a RunView), and a `: keep-alive` comment every 15 s", content_type = "text/event-stream", body = String),
        (status = 422, description = "A bad query or Last-Event-ID", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[get("/events")]
pub async fn stream(
    caller: Caller,
    gateway: web::Data<Gateway>,
    query: web::Query<StreamQuery>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Reader)?;
    let pool = query
        .pool
        .as_deref()
        .map(|p| parse_id(p, "pool", PoolName::parse))
        .transpose()?;
    let job_id = query
        .job_id
        .as_deref()
        .map(|j| parse_id(j, "jobId", JobId::parse))
        .transpose()?;
    let resume_from = match request.headers().get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::validation(vec![crate::manifest::Problem {
                        path: "Last-Event-ID".into(),
                        message: "must be the id of an event this stream sent".into(),
                    }])
                })?,
        ),
    };
    let (sender, receiver) = mpsc::channel::<web::Bytes>(64);
    let filter = Filter { pool, job_id };
    // Subscribe before answering, so that every change committed after the client got the
    // answer reaches it live, in order.
    let live = gateway.deps.bus.subscribe();
    // Read the present after subscribing: what commits in between is above it and is replayed.
    let last_seen = match resume_from {
        Some(seq) => seq,
        None => gateway.deps.store.last_event_seq().await.map_err(|e| {
            tracing::error!(error = %e, "cannot read the event log to start a stream");
            ApiError::from(crate::service::ServiceError::Unavailable)
        })?,
    };
    actix_web::rt::spawn(pump(gateway.into_inner(), filter, last_seen, live, sender));
    let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|bytes| (Ok::<_, actix_web::Error>(bytes), receiver))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(body))
}

struct Filter {
    pool: Option<PoolName>,
    job_id: Option<JobId>,
}

impl Filter {
    fn matches(&self, pool: &PoolName, job_id: &JobId) -> bool {
        self.pool.as_ref().is_none_or(|p| p == pool)
            && self.job_id.as_ref().is_none_or(|j| j == job_id)
    }
}

fn frame(seq: i64, run: &RunRecord) -> web::Bytes {
    let data = serde_json::to_string(&RunView::from(run)).unwrap_or_default();
    web::Bytes::from(format!("id: {seq}\nevent: run\ndata: {data}\n\n"))
}

/// Feeds one client until it goes away.
async fn pump(
    gateway: std::sync::Arc<Gateway>,
    filter: Filter,
    mut last_seen: i64,
    mut live: broadcast::Receiver<crate::bus::RunChange>,
    sender: mpsc::Sender<web::Bytes>,
) {
    // The log is the source: it is in commit order, while changes may reach the bus in another
    // order (runs committed in one batch publish as their answers arrive). The bus only says
    // when to read the log again.
    let mut due = true;
    loop {
        if due {
            match replay(&gateway, &filter, last_seen, &sender).await {
                Some(seq) => last_seen = seq,
                None => return,
            }
            due = false;
        }
        match tokio::time::timeout(KEEP_ALIVE, live.recv()).await {
            Err(_) => {
                if sender
                    .send(web::Bytes::from_static(b": keep-alive\n\n"))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(Ok(change)) => {
                due = filter.matches(&change.run.pool, &change.run.job_id);
                // Take whatever else is waiting, so that a burst costs one read of the log.
                while let Ok(change) = live.try_recv() {
                    due |= filter.matches(&change.run.pool, &change.run.job_id);
                }
            }
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => due = true,
            Ok(Err(broadcast::error::RecvError::Closed)) => return,
        }
    }
}

/// Sends every logged change after `after`; returns the last sequence number seen, or `None`
/// when the client is gone or the log cannot be read.
async fn replay(
    gateway: &Gateway,
    filter: &Filter,
    mut after: i64,
    sender: &mpsc::Sender<web::Bytes>,
) -> Option<i64> {
    loop {
        let events: Vec<EventRecord> = gateway
            .deps
            .store
            .events_after(
                after,
                filter.pool.as_ref(),
                filter.job_id.as_ref(),
                REPLAY_PAGE,
            )
            .await
            .ok()?;
        let Some(last) = events.last().map(|e| e.seq) else {
            return Some(after);
        };
        // One frame per run: the newest event of each run in this page, in log order, so the
        // last frame carries the page's last id. The page's runs are read together.
        let mut seen = std::collections::HashSet::new();
        let mut newest: Vec<&EventRecord> = events
            .iter()
            .rev()
            .filter(|event| seen.insert(event.event.job_id.clone()))
            .collect();
        newest.reverse();
        let ids = newest.iter().map(|e| e.event.job_id.clone()).collect();
        let runs: HashMap<JobId, RunRecord> = gateway
            .deps
            .store
            .get_runs(ids)
            .await
            .ok()?
            .into_iter()
            .map(|run| (run.job_id.clone(), run))
            .collect();
        for event in newest {
            if let Some(run) = runs.get(&event.event.job_id)
                && sender.send(frame(event.seq, run)).await.is_err()
            {
                return None;
            }
        }
        after = last;
        if events.len() < REPLAY_PAGE as usize {
            return Some(after);
        }
    }
}
