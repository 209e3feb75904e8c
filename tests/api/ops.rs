use crate::support::app::spawn_app;

#[actix_web::test]
async fn healthz_and_readyz_answer_without_a_token() {
    let app = spawn_app().await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["database"], true);
    assert_eq!(body["supervisor"], true);
    let expected = if app.db.is_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    assert_eq!(
        body["backend"], expected,
        "the suite runs on the database it was asked to"
    );
    assert!(
        body["recoveryMs"].is_u64(),
        "the recovery time at start is exposed: {body}"
    );
}

#[actix_web::test]
async fn unknown_routes_answer_problem_json_404() {
    let app = spawn_app().await;
    // Outside /v1 the runner-protocol facade answers (gated, in the harness's shape).
    let facade = app.client.get(app.url("/nope")).send().await.unwrap();
    assert_eq!(facade.status().as_u16(), 401);
    let response = app.client.get(app.url("/v1/nope")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
    assert_eq!(body["status"], 404);
}
