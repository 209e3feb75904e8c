//! Store tests against real databases: a temporary SQLite file, and PostgreSQL when configured.
//!
//! Every behaviour is checked on the backend the environment names: a temporary SQLite file, or a
//! fresh PostgreSQL database when `TEST_DATABASE_URL` is set. `scripts/test.sh` runs the suite
//! once without it and once with it, so every behaviour is proven on both.

use super::testing::{TestBackend, TestDatabase};
use super::*;
use crate::domain::run::{Attempts, Progress, ReleaseState};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

async fn open(backend: TestBackend) -> (TestDatabase, Store) {
    if backend == TestBackend::Postgres && testing::admin_url().is_none() {
        panic!(
            "this test needs PostgreSQL: set TEST_DATABASE_URL, e.g. postgres://postgres@127.0.0.1:5432/postgres"
        );
    }
    let db = TestDatabase::create(backend).await.expect("test database");
    let store = Store::connect(db.url(), 4).await.expect("connect");
    (db, store)
}

fn pool_name(name: &str) -> PoolName {
    PoolName::parse(name).unwrap()
}

fn job_id(id: &str) -> JobId {
    JobId::parse(id).unwrap()
}

/// A run with every optional field empty.
fn bare_run(id: &str, pool: &str, created_at: Millis) -> RunRecord {
    RunRecord {
        job_id: job_id(id),
        pool: pool_name(pool),
        kind: None,
        labels: serde_json::Map::new(),
        request_digest: format!("digest-of-{id}"),
        deadline_at: None,
        callback_url: None,
        state: RunState::Queued,
        scheduler_state: None,
        external_id: None,
        dispatch_id: id.to_owned(),
        captures: serde_json::Map::new(),
        progress: None,
        result: None,
        error: None,
        failure_cause: None,
        detail: None,
        heartbeat_at: None,
        fields: serde_json::Map::new(),
        cancel_requested: false,
        release: ReleaseState::NotYet,
        attempts: Attempts::default(),
        poll_errors: 0,
        poll_interval_ms: 1000,
        next_at: None,
        unmapped_seen: false,
        manifest_revision: 1,
        priority: 0,
        created_at,
        dispatched_at: None,
        finished_at: None,
        updated_at: created_at,
        version: 0,
    }
}

/// A run with every field set, including awkward text.
fn full_run(id: &str, pool: &str) -> RunRecord {
    let labels = json!({"team": "core", "quote": "a\"b'c", "unicode": "héllo ✓"});
    let captures = json!({"name": "job-abc", "uid": 42, "nested": {"a": [1, 2, null]}});
    RunRecord {
        job_id: job_id(id),
        pool: pool_name(pool),
        kind: Some("agent".to_owned()),
        labels: labels.as_object().unwrap().clone(),
        request_digest: "ab".repeat(32),
        deadline_at: Some(1_900_000_000_123),
        callback_url: Some("https://example.com/hook?x=1&y=?".to_owned()),
        state: RunState::Running,
        scheduler_state: Some("Running".to_owned()),
        external_id: Some("ext-123".to_owned()),
        dispatch_id: format!("{id}-2"),
        captures: captures.as_object().unwrap().clone(),
        progress: Some(Progress {
            completed: 3,
            in_progress: 1,
            total: 8,
        }),
        result: Some(json!({"ok": true, "items": [1, "two", 3.5]})),
        error: Some("exit code 3; see logs".to_owned()),
        failure_cause: Some("oom".to_owned()),
        detail: Some("line one\nline two".to_owned()),
        heartbeat_at: Some("2026-11-29T12:00:00Z".to_owned()),
        fields: json!({"phase": "clone", "followUps": [{"kind": "question", "title": "é?"}]})
            .as_object()
            .unwrap()
            .clone(),
        cancel_requested: true,
        release: ReleaseState::Pending,
        attempts: Attempts {
            dispatch: 2,
            poll: 17,
            release: 1,
            redispatch: 1,
        },
        poll_errors: 4,
        poll_interval_ms: 2500,
        next_at: Some(1_800_000_000_999),
        unmapped_seen: true,
        manifest_revision: 7,
        priority: -7,
        created_at: 1_700_000_000_001,
        dispatched_at: Some(1_700_000_000_500),
        finished_at: Some(1_700_000_100_000),
        updated_at: 1_700_000_200_000,
        version: 0,
    }
}

fn created_event(run: &RunRecord) -> NewEvent {
    NewEvent {
        job_id: run.job_id.clone(),
        at: run.created_at,
        kind: "created".to_owned(),
        from: None,
        to: Some(run.state),
        detail: None,
    }
}

fn transition(run: &RunRecord, from: RunState, to: RunState, detail: &str) -> NewEvent {
    NewEvent {
        job_id: run.job_id.clone(),
        at: run.updated_at,
        kind: "transition".to_owned(),
        from: Some(from),
        to: Some(to),
        detail: Some(detail.to_owned()),
    }
}

async fn insert(store: &Store, run: &RunRecord) -> EventRecord {
    match store
        .insert_run(
            run.clone(),
            Some(b"sealed".to_vec()),
            vec![created_event(run)],
        )
        .await
        .unwrap()
    {
        InsertOutcome::Inserted(mut events) => events.remove(0),
        InsertOutcome::Existing(_) => panic!("{} already existed", run.job_id),
    }
}

fn pool_record(name: &str, digest: &str, updated_at: Millis) -> PoolRecord {
    PoolRecord {
        name: pool_name(name),
        revision: 99,
        digest: digest.to_owned(),
        format: "cattery/v1".to_owned(),
        manifest: format!("{{\"digest\":\"{digest}\"}}"),
        secrets_sealed: vec![1, 2, 3, 0, 255],
        secret_keys: vec!["TOKEN".to_owned(), "USER".to_owned()],
        warnings: "[]".to_owned(),
        created_at: 5,
        updated_at,
    }
}

// ---- the behaviours, each run on both backends ----

async fn migrations_run_at_connect_and_are_idempotent(backend: TestBackend) {
    let (_db, store) = open(backend).await;
    let expected = match backend {
        TestBackend::Sqlite => "sqlite",
        TestBackend::Postgres => "postgres",
    };
    assert_eq!(store.backend_name(), expected);
    assert_eq!(store.migrate().await.unwrap(), 0);
    store.ping().await.unwrap();
    assert!(store.list_pools().await.unwrap().is_empty());
    assert!(store.load_unfinished().await.unwrap().is_empty());
}

async fn migrations_revert_and_apply_again(backend: TestBackend) {
    let (_db, store) = open(backend).await;
    insert(&store, &bare_run("before-revert", "p", 1)).await;
    let reverted = store.with_conn(migrate::revert_all).await.unwrap();
    assert!(reverted >= 1);
    assert!(store.get_run(&job_id("before-revert")).await.is_err());
    let applied = store.migrate().await.unwrap();
    assert_eq!(applied, reverted);
    assert_eq!(store.get_run(&job_id("before-revert")).await.unwrap(), None);
    insert(&store, &bare_run("after-reapply", "p", 2)).await;
}

async fn a_run_with_every_field_set_round_trips(backend: TestBackend) {
    let (_db, store) = open(backend).await;
    let run = full_run("exec-42.coder_x", "k8s-prod");
    let event = insert(&store, &run).await;
    assert_eq!(event.pool, run.pool);
    assert_eq!(event.event, created_event(&run));
    assert_eq!(store.get_run(&run.job_id).await.unwrap(), Some(run.clone()));
    assert_eq!(
        store.get_job_sealed(&run.job_id).await.unwrap(),
        Some(b"sealed".to_vec())
    );
}

async fn a_run_with_every_optional_field_empty_round_trips(backend: TestBackend) {
    let (_db, store) = open(backend).await;
    let run = bare_run("bare", "p", 10);
    let outcome = store
        .insert_run(run.clone(), None, vec![created_event(&run)])
        .await
        .unwrap();
    assert!(matches!(outcome, InsertOutcome::Inserted(_)));
    assert_eq!(store.get_run(&run.job_id).await.unwrap(), Some(run.clone()));
    assert_eq!(store.get_job_sealed(&run.job_id).await.unwrap(), None);
    assert_eq!(store.get_run(&job_id("missing")).await.unwrap(), None);
}

async fn a_commit_overwrites_the_run_and_appends_its_events(backend: TestBackend) {
    let (_db, store) = open(backend).await;
    let run = bare_run("job-1", "p", 100);
    let created = insert(&store, &run).await;

    let mut updated = full_run("job-1", "p");
    updated.created_at = 999_999; // immutable: the stored creation time stays
    // Mutable all the same: a quarantine resets labels, and a digest may be rewritten.
    assert_ne!(updated.labels, run.labels);
    assert_ne!(updated.request_digest, run.request_digest);
    let events = vec![
        transition(
            &updated,
            RunState::Queued,
            RunState::Dispatching,
            "slot free",
        ),
        transition(
            &updated,
            RunState::Dispatching,
            RunState::Running,
            "accepted",
        ),
    ];
    let stored = store.commit(updated.clone(), events.clone()).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert!(created.seq < stored[0].seq && stored[0].seq < stored[1].seq);
    assert_eq!(stored[1].event, events[1]);

    // What is set only at creation keeps its stored value; everything else is overwritten.
    let mut expected = updated.committed();
    expected.created_at = 100;
    expected.kind = None;
    expected.deadline_at = None;
    expected.callback_url = None;
    expected.priority = 0;
    assert_eq!(store.get_run(&run.job_id).await.unwrap(), Some(expected));
    // The job body is not part of a commit.
    assert_eq!(
        store.get_job_sealed(&run.job_id).await.unwrap(),
        Some(b"sealed".to_vec())
    );
    let history = store.run_events(&run.job_id).await.unwrap();
    assert_eq!(
        history.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![created.seq, stored[0].seq, stored[1].seq]
    );
    assert_eq!(history[0], created);
}

async fn inserting_the_same_job_twice_returns_the_existing_run_and_writes_nothing(
    backend: TestBackend,
) {
    let (_db, store) = open(backend).await;
    let run = bare_run("dup", "p", 1);
    insert(&store, &run).await;

    let mut other = full_run("dup", "q");
    other.created_at = 2;
    let outcome = store
        .insert_run(
            other.clone(),
            Some(b"other".to_vec()),
            vec![created_event(&other)],
        )
        .await
        .unwrap();
    assert_eq!(outcome, InsertOutcome::Existing(run.clone()));
    assert_eq!(store.get_run(&run.job_id).await.unwrap(), Some(run.clone()));
    assert_eq!(
        store.get_job_sealed(&run.job_id).await.unwrap(),
        Some(b"sealed".to_vec())
    );
    assert_eq!(store.run_events(&run.job_id).await.unwrap().len(), 1);

    // Racing duplicates (most of them written in one group commit): exactly one is inserted,
    // with its own body and its one event; the others get the stored run back.
    let racers: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            let run = bare_run("raced", "p", 5);
            tokio::spawn(async move {
                let body = format!("body-{i}").into_bytes();
                let outcome = store
                    .insert_run(run.clone(), Some(body.clone()), vec![created_event(&run)])
                    .await
                    .unwrap();
                (outcome, body)
            })
        })
        .collect();
    let mut inserted = Vec::new();
    for racer in racers {
        match racer.await.unwrap() {
            (InsertOutcome::Inserted(events), body) => inserted.push((events, body)),
            (InsertOutcome::Existing(stored), _) => assert_eq!(stored.job_id.as_str(), "raced"),
        }
    }
    assert_eq!(inserted.len(), 1);
    let (events, body) = inserted.remove(0);
    assert_eq!(events.len(), 1);
    let raced = JobId::parse("raced").unwrap();
    assert_eq!(store.get_job_sealed(&raced).await.unwrap(), Some(body));
    assert_eq!(store.run_events(&raced).await.unwrap().len(), 1);
    assert_eq!(store.run_events(&job_id("raced")).await.unwrap().len(), 1);
}

async fn list_runs_pages_newest_first_without_gaps_or_duplicates(backend: TestBackend) {
    let (_db, store) = open(backend).await;
    // 25 runs over 2 pools and 2 states, with ties on created_at.
    let mut all = Vec::new();
    for i in 0..25 {
        let pool = if i % 2 == 0 { "even" } else { "odd" };
        let mut run = bare_run(&format!("run-{i:02}"), pool, 1000 + i / 3);
        if i % 5 == 0 {
            run.state = RunState::Done;
        }
        insert(&store, &run).await;
        all.push(run);
    }
    let mut expected = all.clone();
    expected.sort_by(|a, b| (b.created_at, &b.job_id).cmp(&(a.created_at, &a.job_id)));

    let collect = |filter: RunFilter| {
        let store = store.clone();
        async move {
            let mut seen = Vec::new();
            let mut filter = filter;
            loop {
                let page = store.list_runs(filter.clone()).await.unwrap();
                assert!(page.runs.len() <= filter.limit as usize);
                seen.extend(page.runs.into_iter().map(|r| r.job_id));
                match page.next {
                    Some(next) => filter.after = Some(next),
                    None => break seen,
                }
            }
        }
    };

    let ids = |runs: Vec<&RunRecord>| {
        runs.into_iter()
            .map(|r| r.job_id.clone())
            .collect::<Vec<_>>()
    };
    let everything = collect(RunFilter {
        limit: 4,
        ..RunFilter::default()
    })
    .await;
    assert_eq!(everything, ids(expected.iter().collect()));

    let odd = collect(RunFilter {
        pool: Some(pool_name("odd")),
        limit: 3,
        ..RunFilter::default()
    })
    .await;
    assert_eq!(
        odd,
        ids(expected
            .iter()
            .filter(|r| r.pool.as_str() == "odd")
            .collect())
    );

    let done_even = collect(RunFilter {
        pool: Some(pool_name("even")),
        state: Some(RunState::Done),
        limit: 1,
        after: None,
    })
    .await;
    assert_eq!(
        done_even,
        ids(expected
            .iter()
            .filter(|r| r.pool.as_str() == "even" && r.state == RunState::Done)
            .collect())
    );

    // An exact fit has no next page; limit 0 is treated as 1.
    let one_page = store
        .list_runs(RunFilter {
            limit: 25,
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(one_page.runs.len(), 25);
    assert_eq!(one_page.next, None);
    let tiny = store
        .list_runs(RunFilter {
            limit: 0,
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(tiny.runs.len(), 1);

    let bad = store
        .list_runs(RunFilter {
            after: Some("not a cursor".to_owned()),
            ..RunFilter::default()
        })
        .await;
    assert!(matches!(bad, Err(StoreError::BadCursor)));
}

async fn load_unfinished_returns_runs_that_need_work_oldest_first(backend: TestBackend) {
    let (_db, store) = open(backend).await;
    let cases = [
        ("queued", RunState::Queued, ReleaseState::NotYet, true),
        (
            "dispatching",
            RunState::Dispatching,
            ReleaseState::NotYet,
            true,
        ),
        ("pending", RunState::Pending, ReleaseState::NotYet, true),
        ("running", RunState::Running, ReleaseState::NotYet, true),
        ("done-released", RunState::Done, ReleaseState::Done, false),
        (
            "done-release-due",
            RunState::Done,
            ReleaseState::Pending,
            true,
        ),
        (
            "failed-gave-up",
            RunState::Failed,
            ReleaseState::GaveUp,
            false,
        ),
        (
            "cancelled-release-due",
            RunState::Cancelled,
            ReleaseState::Pending,
            true,
        ),
        (
            "cancelled",
            RunState::Cancelled,
            ReleaseState::NotNeeded,
            false,
        ),
    ];
    let mut expected = Vec::new();
    // Inserted newest first, so that "oldest first" is not insertion order.
    for (i, (id, state, release, needs_work)) in cases.iter().enumerate().rev() {
        let mut run = bare_run(id, "p", 100 + i as i64);
        run.state = *state;
        run.release = *release;
        assert_eq!(run.needs_work(), *needs_work);
        insert(&store, &run).await;
        if *needs_work {
            expected.push(run);
        }
    }
    expected.reverse();
    assert_eq!(store.load_unfinished().await.unwrap(), expected);

    // One pool's share: only its runs, in the same order.
    let mut other = bare_run("other-pool-running", "q", 50);
    other.state = RunState::Running;
    insert(&store, &other).await;
    let mut finished = bare_run("other-pool-done", "q", 51);
    finished.state = RunState::Done;
    finished.release = ReleaseState::Done;
    insert(&store, &finished).await;
    assert_eq!(
        store.load_unfinished_of(&pool_name("p")).await.unwrap(),
        expected
    );
    assert_eq!(
        store.load_unfinished_of(&pool_name("q")).await.unwrap(),
        vec![other]
    );
    assert!(
        store
            .load_unfinished_of(&pool_name("none"))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn pool_stats_count_runs_by_state_group(backend: TestBackend) {
    let (_db, store) = open(backend).await;
    let states = [
        RunState::Queued,
        RunState::Queued,
        RunState::Dispatching,
        RunState::Pending,
        RunState::Running,
        RunState::Done,
        RunState::Failed,
        RunState::Failed,
        RunState::Cancelled,
    ];
    for (i, state) in states.iter().enumerate() {
        let mut run = bare_run(&format!("a-{i}"), "a", i as i64);
        run.state = *state;
        insert(&store, &run).await;
    }
    insert(&store, &bare_run("b-0", "b", 0)).await;
    assert_eq!(
        store.pool_stats(&pool_name("a")).await.unwrap(),
        PoolStats {
            queued: 2,
            in_flight: 3,
            done: 1,
            failed: 2,
            cancelled: 1
        }
    );
    assert_eq!(store.count_active(&pool_name("a")).await.unwrap(), (2, 3));
    assert_eq!(store.count_active(&pool_name("b")).await.unwrap(), (1, 0));
    assert_eq!(
        store.pool_stats(&pool_name("none")).await.unwrap(),
        PoolStats::default()
    );
}

async fn unfinished_runs_are_counted_by_pool_and_state_with_those_past_their_deadline(
    backend: TestBackend,
) {
    let (_db, store) = open(backend).await;
    let now = 1_000_000;
    let runs = [
        ("a-0", "a", RunState::Queued, Some(now - 1)),
        ("a-1", "a", RunState::Queued, Some(now + 1)),
        ("a-2", "a", RunState::Queued, None),
        ("a-3", "a", RunState::Running, Some(now)),
        ("a-4", "a", RunState::Done, Some(now - 1)),
        ("b-0", "b", RunState::Dispatching, None),
        ("b-1", "b", RunState::Failed, None),
    ];
    for (i, (id, pool, state, deadline)) in runs.into_iter().enumerate() {
        let mut run = bare_run(id, pool, i as i64);
        run.state = state;
        run.deadline_at = deadline;
        insert(&store, &run).await;
    }
    let mut counts = store.count_unfinished(now).await.unwrap();
    counts.sort_by(|x, y| (&x.pool, x.state as u8).cmp(&(&y.pool, y.state as u8)));
    let count = |pool: &str, state, runs, past_deadline| UnfinishedCount {
        pool: pool_name(pool),
        state,
        runs,
        past_deadline,
    };
    assert_eq!(
        counts,
        vec![
            count("a", RunState::Queued, 3, 1),
            count("a", RunState::Running, 1, 1),
            count("b", RunState::Dispatching, 1, 0),
        ]
    );
}

async fn concurrent_commits_all_land_in_fewer_transactions(backend: TestBackend) {
    const RUNS: usize = 500;
    let (_db, store) = open(backend).await;
    let runs: Vec<RunRecord> = (0..RUNS)
        .map(|i| {
            bare_run(
                &format!("many-{i:03}"),
                if i % 2 == 0 { "x" } else { "y" },
                i as i64,
            )
        })
        .collect();

    let inserts: Vec<_> = runs
        .iter()
        .cloned()
        .map(|run| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .insert_run(run.clone(), None, vec![created_event(&run)])
                    .await
                    .unwrap()
            })
        })
        .collect();
    for task in inserts {
        assert!(matches!(task.await.unwrap(), InsertOutcome::Inserted(_)));
    }

    let before = store.write_transactions();
    let commits: Vec<_> = runs
        .iter()
        .cloned()
        .map(|mut run| {
            let store = store.clone();
            tokio::spawn(async move {
                run.state = RunState::Running;
                run.attempts.dispatch = 1;
                run.updated_at += 1;
                let events = vec![
                    transition(&run, RunState::Queued, RunState::Dispatching, "slot"),
                    transition(&run, RunState::Dispatching, RunState::Running, "accepted"),
                ];
                store.commit(run, events).await.unwrap()
            })
        })
        .collect();
    let mut seqs = BTreeSet::new();
    for task in commits {
        let events = task.await.unwrap();
        assert_eq!(events.len(), 2);
        assert!(events[0].seq < events[1].seq);
        for event in events {
            assert!(
                seqs.insert(event.seq),
                "sequence number {} reused",
                event.seq
            );
        }
    }
    let transactions = store.write_transactions() - before;
    assert!(
        transactions < RUNS as u64,
        "{RUNS} commits took {transactions} transactions"
    );

    for run in &runs {
        let stored = store.get_run(&run.job_id).await.unwrap().unwrap();
        assert_eq!(stored.state, RunState::Running);
        assert_eq!(stored.attempts.dispatch, 1);
        let history = store.run_events(&run.job_id).await.unwrap();
        assert_eq!(history.len(), 3, "{}", run.job_id);
        assert!(history.windows(2).all(|w| w[0].seq < w[1].seq));
    }
    let stats = store.pool_stats(&pool_name("x")).await.unwrap();
    assert_eq!(stats.in_flight, (RUNS / 2) as i64);

    // The global log reads back in strictly increasing order with nothing missing.
    let mut after = 0;
    let mut total = 0;
    loop {
        let page = store.events_after(after, None, None, 333).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.windows(2).all(|w| w[0].seq < w[1].seq));
        assert!(page[0].seq > after);
        after = page.last().unwrap().seq;
        total += page.len();
    }
    assert_eq!(total, RUNS * 3);
}

async fn a_failing_commit_does_not_fail_the_others_grouped_with_it(backend: TestBackend) {
    let (_db, store) = open(backend).await;
    let runs: Vec<RunRecord> = (0..50)
        .map(|i| bare_run(&format!("ok-{i}"), "p", i))
        .collect();
    for run in &runs {
        insert(&store, run).await;
    }
    let ghost = bare_run("ghost", "p", 0);
    let mut tasks = Vec::new();
    for (i, run) in runs.iter().cloned().enumerate() {
        if i == 25 {
            let store = store.clone();
            let ghost = ghost.clone();
            tasks.push(tokio::spawn(async move {
                let event = transition(&ghost, RunState::Queued, RunState::Cancelled, "x");
                store.commit(ghost, vec![event]).await.map(|_| ())
            }));
        }
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut run = run;
            run.state = RunState::Cancelled;
            let event = transition(&run, RunState::Queued, RunState::Cancelled, "cancel");
            store.commit(run, vec![event]).await.map(|_| ())
        }));
    }
    let mut failures = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => {}
            Err(StoreError::NotFound { what }) => {
                assert!(what.contains("ghost"));
                failures += 1;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(failures, 1);
    assert_eq!(store.get_run(&ghost.job_id).await.unwrap(), None);
    assert!(store.run_events(&ghost.job_id).await.unwrap().is_empty());
    for run in &runs {
        let stored = store.get_run(&run.job_id).await.unwrap().unwrap();
        assert_eq!(stored.state, RunState::Cancelled);
        assert_eq!(store.run_events(&run.job_id).await.unwrap().len(), 2);
    }
}

async fn an_event_of_another_run_is_refused(backend: TestBackend) {
    let (_db, store) = open(backend).await;
    let a = bare_run("a", "p", 1);
    let b = bare_run("b", "p", 2);
    insert(&store, &a).await;
    insert(&store, &b).await;
    let wrong = transition(&b, RunState::Queued, RunState::Running, "x");
    let mut changed = a.clone();
    changed.state = RunState::Running;
    assert!(matches!(
        store.commit(changed, vec![wrong.clone()]).await,
        Err(StoreError::Invalid { .. })
    ));
    assert_eq!(store.get_run(&a.job_id).await.unwrap(), Some(a.clone()));
    let c = bare_run("c", "p", 3);
    assert!(matches!(
        store.insert_run(c.clone(), None, vec![wrong]).await,
        Err(StoreError::Invalid { .. })
    ));
    assert_eq!(store.get_run(&c.job_id).await.unwrap(), None);
}

async fn events_after_resumes_from_a_sequence_number_and_filters(backend: TestBackend) {
    let (_db, store) = open(backend).await;
    let a = bare_run("ev-a", "one", 1);
    let b = bare_run("ev-b", "two", 2);
    let c = bare_run("ev-c", "one", 3);
    let first = insert(&store, &a).await;
    insert(&store, &b).await;
    insert(&store, &c).await;
    for run in [&a, &b, &c] {
        let mut next = run.clone();
        next.state = RunState::Dispatching;
        store
            .commit(
                next,
                vec![transition(
                    run,
                    RunState::Queued,
                    RunState::Dispatching,
                    "go",
                )],
            )
            .await
            .unwrap();
    }

    let all = store.events_after(0, None, None, 100).await.unwrap();
    assert_eq!(all.len(), 6);
    assert_eq!(all[0], first);
    let rest = store
        .events_after(all[2].seq, None, None, 100)
        .await
        .unwrap();
    assert_eq!(rest, all[3..].to_vec());
    let limited = store.events_after(0, None, None, 2).await.unwrap();
    assert_eq!(limited, all[..2].to_vec());

    let one = pool_name("one");
    let of_pool = store.events_after(0, Some(&one), None, 100).await.unwrap();
    assert_eq!(of_pool.len(), 4);
    assert!(of_pool.iter().all(|e| e.pool == one));
    let of_run = store
        .events_after(first.seq, Some(&one), Some(&a.job_id), 100)
        .await
        .unwrap();
    assert_eq!(of_run.len(), 1);
    assert_eq!(of_run[0].event.job_id, a.job_id);
    assert_eq!(of_run[0].event.from, Some(RunState::Queued));
    assert!(
        store
            .events_after(all[5].seq, None, None, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn put_pool_bumps_the_revision_only_when_the_digest_changes(backend: TestBackend) {
    let (_db, store) = open(backend).await;
    let stored = store
        .put_pool(pool_record("k8s", "d1", 1000))
        .await
        .unwrap();
    assert_eq!(stored.revision, 1);
    assert_eq!(stored.created_at, 1000);
    assert_eq!(stored.updated_at, 1000);
    assert_eq!(stored.secret_keys, vec!["TOKEN", "USER"]);

    let mut same = pool_record("k8s", "d1", 2000);
    same.warnings = r#"[{"code":"no_release","message":"m"}]"#.to_owned();
    let same = store.put_pool(same).await.unwrap();
    assert_eq!(same.revision, 1);
    assert_eq!(same.created_at, 1000);
    assert_eq!(same.updated_at, 2000);

    let changed = store
        .put_pool(pool_record("k8s", "d2", 3000))
        .await
        .unwrap();
    assert_eq!(changed.revision, 2);
    assert_eq!(changed.created_at, 1000);
    assert_eq!(
        store.get_pool(&pool_name("k8s")).await.unwrap(),
        Some(changed.clone())
    );

    let again = store
        .put_pool(pool_record("k8s", "d3", 4000))
        .await
        .unwrap();
    assert_eq!(again.revision, 3);

    // Concurrent replaces with new digests: every one counts.
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .put_pool(pool_record("k8s", &format!("c{i}"), 5000 + i))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        store
            .get_pool(&pool_name("k8s"))
            .await
            .unwrap()
            .unwrap()
            .revision,
        13
    );
}

async fn pools_are_listed_by_name_updated_and_deleted(backend: TestBackend) {
    let (_db, store) = open(backend).await;
    for name in ["zeta", "alpha", "mid-1"] {
        store.put_pool(pool_record(name, "d", 1)).await.unwrap();
    }
    let names: Vec<String> = store
        .list_pools()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name.to_string())
        .collect();
    assert_eq!(names, vec!["alpha", "mid-1", "zeta"]);

    let updated = store
        .put_pool_secrets(&pool_name("alpha"), vec![9, 9], vec!["NEW".to_owned()], 50)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.secrets_sealed, vec![9, 9]);
    assert_eq!(updated.secret_keys, vec!["NEW"]);
    assert_eq!(updated.updated_at, 50);
    assert_eq!(updated.revision, 1);
    assert_eq!(
        store
            .put_pool_secrets(&pool_name("nope"), vec![1], vec![], 1)
            .await
            .unwrap(),
        None
    );

    assert!(
        !store
            .replace_pool_secrets_sealed(&pool_name("alpha"), vec![0], vec![7])
            .await
            .unwrap()
    );
    assert!(
        store
            .replace_pool_secrets_sealed(&pool_name("alpha"), vec![9, 9], vec![7])
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .get_pool(&pool_name("alpha"))
            .await
            .unwrap()
            .unwrap()
            .secrets_sealed,
        vec![7]
    );

    // Deleting a pool keeps its runs.
    insert(&store, &bare_run("kept", "zeta", 1)).await;
    assert!(store.delete_pool(&pool_name("zeta")).await.unwrap());
    assert!(!store.delete_pool(&pool_name("zeta")).await.unwrap());
    assert_eq!(store.get_pool(&pool_name("zeta")).await.unwrap(), None);
    assert!(store.get_run(&job_id("kept")).await.unwrap().is_some());
}

async fn job_bodies_can_be_cleared_and_resealed(backend: TestBackend) {
    let (_db, store) = open(backend).await;
    let a = bare_run("body-a", "p", 1);
    let b = bare_run("body-b", "p", 2);
    insert(&store, &a).await;
    insert(&store, &b).await;
    store
        .insert_run(
            bare_run("no-body", "p", 3),
            None,
            vec![created_event(&bare_run("no-body", "p", 3))],
        )
        .await
        .unwrap();
    assert_eq!(
        store.sealed_job_ids().await.unwrap(),
        vec![a.job_id.clone(), b.job_id.clone()]
    );

    assert!(
        store
            .replace_job_sealed(&a.job_id, b"sealed".to_vec(), b"resealed".to_vec())
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_job_sealed(&a.job_id).await.unwrap(),
        Some(b"resealed".to_vec())
    );

    store.clear_job_sealed(&b.job_id).await.unwrap();
    store.clear_job_sealed(&b.job_id).await.unwrap();
    store.clear_job_sealed(&job_id("unknown")).await.unwrap();
    assert_eq!(store.get_job_sealed(&b.job_id).await.unwrap(), None);
    // A body dropped meanwhile is not brought back by a rotation.
    assert!(
        !store
            .replace_job_sealed(&b.job_id, b"sealed".to_vec(), b"resealed".to_vec())
            .await
            .unwrap()
    );
    assert_eq!(
        store.sealed_job_ids().await.unwrap(),
        vec![a.job_id.clone()]
    );
}

async fn runs_are_read_in_one_go_with_their_bodies(backend: TestBackend) {
    let (_db, store) = open(backend).await;
    let a = bare_run("many-a", "p", 1);
    let b = bare_run("many-b", "p", 2);
    insert(&store, &a).await;
    insert(&store, &b).await;
    let bare = bare_run("many-bare", "p", 3);
    store
        .insert_run(bare.clone(), None, vec![created_event(&bare)])
        .await
        .unwrap();

    let ids = vec![
        b.job_id.clone(),
        job_id("many-unknown"),
        bare.job_id.clone(),
        a.job_id.clone(),
    ];
    let mut found = store.get_runs_with_bodies(ids).await.unwrap();
    found.sort_by(|x, y| x.0.job_id.as_str().cmp(y.0.job_id.as_str()));
    assert_eq!(
        found,
        vec![
            (a.clone(), Some(b"sealed".to_vec())),
            (b.clone(), Some(b"sealed".to_vec())),
            (bare.clone(), None),
        ]
    );
    // A long list is one bound value: unknown ids are left out, whatever their number.
    let mut long: Vec<JobId> = (0..1_200).map(|i| job_id(&format!("absent-{i}"))).collect();
    long.push(a.job_id.clone());
    assert_eq!(store.get_runs(long).await.unwrap(), vec![a.clone()]);
    assert!(store.get_runs(Vec::new()).await.unwrap().is_empty());
    assert!(
        store
            .get_runs_with_bodies(Vec::new())
            .await
            .unwrap()
            .is_empty()
    );
}

async fn every_write_transaction_holds_the_event_lock_on_postgres(backend: TestBackend) {
    if backend != TestBackend::Postgres {
        // SQLite's BEGIN IMMEDIATE is the lock: one writer at a time by construction.
        return;
    }
    use diesel::Connection as _;
    let (db, store) = open(backend).await;
    let run = bare_run("locked", "p", 1);
    insert(&store, &run).await;

    // Another session holds the event lock in an open transaction.
    let url = db.url().to_owned();
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let mut other = diesel::PgConnection::establish(&url).unwrap();
        diesel::connection::SimpleConnection::batch_execute(
            &mut other,
            &format!(
                "BEGIN; SELECT pg_advisory_xact_lock({})",
                super::events::EVENT_LOCK
            ),
        )
        .unwrap();
        held_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        diesel::connection::SimpleConnection::batch_execute(&mut other, "COMMIT").unwrap();
    });
    held_rx.recv().unwrap();

    let mut running = run.clone();
    running.state = RunState::Running;
    let commit = tokio::spawn({
        let store = store.clone();
        let event = transition(&run, RunState::Queued, RunState::Running, "go");
        async move { store.commit(running, vec![event]).await }
    });
    // While the lock is held elsewhere, the commit waits (it is never written beside it).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !commit.is_finished(),
        "a commit went ahead of the event lock"
    );
    assert_eq!(
        store.get_run(&run.job_id).await.unwrap().unwrap().state,
        RunState::Queued
    );
    release_tx.send(()).unwrap();
    let events = commit.await.unwrap().unwrap();
    assert_eq!(events.len(), 1);
    holder.join().unwrap();
}

async fn finished_runs_past_their_retention_are_deleted_with_their_events_and_bodies(
    backend: TestBackend,
) {
    const DAY: Millis = 86_400_000;
    let now: Millis = 1_000 * DAY;
    let (_db, store) = open(backend).await;
    let finished = |id: &str, state: RunState, release: ReleaseState, at: Option<Millis>| {
        let mut run = bare_run(id, "p", 1);
        run.state = state;
        run.release = release;
        run.finished_at = at;
        run
    };
    let expired = [
        finished(
            "old-done",
            RunState::Done,
            ReleaseState::Done,
            Some(now - 31 * DAY),
        ),
        finished(
            "old-failed",
            RunState::Failed,
            ReleaseState::GaveUp,
            Some(now - 40 * DAY),
        ),
        finished(
            "old-cancelled",
            RunState::Cancelled,
            ReleaseState::NotNeeded,
            Some(now - 365 * DAY),
        ),
    ];
    let kept = [
        // Finished within the retention.
        finished(
            "recent-done",
            RunState::Done,
            ReleaseState::Done,
            Some(now - 29 * DAY),
        ),
        // Old, but its release is still to be made.
        finished(
            "old-releasing",
            RunState::Done,
            ReleaseState::Pending,
            Some(now - 90 * DAY),
        ),
        // Never finished, however old.
        finished("old-running", RunState::Running, ReleaseState::NotYet, None),
    ];
    for run in expired.iter().chain(&kept) {
        insert(&store, run).await;
    }

    assert_eq!(crate::retention::sweep(&store, 30, now).await.unwrap(), 3);
    for run in &expired {
        assert_eq!(store.get_run(&run.job_id).await.unwrap(), None);
        assert!(store.run_events(&run.job_id).await.unwrap().is_empty());
        assert_eq!(store.get_job_sealed(&run.job_id).await.unwrap(), None);
    }
    for run in &kept {
        assert!(
            store.get_run(&run.job_id).await.unwrap().is_some(),
            "{}",
            run.job_id
        );
        assert_eq!(store.run_events(&run.job_id).await.unwrap().len(), 1);
        assert!(store.get_job_sealed(&run.job_id).await.unwrap().is_some());
    }
    // Nothing left to delete; more than a batch goes in several statements.
    assert_eq!(crate::retention::sweep(&store, 30, now).await.unwrap(), 0);
    let many = crate::retention::BATCH + 7;
    for i in 0..many {
        let run = finished(
            &format!("bulk-{i}"),
            RunState::Done,
            ReleaseState::Done,
            Some(now - 60 * DAY),
        );
        store
            .insert_run(run.clone(), None, vec![created_event(&run)])
            .await
            .unwrap();
    }
    assert_eq!(
        crate::retention::sweep(&store, 30, now).await.unwrap(),
        many
    );
    assert_eq!(store.load_unfinished().await.unwrap().len(), 2);
}

#[derive(diesel::QueryableByName)]
struct SqlitePlanRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    detail: String,
}

#[derive(diesel::QueryableByName)]
struct PgPlanRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    #[diesel(column_name = "QUERY PLAN")]
    plan: String,
}

async fn a_start_reads_the_runs_needing_work_from_their_partial_index(backend: TestBackend) {
    use diesel::RunQueryDsl as _;
    let (_db, store) = open(backend).await;
    let plan = store
        .with_conn(move |conn| {
            let lines = match conn {
                DbConn::Sqlite(c) => {
                    let rows: Vec<SqlitePlanRow> =
                        diesel::sql_query(format!("EXPLAIN QUERY PLAN {}", *runs::UNFINISHED))
                            .load(c)?;
                    rows.into_iter().map(|r| r.detail).collect::<Vec<_>>()
                }
                DbConn::Pg(c) => {
                    // An empty table is read whole when allowed: ask for the index's plan.
                    diesel::connection::SimpleConnection::batch_execute(
                        c,
                        "SET enable_seqscan = off",
                    )?;
                    let rows: Vec<PgPlanRow> =
                        diesel::sql_query(format!("EXPLAIN {}", *runs::UNFINISHED)).load(c)?;
                    diesel::connection::SimpleConnection::batch_execute(c, "RESET enable_seqscan")?;
                    rows.into_iter().map(|r| r.plan).collect::<Vec<_>>()
                }
            };
            Ok(lines.join("\n"))
        })
        .await
        .unwrap();
    assert!(plan.contains("runs_needing_work"), "{plan}");
    assert!(!plan.contains("TEMP B-TREE"), "the load sorts: {plan}");

    // The index's condition is the load's, word for word.
    for migration in [
        include_str!("../../migrations/sqlite/2026-12-05-000000_runs_needing_work/up.sql"),
        include_str!("../../migrations/postgres/2026-12-05-000000_runs_needing_work/up.sql"),
    ] {
        let condition = migration
            .split_once("\nWHERE ")
            .and_then(|(_, rest)| rest.trim().strip_suffix(';'))
            .unwrap();
        let words = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(words(condition), words(&runs::NEEDS_WORK));
    }
}

async fn committed_data_survives_a_new_connection(backend: TestBackend) {
    let (db, store) = open(backend).await;
    let run = full_run("durable", "p");
    insert(&store, &run).await;
    let mut next = run.clone();
    next.state = RunState::Done;
    store
        .commit(
            next.clone(),
            vec![transition(&run, RunState::Running, RunState::Done, "ok")],
        )
        .await
        .unwrap();
    store.put_pool(pool_record("p", "d", 1)).await.unwrap();
    drop(store);

    let reopened = Store::connect(db.url(), 2).await.unwrap();
    assert_eq!(
        reopened.get_run(&run.job_id).await.unwrap(),
        Some(next.committed())
    );
    assert_eq!(reopened.run_events(&run.job_id).await.unwrap().len(), 2);
    assert_eq!(reopened.list_pools().await.unwrap().len(), 1);
}

async fn a_corrupt_row_is_reported_without_its_contents(backend: TestBackend) {
    let (_db, store) = open(backend).await;
    let run = bare_run("row-7", "p", 1);
    insert(&store, &run).await;
    store
        .with_conn(|conn| {
            use diesel::RunQueryDsl as _;
            diesel::sql_query("UPDATE runs SET state = 'exploded', labels = 'not json'")
                .execute(conn)?;
            Ok(())
        })
        .await
        .unwrap();
    match store.get_run(&run.job_id).await {
        Err(StoreError::Corrupt { what }) => {
            assert!(what.contains("row-7"), "{what}");
            assert!(!what.contains("not json"), "{what}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

async fn a_commit_derived_from_an_older_version_is_refused_and_changes_nothing(
    backend: TestBackend,
) {
    let (_db, store) = open(backend).await;
    let read = bare_run("raced", "p", 1);
    insert(&store, &read).await;

    // One writer moves the run on.
    let mut first = read.clone();
    first.state = RunState::Cancelled;
    first.cancel_requested = true;
    let winner = transition(&first, RunState::Queued, RunState::Cancelled, "cancel");
    store.commit(first.clone(), vec![winner]).await.unwrap();

    // Another, working from the same old read, loses instead of overwriting.
    let mut second = read.clone();
    second.state = RunState::Dispatching;
    let loser = transition(&second, RunState::Queued, RunState::Dispatching, "slot");
    match store.commit(second, vec![loser]).await {
        Err(StoreError::Stale { what, read, stored }) => {
            assert!(what.contains("raced"), "{what}");
            assert_eq!((read, stored), (0, 1));
        }
        other => panic!("expected Stale, got {other:?}"),
    }
    let stored = store.get_run(&read.job_id).await.unwrap().unwrap();
    assert_eq!(stored, first.clone().committed());
    assert_eq!(store.run_events(&read.job_id).await.unwrap().len(), 2);

    // A commit from the current version goes through, and so on.
    let mut next = stored.clone();
    next.detail = Some("noted".to_owned());
    store.commit(next.clone(), Vec::new()).await.unwrap();
    assert_eq!(
        store.get_run(&read.job_id).await.unwrap(),
        Some(next.committed())
    );
    // A stale commit of an unknown run is still reported as missing.
    assert!(matches!(
        store.commit(bare_run("nobody", "p", 1), Vec::new()).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn a_second_exclusive_store_on_one_database_is_refused_until_the_first_is_gone(
    backend: TestBackend,
) {
    let (db, shared) = open(backend).await;
    let first = Store::connect_exclusive(db.url(), 2).await.unwrap();
    match Store::connect_exclusive(db.url(), 2).await {
        Err(err @ StoreError::InUse { .. }) => {
            let message = err.to_string();
            assert!(message.contains("another cattery gateway"), "{message}");
            assert!(!message.contains("postgres://"), "{message}");
        }
        other => panic!("expected InUse, got {other:?}"),
    }
    // Tools that do not drive runs still connect.
    shared.ping().await.unwrap();
    drop(first);
    let _second = Store::connect_exclusive(db.url(), 2).await.unwrap();
}

async fn a_final_commit_drops_the_job_body_unless_a_release_still_needs_it(backend: TestBackend) {
    let (_db, store) = open(backend).await;
    let body = Some(b"sealed".to_vec());
    let released = bare_run("released-later", "p", 1);
    insert(&store, &released).await;
    let mut run = released.clone();
    for (state, release, kept) in [
        (RunState::Running, ReleaseState::NotYet, true),
        // Final, but the release (and its redaction) may still need the body.
        (RunState::Done, ReleaseState::Pending, true),
        (RunState::Done, ReleaseState::Done, false),
    ] {
        run.state = state;
        run.release = release;
        store.commit(run.clone(), Vec::new()).await.unwrap();
        run = run.committed();
        assert_eq!(
            store.get_job_sealed(&run.job_id).await.unwrap(),
            if kept { body.clone() } else { None },
            "{state:?} with release {release:?}"
        );
    }

    let cancelled = bare_run("cancelled-at-once", "p", 2);
    insert(&store, &cancelled).await;
    let mut stale = cancelled.clone();
    stale.version = 7;
    stale.state = RunState::Cancelled;
    stale.release = ReleaseState::NotNeeded;
    // A commit that is refused drops nothing.
    assert!(store.commit(stale.clone(), Vec::new()).await.is_err());
    assert_eq!(store.get_job_sealed(&cancelled.job_id).await.unwrap(), body);
    stale.version = 0;
    store.commit(stale, Vec::new()).await.unwrap();
    assert_eq!(store.get_job_sealed(&cancelled.job_id).await.unwrap(), None);
    assert!(store.sealed_job_ids().await.unwrap().is_empty());
}

async fn leftover_job_bodies_of_finished_runs_are_swept(backend: TestBackend) {
    let (_db, store) = open(backend).await;
    let body = Some(b"sealed".to_vec());
    let mut leftover = bare_run("leftover", "p", 1);
    leftover.state = RunState::Failed;
    leftover.release = ReleaseState::GaveUp;
    let mut releasing = bare_run("releasing", "p", 2);
    releasing.state = RunState::Done;
    releasing.release = ReleaseState::Pending;
    let mut running = bare_run("running", "p", 3);
    running.state = RunState::Running;
    for run in [&leftover, &releasing, &running] {
        insert(&store, run).await;
    }
    assert_eq!(store.clear_finished_job_bodies().await.unwrap(), 1);
    assert_eq!(store.get_job_sealed(&leftover.job_id).await.unwrap(), None);
    for kept in [&releasing, &running] {
        assert_eq!(store.get_job_sealed(&kept.job_id).await.unwrap(), body);
    }
    assert_eq!(store.clear_finished_job_bodies().await.unwrap(), 0);
}

async fn corrupt_rows_are_quarantined_as_failed_and_the_other_runs_still_load(
    backend: TestBackend,
) {
    let (_db, store) = open(backend).await;
    let mut good = bare_run("good", "p", 1);
    good.state = RunState::Running;
    let mut bad_captures = bare_run("bad-captures", "p", 2);
    bad_captures.state = RunState::Running;
    let bad_state = bare_run("bad-state", "p", 3);
    let mut finished = bare_run("finished", "p", 4);
    finished.state = RunState::Done;
    finished.release = ReleaseState::Done;
    for run in [&good, &bad_captures, &bad_state, &finished] {
        insert(&store, run).await;
    }
    store
        .with_conn(|conn| {
            use diesel::RunQueryDsl as _;
            diesel::sql_query(
                "UPDATE runs SET captures = 'not json {ghs_secret', labels = '[1]' \
                 WHERE job_id = 'bad-captures'",
            )
            .execute(conn)?;
            diesel::sql_query("UPDATE runs SET state = 'exploded' WHERE job_id = 'bad-state'")
                .execute(conn)?;
            Ok(())
        })
        .await
        .unwrap();

    let loaded = store.load_unfinished().await.unwrap();
    assert_eq!(loaded, vec![good.clone()]);
    for (id, was) in [
        ("bad-captures", Some(RunState::Running)),
        ("bad-state", None),
    ] {
        let run = store.get_run(&job_id(id)).await.unwrap().unwrap();
        assert_eq!(run.state, RunState::Failed, "{id}");
        assert_eq!(run.failure_cause.as_deref(), Some("corrupt"), "{id}");
        assert_eq!(run.release, ReleaseState::NotNeeded, "{id}");
        assert!(run.finished_at.is_some(), "{id}");
        let error = run.error.unwrap();
        assert!(
            !error.contains("ghs_secret") && !error.contains("exploded"),
            "{error}"
        );
        assert_eq!(store.get_job_sealed(&run.job_id).await.unwrap(), None);
        let events = store.run_events(&run.job_id).await.unwrap();
        let last = &events.last().unwrap().event;
        assert_eq!((last.from, last.to), (was, Some(RunState::Failed)), "{id}");
    }
    let repaired = store
        .get_run(&job_id("bad-captures"))
        .await
        .unwrap()
        .unwrap();
    assert!(repaired.captures.is_empty() && repaired.labels.is_empty());
    assert!(
        store
            .get_run(&job_id("bad-captures"))
            .await
            .unwrap()
            .unwrap()
            .error
            .unwrap()
            .contains("captures")
    );
    // Quarantined runs are final: the next load has nothing more to do.
    assert_eq!(store.load_unfinished().await.unwrap(), vec![good]);
    assert_eq!(
        store.get_run(&job_id("finished")).await.unwrap(),
        Some(finished)
    );
    let page = store.list_runs(RunFilter::default()).await.unwrap();
    assert_eq!(page.runs.len(), 4);
}

/// Records the SQL of every statement a connection prepares into its statement cache.
#[derive(Clone, Default)]
struct Prepared(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl diesel::connection::Instrumentation for Prepared {
    fn on_connection_event(&mut self, event: diesel::connection::InstrumentationEvent<'_>) {
        if let diesel::connection::InstrumentationEvent::CacheQuery { sql, .. } = event {
            self.0.lock().unwrap().push(sql.to_owned());
        }
    }
}

impl Prepared {
    fn statements(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

async fn the_writer_prepares_each_statement_once_and_reuses_it(backend: TestBackend) {
    let (db, _) = open(backend).await;
    // One connection for reads and the writer's own: both record what they prepare.
    let store = Store::connect(db.url(), 1).await.unwrap();
    let connections = [Prepared::default(), Prepared::default()];
    let (pool, kind) = (store.inner.pool.clone(), store.inner.backend);
    let recorders = connections.clone();
    tokio::task::spawn_blocking(move || {
        let [first, second] = recorders;
        let mut a = super::checkout(&pool, kind).unwrap();
        let mut b = super::checkout(&pool, kind).unwrap();
        diesel::Connection::set_instrumentation(&mut *a, first);
        diesel::Connection::set_instrumentation(&mut *b, second);
    })
    .await
    .unwrap();
    let statements = || {
        connections
            .iter()
            .map(Prepared::statements)
            .collect::<Vec<_>>()
    };

    // Whole lifecycles: insert with a body, a transition, a final commit that drops the body,
    // and the reads a gateway does along the way.
    let lifecycle = |id: String| {
        let store = store.clone();
        async move {
            let run = bare_run(&id, "p", 1);
            insert(&store, &run).await;
            assert!(store.get_job_sealed(&run.job_id).await.unwrap().is_some());
            let mut running = run.clone();
            running.state = RunState::Running;
            store
                .commit(
                    running.clone(),
                    vec![transition(&run, RunState::Queued, RunState::Running, "go")],
                )
                .await
                .unwrap();
            let mut done = running.committed();
            done.state = RunState::Done;
            done.release = ReleaseState::NotNeeded;
            store
                .commit(
                    done.clone(),
                    vec![transition(&run, RunState::Running, RunState::Done, "ok")],
                )
                .await
                .unwrap();
            assert_eq!(
                store.get_run(&run.job_id).await.unwrap(),
                Some(done.committed())
            );
            assert_eq!(store.get_job_sealed(&run.job_id).await.unwrap(), None);
            store.load_unfinished().await.unwrap();
        }
    };
    for i in 0..5 {
        lifecycle(format!("warm-{i}")).await;
    }
    let after_warm_up = statements();
    for i in 0..40 {
        lifecycle(format!("run-{i}")).await;
    }
    let after_many = statements();

    // Forty more lifecycles prepared nothing new: every statement came from a cache, and no
    // connection prepared one statement twice.
    assert_eq!(after_many, after_warm_up);
    for prepared in &after_many {
        let distinct: BTreeSet<&String> = prepared.iter().collect();
        assert_eq!(distinct.len(), prepared.len(), "{prepared:#?}");
    }
    let after_many: Vec<&String> = after_many.iter().flatten().collect();
    for start in [
        "INSERT INTO runs ",
        "INSERT INTO run_jobs ",
        "INSERT INTO run_events ",
        "UPDATE runs SET ",
        "DELETE FROM run_jobs ",
        "SELECT job_sealed FROM run_jobs ",
    ] {
        assert!(
            after_many.iter().any(|sql| sql.starts_with(start)),
            "no cached statement starts with {start:?}: {after_many:#?}"
        );
    }
}

async fn a_group_commit_writes_what_one_by_one_commits_would(backend: TestBackend) {
    const RUNS: usize = 120;
    let (db, _) = open(backend).await;
    let store = Store::connect(db.url(), 1).await.unwrap();
    let prepared = Prepared::default();
    let recorder = prepared.clone();
    store
        .with_conn(move |conn| {
            diesel::Connection::set_instrumentation(conn, recorder);
            Ok(())
        })
        .await
        .unwrap();
    let runs: Vec<RunRecord> = (0..RUNS)
        .map(|i| bare_run(&format!("group-{i:03}"), "p", i as i64))
        .collect();
    let mut created = BTreeMap::new();
    for run in &runs {
        created.insert(run.job_id.clone(), insert(&store, run).await);
    }

    // Every mutable column changes; half the runs finish (their bodies go), half go on running.
    // A stale commit and new runs are mixed into the same groups.
    let full = full_run("template", "p");
    let expected: Vec<(RunRecord, Vec<NewEvent>)> = runs
        .iter()
        .enumerate()
        .map(|(i, run)| {
            let mut next = run.clone();
            next.labels = full.labels.clone();
            next.request_digest = format!("new-digest-{i}");
            next.scheduler_state = full.scheduler_state.clone();
            next.external_id = Some(format!("ext-{i}"));
            next.dispatch_id = format!("{}-1", run.job_id);
            next.captures = full.captures.clone();
            next.progress = full.progress;
            next.error = full.error.clone();
            next.detail = Some(format!("line {i}\nwith a \"quote\""));
            next.heartbeat_at = full.heartbeat_at.clone();
            next.fields = full.fields.clone();
            next.cancel_requested = i % 3 == 0;
            next.attempts = full.attempts;
            next.poll_errors = i as i64;
            next.poll_interval_ms = 2500;
            next.unmapped_seen = true;
            next.manifest_revision = 7;
            next.dispatched_at = Some(1_000 + i as i64);
            next.updated_at = 2_000 + i as i64;
            if i % 2 == 0 {
                next.state = RunState::Done;
                next.release = ReleaseState::Done;
                next.result = full.result.clone();
                next.failure_cause = None;
                next.next_at = None;
                next.finished_at = Some(3_000 + i as i64);
            } else {
                next.state = RunState::Running;
                next.failure_cause = Some("none yet".to_owned());
                next.next_at = Some(4_000 + i as i64);
            }
            let events = vec![
                transition(&next, RunState::Queued, RunState::Dispatching, "slot"),
                transition(&next, RunState::Dispatching, next.state, "moved"),
            ];
            (next, events)
        })
        .collect();
    // First wave: every run commits once, new runs are inserted in between.
    let before = store.write_transactions();
    let mut commits = Vec::new();
    for (i, (next, events)) in expected.iter().cloned().enumerate() {
        let committer = store.clone();
        commits.push(tokio::spawn(
            async move { committer.commit(next, events).await },
        ));
        if i % 10 == 7 {
            let inserter = store.clone();
            let fresh = bare_run(&format!("fresh-{i:03}"), "q", 10);
            commits.push(tokio::spawn(async move {
                match inserter
                    .insert_run(
                        fresh.clone(),
                        Some(b"fresh".to_vec()),
                        vec![created_event(&fresh)],
                    )
                    .await?
                {
                    InsertOutcome::Inserted(events) => Ok(events),
                    InsertOutcome::Existing(_) => panic!("{} existed", fresh.job_id),
                }
            }));
        }
    }
    let mut answers = Vec::new();
    for task in commits {
        answers.push(task.await.unwrap().unwrap());
    }
    let transactions = store.write_transactions() - before;
    assert!(
        transactions < answers.len() as u64,
        "{} writes took {transactions} transactions",
        answers.len()
    );
    let mut answers = answers.into_iter();
    for (next, events) in &expected {
        let answer = answers.next().unwrap();
        assert_eq!(
            answer.iter().map(|e| &e.event).collect::<Vec<_>>(),
            events.iter().collect::<Vec<_>>()
        );
        assert!(answer[0].seq < answer[1].seq);
        assert_eq!(
            store.get_run(&next.job_id).await.unwrap(),
            Some(next.clone().committed())
        );
        let body = store.get_job_sealed(&next.job_id).await.unwrap();
        assert_eq!(
            body.is_some(),
            next.state == RunState::Running,
            "{}",
            next.job_id
        );
        let history = store.run_events(&next.job_id).await.unwrap();
        assert_eq!(history[0], created[&next.job_id]);
        assert_eq!(&history[1..], &answer[..]);
        if next.job_id.as_str().ends_with('7') {
            let fresh = answers.next().unwrap();
            let job_id = &fresh[0].event.job_id;
            assert_eq!(store.run_events(job_id).await.unwrap(), fresh);
            assert_eq!(
                store.get_job_sealed(job_id).await.unwrap(),
                Some(b"fresh".to_vec())
            );
        }
    }
    assert!(answers.next().is_none());
    if backend == TestBackend::Postgres {
        // The groups went through the set-based statements, each prepared once.
        let statements = prepared.statements();
        for start in [
            "UPDATE runs AS r ",
            "INSERT INTO run_events (seq, ",
            "DELETE FROM run_jobs WHERE job_id = ANY",
        ] {
            let count = statements
                .iter()
                .filter(|sql| sql.starts_with(start))
                .count();
            assert_eq!(count, 1, "{start:?}: {statements:#?}");
        }
    }

    // Second wave: the running runs finish while stale commits of the finished ones are grouped
    // with them. Each stale commit alone is refused; every other commit lands.
    let mut commits = Vec::new();
    for (next, _) in &expected {
        let committer = store.clone();
        let mut next = next.clone().committed();
        let stale = next.state == RunState::Done;
        if stale {
            next.version = 0;
            next.detail = Some("stale".to_owned());
        } else {
            next.state = RunState::Failed;
            next.release = ReleaseState::NotNeeded;
        }
        let event = transition(&next, RunState::Running, RunState::Failed, "second");
        commits.push((
            next.clone(),
            stale,
            tokio::spawn(async move { committer.commit(next, vec![event]).await }),
        ));
    }
    for (next, stale, task) in commits {
        let answer = task.await.unwrap();
        let stored = store.get_run(&next.job_id).await.unwrap().unwrap();
        if stale {
            assert!(
                matches!(
                    answer,
                    Err(StoreError::Stale {
                        read: 0,
                        stored: 1,
                        ..
                    })
                ),
                "{answer:?}"
            );
            assert_ne!(stored.detail.as_deref(), Some("stale"));
            assert_eq!(store.run_events(&next.job_id).await.unwrap().len(), 3);
        } else {
            assert_eq!(answer.unwrap().len(), 1);
            assert_eq!(stored, next.committed());
            assert_eq!(store.get_job_sealed(&stored.job_id).await.unwrap(), None);
            assert_eq!(store.run_events(&stored.job_id).await.unwrap().len(), 4);
        }
    }
}

#[derive(diesel::QueryableByName)]
struct SynchronousRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    synchronous: i64,
}

#[derive(diesel::QueryableByName)]
struct JournalModeRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    journal_mode: String,
}

#[derive(diesel::QueryableByName)]
struct SynchronousCommitRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    synchronous_commit: String,
}

async fn pooled_connections_commit_durably_whatever_the_database_default(backend: TestBackend) {
    use diesel::RunQueryDsl as _;
    let (db, store) = open(backend).await;
    match backend {
        TestBackend::Sqlite => {
            let (synchronous, journal_mode) = store
                .with_conn(|conn| {
                    let sync: SynchronousRow =
                        diesel::sql_query("PRAGMA synchronous").get_result(conn)?;
                    let journal: JournalModeRow =
                        diesel::sql_query("PRAGMA journal_mode").get_result(conn)?;
                    Ok((sync.synchronous, journal.journal_mode))
                })
                .await
                .unwrap();
            // 2 is FULL: the WAL is synced at every commit.
            assert_eq!(synchronous, 2);
            assert_eq!(journal_mode, "wal");
        }
        TestBackend::Postgres => {
            // A database configured to acknowledge commits before they are flushed.
            store
                .with_conn(|conn| {
                    #[derive(diesel::QueryableByName)]
                    struct Name {
                        #[diesel(sql_type = diesel::sql_types::Text)]
                        name: String,
                    }
                    let name: Name =
                        diesel::sql_query("SELECT current_database() AS name").get_result(conn)?;
                    diesel::sql_query(format!(
                        "ALTER DATABASE \"{}\" SET synchronous_commit = off",
                        name.name
                    ))
                    .execute(conn)?;
                    Ok(())
                })
                .await
                .unwrap();
            let show = |conn: &mut DbConn| -> Result<String, StoreError> {
                let row: SynchronousCommitRow =
                    diesel::sql_query("SHOW synchronous_commit").get_result(conn)?;
                Ok(row.synchronous_commit)
            };
            // A plain session on it gets that default...
            let url = db.url().to_owned();
            let plain = tokio::task::spawn_blocking(move || {
                let mut conn = <DbConn as diesel::Connection>::establish(&url).unwrap();
                show(&mut conn)
            })
            .await
            .unwrap()
            .unwrap();
            assert_eq!(plain, "off");
            // ...but every connection of a store's pool overrides it.
            let store = Store::connect(db.url(), 2).await.unwrap();
            assert_eq!(store.with_conn(show).await.unwrap(), "on");
        }
    }
}

async fn a_job_body_stored_before_run_jobs_existed_stays_readable(backend: TestBackend) {
    use diesel::RunQueryDsl as _;
    if backend == TestBackend::Postgres && testing::admin_url().is_none() {
        panic!("this test needs PostgreSQL: set TEST_DATABASE_URL");
    }
    let db = TestDatabase::create(backend).await.unwrap();
    let with_body = full_run("old-with-body", "p");
    let without_body = bare_run("old-without-body", "p", 2);
    let mut finished = bare_run("old-finished", "p", 3);
    finished.state = RunState::Done;
    finished.release = ReleaseState::Done;
    let body = vec![0_u8, 1, 2, 255, 7];

    // The database as the version before `run_jobs` left it: bodies in `runs.job_sealed`.
    let url = db.url().to_owned();
    let rows = [
        (with_body.clone(), Some(body.clone())),
        (without_body.clone(), None),
        (finished.clone(), Some(b"left behind".to_vec())),
    ];
    tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
        let target = Target::parse(&url)?;
        let pool = conn::build_pool(&target, 1)?;
        let mut conn = checkout(&pool, target.backend())?;
        assert!(migrate::run_pending_before(&mut conn, "2026-12-04-000000_run_jobs")? >= 4);
        for (run, sealed) in rows {
            // The columns of that time: `priority` (the last one) came later.
            let columns = &runs::RUN_COLUMNS[..runs::RUN_COLUMNS.len() - 1];
            assert_eq!(runs::RUN_COLUMNS.last(), Some(&"priority"));
            let mut binds = runs::run_binds(models::RunRow::from_record(&run));
            binds.pop();
            let body = match sealed {
                Some(sealed) => {
                    binds.push(conn::Bind::Binary(sealed));
                    "?"
                }
                None => "NULL",
            };
            let sql = format!(
                "INSERT INTO runs ({}, job_sealed) VALUES ({}{body})",
                columns.join(", "),
                "?, ".repeat(columns.len())
            );
            conn::raw_query(&conn, &sql, binds).execute(&mut *conn)?;
        }
        Ok(())
    })
    .await
    .unwrap()
    .unwrap();

    // Connecting applies the migration that moves the bodies.
    let store = Store::connect(db.url(), 2).await.unwrap();
    for run in [&with_body, &without_body, &finished] {
        // Stored before priorities existed: they read as priority 0.
        let expected = RunRecord {
            priority: 0,
            ..(*run).clone()
        };
        assert_eq!(store.get_run(&run.job_id).await.unwrap(), Some(expected));
    }
    assert_eq!(
        store.get_job_sealed(&with_body.job_id).await.unwrap(),
        Some(body.clone())
    );
    assert_eq!(
        store.get_job_sealed(&without_body.job_id).await.unwrap(),
        None
    );
    assert_eq!(
        store.sealed_job_ids().await.unwrap(),
        vec![finished.job_id.clone(), with_body.job_id.clone()]
    );
    // A migrated body behaves like any other: swept when finished, resealed, dropped at the end.
    assert_eq!(store.clear_finished_job_bodies().await.unwrap(), 1);
    assert!(
        store
            .replace_job_sealed(&with_body.job_id, body, b"resealed".to_vec())
            .await
            .unwrap()
    );
    let mut done = with_body.clone();
    done.state = RunState::Done;
    done.release = ReleaseState::Done;
    store.commit(done, Vec::new()).await.unwrap();
    assert!(store.sealed_job_ids().await.unwrap().is_empty());
}

/// Declares one test per behaviour above, on the backend the environment names: SQLite, or
/// PostgreSQL when `TEST_DATABASE_URL` is set (the test script runs the suite once for each).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_configured_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::TestBackend::from_env()).await;
                }
            )*
        }
    };
}

on_both_backends!(
    migrations_run_at_connect_and_are_idempotent,
    migrations_revert_and_apply_again,
    a_run_with_every_field_set_round_trips,
    a_run_with_every_optional_field_empty_round_trips,
    a_commit_overwrites_the_run_and_appends_its_events,
    inserting_the_same_job_twice_returns_the_existing_run_and_writes_nothing,
    list_runs_pages_newest_first_without_gaps_or_duplicates,
    load_unfinished_returns_runs_that_need_work_oldest_first,
    pool_stats_count_runs_by_state_group,
    concurrent_commits_all_land_in_fewer_transactions,
    a_failing_commit_does_not_fail_the_others_grouped_with_it,
    an_event_of_another_run_is_refused,
    events_after_resumes_from_a_sequence_number_and_filters,
    put_pool_bumps_the_revision_only_when_the_digest_changes,
    pools_are_listed_by_name_updated_and_deleted,
    job_bodies_can_be_cleared_and_resealed,
    runs_are_read_in_one_go_with_their_bodies,
    every_write_transaction_holds_the_event_lock_on_postgres,
    finished_runs_past_their_retention_are_deleted_with_their_events_and_bodies,
    a_start_reads_the_runs_needing_work_from_their_partial_index,
    committed_data_survives_a_new_connection,
    a_corrupt_row_is_reported_without_its_contents,
    a_commit_derived_from_an_older_version_is_refused_and_changes_nothing,
    a_second_exclusive_store_on_one_database_is_refused_until_the_first_is_gone,
    a_final_commit_drops_the_job_body_unless_a_release_still_needs_it,
    leftover_job_bodies_of_finished_runs_are_swept,
    corrupt_rows_are_quarantined_as_failed_and_the_other_runs_still_load,
    the_writer_prepares_each_statement_once_and_reuses_it,
    a_group_commit_writes_what_one_by_one_commits_would,
    pooled_connections_commit_durably_whatever_the_database_default,
    a_job_body_stored_before_run_jobs_existed_stays_readable,
    unfinished_runs_are_counted_by_pool_and_state_with_those_past_their_deadline,
);

// ---- backend-independent checks ----

fn migration_names(backend: &str) -> BTreeMap<String, (bool, bool)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let path = entry.path();
            assert!(
                path.is_dir(),
                "{} is not a migration directory",
                path.display()
            );
            (
                entry.file_name().to_string_lossy().into_owned(),
                (
                    path.join("up.sql").is_file(),
                    path.join("down.sql").is_file(),
                ),
            )
        })
        .collect()
}

#[test]
fn migration_directories_match_between_backends() {
    let sqlite = migration_names("sqlite");
    let postgres = migration_names("postgres");
    assert!(!sqlite.is_empty());
    assert_eq!(
        sqlite.keys().collect::<Vec<_>>(),
        postgres.keys().collect::<Vec<_>>(),
        "migrations/sqlite and migrations/postgres must hold the same directory names"
    );
    for (name, (up, down)) in sqlite.iter().chain(postgres.iter()) {
        assert!(*up && *down, "{name} needs both up.sql and down.sql");
        let (date, rest) = name.split_at(17.min(name.len()));
        assert!(
            date.len() == 17
                && date
                    .chars()
                    .enumerate()
                    .all(|(i, c)| if [4, 7, 10].contains(&i) {
                        c == '-'
                    } else {
                        c.is_ascii_digit()
                    })
                && rest.starts_with('_'),
            "{name} is not named <YYYY-MM-DD-HHMMSS>_<name>"
        );
    }
}

#[test]
fn pool_stats_group_slot_holding_states_as_in_flight() {
    let counts: Vec<(RunState, i64)> = RunState::ALL.iter().map(|s| (*s, 1)).collect();
    let stats = PoolStats::from_counts(&counts);
    let in_flight = RunState::ALL.iter().filter(|s| s.holds_slot()).count() as i64;
    assert_eq!(stats.in_flight, in_flight);
    assert_eq!(
        stats.queued + stats.in_flight + stats.done + stats.failed + stats.cancelled,
        RunState::ALL.len() as i64
    );
}

#[tokio::test]
async fn an_unreachable_database_is_reported_as_a_connection_error() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    // The database's parent is a regular file, so the directory cannot be created.
    let url = format!("sqlite://{}/db.sqlite", blocker.display());
    assert!(matches!(
        Store::connect(&url, 1).await,
        Err(StoreError::Connect {
            backend: "sqlite",
            ..
        })
    ));
    assert!(matches!(
        Store::connect(":memory:", 1).await,
        Err(StoreError::InvalidUrl { .. })
    ));
}
