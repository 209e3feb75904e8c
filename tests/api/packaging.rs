//! On-prem packaging: `--version` with its build metadata, the shipped systemd unit, JSON logs,
//! `cattery backup` while the gateway runs, and `cattery config check`.

use crate::support::database::TestDatabase;
use crate::support::gateway::{Gateway, Launch, LocalPool, cattery_bin};
use crate::support::manifests::repo_root;
use crate::support::wait::RUN_LIMIT;
use crate::support::{ADMIN_TOKEN, MASTER_KEY};
use serde_json::{Value, json};
use std::process::{Command, Output};

/// The variables of the test process that would change what a command reads.
const CATTERY_VARIABLES: [&str; 7] = [
    "CATTERY_CONFIG",
    "CATTERY_DATABASE_URL",
    "CATTERY_BIND",
    "CATTERY_MASTER_KEY",
    "CATTERY_MASTER_KEYS",
    "CATTERY_ADMIN_TOKEN",
    "RUST_LOG",
];

fn cattery(args: &[&str]) -> Command {
    let mut command = Command::new(cattery_bin());
    command.args(args);
    for name in CATTERY_VARIABLES {
        command.env_remove(name);
    }
    command.env("CATTERY__LOGGING__LEVEL", "warn");
    command
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn version_names_the_commit_and_the_build_date() {
    let output = cattery(&["--version"]).output().unwrap();
    assert!(output.status.success());
    let (stdout, _) = text(&output);
    let line = stdout.trim();
    let rest = line
        .strip_prefix(&format!("cattery {} (commit ", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("{line}"));
    let (commit, rest) = rest
        .split_once(", built ")
        .unwrap_or_else(|| panic!("{line}"));
    let expected = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(repo_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        );
    assert_eq!(commit, expected, "{line}");
    let date = rest.strip_suffix(')').unwrap_or_else(|| panic!("{line}"));
    let parts: Vec<&str> = date.split('-').collect();
    assert_eq!(parts.len(), 3, "{line}");
    assert!(
        parts[0].len() == 4 && parts[1].len() == 2 && parts[2].len() == 2,
        "{line}"
    );
    assert!(
        parts.iter().all(|p| p.chars().all(|c| c.is_ascii_digit())),
        "{line}"
    );
    assert!(
        parts[0] >= "2024" && ("01"..="12").contains(&parts[1]),
        "{line}"
    );
}

/// `systemd-analyze verify` of the shipped unit, with `ExecStart` pointing at the binary these
/// tests built (verify checks that the program exists). Without systemd-analyze the test says
/// so and passes, except under CI (`CI` set), where the package must be installed.
#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(repo_root().join("deploy/cattery.service")).unwrap();
    for directive in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "StateDirectory=cattery",
        "NoNewPrivileges=yes",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "LoadCredential=master.key:",
        "ExecStart=/usr/local/bin/cattery serve\n",
    ] {
        assert!(
            unit.contains(directive),
            "{directive} missing from the unit"
        );
    }
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing under CI: .ci/run installs the systemd package"
        );
        eprintln!("SKIPPED: systemd-analyze is not installed (Debian package systemd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cattery.service");
    let bin = cattery_bin();
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/cattery", bin.to_str().unwrap()),
    )
    .unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    // Unknown keys and bad values are only warnings, with exit status 0: none may be printed.
    let about_the_unit: Vec<&str> = stderr
        .lines()
        .chain(stdout.lines())
        .filter(|l| l.contains("cattery.service"))
        .collect();
    assert!(about_the_unit.is_empty(), "{about_the_unit:#?}");
}

#[actix_web::test]
async fn json_logs_are_one_json_object_per_line_without_secrets() {
    let db = TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("gateway.log");
    let mut gateway = Gateway::start(
        Launch::new(&db, &dir.path().join("data"))
            .env("CATTERY__LOGGING__FORMAT", "json")
            .env("CATTERY__LOGGING__LEVEL", "debug")
            .log_to(log.clone()),
    )
    .await;
    let pool_token = "json-logs-pool-token-31337";
    let pool = LocalPool::start(pool_token).await;
    pool.register_on(&gateway).await;
    let job_secret = "job-secret-value-0xfeedface";
    gateway
        .submit(
            "local",
            json!({"jobId": "json-log-1", "job": {"steps": 1, "stepMs": 10, "apiKey": job_secret}}),
        )
        .await;
    gateway.wait_settled("json-log-1").await;
    let refused = gateway
        .client
        .get(gateway.url("/v1/pools"))
        .bearer_auth("a-wrong-token-for-the-log")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    gateway.kill9();

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "cattery is listening"),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string()),
        "{text}"
    );
    for secret in [
        ADMIN_TOKEN,
        MASTER_KEY,
        pool_token,
        job_secret,
        "a-wrong-token-for-the-log",
    ] {
        assert!(!text.contains(secret), "{secret} is in the log");
    }
}

#[actix_web::test]
async fn backup_copies_the_database_of_a_running_gateway() {
    let db = TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("backup.db");
    let backup = |force: bool| {
        let mut args = vec!["backup", target.to_str().unwrap()];
        if force {
            args.push("--force");
        }
        cattery(&args)
            .env("CATTERY_DATABASE_URL", db.url())
            .output()
            .unwrap()
    };
    if db.is_postgres() {
        let output = backup(false);
        let (stdout, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
        assert!(stderr.contains("pg_dump"), "{stderr}");
        assert!(!stderr.contains(db.url()), "{stderr}");
        assert!(!target.exists());
        return;
    }
    let gateway = Gateway::start(Launch::new(&db, &dir.path().join("data"))).await;
    let pool = LocalPool::start("backup-pool-token-1").await;
    pool.register_on(&gateway).await;
    for i in 0..3 {
        gateway
            .submit(
                "local",
                json!({"jobId": format!("backup-{i}"), "job": {"steps": 1, "stepMs": 10}}),
            )
            .await;
    }
    for i in 0..3 {
        gateway
            .wait_released(&format!("backup-{i}"), "done", RUN_LIMIT)
            .await;
    }
    // One still running while the copy is taken.
    gateway
        .submit(
            "local",
            json!({"jobId": "backup-long", "job": {"steps": 1000, "stepMs": 100}}),
        )
        .await;

    let output = backup(false);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.starts_with("backed up "), "{stdout}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // An existing file is refused without --force, replaced with it.
    let output = backup(false);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    let output = backup(true);
    assert!(output.status.success(), "{:?}", text(&output));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The copy opens in a gateway of its own, with every run as it was.
    let copy_db = TestDatabase::create().await;
    let restored = Gateway::start(
        Launch::new(&copy_db, &dir.path().join("data-restored")).env(
            "CATTERY_DATABASE_URL",
            format!("sqlite://{}", target.display()),
        ),
    )
    .await;
    for i in 0..3 {
        let id = format!("backup-{i}");
        let original = gateway.run(&id).await;
        let copied = restored.run(&id).await;
        assert_eq!(copied["state"], "done", "{copied}");
        assert_eq!(copied, original);
        assert_eq!(restored.events(&id).await, gateway.events(&id).await);
    }
    let long = restored.run("backup-long").await;
    assert_eq!(long["pool"], "local");
    let pools = restored.get("/v1/pools/local").await;
    assert_eq!(pools.status, 200, "{}", pools.text);
}

#[test]
fn config_check_prints_the_effective_config_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let output = cattery(&["config", "check"])
        .env("CATTERY__DATADIR", dir.path())
        .env(
            "CATTERY_DATABASE_URL",
            "postgres://cattery:pg-password-77@127.0.0.1:5432/cattery",
        )
        .env("CATTERY__WEBHOOKS__SECRET", "webhook-secret-value-88")
        .env("CATTERY__FACADE__HARNESSSECRET", "harness-secret-value-99")
        .env("CATTERY_MASTER_KEY", MASTER_KEY)
        .env("CATTERY_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("CATTERY__SERVER__MAXBODYBYTES", "4096")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    for secret in [
        "pg-password-77",
        "webhook-secret-value-88",
        "harness-secret-value-99",
        MASTER_KEY,
        ADMIN_TOKEN,
    ] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} was printed"
        );
    }
    let config: Value = yaml_serde::from_str(&stdout).unwrap();
    assert_eq!(
        config["database"]["url"],
        "postgres://cattery:***@127.0.0.1:5432/cattery"
    );
    assert_eq!(config["webhooks"]["secret"], "***");
    assert_eq!(config["facade"]["harnessSecret"], "***");
    assert_eq!(config["server"]["maxBodyBytes"], 4096);
    assert_eq!(config["server"]["bind"], "127.0.0.1:8080");
    assert!(
        stdout.contains("# admin token: from CATTERY_ADMIN_TOKEN (***)"),
        "{stdout}"
    );
    assert!(stderr.contains("no problem"), "{stderr}");
    // Nothing was created by the check.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn config_check_lists_every_problem_with_its_key_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cattery.yaml");
    std::fs::write(
        &file,
        "server: { bind: nowhere }\nlogging: { format: xml, level: \"cattery=loud\" }\n\
         api:\n  tokens:\n    - { name: ci, sha256: abc, role: superuser }\n\
         egress: { allowHosts: [\"https://sched.corp\"] }\n\
         facade: { defaultPool: \"Not A Pool\" }\n",
    )
    .unwrap();
    let output = cattery(&["config", "check", "--config", file.to_str().unwrap()])
        // The file's logging.level, not the test default.
        .env_remove("CATTERY__LOGGING__LEVEL")
        .env("CATTERY__DATADIR", dir.path())
        .env("CATTERY_MASTER_KEY", "too-short")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    for key in [
        "server.bind",
        "logging.format",
        "logging.level",
        "api.tokens.0.role",
        "api.tokens.0.sha256",
        "egress.allowHosts",
        "facade.defaultPool",
        "CATTERY_MASTER_KEY",
    ] {
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with(&format!("error at {key}: ")))
            .collect();
        assert_eq!(lines.len(), 1, "{key}: {stderr}");
    }
    assert!(stderr.contains("8 problem(s)"), "{stderr}");
    assert!(!stderr.contains("too-short") && !stdout.contains("too-short"));

    // A key that does not exist: the load itself fails, naming it.
    std::fs::write(&file, "server: { bindd: 127.0.0.1:1 }\n").unwrap();
    let output = cattery(&["config", "check", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains("bindd"),
        "{stderr}"
    );
}
