//! Classifies a scheduler's answer to one operation into a lifecycle outcome.

use crate::lifecycle::CallOutcome;
use crate::manifest::{NotFound, OpKind, Operation};

/// Statuses worth retrying: the scheduler may answer differently a little later.
pub const RETRYABLE_STATUSES: [u16; 7] = [408, 425, 429, 500, 502, 503, 504];

/// How many characters of an error body are kept in a run's error text.
const SNIPPET_CHARS: usize = 300;

/// Turns a status and body into an outcome for `operation`.
///
/// `body` is `Err` when the body could not be read (too large, connection cut).
pub fn classify(
    operation: &Operation,
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
            OpKind::Poll => match operation.observe(&body) {
                Ok(observation) => CallOutcome::Observed(Box::new(observation)),
                Err(e) => retryable(format!("poll → {status}: {e}"), true),
            },
            OpKind::Release => CallOutcome::Accepted {
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
    if op == OpKind::Dispatch && operation.already_exists.contains(&status) {
        return CallOutcome::AlreadyExists;
    }
    if matches!(status, 404 | 410) {
        match (op, operation.not_found) {
            (OpKind::Poll, NotFound::Lost) | (OpKind::Release, NotFound::Success) => {
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
        OpKind::Dispatch | OpKind::Release => CallOutcome::Rejected { message },
    }
}

/// The first characters of an error body, on one line, for an operator-facing message.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
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
