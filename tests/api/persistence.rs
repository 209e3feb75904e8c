//! Durability: runs survive a restart of the application on the same database, and secrets
//! and job bodies are never stored in clear.

use crate::support::app::spawn_app;
use crate::support::database::TestDatabase;
use crate::support::gateway::{Gateway, Launch, LocalPool};
use crate::support::wait;
use cattery::domain::ids::{JobId, PoolName};
use cattery::domain::run::{NewEvent, ReleaseState, RunRecord};
use cattery::domain::state::RunState;
use cattery::store::{InsertOutcome, Store};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "local-pool-persist-token";

/// How long a gateway may take to stop, or a second one to refuse to start.
const LIMIT: Duration = Duration::from_secs(20);

#[actix_web::test]
async fn a_running_run_resumes_after_the_gateway_is_killed_and_restarted() {
    let db = TestDatabase::create().await;
    let data_dir = tempfile::tempdir().unwrap();
    let pool = LocalPool::start(TOKEN).await;
    let mut gateway = Gateway::start(Launch::new(&db, data_dir.path())).await;
    pool.register_on(&gateway).await;
    let secret_job = json!({"steps": 20, "stepMs": 100, "ghToken": "ghs_supersecretjobtoken"});
    gateway
        .submit("local", json!({"jobId": "survivor-1", "job": secret_job}))
        .await;
    let get = async |gateway: &Gateway| gateway.get("/v1/runs/survivor-1").await.json();
    let start = Instant::now();
    while get(&gateway).await["state"] != "running" {
        assert!(start.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // kill -9 the gateway while the job runs at the scheduler, then start it again.
    gateway.kill9();
    gateway.restart().await;
    let start = Instant::now();
    let run = loop {
        let run = get(&gateway).await;
        if run["released"] == true {
            break run;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(run["state"], "done");
    assert_eq!(
        run["attempts"]["dispatch"], 1,
        "the job was not dispatched twice"
    );
    assert_eq!(run["progress"]["completed"], 20);

    // Nothing secret is stored in clear.
    if !db.is_postgres() {
        let raw = db.raw_contents();
        let text = String::from_utf8_lossy(&raw);
        assert!(!text.contains(TOKEN), "the pool secret is stored in clear");
        assert!(
            !text.contains("ghs_supersecretjobtoken"),
            "the job token is stored in clear"
        );
        assert!(
            text.contains("survivor-1"),
            "the check reads the right file"
        );
    }
    drop(gateway);
}

#[actix_web::test]
async fn a_second_gateway_on_the_same_database_refuses_to_start_until_the_first_is_gone() {
    let db = TestDatabase::create().await;
    // Separate data dirs: what the gateways share, and what the lock guards, is the database.
    let (first_dir, second_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut first = Gateway::start(Launch::new(&db, first_dir.path())).await;

    for _ in 0..2 {
        let mut second = Launch::new(&db, second_dir.path())
            .command()
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait::exit_of("the second gateway to exit", &mut second, LIMIT).await;
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(!status.success(), "the second gateway started: {stderr}");
        assert!(
            stderr.contains("already in use by another cattery gateway"),
            "{stderr}"
        );
        assert!(!stderr.contains("postgres://"), "{stderr}");
        // The first one keeps serving.
        let ready = first.get("/readyz").await;
        assert_eq!(ready.status, 200);
    }

    // Once the first is gone, however abruptly, a new one starts.
    first.kill9();
    let next = Gateway::start(Launch::new(&db, second_dir.path())).await;
    drop(next);
    // And after a clean stop too.
    let mut clean = Gateway::start(Launch::new(&db, first_dir.path())).await;
    let pid = clean.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(
        wait::exit_of("the gateway to stop", clean.child(), LIMIT)
            .await
            .success()
    );
    let _last = Gateway::start(Launch::new(&db, second_dir.path())).await;
}

/// Ends the PostgreSQL session that holds the instance lock (as a PostgreSQL restart or a cut
/// connection would), returning how many sessions were ended.
fn end_lock_session(db: &TestDatabase) -> usize {
    // The lock key 0x6361747400000003: its high half is the classid, its low half the objid.
    db.execute_sql(
        "SELECT pg_terminate_backend(pid) FROM pg_locks \
         WHERE locktype = 'advisory' AND granted AND classid = 1667331188 AND objid = 3 \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
}

#[actix_web::test]
async fn a_gateway_whose_lock_connection_breaks_takes_the_lock_again_or_stops() {
    let db = TestDatabase::create().await;
    if !db.is_postgres() {
        // SQLite's lock is a file lock held by the process itself: it cannot break.
        return;
    }
    let (first_dir, second_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut first = Gateway::start(Launch::new(&db, first_dir.path())).await;

    // Its lock session ends: the gateway takes the lock again, so a second one is still refused.
    assert_eq!(end_lock_session(&db), 1);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut second = Launch::new(&db, second_dir.path())
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        !wait::exit_of("the second gateway to exit", &mut second, LIMIT)
            .await
            .success()
    );
    assert!(
        first.child().try_wait().unwrap().is_none(),
        "the first gateway stopped"
    );

    // Its lock session ends and someone else takes the lock first (this session queues for it
    // before the old one is gone): the first gateway stops rather than drive runs beside it.
    let mut taker = db.pg();
    {
        use diesel::RunQueryDsl as _;
        assert_eq!(end_lock_session(&db), 1);
        diesel::sql_query(format!("SELECT pg_advisory_lock({INSTANCE_LOCK_KEY})"))
            .execute(&mut taker)
            .unwrap();
    }
    let status = wait::exit_of("the first gateway to stop", first.child(), LIMIT).await;
    assert_eq!(status.code(), Some(75), "{status:?}");
}

/// The instance lock's key (see src/store/lock.rs).
const INSTANCE_LOCK_KEY: i64 = 7_161_132_924_060_827_651;

#[actix_web::test]
async fn a_finished_runs_job_body_is_gone_from_the_database_once_it_reads_final() {
    let app = spawn_app().await;
    let pool = LocalPool::start(TOKEN).await;
    pool.register_on(&app).await;
    app.submit(
        "local",
        json!({"jobId": "body-1", "job": {"steps": 1, "stepMs": 10, "ghToken": "ghs_body"}}),
    )
    .await;
    let store = Store::connect(app.db.url(), 1).await.unwrap();
    let job_id = JobId::parse("body-1").unwrap();
    assert!(store.get_job_sealed(&job_id).await.unwrap().is_some());
    let run = app
        .wait_for("body-1", Duration::from_secs(20), |run| {
            run["state"] == "done" && run["released"] == true
        })
        .await;
    assert_eq!(run["state"], "done", "{run}");
    // Read straight from the database as soon as the API reports the final, released state.
    let (_, job_rows) = app.db.sealed_rows();
    assert!(
        job_rows.is_empty(),
        "job bodies left: {:?}",
        job_rows.iter().map(|(id, _)| id).collect::<Vec<_>>()
    );
    assert_eq!(store.get_job_sealed(&job_id).await.unwrap(), None);
}

/// Stores a run of pool `p` directly, in `state` with `release`, holding a job body.
async fn stored_run(store: &Store, id: &str, state: RunState, release: ReleaseState) -> JobId {
    let job_id = JobId::parse(id).unwrap();
    let run = RunRecord {
        state,
        release,
        ..RunRecord::queued(job_id.clone(), PoolName::parse("p").unwrap(), 1)
    };
    let event = NewEvent {
        job_id: job_id.clone(),
        at: 1,
        kind: "transition".to_owned(),
        from: None,
        to: Some(state),
        detail: None,
    };
    let inserted = store
        .insert_run(run, Some(b"sealed-body".to_vec()), vec![event])
        .await
        .unwrap();
    assert!(matches!(inserted, InsertOutcome::Inserted(_)));
    job_id
}

#[actix_web::test]
async fn job_bodies_left_behind_by_finished_runs_are_swept_at_start() {
    let db = TestDatabase::create().await;
    let store = Store::connect(db.url(), 1).await.unwrap();
    let leftover = stored_run(&store, "leftover", RunState::Failed, ReleaseState::GaveUp).await;
    let cancelled = stored_run(
        &store,
        "cancelled",
        RunState::Cancelled,
        ReleaseState::NotNeeded,
    )
    .await;
    let releasing = stored_run(&store, "releasing", RunState::Done, ReleaseState::Pending).await;
    let queued = stored_run(&store, "queued", RunState::Queued, ReleaseState::NotYet).await;

    let data_dir = tempfile::tempdir().unwrap();
    let _gateway = Gateway::start(Launch::new(&db, data_dir.path())).await;
    for swept in [&leftover, &cancelled] {
        assert_eq!(store.get_job_sealed(swept).await.unwrap(), None, "{swept}");
    }
    // Runs that may still dispatch or release keep theirs.
    for kept in [&releasing, &queued] {
        assert_eq!(
            store.get_job_sealed(kept).await.unwrap(),
            Some(b"sealed-body".to_vec()),
            "{kept}"
        );
    }
}

/// Runs one statement straight on the test database, behind cattery's back; it changes one row.
fn execute_sql(db: &TestDatabase, sql: &str) {
    assert_eq!(db.execute_sql(sql), 1, "{sql}");
}

#[actix_web::test]
async fn a_corrupt_run_row_is_quarantined_at_start_and_the_gateway_serves_the_others() {
    let db = TestDatabase::create().await;
    let store = Store::connect(db.url(), 1).await.unwrap();
    stored_run(
        &store,
        "bad-captures",
        RunState::Running,
        ReleaseState::NotYet,
    )
    .await;
    stored_run(&store, "bad-state", RunState::Pending, ReleaseState::NotYet).await;
    stored_run(&store, "healthy-done", RunState::Done, ReleaseState::Done).await;
    stored_run(
        &store,
        "healthy-queued",
        RunState::Queued,
        ReleaseState::NotYet,
    )
    .await;
    drop(store);
    execute_sql(
        &db,
        "UPDATE runs SET captures = '{\"uid\": ghs_leaked' WHERE job_id = 'bad-captures'",
    );
    execute_sql(
        &db,
        "UPDATE runs SET state = 'half-written' WHERE job_id = 'bad-state'",
    );

    let data_dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(Launch::new(&db, data_dir.path())).await;
    let get = async |path: String| {
        let reply = gateway.get(&path).await;
        (reply.status, reply.json())
    };
    for id in ["bad-captures", "bad-state"] {
        let (status, run) = get(format!("/v1/runs/{id}")).await;
        assert_eq!(status, 200, "{run}");
        assert_eq!(run["state"], "failed", "{run}");
        assert_eq!(run["failureCause"], "corrupt", "{run}");
        assert!(!run.to_string().contains("ghs_leaked"), "{run}");
    }
    let (_, done) = get("/v1/runs/healthy-done".to_owned()).await;
    assert_eq!(done["state"], "done", "{done}");
    let (_, queued) = get("/v1/runs/healthy-queued".to_owned()).await;
    assert_eq!(queued["state"], "queued", "{queued}");
    let (status, list) = get("/v1/runs".to_owned()).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["runs"].as_array().map(Vec::len), Some(4), "{list}");
}

#[actix_web::test]
async fn a_run_changed_in_the_database_behind_its_actor_is_reloaded_not_overwritten() {
    let app = spawn_app().await;
    let pool = LocalPool::start(TOKEN).await;
    pool.register_on(&app).await;
    app.submit(
        "local",
        json!({"jobId": "raced-1", "job": {"steps": 30, "stepMs": 100}}),
    )
    .await;
    app.wait_for("raced-1", Duration::from_secs(20), |run| {
        run["state"] == "running"
    })
    .await;
    // Another writer changes the run while its actor polls: a newer version of the row.
    execute_sql(
        &app.db,
        "UPDATE runs SET labels = '{\"owner\": \"other\"}', version = version + 1 \
         WHERE job_id = 'raced-1'",
    );
    let run = app
        .wait_for("raced-1", Duration::from_secs(30), |run| {
            run["state"] == "done" && run["released"] == true
        })
        .await;
    // The actor's next commit lost instead of overwriting; the run went on from the stored row.
    assert_eq!(run["labels"], json!({"owner": "other"}), "{run}");
    assert_eq!(run["attempts"]["dispatch"], 1, "{run}");
    assert_eq!(run["progress"]["completed"], 30, "{run}");
}
