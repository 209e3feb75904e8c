//! Test fixtures: the SPEC §3 example manifest and helpers shared by the manifest tests.

use super::{Defaults, Manifest, ManifestError, RenderInput};
use crate::domain::secrets::SecretBundle;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The Kubernetes batch Job example of SPEC.md §3, verbatim.
pub(crate) const SPEC_EXAMPLE: &str = r#"
apiVersion: cattery/v1
description: Kubernetes Jobs in namespace "runners"
baseUrl: https://kube.example.internal:6443
tls: { caCertPem: "-----BEGIN CERTIFICATE-----…" }        # optional extra trust root
auth: { type: bearer, secretRef: { key: K8S_TOKEN } }
vars: { namespace: runners, image: registry.example/executor:1.4 }
limits: { maxInFlight: 200, maxQueued: 10000, requestsPerSecond: 50, timeoutMs: 10000 }
retry: { maxAttempts: 6, initialBackoffMs: 250, maxBackoffMs: 30000 }
polling: { intervalMs: 5000, maxIntervalMs: 30000, deadlineSeconds: 7200, maxConsecutiveErrors: 8 }
dispatch:
  request:
    method: POST
    path: /apis/batch/v1/namespaces/{{vars.namespace}}/jobs
    body:
      apiVersion: batch/v1
      kind: Job
      metadata: { name: "{{dns1123 run.dispatchId}}", labels: { app.kubernetes.io/managed-by: cattery } }
      spec:
        backoffLimit: 0
        template:
          spec:
            restartPolicy: Never
            containers:
              - name: job
                image: "{{vars.image}}"
                env: [ { name: JOB_SPEC, value: "{{json input.job}}" } ]
  expect: [201]
  alreadyExists: [409]            # the job exists: treat as dispatched, go on polling
  capture: { uid: metadata.uid }  # JMESPath over the response body, kept as capture.*
poll:
  request: { method: GET, path: "/apis/batch/v1/namespaces/{{vars.namespace}}/jobs/{{dns1123 run.dispatchId}}" }
  notFound: lost
  map:
    state: "status.conditions[?status=='True'].type | [0] || (status.active > `0` && 'Running') || 'Pending'"
    statusMap: { Complete: done, SuccessCriteriaMet: done, Failed: failed, Running: running, Pending: running }
    error: "status.conditions[?type=='Failed'].message | [0]"
release:
  request: { method: DELETE, path: "/apis/batch/v1/namespaces/{{vars.namespace}}/jobs/{{dns1123 run.dispatchId}}", query: { propagationPolicy: Background } }
  expect: [200, 202, 404]
"#;

/// A minimal valid manifest document, to be modified by a test.
pub(crate) fn minimal() -> Value {
    json!({
        "apiVersion": "cattery/v1",
        "baseUrl": "https://sched.example/api",
        "dispatch": {"request": {"method": "POST", "path": "/jobs", "body": {"id": "{{input.jobId}}"}}},
        "poll": {
            "request": {"method": "GET", "path": "/jobs/{{input.jobId}}"},
            "map": {"state": "status"}
        },
        "release": {"request": {"method": "DELETE", "path": "/jobs/{{input.jobId}}"}}
    })
}

/// Validates a document with the default defaults.
pub(crate) fn build(doc: &Value) -> Result<Manifest, ManifestError> {
    Manifest::from_value(doc, &Defaults::default())
}

/// The problem paths of a document that must not validate.
pub(crate) fn problem_paths(doc: &Value) -> Vec<String> {
    match build(doc) {
        Ok(_) => panic!("the manifest validated: {doc}"),
        Err(err) => err.problems.into_iter().map(|p| p.path).collect(),
    }
}

/// The problem messages of a document that must not validate.
pub(crate) fn problem_messages(doc: &Value) -> Vec<String> {
    match build(doc) {
        Ok(_) => panic!("the manifest validated: {doc}"),
        Err(err) => err.problems.into_iter().map(|p| p.message).collect(),
    }
}

/// A run input for job `job_id` with the given job body.
pub(crate) fn input(job_id: &str, job: Value) -> RenderInput {
    RenderInput {
        job_id: job_id.to_owned(),
        kind: Some("agent".to_owned()),
        job,
        labels: Map::new(),
        dispatch_id: job_id.to_owned(),
        attempt: 1,
        captures: Map::new(),
        pool_name: "k8s".to_owned(),
    }
}

/// A secret bundle from pairs.
pub(crate) fn secrets(pairs: &[(&str, &str)]) -> SecretBundle {
    SecretBundle::from_map(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    )
}
