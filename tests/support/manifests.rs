//! Manifests the tests register: the shipped ones, read from `manifests/`, and two written for
//! the test schedulers of [`super::stub`] and `tests/api/scheduler.rs`.

use serde_json::{Value, json};
use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A shipped manifest (`manifests/<name>`), parsed.
pub fn shipped_manifest(name: &str) -> Value {
    let path = repo_root().join("manifests").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    yaml_serde::from_str(&text).unwrap()
}

/// The shipped local manifest pointed at `base_url`, with fast polling.
pub fn local_manifest(base_url: &str) -> Value {
    let mut manifest = shipped_manifest("local.yaml");
    manifest["baseUrl"] = json!(base_url);
    manifest["polling"] =
        json!({"intervalMs": 50, "maxIntervalMs": 200, "maxConsecutiveErrors": 8});
    manifest
}

/// The secret bundle of [`scheduler_manifest`].
pub const SCHED_TOKEN: &str = "sched-secret-token-value-42";

/// A manifest for the scripted test scheduler: bearer auth, a body tree, a capture used by
/// poll, a status map, release by DELETE.
pub fn scheduler_manifest(base_url: &str) -> Value {
    json!({
        "apiVersion": "cattery/v1",
        "description": "the scripted test scheduler",
        "baseUrl": base_url,
        "auth": {"type": "bearer", "secretRef": {"key": "SCHED_TOKEN"}},
        "polling": {"intervalMs": 30, "maxIntervalMs": 100, "maxConsecutiveErrors": 3},
        "retry": {"maxAttempts": 3, "initialBackoffMs": 10, "maxBackoffMs": 50},
        "dispatch": {
            "request": {
                "method": "POST",
                "path": "/jobs",
                "headers": {"X-Job-Kind": "{{input.kind}}"},
                "body": {"name": "{{run.dispatchId}}", "spec": "{{input.job}}", "attempt": "{{run.attempt}}", "note": "id={{input.jobId}}"}
            },
            "expect": [201],
            "alreadyExists": [409],
            "capture": {"uid": "metadata.uid"}
        },
        "poll": {
            "request": {"method": "GET", "path": "/jobs/{{run.dispatchId}}", "query": {"uid": "{{capture.uid}}"}},
            "notFound": "lost",
            "map": {
                "state": "status",
                "statusMap": {"Complete": "done", "Failed": "failed", "Queued": "pending"},
                "error": "message",
                "result": "output",
                "progress": {"completed": "done", "total": "total"}
            }
        },
        "release": {
            "request": {"method": "DELETE", "path": "/jobs/{{run.dispatchId}}"},
            "expect": [200]
        }
    })
}

/// A minimal manifest: dispatch POST /jobs (201 with a uid), poll GET /jobs/{id} mapped by
/// `status`, release DELETE /jobs/{id}; bearer auth from SCHED_TOKEN.
pub fn simple_manifest(base_url: &str) -> Value {
    json!({
        "apiVersion": "cattery/v1",
        "baseUrl": base_url,
        "auth": {"type": "bearer", "secretRef": {"key": "SCHED_TOKEN"}},
        "polling": {"intervalMs": 30, "maxIntervalMs": 100, "maxConsecutiveErrors": 3},
        "retry": {"maxAttempts": 3, "initialBackoffMs": 10, "maxBackoffMs": 50},
        "dispatch": {
            "request": {"method": "POST", "path": "/jobs", "body": {"name": "{{run.dispatchId}}", "spec": "{{input.job}}"}},
            "expect": [201]
        },
        "poll": {
            "request": {"method": "GET", "path": "/jobs/{{run.dispatchId}}"},
            "map": {"state": "status", "statusMap": {"Complete": "done", "Failed": "failed"}, "error": "message"}
        },
        "release": {"request": {"method": "DELETE", "path": "/jobs/{{run.dispatchId}}"}, "expect": [200, 404]}
    })
}
