//! `manifests/kubernetes-job.yaml` against a real kube-apiserver v1.20 with its job controller
//! and garbage collector. There is no kubelet, so the tests play it: they set the phase of the
//! Pod the job controller created, and the real controller moves the Job.

use crate::setup::{KUBE_LOCK, SchedulerEnv, fast, scheduler_script, spawn_app, unique};
use crate::support::app::TestApp;
use crate::support::manifests::shipped_manifest;
use crate::support::wait::eventually;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

struct Kube {
    url: String,
    token: String,
    namespace: String,
    ca_pem: String,
    client: reqwest::Client,
}

impl Kube {
    fn load() -> Option<Kube> {
        let env = SchedulerEnv::load("kube")?;
        cattery::scheduler::http::install_crypto_provider();
        let ca_pem = std::fs::read_to_string(env.get("KUBE_CA_FILE")).unwrap();
        // The client trusts the cluster CA only: the API server's certificate is verified.
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
            .build()
            .unwrap();
        Some(Kube {
            url: env.get("KUBE_URL"),
            token: env.get("KUBE_TOKEN"),
            namespace: env.get("KUBE_NAMESPACE"),
            ca_pem,
            client,
        })
    }

    /// The shipped manifest pointed at this API server, trusting its CA.
    fn manifest(&self) -> Value {
        let mut manifest = shipped_manifest("kubernetes-job.yaml");
        manifest["baseUrl"] = json!(self.url);
        manifest["tls"] = json!({"caCertPem": self.ca_pem});
        manifest["vars"]["namespace"] = json!(self.namespace);
        manifest["vars"]["image"] = json!("localhost/busybox:ci");
        manifest["vars"]["command"] = json!(["/bin/sh", "-c", "echo hi"]);
        fast(&mut manifest);
        manifest
    }

    async fn start(&self) -> (TestApp, String) {
        let app = spawn_app().await;
        let pool = unique("kube");
        app.register(&pool, self.manifest(), json!({"K8S_TOKEN": self.token}))
            .await;
        (app, pool)
    }

    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, Value)>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some((content_type, body)) = body {
            request = request
                .header("content-type", content_type)
                .body(serde_json::to_vec(&body).unwrap());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    fn jobs_path(&self) -> String {
        format!("/apis/batch/v1/namespaces/{}/jobs", self.namespace)
    }

    async fn job(&self, name: &str) -> (u16, Value) {
        self.request(
            reqwest::Method::GET,
            &format!("{}/{name}", self.jobs_path()),
            None,
        )
        .await
    }

    async fn pods_of(&self, job_name: &str) -> Vec<Value> {
        let (status, list) = self
            .request(
                reqwest::Method::GET,
                &format!(
                    "/api/v1/namespaces/{}/pods?labelSelector=job-name%3D{job_name}",
                    self.namespace
                ),
                None,
            )
            .await;
        assert_eq!(status, 200, "{list}");
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// Plays the kubelet: waits for the Job's Pod and sets its status to `phase`, with the
    /// container running (phase Running) or terminated with `exit_code`.
    async fn kubelet(&self, job_name: &str, phase: &str, exit_code: i32) {
        let pod = eventually("the job controller to create the Pod", WAIT, || async {
            self.pods_of(job_name).await.into_iter().next()
        })
        .await;
        let pod_name = pod["metadata"]["name"].as_str().unwrap().to_owned();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let state = if phase == "Running" {
            json!({"running": {"startedAt": now}})
        } else {
            json!({"terminated": {
                "exitCode": exit_code,
                "reason": if exit_code == 0 { "Completed" } else { "Error" },
                "startedAt": now, "finishedAt": now}})
        };
        let patch = json!({"status": {
            "phase": phase,
            "startTime": now,
            "containerStatuses": [{
                "name": "job", "image": "localhost/busybox:ci", "imageID": "",
                "ready": phase == "Running", "restartCount": 0, "state": state}]}});
        let (status, body) = self
            .request(
                reqwest::Method::PATCH,
                &format!(
                    "/api/v1/namespaces/{}/pods/{pod_name}/status",
                    self.namespace
                ),
                Some(("application/merge-patch+json", patch)),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// Waits until the Job and its Pods are gone (deleted with background propagation).
    async fn wait_deleted(&self, name: &str) {
        eventually("the Job to be deleted", WAIT, || async {
            (self.job(name).await.0 == 404).then_some(())
        })
        .await;
        eventually(
            "the garbage collector to delete the Job's Pods",
            WAIT,
            || async { self.pods_of(name).await.is_empty().then_some(()) },
        )
        .await;
    }
}

/// `dns1123` as manifests/README.md documents it, to find the Job a run created.
fn dns1123(text: &str) -> String {
    let cleaned: String = text
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_matches('-').to_owned();
    if cleaned == text && text.len() <= 63 {
        return cleaned;
    }
    let hash = &cattery::crypto::sha256_hex(text.as_bytes())[..8];
    let cut: String = cleaned.chars().take(54).collect();
    let cut = cut.trim_end_matches('-');
    if cut.is_empty() {
        hash.to_owned()
    } else {
        format!("{cut}-{hash}")
    }
}

/// A job id that is not a DNS-1123 label, so that the Job's name goes through `dns1123`.
fn awkward_job_id(prefix: &str) -> String {
    format!("{}_Run.{}", prefix, unique("x").trim_start_matches("x-"))
}

#[actix_web::test]
async fn a_job_completes_when_its_pod_succeeds() {
    let Some(kube) = Kube::load() else { return };
    let _shared = KUBE_LOCK.read().await;
    let (app, pool) = kube.start().await;
    let job_id = awkward_job_id("Kube");
    let job = json!({"prompt": "it's \"quoted\"\nline two", "n": [1, null]});
    app.submit(&pool, json!({"jobId": job_id, "kind": "agent", "job": job}))
        .await;

    let name = dns1123(&job_id);
    assert!(name.len() <= 63 && name != job_id.to_lowercase(), "{name}");
    let created = eventually("the Job to be created", WAIT, || async {
        let (status, job) = kube.job(&name).await;
        (status == 200).then_some(job)
    })
    .await;
    assert_eq!(
        created["metadata"]["annotations"]["cattery.dev/job-id"],
        job_id.as_str()
    );
    assert_eq!(
        created["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "cattery"
    );
    assert_eq!(created["spec"]["backoffLimit"], 0);
    let env = &created["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(env[0]["name"], "CATTERY_JOB");
    assert_eq!(
        serde_json::from_str::<Value>(env[0]["value"].as_str().unwrap()).unwrap(),
        job
    );
    assert_eq!(env[1]["value"], job_id.as_str());
    assert_eq!(env[2]["value"], "agent");

    // The Pod exists but has not finished: the Job has an active Pod.
    let run = app
        .wait_for(&job_id, WAIT, |run| run["schedulerState"] == "Running")
        .await;
    assert_eq!(run["state"], "running");
    assert_eq!(run["externalId"], created["metadata"]["uid"]);
    kube.kubelet(&name, "Running", 0).await;
    kube.kubelet(&name, "Succeeded", 0).await;

    let run = app.wait_released(&job_id, "done", WAIT).await;
    assert_eq!(run["schedulerState"], "Complete");
    assert_eq!(run["result"]["name"], name.as_str());
    assert_eq!(run["result"]["succeeded"], 1);
    assert!(run["result"]["completionTime"].is_string(), "{run}");
    kube.wait_deleted(&name).await;
}

#[actix_web::test]
async fn a_job_fails_when_its_pod_fails() {
    let Some(kube) = Kube::load() else { return };
    let _shared = KUBE_LOCK.read().await;
    let (app, pool) = kube.start().await;
    let job_id = unique("kube-fail");
    app.submit(&pool, json!({"jobId": job_id, "job": {}})).await;
    let name = dns1123(&job_id);
    assert_eq!(name, job_id, "a valid label is kept as it is");
    kube.kubelet(&name, "Failed", 3).await;

    let run = app.wait_released(&job_id, "failed", WAIT).await;
    assert_eq!(run["schedulerState"], "Failed");
    assert_eq!(run["failureCause"], "BackoffLimitExceeded");
    assert_eq!(
        run["error"],
        "BackoffLimitExceeded: Job has reached the specified backoff limit"
    );
    assert!(run["result"].is_null(), "{run}");
    kube.wait_deleted(&name).await;
}

#[actix_web::test]
async fn an_existing_job_of_the_same_name_is_adopted_on_409() {
    let Some(kube) = Kube::load() else { return };
    let _shared = KUBE_LOCK.read().await;
    let (app, pool) = kube.start().await;
    let job_id = unique("kube-exists");
    // The Job is there already, as after a crash between the create and its commit.
    let (status, existing) = kube
        .request(
            reqwest::Method::POST,
            &kube.jobs_path(),
            Some((
                "application/json",
                json!({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": job_id},
                "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "job", "image": "localhost/busybox:ci"}]}}}}),
            )),
        )
        .await;
    assert_eq!(status, 201, "{existing}");

    app.submit(&pool, json!({"jobId": job_id, "job": {}})).await;
    let run = app
        .wait_for(&job_id, WAIT, |run| run["externalId"].is_string())
        .await;
    assert_eq!(
        run["externalId"], existing["metadata"]["uid"],
        "the same Job"
    );
    kube.kubelet(&job_id, "Succeeded", 0).await;
    let run = app.wait_released(&job_id, "done", WAIT).await;
    assert_eq!(run["attempts"]["dispatch"], 1);
    kube.wait_deleted(&job_id).await;
}

#[actix_web::test]
async fn cancelling_deletes_the_job_and_its_pods() {
    let Some(kube) = Kube::load() else { return };
    let _shared = KUBE_LOCK.read().await;
    let (app, pool) = kube.start().await;
    let job_id = unique("kube-cancel");
    app.submit(&pool, json!({"jobId": job_id, "job": {}})).await;
    app.wait_for(&job_id, WAIT, |run| run["schedulerState"] == "Running")
        .await;
    kube.kubelet(&job_id, "Running", 0).await;
    assert_eq!(kube.pods_of(&job_id).await.len(), 1);

    assert_eq!(app.cancel(&job_id).await.status, 202);
    let run = app.wait_released(&job_id, "cancelled", WAIT).await;
    assert_eq!(run["cancelRequested"], true);
    kube.wait_deleted(&job_id).await;
}

#[actix_web::test]
async fn a_job_deleted_behind_the_gateways_back_reads_as_lost() {
    let Some(kube) = Kube::load() else { return };
    let _shared = KUBE_LOCK.read().await;
    let (app, pool) = kube.start().await;
    let job_id = unique("kube-lost");
    app.submit(&pool, json!({"jobId": job_id, "job": {}})).await;
    app.wait_for(&job_id, WAIT, |run| run["schedulerState"] == "Running")
        .await;
    let (status, body) = kube
        .request(
            reqwest::Method::DELETE,
            &format!("{}/{job_id}?propagationPolicy=Background", kube.jobs_path()),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let run = app
        .wait_for(&job_id, WAIT, |run| run["state"] == "failed")
        .await;
    assert_eq!(run["failureCause"], "lost");
}

#[actix_web::test]
async fn a_run_survives_a_restart_of_the_api_server() {
    let Some(kube) = Kube::load() else { return };
    let _exclusive = KUBE_LOCK.write().await;
    let (app, pool) = kube.start().await;
    let job_id = unique("kube-restart");
    app.submit(&pool, json!({"jobId": job_id, "job": {}})).await;
    app.wait_for(&job_id, WAIT, |run| run["schedulerState"] == "Running")
        .await;

    scheduler_script("kube", "restart").await;
    let run = app.run(&job_id).await;
    assert_eq!(run["state"], "running", "{run}");

    kube.kubelet(&job_id, "Succeeded", 0).await;
    let run = app.wait_released(&job_id, "done", WAIT).await;
    assert_eq!(run["schedulerState"], "Complete");
    kube.wait_deleted(&job_id).await;
}
