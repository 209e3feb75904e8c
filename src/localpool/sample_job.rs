//! The built-in sample job: the default local-pool program, run as `cattery sample-job`.
//!
//! It reads the job JSON on stdin and reports like any well-behaved local job: one progress line
//! per step on stdout, then a result line, or a message on stderr and a non-zero exit code when
//! asked to fail. The job object accepts:
//!
//! | field      | type    | default                                      |
//! |------------|---------|----------------------------------------------|
//! | `steps`    | integer | 3 (at most [`MAX_STEPS`]; larger is clamped)  |
//! | `stepMs`   | integer | 200 (at most [`MAX_STEP_MS`]; clamped)        |
//! | `fail`     | bool    | false                                        |
//! | `exitCode` | integer | 1 (used only when `fail`)                    |
//! | `message`  | string  | "sample job failed as asked" (only when `fail`) |
//! | `result`   | any     | `{"summary":"completed <n> steps","steps":n}` |
//!
//! Empty input and JSON that is not an object use every default; input that is not JSON, or a
//! field of the wrong type, is a usage error (exit code [`USAGE_EXIT_CODE`]).

use serde::Deserialize;
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;

/// The most steps a sample job runs; a larger `steps` is clamped to it.
pub const MAX_STEPS: u64 = 1000;
/// The longest pause between two steps, in milliseconds; a larger `stepMs` is clamped to it.
pub const MAX_STEP_MS: u64 = 60_000;
/// The exit code for input the sample job cannot understand (and for output it cannot write).
pub const USAGE_EXIT_CODE: i32 = 2;

const DEFAULT_STEPS: u64 = 3;
const DEFAULT_STEP_MS: u64 = 200;
const DEFAULT_FAIL_MESSAGE: &str = "sample job failed as asked";

/// The sample job's input; every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SampleJobInput {
    steps: Option<u64>,
    step_ms: Option<u64>,
    #[serde(default)]
    fail: bool,
    exit_code: Option<i32>,
    message: Option<String>,
    result: Option<Value>,
}

/// Runs the sample job on `input` (the job JSON), writing progress and the result to `out` and
/// failure messages to `err`; returns the process exit code.
///
/// Returns 0 on success, the requested `exitCode` (default 1) when the job asks to fail, and
/// [`USAGE_EXIT_CODE`] when the input is not JSON or has a field of the wrong type. Sleeps
/// `stepMs` milliseconds (on the calling thread) before each step, so `stepMs: 0` runs instantly.
pub fn run_sample_job(input: &[u8], out: &mut impl Write, err: &mut impl Write) -> i32 {
    let parsed = match parse_input(input) {
        Ok(parsed) => parsed,
        Err(problem) => {
            // Nothing more can be reported if stderr is gone too.
            let _ = writeln!(err, "sample-job: {problem}");
            return USAGE_EXIT_CODE;
        }
    };
    match execute(&parsed, out, err) {
        Ok(code) => code,
        Err(error) => {
            let _ = writeln!(err, "sample-job: cannot write output: {error}");
            USAGE_EXIT_CODE
        }
    }
}

fn parse_input(input: &[u8]) -> Result<SampleJobInput, String> {
    if input.iter().all(u8::is_ascii_whitespace) {
        return Ok(SampleJobInput::default());
    }
    let value: Value = serde_json::from_slice(input)
        .map_err(|error| format!("the job input is not valid JSON: {error}"))?;
    if !value.is_object() {
        return Ok(SampleJobInput::default());
    }
    serde_json::from_value(value).map_err(|error| format!("the job input is invalid: {error}"))
}

fn execute(
    input: &SampleJobInput,
    out: &mut impl Write,
    err: &mut impl Write,
) -> std::io::Result<i32> {
    let steps = input.steps.unwrap_or(DEFAULT_STEPS).min(MAX_STEPS);
    let step_ms = input.step_ms.unwrap_or(DEFAULT_STEP_MS).min(MAX_STEP_MS);
    for completed in 1..=steps {
        if step_ms > 0 {
            std::thread::sleep(Duration::from_millis(step_ms));
        }
        let in_progress = u64::from(completed < steps);
        let line = json!({
            "progress": { "completed": completed, "inProgress": in_progress, "total": steps }
        });
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    if input.fail {
        let message = input.message.as_deref().unwrap_or(DEFAULT_FAIL_MESSAGE);
        writeln!(err, "{message}")?;
        err.flush()?;
        return Ok(input.exit_code.unwrap_or(1));
    }
    let result = input.result.clone().unwrap_or_else(
        || json!({ "summary": format!("completed {steps} steps"), "steps": steps }),
    );
    writeln!(out, "{}", json!({ "result": result }))?;
    out.flush()?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &str) -> (i32, Vec<Value>, String) {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let code = run_sample_job(input.as_bytes(), &mut out, &mut err);
        let lines = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        (code, lines, String::from_utf8(err).unwrap())
    }

    #[test]
    fn prints_one_progress_line_per_step_then_the_default_result() {
        let (code, lines, err) = run(r#"{"steps": 3, "stepMs": 0}"#);
        assert_eq!(code, 0);
        assert_eq!(err, "");
        assert_eq!(
            lines,
            vec![
                json!({"progress": {"completed": 1, "inProgress": 1, "total": 3}}),
                json!({"progress": {"completed": 2, "inProgress": 1, "total": 3}}),
                json!({"progress": {"completed": 3, "inProgress": 0, "total": 3}}),
                json!({"result": {"summary": "completed 3 steps", "steps": 3}}),
            ]
        );
    }

    #[test]
    fn returns_the_result_it_was_given() {
        let (code, lines, _) = run(r#"{"steps": 1, "stepMs": 0, "result": {"answer": 42}}"#);
        assert_eq!(code, 0);
        assert_eq!(lines.last(), Some(&json!({"result": {"answer": 42}})));
    }

    #[test]
    fn fails_with_the_requested_exit_code_and_message() {
        let (code, lines, err) =
            run(r#"{"steps": 2, "stepMs": 0, "fail": true, "exitCode": 7, "message": "boom"}"#);
        assert_eq!(code, 7);
        assert_eq!(err, "boom\n");
        assert_eq!(lines.len(), 2, "progress lines but no result: {lines:?}");
    }

    #[test]
    fn fails_with_exit_code_one_and_the_default_message_when_only_fail_is_set() {
        let (code, _, err) = run(r#"{"steps": 0, "fail": true}"#);
        assert_eq!(code, 1);
        assert_eq!(err.trim(), DEFAULT_FAIL_MESSAGE);
    }

    #[test]
    fn input_that_is_not_json_is_a_usage_error() {
        let (code, lines, err) = run("{not json");
        assert_eq!(code, USAGE_EXIT_CODE);
        assert!(lines.is_empty());
        assert!(err.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn a_field_of_the_wrong_type_is_a_usage_error() {
        let (code, _, err) = run(r#"{"steps": "many"}"#);
        assert_eq!(code, USAGE_EXIT_CODE);
        assert!(err.contains("invalid"), "{err}");
    }

    #[test]
    fn empty_or_non_object_input_uses_the_defaults() {
        for input in ["", "  \n", "null", "[1, 2]"] {
            let mut out = Vec::new();
            let mut err = Vec::new();
            // The defaults sleep 200 ms per step; only the parse is under test here.
            let parsed = parse_input(input.as_bytes()).unwrap();
            assert_eq!(parsed.steps, None, "{input:?}");
            assert!(!parsed.fail);
            let fast = SampleJobInput {
                step_ms: Some(0),
                ..parsed
            };
            assert_eq!(execute(&fast, &mut out, &mut err).unwrap(), 0);
            assert_eq!(String::from_utf8(out).unwrap().lines().count(), 4);
        }
    }

    #[test]
    fn steps_and_step_ms_are_clamped_to_their_maximum() {
        let parsed = parse_input(br#"{"steps": 5000, "stepMs": 0}"#).unwrap();
        let mut out = Vec::new();
        assert_eq!(execute(&parsed, &mut out, &mut Vec::new()).unwrap(), 0);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1001);
        assert!(text.contains(r#""total":1000"#));
    }
}
