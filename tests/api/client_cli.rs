//! The client commands (`cattery pools …`, `cattery runs …`) as an operator runs them: the real
//! binary against a real gateway process with the built-in local pool as a separate scheduler
//! process. Every output of every command is checked not to contain the token.

use crate::support::ADMIN_TOKEN;
use crate::support::database::TestDatabase;
use crate::support::gateway::{Gateway, Launch, LocalPool, cattery_bin};
use crate::support::manifests::local_manifest;
use crate::support::wait::RUN_LIMIT;
use serde_json::{Value, json};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

const POOL_TOKEN: &str = "client-cli-local-pool-token-77";

/// The exit codes the README documents.
const EXIT_FAILED: i32 = 1;
const EXIT_CANCELLED: i32 = 2;
const EXIT_API: i32 = 3;
const EXIT_TRANSPORT: i32 = 4;
const EXIT_USAGE: i32 = 64;

/// What one command did.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

/// A gateway with the local pool process beside it, and files for the client.
struct Setup {
    gateway: Gateway,
    pool: LocalPool,
    dir: tempfile::TempDir,
    _db: TestDatabase,
}

impl Setup {
    async fn start() -> Setup {
        let db = TestDatabase::create().await;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let gateway = Gateway::start(Launch::new(&db, &data)).await;
        let pool = LocalPool::start(POOL_TOKEN).await;
        std::fs::write(dir.path().join("token"), format!("{ADMIN_TOKEN}\n")).unwrap();
        Setup {
            gateway,
            pool,
            dir,
            _db: db,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, content: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, content).unwrap();
        path.display().to_string()
    }

    /// `cattery ARGS` against the gateway, the token from a file named by CATTERY_TOKEN_FILE.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(cattery_bin());
        command
            .args(args)
            .env("CATTERY_SERVER", &self.gateway.api.address)
            .env("CATTERY_TOKEN_FILE", self.path("token"))
            .env_remove("CATTERY_TOKEN")
            .env("CATTERY__LOGGING__LEVEL", "warn");
        command
    }

    fn run_with(&self, mut command: Command, stdin: Option<&[u8]>) -> Out {
        command
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        if let Some(bytes) = stdin {
            child.stdin.take().unwrap().write_all(bytes).unwrap();
        }
        let output = child.wait_with_output().unwrap();
        let out = Out {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        never_shows_a_token(&out);
        out
    }

    fn run(&self, args: &[&str]) -> Out {
        self.run_with(self.command(args), None)
    }

    fn run_stdin(&self, args: &[&str], stdin: &str) -> Out {
        self.run_with(self.command(args), Some(stdin.as_bytes()))
    }

    /// Registers the local pool process as pool `local` through `pools apply`.
    fn apply_local(&self) -> Out {
        let manifest = self.write(
            "local.yaml",
            &yaml_serde::to_string(&local_manifest(&self.pool.base_url)).unwrap(),
        );
        let secrets = self.write("secrets.yaml", &format!("LOCAL_POOL_TOKEN: {POOL_TOKEN}\n"));
        self.run(&[
            "pools",
            "apply",
            &manifest,
            "--name",
            "local",
            "--secrets",
            &secrets,
        ])
    }

    /// Submits a sample job through `runs dispatch` and asserts it was accepted.
    fn dispatch(&self, job_id: &str, job: Value) {
        let file = self.write(&format!("{job_id}.json"), &job.to_string());
        let out = self.run(&[
            "runs", "dispatch", "local", "--job", &file, "--job-id", job_id,
        ]);
        assert_eq!(out.code, 0, "{out:?}");
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// No output of any command may contain a token, whichever way it was given.
fn never_shows_a_token(out: &Out) {
    for token in [ADMIN_TOKEN, POOL_TOKEN, "wrong-token-on-the-command-line"] {
        assert!(
            !out.stdout.contains(token) && !out.stderr.contains(token),
            "a token was printed: {out:?}"
        );
    }
}

fn finished(child: Child) -> Out {
    let output = child.wait_with_output().unwrap();
    let out = Out {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    never_shows_a_token(&out);
    out
}

#[actix_web::test]
async fn pools_are_applied_listed_shown_and_deleted() {
    let setup = Setup::start().await;
    let out = setup.apply_local();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.starts_with("pool local created (revision 1)\n"),
        "{out:?}"
    );
    assert!(out.stdout.contains("LOCAL_POOL_TOKEN"), "{out:?}");
    // The same manifest again, secrets from stdin this time: replaced, same revision.
    let manifest = setup.path("local.yaml").display().to_string();
    let out = setup.run_stdin(
        &[
            "pools",
            "apply",
            &manifest,
            "--name",
            "local",
            "--secrets",
            "-",
        ],
        &format!("{{\"LOCAL_POOL_TOKEN\": \"{POOL_TOKEN}\"}}"),
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.starts_with("pool local replaced (revision 1)\n"),
        "{out:?}"
    );
    let stored = setup.gateway.get("/v1/pools/local").await.json();
    assert_eq!(stored["secretKeys"], json!(["LOCAL_POOL_TOKEN"]));

    let out = setup.run(&["pools", "list"]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("NAME  "), "{out:?}");
    assert!(lines[0].contains("IN-FLIGHT"), "{out:?}");
    assert!(lines[1].starts_with("local "), "{out:?}");
    assert!(lines[1].contains("cattery/v1"), "{out:?}");
    // Columns are aligned: each header word starts where its value starts.
    let at = lines[0].find("FORMAT").unwrap();
    assert_eq!(&lines[1][at..at + "cattery/v1".len()], "cattery/v1");

    let out = setup.run(&["pools", "get", "local"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("\nformat "), "{out:?}");
    assert!(out.stdout.contains("cattery/v1"), "{out:?}");
    assert!(out.stdout.contains("circuit"), "{out:?}");

    let out = setup.run(&["pools", "get", "local", "--output", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["name"], "local");
    // The client options go after the command group or after the command.
    let out = setup.run(&["pools", "--output", "json", "list"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["pools"][0]["name"], "local");

    // A cattery/v1 manifest names no pool: --name is needed.
    let out = setup.run(&["pools", "apply", &manifest]);
    assert_eq!(out.code, EXIT_USAGE, "{out:?}");
    assert!(out.stderr.contains("--name"), "{out:?}");
    // A Cat-Factory manifest names itself (providerId).
    let catfactory = setup.write(
        "catfactory.yaml",
        "providerId: acme-pool\nlabel: Acme\nbaseUrl: http://127.0.0.1:9\n\
         auth: { type: bearer, secretRef: { key: API_TOKEN } }\n\
         dispatch: { method: POST, pathTemplate: /jobs, bodyTemplate: '{{input.job}}' }\n\
         poll: { method: GET, pathTemplate: '/jobs/{{input.jobId}}' }\n\
         response: { statusPath: state }\n",
    );
    let out = setup.run_stdin(
        &["pools", "apply", &catfactory, "--secrets", "-"],
        "API_TOKEN: acme-token-value\n",
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .starts_with("pool acme-pool created (revision 1)\n"),
        "{out:?}"
    );
    assert!(out.stdout.contains("cat-factory"), "{out:?}");
    assert!(!out.stdout.contains("acme-token-value"), "{out:?}");

    let out = setup.run(&["pools", "delete", "local"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "pool local deleted\n");
    let out = setup.run(&["pools", "get", "local"]);
    assert_eq!(out.code, EXIT_API, "{out:?}");
    assert!(
        out.stderr
            .starts_with("error: Not Found (404 pool_not_found): "),
        "{out:?}"
    );
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
}

#[actix_web::test]
async fn a_bad_manifest_prints_a_line_per_problem_and_fails() {
    let setup = Setup::start().await;
    let manifest = setup.write(
        "bad.yaml",
        "apiVersion: cattery/v1\nbaseUrl: https://x.example\nauth: {type: none}\ncolour: blue\n\
         dispatch: {request: {method: POST, path: \"/jobs/{{input.nope}}\"}}\n\
         poll: {request: {method: GET, path: /jobs}, map: {state: \"status[?\"}}\n",
    );
    let out = setup.run(&["pools", "apply", &manifest, "--name", "bad"]);
    assert_eq!(out.code, EXIT_API, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(
        lines[0].starts_with("error: Unprocessable Entity (422 validation_failed): "),
        "{out:?}"
    );
    for path in ["colour", "dispatch.request.path", "poll.map.state"] {
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.starts_with("  at ") && l.contains(&format!("{path}: ")))
                .count(),
            1,
            "one line for {path}: {out:?}"
        );
    }
    assert!(lines[1..].iter().all(|l| l.starts_with("  at ")), "{out:?}");
    // Nothing was registered.
    assert_eq!(setup.gateway.get("/v1/pools/bad").await.status, 404);
}

#[actix_web::test]
async fn runs_are_dispatched_read_listed_cancelled_and_their_history_shown() {
    let setup = Setup::start().await;
    assert_eq!(setup.apply_local().code, 0);

    // From a file, with labels and a kind.
    let job = setup.write("job.json", r#"{"steps": 2, "stepMs": 10}"#);
    let out = setup.run(&[
        "runs",
        "dispatch",
        "local",
        "--job",
        &job,
        "--job-id",
        "cli-file-1",
        "--kind",
        "sample",
        "--label",
        "team=infra",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .starts_with("run cli-file-1 accepted by pool local\n"),
        "{out:?}"
    );
    assert!(out.stdout.contains("team=infra"), "{out:?}");
    // The same submission again: the existing run.
    let out = setup.run(&[
        "runs",
        "dispatch",
        "local",
        "--job",
        &job,
        "--job-id",
        "cli-file-1",
        "--kind",
        "sample",
        "--label",
        "team=infra",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("submitted before"), "{out:?}");
    // From stdin, with a generated id, JSON out.
    let out = setup.run_stdin(
        &["runs", "dispatch", "local", "--job", "-", "-o", "json"],
        r#"{"steps": 1, "stepMs": 10}"#,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let generated = out.json()["jobId"].as_str().unwrap().to_owned();
    assert!(generated.starts_with("cli-"), "{generated}");
    // A job that is not JSON never leaves the machine.
    let out = setup.run_stdin(
        &["runs", "dispatch", "local", "--job", "-"],
        "{\"secret\": \"abc\"",
    );
    assert_eq!(out.code, EXIT_USAGE, "{out:?}");
    assert!(out.stderr.contains("not valid JSON"), "{out:?}");
    assert!(!out.stderr.contains("abc"), "{out:?}");

    setup.gateway.wait_settled("cli-file-1").await;
    setup.gateway.wait_settled(&generated).await;
    let out = setup.run(&["runs", "get", "cli-file-1"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("state ") && l.ends_with(" done")),
        "{out:?}"
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("progress ") && l.ends_with(" 2/2")),
        "{out:?}"
    );
    let out = setup.run(&["runs", "get", "cli-file-1", "-o", "json"]);
    assert_eq!(out.json()["state"], "done");

    let out = setup.run(&["runs", "list", "--pool", "local"]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("JOB ID "), "{out:?}");
    assert_eq!(lines.len(), 3, "{out:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("cli-file-1 ")),
        "{out:?}"
    );
    let out = setup.run(&[
        "runs", "list", "--state", "done", "--limit", "1", "-o", "json",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let page = out.json();
    assert_eq!(page["runs"].as_array().unwrap().len(), 1);
    assert!(page["next"].is_string(), "{page}");
    let out = setup.run(&["runs", "list", "--state", "done", "--limit", "1"]);
    assert!(out.stderr.contains("more runs: add --after "), "{out:?}");
    let out = setup.run(&["runs", "list", "--state", "sleeping"]);
    assert_eq!(out.code, EXIT_API, "{out:?}");
    assert!(out.stderr.contains("\n  at state: "), "{out:?}");

    let out = setup.run(&["runs", "events", "cli-file-1"]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("SEQ "), "{out:?}");
    assert!(lines.iter().any(|l| l.contains("transition")), "{out:?}");
    let out = setup.run(&["runs", "events", "cli-file-1", "-o", "json"]);
    let events = out.json()["events"].as_array().unwrap().clone();
    assert_eq!(events, setup.gateway.events("cli-file-1").await);
    assert!(events.iter().any(|e| e["to"] == "done"), "{events:?}");

    // Cancel: a long job is cancelled; a finished one is a 409.
    setup.dispatch("cli-long", json!({"steps": 1000, "stepMs": 100}));
    let out = setup.run(&["runs", "cancel", "cli-long"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.starts_with("cancel of run cli-long requested\n"),
        "{out:?}"
    );
    let run = setup.gateway.wait_settled("cli-long").await;
    assert_eq!(run["state"], "cancelled");
    let out = setup.run(&["runs", "cancel", "cli-file-1"]);
    assert_eq!(out.code, EXIT_API, "{out:?}");
    assert!(
        out.stderr
            .starts_with("error: Conflict (409 run_finished): "),
        "{out:?}"
    );
    let out = setup.run(&["runs", "get", "no-such-run"]);
    assert_eq!(out.code, EXIT_API, "{out:?}");
    assert!(
        out.stderr
            .starts_with("error: Not Found (404 run_not_found): "),
        "{out:?}"
    );
}

#[actix_web::test]
async fn watch_follows_a_run_and_exits_with_its_outcome() {
    let setup = Setup::start().await;
    assert_eq!(setup.apply_local().code, 0);

    // Done: exit 0, a line per change, the last one the summary.
    setup.dispatch("watch-done", json!({"steps": 4, "stepMs": 150}));
    let out = setup.run(&["runs", "watch", "watch-done"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        !out.stdout.contains('\r'),
        "not a terminal: plain lines: {out:?}"
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines.len() >= 2, "{out:?}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("watch-done ") || l.starts_with("run watch-done ")),
        "{out:?}"
    );
    assert!(
        lines.last().unwrap().starts_with("run watch-done done"),
        "{out:?}"
    );
    assert!(lines.iter().any(|l| l.contains(" 4/4")), "{out:?}");

    // Failed: exit 1 with the cause and the error.
    setup.dispatch(
        "watch-failed",
        // A short message: a job's longer strings are redacted from what the scheduler reports.
        json!({"steps": 2, "stepMs": 100, "fail": true, "message": "oops"}),
    );
    let out = setup.run(&["runs", "watch", "watch-failed"]);
    assert_eq!(out.code, EXIT_FAILED, "{out:?}");
    let last = out.stdout.lines().last().unwrap().to_owned();
    assert!(last.starts_with("run watch-failed failed"), "{out:?}");
    assert!(last.ends_with(": oops"), "{out:?}");

    // Cancelled while watched: exit 2.
    setup.dispatch("watch-cancel", json!({"steps": 1000, "stepMs": 100}));
    setup
        .gateway
        .wait_for("watch-cancel", RUN_LIMIT, |run| run["state"] == "running")
        .await;
    let mut watcher = setup.spawn(&["runs", "watch", "watch-cancel", "-o", "json"]);
    // The watcher shows the running run (its first line) before the cancel goes out.
    let mut stdout = std::io::BufReader::new(watcher.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    assert_eq!(setup.gateway.cancel("watch-cancel").await.status, 202);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let out = finished(watcher);
    assert_eq!(out.code, EXIT_CANCELLED, "{out:?}");
    never_shows_a_token(&Out {
        stdout: format!("{first}{rest}"),
        ..out
    });
    // JSON output: one RunView per line, the last one cancelled.
    let views: Vec<Value> = format!("{first}{rest}")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(views.first().unwrap()["state"], "running", "{first}");
    assert_eq!(views.last().unwrap()["state"], "cancelled", "{rest}");

    // A finished run answers at once; an unknown one is the API's 404.
    let out = setup.run(&["runs", "watch", "watch-done"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = setup.run(&["runs", "watch", "no-such-run"]);
    assert_eq!(out.code, EXIT_API, "{out:?}");
    assert!(
        out.stderr
            .starts_with("error: Not Found (404 run_not_found)"),
        "{out:?}"
    );
}

#[actix_web::test]
async fn a_wrong_or_missing_token_and_an_absent_gateway_give_their_own_exit_codes() {
    let setup = Setup::start().await;
    let mut command = setup.command(&[
        "pools",
        "list",
        "--token",
        "wrong-token-on-the-command-line",
    ]);
    command.env_remove("CATTERY_TOKEN_FILE");
    let out = setup.run_with(command, None);
    assert_eq!(out.code, EXIT_API, "{out:?}");
    assert!(
        out.stderr
            .starts_with("error: Unauthorized (401 unauthorized): "),
        "{out:?}"
    );
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");

    // The token from CATTERY_TOKEN works and is not shown either.
    let mut command = setup.command(&["pools", "list"]);
    command
        .env_remove("CATTERY_TOKEN_FILE")
        .env("CATTERY_TOKEN", ADMIN_TOKEN);
    let out = setup.run_with(command, None);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "no pools\n");

    let missing = setup.path("no-token-file");
    let out = setup.run(&[
        "pools",
        "list",
        "--token-file",
        &missing.display().to_string(),
    ]);
    assert_eq!(out.code, EXIT_USAGE, "{out:?}");

    // Nobody listens: a transport error.
    let port = crate::support::gateway::free_port();
    let out = setup.run(&[
        "runs",
        "list",
        "--server",
        &format!("http://127.0.0.1:{port}"),
    ]);
    assert_eq!(out.code, EXIT_TRANSPORT, "{out:?}");
    assert!(
        out.stderr.starts_with(&format!(
            "error: cannot reach the gateway at http://127.0.0.1:{port}"
        )),
        "{out:?}"
    );
}

/// `pools probe` prints the gateway's probe report and exits by its verdict: 0 for a scheduler
/// that answers an unknown job with "not found", 1 for one that cannot be reached, 3 for an
/// unknown pool.
#[actix_web::test]
async fn probe_prints_the_report_and_exits_by_its_verdict() {
    let setup = Setup::start().await;
    assert_eq!(setup.apply_local().code, 0);
    let out = setup.run(&["pools", "probe", "local"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("ok") && l.ends_with("yes")),
        "{out:?}"
    );
    assert!(out.stdout.contains("read as notFound"), "{out:?}");
    let json = setup.run(&["pools", "probe", "local", "--output", "json"]);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["reachable"], true, "{report}");

    // The same manifest pointed at a closed port: reachable no, exit 1.
    let closed = format!("http://127.0.0.1:{}", crate::support::gateway::free_port());
    let manifest = setup.write(
        "closed.yaml",
        &yaml_serde::to_string(&local_manifest(&closed)).unwrap(),
    );
    let secrets = setup.write(
        "closed-secrets.yaml",
        &format!("LOCAL_POOL_TOKEN: {POOL_TOKEN}\n"),
    );
    let applied = setup.run(&[
        "pools",
        "apply",
        &manifest,
        "--name",
        "closed",
        "--secrets",
        &secrets,
    ]);
    assert_eq!(applied.code, 0, "{applied:?}");
    let out = setup.run(&["pools", "probe", "closed"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("reachable") && l.ends_with("no")),
        "{out:?}"
    );

    let out = setup.run(&["pools", "probe", "nope"]);
    assert_eq!(out.code, EXIT_API, "{out:?}");
    assert!(out.stderr.starts_with("error: Not Found (404 "), "{out:?}");
    assert!(!out.stdout.contains(POOL_TOKEN) && !out.stderr.contains(POOL_TOKEN));
}

#[test]
fn the_commands_document_their_options() {
    let out = Command::new(cattery_bin())
        .args(["runs", "watch", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for option in ["--server", "--token", "--token-file", "--output"] {
        assert!(help.contains(option), "{option} missing from {help}");
    }
}

/// A watch outlives a restart of the gateway: the stream is opened again from the last event
/// seen and the run's end still decides the exit code.
#[actix_web::test]
async fn watch_reconnects_when_the_gateway_restarts() {
    let mut setup = Setup::start().await;
    assert_eq!(setup.apply_local().code, 0);
    setup.dispatch("watch-restart", json!({"steps": 1000, "stepMs": 100}));
    setup
        .gateway
        .wait_for("watch-restart", RUN_LIMIT, |run| run["state"] == "running")
        .await;
    let mut watcher = setup.spawn(&["runs", "watch", "watch-restart", "-o", "json"]);
    let mut stdout = std::io::BufReader::new(watcher.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    setup.gateway.restart().await;
    assert!(
        watcher.try_wait().unwrap().is_none(),
        "the watcher gave up on the restart"
    );
    assert_eq!(setup.gateway.cancel("watch-restart").await.status, 202);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let out = finished(watcher);
    assert_eq!(out.code, EXIT_CANCELLED, "{first}{rest}{out:?}");
    let last: Value = serde_json::from_str(rest.lines().last().unwrap()).unwrap();
    assert_eq!(last["state"], "cancelled");
}
