//! The shipped manifests driven end to end through the real gateway against real schedulers on
//! this machine: Slurm (slurmrestd), Podman's REST API and a Kubernetes API server with its job
//! controller, started by `.ci/start-schedulers.sh`, plus Nomad and the executor-harness protocol
//! against test schedulers that follow those APIs' documentation (they cannot run here).
//!
//! Each real scheduler's connection settings come from `$CATTERY_SCHEDULERS_DIR/<name>.env`
//! (default `/tmp/cattery-schedulers`). A scheduler without settings is skipped with a printed
//! reason, unless `CI` is set: then it is a failure.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test on any setup error"
)]

#[expect(dead_code, reason = "the shared test support; this binary uses a part")]
#[path = "../support/mod.rs"]
mod support;

mod lossy;
mod setup;

mod harness;
mod kube;
mod nomad;
mod podman;
mod slurm;
