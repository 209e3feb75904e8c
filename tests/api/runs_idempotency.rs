//! Idempotent submission: the stored digest is keyed (it tells nothing about the job to a reader
//! of the database), digests of runs stored before keyed digests still match, and a master key
//! rotation followed by removing the old key leaves every repeat answered as before.

use crate::helpers::{
    ADMIN_TOKEN, MASTER_KEY, SCHED_TOKEN, TestDatabase, cattery_bin, free_port, scheduler_manifest,
    serve_command, spawn_gateway, wait_healthy,
};
use crate::scheduler::{Answer, TestScheduler};
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

async fn submit(client: &reqwest::Client, base: &str, body: &Value) -> u16 {
    client
        .post(format!("{base}/v1/pools/sched/runs"))
        .bearer_auth(ADMIN_TOKEN)
        .json(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[actix_web::test]
async fn idempotency_digests_are_keyed_old_ones_still_match_and_survive_key_rotation() {
    // The real binary, as a process: the rotation below needs the first gateway gone.
    let db = TestDatabase::create().await;
    let first_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let first = spawn_gateway(serve_command(&db, first_dir.path(), port), port);
    let base = first.base_url.clone();
    wait_healthy(&format!("{base}/healthz")).await;
    let client = cattery::scheduler::http::plain_client().unwrap();
    let scheduler = TestScheduler::start(vec![Answer::Json(json!({"status": "Complete"}))]).await;
    let registered = client
        .put(format!("{base}/v1/pools/sched"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"manifest": scheduler_manifest(&scheduler.base_url), "secrets": {"SCHED_TOKEN": SCHED_TOKEN}}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status().as_u16(), 201);
    let job = json!({"pin": "1234"});
    let keyed = json!({"jobId": "idem-keyed", "job": job});
    let legacy = json!({"jobId": "idem-legacy", "job": job});
    assert_eq!(submit(&client, &base, &keyed).await, 202);
    assert_eq!(submit(&client, &base, &legacy).await, 202);
    for id in ["idem-keyed", "idem-legacy"] {
        let start = std::time::Instant::now();
        loop {
            let run: Value = client
                .get(format!("{base}/v1/runs/{id}"))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if run["released"] == true {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "{run}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
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
    assert_eq!(submit(&client, &base, &keyed).await, 200);
    assert_eq!(submit(&client, &base, &legacy).await, 200);
    assert_eq!(submit(&client, &base, &changed("idem-keyed")).await, 409);
    assert_eq!(submit(&client, &base, &changed("idem-legacy")).await, 409);
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

    let port = free_port();
    let mut command = serve_command(&db, data_dir.path(), port);
    command
        .env("CATTERY_MASTER_KEYS", NEXT_KEY)
        .env_remove("CATTERY_MASTER_KEY");
    let _gateway = spawn_gateway(command, port);
    let rotated = format!("http://127.0.0.1:{port}");
    wait_healthy(&format!("{rotated}/healthz")).await;
    let admin = |body: &Value| {
        client
            .post(format!("{rotated}/v1/pools/sched/runs"))
            .bearer_auth(ADMIN_TOKEN)
            .json(body)
            .send()
    };
    assert_eq!(admin(&keyed).await.unwrap().status().as_u16(), 200);
    assert_eq!(admin(&legacy).await.unwrap().status().as_u16(), 200);
    assert_eq!(
        admin(&changed("idem-keyed"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        409
    );
    assert_eq!(
        admin(&changed("idem-legacy"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        409
    );
}
