//! Egress through a forward proxy: off unless the operator opts in (the configuration, or the
//! environment with `egress.useEnvProxy`), per pool overridable (`proxy: direct` or a proxy of
//! the pool's own, judged by the egress policy), with the proxy's credentials sent to the proxy
//! only. The scheduler is the real `cattery local-pool`; the proxy a real one on loopback.

use crate::support::app::{spawn_app_prepared, spawn_app_with};
use crate::support::database::TestDatabase;
use crate::support::gateway::{Gateway, Launch, LocalPool};
use crate::support::manifests::local_manifest;
use crate::support::proxy::ForwardProxy;
use cattery::config::ProxySettings;
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr};

/// A name that resolves nowhere but in the proxy's own table: reachable only through it.
const PROXIED: &str = "sched.proxied.test";

fn job(id: &str) -> Value {
    json!({"jobId": id, "job": {"steps": 1, "stepMs": 0, "result": {"via": id}}})
}

fn targets(proxy: &ForwardProxy) -> Vec<String> {
    proxy
        .asked()
        .into_iter()
        .map(|asked| asked.target)
        .collect()
}

#[actix_web::test]
async fn scheduler_calls_go_through_the_configured_proxy_with_its_credentials() {
    let scheduler = LocalPool::start("tok-proxied").await;
    let port = scheduler.base_url.rsplit(':').next().unwrap().to_owned();
    let proxy = ForwardProxy::start(&[(PROXIED, "127.0.0.1")]).await;
    let with_credentials = proxy.url.replace("http://", "http://ops:p%40ss-w0rd@");
    let app = spawn_app_with(|s| {
        s.egress.proxy = Some(ProxySettings {
            url: with_credentials,
            no_proxy: Vec::new(),
        });
    })
    .await;

    let base = format!("http://{PROXIED}:{port}");
    app.register("far", local_manifest(&base), scheduler.secrets())
        .await;
    app.submit("far", job("proxied-1")).await;
    let run = app.wait_settled("proxied-1").await;
    assert_eq!(run["state"], "done", "{run}");
    assert_eq!(run["result"]["via"], "proxied-1", "{run}");

    let asked = proxy.asked();
    assert!(!asked.is_empty(), "the proxy was never asked");
    let expected_auth = format!("Basic {}", base64_of("ops:p@ss-w0rd"));
    for request in &asked {
        assert_eq!(request.target, format!("{PROXIED}:{port}"), "{asked:?}");
        assert_eq!(
            request.authorization.as_deref(),
            Some(expected_auth.as_str()),
            "{asked:?}"
        );
    }

    // The policy still judges the target: the metadata service stays refused through a proxy,
    // and nothing reaches the proxy for it.
    let before = asked.len();
    let refused = app
        .put_pool(
            "metadata",
            local_manifest("http://169.254.169.254"),
            scheduler.secrets(),
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert!(refused.text.contains("baseUrl"), "{}", refused.text);
    assert_eq!(proxy.asked().len(), before);
    // No answer carries the proxy's password.
    let pool = app.get("/v1/pools/far").await;
    assert!(!pool.text.contains("p%40ss") && !pool.text.contains("p@ss"));
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[actix_web::test]
async fn no_proxy_targets_and_direct_pools_skip_the_proxy() {
    let scheduler = LocalPool::start("tok-mixed").await;
    let port = scheduler.base_url.rsplit(':').next().unwrap().to_owned();
    let proxy = ForwardProxy::start(&[(PROXIED, "127.0.0.1")]).await;
    let proxy_url = proxy.url.clone();
    let app = spawn_app_prepared(
        |s| {
            s.egress.allow_hosts.push("127.0.0.0/8".to_owned());
            s.egress.proxy = Some(ProxySettings {
                url: proxy_url,
                no_proxy: vec![".direct.test".to_owned()],
            });
        },
        |app| {
            app.gateway()
                .deps
                .adapter
                .egress()
                .pin("sched.direct.test", vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        },
    )
    .await;

    // A target listed in noProxy: connected to directly (the proxy does not know the name).
    app.register(
        "nearby",
        local_manifest(&format!("http://sched.direct.test:{port}")),
        scheduler.secrets(),
    )
    .await;
    // A pool that says `proxy: direct`.
    let mut direct = local_manifest(&scheduler.base_url);
    direct["proxy"] = json!("direct");
    app.register("direct", direct, scheduler.secrets()).await;
    // And one that inherits the proxy.
    app.register(
        "far",
        local_manifest(&format!("http://{PROXIED}:{port}")),
        scheduler.secrets(),
    )
    .await;

    for pool in ["nearby", "direct", "far"] {
        app.submit(pool, job(&format!("{pool}-1"))).await;
    }
    for pool in ["nearby", "direct", "far"] {
        let run = app.wait_settled(&format!("{pool}-1")).await;
        assert_eq!(run["state"], "done", "{pool}: {run}");
    }
    let seen = targets(&proxy);
    assert!(
        !seen.is_empty(),
        "the inheriting pool went around the proxy"
    );
    assert!(
        seen.iter().all(|t| *t == format!("{PROXIED}:{port}")),
        "only the inheriting pool's calls go through the proxy: {seen:?}"
    );
}

#[actix_web::test]
async fn a_pool_may_name_its_own_proxy_which_the_egress_policy_judges() {
    let scheduler = LocalPool::start("tok-own").await;
    let port = scheduler.base_url.rsplit(':').next().unwrap().to_owned();
    let proxy = ForwardProxy::start(&[(PROXIED, "127.0.0.1")]).await;
    // No proxy in the configuration.
    let app = spawn_app_with(|_| {}).await;

    let mut own = local_manifest(&format!("http://{PROXIED}:{port}"));
    own["proxy"] = json!({"url": proxy.url, "noProxy": ["10.0.0.0/8"]});
    app.register("own", own.clone(), scheduler.secrets()).await;
    app.submit("own", job("own-1")).await;
    let run = app.wait_settled("own-1").await;
    assert_eq!(run["state"], "done", "{run}");
    assert!(targets(&proxy).contains(&format!("{PROXIED}:{port}")));
    assert!(proxy.asked().iter().all(|a| a.authorization.is_none()));

    let cases = [
        (
            json!({"url": "http://169.254.169.254:3128"}),
            "manifest.proxy.url",
            "egress policy refuses",
        ),
        (
            json!({"url": "http://ops:hunter2@127.0.0.1:3128"}),
            "manifest.proxy.url",
            "credentials",
        ),
        (
            json!({"url": "socks5://127.0.0.1:1080"}),
            "manifest.proxy.url",
            "http://",
        ),
        (
            json!({"url": proxy.url, "noProxy": "x"}),
            "manifest.proxy.noProxy",
            "list",
        ),
        (
            json!({"url": proxy.url, "port": 1}),
            "manifest.proxy.port",
            "",
        ),
        (json!("through-the-proxy"), "manifest.proxy", "direct"),
    ];
    for (choice, path, word) in cases {
        let mut manifest = own.clone();
        manifest["proxy"] = choice.clone();
        let reply = app.put_pool("bad", manifest, scheduler.secrets()).await;
        assert_eq!(reply.status, 422, "{choice}: {}", reply.text);
        let errors = reply.json()["errors"].as_array().cloned().unwrap();
        let error = errors
            .iter()
            .find(|e| e["path"] == path)
            .unwrap_or_else(|| panic!("{choice}: no error at {path}: {}", reply.text));
        assert!(
            error["message"].as_str().unwrap().contains(word),
            "{choice}: {error}"
        );
        assert!(!reply.text.contains("hunter2"), "{}", reply.text);
    }
}

#[actix_web::test]
async fn the_environment_proxy_is_used_only_when_the_operator_opts_in() {
    let scheduler = LocalPool::start("tok-env").await;
    let port = scheduler.base_url.rsplit(':').next().unwrap().to_owned();
    let proxy = ForwardProxy::start(&[(PROXIED, "127.0.0.1")]).await;
    let data = tempfile::tempdir().unwrap();

    // HTTP_PROXY set, no opt-in: ignored.
    let db = TestDatabase::create().await;
    let plain = Gateway::start(
        Launch::new(&db, &data.path().join("plain")).env("HTTP_PROXY", proxy.url.clone()),
    )
    .await;
    plain
        .register(
            "near",
            local_manifest(&scheduler.base_url),
            scheduler.secrets(),
        )
        .await;
    plain.submit("near", job("env-ignored")).await;
    assert_eq!(plain.wait_settled("env-ignored").await["state"], "done");
    assert!(proxy.asked().is_empty(), "{:?}", proxy.asked());
    drop(plain);

    // Opted in: the variables are the proxy, NO_PROXY included.
    let db = TestDatabase::create().await;
    let opted = Gateway::start(
        Launch::new(&db, &data.path().join("opted"))
            .env("CATTERY__EGRESS__USEENVPROXY", "true")
            .env("HTTP_PROXY", proxy.url.clone())
            .env("NO_PROXY", "127.0.0.1"),
    )
    .await;
    opted
        .register(
            "far",
            local_manifest(&format!("http://{PROXIED}:{port}")),
            scheduler.secrets(),
        )
        .await;
    opted
        .register(
            "near",
            local_manifest(&scheduler.base_url),
            scheduler.secrets(),
        )
        .await;
    opted.submit("far", job("env-far")).await;
    opted.submit("near", job("env-near")).await;
    assert_eq!(opted.wait_settled("env-far").await["state"], "done");
    assert_eq!(opted.wait_settled("env-near").await["state"], "done");
    let seen = targets(&proxy);
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|t| *t == format!("{PROXIED}:{port}")),
        "{seen:?}"
    );

    // Both choices at once: the gateway refuses to start, saying so without the password.
    let db = TestDatabase::create().await;
    let both = Launch::new(&db, &data.path().join("both"))
        .env("CATTERY__EGRESS__USEENVPROXY", "true")
        .env(
            "CATTERY__EGRESS__PROXY",
            "{url: 'http://u:hunter2@127.0.0.1:9'}",
        )
        .command()
        .output()
        .unwrap();
    assert!(!both.status.success());
    let stderr = String::from_utf8_lossy(&both.stderr);
    assert!(stderr.contains("exclude each other"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
