use crate::support::app::spawn_app;
use crate::support::{ADMIN_TOKEN, DISPATCHER_TOKEN, READER_TOKEN};
use serde_json::json;

async fn status_of(
    app: &crate::support::app::TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut request = app.client.request(method.parse().unwrap(), app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if method != "GET" && method != "DELETE" {
        request = request.json(&json!({}));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    if status == 401 || status == 403 {
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    (status, response.json().await.unwrap_or_default())
}

#[actix_web::test]
async fn every_v1_route_refuses_a_missing_or_wrong_token() {
    let app = spawn_app().await;
    let routes = [
        ("GET", "/v1/pools"),
        ("GET", "/v1/pools/p"),
        ("PUT", "/v1/pools/p"),
        ("PUT", "/v1/pools/p/secrets"),
        ("DELETE", "/v1/pools/p"),
        ("POST", "/v1/pools/p/runs"),
        ("GET", "/v1/runs"),
        ("GET", "/v1/runs/j"),
        ("POST", "/v1/runs/j/cancel"),
        ("GET", "/v1/runs/j/events"),
        ("GET", "/v1/events"),
    ];
    for (method, path) in routes {
        let (status, body) = status_of(&app, method, path, None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("unauthorized")),
            "{method} {path} without a token"
        );
        let (status, _) = status_of(&app, method, path, Some("wrong-token")).await;
        assert_eq!(status, 401, "{method} {path} with a wrong token");
    }
}

#[actix_web::test]
async fn roles_are_enforced_per_route() {
    let app = spawn_app().await;
    // A reader may not write anything.
    for (method, path) in [
        ("PUT", "/v1/pools/p"),
        ("DELETE", "/v1/pools/p"),
        ("POST", "/v1/pools/p/runs"),
        ("POST", "/v1/runs/j/cancel"),
    ] {
        let (status, body) = status_of(&app, method, path, Some(READER_TOKEN)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("forbidden")),
            "{method} {path} as reader"
        );
    }
    // A dispatcher may run jobs but not manage pools.
    for (method, path) in [
        ("PUT", "/v1/pools/p"),
        ("PUT", "/v1/pools/p/secrets"),
        ("DELETE", "/v1/pools/p"),
    ] {
        let (status, _) = status_of(&app, method, path, Some(DISPATCHER_TOKEN)).await;
        assert_eq!(status, 403, "{method} {path} as dispatcher");
    }
    let (status, body) = status_of(&app, "POST", "/v1/pools/p/runs", Some(DISPATCHER_TOKEN)).await;
    assert_ne!(status, 403, "{body}");
    // The admin may read.
    let (status, _) = status_of(&app, "GET", "/v1/pools", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200);
}
