//! The command line: `serve`, `migrate`, `local-pool`, `demo`, `manifest validate|render`,
//! `keys rotate`, `backup`, `config check`, and the client commands `pools …` and `runs …`
//! (src/client/).

use crate::app::{Application, Secrets};
use crate::config::Settings;
use crate::domain::secrets::SecretBundle;
use crate::localpool::{LocalPool, LocalPoolConfig};
use crate::manifest::{Manifest, OpKind, RenderInput};
use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// The version line of `cattery --version`: the package version, the git commit and the date
/// of the build (see build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CATTERY_GIT_COMMIT"),
    ", built ",
    env!("CATTERY_BUILD_DATE"),
    ")"
);

/// cattery: a runner-pool gateway.
#[derive(Debug, Parser)]
#[command(name = "cattery", version = VERSION, about)]
pub struct Cli {
    /// A configuration file layered over config/default.yaml.
    #[arg(long, global = true, env = "CATTERY_CONFIG")]
    pub config: Option<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Run the built-in local scheduler alone.
    LocalPool {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:7071")]
        bind: String,
        /// Require this bearer token on every call but /health.
        #[arg(long, env = "CATTERY_LOCAL_POOL_TOKEN")]
        token: Option<String>,
        /// The program run for each job (argv); default: the built-in sample job.
        #[arg(long, num_args = 1.., allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Start a throw-away gateway with the local pool, run sample jobs, show their progress.
    Demo {
        /// How many sample jobs to run.
        #[arg(long, default_value_t = 6)]
        jobs: u32,
    },
    /// Work with manifest files.
    Manifest {
        /// What to do.
        #[command(subcommand)]
        action: ManifestCommand,
    },
    /// Manage the master keys.
    Keys {
        /// What to do.
        #[command(subcommand)]
        action: KeysCommand,
    },
    /// The built-in sample job (reads the job on stdin; used by the local pool).
    #[command(hide = true)]
    SampleJob,
    /// Manage the pools of a running gateway (client of its HTTP API).
    Pools {
        /// Where the gateway is and how to authenticate.
        #[command(flatten)]
        client: crate::client::ClientArgs,
        /// What to do.
        #[command(subcommand)]
        action: crate::client::PoolsCommand,
    },
    /// Submit, inspect, cancel and follow runs of a running gateway (client of its HTTP API).
    Runs {
        /// Where the gateway is and how to authenticate.
        #[command(flatten)]
        client: crate::client::ClientArgs,
        /// What to do.
        #[command(subcommand)]
        action: crate::client::RunsCommand,
    },
    /// Copy the SQLite database consistently to FILE, also while the gateway runs (PostgreSQL:
    /// use pg_dump).
    Backup {
        /// The backup file to write.
        file: PathBuf,
        /// Replace FILE when it exists.
        #[arg(long)]
        force: bool,
    },
    /// Inspect the configuration.
    Config {
        /// What to do.
        #[command(subcommand)]
        action: ConfigCommand,
    },
}

/// `config` sub-commands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load the configuration as `serve` does, print it as YAML with secrets masked, and list
    /// every problem with its key; exit 1 on any.
    Check,
}

/// `manifest` sub-commands.
#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Validate manifests; prints every problem with its path; exit 1 on any.
    Validate {
        /// Manifest files (YAML or JSON).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the exact HTTP request an operation would send (secrets masked).
    Render {
        /// The manifest file.
        file: PathBuf,
        /// The operation.
        #[arg(long, value_enum)]
        op: Op,
        /// A JSON file with the job object.
        #[arg(long)]
        job: Option<PathBuf>,
        /// The job id to render with.
        #[arg(long, default_value = "example-job-1")]
        job_id: String,
        /// The job kind to render with.
        #[arg(long)]
        kind: Option<String>,
    },
    /// Print the cattery/v1 equivalent of a Cat-Factory runner-pool manifest (YAML, or JSON
    /// with --json); remarks go to stderr; exit 1 on any problem.
    Convert {
        /// The Cat-Factory manifest file (YAML or JSON).
        file: PathBuf,
        /// Print JSON instead of YAML.
        #[arg(long)]
        json: bool,
    },
}

/// `keys` sub-commands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Re-seal every stored secret bundle and job body under the newest master key (the first
    /// of CATTERY_MASTER_KEYS or of the key file). Safe while gateways run; run it again to
    /// continue after an interruption.
    Rotate,
}

/// A manifest operation on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Op {
    /// dispatch
    Dispatch,
    /// lookup (a manifest without one answers with an error)
    Lookup,
    /// poll
    Poll,
    /// release
    Release,
}

/// Parses the command line and runs it. A command line that does not parse exits with
/// [`crate::client::exit::USAGE`] (64), so that it never reads as a run's outcome.
pub async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(crate::client::exit::USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn settings(cli: &Cli) -> anyhow::Result<Settings> {
    Settings::load(cli.config.as_deref(), std::env::vars()).context("cannot load the configuration")
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Serve => {
            let settings = settings(&cli)?;
            crate::telemetry::init(&settings.logging);
            let app = Application::build(settings, Secrets::from_env()).await?;
            app.run_until_stopped().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let settings = settings(&cli)?;
            crate::telemetry::init(&settings.logging);
            std::fs::create_dir_all(&settings.data_dir)?;
            let store = crate::store::Store::connect(&settings.database_url(), 1).await?;
            store.migrate().await?;
            say(&format!("migrations applied ({})", store.backend_name()));
            Ok(ExitCode::SUCCESS)
        }
        Command::LocalPool {
            bind,
            token,
            command,
        } => {
            let settings = settings(&cli)?;
            crate::telemetry::init(&settings.logging);
            let mut config = LocalPoolConfig {
                token: token.clone(),
                ..LocalPoolConfig::default()
            };
            if !command.is_empty() {
                config.command = command.clone();
            }
            let pool = LocalPool::start(bind, config).await?;
            tracing::info!(address = %pool.base_url(), "local pool listening");
            pool.wait().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { jobs } => crate::demo::run(*jobs).await,
        Command::Manifest { action } => manifest_command(&cli, action),
        Command::Keys {
            action: KeysCommand::Rotate,
        } => keys_rotate(&cli).await,
        Command::Pools { client, action } => {
            Ok(client_command(client, ClientCall::Pools(action)).await)
        }
        Command::Runs { client, action } => {
            Ok(client_command(client, ClientCall::Runs(action)).await)
        }
        Command::Backup { file, force } => backup(&cli, file, *force).await,
        Command::Config {
            action: ConfigCommand::Check,
        } => Ok(config_check(&cli)),
        Command::SampleJob => {
            let mut input = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut input)?;
            let code = crate::localpool::run_sample_job(
                &input,
                &mut std::io::stdout(),
                &mut std::io::stderr(),
            );
            Ok(ExitCode::from(
                u8::try_from(code.clamp(0, 255)).unwrap_or(1),
            ))
        }
    }
}

/// A client command of the command line.
enum ClientCall<'a> {
    Pools(&'a crate::client::PoolsCommand),
    Runs(&'a crate::client::RunsCommand),
}

/// Runs a client command against the gateway and turns its outcome into the exit code; a
/// failure is printed on stderr as one line (plus a line per field problem).
async fn client_command(args: &crate::client::ClientArgs, call: ClientCall<'_>) -> ExitCode {
    use std::io::IsTerminal as _;
    let outcome = match crate::client::Client::from_args(args) {
        Ok(client) => {
            let mut out = std::io::stdout();
            let mut err = std::io::stderr();
            let tty = out.is_terminal();
            let io = crate::client::Io {
                out: &mut out,
                err: &mut err,
                tty,
            };
            match call {
                ClientCall::Pools(action) => {
                    crate::client::run_pools(&client, args.output, action, io).await
                }
                ClientCall::Runs(action) => {
                    crate::client::run_runs(&client, args.output, action, io).await
                }
            }
        }
        Err(e) => Err(e),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            for line in e.lines() {
                warn(&line);
            }
            ExitCode::from(e.exit_code())
        }
    }
}

async fn backup(cli: &Cli, file: &std::path::Path, force: bool) -> anyhow::Result<ExitCode> {
    let settings = settings(cli)?;
    match crate::operator::backup(&settings, file, force).await {
        Ok(report) => {
            say(&format!(
                "backed up {} to {} ({} bytes)",
                report.source.display(),
                report.target.display(),
                report.bytes
            ));
            say(
                "the master key is not in the backup: keep a copy of it (security.masterKeyFile, \
                 CATTERY_MASTER_KEYS or <dataDir>/master.key) apart from it",
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let mut line = format!("error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                line.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            warn(&line);
            Ok(ExitCode::FAILURE)
        }
    }
}

fn config_check(cli: &Cli) -> ExitCode {
    let settings = match settings(cli) {
        Ok(settings) => settings,
        Err(e) => {
            warn(&format!("error: {e:#}"));
            return ExitCode::FAILURE;
        }
    };
    let secrets = Secrets::from_env();
    for note in crate::operator::environment_notes(&settings, &secrets) {
        say(&note);
    }
    match yaml_serde::to_string(&crate::operator::masked(&settings)) {
        Ok(yaml) => say(yaml.trim_end()),
        Err(e) => warn(&format!("error: cannot print the configuration: {e}")),
    }
    let problems = crate::operator::problems(&settings, &secrets);
    for problem in &problems {
        warn(&format!("error at {}: {}", problem.key, problem.message));
    }
    if problems.is_empty() {
        warn("the configuration has no problem");
        ExitCode::SUCCESS
    } else {
        warn(&format!(
            "{} problem(s) in the configuration",
            problems.len()
        ));
        ExitCode::FAILURE
    }
}

async fn keys_rotate(cli: &Cli) -> anyhow::Result<ExitCode> {
    let settings = settings(cli)?;
    crate::telemetry::init(&settings.logging);
    let secrets = Secrets::from_env();
    let key_file = (!settings.security.master_key_file.is_empty())
        .then(|| PathBuf::from(&settings.security.master_key_file));
    let data_dir_key = settings.data_dir.join(crate::crypto::MASTER_KEY_FILE);
    anyhow::ensure!(
        secrets.master_key.is_some() || key_file.is_some() || data_dir_key.exists(),
        "no master key is configured: set CATTERY_MASTER_KEYS (newest first) or security.masterKeyFile"
    );
    let (sealer, source) = crate::crypto::Sealer::load_or_create(
        &settings.data_dir,
        secrets.master_key.as_deref(),
        key_file.as_deref(),
    )
    .context("cannot load the master keys")?;
    let store = crate::store::Store::connect(&settings.database_url(), 2)
        .await
        .context("cannot open the database")?;
    let ids = sealer.key_ids();
    say(&format!(
        "sealing key {} (from {source}); {} older key(s) open old data",
        ids.first().map_or("?", String::as_str),
        ids.len().saturating_sub(1)
    ));
    let report = crate::keys::rotate(&store, &sealer).await?;
    say(&format!(
        "secret bundles: {} re-sealed, {} already under the sealing key",
        report.pools_resealed, report.pools_current
    ));
    say(&format!(
        "job bodies: {} re-sealed, {} already under the sealing key, {} dropped meanwhile",
        report.jobs_resealed, report.jobs_current, report.jobs_gone
    ));
    say(&format!(
        "gateway keys: {} re-sealed, {} already under the sealing key",
        report.keys_resealed, report.keys_current
    ));
    for failure in &report.failures {
        say(&format!("failed: {failure}"));
    }
    Ok(if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn manifest_command(cli: &Cli, action: &ManifestCommand) -> anyhow::Result<ExitCode> {
    let settings = settings(cli)?;
    let defaults = crate::app::defaults_of(&settings);
    match action {
        ManifestCommand::Validate { files } => {
            let mut failed = false;
            for file in files {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                match Manifest::parse(&text, &defaults) {
                    Ok(manifest) => {
                        say(&format!("{}: ok", file.display()));
                        for warning in &manifest.warnings {
                            say(&format!("  warning {}: {}", warning.code, warning.message));
                        }
                    }
                    Err(e) => {
                        failed = true;
                        say(&format!(
                            "{}: {} problem(s)",
                            file.display(),
                            e.problems.len()
                        ));
                        for problem in &e.problems {
                            let path = if problem.path.is_empty() {
                                "(document)"
                            } else {
                                &problem.path
                            };
                            say(&format!("  {path}: {}", problem.message));
                        }
                    }
                }
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        ManifestCommand::Render {
            file,
            op,
            job,
            job_id,
            kind,
        } => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let manifest = match Manifest::parse(&text, &defaults) {
                Ok(manifest) => manifest,
                Err(e) => {
                    for problem in &e.problems {
                        say(&format!("{}: {}", problem.path, problem.message));
                    }
                    return Ok(ExitCode::FAILURE);
                }
            };
            let job_value = match job {
                Some(path) => serde_json::from_str(
                    &std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read {}", path.display()))?,
                )
                .with_context(|| format!("{} is not JSON", path.display()))?,
                None => serde_json::json!({}),
            };
            let op = match op {
                Op::Dispatch => OpKind::Dispatch,
                Op::Lookup => OpKind::Lookup,
                Op::Poll => OpKind::Poll,
                Op::Release => OpKind::Release,
            };
            // Every secret renders as *** so the output can be shared.
            let masked = SecretBundle::from_map(
                manifest
                    .secret_keys()
                    .iter()
                    .map(|key| (key.clone(), "***".to_owned()))
                    .collect(),
            );
            let input = RenderInput {
                job_id: job_id.clone(),
                kind: kind.clone(),
                job: job_value,
                labels: serde_json::Map::new(),
                dispatch_id: job_id.clone(),
                attempt: 1,
                captures: serde_json::Map::new(),
                pool_name: "example".to_owned(),
            };
            let request = manifest
                .render(op, &input, &masked)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            say(&format!("{} {}", request.method.as_str(), request.url));
            if let crate::manifest::Auth::OAuth2ClientCredentials { .. } = manifest.auth {
                say("authorization: Bearer *** (OAuth2 client credentials)");
            }
            for (name, value) in &request.headers {
                say(&format!("{name}: {value}"));
            }
            if let Some(content_type) = &request.content_type {
                say(&format!("content-type: {content_type}"));
            }
            if let Some(body) = &request.body {
                say("");
                say(&String::from_utf8_lossy(body));
            }
            Ok(ExitCode::SUCCESS)
        }
        ManifestCommand::Convert { file, json } => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let converted = match crate::manifest::convert_catfactory(&text, &defaults) {
                Ok(converted) => converted,
                Err(e) => {
                    for problem in &e.problems {
                        let path = if problem.path.is_empty() {
                            "(document)"
                        } else {
                            &problem.path
                        };
                        warn(&format!("{path}: {}", problem.message));
                    }
                    return Ok(ExitCode::FAILURE);
                }
            };
            for warning in &converted.warnings {
                warn(&format!("warning {}: {}", warning.code, warning.message));
            }
            let output = if *json {
                serde_json::to_string_pretty(&converted.document)?
            } else {
                yaml_serde::to_string(&converted.document)?
            };
            say(output.trim_end());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes one line to stderr.
fn warn(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Writes one line to stdout.
pub fn say(line: &str) {
    let _ = writeln!(std::io::stdout(), "{line}");
}
