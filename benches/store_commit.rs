//! Commit throughput of the run store: transitions committed one at a time versus many runs
//! committing at once (the single writer groups them into shared transactions).
//!
//! Run: `cargo bench --bench store_commit` (SQLite), and with
//! `TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres` for PostgreSQL too.
//! Both shapes are measured side by side in one run, on a fresh database each.
#![expect(clippy::unwrap_used, reason = "a benchmark stops on any setup error")]

use cattery::domain::ids::{JobId, PoolName};
use cattery::domain::run::{NewEvent, RunRecord, now_millis};
use cattery::domain::state::RunState;
use cattery::store::Store;
use cattery::store::testing::{TestBackend, TestDatabase};
use std::io::Write as _;
use std::time::Instant;

const RUNS: usize = 2_000;

fn run(i: usize) -> RunRecord {
    RunRecord::queued(
        JobId::parse(&format!("bench-{i}")).unwrap(),
        PoolName::parse("bench").unwrap(),
        now_millis(),
    )
}

fn transition(run: &RunRecord) -> (RunRecord, Vec<NewEvent>) {
    let mut next = run.clone();
    next.state = RunState::Dispatching;
    next.attempts.dispatch = 1;
    let event = NewEvent {
        job_id: run.job_id.clone(),
        at: now_millis(),
        kind: "transition".into(),
        from: Some(RunState::Queued),
        to: Some(RunState::Dispatching),
        detail: None,
    };
    (next, vec![event])
}

async fn fresh(backend: TestBackend) -> (TestDatabase, Store, Vec<RunRecord>) {
    let db = TestDatabase::create(backend).await.unwrap();
    let store = Store::connect(db.url(), 8).await.unwrap();
    let mut runs = Vec::new();
    for i in 0..RUNS {
        let record = run(i);
        let event = NewEvent {
            job_id: record.job_id.clone(),
            at: record.created_at,
            kind: "transition".into(),
            from: None,
            to: Some(RunState::Queued),
            detail: None,
        };
        store
            .insert_run(record.clone(), None, vec![event])
            .await
            .unwrap();
        runs.push(record);
    }
    (db, store, runs)
}

async fn one_at_a_time(backend: TestBackend) -> (f64, u64) {
    let (_db, store, runs) = fresh(backend).await;
    let before = store.write_transactions();
    let start = Instant::now();
    for run in &runs {
        let (next, events) = transition(run);
        store.commit(next, events).await.unwrap();
    }
    let seconds = start.elapsed().as_secs_f64();
    (RUNS as f64 / seconds, store.write_transactions() - before)
}

async fn all_at_once(backend: TestBackend) -> (f64, u64) {
    let (_db, store, runs) = fresh(backend).await;
    let before = store.write_transactions();
    let start = Instant::now();
    let tasks: Vec<_> = runs
        .iter()
        .map(|run| {
            let store = store.clone();
            let (next, events) = transition(run);
            tokio::spawn(async move { store.commit(next, events).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let seconds = start.elapsed().as_secs_f64();
    (RUNS as f64 / seconds, store.write_transactions() - before)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut backends = vec![("sqlite", TestBackend::Sqlite)];
    if cattery::store::testing::admin_url().is_some() {
        backends.push(("postgres", TestBackend::Postgres));
    }
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "{RUNS} run transitions committed (run row + one event each)"
    );
    let _ = writeln!(
        out,
        "| backend | one at a time (commits/s) | all at once (commits/s) | transactions (all at once) | ratio |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for (name, backend) in backends {
        let (sequential, _) = runtime.block_on(one_at_a_time(backend));
        let (grouped, transactions) = runtime.block_on(all_at_once(backend));
        let _ = writeln!(
            out,
            "| {name} | {sequential:.0} | {grouped:.0} | {transactions} for {RUNS} commits | {:.1}× |",
            grouped / sequential
        );
    }
}
