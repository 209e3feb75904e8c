//! The egress policy through the real API: registration refuses forbidden URLs before any
//! traffic, names are checked against what they resolve to when cattery connects, redirects are
//! followed only when the manifest allows them and never carry credentials to another origin,
//! and the built-in local pool is exempt.

use crate::support::app::spawn_app_prepared;
use crate::support::client::Reply;
use crate::support::manifests::simple_manifest;
use crate::support::stub::{Recorder, answer, redirect};

use serde_json::{Value, json};

fn problem_of(body: &Value) -> (String, String) {
    let error = &body["errors"][0];
    (
        error["path"].as_str().unwrap_or_default().to_owned(),
        error["message"].as_str().unwrap_or_default().to_owned(),
    )
}

#[actix_web::test]
async fn the_default_policy_refuses_forbidden_urls_at_registration_before_any_traffic() {
    // A scheduler on loopback: it must never hear from cattery.
    let listener = Recorder::start(|_| answer(200, json!({}))).await;
    let app = spawn_app_prepared(
        |s| s.egress = cattery::config::Settings::default().egress,
        |_| {},
    )
    .await;
    let port = listener.port;
    let cases: Vec<(String, &str)> = vec![
        (format!("http://127.0.0.1:{port}"), "scheme \"http\""),
        (
            format!("https://127.0.0.1:{port}"),
            "127.0.0.1, a loopback address",
        ),
        (
            format!("https://2130706433:{port}"),
            "127.0.0.1, a loopback address",
        ),
        (
            format!("https://0x7f.1:{port}"),
            "127.0.0.1, a loopback address",
        ),
        (
            format!("https://0177.0.0.1:{port}"),
            "127.0.0.1, a loopback address",
        ),
        (
            format!("https://%31%32%37.0.0.1:{port}"),
            "127.0.0.1, a loopback address",
        ),
        (
            format!("https://127.0.0.1.:{port}"),
            "127.0.0.1, a loopback address",
        ),
        (
            format!("https://localhost:{port}"),
            "localhost resolves to 127.0.0.1, a loopback address",
        ),
        (format!("https://localhost.:{port}"), "localhost"),
        (format!("https://[::1]:{port}"), "::1, a loopback address"),
        (
            format!("https://[::ffff:127.0.0.1]:{port}"),
            "127.0.0.1, a loopback address",
        ),
        (format!("https://[::127.0.0.1]:{port}"), "embeds 127.0.0.1"),
        (
            format!("https://[64:ff9b::7f00:1]:{port}"),
            "embeds 127.0.0.1",
        ),
        ("https://10.1.2.3".to_owned(), "a private address"),
        ("https://[fd00::1]".to_owned(), "a unique-local address"),
        ("https://[fe80::1]".to_owned(), "a link-local address"),
        ("https://169.254.169.254".to_owned(), "never allowed"),
        ("https://[fd00:ec2::254]".to_owned(), "never allowed"),
        (
            "https://metadata.google.internal.".to_owned(),
            "cloud metadata service",
        ),
        (
            "https://user:pass@scheduler.example".to_owned(),
            "credentials",
        ),
    ];
    for (base_url, expected) in &cases {
        let Reply { status, body, .. } = app
            .put_pool(
                "p",
                simple_manifest(base_url),
                json!({"SCHED_TOKEN": "t0ken-value"}),
            )
            .await;
        assert_eq!(status, 422, "{base_url}: {body}");
        assert_eq!(body["code"], "validation_failed");
        let (path, message) = problem_of(&body);
        // A URL that does not parse as one (credentials are refused by the manifest itself).
        if *expected == "credentials" {
            assert_eq!(path, "manifest.baseUrl", "{base_url}: {body}");
            assert!(message.contains(expected), "{base_url}: {message}");
            continue;
        }
        assert_eq!(path, "manifest.baseUrl", "{base_url}: {body}");
        assert!(
            message.contains("egress policy") && message.contains(expected),
            "{base_url}: {message}"
        );
    }

    // The token URL of OAuth2 is checked the same way.
    let mut oauth = simple_manifest("https://scheduler.example");
    oauth["auth"] = json!({
        "type": "oauth2_client_credentials",
        "tokenUrl": format!("https://[::ffff:7f00:1]:{port}/token"),
        "clientIdSecretRef": {"key": "ID"},
        "clientSecretSecretRef": {"key": "SECRET"}
    });
    let Reply { status, body, .. } = app
        .put_pool(
            "p",
            oauth,
            json!({"ID": "client", "SECRET": "client-secret"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (path, message) = problem_of(&body);
    assert_eq!(path, "manifest.auth.tokenUrl");
    assert!(
        message.contains("127.0.0.1, a loopback address"),
        "{message}"
    );

    // Certificate checks cannot be turned off.
    let mut insecure = simple_manifest("https://scheduler.example");
    insecure["tls"] = json!({"insecureSkipVerify": true});
    let Reply { status, body, .. } = app
        .put_pool("p", insecure, json!({"SCHED_TOKEN": "t0ken-value"}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(problem_of(&body).0, "manifest.tls.insecureSkipVerify");

    // Nothing was stored and nothing was sent.
    let Reply { body: pools, .. } = app.get("/v1/pools").await;
    assert_eq!(pools["pools"], json!([]));
    assert!(listener.seen().is_empty());

    // A public https scheduler registers (a name that does not resolve now is not refused).
    let Reply { status, body, .. } = app
        .put_pool(
            "p",
            simple_manifest("https://scheduler.example:8443"),
            json!({"SCHED_TOKEN": "t0ken-value"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

#[actix_web::test]
async fn a_name_that_resolves_to_loopback_is_refused_when_cattery_connects() {
    let scheduler = Recorder::start(|seen| match seen.method.as_str() {
        "POST" => answer(201, json!({})),
        _ => answer(200, json!({"status": "Complete"})),
    })
    .await;
    let pin = |app: &cattery::app::Application| {
        app.gateway()
            .deps
            .adapter
            .egress()
            .pin("sched.test", vec!["127.0.0.1".parse().unwrap()]);
    };
    let manifest = simple_manifest(&format!("http://sched.test:{}", scheduler.port));

    // Only the address 127.0.0.1 is allowed, as a URL host. The name does not resolve when the
    // pool is registered, so it is accepted; it is rebound to 127.0.0.1 afterwards, and every
    // address it resolves to is refused at connect time.
    let gateway = std::sync::Arc::new(std::sync::Mutex::new(None));
    let kept = gateway.clone();
    let app = spawn_app_prepared(
        |_| {},
        move |app: &cattery::app::Application| *kept.lock().unwrap() = Some(app.gateway()),
    )
    .await;
    let Reply { status, body, .. } = app
        .put_pool(
            "named",
            manifest.clone(),
            json!({"SCHED_TOKEN": "t0ken-value"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let gateway = gateway.lock().unwrap().take().unwrap();
    gateway
        .deps
        .adapter
        .egress()
        .pin("sched.test", vec!["127.0.0.1".parse().unwrap()]);
    app.dispatch("named", json!({"jobId": "rebound-1"})).await;
    let run = app.wait_settled("rebound-1").await;
    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(run["failureCause"], "dispatch_rejected", "{run}");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(
            "egress policy refused the call: sched.test resolves to 127.0.0.1, a loopback address"
        ),
        "{error}"
    );
    // Nothing of this run reached the refused address. (Only this run's requests count: the
    // stub's loopback port may have served another test's scheduler before, whose leftover
    // retries can still knock.)
    assert!(
        scheduler
            .seen()
            .iter()
            .all(|seen| !seen.path.contains("rebound-1") && !seen.text().contains("rebound-1")),
        "the refused address was reached"
    );

    // The same name allowed by name: the pinned address is really used.
    let app = spawn_app_prepared(|s| s.egress.allow_hosts.push("sched.test".to_owned()), pin).await;
    let Reply { status, .. } = app
        .put_pool("named", manifest, json!({"SCHED_TOKEN": "t0ken-value"}))
        .await;
    assert_eq!(status, 201);
    app.dispatch("named", json!({"jobId": "allowed-1"})).await;
    let run = app.wait_settled("allowed-1").await;
    assert_eq!(run["state"], "done", "{run}");
    assert!(scheduler.seen().iter().any(|s| s.method == "POST"));
}

#[actix_web::test]
async fn redirects_are_followed_only_when_allowed_checked_hop_by_hop_and_stripped_of_credentials() {
    // Where redirected polls land: it records what arrives.
    let target = Recorder::start(|_| answer(200, json!({"status": "Complete"}))).await;
    let target_port = target.port;
    // The scheduler: dispatch is accepted; polls of job "cross-*" go to the target on another
    // port, polls of "inward-*" to localhost, every other poll to the same origin.
    let scheduler = Recorder::start(move |seen| {
        let name = seen.path.trim_start_matches("/jobs/").to_owned();
        match (seen.method.as_str(), seen.path.as_str()) {
            ("POST", "/jobs") => answer(201, json!({})),
            ("GET", "/done") => answer(200, json!({"status": "Complete"})),
            ("GET", _) if name.starts_with("cross") => redirect(
                302,
                &format!("http://127.0.0.1:{target_port}/status/{name}"),
            ),
            ("GET", _) if name.starts_with("inward") => redirect(
                302,
                &format!("http://localhost:{target_port}/status/{name}"),
            ),
            ("GET", _) => redirect(302, "/done"),
            _ => answer(200, json!({})),
        }
    })
    .await;
    let app = spawn_app_prepared(|_| {}, |_| {}).await;
    let mut following = simple_manifest(&scheduler.base_url);
    following["followRedirects"] = json!(true);
    following["dispatch"]["request"]["headers"] = json!({"X-Api-Key": "{{secret \"API_KEY\"}}"});
    following["poll"]["request"]["headers"] = json!({"X-Api-Key": "{{secret \"API_KEY\"}}"});
    let secrets = json!({"SCHED_TOKEN": "sched-token-value", "API_KEY": "api-key-value"});
    let Reply { status, body, .. } = app
        .put_pool("follow", following.clone(), secrets.clone())
        .await;
    assert_eq!(status, 201, "{body}");
    let mut not_following = following.clone();
    not_following["followRedirects"] = json!(false);
    let Reply { status, .. } = app
        .put_pool("nofollow", not_following, secrets.clone())
        .await;
    assert_eq!(status, 201);

    // Same origin: followed.
    app.dispatch("follow", json!({"jobId": "same-1"})).await;
    assert_eq!(app.wait_settled("same-1").await["state"], "done");

    // Another allowed origin: followed, but no credential crosses.
    app.dispatch("follow", json!({"jobId": "cross-1"})).await;
    assert_eq!(app.wait_settled("cross-1").await["state"], "done");
    let landed = target.seen();
    assert!(!landed.is_empty());
    for seen in &landed {
        assert_eq!(seen.header("authorization"), None, "{seen:?}");
        assert_eq!(seen.header("x-api-key"), None, "{seen:?}");
    }
    let origin_poll = scheduler
        .seen()
        .into_iter()
        .find(|s| s.path == "/jobs/cross-1")
        .unwrap();
    assert_eq!(
        origin_poll.header("authorization"),
        Some("Bearer sched-token-value")
    );
    assert_eq!(origin_poll.header("x-api-key"), Some("api-key-value"));

    // A redirect to an internal host is refused before anything reaches it.
    let before = target.seen().len();
    app.dispatch("follow", json!({"jobId": "inward-1"})).await;
    let run = app.wait_settled("inward-1").await;
    assert_eq!(run["state"], "failed", "{run}");
    assert!(
        run["error"]
            .as_str()
            .unwrap_or_default()
            .contains("localhost is a loopback name"),
        "{run}"
    );
    assert_eq!(
        target.seen().len(),
        before,
        "the internal target was reached"
    );

    // Without followRedirects the redirect is the answer: an unreadable poll, nothing followed.
    app.dispatch("nofollow", json!({"jobId": "cross-2"})).await;
    let run = app.wait_settled("cross-2").await;
    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(run["failureCause"], "poll_errors", "{run}");
    assert!(target.seen().iter().all(|s| s.path != "/status/cross-2"));
}

#[actix_web::test]
async fn the_built_in_local_pool_is_exempt_under_the_default_policy() {
    let app = spawn_app_prepared(
        |s| {
            s.egress = cattery::config::Settings::default().egress;
            s.local_pool.enabled = true;
        },
        |_| {},
    )
    .await;
    let Reply { status, body, .. } = app
        .dispatch(
            "local",
            json!({"jobId": "local-1", "job": {"steps": 1, "stepMs": 10}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let run = app.wait_settled("local-1").await;
    assert_eq!(run["state"], "done", "{run}");
}

#[actix_web::test]
async fn a_host_name_resolving_to_a_refused_address_is_refused_at_registration() {
    let app = spawn_app_prepared(
        |s| s.egress = cattery::config::Settings::default().egress,
        |app| {
            // A name the way /etc/hosts would point it into a private network.
            app.gateway()
                .deps
                .adapter
                .egress()
                .pin("sched.corp.test", vec!["10.1.2.3".parse().unwrap()]);
        },
    )
    .await;
    let secrets = json!({"SCHED_TOKEN": "t0ken-value"});
    let cases = [
        (
            "https://localhost:8443",
            "localhost resolves to 127.0.0.1, a loopback address, which the egress policy \
             refuses; list it in egress.allowHosts to allow it",
        ),
        (
            "https://sched.corp.test",
            "sched.corp.test resolves to 10.1.2.3, a private address, which the egress policy \
             refuses; list it in egress.allowHosts to allow it",
        ),
    ];
    for (base_url, expected) in cases {
        let Reply { status, body, .. } = app
            .put_pool("p", simple_manifest(base_url), secrets.clone())
            .await;
        assert_eq!(status, 422, "{base_url}: {body}");
        assert_eq!(body["code"], "validation_failed");
        let (path, message) = problem_of(&body);
        assert_eq!(path, "manifest.baseUrl", "{base_url}: {body}");
        assert!(message.contains(expected), "{base_url}: {message}");
    }
    // The OAuth2 token URL is resolved the same way.
    let mut oauth = simple_manifest("https://no-such-host.invalid");
    oauth["auth"] = json!({
        "type": "oauth2_client_credentials",
        "tokenUrl": "https://sched.corp.test/token",
        "clientIdSecretRef": {"key": "ID"},
        "clientSecretSecretRef": {"key": "SECRET"}
    });
    let Reply { status, body, .. } = app
        .put_pool("p", oauth, json!({"ID": "client", "SECRET": "s3cret"}))
        .await;
    assert_eq!(status, 422, "{body}");
    let (path, message) = problem_of(&body);
    assert_eq!(path, "manifest.auth.tokenUrl");
    assert!(message.contains("resolves to 10.1.2.3"), "{message}");
    let Reply { body: pools, .. } = app.get("/v1/pools").await;
    assert_eq!(pools["pools"], json!([]));

    // A name that does not resolve now is accepted: DNS may be down for a moment.
    let Reply { status, body, .. } = app
        .put_pool(
            "p",
            simple_manifest("https://no-such-host.invalid"),
            secrets,
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

#[actix_web::test]
async fn a_dns_failure_is_retried_not_refused() {
    // The port of a real scheduler, named by a host that does not resolve.
    let scheduler = Recorder::start(|_| answer(201, json!({}))).await;
    let app = spawn_app_prepared(|_| {}, |_| {}).await;
    let mut manifest = simple_manifest(&format!("http://no-such-host.invalid:{}", scheduler.port));
    manifest["retry"] = json!({"maxAttempts": 100, "initialBackoffMs": 10, "maxBackoffMs": 50});
    let Reply { status, body, .. } = app
        .put_pool(
            "unresolved",
            manifest,
            json!({"SCHED_TOKEN": "t0ken-value"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let Reply { status, body, .. } = app.dispatch("unresolved", json!({"jobId": "dns-1"})).await;
    assert_eq!(status, 202, "{body}");

    // The breaker counts the failures and opens, with the reason.
    let start = std::time::Instant::now();
    let pool = loop {
        let Reply { body: pool, .. } = app.get("/v1/pools/unresolved").await;
        if pool["health"]["circuit"] == "open" {
            break pool;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "the breaker never opened: {pool}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    };
    assert!(
        pool["health"]["lastError"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot resolve no-such-host.invalid"),
        "{pool}"
    );
    // The dispatch was retried with backoff (each retry first asking whether an earlier
    // attempt created the job), not failed as refused.
    let Reply { body: run, .. } = app.get("/v1/runs/dns-1").await;
    assert_eq!(run["state"], "dispatching", "{run}");
    let start = std::time::Instant::now();
    loop {
        let Reply { body: events, .. } = app.get("/v1/runs/dns-1/events").await;
        let retries = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["type"] == "retry"
                    && e["detail"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("cannot resolve no-such-host.invalid")
            })
            .count();
        if retries >= 4 {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "{events}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let Reply { body: run, .. } = app.get("/v1/runs/dns-1").await;
    assert_eq!(run["state"], "dispatching", "{run}");
    assert!(scheduler.seen().is_empty());
}
