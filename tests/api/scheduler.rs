//! A test scheduler on loopback: a small job API whose answers each test scripts, on a
//! [`Recorder`] (which keeps every request it receives: method, path, query, headers, body).
//!
//! It behaves like a typical scheduler REST API: `POST /jobs` creates a job named in the body
//! (201 with a uid, 409 when the name exists), `GET /jobs/{name}` reports it (404 when unknown),
//! `DELETE /jobs/{name}` removes it, and `POST /oauth/token` issues client-credentials tokens.
//! A job's poll answers follow the test's script, one entry per poll, the last one repeating.

use crate::support::stub::{Recorder, Scripted, Seen, scripted};
use actix_web::HttpResponse;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct State {
    /// job name → polls answered so far
    jobs: HashMap<String, usize>,
    created: HashMap<String, usize>,
    script: Vec<Scripted>,
    /// Status of every dispatch answer (201 by default).
    dispatch_status: Option<u16>,
    tokens_issued: usize,
    /// Poll answers 404 for every job (a scheduler that forgets jobs).
    forget_jobs: bool,
}

/// A running test scheduler.
#[derive(Clone)]
pub struct TestScheduler {
    pub base_url: String,
    server: Recorder,
    state: Arc<Mutex<State>>,
}

impl TestScheduler {
    /// Starts a scheduler whose polls answer `script` in order.
    pub async fn start(script: Vec<Scripted>) -> TestScheduler {
        let state = Arc::new(Mutex::new(State {
            script,
            ..State::default()
        }));
        let shared = state.clone();
        let server = Recorder::start(move |seen| answer(&shared, seen)).await;
        TestScheduler {
            base_url: server.base_url.clone(),
            server,
            state,
        }
    }

    pub fn set_dispatch_status(&self, status: u16) {
        self.state.lock().unwrap().dispatch_status = Some(status);
    }

    pub fn forget_jobs(&self) {
        self.state.lock().unwrap().forget_jobs = true;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.server.seen()
    }

    pub fn seen_with(&self, method: &str, path_prefix: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == method && s.path.starts_with(path_prefix))
            .collect()
    }

    /// How many times a job name was created.
    pub fn created(&self, name: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .created
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    pub fn tokens_issued(&self) -> usize {
        self.state.lock().unwrap().tokens_issued
    }
}

fn answer(state: &Mutex<State>, seen: &Seen) -> HttpResponse {
    let mut state = state.lock().unwrap();
    let body = &seen.body;
    match (seen.method.as_str(), seen.path.as_str()) {
        ("POST", "/oauth/token") => {
            let form = seen.text();
            if !form.contains("grant_type=client_credentials") || !form.contains("client_secret=") {
                return HttpResponse::BadRequest().json(json!({"error": "invalid_request"}));
            }
            state.tokens_issued += 1;
            let token = format!("issued-token-{}", state.tokens_issued);
            HttpResponse::Ok()
                .json(json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600}))
        }
        ("POST", "/jobs") => {
            let name = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v.get("name").and_then(Value::as_str).map(str::to_owned));
            let Some(name) = name else {
                return HttpResponse::BadRequest()
                    .json(json!({"message": "body.name is required"}));
            };
            if let Some(status) = state.dispatch_status {
                return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                    .json(json!({"message": format!("scripted {status}")}));
            }
            if state.jobs.contains_key(&name) {
                return HttpResponse::Conflict()
                    .json(json!({"message": format!("job {name} already exists")}));
            }
            state.jobs.insert(name.clone(), 0);
            *state.created.entry(name.clone()).or_default() += 1;
            let uid = format!("uid-{}", state.created.values().sum::<usize>());
            HttpResponse::Created().json(json!({"metadata": {"name": name, "uid": uid}}))
        }
        ("GET", p) if p.starts_with("/jobs/") => {
            let name = p.trim_start_matches("/jobs/").to_owned();
            if state.forget_jobs {
                return HttpResponse::NotFound().json(json!({"message": "not found"}));
            }
            let script = state.script.clone();
            let Some(polls) = state.jobs.get_mut(&name) else {
                return HttpResponse::NotFound().json(json!({"message": "not found"}));
            };
            let answer = scripted(
                &script,
                *polls,
                Scripted::Json(json!({"status": "Running"})),
            );
            *polls += 1;
            answer.respond()
        }
        ("GET", p) if p.starts_with("/logs/") => {
            let name = p.trim_start_matches("/logs/");
            if state.jobs.contains_key(name) {
                HttpResponse::Ok()
                    .content_type("text/plain")
                    .body(format!("starting {name}\nthe job said: boom\n"))
            } else {
                HttpResponse::NotFound().json(json!({"message": "not found"}))
            }
        }
        ("DELETE", p) if p.starts_with("/jobs/") => {
            let name = p.trim_start_matches("/jobs/").to_owned();
            match state.jobs.remove(&name) {
                Some(_) => HttpResponse::Ok().json(json!({"deleted": name})),
                None => HttpResponse::NotFound().json(json!({"message": "not found"})),
            }
        }
        _ => HttpResponse::NotFound().json(json!({"message": "no such route"})),
    }
}
