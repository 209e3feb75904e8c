//! The built-in local pool (SPEC §6): a small scheduler that runs each job as a local process.
//!
//! cattery reaches it through the generic manifest adapter with `manifests/local.yaml`, exactly
//! like any other scheduler, so its HTTP API looks like one:
//!
//! | route               | answer |
//! |---------------------|--------|
//! | `GET /health`       | 200 `{"status":"ok","capabilities"}`, never behind the token |
//! | `POST /jobs`        | `{"jobId","kind"?,"job"?}` → 201 `{"id","state","capabilities"}`; a known id → 409 `{"error","id","state"}`; a bad body → 400; `max_jobs` running → 429 with `Retry-After: 1` |
//! | `GET /jobs/{id}`    | 200 `{"id","state","exitCode","progress","result","error","startedAt","finishedAt","heartbeatAt"}` (epoch ms); unknown → 404 |
//! | `DELETE /jobs/{id}` | kills the job's process group if it runs (state `cancelled`), forgets the job, 200 `{"id","state"}`; unknown → 404 |
//!
//! With a token configured every route but `/health` needs `Authorization: Bearer <token>`
//! (401 otherwise). Errors are `{"error": "..."}`.
//!
//! A job runs the configured command in its own process group, with the job object (`{}` when
//! null) and a newline on stdin, then stdin closed, and `CATTERY_JOB_ID` / `CATTERY_JOB_KIND` set
//! (the rest of cattery's own `CATTERY_*` environment is withheld). A stdout line that is a JSON
//! object with a `progress` object replaces the progress; the last one so far with a `result` key
//! is the result; lines over 1 MiB are skipped; any output bumps `heartbeatAt`. Exit 0 is `done`;
//! anything else is `failed`, with the last 2 KiB of stderr (or "exited with code N" / "killed by
//! signal N") as the error and the exit code (null after a signal). A program that cannot start
//! fails the job at once (POST still answers 201, with state `failed`). When the job's main
//! process ends, whatever it left in its process group is killed too. Finished jobs stay until
//! deleted, at most `max_finished` of them (the oldest is forgotten first). Request bodies are
//! limited to 72 MiB and `kind` to 1 KiB. `capabilities` lists the optional job-spec fields the
//! command parses (`localPool.capabilities`), declared like an executor harness declares them.
//!
//! Layout: `config` (settings), `server` (start/stop), `routes` (HTTP), `registry` (the job
//! table), `runner` (one process), `output` (reading its output), `sample_job` (the default
//! program).

mod config;
mod output;
mod registry;
mod routes;
mod runner;
pub mod sample_job;
mod server;
#[cfg(test)]
mod tests;

pub use config::{DEFAULT_MAX_FINISHED, DEFAULT_MAX_JOBS, LocalPoolConfig};
pub use sample_job::run_sample_job;
pub use server::{LocalPool, LocalPoolError};
