//! Durability: runs survive a restart of the application on the same database, and secrets
//! and job bodies are never stored in clear.

use crate::helpers::{
    ADMIN_TOKEN, MASTER_KEY, TestDatabase, cattery_bin, free_port, local_manifest,
    start_local_pool, wait_healthy,
};
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "local-pool-persist-token";

fn serve(db: &TestDatabase, data_dir: &std::path::Path, port: u16) -> crate::helpers::ChildProcess {
    let child = Command::new(cattery_bin())
        .arg("serve")
        .env("CATTERY_DATABASE_URL", db.url())
        .env("CATTERY_BIND", format!("127.0.0.1:{port}"))
        .env("CATTERY__DATADIR", data_dir)
        .env("CATTERY__LOCALPOOL__ENABLED", "false")
        .env("CATTERY__EGRESS__ALLOWHTTP", "true")
        .env("CATTERY__EGRESS__ALLOWHOSTS", "[127.0.0.1]")
        .env("CATTERY__EGRESS__ALLOWHTTP", "true")
        .env("CATTERY__EGRESS__ALLOWHOSTS", "[127.0.0.1]")
        .env("CATTERY__LOGGING__LEVEL", "warn")
        .env("CATTERY_MASTER_KEY", MASTER_KEY)
        .env("CATTERY_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    crate::helpers::ChildProcess {
        child,
        base_url: format!("http://127.0.0.1:{port}"),
    }
}

#[actix_web::test]
async fn a_running_run_resumes_after_the_gateway_is_killed_and_restarted() {
    let db = TestDatabase::create().await;
    let data_dir = tempfile::tempdir().unwrap();
    let pool = start_local_pool(TOKEN).await;
    let client = cattery::scheduler::http::plain_client().unwrap();
    let port = free_port();
    let mut gateway = serve(&db, data_dir.path(), port);
    wait_healthy(&format!("{}/healthz", gateway.base_url)).await;
    let base = gateway.base_url.clone();
    let registered = client
        .put(format!("{base}/v1/pools/local"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"manifest": local_manifest(&pool.base_url), "secrets": {"LOCAL_POOL_TOKEN": TOKEN}}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status().as_u16(), 201);
    let secret_job = json!({"steps": 20, "stepMs": 100, "ghToken": "ghs_supersecretjobtoken"});
    let accepted = client
        .post(format!("{base}/v1/pools/local/runs"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"jobId": "survivor-1", "job": secret_job}))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status().as_u16(), 202);
    let get = |base: String| {
        let client = client.clone();
        async move {
            client
                .get(format!("{base}/v1/runs/survivor-1"))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let start = Instant::now();
    while get(base.clone()).await["state"] != "running" {
        assert!(start.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // kill -9 the gateway while the job runs at the scheduler, then start it again.
    gateway.child.kill().unwrap();
    gateway.child.wait().unwrap();
    let restarted = serve(&db, data_dir.path(), port);
    wait_healthy(&format!("{}/healthz", restarted.base_url)).await;
    let start = Instant::now();
    let run = loop {
        let run = get(base.clone()).await;
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
    if let Some(path) = db.sqlite_path() {
        let mut raw = std::fs::read(&path).unwrap();
        for suffix in ["-wal", "-shm"] {
            raw.extend(std::fs::read(format!("{}{suffix}", path.display())).unwrap_or_default());
        }
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
    drop(restarted);
}
