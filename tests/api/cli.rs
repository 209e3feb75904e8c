//! The binary's commands: manifest validate and render, migrate, demo, and the admin token file.

use crate::support::MASTER_KEY;
use crate::support::database::TestDatabase;
use crate::support::gateway::{Gateway, Launch, cattery_bin};
use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(cattery_bin())
        .args(args)
        .env("CATTERY__LOGGING__LEVEL", "warn")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn every_shipped_manifest_validates() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests");
    let files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "json"))
        .map(|p| p.display().to_string())
        .collect();
    assert!(!files.is_empty());
    let mut args = vec!["manifest", "validate"];
    args.extend(files.iter().map(String::as_str));
    let (code, stdout, stderr) = run(&args);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout.matches(": ok").count(), files.len(), "{stdout}");
}

#[test]
fn validate_lists_every_problem_with_its_path_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: cattery/v1\nbaseUrl: https://x.example\nauth: {type: none}\ncolour: blue\n\
         dispatch: {request: {method: POST, path: \"/jobs/{{input.nope}}\"}}\n\
         poll: {request: {method: GET, path: /jobs}, map: {state: \"status[?\"}}\n",
    )
    .unwrap();
    let (code, stdout, _) = run(&["manifest", "validate", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    for path in ["colour", "dispatch.request.path", "poll.map.state"] {
        assert!(stdout.contains(path), "{path} missing from {stdout}");
    }
}

#[test]
fn render_prints_the_request_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.json");
    std::fs::write(&job, r#"{"steps": 2, "note": "a \"quoted\" value"}"#).unwrap();
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/local.yaml");
    let (code, stdout, stderr) = run(&[
        "manifest",
        "render",
        manifest,
        "--op",
        "dispatch",
        "--job",
        job.to_str().unwrap(),
        "--job-id",
        "job-7",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("POST http://127.0.0.1:7071/jobs"),
        "{stdout}"
    );
    assert!(
        stdout
            .to_ascii_lowercase()
            .contains("authorization: bearer ***"),
        "{stdout}"
    );
    let body = stdout.split("\n\n").nth(1).unwrap();
    let body: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(body["jobId"], "job-7");
    assert_eq!(body["job"]["note"], "a \"quoted\" value");
}

#[test]
fn migrate_applies_the_migrations_of_the_configured_database() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(TestDatabase::create());
    let output = Command::new(cattery_bin())
        .arg("migrate")
        .env("CATTERY_DATABASE_URL", db.url())
        .env("CATTERY__LOGGING__LEVEL", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let backend = if db.is_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    assert!(
        stdout.contains(&format!("migrations applied ({backend})")),
        "{stdout}"
    );
}

#[test]
fn the_demo_runs_its_jobs_to_completion_and_exits_0() {
    let (code, stdout, stderr) = run(&["demo", "--jobs", "2"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("2 of 2 jobs done"), "{stdout}");
}

#[actix_web::test]
async fn serve_without_a_configured_token_creates_a_private_admin_token_file() {
    let db = TestDatabase::create().await;
    let data_dir = tempfile::tempdir().unwrap();
    // As an operator starts it first: no admin token, the built-in local pool on, the default
    // egress policy.
    let gateway = Gateway::start(
        Launch::new(&db, data_dir.path())
            .env_remove("CATTERY_ADMIN_TOKEN")
            .env_remove("CATTERY__LOCALPOOL__ENABLED")
            .env_remove("CATTERY__EGRESS__ALLOWHTTP")
            .env_remove("CATTERY__EGRESS__ALLOWHOSTS"),
    )
    .await;
    let path = data_dir.path().join("admin.token");
    let token = std::fs::read_to_string(&path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let client = cattery::scheduler::http::plain_client().unwrap();
    let ok = client
        .get(gateway.url("/v1/pools"))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let pools: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(
        pools["pools"][0]["name"], "local",
        "serve registers the built-in local pool"
    );
    let refused = client
        .get(gateway.url("/v1/pools"))
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
}

/// A command that opens the database exits with its own status every time: nothing the store
/// left running in the background (a connection being opened) may crash the process at exit.
#[actix_web::test]
async fn a_database_command_exits_cleanly_every_time() {
    let db = TestDatabase::create().await;
    let data_dir = tempfile::tempdir().unwrap();
    for attempt in 0..60 {
        let output = Command::new(cattery_bin())
            .args(["keys", "rotate"])
            .env("CATTERY_DATABASE_URL", db.url())
            .env("CATTERY__DATADIR", data_dir.path())
            .env("CATTERY_MASTER_KEY", MASTER_KEY)
            .env("CATTERY__LOGGING__LEVEL", "warn")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "attempt {attempt}: {:?} {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
