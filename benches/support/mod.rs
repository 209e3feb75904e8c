//! The lifecycle benchmark's parts: the fast scheduler, the gateway process, and what is read
//! from `/proc`.

pub mod gateway;
pub mod probe;
pub mod scheduler;
