//! Test schedulers with the shapes Cat-Factory's documentation describes, on loopback.
//!
//! One server speaks three job APIs, and records every request it receives:
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

pub use crate::scheduler::Seen;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One scripted poll answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with this JSON body.
    Json(Value),
    /// This status with this raw body.
    Status(u16, &'static str),
}

#[derive(Debug, Default)]
struct State {
    seen: Vec<Seen>,
    /// job id → polls answered so far
    jobs: HashMap<String, usize>,
    scripts: HashMap<String, Vec<Reply>>,
    default_script: Vec<Reply>,
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
    state: Arc<Mutex<State>>,
}

impl CfScheduler {
    /// Starts a scheduler whose polls answer `default_script` for jobs without their own script.
    pub async fn start(default_script: Vec<Reply>) -> CfScheduler {
        let state = Arc::new(Mutex::new(State {
            default_script,
            capabilities: json!(["mcpServers", "skills"]),
            ..State::default()
        }));
        let shared = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(shared.clone()))
                .app_data(web::PayloadConfig::new(8 * 1024 * 1024))
                .default_service(web::to(handle))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let port = server.addrs()[0].port();
        actix_web::rt::spawn(server.run());
        CfScheduler {
            base_url: format!("http://127.0.0.1:{port}"),
            state,
        }
    }

    /// The poll answers of one job.
    pub fn script(&self, job_id: &str, replies: Vec<Reply>) {
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
        self.state.lock().unwrap().seen.clone()
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

async fn handle(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Arc<Mutex<State>>>,
) -> HttpResponse {
    let mut state = state.lock().unwrap();
    let path = req.path().to_owned();
    let method = req.method().as_str().to_owned();
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    state.seen.push(Seen::of(&req, &body));
    if method == "POST" && path == "/oauth/token" {
        let form = String::from_utf8_lossy(&body).to_string();
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
    let path = path.strip_prefix("/api").unwrap_or(&path).to_owned();
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
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
            let reply = script
                .get((*polls).min(script.len().saturating_sub(1)))
                .cloned()
                .unwrap_or(Reply::Json(json!({"state": "running"})));
            *polls += 1;
            match reply {
                Reply::Json(value) => HttpResponse::Ok().json(value),
                Reply::Status(status, text) => {
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                        .content_type("text/plain")
                        .body(text)
                }
            }
        }
        ("DELETE", Some(id)) => match state.jobs.remove(&id) {
            Some(_) => HttpResponse::Ok().json(json!({"jobId": id, "state": "failed"})),
            None => not_found(),
        },
        _ => HttpResponse::NotFound().json(json!({"error": "not found"})),
    }
}
