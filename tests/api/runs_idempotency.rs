//! Idempotent submission: the stored digest is keyed (it tells nothing about the job to a reader
//! of the database), digests of runs stored before keyed digests still match, and a master key
//! rotation followed by removing the old key leaves every repeat answered as before.

use crate::scheduler::TestScheduler;
use crate::support::MASTER_KEY;
use crate::support::database::TestDatabase;
use crate::support::gateway::{Gateway, Launch, cattery_bin};
use crate::support::manifests::{SCHED_TOKEN, scheduler_manifest};
use crate::support::stub::Scripted;
use cattery::domain::ids::JobId;
use cattery::store::Store;
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

/// Another master key (base64 of 32 bytes), to rotate to.
const NEXT_KEY: &str = "Tk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk4=";

/// The unkeyed SHA-256 digest earlier versions stored for a submission with only a job.
fn bare_digest(pool: &str, job: &Value) -> String {
    let document = json!({
        "pool": pool, "kind": null, "job": job, "labels": {}, "deadlineSeconds": null
    });
    cattery::crypto::sha256_hex(cattery::service::canonical_json(&document).as_bytes())
}

/// Submits `body` to the pool `sched`; answers the status.
async fn submit(gateway: &Gateway, body: &Value) -> u16 {
    gateway.dispatch("sched", body.clone()).await.status
}

#[actix_web::test]
async fn idempotency_digests_are_keyed_old_ones_still_match_and_survive_key_rotation() {
    // The real binary, as a process: the rotation below needs the first gateway gone.
    let db = TestDatabase::create().await;
    let first_dir = tempfile::tempdir().unwrap();
    let first = Gateway::start(Launch::new(&db, first_dir.path())).await;
    let scheduler = TestScheduler::start(vec![Scripted::Json(json!({"status": "Complete"}))]).await;
    first
        .register(
            "sched",
            scheduler_manifest(&scheduler.base_url),
            json!({"SCHED_TOKEN": SCHED_TOKEN}),
        )
        .await;
    let job = json!({"pin": "1234"});
    let keyed = json!({"jobId": "idem-keyed", "job": job});
    let legacy = json!({"jobId": "idem-legacy", "job": job});
    assert_eq!(submit(&first, &keyed).await, 202);
    assert_eq!(submit(&first, &legacy).await, 202);
    for id in ["idem-keyed", "idem-legacy"] {
        first
            .wait_for(id, Duration::from_secs(20), |run| run["released"] == true)
            .await;
    }

    // What is stored is not the plain digest of the job: without the key, a guess of the job
    // cannot be checked against it.
    let store = Store::connect(db.url(), 1).await.unwrap();
    let stored = store
        .get_run(&JobId::parse("idem-keyed").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(
        stored.request_digest.starts_with("v2:"),
        "{}",
        stored.request_digest
    );
    assert!(!stored.request_digest.contains(&bare_digest("sched", &job)));

    // A run stored by an earlier version carries the bare digest.
    let mut old = store
        .get_run(&JobId::parse("idem-legacy").unwrap())
        .await
        .unwrap()
        .unwrap();
    old.request_digest = bare_digest("sched", &job);
    store.commit(old, Vec::new()).await.unwrap();

    let changed = |id: &str| json!({"jobId": id, "job": {"pin": "9999"}});
    assert_eq!(submit(&first, &keyed).await, 200);
    assert_eq!(submit(&first, &legacy).await, 200);
    assert_eq!(submit(&first, &changed("idem-keyed")).await, 409);
    assert_eq!(submit(&first, &changed("idem-legacy")).await, 409);
    drop(first);

    // Rotate to a new master key, then serve with the new key alone.
    let data_dir = tempfile::tempdir().unwrap();
    let output = Command::new(cattery_bin())
        .args(["keys", "rotate"])
        .env("CATTERY_DATABASE_URL", db.url())
        .env("CATTERY__DATADIR", data_dir.path())
        .env("CATTERY_MASTER_KEYS", format!("{NEXT_KEY},{MASTER_KEY}"))
        .env_remove("CATTERY_MASTER_KEY")
        .env("CATTERY__LOGGING__LEVEL", "warn")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{said}");
    assert!(said.contains("gateway keys: 1 re-sealed"), "{said}");

    let rotated = Gateway::start(
        Launch::new(&db, data_dir.path())
            .env("CATTERY_MASTER_KEYS", NEXT_KEY)
            .env_remove("CATTERY_MASTER_KEY"),
    )
    .await;
    assert_eq!(submit(&rotated, &keyed).await, 200);
    assert_eq!(submit(&rotated, &legacy).await, 200);
    assert_eq!(submit(&rotated, &changed("idem-keyed")).await, 409);
    assert_eq!(submit(&rotated, &changed("idem-legacy")).await, 409);
}
