//! End-to-end run throughput: the real `cattery serve` process driving whole lifecycles against
//! a fast scheduler on loopback, next to that scheduler's raw capacity measured in the same run.
//!
//! One lifecycle is: `POST /v1/pools/bench/runs` with a 2 KB job, then cattery's dispatch
//! (`POST /jobs`), two polls (`Running`, then `Complete`) and the release (`DELETE`); the clock
//! stops when the scheduler has seen every release. Each shape runs on a fresh database, for
//! SQLite and, when `TEST_DATABASE_URL` is set, PostgreSQL:
//!
//! - `meanwhile`: runs submitted by 64 concurrent clients while earlier ones are driven (the
//!   pool's `maxInFlight` is 64).
//! - `queued`: every run is in the store, `queued`, before the clock starts. A first gateway
//!   accepts them against a scheduler address where a socket is held that never answers: 64
//!   runs hang in their dispatch, the rest wait in the queue, and no scheduler has seen a call.
//!   That gateway is killed (SIGKILL), the held socket's pending connections are dropped, and
//!   the same socket is handed to the fast scheduler, so the pool's stored `baseUrl` now reaches
//!   it. The clock starts when a new gateway process is spawned on the same database: it resumes
//!   the runs before it listens (re-registering the pool afterwards would come too late), asks
//!   the scheduler about the 64 caught in `dispatching` (a poll by `run.dispatchId`, answered
//!   404) and dispatches them. Recovery (spawn until `/readyz` answers) is reported apart.
//! - `one`: a single client submits a run and waits for its release before the next
//!   (`LIFECYCLES / 10` runs, at least 200).
//!
//! Per shape: lifecycles/s, the share of the scheduler's raw capacity (the scheduler alone, sent
//! the same four calls per lifecycle by as many concurrent clients as the shape has runs in
//! flight), the gateway's CPU time per lifecycle (`/proc/<pid>/stat`: the scheduler and the
//! clients run in this process and do not count), on PostgreSQL the server's CPU time per
//! lifecycle (see `support::probe::PgCpu` for what is counted), the gateway's resident memory
//! when ready and idle and at its peak (`VmRSS`, `VmHWM`), and the peak number of connections
//! from the gateway to the scheduler (sampled every 250 ms in `/proc/net/tcp`).
//!
//! Exactly once is checked after every shape: the scheduler keeps a ledger per job name, and each
//! run's job must have been created once, polled to `Complete` and released once, with a single
//! dispatch (`queued`: repeated dispatches are allowed only as answered 409 `alreadyExists`, the
//! manifest's idempotency, and are reported).
//!
//! Run: `cargo bench --bench lifecycle` (SQLite), and with
//! `TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres` for PostgreSQL too.
//! `LIFECYCLES` sets the number of runs per shape (default 4000); `SHAPES` a subset of the shapes
//! (`SHAPES=meanwhile,queued,one`); `CATTERY_BIN` runs another build of the gateway (to compare
//! builds with the same workload and scheduler).
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark stops on any setup error"
)]

mod support;

use cattery::store::testing::TestBackend;
use serde_json::{Value, json};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::probe::{self, ConnectionSampler, PgCpu};
use support::scheduler::{Ledger, Scheduler};
use support::shared::client::Api;
use support::shared::database::TestDatabase;
use support::shared::gateway::{Gateway, Launch};

/// Runs in flight in the `meanwhile` and `queued` shapes: the pool's `maxInFlight`, and the
/// number of submitting clients.
const CONCURRENCY: usize = 64;

/// The generous limit on any wait: no figure is asserted, only that the runs finish.
const LIMIT: Duration = Duration::from_secs(600);

/// The shapes of the workload.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Meanwhile,
    Queued,
    One,
}

impl Shape {
    const ALL: [Shape; 3] = [Shape::Meanwhile, Shape::Queued, Shape::One];

    /// The name `SHAPES` uses.
    fn key(self) -> &'static str {
        match self {
            Shape::Meanwhile => "meanwhile",
            Shape::Queued => "queued",
            Shape::One => "one",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Shape::Meanwhile => "submitted meanwhile, 64 in flight",
            Shape::Queued => "already queued, 64 in flight",
            Shape::One => "1 in flight",
        }
    }

    /// The shapes `SHAPES` names (a comma list), or all of them.
    fn selected() -> Vec<Shape> {
        let Some(list) = std::env::var("SHAPES")
            .ok()
            .filter(|s| !s.trim().is_empty())
        else {
            return Shape::ALL.to_vec();
        };
        let names: Vec<&str> = list.split(',').map(str::trim).collect();
        for name in &names {
            assert!(
                Shape::ALL.iter().any(|shape| shape.key() == *name),
                "SHAPES: unknown shape {name:?} (known: meanwhile, queued, one)"
            );
        }
        Shape::ALL
            .into_iter()
            .filter(|shape| names.contains(&shape.key()))
            .collect()
    }
}

/// The pool: at most 64 runs in flight, polls as fast as allowed. The dispatch names the job
/// after `run.dispatchId` and a name in use answers 409, which `alreadyExists` reads as "already
/// dispatched", so a repeated dispatch cannot make a second job. Its timeout is long so that
/// the `queued` shape's dispatches hang until the gateway is killed; the fast scheduler answers
/// long before any timeout.
fn manifest(base_url: &str) -> Value {
    json!({
        "apiVersion": "cattery/v1",
        "baseUrl": base_url,
        "limits": {"maxInFlight": CONCURRENCY, "maxQueued": 1_000_000, "timeoutMs": 10_000},
        "retry": {"maxAttempts": 5, "initialBackoffMs": 10, "maxBackoffMs": 100},
        "polling": {"intervalMs": 1, "maxIntervalMs": 1},
        "dispatch": {
            "request": {"method": "POST", "path": "/jobs", "body": {"name": "{{run.dispatchId}}", "spec": "{{input.job}}"}},
            "expect": [201],
            "alreadyExists": [409],
            "timeoutMs": 600_000
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

/// The run's `jobId`, which is also its first `run.dispatchId`: the job's name at the scheduler.
fn job_name(i: usize) -> String {
    format!("bench-{i}")
}

/// Submits run `i` to pool `bench`; it is durable once answered 202.
async fn submit(api: &Api, i: usize) {
    api.submit("bench", json!({"jobId": job_name(i), "job": job(i)}))
        .await;
}

/// Submits runs `0..lifecycles` from [`CONCURRENCY`] concurrent clients.
async fn submit_all(gateway: &Gateway, lifecycles: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let submitters: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (api, next) = (gateway.api.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= lifecycles {
                        return;
                    }
                    submit(&api, i).await;
                }
            })
        })
        .collect();
    for submitter in submitters {
        submitter.await.unwrap();
    }
}

/// Waits until the scheduler has seen `count` releases.
async fn wait_released(ledger: &Ledger, count: usize, gateway: &Gateway) {
    if !ledger.wait_released(count, LIMIT).await {
        panic!(
            "runs did not finish in {LIMIT:?}: {} of {count} released; the gateway's log:\n{}",
            ledger.released(),
            gateway.log_tail()
        );
    }
}

/// After a short pause (a late duplicate call would arrive in it), checks exactly once for runs
/// `0..lifecycles`; answers the repeated dispatches (see [`Ledger::verify`]).
async fn settle_and_verify(
    ledger: &Ledger,
    lifecycles: usize,
    repeats_allowed: bool,
) -> Vec<(String, u32)> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let names: Vec<String> = (0..lifecycles).map(job_name).collect();
    ledger.verify(&names, repeats_allowed)
}

/// One row's figures.
struct Figures {
    rate: f64,
    cpu_ms: f64,
    pg_cpu_ms: Option<f64>,
    rss_idle_mib: f64,
    rss_peak_mib: f64,
    peak_connections: usize,
}

/// A timed stretch of a shape, with everything measured over it.
struct Window {
    start: Instant,
    gateway_cpu: f64,
    pg: Option<PgCpu>,
    connections: ConnectionSampler,
}

impl Window {
    /// Starts the clock now; `gateway_cpu` is the gateway's CPU time so far.
    fn open(gateway_cpu: f64, database: Option<&str>, scheduler_port: u16) -> Window {
        Window {
            pg: database.map(PgCpu::start),
            connections: ConnectionSampler::start(scheduler_port),
            gateway_cpu,
            start: Instant::now(),
        }
    }

    /// Stops the clock at `end` (the last release) and reads the rest while the gateway still
    /// runs (its PostgreSQL backends with it).
    fn close(self, end: Instant, gateway: &Gateway, lifecycles: usize, rss_idle: f64) -> Figures {
        let seconds = (end - self.start).as_secs_f64();
        let per = lifecycles as f64;
        let cpu = probe::cpu_seconds(gateway.pid()) - self.gateway_cpu;
        Figures {
            rate: per / seconds,
            cpu_ms: cpu * 1000.0 / per,
            pg_cpu_ms: self.pg.map(|pg| pg.seconds() * 1000.0 / per),
            rss_idle_mib: rss_idle,
            rss_peak_mib: probe::memory_mib(gateway.pid(), "VmHWM"),
            peak_connections: self.connections.finish(),
        }
    }
}

/// A fresh database of `backend`, and what a shape needs to start gateways on it.
struct Setup {
    db: TestDatabase,
    database: Option<String>,
    data_dir: tempfile::TempDir,
}

impl Setup {
    async fn new(backend: TestBackend) -> Setup {
        let db = TestDatabase::create_on(backend).await;
        Setup {
            database: db.postgres_name(),
            db,
            data_dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A gateway process on this database, not ready yet; its warnings go to `data_dir/<log>`.
    /// `CATTERY_BIN` drives another build of the gateway (an earlier one, to compare).
    fn spawn(&self, log: &str) -> Gateway {
        let mut launch =
            Launch::new(&self.db, self.data_dir.path()).log_to(self.data_dir.path().join(log));
        if let Ok(bin) = std::env::var("CATTERY_BIN") {
            launch = launch.bin(PathBuf::from(bin));
        }
        Gateway::spawn(launch)
    }

    /// A gateway on this database, ready, with the pool `bench` registered against
    /// `scheduler`; and its resident memory then (idle).
    async fn gateway(&self, log: &str, scheduler: &str) -> (Gateway, f64) {
        let mut gateway = self.spawn(log);
        gateway.ready().await;
        gateway
            .register("bench", manifest(scheduler), json!({}))
            .await;
        let idle = probe::memory_mib(gateway.pid(), "VmRSS");
        (gateway, idle)
    }
}

/// Runs submitted by 64 clients while earlier ones are driven.
async fn submitted_meanwhile(backend: TestBackend, lifecycles: usize) -> Figures {
    let setup = Setup::new(backend).await;
    let scheduler = Scheduler::start();
    let (gateway, idle) = setup.gateway("gateway.log", &scheduler.base).await;
    let window = Window::open(
        probe::cpu_seconds(gateway.pid()),
        setup.database.as_deref(),
        scheduler.port,
    );
    submit_all(&gateway, lifecycles).await;
    wait_released(&scheduler.ledger, lifecycles, &gateway).await;
    let figures = window.close(Instant::now(), &gateway, lifecycles, idle);
    settle_and_verify(&scheduler.ledger, lifecycles, false).await;
    figures
}

/// One run at a time: submit, wait for its release, next.
async fn one_in_flight(backend: TestBackend, lifecycles: usize) -> Figures {
    let setup = Setup::new(backend).await;
    let scheduler = Scheduler::start();
    let (gateway, idle) = setup.gateway("gateway.log", &scheduler.base).await;
    let window = Window::open(
        probe::cpu_seconds(gateway.pid()),
        setup.database.as_deref(),
        scheduler.port,
    );
    for i in 0..lifecycles {
        submit(&gateway, i).await;
        wait_released(&scheduler.ledger, i + 1, &gateway).await;
    }
    let figures = window.close(Instant::now(), &gateway, lifecycles, idle);
    settle_and_verify(&scheduler.ledger, lifecycles, false).await;
    figures
}

/// What the `queued` shape reports besides its row.
struct Recovery {
    /// Spawn of the new gateway until `/readyz` answered.
    ready_after: Duration,
    /// Dispatches hanging on the held socket when the first gateway was killed.
    held: usize,
    /// Polls the scheduler answered 404 (the new gateway asking about jobs it may have created).
    unknown_polls: usize,
    /// Releases the scheduler had seen when `/readyz` first answered.
    released_at_ready: usize,
    /// Lifecycles per second from `/readyz` to the last release, over the runs released then.
    rate_from_ready: f64,
    /// Jobs whose dispatch came more than once (answered 409), with their `POST` counts.
    repeated: Vec<(String, u32)>,
}

/// Every run already `queued` in the store when a fresh gateway starts (see the module docs).
async fn already_queued(backend: TestBackend, lifecycles: usize) -> (Figures, Recovery) {
    let setup = Setup::new(backend).await;
    // The socket the first gateway dispatches to: the kernel completes its connections, and
    // nothing ever reads them, so every dispatch hangs with nothing reaching any scheduler.
    let held_socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held_socket.local_addr().unwrap().port();
    let (mut first, idle) = setup
        .gateway("first.log", &format!("http://127.0.0.1:{port}"))
        .await;
    submit_all(&first, lifecycles).await;
    let hanging = lifecycles.min(CONCURRENCY);
    let since = Instant::now();
    while probe::connections_to(port) < hanging && since.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let held = probe::connections_to(port);
    first.kill9();
    // The dead gateway's connections still wait to be accepted, their requests unread: drop
    // them unread, so that the scheduler never sees a call of the first gateway.
    held_socket.set_nonblocking(true).unwrap();
    // Accepted (or reset before it could be): closed unread.
    for _ in 0..100_000 {
        if held_socket
            .accept()
            .is_err_and(|err| err.kind() == std::io::ErrorKind::WouldBlock)
        {
            break;
        }
    }
    if let Some(database) = &setup.database {
        // The instance lock is free once the killed gateway's backends are gone.
        probe::wait_backends_gone(database, Duration::from_secs(30));
    }
    let scheduler = Scheduler::on(held_socket);

    let window = Window::open(0.0, setup.database.as_deref(), port);
    let mut gateway = setup.spawn("second.log");
    let ready_after = gateway.ready().await;
    let released_at_ready = scheduler.ledger.released();
    wait_released(&scheduler.ledger, lifecycles, &gateway).await;
    let end = Instant::now();
    let from_ready = end - (gateway.spawned + ready_after);
    let figures = window.close(end, &gateway, lifecycles, idle);
    let repeated = settle_and_verify(&scheduler.ledger, lifecycles, true).await;
    let recovery = Recovery {
        ready_after,
        held,
        unknown_polls: scheduler.ledger.unknown_polls(),
        released_at_ready,
        rate_from_ready: (lifecycles - released_at_ready) as f64 / from_ready.as_secs_f64(),
        repeated,
    };
    (figures, recovery)
}

/// The scheduler alone, sent the same calls per lifecycle by `clients` concurrent clients.
async fn scheduler_alone(lifecycles: usize, clients: usize) -> f64 {
    let client = cattery::scheduler::http::plain_client().unwrap();
    let scheduler = Scheduler::start();
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (client, next, base) = (client.clone(), next.clone(), scheduler.base.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= lifecycles {
                        return;
                    }
                    let name = job_name(i);
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
    let rate = lifecycles as f64 / start.elapsed().as_secs_f64();
    scheduler
        .ledger
        .verify(&(0..lifecycles).map(job_name).collect::<Vec<_>>(), false);
    rate
}

fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split(' ').take(3).collect::<Vec<_>>().join(" ")
}

fn row(out: &mut std::io::Stdout, shape: Shape, backend: &str, raw: f64, figures: &Figures) {
    let pg = figures
        .pg_cpu_ms
        .map_or_else(|| "–".to_owned(), |ms| format!("{ms:.2}"));
    let _ = writeln!(
        out,
        "| {} | {backend} | {:.0} | {:.1}% | {:.2} | {pg} | {:.1} / {:.1} | {} |",
        shape.label(),
        figures.rate,
        figures.rate * 100.0 / raw,
        figures.cpu_ms,
        figures.rss_idle_mib,
        figures.rss_peak_mib,
        figures.peak_connections,
    );
    let _ = out.flush();
}

fn main() {
    cattery::scheduler::http::install_crypto_provider();
    let lifecycles: usize = std::env::var("LIFECYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(4_000);
    // A tenth at one in flight, at least 200 (or all of them, when fewer were asked for).
    let one_lifecycles = (lifecycles / 10).max(lifecycles.min(200));
    let shapes = Shape::selected();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut backends = vec![("sqlite", TestBackend::Sqlite)];
    if cattery::store::testing::admin_url().is_some() {
        backends.push(("postgres", TestBackend::Postgres));
    }
    let load_at_start = load_average();
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "{lifecycles} lifecycles per shape at {CONCURRENCY} in flight, {one_lifecycles} at 1 in flight (2 KB job, dispatch, 2 polls, release), each shape on a fresh database\n"
    );
    let _ = writeln!(
        out,
        "| shape | backend | lifecycles/s | share of the scheduler's raw capacity | gateway CPU ms per lifecycle | PostgreSQL CPU ms per lifecycle | gateway RSS idle / peak MiB | peak connections to the scheduler |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    let wide = shapes.iter().any(|shape| *shape != Shape::One);
    let raw_wide = wide.then(|| runtime.block_on(scheduler_alone(lifecycles, CONCURRENCY)));
    let raw_one = shapes
        .contains(&Shape::One)
        .then(|| runtime.block_on(scheduler_alone(one_lifecycles, 1)));
    for (raw, concurrency) in [(raw_wide, CONCURRENCY), (raw_one, 1)] {
        if let Some(raw) = raw {
            let _ = writeln!(
                out,
                "| the scheduler alone, {concurrency} in flight (raw capacity) | – | {raw:.0} | | | | | |"
            );
        }
    }
    let _ = out.flush();
    let mut notes = Vec::new();
    for (name, backend) in backends {
        for &shape in &shapes {
            match shape {
                Shape::Meanwhile => {
                    let figures = runtime.block_on(submitted_meanwhile(backend, lifecycles));
                    row(&mut out, shape, name, raw_wide.unwrap(), &figures);
                }
                Shape::Queued => {
                    let (figures, recovery) = runtime.block_on(already_queued(backend, lifecycles));
                    row(&mut out, shape, name, raw_wide.unwrap(), &figures);
                    notes.push(format!(
                        "Already queued, {name}: recovery (new gateway spawned until /readyz answered) {} ms, included in the rate; {} dispatches were hanging when the first gateway was killed, and the new one asked about {} jobs (polls answered 404) before dispatching; {} runs released before /readyz; from /readyz to the last release {:.0} lifecycles/s; idle RSS is the first gateway's.{}",
                        recovery.ready_after.as_millis(),
                        recovery.held,
                        recovery.unknown_polls,
                        recovery.released_at_ready,
                        recovery.rate_from_ready,
                        if recovery.repeated.is_empty() {
                            " Every job was dispatched once.".to_owned()
                        } else {
                            format!(
                                " Dispatched again (answered 409 alreadyExists, each job exists once): {} jobs, e.g. {:?}.",
                                recovery.repeated.len(),
                                &recovery.repeated[..recovery.repeated.len().min(5)]
                            )
                        }
                    ));
                }
                Shape::One => {
                    let figures = runtime.block_on(one_in_flight(backend, one_lifecycles));
                    row(&mut out, shape, name, raw_one.unwrap(), &figures);
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "\nLoad average at the start: {load_at_start}; at the end: {}.",
        load_average()
    );
    for note in notes {
        let _ = writeln!(out, "{note}");
    }
    let _ = writeln!(
        out,
        "Exactly once held in every shape: each run's job created once, polled to Complete, released once."
    );
}
