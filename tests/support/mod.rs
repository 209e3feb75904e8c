//! The test harness every test target (`tests/api`, `tests/leaks`, `tests/schedulers`) and the
//! lifecycle benchmark share, each including it with `#[path = "…/support/mod.rs"] mod support;`:
//! one way to make a test database, start the gateway (in process or as the real binary), call
//! its API, stand up a scheduler on loopback and wait for something to happen.
//!
//! - [`database`]: a throw-away SQLite file or PostgreSQL database, and reading it raw;
//! - [`app`]: the application in process, on test settings;
//! - [`gateway`]: the real binary as a process (`cattery serve`, `cattery local-pool`): spawn,
//!   wait until ready, `kill -9`, restart;
//! - [`client`]: the gateway's API, every answer read whole as status, headers and body;
//! - [`exposition`]: a strict parser of `GET /metrics` answers (Prometheus text, OpenMetrics);
//! - [`stub`]: recording loopback servers that play a scheduler;
//! - [`manifests`]: the shipped manifests and the test schedulers' ones;
//! - [`proxy`]: a forward HTTP proxy on loopback that records what it is asked for;
//! - [`wait`]: checking again until something holds, up to a limit;
//! - [`browser`]: headless Chromium under chromedriver, for the dashboard.

pub mod app;
pub mod browser;
pub mod client;
pub mod database;
pub mod exposition;
pub mod gateway;
pub mod manifests;
pub mod proxy;
pub mod stub;
pub mod wait;

/// The operator's token: the admin token of every gateway the tests start.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// A token of the reader role, configured on the application in process.
pub const READER_TOKEN: &str = "test-reader-token-0123456789";
/// A token of the dispatcher role, configured on the application in process.
pub const DISPATCHER_TOKEN: &str = "test-dispatcher-token-0123456789";
/// A fixed test master key (base64 of 32 bytes).
pub const MASTER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
