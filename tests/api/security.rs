//! Security through the real API and the real binary: limits answer clear 4xx (never a 500),
//! OAuth2 tokens are fetched once and renewed after a 401, malformed credentials are refused
//! without being echoed, and `cattery keys rotate` re-seals every row under the newest key.

use crate::support::app::spawn_app_prepared;
use crate::support::client::Reply;
use crate::support::gateway::cattery_bin;
use crate::support::manifests::simple_manifest;
use crate::support::stub::{Recorder, answer};
use crate::support::wait::RUN_LIMIT;
use crate::support::{ADMIN_TOKEN, DISPATCHER_TOKEN, MASTER_KEY};
use actix_web::HttpResponse;
use cattery::crypto::{Sealer, binding};
use serde_json::{Value, json};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A second master key (base64 of 32 bytes of 'B').
const NEW_KEY: &str = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";

fn code_of(body: &Value) -> &str {
    body["code"].as_str().unwrap_or_default()
}

#[actix_web::test]
async fn every_limit_is_a_clear_4xx_and_never_a_500() {
    let app = spawn_app_prepared(|s| s.server.max_body_bytes = 2 * 1024 * 1024, |_| {}).await;
    let scheduler = Recorder::start(|seen| match seen.method.as_str() {
        "POST" => answer(201, json!({})),
        _ => answer(200, json!({"status": "Running"})),
    })
    .await;
    let Reply { status, .. } = app
        .put_pool(
            "p",
            simple_manifest(&scheduler.base_url),
            json!({"SCHED_TOKEN": "t0ken-value"}),
        )
        .await;
    assert_eq!(status, 201);

    // A request body over server.maxBodyBytes: 413.
    let huge = "x".repeat(3 * 1024 * 1024);
    let Reply { status, body, .. } = app
        .dispatch("p", json!({"jobId": "big-1", "job": {"blob": huge}}))
        .await;
    assert_eq!(
        (status, code_of(&body)),
        (413, "payload_too_large"),
        "{body}"
    );

    // A job over 1 MiB inside an acceptable body: 422 naming the job.
    let big = "x".repeat(1024 * 1024 + 10);
    let Reply { status, body, .. } = app
        .dispatch("p", json!({"jobId": "big-2", "job": {"blob": big}}))
        .await;
    assert_eq!(
        (status, code_of(&body)),
        (422, "validation_failed"),
        "{body}"
    );
    assert_eq!(body["errors"][0]["path"], "job");

    // JSON nested deeper than 64 levels: 422.
    let deep = format!(
        "{{\"jobId\":\"deep-1\",\"job\":{}1{}}}",
        "{\"a\":".repeat(100),
        "}".repeat(100)
    );
    let response = app
        .client
        .post(app.url("/v1/pools/p/runs"))
        .bearer_auth(DISPATCHER_TOKEN)
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);
    assert_eq!(code_of(&response.json().await.unwrap()), "malformed_json");

    // A manifest over 256 KiB: 422 on the manifest.
    let mut large = simple_manifest(&scheduler.base_url);
    large["description"] = json!("d".repeat(300 * 1024));
    let Reply { status, body, .. } = app
        .put_pool("large", large, json!({"SCHED_TOKEN": "t0ken-value"}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["path"], "manifest");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("limit")
    );

    // A YAML alias bomb and YAML nested 100 000 deep: 422, no hang, no crash.
    let mut bomb = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    let mut previous = 'a';
    for name in 'b'..='j' {
        bomb.push_str(&format!(
            "{name}: &{name} [*{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}]\n"
        ));
        previous = name;
    }
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for text in [bomb, nested] {
        let Reply { status, body, .. } = app.put_pool("hostile", json!(text), json!({})).await;
        assert_eq!(
            (status, code_of(&body)),
            (422, "validation_failed"),
            "{body}"
        );
    }

    // A template whose output exceeds the 4 MiB cap: the run fails with the reason.
    let mut amplifying = simple_manifest(&scheduler.base_url);
    amplifying["dispatch"]["request"]["body"] = json!({
        "a": "{{json input.job}}", "b": "{{json input.job}}", "c": "{{json input.job}}",
        "d": "{{json input.job}}", "e": "{{json input.job}}"
    });
    let Reply { status, body, .. } = app
        .put_pool("amplify", amplifying, json!({"SCHED_TOKEN": "t0ken-value"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let Reply { status, .. } = app
        .dispatch(
            "amplify",
            json!({"jobId": "amplified-1", "job": {"blob": "y".repeat(900 * 1024)}}),
        )
        .await;
    assert_eq!(status, 202);
    let run = app.wait_settled("amplified-1").await;
    assert_eq!(run["state"], "failed");
    assert_eq!(run["failureCause"], "dispatch_rejected");
    assert!(
        run["error"].as_str().unwrap().contains("over the cap"),
        "{run}"
    );

    // Answers over the 4 MiB response cap, or nested beyond any parser's depth: unreadable
    // polls, then a failed run, never a crash.
    let hostile = Recorder::start(|seen| match (seen.method.as_str(), seen.path.as_str()) {
        ("POST", _) => answer(201, json!({})),
        ("GET", "/jobs/huge-1") => HttpResponse::Ok()
            .content_type("application/json")
            .body(vec![b' '; 5 * 1024 * 1024]),
        ("GET", _) => HttpResponse::Ok()
            .content_type("application/json")
            .body(format!("{}{}", "[".repeat(100_000), "]".repeat(100_000))),
        _ => answer(200, json!({})),
    })
    .await;
    let Reply { status, .. } = app
        .put_pool(
            "hostile",
            simple_manifest(&hostile.base_url),
            json!({"SCHED_TOKEN": "t0ken-value"}),
        )
        .await;
    assert_eq!(status, 201);
    for (job, reason) in [("huge-1", "larger than"), ("deep-2", "not JSON")] {
        app.dispatch("hostile", json!({"jobId": job})).await;
        let run = app.wait_settled(job).await;
        assert_eq!(run["state"], "failed", "{run}");
        assert_eq!(run["failureCause"], "poll_errors", "{run}");
        assert!(run["error"].as_str().unwrap().contains(reason), "{run}");
    }
    let Reply { status, .. } = app.get("/readyz").await;
    assert_eq!(status, 200, "the gateway is still healthy");
}

#[actix_web::test]
async fn concurrent_runs_fetch_one_oauth_token_and_a_401_brings_a_new_one() {
    let issued = Arc::new(AtomicUsize::new(0));
    let counter = issued.clone();
    let scheduler = Recorder::start(move |seen| {
        match (seen.method.as_str(), seen.path.as_str()) {
            ("POST", "/oauth/token") => {
                // A slow token endpoint, so that the first calls of all runs overlap.
                std::thread::sleep(std::time::Duration::from_millis(300));
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                answer(
                    200,
                    json!({"access_token": format!("tok-{n}"), "expires_in": 3600}),
                )
            }
            ("POST", "/jobs") => answer(201, json!({})),
            // The first token is revoked as soon as it is used for a poll.
            ("GET", _) if seen.header("authorization") == Some("Bearer tok-1") => {
                answer(401, json!({"error": "invalid_token"}))
            }
            ("GET", _) => answer(200, json!({"status": "Complete"})),
            _ => answer(200, json!({})),
        }
    })
    .await;
    let app = spawn_app_prepared(|_| {}, |_| {}).await;
    let mut manifest = simple_manifest(&scheduler.base_url);
    manifest["auth"] = json!({
        "type": "oauth2_client_credentials",
        "tokenUrl": format!("{}/oauth/token", scheduler.base_url),
        "clientIdSecretRef": {"key": "CLIENT_ID"},
        "clientSecretSecretRef": {"key": "CLIENT_SECRET"}
    });
    let Reply { status, body, .. } = app
        .put_pool(
            "oauth",
            manifest,
            json!({"CLIENT_ID": "client-1", "CLIENT_SECRET": "client-secret-1"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let dispatches = (0..5).map(|i| app.dispatch("oauth", json!({"jobId": format!("o-{i}")})));
    for Reply { status, body, .. } in futures_util::future::join_all(dispatches).await {
        assert_eq!(status, 202, "{body}");
    }
    for i in 0..5 {
        let run = app.wait_settled(&format!("o-{i}")).await;
        assert_eq!(run["state"], "done", "{run}");
    }
    assert_eq!(
        issued.load(Ordering::SeqCst),
        2,
        "one token for the concurrent first calls, one after the 401"
    );
    let seen = scheduler.seen();
    for token_call in seen.iter().filter(|s| s.path == "/oauth/token") {
        let form = String::from_utf8_lossy(&token_call.body);
        assert!(
            form.contains("grant_type=client_credentials")
                && form.contains("client_secret=client-secret-1"),
            "{form}"
        );
    }
    let dispatches: Vec<_> = seen.iter().filter(|s| s.path == "/jobs").collect();
    assert_eq!(dispatches.len(), 5);
    assert!(
        dispatches
            .iter()
            .all(|s| s.header("authorization") == Some("Bearer tok-1"))
    );
    let last_polls: Vec<_> = seen
        .iter()
        .filter(|s| s.method == "GET")
        .filter(|s| s.header("authorization") == Some("Bearer tok-2"))
        .collect();
    assert!(last_polls.len() >= 5, "every run polled with the new token");
}

#[actix_web::test]
async fn malformed_credentials_are_refused_and_never_echoed() {
    let app = spawn_app_prepared(|_| {}, |_| {}).await;
    let upper = ADMIN_TOKEN.to_uppercase();
    let longer = format!("{ADMIN_TOKEN}x");
    let basic = format!("Basic {ADMIN_TOKEN}");
    let bare = ADMIN_TOKEN.to_owned();
    for header in [
        format!("Bearer {upper}"),
        format!("Bearer {longer}"),
        basic,
        bare,
        "Bearer ".to_owned(),
    ] {
        let response = app
            .client
            .get(app.url("/v1/pools"))
            .header("authorization", &header)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401, "{header}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let text = response.text().await.unwrap();
        assert!(
            !text.contains(ADMIN_TOKEN) && !text.contains(&upper),
            "{text}"
        );
    }
    // A token in the query string is not a credential.
    let response = app
        .client
        .get(app.url(&format!("/v1/pools?access_token={ADMIN_TOKEN}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}

fn rotate(db_url: &str, data_dir: &std::path::Path, keys: &str) -> (bool, String) {
    let output = Command::new(cattery_bin())
        .args(["keys", "rotate"])
        .env("CATTERY_DATABASE_URL", db_url)
        .env("CATTERY__DATADIR", data_dir)
        .env("CATTERY_MASTER_KEYS", keys)
        .env_remove("CATTERY_MASTER_KEY")
        .env("CATTERY__LOGGING__LEVEL", "warn")
        .output()
        .unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[actix_web::test]
async fn keys_rotate_reseals_every_row_online_and_resumes_where_it_stopped() {
    let complete = Arc::new(AtomicUsize::new(0));
    let finish = complete.clone();
    let scheduler = Recorder::start(move |seen| match seen.method.as_str() {
        "POST" => answer(201, json!({})),
        "GET" if finish.load(Ordering::SeqCst) > 0 => answer(200, json!({"status": "Complete"})),
        "GET" => answer(200, json!({"status": "Running"})),
        _ => answer(200, json!({})),
    })
    .await;
    // The gateway runs with the old key only, and keeps running during the rotation.
    let app = spawn_app_prepared(|_| {}, |_| {}).await;
    let Reply { status, .. } = app
        .put_pool(
            "p",
            simple_manifest(&scheduler.base_url),
            json!({"SCHED_TOKEN": "rotated-secret-value"}),
        )
        .await;
    assert_eq!(status, 201);
    for i in 0..3 {
        app.dispatch(
            "p",
            json!({"jobId": format!("r-{i}"), "job": {"ghToken": format!("ghs_rotation_job_token_{i}")}}),
        )
        .await;
    }
    for i in 0..3 {
        app.wait_for(&format!("r-{i}"), RUN_LIMIT, |run| {
            run["state"] == "running"
        })
        .await;
    }
    let old = Sealer::from_base64_keys(&[MASTER_KEY]).unwrap();
    let both = Sealer::from_base64_keys(&[NEW_KEY, MASTER_KEY]).unwrap();
    let new_only = Sealer::from_base64_keys(&[NEW_KEY]).unwrap();
    let (pools, jobs) = app.db.sealed_rows();
    assert_eq!((pools.len(), jobs.len()), (1, 3));
    assert!(
        jobs.iter()
            .all(|(_, sealed)| both.needs_reseal(sealed).unwrap())
    );

    // An earlier, interrupted rotation already re-sealed one job body.
    let (first_id, first_sealed) = &jobs[0];
    let resealed = both
        .reseal(first_sealed, &binding::run_job(first_id))
        .unwrap();
    app.db.update_job_sealed(first_id, &resealed);

    let keys = format!("{NEW_KEY},{MASTER_KEY}");
    let (ok, output) = rotate(app.db.url(), app.data_dir.path(), &keys);
    assert!(ok, "{output}");
    assert!(
        output.contains("secret bundles: 1 re-sealed, 0 already"),
        "{output}"
    );
    assert!(
        output.contains("job bodies: 2 re-sealed, 1 already"),
        "{output}"
    );
    assert!(!output.contains("rotated-secret-value") && !output.contains("ghs_rotation"));

    // Every row opens with the new key alone, bound to its row, with the original content.
    let (pools, jobs) = app.db.sealed_rows();
    for (name, sealed) in &pools {
        let clear = new_only.open(sealed, &binding::pool_secrets(name)).unwrap();
        assert!(
            String::from_utf8(clear)
                .unwrap()
                .contains("rotated-secret-value")
        );
        assert!(old.open(sealed, &binding::pool_secrets(name)).is_err());
    }
    for (job_id, sealed) in &jobs {
        let clear = new_only.open(sealed, &binding::run_job(job_id)).unwrap();
        let i = job_id.trim_start_matches("r-");
        assert!(
            String::from_utf8(clear)
                .unwrap()
                .contains(&format!("ghs_rotation_job_token_{i}"))
        );
    }

    // Run again: nothing left to do.
    let (ok, output) = rotate(app.db.url(), app.data_dir.path(), &keys);
    assert!(ok, "{output}");
    assert!(
        output.contains("secret bundles: 0 re-sealed, 1 already"),
        "{output}"
    );
    assert!(
        output.contains("job bodies: 0 re-sealed, 3 already"),
        "{output}"
    );

    // Without the key that sealed the rows: every row is reported, the exit code says so.
    let (ok, output) = rotate(
        app.db.url(),
        app.data_dir.path(),
        "Q0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0M=",
    );
    assert!(!ok, "{output}");
    assert!(output.contains("is not configured"), "{output}");

    // No key configured at all: refused, and no key file is created.
    let empty = tempfile::tempdir().unwrap();
    let output = Command::new(cattery_bin())
        .args(["keys", "rotate"])
        .env("CATTERY_DATABASE_URL", app.db.url())
        .env("CATTERY__DATADIR", empty.path())
        .env_remove("CATTERY_MASTER_KEYS")
        .env_remove("CATTERY_MASTER_KEY")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no master key is configured"));
    assert!(!empty.path().join("master.key").exists());

    // The gateway was never interrupted: its runs finish and are released.
    complete.store(1, Ordering::SeqCst);
    for i in 0..3 {
        let run = app.wait_settled(&format!("r-{i}")).await;
        assert_eq!(run["state"], "done", "{run}");
    }
}

#[test]
fn master_keys_come_from_both_variables_newest_first_without_duplicates() {
    use cattery::app::master_keys;
    assert_eq!(master_keys(None, None), None);
    assert_eq!(
        master_keys(Some("new, old".to_owned()), Some("old".to_owned())).as_deref(),
        Some("new,old")
    );
    assert_eq!(
        master_keys(None, Some("only".to_owned())).as_deref(),
        Some("only")
    );
    assert_eq!(
        master_keys(Some("new".to_owned()), Some("older".to_owned())).as_deref(),
        Some("new,older")
    );
}
