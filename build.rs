//! Build metadata for `cattery --version`: the short git commit and the build date.
//!
//! `CATTERY_GIT_COMMIT` is `git rev-parse --short HEAD`, or `unknown` when git or the
//! repository is absent (a source tarball). `CATTERY_BUILD_DATE` is the UTC date of
//! `SOURCE_DATE_EPOCH` when it is set (reproducible builds), else of the time this script ran.
//!
//! The script reruns only when the checked-out commit can have changed (the repository's `HEAD`,
//! the branch it points to, `packed-refs`) or `SOURCE_DATE_EPOCH` changes, not on every build:
//! the date is that of the build that first saw the commit.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    watch_git_files();
    println!("cargo:rustc-env=CATTERY_GIT_COMMIT={commit}");
    let seconds = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|value| value.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
        });
    println!("cargo:rustc-env=CATTERY_BUILD_DATE={}", utc_date(seconds));
}

/// The trimmed output of a successful git command run in the package directory.
fn git(args: &[&str]) -> Option<String> {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")?;
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

/// Asks cargo to rerun this script when the checked-out commit may have changed. Works in a
/// plain clone and in a worktree (whose `.git` is a file pointing elsewhere).
fn watch_git_files() {
    let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]).map(PathBuf::from) else {
        return;
    };
    let common = git(&["rev-parse", "--git-common-dir"])
        .map(|dir| absolute(&git_dir, &dir))
        .unwrap_or_else(|| git_dir.clone());
    watch(&git_dir.join("HEAD"));
    watch(&common.join("packed-refs"));
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch(&common.join(reference));
    }
}

/// `dir` as git printed it: absolute, or relative to the working directory of the command.
fn absolute(git_dir: &Path, dir: &str) -> PathBuf {
    let path = PathBuf::from(dir);
    if path.is_absolute() {
        return path;
    }
    match std::env::var_os("CARGO_MANIFEST_DIR") {
        Some(base) => PathBuf::from(base).join(path),
        None => git_dir.to_owned(),
    }
}

fn watch(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// `YYYY-MM-DD` of a Unix time, in UTC (the civil-from-days algorithm of H. Hinnant).
fn utc_date(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
