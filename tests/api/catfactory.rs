//! Cat-Factory drop-in compatibility, written from CATFACTORY.md §1–§3: for each behaviour, the
//! manifest as Cat-Factory accepts it, what the scheduler answers, and the views cattery reports
//! (the RunView, and the harness job view of the facade). The website's two example manifests
//! (§9.1 transparent proxy, §9.2 opaque envelope with OAuth2) run unchanged but for their
//! addresses, against test schedulers with those shapes.

use crate::catfactory_scheduler::CfScheduler;
use crate::support::app::{TestApp, spawn_app};
use crate::support::client::Reply;
use crate::support::gateway::cattery_bin;
use crate::support::stub::Scripted;
use crate::support::{ADMIN_TOKEN, READER_TOKEN};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// The website's "Example A" (CATFACTORY.md §9.1), verbatim.
const EXAMPLE_A: &str = r#"
providerId: acme-pool
label: Acme Runner Pool
baseUrl: https://runners.acme.example/api        # public https
auth:
  type: bearer
  secretRef: { key: API_TOKEN }
dispatch:
  method: POST
  pathTemplate: /dispatch/{{input.kind}}          # in practice always ".../agent" (or ".../deploy")
  bodyTemplate: '{"id":"{{input.jobId}}","job":{{input.job}}}'
poll:
  method: GET
  pathTemplate: /jobs/{{input.jobId}}
release:
  method: DELETE
  pathTemplate: /jobs/{{input.jobId}}
response:
  statusPath: state
  statusMap:
    - { from: in_progress, to: running }
    - { from: succeeded,   to: done }
    - { from: errored,     to: failed }
  resultPath: result                               # forward the whole harness result envelope
  progressCompletedPath: progress.completed
  progressInProgressPath: progress.inProgress
  progressTotalPath: progress.total
  callMetricsPath: callMetrics                     # live per-call telemetry
  sliceReviewsPath: sliceReviews
  toolServersPath: toolServers
  dispatchCapabilitiesPath: capabilities           # read from the DISPATCH response
  errorPath: error
"#;

/// The website's "Example B" (CATFACTORY.md §9.2), verbatim.
const EXAMPLE_B: &str = r#"
providerId: acme-k8s
label: Acme k8s jobs
baseUrl: https://jobs.acme.example
auth:
  type: oauth2_client_credentials
  tokenUrl: https://auth.acme.example/oauth/token   # also SSRF-guarded
  clientIdSecretRef:     { key: CLIENT_ID }
  clientSecretSecretRef: { key: CLIENT_SECRET }
  scope: jobs:write
dispatch:
  method: POST
  pathTemplate: /v1/jobs
  bodyTemplate: '{"name":"{{input.jobId}}","kind":"{{input.kind}}","instanceType":"{{input.instanceType}}","spec":{{input.job}}}'
poll:
  method: GET
  pathTemplate: /v1/jobs/{{input.jobId}}
release:
  method: DELETE
  pathTemplate: /v1/jobs/{{input.jobId}}
response:
  statusPath: data.phase
  statusMap:
    - { from: Pending,   to: running }
    - { from: Running,   to: running }
    - { from: Succeeded, to: done }
    - { from: Failed,    to: failed }
  resultPath: data.result
  errorPath: data.message
"#;

/// A YAML example with its addresses pointed at the test scheduler.
fn example(yaml: &str, scheduler: &CfScheduler) -> Value {
    let text = yaml
        .replace("https://runners.acme.example", &scheduler.base_url)
        .replace("https://jobs.acme.example", &scheduler.base_url)
        .replace("https://auth.acme.example", &scheduler.base_url);
    yaml_serde::from_str(&text).unwrap()
}

/// Registers a pool with Cat-Factory's registration shape; answers the PoolView.
pub async fn register(app: &TestApp, name: &str, manifest: Value, secrets: Value) -> Value {
    let response = app
        .client
        .put(app.url(&format!("/v1/pools/{name}")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"config": {"kind": "manifest", "manifest": manifest}, "secrets": secrets}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body
}

/// The harness job spec Cat-Factory sends, with live credentials and hostile text.
pub fn spec(job_id: &str) -> Value {
    json!({
        "jobId": job_id, "kind": "agent", "mode": "coding", "model": "m", "harness": "pi",
        "ghToken": "ghs_live_installation_token", "sessionToken": "sess-live",
        "instanceType": "c7g.xlarge", "cloudProvider": "aws", "image": "ui",
        "repo": {"owner": "o", "name": "r", "baseBranch": "main", "cloneUrl": "https://github.com/o/r.git"},
        "userPrompt": "a \"quote\", a newline\n and {{input.jobId}}"
    })
}

async fn submit(app: &TestApp, pool: &str, job_id: &str) {
    app.submit(
        pool,
        json!({"jobId": job_id, "kind": "agent", "job": spec(job_id)}),
    )
    .await;
}

/// The facade's job view of a run.
pub async fn job_view(app: &TestApp, job_id: &str) -> (u16, Value) {
    let response = app
        .client
        .get(app.url(&format!("/jobs/{job_id}")))
        .bearer_auth(READER_TOKEN)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn warning_codes(pool: &Value) -> Vec<String> {
    pool["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap().to_owned())
        .collect()
}

fn call_metric(seq: u64) -> Value {
    json!({"seq": seq, "model": "m", "promptText": "p", "responseText": "r", "reasoningText": "",
           "messageCount": 2, "inputTokens": 10, "outputTokens": 5})
}

#[actix_web::test]
async fn the_transparent_proxy_example_registers_unchanged_and_runs_a_job() {
    let app = spawn_app().await;
    let scheduler = CfScheduler::start(vec![]).await;
    // Like the real API, the scheduler refuses calls without the pool's credential.
    scheduler.require_header("authorization", "Bearer acme-api-token");
    let pool = register(
        &app,
        "acme",
        example(EXAMPLE_A, &scheduler),
        json!({"API_TOKEN": "acme-api-token"}),
    )
    .await;
    assert_eq!(pool["format"], "cat-factory");
    assert_eq!(pool["secretKeys"], json!(["API_TOKEN"]));
    assert_eq!(warning_codes(&pool), ["json_escaping"]);

    scheduler.script(
        "exec-1-coder",
        vec![
            Scripted::Json(json!({"state": "in_progress", "progress": {"completed": 1, "inProgress": 1, "total": 3},
                               "callMetrics": [call_metric(1), {"seq": 2}],
                               "sliceReviews": [{"label": "slice 1", "status": "completed", "report": "ok"}],
                               "toolServers": []})),
            Scripted::Json(json!({
                "state": "Succeeded",
                "progress": {"completed": 3, "inProgress": 0, "total": 3},
                "result": {
                    "summary": "did it", "prUrl": "https://github.com/o/r/pull/7", "branch": "cf/exec-1",
                    "pushed": true, "custom": {"blueprint": {"steps": ["a", "b"]}},
                    "callMetrics": [call_metric(1), {"seq": 2, "promptText": "no counts"}],
                    "ralphVerdict": "continue", "stats": {"turns": 4}, "preview": {"url": "x"}
                }
            })),
        ],
    );
    submit(&app, "acme", "exec-1-coder").await;
    let run = app
        .wait_for("exec-1-coder", WAIT, |r| r["released"] == true)
        .await;
    assert_eq!(run["state"], "done");
    assert_eq!(run["schedulerState"], "Succeeded");
    assert_eq!(
        run["progress"],
        json!({"completed": 3, "inProgress": 0, "total": 3})
    );
    let expected_result = json!({
        "summary": "did it", "prUrl": "https://github.com/o/r/pull/7", "branch": "cf/exec-1",
        "pushed": true, "custom": {"blueprint": {"steps": ["a", "b"]}},
        "callMetrics": [{"seq": 1, "model": "m", "promptText": "p", "responseText": "r", "reasoningText": "",
                         "messageCount": 2, "inputTokens": 10, "outputTokens": 5,
                         "cacheReadTokens": 0, "cacheWriteTokens": 0, "finishReason": null}]
    });
    assert_eq!(run["result"], expected_result);
    // The live channels keep the latest value a poll reported, coerced; an empty list is
    // "not observed" and does not replace anything.
    let live = json!({
        "callMetrics": expected_result["callMetrics"],
        "sliceReviews": [{"label": "slice 1", "status": "completed", "report": "ok"}]
    });
    assert_eq!(run["fields"], live);

    // What the scheduler saw: the body Cat-Factory would send, the bearer header, the paths.
    let dispatches = scheduler.seen_with("POST", "/api/dispatch/agent");
    assert_eq!(dispatches.len(), 1);
    assert_eq!(
        dispatches[0].header("authorization"),
        Some("Bearer acme-api-token")
    );
    assert_eq!(
        dispatches[0].header("content-type"),
        Some("application/json")
    );
    assert_eq!(
        dispatches[0].json(),
        json!({"id": "exec-1-coder", "job": spec("exec-1-coder")})
    );
    let polls = scheduler.seen_with("GET", "/api/jobs/exec-1-coder");
    assert!(polls.len() >= 2);
    assert!(
        polls.iter().all(
            |p| p.body.is_empty() && p.header("authorization") == Some("Bearer acme-api-token")
        )
    );
    assert_eq!(
        scheduler
            .seen_with("DELETE", "/api/jobs/exec-1-coder")
            .len(),
        1
    );

    // The harness job view the facade reports for the same run.
    let (status, view) = job_view(&app, "exec-1-coder").await;
    assert_eq!(status, 200);
    assert_eq!(view["id"], "exec-1-coder");
    assert_eq!(view["state"], "done");
    assert_eq!(view["result"], expected_result);
    assert_eq!(
        view["progress"],
        json!({"completed": 3, "inProgress": 0, "total": 3})
    );
    assert!(view["startedAt"].as_i64().is_some(), "{view}");
    assert!(view.get("error").is_none());
    assert_eq!(view["callMetrics"], live["callMetrics"]);
    assert_eq!(view["sliceReviews"], live["sliceReviews"]);
    assert!(view.get("toolServers").is_none());
    assert_eq!(
        view["capabilities"],
        json!(["mcpServers", "skills"]),
        "read from the dispatch answer"
    );
}

#[actix_web::test]
async fn the_opaque_envelope_example_with_oauth2_runs_done_and_failed_jobs() {
    let app = spawn_app().await;
    let scheduler = CfScheduler::start(vec![]).await;
    let pool = register(
        &app,
        "acme-k8s",
        example(EXAMPLE_B, &scheduler),
        json!({"CLIENT_ID": "client-one", "CLIENT_SECRET": "client-secret-value"}),
    )
    .await;
    assert_eq!(pool["format"], "cat-factory");
    assert_eq!(pool["secretKeys"], json!(["CLIENT_ID", "CLIENT_SECRET"]));

    scheduler.script(
        "exec-2-coder",
        vec![
            Scripted::Json(json!({"data": {"phase": "Pending"}})),
            Scripted::Json(json!({"data": {"phase": "Running"}})),
            Scripted::Json(json!({"data": {"phase": "Succeeded", "result": {"summary": "ok", "report": "legacy"}}})),
        ],
    );
    scheduler.script(
        "exec-3-coder",
        vec![Scripted::Json(
            json!({"data": {"phase": "FAILED ", "message": "ImagePullBackOff: no such image"}}),
        )],
    );
    submit(&app, "acme-k8s", "exec-2-coder").await;
    submit(&app, "acme-k8s", "exec-3-coder").await;
    let done = app.wait_settled("exec-2-coder").await;
    let failed = app.wait_settled("exec-3-coder").await;

    assert_eq!(done["state"], "done");
    assert_eq!(done["result"], json!({"summary": "ok"}));
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["error"], "ImagePullBackOff: no such image");
    assert_eq!(failed["failureCause"], "scheduler");

    // OAuth2 client credentials, posted as a form (client_secret_post), then used as a bearer.
    let token_calls = scheduler.seen_with("POST", "/oauth/token");
    assert!(!token_calls.is_empty());
    let form = token_calls[0].text();
    for part in [
        "grant_type=client_credentials",
        "client_id=client-one",
        "client_secret=client-secret-value",
        "scope=jobs%3Awrite",
    ] {
        assert!(form.contains(part), "{part} missing from {form}");
    }
    let dispatch = scheduler
        .seen_with("POST", "/v1/jobs")
        .into_iter()
        .find(|s| s.json()["name"] == "exec-2-coder")
        .unwrap();
    assert!(
        dispatch
            .header("authorization")
            .is_some_and(|h| h.starts_with("Bearer issued-token-")),
        "{:?}",
        dispatch.headers
    );
    assert_eq!(
        dispatch.json(),
        json!({"name": "exec-2-coder", "kind": "agent", "instanceType": "c7g.xlarge", "spec": spec("exec-2-coder")})
    );

    let (_, view) = job_view(&app, "exec-3-coder").await;
    assert_eq!(view["state"], "failed");
    assert_eq!(view["error"], "ImagePullBackOff: no such image");
    assert!(view.get("result").is_none());
}

/// A manifest for the harness-protocol scheduler with the given response mapping.
fn harness_manifest(scheduler: &CfScheduler, response: Value) -> Value {
    json!({
        "providerId": "harness-gw",
        "label": "Harness via sticky gateway",
        "baseUrl": scheduler.base_url,
        "auth": {"type": "none"},
        "dispatch": {"method": "POST", "pathTemplate": "/jobs", "bodyTemplate": "{{input.job}}"},
        "poll": {"method": "GET", "pathTemplate": "/jobs/{{input.jobId}}"},
        "release": {"method": "DELETE", "pathTemplate": "/jobs/{{input.jobId}}"},
        "response": response
    })
}

#[actix_web::test]
async fn status_words_are_read_with_cat_factory_vocabularies_and_the_status_map() {
    let app = spawn_app().await;
    let scheduler = CfScheduler::start(vec![]).await;
    let manifest = harness_manifest(
        &scheduler,
        json!({
            "statusPath": "job.status",
            "statusMap": [
                {"from": " Queued ", "to": "running"},
                {"from": "WIPED", "to": "failed"},
                {"from": "wiped", "to": "done"},
                {"from": "Preempted", "to": "failed"},
                {"from": "drained", "to": "done"}
            ],
            "errorPath": "job.message"
        }),
    );
    register(&app, "words", manifest, json!({})).await;
    let done_last = |word: &str| {
        vec![
            Scripted::Json(json!({"job": {"status": word}})),
            Scripted::Json(json!({"job": {"status": word}})),
            Scripted::Json(json!({"job": {"status": "done"}})),
        ]
    };
    // (job, script, final state, failure cause)
    let cases: Vec<(&str, Vec<Scripted>, &str, Option<&str>)> = vec![
        ("w-queued", done_last("QUEUED"), "done", None),
        ("w-unknown", done_last("provisioning"), "done", None),
        (
            "w-absent",
            vec![
                Scripted::Json(json!({"job": {}})),
                Scripted::Json(json!({"job": {"status": "  "}})),
                Scripted::Json(json!({"job": {"status": "Complete"}})),
            ],
            "done",
            None,
        ),
        (
            "w-finished",
            vec![Scripted::Json(json!({"job": {"status": " FINISHED"}}))],
            "done",
            None,
        ),
        (
            "w-mapped-done",
            vec![Scripted::Json(json!({"job": {"status": "Drained"}}))],
            "done",
            None,
        ),
        (
            "w-first-wins",
            vec![Scripted::Json(
                json!({"job": {"status": "wiped", "message": "disk wiped"}}),
            )],
            "failed",
            Some("scheduler"),
        ),
        (
            "w-cancelled",
            vec![Scripted::Json(json!({"job": {"status": "Cancelled"}}))],
            "failed",
            Some("scheduler"),
        ),
        (
            "w-timedout",
            vec![Scripted::Json(json!({"job": {"status": "timed_out"}}))],
            "failed",
            Some("scheduler"),
        ),
        (
            "w-evicted-mapped",
            vec![Scripted::Json(json!({"job": {"status": "preempted"}}))],
            "failed",
            Some("lost"),
        ),
        (
            "w-oom",
            vec![Scripted::Json(json!({"job": {"status": "OOMKilled"}}))],
            "failed",
            Some("lost"),
        ),
    ];
    for (job_id, script, _, _) in &cases {
        scheduler.script(job_id, script.clone());
        submit(&app, "words", job_id).await;
    }
    for (job_id, _, state, cause) in &cases {
        let run = app.wait_settled(job_id).await;
        assert_eq!(run["state"], *state, "{job_id}: {run}");
        if let Some(cause) = cause {
            assert_eq!(run["failureCause"], *cause, "{job_id}: {run}");
        }
        // A lost job reads as its eviction word in the facade, which is what starts
        // Cat-Factory's eviction recovery.
        let view_state = match *job_id {
            "w-evicted-mapped" => "preempted",
            "w-oom" => "oomkilled",
            _ => state,
        };
        let (_, view) = job_view(&app, job_id).await;
        assert_eq!(view["state"], view_state, "{job_id}: {view}");
    }
    // Unknown words keep the run running (and are recorded once); blank or absent ones too.
    let events = app.events("w-unknown").await;
    let states: Vec<&str> = events.iter().filter_map(|e| e["to"].as_str()).collect();
    assert_eq!(states, ["queued", "dispatching", "running", "done"]);
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "unmapped_status")
            .count(),
        1
    );
    let first_wins = app.run("w-first-wins").await;
    assert_eq!(first_wins["error"], "disk wiped");
    let (_, view) = job_view(&app, "w-oom").await;
    assert!(
        view["error"]
            .as_str()
            .unwrap()
            .contains("(container evicted or crashed)"),
        "{view}"
    );
}

#[actix_web::test]
async fn a_poll_answered_404_or_410_means_the_job_was_lost() {
    let app = spawn_app().await;
    let scheduler = CfScheduler::start(vec![]).await;
    register(
        &app,
        "gone",
        harness_manifest(&scheduler, json!({"statusPath": "state"})),
        json!({}),
    )
    .await;
    scheduler.script(
        "lost-404",
        vec![
            Scripted::Json(json!({"state": "running"})),
            Scripted::Status(404, "no such job"),
        ],
    );
    scheduler.script("lost-410", vec![Scripted::Status(410, "gone")]);
    submit(&app, "gone", "lost-404").await;
    submit(&app, "gone", "lost-410").await;
    for job_id in ["lost-404", "lost-410"] {
        let run = app.wait_settled(job_id).await;
        assert_eq!(run["state"], "failed", "{run}");
        assert_eq!(run["failureCause"], "lost", "{run}");
        let (_, view) = job_view(&app, job_id).await;
        assert_eq!(view["state"], "lost", "an eviction word: {view}");
        assert!(
            view["error"]
                .as_str()
                .unwrap()
                .ends_with("(container evicted or crashed)"),
            "{view}"
        );
    }
    // Only the dispatch of each job went out: a lost job is not dispatched again.
    assert_eq!(scheduler.seen_with("POST", "/jobs").len(), 2);
}

#[actix_web::test]
async fn a_dispatch_answered_with_a_non_2xx_status_fails_the_run() {
    let app = spawn_app().await;
    let scheduler = CfScheduler::start(vec![]).await;
    register(
        &app,
        "refusing",
        harness_manifest(&scheduler, json!({"statusPath": "state"})),
        json!({}),
    )
    .await;
    for (status, job_id) in [
        (409, "refused-409"),
        (400, "refused-400"),
        (404, "refused-404"),
    ] {
        scheduler.set_dispatch_status(status);
        submit(&app, "refusing", job_id).await;
        let run = app.wait_settled(job_id).await;
        assert_eq!(run["state"], "failed", "{run}");
        assert_eq!(run["failureCause"], "dispatch_rejected", "{run}");
        assert!(
            run["error"].as_str().unwrap().contains(&status.to_string()),
            "{run}"
        );
        let (_, view) = job_view(&app, job_id).await;
        assert_eq!(view["state"], "failed");
        assert!(
            view.get("failureCause").is_none(),
            "not a Cat-Factory cause: {view}"
        );
        assert!(
            view["detail"]
                .as_str()
                .unwrap()
                .contains("cattery failure cause: dispatch_rejected"),
            "{view}"
        );
    }
    assert_eq!(
        scheduler.seen_with("POST", "/jobs").len(),
        3,
        "no retries of a 4xx"
    );

    // 429 and 5xx are retried by cattery (Cat-Factory fails at once) and then fail the run.
    scheduler.set_dispatch_status(503);
    submit(&app, "refusing", "refused-503").await;
    let run = app.wait_settled("refused-503").await;
    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(run["attempts"]["dispatch"], 5, "{run}");
    assert_eq!(scheduler.seen_with("POST", "/jobs").len(), 3 + 5);
}

#[actix_web::test]
async fn the_six_auth_schemes_send_their_exact_headers() {
    let app = spawn_app().await;
    let scheduler = CfScheduler::start(vec![Scripted::Json(json!({"state": "done"}))]).await;
    let token_url = format!("{}/oauth/token", scheduler.base_url);
    let schemes = [
        ("auth-none", json!({"type": "none"}), json!({})),
        (
            "auth-api-key",
            json!({"type": "api_key", "headerName": "X-Api-Key", "valuePrefix": "Token ", "secretRef": {"key": "KEY"}}),
            json!({"KEY": "k-123"}),
        ),
        (
            "auth-bearer",
            json!({"type": "bearer", "secretRef": {"key": "TOKEN"}}),
            json!({"TOKEN": "b-456"}),
        ),
        (
            "auth-basic",
            json!({"type": "basic", "usernameSecretRef": {"key": "USER"}, "passwordSecretRef": {"key": "PASS"}}),
            json!({"USER": "runner", "PASS": "p:w é"}),
        ),
        (
            "auth-oauth2",
            json!({"type": "oauth2_client_credentials", "tokenUrl": format!("  {token_url}  "),
                   "clientIdSecretRef": {"key": "CID"}, "clientSecretSecretRef": {"key": "CSECRET"},
                   "audience": "jobs"}),
            json!({"CID": "cid", "CSECRET": "csecret"}),
        ),
        (
            "auth-custom",
            json!({"type": "custom_headers", "headers": [
                {"name": "X-Tenant", "secretRef": {"key": "TENANT"}},
                {"name": "X-Signature", "secretRef": {"key": "SIG"}}
            ]}),
            json!({"TENANT": "t-1", "SIG": "s-2", "UNUSED": "extra keys are kept"}),
        ),
    ];
    for (name, auth, secrets) in &schemes {
        let mut manifest = harness_manifest(&scheduler, json!({"statusPath": "state"}));
        manifest["auth"] = auth.clone();
        register(&app, name, manifest, secrets.clone()).await;
        submit(&app, name, &format!("{name}-job")).await;
    }
    let dispatch_of = |name: &str| {
        scheduler
            .seen_with("POST", "/jobs")
            .into_iter()
            .find(|s| s.json()["jobId"] == format!("{name}-job"))
            .unwrap()
    };
    for (name, _, _) in &schemes {
        app.wait_settled(&format!("{name}-job")).await;
    }
    let none = dispatch_of("auth-none");
    assert_eq!(none.header("authorization"), None);
    assert_eq!(
        dispatch_of("auth-api-key").header("x-api-key"),
        Some("Token k-123")
    );
    assert_eq!(
        dispatch_of("auth-bearer").header("authorization"),
        Some("Bearer b-456")
    );
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode("runner:p:w é");
    assert_eq!(
        dispatch_of("auth-basic").header("authorization"),
        Some(format!("Basic {basic}").as_str())
    );
    let oauth = dispatch_of("auth-oauth2");
    assert!(
        oauth
            .header("authorization")
            .is_some_and(|h| h.starts_with("Bearer issued-token-")),
        "{:?}",
        oauth.headers
    );
    let form = scheduler.seen_with("POST", "/oauth/token")[0].text();
    for part in [
        "grant_type=client_credentials",
        "client_id=cid",
        "client_secret=csecret",
        "audience=jobs",
    ] {
        assert!(form.contains(part), "{part} missing from {form}");
    }
    let custom = dispatch_of("auth-custom");
    assert_eq!(custom.header("x-tenant"), Some("t-1"));
    assert_eq!(custom.header("x-signature"), Some("s-2"));
    assert_eq!(custom.header("authorization"), None);
    // A scheduler that checks its credential accepts the polls too.
    assert!(
        scheduler
            .seen_with("GET", "/jobs/auth-bearer-job")
            .iter()
            .all(|s| s.header("authorization") == Some("Bearer b-456"))
    );
}

#[actix_web::test]
async fn variables_query_values_and_dot_paths_behave_as_in_cat_factory() {
    let app = spawn_app().await;
    let scheduler = CfScheduler::start(vec![]).await;
    let manifest = json!({
        "providerId": "vars",
        "label": "variables",
        "baseUrl": scheduler.base_url,
        "auth": {"type": "none"},
        "dispatch": {
            "method": "POST",
            "pathTemplate": "jobs",
            "query": [
                {"key": "kind", "value": "{{input.kind}}"},
                {"key": "where to", "value": "a b&c={{input.cloudProvider}}/{{input.instanceType}}"},
                {"key": "tag", "value": "one"},
                {"key": "tag", "value": "two"}
            ],
            "headers": [
                {"name": "X-Image", "value": "{{input.image}}"},
                {"name": "X-Typo", "value": "[{{input.jobid}}][{{input.job.kind}}]"}
            ],
            "bodyTemplate": "{{input.job}}",
            "timeoutMs": 1500.5
        },
        "poll": {
            "method": "GET",
            "pathTemplate": "/jobs/{{input.jobId}}",
            "query": [{"key": "kind", "value": "{{input.kind}}"}],
            "headers": [{"name": "X-Job", "value": "[{{input.job}}]"}],
            "bodyTemplate": "{\"never\": \"sent with GET\"}"
        },
        "response": {
            "statusPath": "items.0.status",
            "resultPath": "items.0.result",
            "progressTotalPath": "counts.all-steps",
            "progressCompletedPath": "counts.done",
            "heartbeatPath": "beat",
            "failureCausePath": "items.0.cause",
            "detailPath": "items.0.detail",
            "errorPath": "items.0.error",
            "prUrlPath": "links.pr",
            "branchPath": "links.branch"
        }
    });
    let pool = register(&app, "vars", manifest, json!({})).await;
    let codes = warning_codes(&pool);
    for code in [
        "unknown_variable",
        "empty_variable",
        "body_not_sent",
        "no_release",
    ] {
        assert!(
            codes.iter().any(|c| c == code),
            "{code} missing from {codes:?}"
        );
    }
    scheduler.script(
        "vars-done",
        vec![
            Scripted::Json(json!({"items": [{"status": "running"}], "counts": {"all-steps": "4", "done": ""}, "beat": 1700000000000_i64})),
            Scripted::Json(json!({
                "items": [{"status": "succeeded", "result": {"summary": "s", "prUrl": "old", "branch": 7}, "error": "tests failed after push"}],
                "links": {"pr": "https://github.com/o/r/pull/9", "branch": ""},
                "counts": {"all-steps": 4, "done": 4}
            })),
        ],
    );
    scheduler.script(
        "vars-failed",
        vec![Scripted::Json(json!({"items": [{"status": "failed", "cause": "branch-contended", "detail": "push raced"}], "beat": "2024-01-01T00:00:00Z"}))],
    );
    scheduler.script(
        "vars-odd-cause",
        vec![Scripted::Json(
            json!({"items": [{"status": "failed", "cause": "oom", "detail": ""}]}),
        )],
    );
    for job_id in ["vars-done", "vars-failed", "vars-odd-cause"] {
        submit(&app, "vars", job_id).await;
    }
    let done = app.wait_settled("vars-done").await;
    let failed = app.wait_settled("vars-failed").await;
    let odd = app.wait_settled("vars-odd-cause").await;

    let dispatch = scheduler
        .seen_with("POST", "/jobs")
        .into_iter()
        .find(|s| s.json()["jobId"] == "vars-done")
        .unwrap();
    assert_eq!(
        dispatch.json(),
        spec("vars-done"),
        "the job spliced verbatim"
    );
    let query: Vec<(String, String)> = url::form_urlencoded::parse(dispatch.query.as_bytes())
        .into_owned()
        .collect();
    let value = |key: &str| -> Vec<&str> {
        query
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(value("kind"), ["agent"]);
    assert_eq!(value("where to"), ["a b&c=aws/c7g.xlarge"]);
    assert_eq!(value("tag"), ["one", "two"]);
    assert!(
        !dispatch.query.contains("&c=") && dispatch.query.contains("%26c%3Daws"),
        "values are percent-encoded: {}",
        dispatch.query
    );
    assert_eq!(dispatch.header("x-image"), Some("ui"));
    assert_eq!(
        dispatch.header("x-typo"),
        Some("[][]"),
        "unknown keys render empty"
    );
    let poll = &scheduler.seen_with("GET", "/jobs/vars-done")[0];
    assert_eq!(poll.query, "kind=", "input.kind exists only in dispatch");
    assert_eq!(
        poll.header("x-job"),
        Some("[]"),
        "input.job exists only in dispatch"
    );
    assert!(poll.body.is_empty(), "no body with GET");

    assert_eq!(done["state"], "done");
    assert_eq!(
        done["result"],
        json!({"summary": "s", "prUrl": "https://github.com/o/r/pull/9", "error": "tests failed after push"}),
        "prUrlPath overrides, an empty branchPath does not, errorPath on done sets result.error"
    );
    assert_eq!(
        done["progress"],
        json!({"completed": 4, "inProgress": 0, "total": 4})
    );
    assert_eq!(done["heartbeatAt"], "1700000000000");
    assert_eq!(failed["failureCause"], "branch-contended");
    assert_eq!(failed["detail"], "push raced");
    assert_eq!(
        failed["heartbeatAt"],
        Value::Null,
        "an ISO date is not a number"
    );
    assert_eq!(
        odd["failureCause"], "scheduler",
        "a cause Cat-Factory does not know is dropped"
    );
    assert_eq!(odd["detail"], Value::Null);
    let (_, view) = job_view(&app, "vars-done").await;
    assert_eq!(view["heartbeatAt"], 1_700_000_000_000_i64);
    assert_eq!(view["result"]["error"], "tests failed after push");
    let (_, view) = job_view(&app, "vars-failed").await;
    assert_eq!(view["failureCause"], "branch-contended");
    assert_eq!(view["detail"], "push raced");
}

#[actix_web::test]
async fn registration_accepts_both_shapes_and_reports_problems_where_they_were_written() {
    let app = spawn_app().await;
    let scheduler = CfScheduler::start(vec![]).await;
    let put = |body: Value| {
        let app = &app;
        async move {
            let response = app
                .client
                .put(app.url("/v1/pools/shapes"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let manifest = example(EXAMPLE_A, &scheduler);

    let (status, body) =
        put(json!({"config": {"kind": "kubernetes", "kubernetes": {}}, "secrets": {}})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["path"], "config.kind");

    let mut broken = manifest.clone();
    broken["dispatch"]["method"] = json!("HEAD");
    broken["response"]["statusMap"][1]["to"] = json!("finished");
    let (status, body) = put(
        json!({"config": {"kind": "manifest", "manifest": broken}, "secrets": {"API_TOKEN": "t"}}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let paths: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "config.manifest.dispatch.method",
            "config.manifest.response.statusMap.1.to"
        ]
    );

    let (status, body) =
        put(json!({"config": {"kind": "manifest", "manifest": manifest}, "secrets": {}})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "missing_secrets");
    assert_eq!(body["errors"][0]["path"], "secrets.API_TOKEN");

    // cattery's own shape takes the Cat-Factory manifest too, as YAML text.
    let text = EXAMPLE_A.replace("https://runners.acme.example", &scheduler.base_url);
    let (status, body) = put(json!({"manifest": text, "secrets": {"API_TOKEN": "t"}})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["format"], "cat-factory");

    // The website's field names are ignored, as Cat-Factory ignores them, and said so.
    let mut website = manifest.clone();
    website["poll"]["queryTemplate"] = json!([{"key": "x", "value": "y"}]);
    website.as_object_mut().unwrap().remove("release");
    let (status, body) = put(
        json!({"config": {"kind": "manifest", "manifest": website}, "secrets": {"API_TOKEN": "t"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revision"], 2);
    let codes = warning_codes(&body);
    assert!(codes.contains(&"ignored_field".to_owned()), "{codes:?}");
    assert!(codes.contains(&"no_release".to_owned()), "{codes:?}");
    let Reply { body: stored, .. } = app.get("/v1/pools/shapes").await;
    assert_eq!(stored["format"], "cat-factory");
}

fn convert(file: &std::path::Path, json: bool) -> (i32, String, String) {
    let mut args = vec!["manifest", "convert", file.to_str().unwrap()];
    if json {
        args.push("--json");
    }
    let output = std::process::Command::new(cattery_bin())
        .args(&args)
        .env("CATTERY__LOGGING__LEVEL", "warn")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// A request as the scheduler saw it, with the job id replaced so two runs compare equal.
fn normalised(seen: &crate::support::stub::Seen, job_id: &str) -> Value {
    let mut headers: Vec<(String, String)> = seen
        .headers
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "host" | "content-length"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    headers.sort();
    json!({
        "method": seen.method,
        "path": seen.path.replace(job_id, "ID"),
        "query": seen.query.replace(job_id, "ID"),
        "headers": headers,
        "body": seen.text().replace(job_id, "ID"),
    })
}

#[actix_web::test]
async fn a_converted_manifest_drives_the_scheduler_exactly_like_the_original() {
    let app = spawn_app().await;
    let scheduler = CfScheduler::start(vec![
        Scripted::Json(json!({"state": "in_progress"})),
        Scripted::Json(json!({"state": "succeeded", "result": {"summary": "same"}})),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("acme.yaml");
    std::fs::write(
        &original,
        EXAMPLE_A.replace("https://runners.acme.example", &scheduler.base_url),
    )
    .unwrap();
    let (code, yaml, stderr) = convert(&original, false);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("warning json_escaping"), "{stderr}");
    let (code, json_text, _) = convert(&original, true);
    assert_eq!(code, 0);
    let from_yaml: Value = yaml_serde::from_str(&yaml).unwrap();
    let from_json: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(from_yaml, from_json);
    assert_eq!(from_yaml["apiVersion"], "cattery/v1");
    assert_eq!(from_yaml["poll"]["map"]["coerce"], "cat-factory");

    // Converting a cattery/v1 manifest is refused.
    let converted_file = dir.path().join("converted.yaml");
    std::fs::write(&converted_file, &yaml).unwrap();
    let (code, _, stderr) = convert(&converted_file, false);
    assert_eq!(code, 1);
    assert!(stderr.contains("needs no conversion"), "{stderr}");

    let secrets = json!({"API_TOKEN": "same-token"});
    let cf_pool = register(
        &app,
        "original",
        yaml_serde::from_str(&std::fs::read_to_string(&original).unwrap()).unwrap(),
        secrets.clone(),
    )
    .await;
    let v1_pool = app.put_pool("converted", from_yaml.clone(), secrets).await;
    assert_eq!(v1_pool.status, 201);
    let v1_pool: Value = v1_pool.json();
    assert_eq!(cf_pool["format"], "cat-factory");
    assert_eq!(v1_pool["format"], "cattery/v1");

    submit(&app, "original", "round-a").await;
    let a = app
        .wait_for("round-a", WAIT, |r| r["released"] == true)
        .await;
    submit(&app, "converted", "round-b").await;
    let b = app
        .wait_for("round-b", WAIT, |r| r["released"] == true)
        .await;
    assert_eq!(a["result"], json!({"summary": "same"}));
    assert_eq!(a["result"], b["result"]);
    assert_eq!(a["state"], b["state"]);

    let seen = scheduler.seen();
    let requests_of = |job_id: &str| -> Vec<Value> {
        let mut out: Vec<Value> = seen
            .iter()
            .filter(|s| s.path.contains(job_id) || s.text().contains(job_id))
            .map(|s| normalised(s, job_id))
            .collect();
        // Polls repeat; keep the first of each distinct request, in order.
        out.dedup();
        out
    };
    let (ra, rb) = (requests_of("round-a"), requests_of("round-b"));
    assert_eq!(ra.len(), 3, "dispatch, poll, release: {ra:?}");
    assert_eq!(ra, rb);
}
