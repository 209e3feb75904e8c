//! The client commands (`cattery pools …`, `cattery runs …`): calls of a running gateway's HTTP
//! API, answers shown as aligned tables or as the API's JSON, errors as one clear line.
//!
//! Layout: this file holds the HTTP client, the connection options and [`ClientError`] (what a
//! failure prints and which exit code it gives); `commands` runs each command, `table` lays out
//! columns, `watch` follows a run's server-sent events until it is finished.
//!
//! The token is sent as a bearer header and is never printed, logged or part of an error.

mod commands;
pub mod table;
pub mod watch;

pub use commands::{Io, PoolsCommand, RunsCommand, run_pools, run_runs};

use clap::{Args, ValueEnum};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// The exit codes of the client commands (README "Command line").
pub mod exit {
    /// The command succeeded (`runs watch`: the run is done; `pools probe`: the probe is ok).
    pub const OK: u8 = 0;
    /// `runs watch`: the run failed; `pools probe`: the probe found the pool not usable.
    pub const FAILED: u8 = 1;
    /// `runs watch`: the run was cancelled.
    pub const CANCELLED: u8 = 2;
    /// The gateway answered with an error (a problem+json answer: 401, 404, 409, 422, 5xx…).
    pub const API: u8 = 3;
    /// The gateway could not be reached, or its answer could not be read.
    pub const TRANSPORT: u8 = 4;
    /// The command line or a local input file is wrong (as sysexits' `EX_USAGE`).
    pub const USAGE: u8 = 64;
}

/// The default gateway address: the bind address of `config/default.yaml`.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// How long one API call (not the event stream) may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting to the gateway may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the gateway is and how to authenticate; shared by every client command.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The gateway's base URL [env: CATTERY_SERVER] [default: http://127.0.0.1:8080].
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,
    /// The API token [env: CATTERY_TOKEN]; prefer --token-file, which keeps it out of the
    /// process list.
    #[arg(long, global = true, value_name = "T")]
    pub token: Option<String>,
    /// A file holding the API token (first line) [env: CATTERY_TOKEN_FILE].
    #[arg(long, global = true, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// `table` (aligned columns for people) or `json` (the API's JSON, for scripts).
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// How answers are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns and key/value lines.
    Table,
    /// The API's JSON, one document per answer.
    Json,
}

/// A field-level problem of a problem+json answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// Where (`manifest.poll.map.state`, `jobId`, …).
    pub path: String,
    /// What to do about it.
    pub message: String,
}

/// Why a client command failed. Every variant prints as one line (plus field lines) and maps
/// to one exit code; none carries the token.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The command line or a local input is wrong.
    #[error("{0}")]
    Usage(String),
    /// The gateway could not be reached or the connection broke.
    #[error("cannot reach the gateway at {server}: {reason}")]
    Transport {
        /// The gateway's base URL.
        server: String,
        /// What failed (no URL, no header).
        reason: String,
    },
    /// The gateway answered with an error.
    #[error("{title} ({status} {code}): {detail}")]
    Api {
        /// The problem's title (the status' reason phrase).
        title: String,
        /// The HTTP status.
        status: u16,
        /// The stable code (`unauthorized`, `pool_not_found`, …).
        code: String,
        /// What happened.
        detail: String,
        /// Per-field problems.
        errors: Vec<FieldProblem>,
    },
    /// The gateway answered something that is not the API's JSON.
    #[error("the gateway's answer ({status}) could not be read: {reason}")]
    BadAnswer {
        /// The HTTP status.
        status: u16,
        /// What is wrong with it.
        reason: String,
    },
}

impl ClientError {
    /// The process exit code of this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Usage(_) => exit::USAGE,
            ClientError::Api { .. } => exit::API,
            ClientError::Transport { .. } | ClientError::BadAnswer { .. } => exit::TRANSPORT,
        }
    }

    /// The lines to print on stderr: `error: …`, then `  at <path>: <message>` per field.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![format!("error: {self}")];
        if let ClientError::Api { errors, .. } = self {
            for problem in errors {
                let path = if problem.path.is_empty() {
                    "(body)"
                } else {
                    &problem.path
                };
                lines.push(format!("  at {path}: {}", problem.message));
            }
        }
        lines
    }

    /// Reads a problem+json (or any error) answer into [`ClientError::Api`].
    fn from_answer(status: u16, body: &[u8]) -> ClientError {
        let reason = reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let text = |key: &str| parsed.get(key).and_then(Value::as_str).map(str::to_owned);
        let errors = parsed
            .get("errors")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .map(|item| FieldProblem {
                        path: item["path"].as_str().unwrap_or_default().to_owned(),
                        message: item["message"].as_str().unwrap_or_default().to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let detail = text("detail")
            .or_else(|| text("error"))
            .unwrap_or_else(|| "the gateway gave no detail".to_owned());
        ClientError::Api {
            title: text("title").unwrap_or_else(|| reason.to_owned()),
            status,
            code: text("code").unwrap_or_else(|| "unknown".to_owned()),
            detail: match text("requestId") {
                Some(id) => format!("{detail} (request id {id})"),
                None => detail,
            },
            errors,
        }
    }
}

/// A successful answer: its status and its JSON body (`Null` when empty).
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status (2xx).
    pub status: u16,
    /// The body.
    pub body: Value,
}

/// A client of one gateway. `Debug` never shows the token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    server: String,
    token: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Percent-encodes one path segment (pool names and job ids are checked by the gateway; a `/`
/// or `?` typed by mistake must not change the route).
pub fn segment(value: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(value, SEGMENT).to_string()
}

impl Client {
    /// A client of `server` presenting `token`.
    ///
    /// # Errors
    /// [`ClientError::Usage`] when the URL is not `http(s)://…`.
    pub fn new(server: &str, token: Option<String>) -> Result<Client, ClientError> {
        let parsed = url::Url::parse(server.trim()).map_err(|e| {
            ClientError::Usage(format!(
                "--server {server:?} is not a URL ({e}); use e.g. {DEFAULT_SERVER}"
            ))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(ClientError::Usage(format!(
                "--server {server:?} must be an http:// or https:// URL, e.g. {DEFAULT_SERVER}"
            )));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(ClientError::Usage(
                "--server must not carry credentials; pass the token with --token-file".to_owned(),
            ));
        }
        crate::scheduler::http::install_crypto_provider();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("cattery-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Usage(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            http,
            server: parsed.as_str().trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// From the command line and the environment: `--server`, else `CATTERY_SERVER`, else the
    /// default; `--token`, else `--token-file`, else `CATTERY_TOKEN`, else `CATTERY_TOKEN_FILE`.
    ///
    /// # Errors
    /// [`ClientError::Usage`] for a bad URL or an unreadable or empty token file.
    pub fn from_args(args: &ClientArgs) -> Result<Client, ClientError> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let server = args
            .server
            .clone()
            .or_else(|| env("CATTERY_SERVER"))
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
        let token = match (&args.token, &args.token_file) {
            (Some(token), _) => Some(token.trim().to_owned()),
            (None, Some(path)) => Some(read_token_file(path)?),
            (None, None) => match env("CATTERY_TOKEN") {
                Some(token) => Some(token.trim().to_owned()),
                None => env("CATTERY_TOKEN_FILE")
                    .map(|path| read_token_file(&PathBuf::from(path)))
                    .transpose()?,
            },
        };
        Client::new(&server, token)
    }

    /// The gateway's base URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
    ) -> reqwest::RequestBuilder {
        let mut url = format!("{}{path}", self.server);
        if !query.is_empty() {
            let encoded: String = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(query)
                .finish();
            url.push('?');
            url.push_str(&encoded);
        }
        let builder = self.http.request(method, url);
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    fn transport(&self, error: &reqwest::Error) -> ClientError {
        ClientError::Transport {
            server: self.server.clone(),
            reason: describe(error),
        }
    }

    /// Sends one call and reads its answer whole: a 2xx answer as JSON, anything else as a
    /// [`ClientError::Api`].
    ///
    /// # Errors
    /// [`ClientError::Api`], [`ClientError::Transport`], [`ClientError::BadAnswer`].
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Answer, ClientError> {
        let mut request = self.request(method, path, query).timeout(CALL_TIMEOUT);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.transport(&e))?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| self.transport(&e))?;
        if !(200..300).contains(&status) {
            return Err(ClientError::from_answer(status, &bytes));
        }
        let body = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| ClientError::BadAnswer {
                status,
                reason: format!("it is not JSON ({e})"),
            })?
        };
        Ok(Answer { status, body })
    }

    /// `GET` of a path.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Answer, ClientError> {
        self.call(reqwest::Method::GET, path, query, None).await
    }

    /// Opens the server-sent event stream `GET /v1/events` for one run, resuming after
    /// `last_event_id`.
    ///
    /// # Errors
    /// [`ClientError::Api`] for an error answer, [`ClientError::Transport`].
    pub async fn event_stream(
        &self,
        job_id: &str,
        last_event_id: i64,
    ) -> Result<reqwest::Response, ClientError> {
        let response = self
            .request(
                reqwest::Method::GET,
                "/v1/events",
                &[("jobId", job_id.to_owned())],
            )
            .header("Accept", "text/event-stream")
            .header("Last-Event-ID", last_event_id.to_string())
            .send()
            .await
            .map_err(|e| self.transport(&e))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let bytes = response.bytes().await.unwrap_or_default();
            return Err(ClientError::from_answer(status, &bytes));
        }
        Ok(response)
    }

    /// A transport failure while reading a stream.
    pub fn stream_error(&self, error: &reqwest::Error) -> ClientError {
        self.transport(error)
    }
}

/// A transport error without the URL, with its causes (`connection refused`, …).
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "the call timed out".to_owned()
    } else if error.is_connect() {
        "cannot connect".to_owned()
    } else if error.is_body() || error.is_decode() {
        "the connection broke while reading the answer".to_owned()
    } else {
        "the call failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    let mut last = String::new();
    while let Some(cause) = source {
        let line = cause.to_string();
        if line != last && !line.contains("://") {
            text.push_str(": ");
            text.push_str(&line);
            last = line;
        }
        source = cause.source();
    }
    text
}

/// Reads a token file: its first non-empty line, trimmed.
fn read_token_file(path: &std::path::Path) -> Result<String, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ClientError::Usage(format!(
            "cannot read the token file {}: {e}",
            path.display()
        ))
    })?;
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| ClientError::Usage(format!("the token file {} is empty", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_answer_becomes_one_line_and_a_line_per_field() {
        let body = br#"{"type":"x","title":"Unprocessable Entity","status":422,"code":"validation_failed","detail":"2 problems were found; see errors","errors":[{"path":"manifest.poll.map.state","message":"is not JMESPath"},{"path":"","message":"the body must be an object"}]}"#;
        let error = ClientError::from_answer(422, body);
        assert_eq!(error.exit_code(), exit::API);
        assert_eq!(
            error.lines(),
            vec![
                "error: Unprocessable Entity (422 validation_failed): 2 problems were found; see errors",
                "  at manifest.poll.map.state: is not JMESPath",
                "  at (body): the body must be an object",
            ]
        );
    }

    #[test]
    fn an_answer_that_is_not_problem_json_still_gives_a_clear_line() {
        let error = ClientError::from_answer(502, b"<html>bad gateway</html>");
        assert_eq!(
            error.lines(),
            vec!["error: Bad Gateway (502 unknown): the gateway gave no detail"]
        );
    }

    #[test]
    fn path_segments_are_encoded_so_that_input_cannot_change_the_route() {
        assert_eq!(segment("a/b?c#d"), "a%2Fb%3Fc%23d");
        assert_eq!(segment("exec-42_coder.v1"), "exec-42_coder.v1");
    }

    #[test]
    fn the_debug_form_hides_the_token() {
        let client = Client::new("http://127.0.0.1:1", Some("s3cret-token".into())).unwrap();
        let shown = format!("{client:?}");
        assert!(!shown.contains("s3cret-token"), "{shown}");
    }

    #[test]
    fn a_server_url_with_credentials_or_another_scheme_is_a_usage_error() {
        for bad in ["ftp://x", "http://u:p@127.0.0.1", "not a url"] {
            let error = Client::new(bad, None).unwrap_err();
            assert_eq!(error.exit_code(), exit::USAGE, "{bad}");
        }
    }
}
