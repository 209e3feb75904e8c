//! `manifests/slurm.yaml` against Slurm 22.05 through slurmrestd (v0.0.38, JWT): real batch jobs
//! on this machine.

use crate::lossy::LossyProxy;
use crate::setup::{SLURM_LOCK, SchedulerEnv, fast, scheduler_script, spawn_app, unique};
use crate::support::app::TestApp;
use crate::support::manifests::shipped_manifest;
use crate::support::wait::eventually;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

struct Slurm {
    env: SchedulerEnv,
    client: reqwest::Client,
}

impl Slurm {
    fn load() -> Option<Slurm> {
        Some(Slurm {
            env: SchedulerEnv::load("slurm")?,
            client: cattery::scheduler::http::plain_client().unwrap(),
        })
    }

    /// The shipped manifest pointed at this slurmrestd, with `script` as the batch script.
    fn manifest(&self, script: &str) -> Value {
        let mut manifest = shipped_manifest("slurm.yaml");
        manifest["baseUrl"] = json!(self.env.get("SLURM_URL"));
        manifest["vars"]["partition"] = json!(self.env.get("SLURM_PARTITION"));
        manifest["vars"]["script"] = json!(script);
        fast(&mut manifest);
        manifest
    }

    fn secrets(&self) -> Value {
        json!({"SLURM_USER": self.env.get("SLURM_USER"), "SLURM_JWT": self.env.get("SLURM_JWT")})
    }

    /// The job record slurmrestd reports for `id`.
    async fn job(&self, id: &str) -> Value {
        let body: Value = self
            .client
            .get(format!(
                "{}/slurm/v0.0.38/job/{id}",
                self.env.get("SLURM_URL")
            ))
            .header("X-SLURM-USER-NAME", self.env.get("SLURM_USER"))
            .header("X-SLURM-USER-TOKEN", self.env.get("SLURM_JWT"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["jobs"][0].clone()
    }

    async fn start(&self, script: &str) -> (TestApp, String) {
        let app = spawn_app().await;
        let pool = unique("slurm");
        app.register(&pool, self.manifest(script), self.secrets())
            .await;
        (app, pool)
    }
}

/// A batch script that writes what the job received into `dir`.
fn recording_script(dir: &std::path::Path, tail: &str) -> String {
    format!(
        "#!/bin/sh\nprintf '%s' \"$CATTERY_JOB\" > {dir}/$CATTERY_JOB_ID.job\n\
         printf '%s' \"$CATTERY_JOB_KIND\" > {dir}/$CATTERY_JOB_ID.kind\n{tail}\n",
        dir = dir.display()
    )
}

#[actix_web::test]
async fn a_job_runs_with_its_body_and_completes() {
    let Some(slurm) = Slurm::load() else { return };
    let _shared = SLURM_LOCK.read().await;
    let dir = tempfile::tempdir().unwrap();
    let (app, pool) = slurm
        .start(&recording_script(dir.path(), "echo done"))
        .await;
    let job_id = unique("slurm-ok");
    let job = json!({"prompt": "it's \"quoted\" $(not run) `nor this` \\ back", "n": [1, 2.5, null], "ü": "✓"});
    app.submit(&pool, json!({"jobId": job_id, "kind": "agent", "job": job}))
        .await;

    let run = app.wait_released(&job_id, "done", WAIT).await;
    assert_eq!(run["schedulerState"], "COMPLETED");
    assert_eq!(run["result"]["exitCode"], 0);
    let slurm_id = run["result"]["slurmJobId"]
        .as_u64()
        .expect("the Slurm job id");
    assert_eq!(run["externalId"], slurm_id.to_string());
    assert!(run["error"].is_null(), "{run}");

    // The job received the job object byte for byte, and its kind.
    let received = std::fs::read_to_string(dir.path().join(format!("{job_id}.job"))).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&received).unwrap(), job);
    let kind = std::fs::read_to_string(dir.path().join(format!("{job_id}.kind"))).unwrap();
    assert_eq!(kind, "agent");

    // Slurm itself knows the job under the run's name, finished.
    let record = slurm.job(&slurm_id.to_string()).await;
    assert_eq!(record["name"], job_id.as_str());
    assert_eq!(record["job_state"], "COMPLETED");
    assert!(
        record["comment"].as_str().unwrap().contains(&pool),
        "{record}"
    );
}

#[actix_web::test]
async fn a_failing_job_reports_its_state_reason_and_exit_status() {
    let Some(slurm) = Slurm::load() else { return };
    let _shared = SLURM_LOCK.read().await;
    let (app, pool) = slurm.start("#!/bin/sh\necho boom >&2\nexit 3\n").await;
    let job_id = unique("slurm-fail");
    app.submit(&pool, json!({"jobId": job_id, "job": {}})).await;

    let run = app.wait_released(&job_id, "failed", WAIT).await;
    assert_eq!(run["schedulerState"], "FAILED");
    assert_eq!(run["failureCause"], "NonZeroExitCode");
    let error = run["error"].as_str().unwrap();
    // Slurm reports the wait status 768 (3 × 256); the manifest turns it back into the code.
    assert_eq!(error, "Slurm job FAILED (NonZeroExitCode): exit code 3");
    assert!(run["result"].is_null(), "{run}");
}

#[actix_web::test]
async fn cancelling_a_running_job_cancels_it_in_slurm() {
    let Some(slurm) = Slurm::load() else { return };
    let _shared = SLURM_LOCK.read().await;
    let (app, pool) = slurm.start("#!/bin/sh\nsleep 600\n").await;
    let job_id = unique("slurm-cancel");
    app.submit(&pool, json!({"jobId": job_id, "job": {}})).await;
    let run = app
        .wait_for(&job_id, WAIT, |run| run["schedulerState"] == "RUNNING")
        .await;
    assert_eq!(run["state"], "running");
    let slurm_id = run["externalId"].as_str().unwrap().to_owned();

    assert_eq!(app.cancel(&job_id).await.status, 202);
    let run = app.wait_released(&job_id, "cancelled", WAIT).await;
    assert_eq!(run["cancelRequested"], true);

    // The DELETE reached Slurm: the job is cancelled there, not left sleeping.
    eventually("Slurm to cancel the job", WAIT, || async {
        let record = slurm.job(&slurm_id).await;
        (record["job_state"] == "CANCELLED").then_some(())
    })
    .await;
}

#[actix_web::test]
async fn slurms_invalid_job_id_answer_reads_as_lost() {
    let Some(slurm) = Slurm::load() else { return };
    let _shared = SLURM_LOCK.read().await;
    let app = spawn_app().await;
    let pool = unique("slurm-lost");
    // The job really is submitted, but the captured id is one Slurm never issued, so every
    // poll gets slurmrestd's real 500 "Invalid job id specified" answer.
    let mut manifest = slurm.manifest("#!/bin/sh\ntrue\n");
    manifest["dispatch"]["capture"] = json!({"jobId": "`999999999`"});
    app.register(&pool, manifest, slurm.secrets()).await;
    let job_id = unique("slurm-lost");
    app.submit(&pool, json!({"jobId": job_id, "job": {}})).await;

    let run = app
        .wait_for(&job_id, WAIT, |run| run["state"] == "failed")
        .await;
    assert_eq!(
        run["failureCause"],
        "lost",
        "{run}\n{:#?}",
        app.events(&job_id).await
    );
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("Invalid job id specified"),
        "{run}"
    );
}

#[actix_web::test]
async fn a_run_survives_a_restart_of_slurmctld_and_slurmrestd() {
    let Some(slurm) = Slurm::load() else { return };
    let _exclusive = SLURM_LOCK.write().await;
    let dir = tempfile::tempdir().unwrap();
    let (app, pool) = slurm
        .start(&recording_script(dir.path(), "sleep 8\necho finished"))
        .await;
    let job_id = unique("slurm-restart");
    app.submit(&pool, json!({"jobId": job_id, "job": {"restart": true}}))
        .await;
    app.wait_for(&job_id, WAIT, |run| run["schedulerState"] == "RUNNING")
        .await;

    let before = std::fs::read_to_string("/run/slurmrestd.pid").unwrap_or_default();
    scheduler_script("slurm", "restart").await;
    let after = std::fs::read_to_string("/run/slurmrestd.pid").unwrap_or_default();
    assert_ne!(before.trim(), after.trim(), "slurmrestd was not restarted");
    let run = app.run(&job_id).await;
    assert_eq!(
        run["state"], "running",
        "the job ended before the restart: {run}"
    );

    let run = app.wait_released(&job_id, "done", WAIT).await;
    assert_eq!(run["schedulerState"], "COMPLETED");
    let received = std::fs::read_to_string(dir.path().join(format!("{job_id}.job"))).unwrap();
    assert_eq!(received, r#"{"restart":true}"#);
}

#[actix_web::test]
async fn a_submit_whose_answer_was_lost_is_found_by_name_not_submitted_again() {
    let Some(slurm) = Slurm::load() else { return };
    let _shared = SLURM_LOCK.read().await;
    // slurmrestd queues the job, but the gateway gets a 503 instead of its answer.
    let proxy = LossyProxy::start(
        &slurm.env.get("SLURM_URL"),
        "POST",
        "/slurm/v0.0.38/job/submit",
        1,
    );
    let app = spawn_app().await;
    let pool = unique("slurm");
    let mut manifest = slurm.manifest("#!/bin/sh\necho done\n");
    manifest["baseUrl"] = json!(proxy.base_url);
    app.register(&pool, manifest, slurm.secrets()).await;
    let job_id = unique("slurm-lost-answer");
    app.submit(&pool, json!({"jobId": job_id, "job": {}})).await;

    let run = app.wait_released(&job_id, "done", WAIT).await;
    let lost = proxy.lost();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].0, 200, "slurmrestd accepted the job: {lost:?}");
    let submitted: Value = serde_json::from_str(&lost[0].1).unwrap();
    assert_eq!(
        run["result"]["slurmJobId"], submitted["job_id"],
        "re-attached to the job the lost answer named: {run}"
    );
    assert_eq!(proxy.matched(), 1, "submitted once");
    // Slurm itself has exactly one job of that name.
    let jobs: Value = slurm
        .client
        .get(format!("{}/slurm/v0.0.38/jobs", slurm.env.get("SLURM_URL")))
        .header("X-SLURM-USER-NAME", slurm.env.get("SLURM_USER"))
        .header("X-SLURM-USER-TOKEN", slurm.env.get("SLURM_JWT"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let named = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["name"] == job_id.as_str())
        .count();
    assert_eq!(named, 1, "one Slurm job named {job_id}");
    proxy.stop().await;
}
