//! The fast scheduler on loopback: a job API that answers at once and keeps a ledger of every
//! call per job, so that a benchmark can prove each run was dispatched and released exactly once.

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde::Deserialize;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// What the scheduler saw of one job name.
#[derive(Debug, Default, Clone)]
pub struct JobRecord {
    /// `POST /jobs` calls naming it (the first creates the job, later ones answer 409).
    pub posts: u32,
    /// The job was created.
    pub created: bool,
    /// Polls answered while the job existed.
    pub polls: u32,
    /// `DELETE` calls (the first releases the job, later ones answer 404).
    pub releases: u32,
}

/// The scheduler's record of every job, and the number of jobs released so far.
pub struct Ledger {
    jobs: Mutex<HashMap<String, JobRecord>>,
    released: watch::Sender<usize>,
    /// Polls of a job it does not have (answered 404): a gateway asking whether an earlier
    /// dispatch created the job.
    unknown_polls: AtomicUsize,
}

impl Ledger {
    fn new() -> Self {
        Self {
            jobs: Mutex::new(HashMap::new()),
            released: watch::channel(0).0,
            unknown_polls: AtomicUsize::new(0),
        }
    }

    /// Jobs released so far (each counted once).
    pub fn released(&self) -> usize {
        *self.released.borrow()
    }

    /// Polls of jobs it did not have (answered 404) so far.
    pub fn unknown_polls(&self) -> usize {
        self.unknown_polls.load(Ordering::SeqCst)
    }

    /// Waits until `count` jobs were released; false when `limit` passed first.
    pub async fn wait_released(&self, count: usize, limit: Duration) -> bool {
        let mut released = self.released.subscribe();
        tokio::time::timeout(limit, released.wait_for(|n| *n >= count))
            .await
            .is_ok_and(|seen| seen.is_ok())
    }

    /// Checks that the scheduler saw exactly the jobs `names`, each created once, polled to
    /// `Complete` and released exactly once, and (unless `repeats_allowed`) dispatched by exactly
    /// one `POST`. Panics with the offending jobs otherwise; answers the jobs whose dispatch came
    /// more than once (each repeat answered 409 `alreadyExists`) with their `POST` counts.
    pub fn verify(&self, names: &[String], repeats_allowed: bool) -> Vec<(String, u32)> {
        let jobs = self.jobs.lock().unwrap();
        let expected: HashSet<&str> = names.iter().map(String::as_str).collect();
        let mut problems = Vec::new();
        for name in names {
            match jobs.get(name) {
                None => problems.push(format!("{name}: never dispatched")),
                Some(job) if !job.created => problems.push(format!("{name}: never created")),
                Some(job) => {
                    if job.releases != 1 {
                        problems.push(format!("{name}: released {} times", job.releases));
                    }
                    if job.polls < 2 {
                        problems.push(format!(
                            "{name}: released after {} polls (Complete is the second)",
                            job.polls
                        ));
                    }
                    if job.posts != 1 && !repeats_allowed {
                        problems.push(format!("{name}: dispatched {} times", job.posts));
                    }
                }
            }
        }
        for (name, job) in jobs.iter() {
            if !expected.contains(name.as_str()) {
                problems.push(format!("{name}: a job of no run ({job:?})"));
            }
        }
        if !problems.is_empty() {
            let mut message = format!(
                "exactly once violated for {} of {} jobs:",
                problems.len(),
                names.len()
            );
            for problem in problems.iter().take(20) {
                let _ = write!(message, "\n  {problem}");
            }
            panic!("{message}");
        }
        let mut repeated: Vec<(String, u32)> = jobs
            .iter()
            .filter(|(_, job)| job.posts > 1)
            .map(|(name, job)| (name.clone(), job.posts))
            .collect();
        repeated.sort();
        repeated
    }
}

/// A running fast scheduler.
pub struct Scheduler {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The port it listens on.
    pub port: u16,
    /// What it saw.
    pub ledger: Arc<Ledger>,
}

impl Scheduler {
    /// A scheduler on a new loopback port.
    pub fn start() -> Self {
        Self::on(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    /// A scheduler answering on `listener` (one worker thread, its own actix system).
    pub fn on(listener: TcpListener) -> Self {
        let port = listener.local_addr().unwrap().port();
        let ledger = Arc::new(Ledger::new());
        let state = ledger.clone();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    let state = state.clone();
                    App::new().default_service(web::to(
                        move |req: HttpRequest, body: web::Bytes| {
                            let state = state.clone();
                            async move { answer(&state, &req, &body) }
                        },
                    ))
                })
                .workers(1)
                .listen(listener)
                .unwrap()
                .run();
                sender.send(()).unwrap();
                server.await.unwrap();
            });
        });
        receiver.recv().unwrap();
        Self {
            base: format!("http://127.0.0.1:{port}"),
            port,
            ledger,
        }
    }
}

/// The part of a dispatch body the scheduler reads.
#[derive(Deserialize)]
struct Created {
    name: String,
}

/// Create (201, or 409 for a name in use), poll (`Running`, then `Complete`; 404 for a job it
/// does not have), delete (200 once, then 404, as for a job it never had).
fn answer(ledger: &Ledger, req: &HttpRequest, body: &[u8]) -> HttpResponse {
    match req.method().as_str() {
        "POST" => {
            let Ok(Created { name }) = serde_json::from_slice(body) else {
                return HttpResponse::BadRequest().finish();
            };
            let mut jobs = ledger.jobs.lock().unwrap();
            let job = jobs.entry(name).or_default();
            job.posts += 1;
            if job.created {
                HttpResponse::Conflict().json(json!({"reason": "AlreadyExists"}))
            } else {
                job.created = true;
                HttpResponse::Created().json(json!({"metadata": {"uid": "u"}}))
            }
        }
        "GET" => {
            let name = req.path().trim_start_matches("/jobs/");
            let mut jobs = ledger.jobs.lock().unwrap();
            match jobs.get_mut(name) {
                Some(job) if job.created && job.releases == 0 => {
                    job.polls += 1;
                    let status = if job.polls >= 2 {
                        "Complete"
                    } else {
                        "Running"
                    };
                    HttpResponse::Ok().json(json!({"status": status}))
                }
                _ => {
                    ledger.unknown_polls.fetch_add(1, Ordering::SeqCst);
                    HttpResponse::NotFound().finish()
                }
            }
        }
        "DELETE" => {
            // Recorded even for a job it never created, which the verification then names.
            let name = req.path().trim_start_matches("/jobs/").to_owned();
            let mut jobs = ledger.jobs.lock().unwrap();
            let job = jobs.entry(name).or_default();
            job.releases += 1;
            if !job.created || job.releases > 1 {
                return HttpResponse::NotFound().finish();
            }
            drop(jobs);
            ledger.released.send_modify(|n| *n += 1);
            HttpResponse::Ok().json(json!({}))
        }
        _ => HttpResponse::NotFound().finish(),
    }
}
