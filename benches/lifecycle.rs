//! End-to-end run throughput: the real `cattery serve` process driving whole lifecycles against
//! a fast scheduler on loopback, next to that scheduler's raw capacity measured in the same run.
//!
//! One lifecycle is: `POST /v1/pools/bench/runs` with a 2 KB job, then cattery's dispatch
//! (`POST /jobs`), two polls (`Running`, then `Complete`) and the release (`DELETE`). Runs are
//! submitted by 64 concurrent clients while earlier ones are driven (at most 64 in flight), and
//! the clock stops when the scheduler has seen every release. The gateway's CPU time is read
//! from `/proc/<pid>/stat`, so the scheduler and the clients (this process) do not count.
//!
//! Run: `cargo bench --bench lifecycle` (SQLite), and with
//! `TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres` for PostgreSQL too.
//! `LIFECYCLES` sets the number of runs per shape (default 4000); `CATTERY_BIN` runs another
//! build of the gateway (to compare builds with the same workload and scheduler).
#![expect(clippy::unwrap_used, reason = "a benchmark stops on any setup error")]

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use cattery::store::testing::{TestBackend, TestDatabase};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";
const MASTER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const CONCURRENCY: usize = 64;

/// The fast scheduler's state: polls seen per job, and releases seen.
#[derive(Default)]
struct Jobs {
    polls: Mutex<HashMap<String, u32>>,
    released: AtomicUsize,
}

/// A job API that answers at once: create (201), poll (`Running`, then `Complete`), delete.
fn start_scheduler() -> (String, Arc<Jobs>) {
    let jobs = Arc::new(Jobs::default());
    let state = jobs.clone();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                let state = state.clone();
                App::new().default_service(web::to(move |req: HttpRequest, _body: web::Bytes| {
                    let state = state.clone();
                    async move { answer(&state, &req) }
                }))
            })
            .workers(1)
            .bind(("127.0.0.1", 0))
            .unwrap();
            sender.send(server.addrs()[0].port()).unwrap();
            server.run().await.unwrap();
        });
    });
    let port = receiver.recv().unwrap();
    (format!("http://127.0.0.1:{port}"), jobs)
}

fn answer(jobs: &Jobs, req: &HttpRequest) -> HttpResponse {
    let name = req.path().trim_start_matches("/jobs/").to_owned();
    match req.method().as_str() {
        "POST" => HttpResponse::Created().json(json!({"metadata": {"uid": "u"}})),
        "GET" => {
            let mut polls = jobs.polls.lock().unwrap();
            let seen = polls.entry(name).or_default();
            *seen += 1;
            let status = if *seen >= 2 { "Complete" } else { "Running" };
            HttpResponse::Ok().json(json!({"status": status}))
        }
        "DELETE" => {
            jobs.released.fetch_add(1, Ordering::SeqCst);
            HttpResponse::Ok().json(json!({}))
        }
        _ => HttpResponse::NotFound().finish(),
    }
}

fn manifest(base_url: &str) -> Value {
    json!({
        "apiVersion": "cattery/v1",
        "baseUrl": base_url,
        "limits": {"maxInFlight": CONCURRENCY, "maxQueued": 1_000_000, "timeoutMs": 10_000},
        "retry": {"maxAttempts": 5, "initialBackoffMs": 10, "maxBackoffMs": 100},
        "polling": {"intervalMs": 1, "maxIntervalMs": 1},
        "dispatch": {
            "request": {"method": "POST", "path": "/jobs", "body": {"name": "{{run.dispatchId}}", "spec": "{{input.job}}"}},
            "expect": [201]
        },
        "poll": {
            "request": {"method": "GET", "path": "/jobs/{{run.dispatchId}}"},
            "map": {"state": "status", "statusMap": {"Complete": "done"}}
        },
        "release": {"request": {"method": "DELETE", "path": "/jobs/{{run.dispatchId}}"}, "expect": [200]}
    })
}

/// A job of about 2 KB.
fn job(i: usize) -> Value {
    json!({"n": i, "prompt": "x".repeat(2_000)})
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on Linux.
    ticks as f64 / 100.0
}

struct Gateway {
    child: Child,
    base: String,
    _data_dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_gateway(db: &TestDatabase, client: &reqwest::Client) -> Gateway {
    let data_dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // CATTERY_BIN drives another build of the gateway (an earlier one, to compare).
    let bin =
        std::env::var("CATTERY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_cattery").to_owned());
    let child = Command::new(bin)
        .arg("serve")
        .env("CATTERY_DATABASE_URL", db.url())
        .env("CATTERY_BIND", format!("127.0.0.1:{port}"))
        .env("CATTERY__DATADIR", data_dir.path())
        .env("CATTERY__LOCALPOOL__ENABLED", "false")
        .env("CATTERY__EGRESS__ALLOWHTTP", "true")
        .env("CATTERY__EGRESS__ALLOWHOSTS", "[127.0.0.1]")
        .env("CATTERY__LOGGING__LEVEL", "warn")
        .env("CATTERY_MASTER_KEY", MASTER_KEY)
        .env("CATTERY_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    while !client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(start.elapsed() < Duration::from_secs(30), "no gateway");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Gateway {
        child,
        base,
        _data_dir: data_dir,
    }
}

/// Lifecycles per second and gateway CPU milliseconds per lifecycle.
async fn through_cattery(backend: TestBackend, lifecycles: usize) -> (f64, f64) {
    let client = cattery::scheduler::http::plain_client().unwrap();
    let db = TestDatabase::create(backend).await.unwrap();
    let gateway = start_gateway(&db, &client).await;
    let (scheduler, jobs) = start_scheduler();
    let registered = client
        .put(format!("{}/v1/pools/bench", gateway.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"manifest": manifest(&scheduler), "secrets": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status().as_u16(), 201);
    let cpu_before = cpu_seconds(gateway.child.id());
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let submitters: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (client, next, url) = (
                client.clone(),
                next.clone(),
                format!("{}/v1/pools/bench/runs", gateway.base),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= lifecycles {
                        return;
                    }
                    let response = client
                        .post(&url)
                        .bearer_auth(ADMIN_TOKEN)
                        .json(&json!({"jobId": format!("bench-{i}"), "job": job(i)}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status().as_u16(), 202);
                }
            })
        })
        .collect();
    for submitter in submitters {
        submitter.await.unwrap();
    }
    while jobs.released.load(Ordering::SeqCst) < lifecycles {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "runs did not finish"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(gateway.child.id()) - cpu_before;
    (
        lifecycles as f64 / seconds,
        cpu * 1000.0 / lifecycles as f64,
    )
}

/// The scheduler alone, sent the same calls per lifecycle by 64 concurrent clients.
async fn scheduler_alone(lifecycles: usize) -> f64 {
    let client = cattery::scheduler::http::plain_client().unwrap();
    let (scheduler, _jobs) = start_scheduler();
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (client, next, base) = (client.clone(), next.clone(), scheduler.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= lifecycles {
                        return;
                    }
                    let name = format!("raw-{i}");
                    let body = json!({"name": name, "spec": job(i)});
                    client
                        .post(format!("{base}/jobs"))
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    for _ in 0..2 {
                        client
                            .get(format!("{base}/jobs/{name}"))
                            .send()
                            .await
                            .unwrap();
                    }
                    client
                        .delete(format!("{base}/jobs/{name}"))
                        .send()
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    lifecycles as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    cattery::scheduler::http::install_crypto_provider();
    let lifecycles: usize = std::env::var("LIFECYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(4_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut backends = vec![("sqlite", TestBackend::Sqlite)];
    if cattery::store::testing::admin_url().is_some() {
        backends.push(("postgres", TestBackend::Postgres));
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "{lifecycles} lifecycles (2 KB job, dispatch, 2 polls, release), {CONCURRENCY} in flight; load average at start: {}",
        load.split(' ').take(3).collect::<Vec<_>>().join(" ")
    );
    let raw = runtime.block_on(scheduler_alone(lifecycles));
    let _ = writeln!(
        out,
        "| shape | lifecycles/s | gateway CPU ms per lifecycle | share of the scheduler's raw capacity |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    let _ = writeln!(out, "| the scheduler alone (raw capacity) | {raw:.0} | | |");
    for (name, backend) in backends {
        let (rate, cpu_ms) = runtime.block_on(through_cattery(backend, lifecycles));
        let _ = writeln!(
            out,
            "| cattery, {name}, submitted meanwhile | {rate:.0} | {cpu_ms:.2} | {:.1}% |",
            rate * 100.0 / raw
        );
    }
}
