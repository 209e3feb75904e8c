//! The local pool's settings: which program runs a job, the optional token and the job limits.

use std::fmt;

/// The default for [`LocalPoolConfig::max_jobs`]: how many job processes may run at once.
pub const DEFAULT_MAX_JOBS: usize = 64;
/// The default for [`LocalPoolConfig::max_finished`]: how many finished jobs are remembered
/// until they are released (deleted); beyond it the oldest finished job is forgotten.
pub const DEFAULT_MAX_FINISHED: usize = 10_000;

/// How the local pool runs jobs and who may call it.
#[derive(Clone, PartialEq, Eq)]
pub struct LocalPoolConfig {
    /// The program run for every job, in argv form: the first element is the program (looked up
    /// on `PATH` when it has no slash), the rest its arguments. The job JSON arrives on stdin.
    pub command: Vec<String>,
    /// When set, every route but `/health` requires `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// How many job processes may run at once; a dispatch beyond it answers 429.
    pub max_jobs: usize,
    /// How many finished, not yet released jobs are kept; the oldest finished job is forgotten
    /// first.
    pub max_finished: usize,
    /// The optional job-spec fields the command parses (`mcpServers`, `skills`, …), declared
    /// in `POST /jobs` answers and on `/health` as an executor harness declares them.
    pub capabilities: Vec<String>,
}

impl LocalPoolConfig {
    /// The default command: this very executable with the `sample-job` subcommand.
    pub fn sample_job_command() -> Vec<String> {
        let program = std::env::current_exe()
            .ok()
            .and_then(|path| path.into_os_string().into_string().ok())
            .unwrap_or_else(|| "cattery".to_owned());
        vec![program, "sample-job".to_owned()]
    }

    /// Checks what the server relies on: a command with a non-empty program and room for at
    /// least one running and one finished job.
    pub(crate) fn problems(&self) -> Option<String> {
        match self.command.first() {
            None => return Some("localPool.command is empty: give the program to run".into()),
            Some(program) if program.is_empty() => {
                return Some("localPool.command starts with an empty program name".into());
            }
            Some(_) => {}
        }
        if self.max_jobs == 0 {
            return Some("the local pool's max_jobs must be at least 1".into());
        }
        if self.max_finished == 0 {
            return Some("the local pool's max_finished must be at least 1".into());
        }
        if self.token.as_deref() == Some("") {
            return Some("the local pool's token is empty: leave it unset or give a value".into());
        }
        if let Some(bad) = self.capabilities.iter().find(|name| {
            name.is_empty()
                || name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        }) {
            return Some(format!(
                "localPool.capabilities: {bad:?} is not a capability name (1-64 letters, digits, _ or -)"
            ));
        }
        None
    }
}

impl Default for LocalPoolConfig {
    fn default() -> Self {
        LocalPoolConfig {
            command: Self::sample_job_command(),
            token: None,
            max_jobs: DEFAULT_MAX_JOBS,
            max_finished: DEFAULT_MAX_FINISHED,
            capabilities: Vec::new(),
        }
    }
}

impl fmt::Debug for LocalPoolConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalPoolConfig")
            .field("command", &self.command)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("max_jobs", &self.max_jobs)
            .field("max_finished", &self.max_finished)
            .field("capabilities", &self.capabilities)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_runs_this_executable_as_the_sample_job() {
        let config = LocalPoolConfig::default();
        assert_eq!(config.command.len(), 2);
        assert_eq!(config.command[1], "sample-job");
        assert_eq!(config.max_jobs, 64);
        assert_eq!(config.max_finished, 10_000);
        assert!(config.problems().is_none());
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let config = LocalPoolConfig {
            token: Some("hunter2".into()),
            ..LocalPoolConfig::default()
        };
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn an_empty_command_is_refused() {
        let config = LocalPoolConfig {
            command: vec![],
            ..LocalPoolConfig::default()
        };
        assert!(config.problems().unwrap().contains("empty"));
    }
}
