//! `cattery demo`: a throw-away gateway on a temporary SQLite file, sample jobs through the
//! built-in local pool, live progress, a summary. Everything goes through the real HTTP API.

use crate::app::{Application, LOCAL_POOL, Secrets, random_token};
use crate::cli::say;
use crate::config::Settings;
use anyhow::Context as _;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How long the demo waits for its jobs.
const DEMO_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the demo; exit 0 when every job is done.
///
/// # Errors
/// When the gateway cannot start or the API misbehaves.
pub async fn run(jobs: u32) -> anyhow::Result<ExitCode> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let defaults = Settings::default();
    let settings = Settings {
        data_dir: dir.path().to_owned(),
        server: crate::config::ServerSettings {
            bind: "127.0.0.1:0".to_owned(),
            ..defaults.server.clone()
        },
        logging: crate::config::LoggingSettings {
            format: defaults.logging.format.clone(),
            level: "warn".to_owned(),
        },
        ..defaults
    };
    crate::telemetry::init(&settings.logging);
    let token = random_token();
    // A throw-away key for a throw-away database.
    let mut key = uuid::Uuid::new_v4().into_bytes().to_vec();
    key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    let secrets = Secrets {
        master_key: Some(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            key,
        )),
        admin_token: Some(token.clone()),
    };
    let app = Application::build(settings, secrets).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    let server = actix_web::rt::spawn(app.run_until_stopped());
    say(&format!(
        "cattery demo: gateway on {base}, database {}",
        dir.path().join("cattery.db").display()
    ));
    let outcome = drive(&base, &token, jobs.clamp(1, 100)).await;
    handle.stop(true).await;
    let _ = server.await;
    outcome
}

async fn drive(base: &str, token: &str, jobs: u32) -> anyhow::Result<ExitCode> {
    let client = crate::scheduler::http::plain_client()?;
    let stamp = chrono::Utc::now().format("%H%M%S");
    let mut ids = Vec::new();
    for i in 1..=jobs {
        let job_id = format!("demo-{stamp}-{i}");
        let body = json!({
            "jobId": job_id,
            "kind": "sample",
            "job": {"steps": 3 + (i % 4), "stepMs": 300, "result": {"summary": format!("sample job {i} finished")}},
        });
        let response = client
            .post(format!("{base}/v1/pools/{LOCAL_POOL}/runs"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(
            response.status().as_u16() == 202,
            "dispatch of {job_id} answered {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
        say(&format!("dispatched {job_id} to pool {LOCAL_POOL}"));
        ids.push(job_id);
    }
    let started = Instant::now();
    let mut last_line: BTreeMap<String, String> = BTreeMap::new();
    let mut views: BTreeMap<String, Value> = BTreeMap::new();
    loop {
        for id in &ids {
            let view: Value = client
                .get(format!("{base}/v1/runs/{id}"))
                .bearer_auth(token)
                .send()
                .await?
                .json()
                .await?;
            let line = progress_line(&view);
            if last_line.get(id) != Some(&line) {
                say(&line);
                last_line.insert(id.clone(), line);
            }
            views.insert(id.clone(), view);
        }
        let finished = views
            .values()
            .all(|v| matches!(v["state"].as_str(), Some("done" | "failed" | "cancelled")));
        if finished {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < DEMO_TIMEOUT,
            "the demo jobs did not finish within {DEMO_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    say("");
    say("summary:");
    let mut done = 0;
    for (id, view) in &views {
        if view["state"] == "done" {
            done += 1;
        }
        say(&format!(
            "  {id:<24} {:<9} polls {:<3} {}",
            view["state"].as_str().unwrap_or("?"),
            view["attempts"]["poll"],
            view["result"]["summary"]
                .as_str()
                .or(view["error"].as_str())
                .unwrap_or("")
        ));
    }
    say(&format!(
        "{done} of {} jobs done in {:.1} s",
        views.len(),
        started.elapsed().as_secs_f64()
    ));
    Ok(if done == views.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn progress_line(view: &Value) -> String {
    let id = view["jobId"].as_str().unwrap_or("?");
    let state = view["state"].as_str().unwrap_or("?");
    let completed = view["progress"]["completed"].as_i64().unwrap_or(0);
    let total = view["progress"]["total"].as_i64().unwrap_or(0);
    let bar = if total > 0 {
        let filled = usize::try_from(completed.clamp(0, total)).unwrap_or(0);
        let empty = usize::try_from(total - completed.clamp(0, total)).unwrap_or(0);
        format!(
            "[{}{}] {completed}/{total}",
            "#".repeat(filled),
            ".".repeat(empty)
        )
    } else {
        String::new()
    };
    format!("  {id:<24} {state:<11} {bar}")
}
