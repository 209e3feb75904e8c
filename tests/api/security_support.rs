//! Support for the security tests: an application whose egress state the test can reach (to pin
//! a name to an address), and a loopback server that records every request and answers through
//! a handler the test writes.

use crate::helpers::{ADMIN_TOKEN, DISPATCHER_TOKEN, TestApp, TestDatabase, spawn_app_prepared};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use cattery::app::Application;
use cattery::config::Settings;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The application of [`crate::helpers::TestApp`], with answers read as `(status, body)`.
pub struct SecureApp(pub TestApp);

impl std::ops::Deref for SecureApp {
    type Target = TestApp;

    fn deref(&self) -> &TestApp {
        &self.0
    }
}

/// Starts the application with the test settings, adjusted, after `prepare` had the built
/// application in hand (to pin names, for instance).
pub async fn spawn_secure_app(
    adjust: impl FnOnce(&mut Settings),
    prepare: impl FnOnce(&Application),
) -> SecureApp {
    SecureApp(spawn_app_prepared(adjust, prepare).await)
}

impl SecureApp {
    pub async fn put_pool(&self, name: &str, manifest: Value, secrets: Value) -> (u16, Value) {
        let response = self
            .client
            .put(self.url(&format!("/v1/pools/{name}")))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"manifest": manifest, "secrets": secrets}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn dispatch(&self, pool: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(&format!("/v1/pools/{pool}/runs")))
            .bearer_auth(DISPATCHER_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Polls the run until `done` holds, failing after 20 seconds.
    pub async fn wait_for(&self, job_id: &str, done: impl Fn(&Value) -> bool) -> Value {
        self.0.wait_for(job_id, Duration::from_secs(20), done).await
    }

    /// Waits until the run is final.
    pub async fn wait_final(&self, job_id: &str) -> Value {
        self.0.wait_settled(job_id).await
    }
}

/// A request a [`Recorder`] received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// A loopback server that records every request and answers with its handler.
#[derive(Clone)]
pub struct Recorder {
    pub base_url: String,
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

type Handler = Arc<dyn Fn(&Seen) -> HttpResponse + Send + Sync>;

impl Recorder {
    pub async fn start(
        handler: impl Fn(&Seen) -> HttpResponse + Send + Sync + 'static,
    ) -> Recorder {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let handler: Handler = Arc::new(handler);
        let recorded = seen.clone();
        let server = HttpServer::new(move || {
            let recorded = recorded.clone();
            let handler = handler.clone();
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let recorded = recorded.clone();
                let handler = handler.clone();
                async move {
                    let seen = Seen {
                        method: req.method().to_string(),
                        path: req.path().to_owned(),
                        headers: req
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                            .collect(),
                        body: body.to_vec(),
                    };
                    recorded.lock().unwrap().push(seen.clone());
                    handler(&seen)
                }
            }))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let port = server.addrs()[0].port();
        actix_web::rt::spawn(server.run());
        Recorder {
            base_url: format!("http://127.0.0.1:{port}"),
            port,
            seen,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// An answer with a status and a JSON body.
pub fn answer(status: u16, body: Value) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).json(body)
}

/// A redirect.
pub fn redirect(status: u16, location: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .insert_header(("location", location))
        .finish()
}

/// A minimal manifest: dispatch POST /jobs (201 with a uid), poll GET /jobs/{id} mapped by
/// `status`, release DELETE /jobs/{id}; bearer auth from SCHED_TOKEN.
pub fn simple_manifest(base_url: &str) -> Value {
    json!({
        "apiVersion": "cattery/v1",
        "baseUrl": base_url,
        "auth": {"type": "bearer", "secretRef": {"key": "SCHED_TOKEN"}},
        "polling": {"intervalMs": 30, "maxIntervalMs": 100, "maxConsecutiveErrors": 3},
        "retry": {"maxAttempts": 3, "initialBackoffMs": 10, "maxBackoffMs": 50},
        "dispatch": {
            "request": {"method": "POST", "path": "/jobs", "body": {"name": "{{run.dispatchId}}", "spec": "{{input.job}}"}},
            "expect": [201]
        },
        "poll": {
            "request": {"method": "GET", "path": "/jobs/{{run.dispatchId}}"},
            "map": {"state": "status", "statusMap": {"Complete": "done", "Failed": "failed"}, "error": "message"}
        },
        "release": {"request": {"method": "DELETE", "path": "/jobs/{{run.dispatchId}}"}, "expect": [200, 404]}
    })
}

#[derive(diesel::QueryableByName)]
struct SealedRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
    #[diesel(sql_type = diesel::sql_types::Binary)]
    sealed: Vec<u8>,
}

const POOL_ROWS: &str = "SELECT name AS id, secrets_sealed AS sealed FROM pools ORDER BY name";
const JOB_ROWS: &str = "SELECT job_id AS id, job_sealed AS sealed FROM run_jobs ORDER BY job_id";

/// `(row id, envelope)` pairs.
pub type SealedRows = Vec<(String, Vec<u8>)>;

/// The sealed secret bundles `(pool, envelope)` and job bodies `(jobId, envelope)`, read
/// straight from the database.
pub fn sealed_rows(db: &TestDatabase) -> (SealedRows, SealedRows) {
    use diesel::RunQueryDsl as _;
    let pairs = |rows: Vec<SealedRow>| rows.into_iter().map(|r| (r.id, r.sealed)).collect();
    if db.is_postgres() {
        let mut conn = db.pg();
        let pools = diesel::sql_query(POOL_ROWS).load(&mut conn).unwrap();
        let jobs = diesel::sql_query(JOB_ROWS).load(&mut conn).unwrap();
        (pairs(pools), pairs(jobs))
    } else {
        let mut conn = db.sqlite();
        let pools = diesel::sql_query(POOL_ROWS).load(&mut conn).unwrap();
        let jobs = diesel::sql_query(JOB_ROWS).load(&mut conn).unwrap();
        (pairs(pools), pairs(jobs))
    }
}

/// Overwrites one run's sealed job body straight in the database.
pub fn update_job_sealed(db: &TestDatabase, job_id: &str, sealed: &[u8]) {
    use diesel::RunQueryDsl as _;
    use diesel::sql_types::{Binary, Text};
    let changed = if db.is_postgres() {
        let mut conn = db.pg();
        diesel::sql_query("UPDATE run_jobs SET job_sealed = $1 WHERE job_id = $2")
            .bind::<Binary, _>(sealed)
            .bind::<Text, _>(job_id)
            .execute(&mut conn)
            .unwrap()
    } else {
        let mut conn = db.sqlite();
        diesel::sql_query("UPDATE run_jobs SET job_sealed = ? WHERE job_id = ?")
            .bind::<Binary, _>(sealed)
            .bind::<Text, _>(job_id)
            .execute(&mut conn)
            .unwrap()
    };
    assert_eq!(changed, 1);
}
