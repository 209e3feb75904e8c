//! `manifests/podman.yaml` against Podman 4.3's REST API (`podman system service`): real
//! containers from the locally imported `localhost/busybox:ci` image.

use crate::lossy::LossyProxy;
use crate::setup::{PODMAN_LOCK, SchedulerEnv, fast, scheduler_script, spawn_app, unique};
use crate::support::app::TestApp;
use crate::support::manifests::shipped_manifest;
use crate::support::wait::eventually;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

struct Podman {
    env: SchedulerEnv,
    client: reqwest::Client,
}

impl Podman {
    fn load() -> Option<Podman> {
        Some(Podman {
            env: SchedulerEnv::load("podman")?,
            client: cattery::scheduler::http::plain_client().unwrap(),
        })
    }

    /// The shipped manifest pointed at this Podman service, running `script` with `sh -c`.
    fn manifest(&self, script: &str) -> Value {
        let mut manifest = shipped_manifest("podman.yaml");
        manifest["baseUrl"] = json!(self.env.get("PODMAN_URL"));
        manifest["vars"]["image"] = json!(self.env.get("PODMAN_IMAGE"));
        manifest["vars"]["imagePullPolicy"] = json!("Never");
        manifest["vars"]["command"] = json!(["/bin/sh", "-c", script]);
        fast(&mut manifest);
        manifest
    }

    async fn start(&self, script: &str) -> (TestApp, String) {
        let app = spawn_app().await;
        let pool = unique("podman");
        app.register(&pool, self.manifest(script), json!({})).await;
        (app, pool)
    }

    /// The status of a libpod GET and its JSON body.
    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!(
                "{}/v4.0.0/libpod{path}",
                self.env.get("PODMAN_URL")
            ))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Waits until the pod of a run is gone from Podman.
    async fn wait_pod_gone(&self, pod: &str) {
        eventually("the pod to be removed", WAIT, || async {
            let (status, _) = self.get(&format!("/pods/{pod}/json")).await;
            (status == 404).then_some(())
        })
        .await;
    }
}

/// The pod name of a job id that is already a DNS-1123 label.
fn pod_name(job_id: &str) -> String {
    assert!(
        job_id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    );
    job_id.to_owned()
}

/// `text` quoted for a POSIX shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[actix_web::test]
async fn a_container_runs_with_the_job_in_its_environment_and_completes() {
    let Some(podman) = Podman::load() else { return };
    let _shared = PODMAN_LOCK.read().await;
    let job = json!({"prompt": "it's \"quoted\" $(not run) `nor this` \\ back", "n": [1, 2.5, null], "ü": "✓"});
    let expected = serde_json::to_string(&job).unwrap();
    // The container succeeds only if it received exactly the job, the id and the kind.
    let script = format!(
        "[ \"$CATTERY_JOB\" = {} ] || exit 41; [ \"$CATTERY_JOB_KIND\" = agent ] || exit 42; \
         [ -n \"$CATTERY_JOB_ID\" ] || exit 43; echo ok",
        shell_quote(&expected)
    );
    let (app, pool) = podman.start(&script).await;
    let job_id = unique("podman-ok");
    app.submit(&pool, json!({"jobId": job_id, "kind": "agent", "job": job}))
        .await;

    let run = app.wait_released(&job_id, "done", WAIT).await;
    assert_eq!(run["schedulerState"], "succeeded", "{run}");
    assert_eq!(run["result"]["exitCode"], 0);
    assert_eq!(run["result"]["containerId"], run["externalId"]);
    assert!(run["result"]["finishedAt"].is_string(), "{run}");
    podman.wait_pod_gone(&pod_name(&job_id)).await;
}

#[actix_web::test]
async fn a_failing_container_reports_its_exit_code() {
    let Some(podman) = Podman::load() else { return };
    let _shared = PODMAN_LOCK.read().await;
    let (app, pool) = podman.start("echo boom >&2; exit 3").await;
    let job_id = unique("podman-fail");
    app.submit(&pool, json!({"jobId": job_id, "job": {}})).await;

    let run = app.wait_released(&job_id, "failed", WAIT).await;
    assert_eq!(run["schedulerState"], "failed");
    assert_eq!(
        run["error"],
        "the container exited with code 3; log tail: boom"
    );
    assert_eq!(run["failureCause"], "scheduler");
    assert!(run["result"].is_null(), "{run}");
    podman.wait_pod_gone(&pod_name(&job_id)).await;
}

#[actix_web::test]
async fn cancelling_a_running_container_kills_and_removes_it() {
    let Some(podman) = Podman::load() else { return };
    let _shared = PODMAN_LOCK.read().await;
    let (app, pool) = podman.start("sleep 600").await;
    let job_id = unique("podman-cancel");
    app.submit(&pool, json!({"jobId": job_id, "job": {}})).await;
    let run = app
        .wait_for(&job_id, WAIT, |run| run["schedulerState"] == "running")
        .await;
    assert_eq!(run["state"], "running");
    let container = run["externalId"].as_str().unwrap().to_owned();
    let (status, inspect) = podman.get(&format!("/containers/{container}/json")).await;
    assert_eq!(status, 200);
    assert_eq!(inspect["State"]["Running"], true);

    assert_eq!(app.cancel(&job_id).await.status, 202);
    app.wait_released(&job_id, "cancelled", WAIT).await;
    podman.wait_pod_gone(&pod_name(&job_id)).await;
    let (status, _) = podman.get(&format!("/containers/{container}/json")).await;
    assert_eq!(status, 404, "the container is still there");
}

#[actix_web::test]
async fn a_container_removed_behind_the_gateways_back_reads_as_lost() {
    let Some(podman) = Podman::load() else { return };
    let _shared = PODMAN_LOCK.read().await;
    // Polls far enough apart that the pod is gone, not caught dying, at the next one.
    let app = spawn_app().await;
    let pool = unique("podman");
    let mut manifest = podman.manifest("sleep 600");
    manifest["polling"] = json!({"intervalMs": 4000, "maxIntervalMs": 4000});
    app.register(&pool, manifest, json!({})).await;
    let job_id = unique("podman-lost");
    app.submit(&pool, json!({"jobId": job_id, "job": {}})).await;
    // `running` is committed by the poll that saw it (read here within milliseconds): the next
    // poll is seconds away. (Later polls that see nothing new are not written, so they cannot
    // be watched for.)
    app.wait_for(&job_id, WAIT, |run| run["schedulerState"] == "running")
        .await;

    let response = podman
        .client
        .delete(format!(
            "{}/v4.0.0/libpod/pods/{}?force=true",
            podman.env.get("PODMAN_URL"),
            pod_name(&job_id)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);

    let run = app
        .wait_for(&job_id, WAIT, |run| run["state"] == "failed")
        .await;
    assert_eq!(run["failureCause"], "lost");
}

#[actix_web::test]
async fn a_run_survives_a_restart_of_the_podman_service() {
    let Some(podman) = Podman::load() else { return };
    let _exclusive = PODMAN_LOCK.write().await;
    let (app, pool) = podman.start("sleep 6; exit 0").await;
    let job_id = unique("podman-restart");
    app.submit(&pool, json!({"jobId": job_id, "job": {}})).await;
    app.wait_for(&job_id, WAIT, |run| run["schedulerState"] == "running")
        .await;

    scheduler_script("podman", "restart").await;
    let run = app.run(&job_id).await;
    assert_eq!(
        run["state"], "running",
        "the job ended before the restart: {run}"
    );

    let run = app.wait_released(&job_id, "done", WAIT).await;
    assert_eq!(run["result"]["exitCode"], 0);
    podman.wait_pod_gone(&pod_name(&job_id)).await;
}

#[actix_web::test]
async fn a_play_kube_whose_answer_was_lost_is_found_by_its_pod_not_sent_again() {
    let Some(podman) = Podman::load() else { return };
    let _shared = PODMAN_LOCK.read().await;
    // Podman creates and starts the pod, but the gateway gets a 503 instead of Podman's answer.
    let proxy = LossyProxy::start(
        &podman.env.get("PODMAN_URL"),
        "POST",
        "/v4.0.0/libpod/play/kube",
        1,
    );
    let app = spawn_app().await;
    let pool = unique("podman");
    let mut manifest = podman.manifest("sleep 1; echo ok");
    manifest["baseUrl"] = json!(proxy.base_url);
    app.register(&pool, manifest, json!({})).await;
    let job_id = unique("podman-lost-answer");
    app.submit(&pool, json!({"jobId": job_id, "job": {}})).await;

    let run = app.wait_released(&job_id, "done", WAIT).await;
    assert_eq!(run["result"]["exitCode"], 0, "{run}");
    let lost = proxy.lost();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].0, 200, "Podman created the pod: {lost:?}");
    assert_eq!(proxy.matched(), 1, "play kube was sent once");
    let events = app.events(&job_id).await;
    assert!(
        events.iter().any(|e| e["detail"]
            .as_str()
            .is_some_and(|d| d.contains("re-attached"))),
        "{events:?}"
    );
    podman.wait_pod_gone(&pod_name(&job_id)).await;
    proxy.stop().await;
}

#[actix_web::test]
async fn a_pod_that_exists_already_answers_500_and_is_reattached_not_failed() {
    let Some(podman) = Podman::load() else { return };
    let _shared = PODMAN_LOCK.read().await;
    let (app, pool) = podman.start("sleep 1; echo ok").await;
    let job_id = unique("podman-exists");
    // The run's pod exists before the run is dispatched (an earlier attempt made it).
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name(&job_id)},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "job",
                "image": podman.env.get("PODMAN_IMAGE"),
                "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", "sleep 1; echo ok"]
            }]
        }
    });
    let created = podman
        .client
        .post(format!(
            "{}/v4.0.0/libpod/play/kube",
            podman.env.get("PODMAN_URL")
        ))
        .json(&pod)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 200);
    app.submit(&pool, json!({"jobId": job_id, "job": {}})).await;

    let run = app.wait_released(&job_id, "done", WAIT).await;
    assert_eq!(run["attempts"]["dispatch"], 1, "re-attached at once: {run}");
    assert_eq!(run["result"]["exitCode"], 0, "{run}");
    let events = app.events(&job_id).await;
    assert!(
        events.iter().any(|e| e["detail"]
            .as_str()
            .is_some_and(|d| d.contains("already had the job"))),
        "{events:?}"
    );
    podman.wait_pod_gone(&pod_name(&job_id)).await;
}
