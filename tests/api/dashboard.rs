//! The dashboard at `/ui`: how its files are served (without a token, with a strict
//! Content-Security-Policy, content types and caching), whatever the facade does with unknown
//! paths; and the dashboard itself in a real browser (headless Chromium) against the real binary
//! with real runs on the local pool: sign-in, the pools page, the run list filtered and paged, a
//! run's page, and a run followed live until it is done.

use crate::support::ADMIN_TOKEN;
use crate::support::app::spawn_app_with;
use crate::support::browser::{Browser, PAGE_LIMIT};
use crate::support::client::Reply;
use crate::support::database::TestDatabase;
use crate::support::gateway::{Gateway, Launch, LocalPool, free_port};
use crate::support::manifests::{local_manifest, simple_manifest};
use crate::support::wait::{self, CHECK_EVERY, RUN_LIMIT};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A GET without any credential.
async fn fetch(api: &crate::support::client::Api, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = api.client.get(api.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Reply::read(request.send().await.unwrap()).await
}

fn header<'a>(reply: &'a Reply, name: &str) -> &'a str {
    reply
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header: {:?}", reply.headers))
        .to_str()
        .unwrap()
}

fn assert_guarded(reply: &Reply) {
    assert_eq!(header(reply, "content-security-policy"), CSP);
    assert_eq!(header(reply, "x-content-type-options"), "nosniff");
    assert_eq!(header(reply, "referrer-policy"), "no-referrer");
}

/// The asset URLs the page names (`/ui/app.js?v=…`, …).
fn linked_assets(page: &str) -> Vec<String> {
    page.split('"')
        .filter(|part| part.starts_with("/ui/") && part.contains("?v="))
        .map(str::to_owned)
        .collect()
}

#[actix_web::test]
async fn the_files_are_served_without_a_token_with_their_types_policy_and_caching() {
    let app = spawn_app_with(|_| {}).await;
    for path in ["/ui", "/ui/"] {
        let page = fetch(&app, path, &[]).await;
        assert_eq!(page.status, 200, "{path}: {}", page.text);
        assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
        assert_eq!(header(&page, "cache-control"), "no-cache");
        assert_guarded(&page);
        assert!(page.text.contains("<main id=\"main\">"), "{}", page.text);
    }
    let page = fetch(&app, "/ui", &[]).await;
    let etag = header(&page, "etag").to_owned();
    let again = fetch(&app, "/ui", &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, 304);
    assert!(again.text.is_empty());
    assert_guarded(&again);

    let assets = linked_assets(&page.text);
    let mut types: Vec<String> = Vec::new();
    for url in &assets {
        let versioned = fetch(&app, url, &[]).await;
        assert_eq!(versioned.status, 200, "{url}");
        assert_eq!(
            header(&versioned, "cache-control"),
            "public, max-age=31536000, immutable",
            "{url}"
        );
        assert_guarded(&versioned);
        types.push(header(&versioned, "content-type").to_owned());
        // The same file without its version (or with another one) is revalidated every time.
        let bare = url.split('?').next().unwrap();
        for other in [bare.to_owned(), format!("{bare}?v=0000000000000000")] {
            let reply = fetch(&app, &other, &[]).await;
            assert_eq!(reply.status, 200, "{other}");
            assert_eq!(header(&reply, "cache-control"), "no-cache", "{other}");
            assert_eq!(reply.text, versioned.text);
        }
        let etag = header(&versioned, "etag").to_owned();
        assert_eq!(
            fetch(&app, url, &[("if-none-match", &etag)]).await.status,
            304
        );
    }
    types.sort();
    types.dedup();
    assert_eq!(
        types,
        [
            "image/svg+xml",
            "text/css; charset=utf-8",
            "text/javascript; charset=utf-8"
        ],
        "{assets:?}"
    );

    // HEAD answers like GET, without a body.
    let head = app.client.head(app.url("/ui")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-security-policy"].to_str().unwrap(),
        CSP
    );

    // Nothing else is under /ui: a 404 in the API's shape, guarded all the same.
    for path in ["/ui/nothing.js", "/ui/a/b", "/ui/app.js/x"] {
        let reply = fetch(&app, path, &[]).await;
        assert_eq!(reply.status, 404, "{path}: {}", reply.text);
        assert_eq!(header(&reply, "content-type"), "application/problem+json");
        assert_eq!(reply.json()["code"], "not_found", "{path}");
        assert_guarded(&reply);
    }
    let post = app.client.post(app.url("/ui")).send().await.unwrap();
    assert_eq!(post.status(), 405);
}

#[actix_web::test]
async fn the_dashboard_is_served_whatever_the_facade_does_with_unknown_paths() {
    let gated = spawn_app_with(|settings| {
        settings.facade.enabled = true;
        settings.facade.harness_secret = "harness-secret-value-1".to_owned();
    })
    .await;
    let off = spawn_app_with(|settings| settings.facade.enabled = false).await;
    // The facade gates every other unknown path outside /v1 …
    let unknown = fetch(&gated, "/not-the-ui", &[]).await;
    assert_eq!(unknown.status, 401, "{}", unknown.text);
    for app in [&gated, &off] {
        // … but not the dashboard, whose files hold no data.
        let page = fetch(app, "/ui", &[]).await;
        assert_eq!(page.status, 200, "{}", page.text);
        assert_guarded(&page);
        for url in linked_assets(&page.text) {
            assert_eq!(fetch(app, &url, &[]).await.status, 200, "{url}");
        }
        // The API behind it still needs a token.
        assert_eq!(fetch(app, "/v1/pools", &[]).await.status, 401);
    }
}

/// Where the screenshots go: `target/ui-screenshots/`.
fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("ui-screenshots")
}

/// The job ids of the run list as shown, top to bottom, with the pager's state.
const RUN_LIST: &str = "
    const rows = [...document.querySelectorAll('#runs-table tbody tr[data-job-id]')];
    const older = document.getElementById('page-older');
    const newer = document.getElementById('page-newer');
    if (!older) return null;
    return {
        ids: rows.map((r) => r.dataset.jobId),
        states: rows.map((r) => r.dataset.state),
        page: document.getElementById('page-number').textContent,
        older: !older.disabled,
        newer: !newer.disabled,
        hash: location.hash,
    };";

/// One pool's row of the pools page, cell by cell.
const POOL_ROW: &str = "
    const row = document.querySelector('#pools-table tr[data-pool=\"' + arguments[0] + '\"]');
    if (!row) return null;
    const cell = (c) => row.querySelector('[data-col=\"' + c + '\"]').textContent.trim();
    return {circuit: cell('circuit'), queued: cell('queued'), inFlight: cell('inFlight'),
            done: cell('done'), failed: cell('failed'), cancelled: cell('cancelled'),
            lastError: cell('lastError')};";

/// What a run's page shows: its state, outcome, progress, call counts and timeline.
const RUN_PAGE: &str = "
    const state = document.querySelector('#run-state');
    if (!state) return null;
    const text = (css) => { const el = document.querySelector(css); return el ? el.textContent.trim() : null; };
    const progress = document.querySelector('#run-progress .progress');
    return {
        jobId: text('h1 .mono'),
        state: state.textContent.trim(),
        result: text('#run-result'),
        error: text('#run-error [data-field=error]'),
        failureCause: text('#run-error [data-field=failureCause]'),
        pending: document.querySelector('#run-pending') !== null,
        progress: progress ? [Number(progress.dataset.completed), Number(progress.dataset.total)] : null,
        calls: Object.fromEntries([...document.querySelectorAll('#run-calls [data-op]')]
            .map((el) => [el.dataset.op, Number(el.querySelector('strong').textContent)])),
        callEvents: [...document.querySelectorAll('#calls-table tbody tr')]
            .map((tr) => tr.querySelector('.badge').dataset.value),
        timeline: [...document.querySelectorAll('#timeline-table tbody tr')].map((tr) => ({
            seq: Number(tr.dataset.seq),
            type: tr.dataset.type,
            change: tr.querySelector('[data-col=change]').textContent.replace(/\\s+/g, ' ').trim(),
        })),
        marker: window.__notReloaded === true,
    };";

/// Fails the test when the page shows a value the page failed to render ("null", "undefined",
/// "NaN", "[object Object]"); none of the values of these tests is one.
async fn assert_rendered(browser: &Browser, what: &str) {
    let stray = browser
        .run(
            "const text = document.getElementById('main').innerText; \
             const m = text.match(/\\b(null|undefined|NaN)\\b|\\[object Object\\]/); \
             return m ? m[0] + ' in: ' + text : null;",
            json!([]),
        )
        .await;
    assert_eq!(stray, Value::Null, "{what} shows a stray value");
}

fn ids(list: &Value) -> Vec<&str> {
    list["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap())
        .collect()
}

/// The transitions of a run's history as the page writes them ("queued → dispatching").
fn transitions(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "transition")
        .map(|e| {
            format!(
                "{} → {}",
                e["from"].as_str().unwrap_or("new"),
                e["to"].as_str().unwrap_or("—")
            )
        })
        .collect()
}

fn shown_transitions(page: &Value) -> Vec<String> {
    page["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "transition")
        .map(|e| e["change"].as_str().unwrap().to_owned())
        .collect()
}

#[actix_web::test]
async fn the_dashboard_in_a_browser_shows_pools_runs_and_a_run_followed_live() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let shots = screenshot_dir();

    // A real gateway with real runs: five done and one failed on the local pool, one done on a
    // second pool, and one stuck at a scheduler that is not there (its breaker opens).
    let db = TestDatabase::create().await;
    let data = tempfile::tempdir().unwrap();
    let gateway =
        Gateway::start(Launch::new(&db, data.path()).log_to(data.path().join("gateway.log"))).await;
    let local = LocalPool::start("dashboard-local-token").await;
    local.register_on(&gateway).await;
    gateway
        .register(
            "spare",
            local_manifest(&local.base_url),
            json!({"LOCAL_POOL_TOKEN": "dashboard-local-token"}),
        )
        .await;
    let mut down = simple_manifest(&format!("http://127.0.0.1:{}", free_port()));
    down["retry"] = json!({"maxAttempts": 100, "initialBackoffMs": 20, "maxBackoffMs": 100});
    gateway
        .register("down", down, json!({"SCHED_TOKEN": "down-token-value"}))
        .await;
    for n in 1..=5 {
        gateway
            .submit(
                "local",
                json!({"jobId": format!("done-{n}"), "kind": "sample",
                       "job": {"steps": 2, "stepMs": 10, "result": {"summary": format!("done-{n} ok")}}}),
            )
            .await;
    }
    gateway
        .submit(
            "local",
            json!({"jobId": "failed-1", "kind": "sample",
                   "job": {"steps": 1, "stepMs": 10, "fail": true, "exitCode": 3}}),
        )
        .await;
    gateway
        .submit(
            "spare",
            json!({"jobId": "spare-1", "job": {"steps": 1, "stepMs": 10}}),
        )
        .await;
    gateway.submit("down", json!({"jobId": "stuck-1"})).await;
    for id in [
        "done-1", "done-2", "done-3", "done-4", "done-5", "failed-1", "spare-1",
    ] {
        gateway
            .wait_released(
                id,
                if id == "failed-1" { "failed" } else { "done" },
                RUN_LIMIT,
            )
            .await;
    }
    wait::until(
        "the breaker of `down` to open",
        RUN_LIMIT,
        CHECK_EVERY,
        async || {
            let pool = gateway.get("/v1/pools/down").await.json();
            if pool["health"]["circuit"] == "open" {
                Ok(())
            } else {
                Err(pool)
            }
        },
    )
    .await;

    // The page the browser gets is under the policy.
    let ui = gateway.url("/ui");
    assert_guarded(&fetch(&gateway, "/ui", &[]).await);

    // The page asks for a token first, and keeps it for the tab only.
    browser.goto(&ui).await;
    browser.text_of("#token-form").await;
    browser.screenshot(&shots.join("sign-in.png")).await;
    browser.type_into("#token-input", ADMIN_TOKEN).await;
    browser.click("#token-submit").await;

    // Pools: each with its counts and circuit state.
    let local_row = browser
        .wait_until(
            "the local pool's row",
            PAGE_LIMIT,
            POOL_ROW,
            json!(["local"]),
            |row| row["done"] == "5",
        )
        .await;
    assert_eq!(
        local_row,
        json!({"circuit": "closed", "queued": "0", "inFlight": "0", "done": "5", "failed": "1",
               "cancelled": "0", "lastError": "—"})
    );
    let spare_row = browser.run(POOL_ROW, json!(["spare"])).await;
    assert_eq!(spare_row["done"], "1");
    assert_eq!(spare_row["failed"], "0");
    let down_row = browser
        .wait_until(
            "the down pool's open breaker",
            PAGE_LIMIT,
            POOL_ROW,
            json!(["down"]),
            |row| row["circuit"] == "open",
        )
        .await;
    assert_eq!(down_row["inFlight"], "1", "{down_row}");
    assert!(
        down_row["lastError"].as_str().unwrap().contains("connect"),
        "{down_row}"
    );
    let state = browser
        .run(
            "return {hash: location.hash, href: location.href, cookie: document.cookie, \
                     kept: sessionStorage.getItem('cattery.token')}",
            json!([]),
        )
        .await;
    assert_eq!(state["hash"], "#/pools");
    assert_eq!(state["cookie"], "");
    assert_eq!(state["kept"], ADMIN_TOKEN);
    assert!(!state["href"].as_str().unwrap().contains(ADMIN_TOKEN));
    assert_rendered(&browser, "pools").await;
    browser.screenshot(&shots.join("pools.png")).await;

    // Runs of one pool in one state, two a page, newest first; older and newer pages.
    browser
        .goto(&format!("{ui}#/runs?pool=local&state=done&limit=2"))
        .await;
    let first = browser
        .wait_until("the first page", PAGE_LIMIT, RUN_LIST, json!([]), |l| {
            l["ids"].as_array().is_some_and(|ids| !ids.is_empty())
        })
        .await;
    assert_eq!(ids(&first), ["done-5", "done-4"]);
    assert_eq!(first["page"], "Page 1");
    assert_eq!(
        (first["newer"].as_bool(), first["older"].as_bool()),
        (Some(false), Some(true))
    );
    assert_rendered(&browser, "runs").await;
    browser.screenshot(&shots.join("runs.png")).await;
    browser.click("#page-older").await;
    let second = browser
        .wait_until("the second page", PAGE_LIMIT, RUN_LIST, json!([]), |l| {
            l["page"] == "Page 2" && l["ids"].as_array().is_some_and(|ids| !ids.is_empty())
        })
        .await;
    assert_eq!(ids(&second), ["done-3", "done-2"]);
    assert_eq!(second["newer"], true);
    browser.click("#page-older").await;
    let third = browser
        .wait_until("the third page", PAGE_LIMIT, RUN_LIST, json!([]), |l| {
            l["page"] == "Page 3" && l["ids"].as_array().is_some_and(|ids| !ids.is_empty())
        })
        .await;
    assert_eq!(ids(&third), ["done-1"]);
    assert_eq!(third["older"], false, "{third}");
    browser.click("#page-newer").await;
    let back = browser
        .wait_until(
            "the second page again",
            PAGE_LIMIT,
            RUN_LIST,
            json!([]),
            |l| l["page"] == "Page 2" && l["ids"].as_array().is_some_and(|ids| !ids.is_empty()),
        )
        .await;
    assert_eq!(ids(&back), ["done-3", "done-2"]);

    // The filters, chosen as a user does.
    browser.goto(&format!("{ui}#/runs")).await;
    let all = browser
        .wait_until("every run", PAGE_LIMIT, RUN_LIST, json!([]), |l| {
            l["ids"].as_array().is_some_and(|ids| ids.len() == 8)
        })
        .await;
    assert!(
        ids(&all).contains(&"spare-1") && ids(&all).contains(&"stuck-1"),
        "{all}"
    );
    browser.click("#filter-pool option[value=local]").await;
    let of_local = browser
        .wait_until(
            "the local pool's runs",
            PAGE_LIMIT,
            RUN_LIST,
            json!([]),
            |l| {
                l["hash"].as_str().is_some_and(|h| h.contains("pool=local"))
                    && l["ids"].as_array().is_some_and(|ids| ids.len() == 6)
            },
        )
        .await;
    assert!(!ids(&of_local).contains(&"spare-1"), "{of_local}");
    browser.click("#filter-state option[value=failed]").await;
    let failed = browser
        .wait_until(
            "the local pool's failed runs",
            PAGE_LIMIT,
            RUN_LIST,
            json!([]),
            |l| {
                l["hash"]
                    .as_str()
                    .is_some_and(|h| h.contains("state=failed"))
                    && l["ids"].as_array().is_some_and(|ids| !ids.is_empty())
            },
        )
        .await;
    assert_eq!(ids(&failed), ["failed-1"]);
    assert_eq!(failed["states"], json!(["failed"]));

    // A failed run's page: its error, cause and timeline, as the API has them.
    browser.click("#runs-table a[href='#/runs/failed-1']").await;
    let api_run = gateway.run("failed-1").await;
    let api_events = gateway.events("failed-1").await;
    let page = browser
        .wait_until(
            "the failed run's page",
            PAGE_LIMIT,
            RUN_PAGE,
            json!([]),
            |p| {
                p["jobId"] == "failed-1"
                    && p["timeline"]
                        .as_array()
                        .is_some_and(|t| t.len() >= api_events.len())
            },
        )
        .await;
    assert_eq!(page["state"], "failed");
    assert!(
        page["error"]
            .as_str()
            .unwrap()
            .contains("sample job failed as asked"),
        "{page}"
    );
    assert_eq!(page["error"], api_run["error"]);
    assert_eq!(page["failureCause"], api_run["failureCause"]);
    let seqs: Vec<&Value> = api_events.iter().map(|e| &e["seq"]).collect();
    let shown: Vec<&Value> = page["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["seq"])
        .collect();
    assert_eq!(shown, seqs);
    assert_eq!(shown_transitions(&page), transitions(&api_events));
    assert_eq!(
        shown_transitions(&page).last().map(String::as_str),
        Some("running → failed")
    );
    assert_eq!(page["calls"]["dispatch"], 1);
    assert_rendered(&browser, "run-failed").await;
    browser.screenshot(&shots.join("run-failed.png")).await;

    // A done run's page: its result and what it asked of the scheduler.
    browser.goto(&format!("{ui}#/runs/done-5")).await;
    let page = browser
        .wait_until(
            "the done run's page",
            PAGE_LIMIT,
            RUN_PAGE,
            json!([]),
            |p| {
                p["jobId"] == "done-5"
                    && p["callEvents"]
                        .as_array()
                        .is_some_and(|e| e.contains(&json!("release")))
            },
        )
        .await;
    assert_eq!(page["state"], "done");
    assert!(
        page["result"]
            .as_str()
            .unwrap()
            .contains("\"summary\": \"done-5 ok\""),
        "{page}"
    );
    assert_eq!(page["progress"], json!([2, 2]));
    assert_eq!(page["calls"]["dispatch"], 1);
    assert!(page["calls"]["poll"].as_i64().unwrap() >= 1, "{page}");
    assert_eq!(
        shown_transitions(&page),
        transitions(&gateway.events("done-5").await)
    );
    assert_rendered(&browser, "run-done").await;
    browser.screenshot(&shots.join("run-done.png")).await;

    // Live: a new run shows up in the list without a reload; its page then follows it to done.
    browser.goto(&format!("{ui}#/runs?pool=local")).await;
    browser
        .wait_until("the local runs", PAGE_LIMIT, RUN_LIST, json!([]), |l| {
            l["ids"].as_array().is_some_and(|ids| ids.len() == 6)
        })
        .await;
    browser
        .run("window.__notReloaded = true; return null;", json!([]))
        .await;
    gateway
        .submit(
            "local",
            json!({"jobId": "slow-1", "kind": "sample",
                   "job": {"steps": 16, "stepMs": 400, "result": {"summary": "slow and steady"}}}),
        )
        .await;
    let listed = browser
        .wait_until(
            "the new run in the list",
            PAGE_LIMIT,
            RUN_LIST,
            json!([]),
            |l| l["ids"][0] == "slow-1",
        )
        .await;
    assert_eq!(ids(&listed).len(), 7);
    browser.click("#runs-table a[href='#/runs/slow-1']").await;
    let mut snapshots: Vec<(Value, Value)> = Vec::new();
    let finished = browser
        .wait_until(
            "the slow run to show done",
            Duration::from_secs(40),
            RUN_PAGE,
            json!([]),
            |p| {
                if p["jobId"] == "slow-1" {
                    let snapshot = (p["state"].clone(), p["progress"].clone());
                    if snapshots.last() != Some(&snapshot) {
                        snapshots.push(snapshot);
                    }
                }
                p["jobId"] == "slow-1" && p["state"] == "done"
            },
        )
        .await;
    // Before it was done, the page showed it running, part of the way.
    assert!(
        snapshots.iter().any(|(state, progress)| state == "running"
            && progress[0].as_i64().is_some_and(|completed| completed < 16)),
        "{snapshots:?}"
    );
    // The page was not reloaded: the marker set before is still there.
    assert_eq!(finished["marker"], true, "{finished}");
    assert_eq!(finished["progress"], json!([16, 16]));
    assert!(
        finished["result"]
            .as_str()
            .unwrap()
            .contains("slow and steady")
    );
    let api_events = gateway.events("slow-1").await;
    let page = browser
        .wait_until(
            "the slow run's whole timeline",
            PAGE_LIMIT,
            RUN_PAGE,
            json!([]),
            |p| {
                p["timeline"]
                    .as_array()
                    .is_some_and(|t| t.len() >= api_events.len())
            },
        )
        .await;
    assert!(
        shown_transitions(&page).contains(&"running → done".to_owned()),
        "{page}"
    );
    assert_rendered(&browser, "run-live").await;
    browser.screenshot(&shots.join("run-live.png")).await;

    // Nothing went wrong in the page: no error in the console, no refused resource.
    let severe: Vec<Value> = browser
        .console()
        .await
        .into_iter()
        .filter(|entry| entry["level"] == "SEVERE")
        .collect();
    assert!(severe.is_empty(), "console errors: {severe:#?}");

    // The policy holds in the browser: an injected inline script does not run.
    let ran = browser
        .run(
            "const s = document.createElement('script'); s.textContent = 'window.__inline = 1'; \
             document.head.append(s); return window.__inline === 1;",
            json!([]),
        )
        .await;
    assert_eq!(ran, false, "an inline script ran despite the policy");

    // Signing out forgets the token; a wrong one is refused.
    browser.click("#sign-out").await;
    browser.text_of("#token-form").await;
    let kept = browser
        .run("return sessionStorage.getItem('cattery.token');", json!([]))
        .await;
    assert_eq!(kept, Value::Null);
    browser.type_into("#token-input", "not-a-token").await;
    browser.click("#token-submit").await;
    browser
        .wait_for(
            "the refusal",
            "const e = document.getElementById('token-error'); \
             return e && e.textContent.includes('refused') ? e.textContent : null;",
            json!([]),
        )
        .await;
    browser.quit().await;
}
