//! Waiting for something the gateway, a scheduler or a process does in the background: check
//! again and again until it holds, up to a limit. A limit only bounds a wait that would
//! otherwise hang; no test asserts how long anything took.

use std::time::{Duration, Instant};

/// How long a test waits for a run on a loopback scheduler to get where it expects: generous,
/// because the test machine may be busy with other tests.
pub const RUN_LIMIT: Duration = Duration::from_secs(20);

/// How often a run, a process or a recorded request is checked again: often enough that a test
/// goes on soon after what it waits for happened, seldom enough not to load a shared machine.
pub const CHECK_EVERY: Duration = Duration::from_millis(25);

/// How often a real scheduler is asked again: its API calls cost more than a loopback check.
pub const CHECK_SCHEDULER_EVERY: Duration = Duration::from_millis(100);

/// Checks `check` every `every` until it answers `Ok`; after `limit`, answers the last `Err`
/// (what was seen instead), for the caller to fail with.
pub async fn poll<T, E>(
    limit: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> Result<T, E>,
) -> Result<T, E> {
    let start = Instant::now();
    loop {
        match check().await {
            Ok(value) => return Ok(value),
            Err(seen) if start.elapsed() >= limit => return Err(seen),
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// Checks `check` every `every` until it answers `Ok`; fails the test after `limit`, saying
/// `what` was awaited and what the last check saw.
pub async fn until<T, E: std::fmt::Display>(
    what: &str,
    limit: Duration,
    every: Duration,
    check: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    match poll(limit, every, check).await {
        Ok(value) => value,
        Err(seen) => panic!("timed out waiting for {what}: {seen}"),
    }
}

/// Checks `check` on a real scheduler (every [`CHECK_SCHEDULER_EVERY`]) until it answers
/// `Some`; fails the test after `limit`, saying `what` was awaited.
pub async fn eventually<T>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    until(what, limit, CHECK_SCHEDULER_EVERY, async || {
        check().await.ok_or("not yet")
    })
    .await
}

/// Waits for a child process to exit on its own; fails the test after `limit`, saying `what`
/// was awaited.
pub async fn exit_of(
    what: &str,
    child: &mut std::process::Child,
    limit: Duration,
) -> std::process::ExitStatus {
    until(what, limit, CHECK_EVERY, async || {
        child.try_wait().unwrap().ok_or("it still runs")
    })
    .await
}
