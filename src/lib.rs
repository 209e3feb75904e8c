//! cattery: a runner-pool gateway.
//!
//! Layout (one module, one job):
//! - [`config`], [`telemetry`], [`app`], [`cli`], [`demo`]: settings, logs, wiring, commands;
//! - [`client`]: the `pools` and `runs` commands, a client of a running gateway;
//!   [`operator`]: `config check` and `backup`;
//! - [`domain`]: ids, states, the run and pool records, secrets;
//! - [`manifest`], [`template`]: the manifest model, compiled templates and JMESPath mapping;
//! - [`scheduler`]: the generic adapter (render → send → classify);
//! - [`lifecycle`], [`backoff`]: the pure run state machine and its timing;
//! - [`actors`]: Supervisor → PoolActor → RunActor;
//! - [`store`], [`crypto`], [`keys`]: persistence (SQLite, PostgreSQL), encryption at rest, key rotation;
//! - [`egress`], [`proxy`], [`redact`]: which addresses may be called and through which proxy;
//!   credentials cut out of scheduler text;
//! - [`service`]: the use cases; [`routes`], [`error`]: the HTTP API; [`bus`]: live changes;
//! - [`localpool`]: the built-in local scheduler;
//! - [`metrics`]: the Prometheus registry behind `GET /metrics`.

pub mod actors;
pub mod app;
pub mod backoff;
pub mod bus;
pub mod cli;
pub mod client;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod domain;
pub mod egress;
pub mod error;
pub mod keys;
pub mod lifecycle;
pub mod localpool;
pub mod manifest;
pub mod metrics;
pub mod operator;
pub mod proxy;
pub mod redact;
pub mod retention;
pub mod routes;
pub mod scheduler;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod template;
