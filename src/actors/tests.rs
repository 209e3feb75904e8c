//! Supervision: actors that die unexpectedly are restarted from the persisted state.

use super::pool::Crash;
use super::pool::{Admit, Admitted};
use super::supervisor::{AdmitRun, PoolAddr, PoolStats, RemovePool, Supervisor, UpsertPool};
use super::{Activity, Deps, Owners};
use crate::bus::EventBus;
use crate::config::EgressSettings;
use crate::crypto::{Sealer, binding};
use crate::domain::ids::{JobId, PoolName};
use crate::domain::run::{ReleaseState, RunRecord, now_millis};
use crate::domain::secrets::SecretBundle;
use crate::domain::state::RunState;
use crate::egress::{Egress, EgressPolicy};
use crate::localpool::{LocalPool, LocalPoolConfig};
use crate::manifest::{Defaults, Manifest};
use crate::scheduler::{Adapter, PoolRuntime};
use crate::store::Store;
use crate::store::testing::{TestBackend, TestDatabase};
use actix::Actor as _;
use actix::Addr;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "supervision-test-token";

async fn deps() -> (TestDatabase, Deps) {
    let db = TestDatabase::create(TestBackend::from_env()).await.unwrap();
    let store = Store::connect(db.url(), 4).await.unwrap();
    let deps = Deps {
        store,
        sealer: Arc::new(Sealer::for_testing()),
        adapter: Arc::new(Adapter::with_egress(loopback_egress())),
        bus: EventBus::new(),
        activity: Arc::new(Activity::default()),
        owners: Owners::default(),
        arbiters: super::RunArbiters::start(2),
    };
    (db, deps)
}

/// An egress policy that allows the loopback schedulers of these tests.
fn loopback_egress() -> Egress {
    let settings = EgressSettings {
        allow_http: true,
        allow_hosts: vec!["127.0.0.1".to_owned()],
        ..EgressSettings::default()
    };
    Egress::new(EgressPolicy::from_settings(&settings).unwrap())
}

/// A local pool whose jobs take about a second and report `{"ok": true}`.
async fn local_pool() -> LocalPool {
    let config = LocalPoolConfig {
        command: vec![
            "sh".into(),
            "-c".into(),
            r#"sleep 1; echo '{"result":{"ok":true}}'"#.into(),
        ],
        token: Some(TOKEN.into()),
        ..LocalPoolConfig::default()
    };
    LocalPool::start("127.0.0.1:0", config).await.unwrap()
}

fn runtime(name: &str, base_url: &str) -> PoolRuntime {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/local.yaml"))
            .unwrap();
    let mut doc: serde_json::Value = yaml_serde::from_str(&text).unwrap();
    doc["baseUrl"] = serde_json::json!(base_url);
    doc["polling"] = serde_json::json!({"intervalMs": 50, "maxIntervalMs": 100});
    let manifest = Manifest::from_value(&doc, &Defaults::default()).unwrap();
    let secrets = SecretBundle::from_map(BTreeMap::from([(
        "LOCAL_POOL_TOKEN".to_owned(),
        TOKEN.to_owned(),
    )]));
    PoolRuntime::new(
        PoolName::parse(name).unwrap(),
        1,
        Arc::new(manifest),
        secrets,
        &loopback_egress(),
    )
    .unwrap()
}

async fn submit(deps: &Deps, supervisor: &Addr<Supervisor>, pool: &str, id: &str) -> JobId {
    let job_id = JobId::parse(id).unwrap();
    let run = RunRecord::queued(job_id.clone(), PoolName::parse(pool).unwrap(), now_millis());
    let sealed = deps.sealer.seal(b"{}", &binding::run_job(id)).unwrap();
    let (reply, answer) = tokio::sync::oneshot::channel();
    supervisor
        .send(AdmitRun(Admit {
            run,
            deadline_seconds: None,
            sealed,
            job: serde_json::json!({}),
            reply,
        }))
        .await
        .unwrap();
    assert!(matches!(
        answer.await.unwrap().unwrap(),
        Admitted::Created(_)
    ));
    job_id
}

async fn wait_state(deps: &Deps, job_id: &JobId, wanted: impl Fn(&RunRecord) -> bool) -> RunRecord {
    let start = Instant::now();
    loop {
        let run = deps.store.get_run(job_id).await.unwrap().unwrap();
        if wanted(&run) {
            return run;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "run stuck: {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[actix_web::test]
async fn a_run_actor_that_dies_is_restarted_and_its_run_finishes() {
    let (_db, deps) = deps().await;
    let pool = local_pool().await;
    let supervisor = Supervisor::new(deps.clone()).start();
    supervisor
        .send(UpsertPool(runtime("p", &pool.base_url())))
        .await
        .unwrap();
    let job_id = submit(&deps, &supervisor, "p", "victim-1").await;
    wait_state(&deps, &job_id, |r| r.state == RunState::Running).await;
    let pool_actor = supervisor
        .send(PoolAddr(PoolName::parse("p").unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert!(pool_actor.send(Crash(Some(job_id.clone()))).await.unwrap());
    let run = wait_state(&deps, &job_id, |r| r.release == ReleaseState::Done).await;
    assert_eq!(run.state, RunState::Done);
    assert_eq!(run.result, Some(serde_json::json!({"ok": true})));
    assert_eq!(
        run.attempts.dispatch, 1,
        "the restarted actor did not dispatch again"
    );
    pool.stop().await;
}

#[actix_web::test]
async fn a_pool_actor_that_dies_is_restarted_and_the_other_pools_carry_on() {
    let (_db, deps) = deps().await;
    let scheduler = local_pool().await;
    let supervisor = Supervisor::new(deps.clone()).start();
    supervisor
        .send(UpsertPool(runtime("bad", &scheduler.base_url())))
        .await
        .unwrap();
    supervisor
        .send(UpsertPool(runtime("good", &scheduler.base_url())))
        .await
        .unwrap();
    let bad_run = submit(&deps, &supervisor, "bad", "bad-1").await;
    let good_run = submit(&deps, &supervisor, "good", "good-1").await;
    wait_state(&deps, &bad_run, |r| r.state == RunState::Running).await;
    let bad = supervisor
        .send(PoolAddr(PoolName::parse("bad").unwrap()))
        .await
        .unwrap()
        .unwrap();
    // The pool actor panics while handling the message.
    assert!(bad.send(Crash(None)).await.is_err());
    for job_id in [&bad_run, &good_run] {
        let run = wait_state(&deps, job_id, |r| r.release == ReleaseState::Done).await;
        assert_eq!(run.state, RunState::Done, "{run:?}");
        assert_eq!(run.attempts.dispatch, 1, "{run:?}");
    }
    let restarted = supervisor
        .send(PoolAddr(PoolName::parse("bad").unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert!(
        restarted.connected(),
        "the supervisor replaced the dead pool actor"
    );
    scheduler.stop().await;
}

#[actix_web::test]
async fn an_older_pool_revision_arriving_late_does_not_replace_a_newer_one() {
    let (_db, deps) = deps().await;
    let supervisor = Supervisor::new(deps.clone()).start();
    let name = PoolName::parse("p").unwrap();
    let revision = |revision: i64| {
        let mut runtime = runtime("p", "http://127.0.0.1:9");
        runtime.revision = revision;
        UpsertPool(runtime)
    };
    // The first registration starts the pool actor; later ones swap its runtime.
    for (sent, running) in [(2, 2), (1, 2), (3, 3), (2, 3), (3, 3)] {
        supervisor.send(revision(sent)).await.unwrap();
        let stats = supervisor.send(PoolStats(name.clone())).await.unwrap();
        assert_eq!(
            stats.map(|s| s.revision),
            Some(running),
            "after revision {sent}"
        );
    }
}

#[actix_web::test]
async fn a_deleted_pool_leaves_no_call_state_behind_once_its_actor_is_done() {
    let (_db, deps) = deps().await;
    let pool = local_pool().await;
    let supervisor = Supervisor::new(deps.clone()).start();
    supervisor
        .send(UpsertPool(runtime("gone", &pool.base_url())))
        .await
        .unwrap();
    let name = PoolName::parse("gone").unwrap();
    // Calls of the pool (the last releases after a forced delete, say) keep its breaker.
    let _ = deps.adapter.health(&name);
    assert!(deps.adapter.keeps_state_of(&name));
    let pool_actor = supervisor
        .send(PoolAddr(name.clone()))
        .await
        .unwrap()
        .unwrap();
    supervisor.send(RemovePool(name.clone())).await.unwrap();
    let start = Instant::now();
    while pool_actor.connected() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the pool actor did not stop"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!deps.adapter.keeps_state_of(&name));
}
