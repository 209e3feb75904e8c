//! The lifecycle benchmark's parts: the shared test support (the test database and the real
//! gateway process, as the tests start them), the fast scheduler, and what is read from
//! `/proc`.

pub mod probe;
pub mod scheduler;
#[expect(
    dead_code,
    reason = "the shared test support; the benchmark uses a part"
)]
#[path = "../../tests/support/mod.rs"]
pub mod shared;
