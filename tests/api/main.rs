//! The integration tests: the real application over real HTTP on loopback, a real database
//! (SQLite, or PostgreSQL when `TEST_DATABASE_URL` is set), and real schedulers on loopback
//! (the local pool as a separate `cattery local-pool` process, and a scripted test scheduler).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test on any setup error"
)]

#[expect(
    dead_code,
    reason = "the shared test support; this binary uses most of it"
)]
#[path = "../support/mod.rs"]
mod support;

mod catfactory_scheduler;
mod faulty;
mod scheduler;

mod auth;
mod catfactory;
mod catfactory_round2;
mod cli;
mod client_cli;
mod crash;
mod dashboard;
mod deadlines;
mod dispatch_lookup;
mod egress;
mod events;
mod facade;
mod fair_share;
mod faults;
mod metrics;
mod openapi;
mod ops;
mod packaging;
mod persistence;
mod pools;
mod probe;
mod proxy;
mod run_integrity;
mod runs_admission;
mod runs_history;
mod runs_idempotency;
mod runs_local;
mod runs_scheduler;
mod security;
mod security_props;
