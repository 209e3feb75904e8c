//! Classifies a scheduler's answer to one operation into a lifecycle outcome.

use crate::lifecycle::CallOutcome;
use crate::manifest::{NotFound, OpKind, Operation};

/// Statuses worth retrying: the scheduler may answer differently a little later.
pub const RETRYABLE_STATUSES: [u16; 7] = [408, 425, 429, 500, 502, 503, 504];

/// How many characters of an error body are kept in a run's error text.
const SNIPPET_CHARS: usize = 300;

/// Turns a status and body into an outcome for `operation` of the run whose dispatch id is
/// `dispatch_id` (a lookup looks for it in a list answer).
///
/// `body` is `Err` when the body could not be read (too large, connection cut).
///
/// A lookup answers [`CallOutcome::Accepted`] with the job's captures when it found the job,
/// and [`CallOutcome::NotFound`] when the answer (a 404 or 410, or a list without the job)
/// says the scheduler does not have it; anything else leaves the question open.
pub fn classify(
    operation: &Operation,
    dispatch_id: &str,
    status: u16,
    retry_after_ms: Option<u64>,
    body: Result<Vec<u8>, String>,
) -> CallOutcome {
    let op = operation.kind;
    let retryable = |message: String, unreadable: bool| CallOutcome::Retryable {
        message,
        retry_after_ms,
        unreadable,
    };
    if operation.is_success(status) {
        let body = match body {
            Ok(body) => body,
            Err(reason) => return retryable(format!("{} → {status}: {reason}", op.as_str()), true),
        };
        return match op {
            OpKind::Dispatch => match operation.capture(&body) {
                Ok(captures) => CallOutcome::Accepted {
                    captures,
                    note: None,
                },
                Err(e) => CallOutcome::Accepted {
                    captures: serde_json::Map::new(),
                    note: Some(format!(
                        "the scheduler accepted the job, but capturing failed: {e}"
                    )),
                },
            },
            OpKind::Lookup => match operation.find(&body, dispatch_id) {
                Ok(Some(captures)) => CallOutcome::Accepted {
                    captures,
                    note: None,
                },
                Ok(None) => CallOutcome::NotFound,
                Err(e) => retryable(format!("lookup → {status}: {e}"), true),
            },
            OpKind::Poll => match operation.observe(&body) {
                Ok(observation) => CallOutcome::Observed(Box::new(observation)),
                Err(e) => retryable(format!("poll → {status}: {e}"), true),
            },
            OpKind::Release | OpKind::FailureLog => CallOutcome::Accepted {
                captures: serde_json::Map::new(),
                note: None,
            },
        };
    }
    let snippet = body.as_deref().map(snippet).unwrap_or_default();
    let message = if snippet.is_empty() {
        format!("{} → {status}", op.as_str())
    } else {
        format!("{} → {status}: {snippet}", op.as_str())
    };
    if op == OpKind::Dispatch
        && operation.is_already_exists(status, body.as_deref().unwrap_or_default())
    {
        return CallOutcome::AlreadyExists;
    }
    if matches!(status, 404 | 410) {
        match (op, operation.not_found) {
            (OpKind::Lookup, _)
            | (OpKind::Poll, NotFound::Lost)
            | (OpKind::Release, NotFound::Success) => {
                return CallOutcome::NotFound;
            }
            (OpKind::Poll, _) => return retryable(message, true),
            _ => {}
        }
    }
    if RETRYABLE_STATUSES.contains(&status) {
        return retryable(message, false);
    }
    match op {
        // An answer a poll cannot use counts as an unreadable poll, not as the job's failure.
        OpKind::Poll => retryable(message, true),
        OpKind::Dispatch | OpKind::Lookup | OpKind::Release | OpKind::FailureLog => {
            CallOutcome::Rejected { message }
        }
    }
}

/// The first characters of an error body, on one line, for an operator-facing message, with
/// anything that looks like a credential redacted.
pub fn snippet(body: &[u8]) -> String {
    // Redact a bounded head (a credential cut at the end of it is beyond what is kept).
    let head: String = String::from_utf8_lossy(body)
        .chars()
        .take(SNIPPET_CHARS * 16)
        .collect();
    let text = crate::redact::redact_credentials(&head);
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(SNIPPET_CHARS)
        .collect();
    if text.chars().count() > SNIPPET_CHARS {
        out.push('…');
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::state::MappedState;
    use crate::manifest::{Defaults, Manifest};

    fn manifest(release_not_found: &str, poll_not_found: &str) -> Manifest {
        let text = format!(
            r#"
apiVersion: cattery/v1
baseUrl: https://scheduler.example
auth: {{ type: none }}
dispatch:
  request: {{ method: POST, path: /jobs, body: {{ name: "{{{{run.dispatchId}}}}" }} }}
  expect: [201]
  alreadyExists: [409]
  capture: {{ uid: metadata.uid }}
poll:
  request: {{ method: GET, path: "/jobs/{{{{run.dispatchId}}}}" }}
  notFound: {poll_not_found}
  map: {{ state: status, statusMap: {{ Succeeded: done }} }}
release:
  request: {{ method: DELETE, path: "/jobs/{{{{run.dispatchId}}}}" }}
  notFound: {release_not_found}
"#
        );
        Manifest::parse(&text, &Defaults::default()).unwrap()
    }

    fn body(text: &str) -> Result<Vec<u8>, String> {
        Ok(text.as_bytes().to_vec())
    }

    #[test]
    fn an_expected_dispatch_answer_is_accepted_with_its_captures() {
        let m = manifest("success", "lost");
        match classify(
            &m.dispatch,
            "job-1",
            201,
            None,
            body(r#"{"metadata":{"uid":"u-1"}}"#),
        ) {
            CallOutcome::Accepted { captures, note } => {
                assert_eq!(captures["uid"], "u-1");
                assert!(note.is_none());
            }
            other => panic!("{other:?}"),
        }
        // 200 is a 2xx but not in `expect`: not a success for this manifest.
        assert!(matches!(
            classify(&m.dispatch, "job-1", 200, None, body("{}")),
            CallOutcome::Rejected { .. }
        ));
    }

    #[test]
    fn a_capture_that_fails_still_accepts_the_job_and_says_so() {
        let m = manifest("success", "lost");
        match classify(&m.dispatch, "job-1", 201, None, body("created")) {
            CallOutcome::Accepted { captures, note } => {
                assert!(captures.is_empty());
                assert!(note.unwrap().contains("capturing failed"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn already_exists_statuses_reattach() {
        let m = manifest("success", "lost");
        assert_eq!(
            classify(&m.dispatch, "job-1", 409, None, body("{}")),
            CallOutcome::AlreadyExists
        );
    }

    #[test]
    fn retryable_statuses_are_retried_with_their_retry_after_and_others_rejected() {
        let m = manifest("success", "lost");
        for status in RETRYABLE_STATUSES {
            match classify(&m.dispatch, "job-1", status, Some(1_500), body("busy")) {
                CallOutcome::Retryable {
                    retry_after_ms,
                    unreadable,
                    message,
                } => {
                    assert_eq!(retry_after_ms, Some(1_500));
                    assert!(!unreadable);
                    assert!(message.contains(&status.to_string()));
                }
                other => panic!("{status}: {other:?}"),
            }
        }
        for status in [400, 401, 403, 404, 422] {
            match classify(&m.dispatch, "job-1", status, None, body("no")) {
                CallOutcome::Rejected { message } => {
                    assert_eq!(message, format!("dispatch → {status}: no"));
                }
                other => panic!("{status}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_poll_is_observed_or_lost_or_unreadable() {
        let lost = manifest("success", "lost");
        match classify(
            &lost.poll,
            "job-1",
            200,
            None,
            body(r#"{"status":"Succeeded"}"#),
        ) {
            CallOutcome::Observed(observation) => {
                assert_eq!(observation.state, Some(MappedState::Done));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            classify(&lost.poll, "job-1", 404, None, body("")),
            CallOutcome::NotFound
        );
        assert_eq!(
            classify(&lost.poll, "job-1", 410, None, body("")),
            CallOutcome::NotFound
        );
        let retry = manifest("success", "retry");
        assert!(matches!(
            classify(&retry.poll, "job-1", 404, None, body("")),
            CallOutcome::Retryable {
                unreadable: true,
                ..
            }
        ));
        assert!(matches!(
            classify(&lost.poll, "job-1", 200, None, body("<html>")),
            CallOutcome::Retryable {
                unreadable: true,
                ..
            }
        ));
        assert!(matches!(
            classify(
                &lost.poll,
                "job-1",
                200,
                None,
                Err("the answer is larger than 4194304 bytes".into())
            ),
            CallOutcome::Retryable {
                unreadable: true,
                ..
            }
        ));
        assert!(matches!(
            classify(&lost.poll, "job-1", 403, None, body("denied")),
            CallOutcome::Retryable {
                unreadable: true,
                ..
            }
        ));
    }

    #[test]
    fn a_release_of_a_job_that_is_gone_counts_as_released_unless_configured_otherwise() {
        let success = manifest("success", "lost");
        assert_eq!(
            classify(
                &success.release.clone().unwrap(),
                "job-1",
                404,
                None,
                body("")
            ),
            CallOutcome::NotFound
        );
        let fail = manifest("fail", "lost");
        assert!(matches!(
            classify(&fail.release.clone().unwrap(), "job-1", 404, None, body("")),
            CallOutcome::Rejected { .. }
        ));
    }

    #[test]
    fn a_lookup_answer_is_a_found_job_with_captures_or_not_found_or_an_open_question() {
        let m = Manifest::parse(
            r#"
apiVersion: cattery/v1
baseUrl: https://scheduler.example
dispatch:
  request: { method: POST, path: /jobs, body: { name: "{{run.dispatchId}}" } }
  capture: { id: job_id }
lookup:
  request: { method: GET, path: /jobs }
  items: jobs
  id: name
  capture: { id: job_id }
poll:
  request: { method: GET, path: "/jobs/{{capture.id}}" }
  map: { state: status }
"#,
            &Defaults::default(),
        )
        .unwrap();
        let lookup = m.lookup.clone().unwrap();
        let list = r#"{"jobs": [{"name": "job-1", "job_id": 7}]}"#;
        match classify(&lookup, "job-1", 200, None, body(list)) {
            CallOutcome::Accepted { captures, .. } => assert_eq!(captures["id"], 7),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            classify(&lookup, "job-2", 200, None, body(list)),
            CallOutcome::NotFound
        );
        assert_eq!(
            classify(&lookup, "job-1", 404, None, body("")),
            CallOutcome::NotFound
        );
        assert!(matches!(
            classify(&lookup, "job-1", 200, None, body("<html>")),
            CallOutcome::Retryable {
                unreadable: true,
                ..
            }
        ));
        assert!(matches!(
            classify(&lookup, "job-1", 503, None, body("")),
            CallOutcome::Retryable {
                unreadable: false,
                ..
            }
        ));
        assert!(matches!(
            classify(&lookup, "job-1", 403, None, body("")),
            CallOutcome::Rejected { .. }
        ));
    }

    #[test]
    fn an_already_exists_rule_with_a_body_condition_reattaches_only_on_that_body() {
        let m = Manifest::parse(
            r#"
apiVersion: cattery/v1
baseUrl: https://scheduler.example
dispatch:
  request: { method: POST, path: /pods, body: { name: "{{run.dispatchId}}" } }
  alreadyExists: [{ status: 500, bodyContains: "pod already exists" }]
poll:
  request: { method: GET, path: "/pods/{{run.dispatchId}}" }
"#,
            &Defaults::default(),
        )
        .unwrap();
        assert_eq!(
            classify(
                &m.dispatch,
                "job-1",
                500,
                None,
                body(r#"{"cause":"pod already exists","response":500}"#)
            ),
            CallOutcome::AlreadyExists
        );
        assert!(matches!(
            classify(
                &m.dispatch,
                "job-1",
                500,
                None,
                body(r#"{"cause":"no space"}"#)
            ),
            CallOutcome::Retryable { .. }
        ));
    }

    #[test]
    fn error_snippets_are_cut_and_kept_on_one_line() {
        let long = "x".repeat(1_000);
        let cut = snippet(long.as_bytes());
        assert_eq!(cut.chars().count(), 301);
        assert!(cut.ends_with('…'));
        assert_eq!(snippet(b"line one\nline two\r\n"), "line one line two");
    }
}
