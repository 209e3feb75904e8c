use crate::support::ADMIN_TOKEN;
use crate::support::app::spawn_app;
use crate::support::client::Reply;
use crate::support::manifests::{SCHED_TOKEN, scheduler_manifest};
use serde_json::{Value, json};

fn paths(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["path"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[actix_web::test]
async fn a_pool_registers_replaces_and_reads_back_without_secret_values() {
    let app = spawn_app().await;
    let manifest = scheduler_manifest("http://127.0.0.1:9");
    let created = app
        .put_pool(
            "sched",
            manifest.clone(),
            json!({"SCHED_TOKEN": SCHED_TOKEN}),
        )
        .await;
    assert_eq!(created.status, 201);
    let view: Value = created.json();
    assert_eq!(view["name"], "sched");
    assert_eq!(view["revision"], 1);
    assert_eq!(view["format"], "cattery/v1");
    assert_eq!(view["secretKeys"], json!(["SCHED_TOKEN"]));
    assert_eq!(view["stats"]["queued"], 0);
    assert!(!view.to_string().contains(SCHED_TOKEN));

    // The same manifest again: 200, same revision. A changed one: revision 2. Secrets omitted
    // on replace keep the stored bundle.
    let again = app
        .put_pool(
            "sched",
            manifest.clone(),
            json!({"SCHED_TOKEN": SCHED_TOKEN}),
        )
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["revision"], 1);
    let mut changed = manifest.clone();
    changed["description"] = json!("changed");
    let replaced = app
        .client
        .put(app.url("/v1/pools/sched"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"manifest": changed}))
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status().as_u16(), 200);
    let replaced: Value = replaced.json().await.unwrap();
    assert_eq!(replaced["revision"], 2);
    assert_ne!(replaced["digest"], view["digest"]);

    let Reply {
        status,
        body: listed,
        ..
    } = app.get("/v1/pools").await;
    assert_eq!(status, 200);
    assert_eq!(listed["pools"].as_array().unwrap().len(), 1);
    let Reply {
        status, body: read, ..
    } = app.get("/v1/pools/sched").await;
    assert_eq!(status, 200);
    assert_eq!(read["revision"], 2);
    assert!(!read.to_string().contains(SCHED_TOKEN));
}

#[actix_web::test]
async fn a_manifest_given_as_yaml_text_registers() {
    let app = spawn_app().await;
    let yaml = yaml_serde::to_string(&scheduler_manifest("http://127.0.0.1:9")).unwrap();
    let response = app
        .put_pool("from-yaml", json!(yaml), json!({"SCHED_TOKEN": "x"}))
        .await;
    assert_eq!(response.status, 201, "{}", response.text);
}

#[actix_web::test]
async fn an_invalid_manifest_is_refused_with_every_problem_and_nothing_is_stored() {
    let app = spawn_app().await;
    let mut manifest = scheduler_manifest("http://127.0.0.1:9");
    manifest["colour"] = json!("blue");
    manifest["poll"]["map"]["state"] = json!("status[?");
    manifest["dispatch"]["request"]["path"] = json!("/jobs/{{input.nope}}");
    let response = app
        .put_pool("bad", manifest, json!({"SCHED_TOKEN": "x"}))
        .await;
    assert_eq!(response.status, 422);
    assert_eq!(response.headers["content-type"], "application/problem+json");
    let body: Value = response.json();
    assert_eq!(body["code"], "validation_failed");
    let paths = paths(&body);
    assert!(paths.iter().any(|p| p == "manifest.colour"), "{paths:?}");
    assert!(
        paths.iter().any(|p| p == "manifest.poll.map.state"),
        "{paths:?}"
    );
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("manifest.dispatch.request.path")),
        "{paths:?}"
    );
    let Reply { status, .. } = app.get("/v1/pools/bad").await;
    assert_eq!(status, 404);
}

#[actix_web::test]
async fn a_missing_secret_is_named_and_nothing_is_stored() {
    let app = spawn_app().await;
    let response = app
        .put_pool(
            "nosecret",
            scheduler_manifest("http://127.0.0.1:9"),
            json!({"OTHER": "x"}),
        )
        .await;
    assert_eq!(response.status, 422);
    let body: Value = response.json();
    assert_eq!(body["code"], "missing_secrets");
    assert_eq!(paths(&body), ["secrets.SCHED_TOKEN"]);
    let Reply { status, .. } = app.get("/v1/pools/nosecret").await;
    assert_eq!(status, 404);
}

#[actix_web::test]
async fn malformed_bodies_bad_names_and_oversized_bodies_get_clear_4xx() {
    let app = spawn_app().await;
    let malformed = app
        .client
        .put(app.url("/v1/pools/p"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{\"manifest\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status().as_u16(), 422);
    assert_eq!(
        malformed.json::<Value>().await.unwrap()["code"],
        "malformed_json"
    );

    let bad_yaml = app
        .put_pool("p", json!("apiVersion: [unclosed"), json!({}))
        .await;
    assert_eq!(bad_yaml.status, 422);
    assert_eq!(bad_yaml.json()["code"], "validation_failed");

    let bad_name = app
        .put_pool(
            "Bad_Name",
            scheduler_manifest("http://127.0.0.1:9"),
            json!({"SCHED_TOKEN": "x"}),
        )
        .await;
    assert_eq!(bad_name.status, 422);
    assert_eq!(paths(&bad_name.json()), ["name"]);

    let huge = "x".repeat(3 * 1024 * 1024);
    let oversized = app
        .put_pool("p", json!({"description": huge}), json!({}))
        .await;
    assert_eq!(oversized.status, 413);
    assert_eq!(oversized.json()["code"], "payload_too_large");

    let Reply { body: listed, .. } = app.get("/v1/pools").await;
    assert_eq!(listed["pools"], json!([]));
}

#[actix_web::test]
async fn secrets_rotate_and_are_checked_against_the_manifest() {
    let app = spawn_app().await;
    app.put_pool(
        "rot",
        scheduler_manifest("http://127.0.0.1:9"),
        json!({"SCHED_TOKEN": "a"}),
    )
    .await;
    let missing = app
        .client
        .put(app.url("/v1/pools/rot/secrets"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"secrets": {"OTHER": "b"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 422);
    let rotated = app
        .client
        .put(app.url("/v1/pools/rot/secrets"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"secrets": {"SCHED_TOKEN": "b", "EXTRA": "c"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status().as_u16(), 200);
    assert_eq!(
        rotated.json::<Value>().await.unwrap()["secretKeys"],
        json!(["EXTRA", "SCHED_TOKEN"])
    );
}

#[actix_web::test]
async fn deleting_a_pool_answers_204_then_404() {
    let app = spawn_app().await;
    app.put_pool(
        "gone",
        scheduler_manifest("http://127.0.0.1:9"),
        json!({"SCHED_TOKEN": "a"}),
    )
    .await;
    let delete = |path: &str| {
        app.client
            .delete(app.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
    };
    assert_eq!(
        delete("/v1/pools/gone").await.unwrap().status().as_u16(),
        204
    );
    assert_eq!(
        delete("/v1/pools/gone").await.unwrap().status().as_u16(),
        404
    );
    let Reply { status, body, .. } = app.get("/v1/pools/gone").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("pool_not_found"))
    );
}

#[actix_web::test]
async fn a_failure_log_operation_takes_only_request_expect_and_timeout() {
    let app = spawn_app().await;
    let mut manifest = scheduler_manifest("http://127.0.0.1:9");
    manifest["failureLog"] = json!({
        "request": {"method": "GET", "path": "/logs/{{run.dispatchId}}", "query": {"uid": "{{capture.uid}}"}},
        "map": {"state": "status"}
    });
    let refused = app
        .put_pool("logs", manifest.clone(), json!({"SCHED_TOKEN": "x"}))
        .await;
    assert_eq!(refused.status, 422);
    assert_eq!(paths(&refused.json()), ["manifest.failureLog.map"]);
    manifest["failureLog"]
        .as_object_mut()
        .unwrap()
        .remove("map");
    let accepted = app
        .put_pool("logs", manifest, json!({"SCHED_TOKEN": "x"}))
        .await;
    assert_eq!(accepted.status, 201, "{}", accepted.text);
}

#[actix_web::test]
async fn job_values_in_poll_or_release_are_refused_at_registration_instead_of_rendering_empty() {
    let app = spawn_app().await;
    let mut manifest = scheduler_manifest("http://127.0.0.1:9");
    manifest["poll"]["request"]["query"] = json!({"token": "{{input.job.token}}"});
    manifest["release"]["request"]["headers"] = json!({"X-Image": "{{input.image}}"});
    let response = app
        .put_pool("jobvalues", manifest, json!({"SCHED_TOKEN": "x"}))
        .await;
    assert_eq!(response.status, 422);
    let body: Value = response.json();
    let paths = paths(&body);
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("manifest.poll.request.query")),
        "{paths:?}"
    );
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("manifest.release.request.headers")),
        "{paths:?}"
    );
    let text = body.to_string();
    assert!(text.contains("exists only in dispatch"), "{text}");
    let Reply { status, .. } = app.get("/v1/pools/jobvalues").await;
    assert_eq!(status, 404);
}

#[actix_web::test]
async fn a_pool_whose_client_cannot_be_built_is_refused_and_not_stored() {
    let app = spawn_app().await;
    let mut manifest = scheduler_manifest("http://127.0.0.1:9");
    manifest["tls"] = json!({
        "caCertPem": "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
    });
    let response = app
        .put_pool("badtls", manifest, json!({"SCHED_TOKEN": "x"}))
        .await;
    assert_eq!(response.status, 422);
    let body: Value = response.json();
    assert_eq!(paths(&body), ["manifest.tls.caCertPem"], "{body}");
    // Nothing was stored: no pool, and nothing that a restart would try (and fail) to load.
    let Reply { status, .. } = app.get("/v1/pools/badtls").await;
    assert_eq!(status, 404);
    let Reply { body: list, .. } = app.get("/v1/pools").await;
    assert!(
        !list.to_string().contains("badtls"),
        "a refused pool is listed: {list}"
    );
}
