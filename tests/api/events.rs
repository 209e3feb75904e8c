//! The server-sent event stream: live changes, and resumption from the persisted log.

use crate::scheduler::TestScheduler;
use crate::support::READER_TOKEN;
use crate::support::app::spawn_app;
use crate::support::manifests::{SCHED_TOKEN, scheduler_manifest};
use crate::support::stub::Scripted;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Reads `(id, RunView)` frames from an event stream until `enough` says stop.
async fn read_frames(
    mut response: reqwest::Response,
    enough: impl Fn(&[(i64, Value)]) -> bool,
) -> Vec<(i64, Value)> {
    let start = Instant::now();
    let mut buffer = String::new();
    let mut frames = Vec::new();
    while !enough(&frames) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "stream stalled after {frames:?}"
        );
        let chunk = tokio::time::timeout(Duration::from_secs(20), response.chunk())
            .await
            .unwrap()
            .unwrap();
        let Some(chunk) = chunk else { break };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let id = frame
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .map(|v| v.parse::<i64>().unwrap());
            let data = frame.lines().find_map(|l| l.strip_prefix("data: "));
            if let (Some(id), Some(data)) = (id, data) {
                assert!(frame.contains("event: run"), "{frame}");
                frames.push((id, serde_json::from_str(data).unwrap()));
            }
        }
    }
    frames
}

#[actix_web::test]
async fn the_stream_follows_a_run_and_resumes_after_the_last_event_id() {
    let app = spawn_app().await;
    let scheduler = TestScheduler::start(vec![
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
    let stream = app
        .client
        .get(app.url("/v1/events?jobId=sse-1"))
        .bearer_auth(READER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    app.dispatch("sched", json!({"jobId": "sse-1"})).await;
    app.dispatch("sched", json!({"jobId": "sse-other"})).await;
    let frames = read_frames(stream, |frames| {
        frames.iter().any(|(_, v)| v["released"] == true)
    })
    .await;
    assert!(
        frames.iter().all(|(_, v)| v["jobId"] == "sse-1"),
        "the jobId filter holds"
    );
    let states: Vec<&str> = frames
        .iter()
        .map(|(_, v)| v["state"].as_str().unwrap())
        .collect();
    // Each frame carries the run as it stood when the frame was sent: states only move forward
    // along the lifecycle, and the stream ends on the finished, released run.
    let order = ["queued", "dispatching", "pending", "running", "done"];
    let ranks: Vec<usize> = states
        .iter()
        .map(|s| order.iter().position(|o| o == s).unwrap())
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{states:?}");
    assert_eq!(states.last(), Some(&"done"), "{states:?}");
    let ids: Vec<i64> = frames.iter().map(|(id, _)| *id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // Reconnecting with the first id replays what came after it, from the log.
    let resumed = app
        .client
        .get(app.url("/v1/events?jobId=sse-1"))
        .bearer_auth(READER_TOKEN)
        .header("Last-Event-ID", ids[0].to_string())
        .send()
        .await
        .unwrap();
    let replayed = read_frames(resumed, |frames| !frames.is_empty()).await;
    assert!(replayed[0].0 > ids[0]);
    assert_eq!(replayed.last().unwrap().1["jobId"], "sse-1");

    let bad = app
        .client
        .get(app.url("/v1/events"))
        .bearer_auth(READER_TOKEN)
        .header("Last-Event-ID", "not-a-number")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 422);
}

#[actix_web::test]
async fn no_change_is_lost_when_many_runs_commit_together() {
    let app = spawn_app().await;
    let scheduler = TestScheduler::start(vec![Scripted::Json(json!({"status": "Complete"}))]).await;
    app.put_pool(
        "sched",
        scheduler_manifest(&scheduler.base_url),
        json!({"SCHED_TOKEN": SCHED_TOKEN}),
    )
    .await;
    let stream = app
        .client
        .get(app.url("/v1/events?pool=sched"))
        .bearer_auth(READER_TOKEN)
        .send()
        .await
        .unwrap();
    let ids: Vec<String> = (0..20).map(|i| format!("many-{i}")).collect();
    for id in &ids {
        app.dispatch("sched", json!({"jobId": id})).await;
    }
    // Every run's last change (its release) reaches the stream.
    let frames = read_frames(stream, |frames| {
        ids.iter().all(|id| {
            frames
                .iter()
                .any(|(_, v)| v["jobId"] == *id && v["released"] == true)
        })
    })
    .await;
    let seqs: Vec<i64> = frames.iter().map(|(id, _)| *id).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[actix_web::test]
async fn a_stream_without_last_event_id_starts_at_the_present_not_at_the_first_event() {
    let app = spawn_app().await;
    let scheduler = TestScheduler::start(vec![Scripted::Json(json!({"status": "Complete"}))]).await;
    app.put_pool(
        "sched",
        scheduler_manifest(&scheduler.base_url),
        json!({"SCHED_TOKEN": SCHED_TOKEN}),
    )
    .await;
    for id in ["past-1", "past-2"] {
        app.dispatch("sched", json!({"jobId": id})).await;
        app.wait_for(id, Duration::from_secs(20), |r| r["released"] == true)
            .await;
    }
    let open = |last_event_id: Option<&'static str>| {
        let mut request = app
            .client
            .get(app.url("/v1/events"))
            .bearer_auth(READER_TOKEN);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        request.send()
    };
    let stream = open(None).await.unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    app.dispatch("sched", json!({"jobId": "present-1"})).await;
    let frames = read_frames(stream, |frames| {
        frames
            .iter()
            .any(|(_, v)| v["jobId"] == "present-1" && v["released"] == true)
    })
    .await;
    assert!(
        frames.iter().all(|(_, v)| v["jobId"] == "present-1"),
        "only changes from now on: {:?}",
        frames.iter().map(|(_, v)| &v["jobId"]).collect::<Vec<_>>()
    );

    // Asked to resume from the start, the stream replays the log: one frame per run and page,
    // each run as it stands, in log order.
    let replay = open(Some("0")).await.unwrap();
    let frames = read_frames(replay, |frames| {
        ["past-1", "past-2", "present-1"]
            .iter()
            .all(|id| frames.iter().any(|(_, v)| v["jobId"] == *id))
    })
    .await;
    let ids: Vec<i64> = frames.iter().map(|(id, _)| *id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(frames.iter().all(|(_, v)| v["released"] == true));
}
