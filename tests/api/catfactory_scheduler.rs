//! Test schedulers with the shapes Cat-Factory's documentation describes, on loopback.
//!
//! One server (a [`Recorder`], which keeps every request it receives) speaks three job APIs:
//!
//! - the harness protocol behind a gateway that routes by job id (CATFACTORY.md §6 and §9.4):
//!   `POST /jobs` with the job spec (its `jobId`) → 202 `{jobId, state, capabilities}`;
//! - the transparent proxy of the website's example A (§9.1): `POST /dispatch/{kind}` with
//!   `{"id", "job"}` → 202 `{jobId, state, capabilities}`;
//! - the opaque envelope of the website's example B (§9.2): `POST /v1/jobs` with
//!   `{"name", "kind", "instanceType", "spec"}` → 201 `{"name"}`;
//!
//! (each also under an `/api` prefix) and for all three `GET /jobs/{id}` or `GET /v1/jobs/{id}` answer the test's script for that
//! job (one entry per poll, the last one repeating; 404 `{"error": "job not found"}` for a job
//! it never accepted), `DELETE …/{id}` forgets the job (200, or 404 when unknown), and
//! `POST /oauth/token` issues client-credentials tokens. Like a real API it can demand a
//! credential on every job call (401 otherwise). A repeated dispatch of a known id re-attaches
//! (2xx with the job's state), as Cat-Factory requires of pools.

use crate::support::stub::{Recorder, Scripted, Seen, scripted};
use actix_web::HttpResponse;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct State {
    /// job id → polls answered so far
    jobs: HashMap<String, usize>,
    scripts: HashMap<String, Vec<Scripted>>,
    default_script: Vec<Scripted>,
    dispatch_status: Option<u16>,
    capabilities: Value,
    /// A header every job call must carry (name in lower case, value).
    required: Option<(String, String)>,
    tokens_issued: usize,
}

/// A running Cat-Factory-shaped scheduler.
#[derive(Clone)]
pub struct CfScheduler {
    pub base_url: String,
    server: Recorder,
    state: Arc<Mutex<State>>,
}

impl CfScheduler {
    /// Starts a scheduler whose polls answer `default_script` for jobs without their own script.
    pub async fn start(default_script: Vec<Scripted>) -> CfScheduler {
        let state = Arc::new(Mutex::new(State {
            default_script,
            capabilities: json!(["mcpServers", "skills"]),
            ..State::default()
        }));
        let shared = state.clone();
        let server = Recorder::start(move |seen| answer(&shared, seen)).await;
        CfScheduler {
            base_url: server.base_url.clone(),
            server,
            state,
        }
    }

    /// The poll answers of one job.
    pub fn script(&self, job_id: &str, replies: Vec<Scripted>) {
        self.state
            .lock()
            .unwrap()
            .scripts
            .insert(job_id.to_owned(), replies);
    }

    pub fn set_dispatch_status(&self, status: u16) {
        self.state.lock().unwrap().dispatch_status = Some(status);
    }

    /// Every job call must carry this header, else 401.
    pub fn require_header(&self, name: &str, value: &str) {
        self.state.lock().unwrap().required = Some((name.to_ascii_lowercase(), value.to_owned()));
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.server.seen()
    }

    pub fn seen_with(&self, method: &str, path: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == method && s.path == path)
            .collect()
    }
}

fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({"error": "job not found"}))
}

fn answer(state: &Mutex<State>, seen: &Seen) -> HttpResponse {
    let mut state = state.lock().unwrap();
    let (method, path, headers) = (&seen.method, &seen.path, &seen.headers);
    if method == "POST" && path == "/oauth/token" {
        let form = seen.text();
        if !form.contains("grant_type=client_credentials") || !form.contains("client_secret=") {
            return HttpResponse::BadRequest().json(json!({"error": "invalid_request"}));
        }
        state.tokens_issued += 1;
        let token = format!("issued-token-{}", state.tokens_issued);
        return HttpResponse::Ok()
            .json(json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600}));
    }
    if let Some((name, value)) = &state.required
        && headers.get(name) != Some(value)
    {
        return HttpResponse::Unauthorized().json(json!({"error": "unauthorized"}));
    }
    // The website's example A serves its API under /api.
    let path = path.strip_prefix("/api").unwrap_or(path).to_owned();
    let parsed = seen.json();
    let dispatched_id = match (method.as_str(), path.as_str()) {
        ("POST", "/jobs") => Some(parsed["jobId"].as_str().map(str::to_owned)),
        ("POST", p) if p.starts_with("/dispatch/") => {
            Some(parsed["id"].as_str().map(str::to_owned))
        }
        ("POST", "/v1/jobs") => Some(parsed["name"].as_str().map(str::to_owned)),
        _ => None,
    };
    if let Some(id) = dispatched_id {
        let Some(id) = id else {
            return HttpResponse::BadRequest().json(json!({"error": "the job id is missing"}));
        };
        if let Some(status) = state.dispatch_status {
            return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                .json(json!({"error": format!("scripted {status}")}));
        }
        state.jobs.entry(id.clone()).or_insert(0);
        if path == "/v1/jobs" {
            return HttpResponse::Created().json(json!({"name": id}));
        }
        let capabilities = state.capabilities.clone();
        return HttpResponse::Accepted()
            .json(json!({"jobId": id, "state": "running", "capabilities": capabilities}));
    }
    let id = path
        .strip_prefix("/v1/jobs/")
        .or_else(|| path.strip_prefix("/jobs/"))
        .map(str::to_owned);
    match (method.as_str(), id) {
        ("GET", Some(id)) => {
            let script = state
                .scripts
                .get(&id)
                .cloned()
                .unwrap_or_else(|| state.default_script.clone());
            let Some(polls) = state.jobs.get_mut(&id) else {
                return not_found();
            };
            let reply = scripted(&script, *polls, Scripted::Json(json!({"state": "running"})));
            *polls += 1;
            reply.respond()
        }
        ("DELETE", Some(id)) => match state.jobs.remove(&id) {
            Some(_) => HttpResponse::Ok().json(json!({"jobId": id, "state": "failed"})),
            None => not_found(),
        },
        _ => HttpResponse::NotFound().json(json!({"error": "not found"})),
    }
}
