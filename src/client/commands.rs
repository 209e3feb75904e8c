//! The `pools` and `runs` sub-commands: what each sends, and how each answer is shown.

use super::table::{Table, cell, fields, one_line, progress};
use super::watch::{self, Display};
use super::{Client, ClientError, Output, exit, segment};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Map, Value, json};
use std::io::{Read as _, Write};
use std::path::{Path, PathBuf};

/// `cattery pools …`
#[derive(Debug, Subcommand)]
pub enum PoolsCommand {
    /// Register or replace a pool from a manifest file (PUT /v1/pools/{name}).
    Apply {
        /// The manifest (YAML or JSON), sent as written.
        file: PathBuf,
        /// The pool's name; default: the manifest's own `providerId` (Cat-Factory manifests).
        #[arg(long)]
        name: Option<String>,
        /// A YAML or JSON map of the secret bundle (`KEY: value`), or `-` for stdin. Omitted on
        /// a replace: the stored bundle is kept.
        #[arg(long, value_name = "FILE|-")]
        secrets: Option<String>,
    },
    /// List the pools (GET /v1/pools).
    List,
    /// Show one pool (GET /v1/pools/{name}).
    Get {
        /// The pool.
        name: String,
    },
    /// Delete a pool (DELETE /v1/pools/{name}); refused while it has unfinished runs.
    Delete {
        /// The pool.
        name: String,
        /// Cancel the pool's unfinished runs first.
        #[arg(long)]
        force: bool,
    },
    /// Check a pool against its scheduler (POST /v1/pools/{name}/probe); exit 1 when the
    /// probe is not ok.
    Probe {
        /// The pool.
        name: String,
    },
}

/// `cattery runs …`
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Submit a job to a pool (POST /v1/pools/{pool}/runs).
    Dispatch {
        /// The pool.
        pool: String,
        /// The job object as JSON: a file, or `-` for stdin.
        #[arg(long, value_name = "FILE|-")]
        job: String,
        /// The run's id; default: a new `cli-<uuid>`. Give one to make a retry of the same
        /// command idempotent.
        #[arg(long)]
        job_id: Option<String>,
        /// The job's kind.
        #[arg(long)]
        kind: Option<String>,
        /// A label `KEY=VALUE` (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// The run's deadline in seconds from now.
        #[arg(long)]
        deadline_seconds: Option<u64>,
    },
    /// Show one run (GET /v1/runs/{id}).
    Get {
        /// The run's job id.
        job_id: String,
    },
    /// List runs, newest first (GET /v1/runs).
    List {
        /// Only this pool's runs.
        #[arg(long)]
        pool: Option<String>,
        /// Only runs in this state (queued, dispatching, pending, running, done, failed,
        /// cancelled).
        #[arg(long)]
        state: Option<String>,
        /// At most this many runs (1 to 1000, default 100).
        #[arg(long)]
        limit: Option<u32>,
        /// The cursor of the next page (printed after a full page).
        #[arg(long)]
        after: Option<String>,
    },
    /// Cancel a run (POST /v1/runs/{id}/cancel).
    Cancel {
        /// The run's job id.
        job_id: String,
    },
    /// A run's persisted history, oldest first (GET /v1/runs/{id}/events, every page).
    Events {
        /// The run's job id.
        job_id: String,
    },
    /// Follow a run live until it is finished; exit 0 done, 1 failed, 2 cancelled.
    Watch {
        /// The run's job id.
        job_id: String,
    },
}

/// Where a command writes: stdout for answers, stderr for remarks; whether stdout is a
/// terminal.
pub struct Io<'a> {
    /// Answers.
    pub out: &'a mut dyn Write,
    /// Remarks (pagination hints).
    pub err: &'a mut dyn Write,
    /// Whether `out` is a terminal (for `runs watch`).
    pub tty: bool,
}

fn write_lines(out: &mut dyn Write, lines: &[String]) -> Result<(), ClientError> {
    for line in lines {
        writeln!(out, "{line}").map_err(write_error)?;
    }
    out.flush().map_err(write_error)
}

fn write_error(e: std::io::Error) -> ClientError {
    ClientError::Usage(format!("cannot write the output: {e}"))
}

fn print_json(out: &mut dyn Write, value: &Value) -> Result<(), ClientError> {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    write_lines(out, &[text])
}

/// Reads a local input: a file, or stdin for `-`.
fn read_input(source: &str, what: &str) -> Result<Vec<u8>, ClientError> {
    if source == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| ClientError::Usage(format!("cannot read the {what} from stdin: {e}")))?;
        Ok(bytes)
    } else {
        std::fs::read(source)
            .map_err(|e| ClientError::Usage(format!("cannot read the {what} file {source}: {e}")))
    }
}

fn origin(source: &str) -> String {
    if source == "-" {
        "stdin".to_owned()
    } else {
        source.to_owned()
    }
}

/// Parses YAML or JSON input into JSON. The parser's message is left out: it can quote the
/// input, which may hold secrets or credentials; its position is enough to find the mistake.
fn parse_yaml(bytes: &[u8], what: &str, source: &str) -> Result<Value, ClientError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ClientError::Usage(format!("the {what} ({}) is not UTF-8", origin(source))))?;
    yaml_serde::from_str::<Value>(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(" at line {}, column {}", l.line(), l.column()))
            .unwrap_or_default();
        ClientError::Usage(format!(
            "the {what} ({}) is not valid YAML or JSON{at}",
            origin(source)
        ))
    })
}

/// Parses JSON input, reporting only the position of a mistake (see [`parse_yaml`]).
fn parse_json(bytes: &[u8], what: &str, source: &str) -> Result<Value, ClientError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ClientError::Usage(format!(
            "the {what} ({}) is not valid JSON at line {}, column {}",
            origin(source),
            e.line(),
            e.column()
        ))
    })
}

/// Runs a `pools` command; answers the exit code.
///
/// # Errors
/// Whatever failed, to be printed with [`ClientError::lines`].
pub async fn run_pools(
    client: &Client,
    output: Output,
    command: &PoolsCommand,
    io: Io<'_>,
) -> Result<u8, ClientError> {
    match command {
        PoolsCommand::Apply {
            file,
            name,
            secrets,
        } => {
            apply(
                client,
                output,
                file,
                name.as_deref(),
                secrets.as_deref(),
                io,
            )
            .await
        }
        PoolsCommand::List => {
            let answer = client.get("/v1/pools", &[]).await?;
            if output == Output::Json {
                print_json(io.out, &answer.body)?;
                return Ok(exit::OK);
            }
            let mut table = Table::new(&[
                "NAME",
                "REVISION",
                "FORMAT",
                "CIRCUIT",
                "QUEUED",
                "IN-FLIGHT",
                "DONE",
                "FAILED",
                "CANCELLED",
                "WARNINGS",
            ]);
            for pool in answer.body["pools"].as_array().into_iter().flatten() {
                let stats = &pool["stats"];
                table.row(vec![
                    cell(&pool["name"]),
                    cell(&pool["revision"]),
                    cell(&pool["format"]),
                    cell(&pool["health"]["circuit"]),
                    cell(&stats["queued"]),
                    cell(&stats["inFlight"]),
                    cell(&stats["done"]),
                    cell(&stats["failed"]),
                    cell(&stats["cancelled"]),
                    pool["warnings"].as_array().map_or(0, Vec::len).to_string(),
                ]);
            }
            if table.is_empty() {
                write_lines(io.out, &["no pools".to_owned()])?;
            } else {
                write_lines(io.out, &table.lines())?;
            }
            Ok(exit::OK)
        }
        PoolsCommand::Get { name } => {
            let answer = client
                .get(&format!("/v1/pools/{}", segment(name)), &[])
                .await?;
            show_pool(io.out, output, &answer.body, None)?;
            Ok(exit::OK)
        }
        PoolsCommand::Delete { name, force } => {
            let query = if *force {
                vec![("force", "true".to_owned())]
            } else {
                Vec::new()
            };
            client
                .call(
                    Method::DELETE,
                    &format!("/v1/pools/{}", segment(name)),
                    &query,
                    None,
                )
                .await?;
            // 204 carries no body: there is no JSON to print for scripts.
            if output == Output::Table {
                write_lines(io.out, &[format!("pool {name} deleted")])?;
            }
            Ok(exit::OK)
        }
        PoolsCommand::Probe { name } => {
            let answer = client
                .call(
                    Method::POST,
                    &format!("/v1/pools/{}/probe", segment(name)),
                    &[],
                    None,
                )
                .await?;
            let report = &answer.body;
            if output == Output::Json {
                print_json(io.out, report)?;
            } else {
                write_lines(io.out, &probe_lines(report))?;
            }
            Ok(if report["ok"] == true {
                exit::OK
            } else {
                exit::FAILED
            })
        }
    }
}

async fn apply(
    client: &Client,
    output: Output,
    file: &Path,
    name: Option<&str>,
    secrets: Option<&str>,
    io: Io<'_>,
) -> Result<u8, ClientError> {
    let source = file.display().to_string();
    let bytes = read_input(&source, "manifest")?;
    let text = String::from_utf8(bytes)
        .map_err(|_| ClientError::Usage(format!("the manifest {source} is not UTF-8")))?;
    let name = match name {
        Some(name) => name.to_owned(),
        None => {
            let document = parse_yaml(text.as_bytes(), "manifest", &source)?;
            document
                .get("providerId")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| {
                    ClientError::Usage(format!(
                        "the manifest {source} carries no name of its own (only Cat-Factory \
                         manifests do, as providerId); give the pool's name with --name"
                    ))
                })?
        }
    };
    let mut body = Map::new();
    // Sent as written: the gateway parses it strictly and names each problem's path.
    body.insert("manifest".to_owned(), Value::String(text));
    if let Some(source) = secrets {
        let bundle = parse_yaml(&read_input(source, "secrets")?, "secrets", source)?;
        if !bundle.is_object() {
            return Err(ClientError::Usage(format!(
                "the secrets ({}) must be a map of KEY: value",
                origin(source)
            )));
        }
        body.insert("secrets".to_owned(), bundle);
    }
    let answer = client
        .call(
            Method::PUT,
            &format!("/v1/pools/{}", segment(&name)),
            &[],
            Some(&Value::Object(body)),
        )
        .await?;
    let verb = if answer.status == 201 {
        "created"
    } else {
        "replaced"
    };
    let headline = format!(
        "pool {name} {verb} (revision {})",
        cell(&answer.body["revision"])
    );
    show_pool(io.out, output, &answer.body, Some(headline))?;
    Ok(exit::OK)
}

fn show_pool(
    out: &mut dyn Write,
    output: Output,
    pool: &Value,
    headline: Option<String>,
) -> Result<(), ClientError> {
    if output == Output::Json {
        return print_json(out, pool);
    }
    let stats = &pool["stats"];
    let keys: Vec<String> = pool["secretKeys"]
        .as_array()
        .into_iter()
        .flatten()
        .map(cell)
        .collect();
    let mut lines: Vec<String> = headline.into_iter().collect();
    lines.extend(fields(&[
        ("name", cell(&pool["name"])),
        ("revision", cell(&pool["revision"])),
        ("format", cell(&pool["format"])),
        ("digest", cell(&pool["digest"])),
        (
            "secretKeys",
            if keys.is_empty() {
                "-".to_owned()
            } else {
                keys.join(", ")
            },
        ),
        ("circuit", cell(&pool["health"]["circuit"])),
        ("lastError", cell(&pool["health"]["lastError"])),
        (
            "runs",
            format!(
                "queued {}, in flight {}, done {}, failed {}, cancelled {}",
                cell(&stats["queued"]),
                cell(&stats["inFlight"]),
                cell(&stats["done"]),
                cell(&stats["failed"]),
                cell(&stats["cancelled"])
            ),
        ),
        ("createdAt", cell(&pool["createdAt"])),
        ("updatedAt", cell(&pool["updatedAt"])),
    ]));
    lines.extend(notes("warnings", &pool["warnings"]));
    write_lines(out, &lines)
}

/// `title:` and a `CODE  message` table, for a list of `{code, message}`; nothing when empty.
fn notes(title: &str, list: &Value) -> Vec<String> {
    let mut table = Table::new(&["  CODE", "MESSAGE"]);
    for item in list.as_array().into_iter().flatten() {
        table.row(vec![
            format!("  {}", cell(&item["code"])),
            cell(&item["message"]),
        ]);
    }
    if table.is_empty() {
        return Vec::new();
    }
    let mut lines = vec![format!("{title}:")];
    lines.extend(table.lines());
    lines
}

/// The probe report as key/value lines and tables of problems and gaps.
pub fn probe_lines(report: &Value) -> Vec<String> {
    let poll = &report["poll"];
    let mut lines = fields(&[
        ("pool", cell(&report["pool"])),
        ("ok", cell(&report["ok"])),
        ("reachable", cell(&report["reachable"])),
        ("auth", cell(&report["auth"])),
        (
            "poll",
            format!(
                "HTTP {} read as {} (expected {})",
                cell(&poll["httpStatus"]),
                cell(&poll["classified"]),
                cell(&poll["expected"])
            ),
        ),
        (
            "latency",
            match report["latencyMs"].as_f64() {
                Some(ms) => format!("{ms} ms"),
                None => "-".to_owned(),
            },
        ),
    ]);
    lines.extend(notes("problems", &report["problems"]));
    lines.extend(notes("gaps", &report["gaps"]));
    lines
}

/// Runs a `runs` command; answers the exit code.
///
/// # Errors
/// Whatever failed, to be printed with [`ClientError::lines`].
pub async fn run_runs(
    client: &Client,
    output: Output,
    command: &RunsCommand,
    io: Io<'_>,
) -> Result<u8, ClientError> {
    match command {
        RunsCommand::Dispatch {
            pool,
            job,
            job_id,
            kind,
            labels,
            deadline_seconds,
        } => {
            let job_value = parse_json(&read_input(job, "job")?, "job", job)?;
            let job_id = job_id
                .clone()
                .unwrap_or_else(|| format!("cli-{}", uuid::Uuid::now_v7().simple()));
            let mut body = Map::new();
            body.insert("jobId".to_owned(), json!(job_id));
            body.insert("job".to_owned(), job_value);
            if let Some(kind) = kind {
                body.insert("kind".to_owned(), json!(kind));
            }
            if !labels.is_empty() {
                let mut map = Map::new();
                for label in labels {
                    let (key, value) = label.split_once('=').ok_or_else(|| {
                        ClientError::Usage(format!("--label {label:?} must be KEY=VALUE"))
                    })?;
                    map.insert(key.to_owned(), json!(value));
                }
                body.insert("labels".to_owned(), Value::Object(map));
            }
            if let Some(seconds) = deadline_seconds {
                body.insert("deadlineSeconds".to_owned(), json!(seconds));
            }
            let answer = client
                .call(
                    Method::POST,
                    &format!("/v1/pools/{}/runs", segment(pool)),
                    &[],
                    Some(&Value::Object(body)),
                )
                .await?;
            let headline = if answer.status == 200 {
                format!("run {job_id} was submitted before with the same job; here it is")
            } else {
                format!("run {job_id} accepted by pool {pool}")
            };
            show_run(io.out, output, &answer.body, Some(headline))?;
            Ok(exit::OK)
        }
        RunsCommand::Get { job_id } => {
            let answer = client
                .get(&format!("/v1/runs/{}", segment(job_id)), &[])
                .await?;
            show_run(io.out, output, &answer.body, None)?;
            Ok(exit::OK)
        }
        RunsCommand::List {
            pool,
            state,
            limit,
            after,
        } => {
            let mut query = Vec::new();
            if let Some(pool) = pool {
                query.push(("pool", pool.clone()));
            }
            if let Some(state) = state {
                query.push(("state", state.clone()));
            }
            if let Some(limit) = limit {
                query.push(("limit", limit.to_string()));
            }
            if let Some(after) = after {
                query.push(("after", after.clone()));
            }
            let answer = client.get("/v1/runs", &query).await?;
            if output == Output::Json {
                print_json(io.out, &answer.body)?;
                return Ok(exit::OK);
            }
            let mut table = Table::new(&[
                "JOB ID", "POOL", "STATE", "PROGRESS", "CREATED", "FINISHED", "CAUSE",
            ]);
            for run in answer.body["runs"].as_array().into_iter().flatten() {
                table.row(vec![
                    cell(&run["jobId"]),
                    cell(&run["pool"]),
                    cell(&run["state"]),
                    progress(run),
                    cell(&run["createdAt"]),
                    cell(&run["finishedAt"]),
                    cell(&run["failureCause"]),
                ]);
            }
            if table.is_empty() {
                write_lines(io.out, &["no runs".to_owned()])?;
            } else {
                write_lines(io.out, &table.lines())?;
            }
            if let Some(next) = answer.body["next"].as_str() {
                write_lines(io.err, &[format!("more runs: add --after {next}")])?;
            }
            Ok(exit::OK)
        }
        RunsCommand::Cancel { job_id } => {
            let answer = client
                .call(
                    Method::POST,
                    &format!("/v1/runs/{}/cancel", segment(job_id)),
                    &[],
                    None,
                )
                .await?;
            let headline = format!("cancel of run {job_id} requested");
            show_run(io.out, output, &answer.body, Some(headline))?;
            Ok(exit::OK)
        }
        RunsCommand::Events { job_id } => {
            let path = format!("/v1/runs/{}/events", segment(job_id));
            let mut events = Vec::new();
            let mut after: Option<i64> = None;
            loop {
                let mut query = vec![("limit", "1000".to_owned())];
                if let Some(after) = after {
                    query.push(("after", after.to_string()));
                }
                let page = client.get(&path, &query).await?.body;
                events.extend(page["events"].as_array().cloned().unwrap_or_default());
                match page["next"].as_i64() {
                    Some(next) if Some(next) != after => after = Some(next),
                    _ => break,
                }
            }
            if output == Output::Json {
                print_json(io.out, &json!({"events": events, "next": null}))?;
                return Ok(exit::OK);
            }
            let mut table = Table::new(&["SEQ", "AT", "TYPE", "FROM", "TO", "DETAIL"]);
            for event in &events {
                table.row(vec![
                    cell(&event["seq"]),
                    cell(&event["at"]),
                    cell(&event["type"]),
                    cell(&event["from"]),
                    cell(&event["to"]),
                    cell(&event["detail"]),
                ]);
            }
            write_lines(io.out, &table.lines())?;
            Ok(exit::OK)
        }
        RunsCommand::Watch { job_id } => {
            let mut display = Display::new(output, io.tty);
            watch::watch(client, job_id, &mut display, io.out).await
        }
    }
}

fn show_run(
    out: &mut dyn Write,
    output: Output,
    run: &Value,
    headline: Option<String>,
) -> Result<(), ClientError> {
    if output == Output::Json {
        return print_json(out, run);
    }
    let attempts = &run["attempts"];
    let labels: Vec<String> = run["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| format!("{key}={}", cell(value)))
        .collect();
    let mut lines: Vec<String> = headline.into_iter().collect();
    lines.extend(fields(&[
        ("jobId", cell(&run["jobId"])),
        ("pool", cell(&run["pool"])),
        ("kind", cell(&run["kind"])),
        ("state", cell(&run["state"])),
        ("schedulerState", cell(&run["schedulerState"])),
        ("progress", progress(run)),
        ("error", cell(&run["error"])),
        ("failureCause", cell(&run["failureCause"])),
        ("detail", cell(&run["detail"])),
        ("result", cell(&run["result"])),
        ("externalId", cell(&run["externalId"])),
        ("dispatchId", cell(&run["dispatchId"])),
        (
            "labels",
            if labels.is_empty() {
                "-".to_owned()
            } else {
                one_line(&labels.join(", "))
            },
        ),
        ("cancelRequested", cell(&run["cancelRequested"])),
        ("released", cell(&run["released"])),
        (
            "attempts",
            format!(
                "dispatch {}, poll {}, release {}, redispatch {}",
                cell(&attempts["dispatch"]),
                cell(&attempts["poll"]),
                cell(&attempts["release"]),
                cell(&attempts["redispatch"])
            ),
        ),
        ("manifestRevision", cell(&run["manifestRevision"])),
        ("createdAt", cell(&run["createdAt"])),
        ("dispatchedAt", cell(&run["dispatchedAt"])),
        ("finishedAt", cell(&run["finishedAt"])),
        ("deadlineAt", cell(&run["deadlineAt"])),
        ("updatedAt", cell(&run["updatedAt"])),
    ]));
    write_lines(out, &lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_report_reads_as_fields_and_tables() {
        let report = json!({
            "pool": "k8s", "ok": false, "reachable": true, "auth": "rejected",
            "poll": {"httpStatus": 401, "classified": "auth_failed", "expected": "not_found"},
            "latencyMs": 12,
            "problems": [{"code": "auth_rejected", "message": "the scheduler refused the token"}],
            "gaps": []
        });
        let lines = probe_lines(&report);
        assert_eq!(lines[0], "pool       k8s");
        assert_eq!(lines[1], "ok         no");
        assert!(
            lines.contains(
                &"poll       HTTP 401 read as auth_failed (expected not_found)".to_owned()
            ),
            "{lines:#?}"
        );
        assert!(lines.contains(&"problems:".to_owned()), "{lines:#?}");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("auth_rejected") && l.contains("refused the token")),
            "{lines:#?}"
        );
        assert!(!lines.contains(&"gaps:".to_owned()), "{lines:#?}");
    }

    #[test]
    fn a_bad_input_file_is_reported_by_position_without_its_content() {
        let error = parse_json(b"{\"token\": \"s3cret\",", "job", "job.json").unwrap_err();
        let line = error.to_string();
        assert!(
            line.contains("job.json") && line.contains("line 1"),
            "{line}"
        );
        assert!(!line.contains("s3cret"), "{line}");
        let error = parse_yaml(b"KEY: [s3cret", "secrets", "-").unwrap_err();
        let line = error.to_string();
        assert!(line.contains("stdin"), "{line}");
        assert!(!line.contains("s3cret"), "{line}");
    }
}
