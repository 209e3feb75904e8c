//! Running one job as a local process: started in its own process group, fed its job on stdin,
//! followed through its output, settled into a final state, and killed group-wide on cancel.

use super::output::{LineEffect, LineSplitter, MAX_LINE_BYTES, StderrTail, interpret_line};
use super::registry::{Job, JobId, JobState, Registry};
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long the output readers may take to reach the end of their pipes once the process group
/// is gone; a descendant that left the group could otherwise hold a pipe open for ever.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// The size of one read from a job's stdout or stderr.
const READ_CHUNK_BYTES: usize = 8192;
/// Environment variables with this prefix are cattery's own settings (master key, admin token,
/// database URL…) and are not passed on to jobs.
const CATTERY_ENV_PREFIX: &str = "CATTERY_";

/// Everything needed to run one admitted job.
#[derive(Debug)]
pub(crate) struct Launch {
    pub(crate) registry: Arc<Registry>,
    pub(crate) job: Arc<Job>,
    pub(crate) command: Arc<[String]>,
    pub(crate) kind: Option<String>,
    /// The bytes written to the job's stdin.
    pub(crate) input: Vec<u8>,
}

/// Starts the task that runs and supervises the job on `runtime`. The returned receiver fires
/// once the process was started or failed to start, so the job's state is then meaningful.
pub(crate) fn launch(runtime: &Handle, launch: Launch) -> oneshot::Receiver<()> {
    let (started_tx, started_rx) = oneshot::channel();
    runtime.spawn(supervise(launch, started_tx));
    started_rx
}

/// Epoch milliseconds now.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn supervise(launch: Launch, started: oneshot::Sender<()>) {
    let Launch {
        registry,
        job,
        command,
        kind,
        input,
    } = launch;
    if job.is_cancel_requested() {
        settle(
            &registry,
            &job,
            JobState::Cancelled,
            None,
            "cancelled".into(),
        );
        let _ = started.send(());
        return;
    }
    let mut child = match build_command(&command, &job.id, kind.as_deref()).spawn() {
        Ok(child) => child,
        Err(error) => {
            let program = command.first().map(String::as_str).unwrap_or_default();
            tracing::warn!(job.id = %job.id, %error, "local job {} could not be started", job.id);
            let message = format!("cannot start {program:?}: {error}");
            settle(&registry, &job, JobState::Failed, None, message);
            let _ = started.send(());
            return;
        }
    };
    // The child leads its own process group, so its pid is the group id.
    let pgid = child.id();
    tracing::info!(job.id = %job.id, pid = pgid, "local job {} started", job.id);
    let _ = started.send(());

    let stdin = child
        .stdin
        .take()
        .map(|pipe| tokio::spawn(feed_stdin(pipe, input)));
    let stdout = child
        .stdout
        .take()
        .map(|pipe| tokio::spawn(follow_stdout(pipe, Arc::clone(&job))));
    let stderr = child
        .stderr
        .take()
        .map(|pipe| tokio::spawn(follow_stderr(pipe, Arc::clone(&job))));

    let mut cancel = job.cancel_requested();
    let cancel_requested = async move { cancel.wait_for(|requested| *requested).await.is_ok() };
    let (exit, cancelled) = tokio::select! {
        exit = child.wait() => (exit, false),
        true = cancel_requested => {
            kill_job(pgid, &mut child).await;
            (child.wait().await, true)
        }
    };
    // Whatever the job left running in its group does not outlive it.
    if let Some(pgid) = pgid {
        kill_process_group(pgid).await;
    }
    if let Some(task) = stdin {
        task.abort();
    }
    let (tail, ()) = tokio::join!(
        async {
            match stderr {
                Some(task) => drain(task).await.unwrap_or_default(),
                None => StderrTail::default(),
            }
        },
        async {
            if let Some(task) = stdout {
                drain(task).await;
            }
        }
    );

    let (state, exit_code, error) = outcome(&exit, cancelled, &tail);
    tracing::info!(
        job.id = %job.id,
        state = ?state,
        exit_code,
        "local job {} finished: {state:?}",
        job.id
    );
    settle(&registry, &job, state, exit_code, error.unwrap_or_default());
}

/// Records the final state and frees the job's running slot. An empty `error` means none.
fn settle(registry: &Registry, job: &Job, state: JobState, exit_code: Option<i32>, error: String) {
    let now = now_ms();
    job.update(|status| {
        status.state = state;
        status.exit_code = exit_code;
        status.error = (!error.is_empty()).then_some(error);
        status.finished_at = Some(now);
    });
    registry.finish(job);
    job.mark_finished();
}

/// The final state, exit code and error of a process that ended with `exit`.
fn outcome(
    exit: &io::Result<ExitStatus>,
    cancelled: bool,
    tail: &StderrTail,
) -> (JobState, Option<i32>, Option<String>) {
    let status = match exit {
        Err(error) => {
            let error = format!("cannot wait for the job's process: {error}");
            let state = if cancelled {
                JobState::Cancelled
            } else {
                JobState::Failed
            };
            return (state, None, Some(error));
        }
        Ok(status) => *status,
    };
    let code = status.code();
    if cancelled {
        return (JobState::Cancelled, code, Some("cancelled".into()));
    }
    if status.success() {
        return (JobState::Done, code, None);
    }
    let mut error = tail.text();
    if error.is_empty() {
        error = match (code, status.signal()) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None) => "killed by signal".into(),
        };
    }
    (JobState::Failed, code, Some(error))
}

fn build_command(command: &[String], id: &JobId, kind: Option<&str>) -> Command {
    let (program, args) = match command.split_first() {
        Some((program, args)) => (program.as_str(), args),
        // Configuration validation refuses an empty command; spawning "" fails readably.
        None => ("", &[][..]),
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with(CATTERY_ENV_PREFIX) {
            cmd.env_remove(key);
        }
    }
    cmd.env("CATTERY_JOB_ID", id.as_str())
        .env("CATTERY_JOB_KIND", kind.unwrap_or_default());
    cmd
}

async fn feed_stdin(mut stdin: ChildStdin, input: Vec<u8>) {
    // A job that does not read its input closes the pipe early; that is its business.
    if stdin.write_all(&input).await.is_ok() {
        let _ = stdin.shutdown().await;
    }
}

async fn follow_stdout(mut pipe: impl AsyncRead + Unpin, job: Arc<Job>) {
    let mut splitter = LineSplitter::new(MAX_LINE_BYTES);
    let mut chunk = vec![0; READ_CHUNK_BYTES];
    loop {
        let read = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let mut effects = Vec::new();
        splitter.push(chunk.get(..read).unwrap_or_default(), |line| {
            collect_effect(&mut effects, line);
        });
        apply(&job, effects);
    }
    let mut effects = Vec::new();
    splitter.finish(|line| collect_effect(&mut effects, line));
    if !effects.is_empty() {
        apply(&job, effects);
    }
}

fn collect_effect(effects: &mut Vec<LineEffect>, line: &[u8]) {
    let effect = interpret_line(line);
    if effect.progress.is_some() || effect.result.is_some() {
        effects.push(effect);
    }
}

/// Bumps the heartbeat and applies the effects of the lines just read, in order.
fn apply(job: &Job, effects: Vec<LineEffect>) {
    let now = now_ms();
    job.update(|status| {
        status.heartbeat_at = status.heartbeat_at.max(now);
        for effect in effects {
            if let Some(progress) = effect.progress {
                status.progress = Some(progress);
            }
            if let Some(result) = effect.result {
                status.result = Some(result);
            }
        }
    });
}

async fn follow_stderr(mut pipe: impl AsyncRead + Unpin, job: Arc<Job>) -> StderrTail {
    let mut tail = StderrTail::default();
    let mut chunk = vec![0; READ_CHUNK_BYTES];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                tail.push(chunk.get(..read).unwrap_or_default());
                apply(&job, Vec::new());
            }
        }
    }
    tail
}

/// Waits a little for a reader to finish, and gives up on it after [`DRAIN_TIMEOUT`].
async fn drain<T>(mut task: JoinHandle<T>) -> Option<T> {
    match tokio::time::timeout(DRAIN_TIMEOUT, &mut task).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(_)) => None,
        Err(_) => {
            task.abort();
            None
        }
    }
}

/// Kills the job's whole process group, or at least its own process.
async fn kill_job(pgid: Option<u32>, child: &mut Child) {
    let group_killed = match pgid {
        Some(pgid) => kill_process_group(pgid).await,
        None => false,
    };
    if !group_killed {
        // The process may already be gone; then there is nothing left to kill.
        let _ = child.start_kill();
    }
}

/// Sends SIGKILL to every process in group `pgid` with the system `kill` command (the crate
/// forbids `unsafe`, so no direct `kill(2)`); returns whether that worked.
pub(crate) async fn kill_process_group(pgid: u32) -> bool {
    // Group 0 is our own group, and 1 is init's: never targets.
    if pgid <= 1 {
        return false;
    }
    let status = Command::new("kill")
        .arg("-KILL")
        .arg("--")
        .arg(format!("-{pgid}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await;
    match status {
        Ok(status) => status.success(),
        Err(error) => {
            tracing::debug!(%error, "cannot run `kill` for process group {pgid}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit_code(code: i32) -> io::Result<ExitStatus> {
        // A wait status keeps the exit code in its second byte.
        Ok(ExitStatus::from_raw(code << 8))
    }

    #[test]
    fn exit_zero_is_done_without_error() {
        let outcome = outcome(&exit_code(0), false, &StderrTail::default());
        assert_eq!(outcome, (JobState::Done, Some(0), None));
    }

    #[test]
    fn a_non_zero_exit_fails_with_the_stderr_tail() {
        let mut tail = StderrTail::default();
        tail.push(b"something broke\n");
        let outcome = outcome(&exit_code(3), false, &tail);
        assert_eq!(
            outcome,
            (JobState::Failed, Some(3), Some("something broke".into()))
        );
    }

    #[test]
    fn a_silent_failure_names_the_exit_code_or_signal() {
        let silent = StderrTail::default();
        assert_eq!(
            outcome(&exit_code(4), false, &silent).2.as_deref(),
            Some("exited with code 4")
        );
        let killed = Ok(ExitStatus::from_raw(9));
        assert_eq!(
            outcome(&killed, false, &silent),
            (JobState::Failed, None, Some("killed by signal 9".into()))
        );
    }

    #[test]
    fn a_cancelled_job_is_cancelled_whatever_its_exit() {
        let killed = Ok(ExitStatus::from_raw(9));
        assert_eq!(
            outcome(&killed, true, &StderrTail::default()),
            (JobState::Cancelled, None, Some("cancelled".into()))
        );
    }
}
