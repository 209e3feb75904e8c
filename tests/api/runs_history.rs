//! A run's persisted history, read a page at a time.

use crate::scheduler::TestScheduler;
use crate::support::app::spawn_app;
use crate::support::client::Reply;
use crate::support::manifests::{SCHED_TOKEN, scheduler_manifest};
use crate::support::stub::Scripted;
use serde_json::{Value, json};

#[actix_web::test]
async fn a_runs_history_is_paged_with_limit_and_after_and_says_where_to_continue() {
    let app = spawn_app().await;
    let scheduler = TestScheduler::start(vec![
        Scripted::Json(json!({"status": "Queued"})),
        Scripted::Json(json!({"status": "Running"})),
        Scripted::Json(json!({"status": "Complete"})),
    ])
    .await;
    app.put_pool(
        "sched",
        scheduler_manifest(&scheduler.base_url),
        json!({"SCHED_TOKEN": SCHED_TOKEN}),
    )
    .await;
    app.dispatch("sched", json!({"jobId": "paged-1"})).await;
    app.wait_for("paged-1", std::time::Duration::from_secs(20), |r| {
        r["released"] == true
    })
    .await;

    let Reply {
        status,
        body: whole,
        ..
    } = app.get("/v1/runs/paged-1/events?limit=1000").await;
    assert_eq!(status, 200);
    let whole = whole["events"].as_array().unwrap().clone();
    assert!(whole.len() >= 5, "{whole:?}");

    // Two at a time, following `next`, gives the same history in the same order.
    let mut paged: Vec<Value> = Vec::new();
    let mut path = "/v1/runs/paged-1/events?limit=2".to_owned();
    loop {
        let Reply {
            status, body: page, ..
        } = app.get(&path).await;
        assert_eq!(status, 200, "{page}");
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= 2, "{page}");
        paged.extend(events.iter().cloned());
        match page["next"].as_i64() {
            Some(next) => {
                assert_eq!(Some(next), events.last().and_then(|e| e["seq"].as_i64()));
                path = format!("/v1/runs/paged-1/events?limit=2&after={next}");
            }
            None => break,
        }
        assert!(paged.len() <= whole.len(), "paging does not end");
    }
    assert_eq!(paged, whole);

    // The default page answers too, and says it is the last one.
    let Reply {
        status,
        body: first,
        ..
    } = app.get("/v1/runs/paged-1/events").await;
    assert_eq!(status, 200);
    assert_eq!(first["events"].as_array().unwrap().len(), whole.len());
    assert!(first["next"].is_null());

    for bad in ["limit=0", "limit=1001", "after=-1", "limit=x", "other=1"] {
        let Reply { status, body, .. } = app.get(&format!("/v1/runs/paged-1/events?{bad}")).await;
        assert!(status == 400 || status == 422, "{bad}: {status} {body}");
    }
    let Reply { status, body, .. } = app.get("/v1/runs/paged-1/events?limit=1001").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["path"], "limit");
    let Reply { status, .. } = app.get("/v1/runs/nobody/events?limit=5").await;
    assert_eq!(status, 404);
}

#[actix_web::test]
async fn finished_runs_past_their_retention_are_swept_by_the_gateway() {
    let app = crate::support::app::spawn_app_with(|s| {
        s.retention.finished_runs_days = 30;
        s.retention.sweep_interval_seconds = 1;
    })
    .await;
    let scheduler = TestScheduler::start(vec![Scripted::Json(json!({"status": "Complete"}))]).await;
    app.put_pool(
        "sched",
        scheduler_manifest(&scheduler.base_url),
        json!({"SCHED_TOKEN": SCHED_TOKEN}),
    )
    .await;
    for id in ["aged-1", "fresh-1"] {
        app.dispatch("sched", json!({"jobId": id})).await;
        app.wait_for(id, std::time::Duration::from_secs(20), |r| {
            r["released"] == true
        })
        .await;
    }
    // One of them finished 31 days ago, as far as the database knows.
    let aged = app.db.execute_sql(
        "UPDATE runs SET finished_at = finished_at - 2678400000 WHERE job_id = 'aged-1'",
    );
    assert_eq!(aged, 1);

    crate::support::wait::until(
        "the aged run to be deleted",
        std::time::Duration::from_secs(20),
        std::time::Duration::from_millis(50),
        async || match app.get("/v1/runs/aged-1").await.status {
            404 => Ok(()),
            status => Err(format!("GET answers {status}")),
        },
    )
    .await;
    let Reply { status, .. } = app.get("/v1/runs/aged-1/events").await;
    assert_eq!(status, 404);
    // The run that finished just now is kept, with its history.
    assert_eq!(app.run("fresh-1").await["state"], "done");
    assert!(app.events("fresh-1").await.len() >= 3);
}
