//! Cat-Factory's reading of poll answers (`map.coerce: cat-factory`): status words, numbers, result and channel coercions.
//!
//! These are the rules of Cat-Factory's runner-pool interpreter (CATFACTORY.md §1.7–§1.9),
//! applied to values that the manifest's JMESPath expressions already extracted: the status
//! vocabulary (cancelled is a failure, eviction words are a lost job), `Number()` for counts and
//! heartbeats, the failure causes it keeps, and the field-by-field coercion of the harness
//! `result` envelope and of the live channels (`followUps`, `callMetrics`, `validationReport`,
//! `reproductionReport`, `sliceReviews`, `toolServers`).

use super::vocabulary::{DONE_WORDS, FAILED_WORDS, LOST_WORDS};
use crate::domain::state::MappedState;
use serde_json::{Map, Number, Value};

/// Words that are failures for Cat-Factory although cattery's own vocabulary reads them as
/// `cancelled`.
const CANCELLED_AS_FAILED: &[&str] = &["cancelled", "canceled"];

/// The failure causes Cat-Factory keeps; any other mapped cause is dropped.
pub(crate) const FAILURE_CAUSES: &[&str] = &[
    "inactivity-timeout",
    "max-duration",
    "no-tool-progress",
    "agent",
    "git",
    "branch-contended",
    "api",
    "llm-upstream",
    "no-usable-output",
    "no-changes",
    "deploy",
];

/// Tool-server statuses kept as they are; anything else reads as `unknown`.
const TOOL_SERVER_STATUSES: &[&str] = &["ready", "failed"];

/// Classifies a non-blank status word the way Cat-Factory does.
///
/// The statusMap (compared trimmed and lower-cased) wins; then the built-in words: done,
/// failed (including cancelled and canceled), and the eviction words, which read as `lost`.
/// A word mapped to `failed` that is an eviction word is `lost` too (Cat-Factory flags it as
/// an eviction whatever the statusMap says). Anything else is `running`, flagged as unmapped.
/// Returns the state and whether the word was unmapped.
pub(crate) fn classify(word: &str, status_map: &[(String, MappedState)]) -> (MappedState, bool) {
    let normalised = word.trim().to_lowercase();
    let eviction = LOST_WORDS.contains(&normalised.as_str());
    if let Some((_, state)) = status_map
        .iter()
        .find(|(from, _)| from.trim().to_lowercase() == normalised)
    {
        let state = if *state == MappedState::Failed && eviction {
            MappedState::Lost
        } else {
            *state
        };
        return (state, false);
    }
    if DONE_WORDS.contains(&normalised.as_str()) {
        (MappedState::Done, false)
    } else if FAILED_WORDS.contains(&normalised.as_str())
        || CANCELLED_AS_FAILED.contains(&normalised.as_str())
    {
        (MappedState::Failed, false)
    } else if eviction {
        (MappedState::Lost, false)
    } else {
        (MappedState::Running, true)
    }
}

/// JavaScript's `Number()` of a scalar's text: blank text is 0, hex/octal/binary prefixes are
/// read, anything that is not a finite number is `None`.
pub(crate) fn number(text: &str) -> Option<f64> {
    let t = text.trim();
    if t.is_empty() {
        return Some(0.0);
    }
    let radix = |prefix: &[&str], radix: u32| -> Option<Option<f64>> {
        let rest = prefix.iter().find_map(|p| t.strip_prefix(p))?;
        Some(u64::from_str_radix(rest, radix).ok().map(|n| n as f64))
    };
    if let Some(parsed) = radix(&["0x", "0X"], 16)
        .or_else(|| radix(&["0o", "0O"], 8))
        .or_else(|| radix(&["0b", "0B"], 2))
    {
        return parsed;
    }
    // Rust accepts words JavaScript does not ("inf", "nan"); only digits, signs, dots and
    // exponents are numbers here.
    if !t
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E'))
    {
        return None;
    }
    t.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// A finite number as JSON (integers stay integers).
fn number_value(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "a whole number below 2^53 converts exactly"
        )]
        let whole = n as i64;
        Value::Number(whole.into())
    } else {
        Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

/// A heartbeat as Cat-Factory reads it: the text of a finite number, or none (ISO dates are
/// not numbers and are dropped).
pub(crate) fn heartbeat(text: &str) -> Option<String> {
    number(text)
        .filter(|_| !text.trim().is_empty())
        .map(|n| number_value(n).to_string())
}

/// A failure cause Cat-Factory keeps, or none.
pub(crate) fn failure_cause(text: &str) -> Option<String> {
    FAILURE_CAUSES.contains(&text).then(|| text.to_owned())
}

/// Coerces one channel value by its name; `None` means nothing is forwarded (absent, invalid,
/// or an empty list). Names that are not Cat-Factory channels pass through unless null.
pub(crate) fn channel(name: &str, value: &Value) -> Option<Value> {
    let non_empty = |items: Vec<Value>| (!items.is_empty()).then_some(Value::Array(items));
    match name {
        "followUps" => non_empty(list(value, follow_up)),
        "callMetrics" => non_empty(list(value, call_metric)),
        "validationReport" => validation_report(value),
        "reproductionReport" => reproduction_report(value),
        "sliceReviews" => non_empty(list(value, slice_review)),
        "toolServers" => non_empty(list(value, tool_server)),
        _ => (!value.is_null()).then(|| value.clone()),
    }
}

/// The harness `result` envelope, keeping only the fields Cat-Factory keeps (CATFACTORY.md
/// §1.9). Anything that is not an object gives an empty result.
pub(crate) fn result(value: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    let Some(input) = value.as_object() else {
        return out;
    };
    for key in ["prUrl", "branch", "summary", "error", "defaultBranch"] {
        if let Some(Value::String(s)) = input.get(key) {
            out.insert(key.to_owned(), Value::String(s.clone()));
        }
    }
    if let Some(Value::Bool(b)) = input.get("pushed") {
        out.insert("pushed".to_owned(), Value::Bool(*b));
    }
    if let Some(Value::Array(items)) = input.get("peerPullRequests") {
        let peers: Vec<Value> = items.iter().filter_map(peer_pull_request).collect();
        out.insert("peerPullRequests".to_owned(), Value::Array(peers));
    }
    if let Some(custom) = input.get("custom").filter(|v| !v.is_null()) {
        out.insert("custom".to_owned(), custom.clone());
    }
    if let Some(usage) = input.get("usage")
        && usage.get("inputTokens").is_some_and(Value::is_number)
        && usage.get("outputTokens").is_some_and(Value::is_number)
    {
        out.insert("usage".to_owned(), usage.clone());
    }
    if let Some(metrics @ Value::Array(_)) = input.get("callMetrics") {
        out.insert(
            "callMetrics".to_owned(),
            Value::Array(list(metrics, call_metric)),
        );
    }
    if let Some(report) = input.get("effortReport").and_then(effort_report) {
        out.insert("effortReport".to_owned(), report);
    }
    for (key, coerce) in [
        (
            "validationReport",
            validation_report as fn(&Value) -> Option<Value>,
        ),
        ("reproductionReport", reproduction_report),
    ] {
        if let Some(report) = input.get(key).and_then(coerce) {
            out.insert(key.to_owned(), report);
        }
    }
    out
}

fn list(value: &Value, entry: fn(&Map<String, Value>) -> Option<Value>) -> Vec<Value> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_object().and_then(entry))
                .collect()
        })
        .unwrap_or_default()
}

fn string<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    object.get(key).and_then(Value::as_str)
}

fn copy_if(
    out: &mut Map<String, Value>,
    object: &Map<String, Value>,
    key: &str,
    keep: fn(&Value) -> bool,
) {
    if let Some(value) = object.get(key).filter(|v| keep(v)) {
        out.insert(key.to_owned(), value.clone());
    }
}

fn is_true(value: &Value) -> bool {
    value == &Value::Bool(true)
}

fn peer_pull_request(item: &Value) -> Option<Value> {
    let object = item.as_object()?;
    let mut out = Map::new();
    for key in ["repo", "prUrl", "branch"] {
        out.insert(
            key.to_owned(),
            Value::String(string(object, key)?.to_owned()),
        );
    }
    if let Some(Value::Array(ids)) = object.get("frameIds") {
        let ids: Vec<Value> = ids.iter().filter(|v| v.is_string()).cloned().collect();
        out.insert("frameIds".to_owned(), Value::Array(ids));
    }
    Some(Value::Object(out))
}

fn call_metric(object: &Map<String, Value>) -> Option<Value> {
    let mut out = Map::new();
    for key in ["promptText", "responseText", "reasoningText"] {
        out.insert(
            key.to_owned(),
            Value::String(string(object, key)?.to_owned()),
        );
    }
    for key in ["messageCount", "inputTokens", "outputTokens"] {
        let n = object.get(key).filter(|v| v.is_number())?;
        out.insert(key.to_owned(), n.clone());
    }
    for key in ["cacheReadTokens", "cacheWriteTokens"] {
        let n = object
            .get(key)
            .filter(|v| v.is_number())
            .cloned()
            .unwrap_or_else(|| Value::from(0));
        out.insert(key.to_owned(), n);
    }
    let finish = object
        .get("finishReason")
        .filter(|v| v.is_string())
        .cloned()
        .unwrap_or(Value::Null);
    out.insert("finishReason".to_owned(), finish);
    copy_if(&mut out, object, "model", Value::is_string);
    copy_if(&mut out, object, "seq", Value::is_number);
    copy_if(&mut out, object, "phase", Value::is_string);
    Some(Value::Object(out))
}

fn validation_outcome(object: &Map<String, Value>) -> Option<Value> {
    let mut out = Map::new();
    out.insert(
        "label".to_owned(),
        Value::String(string(object, "label")?.to_owned()),
    );
    out.insert(
        "exitCode".to_owned(),
        object.get("exitCode").filter(|v| v.is_number())?.clone(),
    );
    out.insert(
        "command".to_owned(),
        Value::String(string(object, "command").unwrap_or_default().to_owned()),
    );
    out.insert(
        "passed".to_owned(),
        Value::Bool(object.get("passed").is_some_and(is_true)),
    );
    copy_if(&mut out, object, "outputTail", Value::is_string);
    copy_if(&mut out, object, "durationMs", Value::is_number);
    copy_if(&mut out, object, "timedOut", is_true);
    Some(Value::Object(out))
}

fn validation_report(value: &Value) -> Option<Value> {
    let object = value.as_object()?;
    let outcomes = object.get("outcomes")?.as_array()?;
    let outcomes: Vec<Value> = outcomes
        .iter()
        .filter_map(|o| o.as_object().and_then(validation_outcome))
        .collect();
    let mut out = Map::new();
    out.insert(
        "passed".to_owned(),
        Value::Bool(object.get("passed").is_some_and(is_true)),
    );
    let attempts = object
        .get("attempts")
        .filter(|v| v.is_number())
        .cloned()
        .unwrap_or_else(|| Value::from(1));
    let max_default = if outcomes.is_empty() { 0 } else { 1 };
    let max_attempts = object
        .get("maxAttempts")
        .filter(|v| v.is_number())
        .cloned()
        .unwrap_or_else(|| Value::from(max_default));
    out.insert("attempts".to_owned(), attempts);
    out.insert("maxAttempts".to_owned(), max_attempts);
    out.insert("outcomes".to_owned(), Value::Array(outcomes));
    copy_if(&mut out, object, "at", |v| v.is_string() || v.is_number());
    Some(Value::Object(out))
}

fn reproduction_phase(value: &Value) -> Option<Value> {
    let object = value.as_object()?;
    let mut out = Map::new();
    out.insert(
        "exitCode".to_owned(),
        object.get("exitCode").filter(|v| v.is_number())?.clone(),
    );
    out.insert(
        "passed".to_owned(),
        Value::Bool(object.get("passed").is_some_and(is_true)),
    );
    copy_if(&mut out, object, "outputTail", Value::is_string);
    copy_if(&mut out, object, "durationMs", Value::is_number);
    copy_if(&mut out, object, "timedOut", is_true);
    copy_if(&mut out, object, "setupFailed", is_true);
    Some(Value::Object(out))
}

fn strings(value: Option<&Value>) -> Vec<Value> {
    value
        .and_then(Value::as_array)
        .map(|items| items.iter().filter(|v| v.is_string()).cloned().collect())
        .unwrap_or_default()
}

fn reproduction_report(value: &Value) -> Option<Value> {
    let object = value.as_object()?;
    let mut out = Map::new();
    out.insert(
        "command".to_owned(),
        Value::String(string(object, "command")?.to_owned()),
    );
    let status = string(object, "status")
        .filter(|s| matches!(*s, "reproduced" | "declared_infeasible"))
        .unwrap_or("inconclusive");
    out.insert("status".to_owned(), Value::String(status.to_owned()));
    out.insert(
        "testPaths".to_owned(),
        Value::Array(strings(object.get("testPaths"))),
    );
    for key in ["attempts", "maxAttempts"] {
        let n = object
            .get(key)
            .filter(|v| v.is_number())
            .cloned()
            .unwrap_or_else(|| Value::from(1));
        out.insert(key.to_owned(), n);
    }
    for key in ["base", "final"] {
        if let Some(phase) = object.get(key).and_then(reproduction_phase) {
            out.insert(key.to_owned(), phase);
        }
    }
    if object.get("omittedTestPaths").is_some_and(Value::is_array) {
        out.insert(
            "omittedTestPaths".to_owned(),
            Value::Array(strings(object.get("omittedTestPaths"))),
        );
    }
    for key in ["reason", "alternativeVerification", "note"] {
        copy_if(&mut out, object, key, Value::is_string);
    }
    copy_if(&mut out, object, "at", |v| v.is_string() || v.is_number());
    Some(Value::Object(out))
}

fn slice_review(object: &Map<String, Value>) -> Option<Value> {
    let label = string(object, "label").filter(|l| !l.trim().is_empty())?;
    let mut out = Map::new();
    out.insert("label".to_owned(), Value::String(label.to_owned()));
    let status = if string(object, "status") == Some("completed") {
        "completed"
    } else {
        "in_progress"
    };
    out.insert("status".to_owned(), Value::String(status.to_owned()));
    copy_if(&mut out, object, "report", Value::is_string);
    Some(Value::Object(out))
}

fn tool_server(object: &Map<String, Value>) -> Option<Value> {
    let id = string(object, "id")
        .map(str::trim)
        .filter(|i| !i.is_empty())?;
    let mut out = Map::new();
    out.insert("id".to_owned(), Value::String(id.to_owned()));
    let status = match string(object, "status") {
        Some(s) if TOOL_SERVER_STATUSES.contains(&s) => s,
        _ => "unknown",
    };
    out.insert("status".to_owned(), Value::String(status.to_owned()));
    if let Some(count) = object
        .get("toolCount")
        .filter(|v| v.as_f64().is_some_and(|n| n.is_finite() && n >= 0.0))
    {
        out.insert("toolCount".to_owned(), count.clone());
    }
    Some(Value::Object(out))
}

fn follow_up(object: &Map<String, Value>) -> Option<Value> {
    let title = string(object, "title")
        .map(str::trim)
        .filter(|t| !t.is_empty())?;
    let mut out = Map::new();
    let kind = if string(object, "kind") == Some("question") {
        "question"
    } else {
        "follow_up"
    };
    out.insert("kind".to_owned(), Value::String(kind.to_owned()));
    out.insert("title".to_owned(), Value::String(title.to_owned()));
    copy_if(&mut out, object, "detail", Value::is_string);
    copy_if(&mut out, object, "suggestedAction", Value::is_string);
    Some(Value::Object(out))
}

fn effort_report(value: &Value) -> Option<Value> {
    let object = value.as_object()?;
    let mut out = Map::new();
    let given = object
        .get("difficulty")
        .and_then(Value::as_f64)
        .filter(|n| n.is_finite());
    let difficulty = given.map_or(5.0, |n| n.round().clamp(1.0, 10.0));
    out.insert("difficulty".to_owned(), number_value(difficulty));
    for key in ["summary", "reducedEffectiveness"] {
        if let Some(text) = string(object, key).map(str::trim).filter(|t| !t.is_empty()) {
            out.insert(key.to_owned(), Value::String(text.to_owned()));
        }
    }
    let obstacles: Vec<Value> = object
        .get("obstacles")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .filter(|s| !s.trim().is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    if !obstacles.is_empty() {
        out.insert("obstacles".to_owned(), Value::Array(obstacles));
    }
    (given.is_some() || out.len() > 1).then_some(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_words_follow_cat_factory_vocabularies() {
        let map = vec![
            ("  In_Progress ".to_owned(), MappedState::Running),
            ("succeeded".to_owned(), MappedState::Done),
            ("Wiped".to_owned(), MappedState::Failed),
            ("OOMKilled".to_owned(), MappedState::Failed),
            ("preempted".to_owned(), MappedState::Running),
        ];
        let table: &[(&str, MappedState, bool)] = &[
            ("in_progress", MappedState::Running, false),
            ("SUCCEEDED ", MappedState::Done, false),
            ("wiped", MappedState::Failed, false),
            // an eviction word mapped to failed is still an eviction
            ("oomkilled", MappedState::Lost, false),
            // mapping an eviction word to running suppresses the eviction
            ("Preempted", MappedState::Running, false),
            ("Complete", MappedState::Done, false),
            ("finished", MappedState::Done, false),
            ("errored", MappedState::Failed, false),
            ("Cancelled", MappedState::Failed, false),
            ("canceled", MappedState::Failed, false),
            ("deadline_exceeded", MappedState::Failed, false),
            ("Evicted", MappedState::Lost, false),
            ("node-lost", MappedState::Lost, false),
            ("lost", MappedState::Lost, false),
            // canonical names are not special for Cat-Factory
            ("pending", MappedState::Running, true),
            ("queued", MappedState::Running, true),
            ("wibble", MappedState::Running, true),
        ];
        for (word, state, unmapped) in table {
            assert_eq!(classify(word, &map), (*state, *unmapped), "{word}");
        }
    }

    #[test]
    fn numbers_follow_javascript_number() {
        assert_eq!(number("3"), Some(3.0));
        assert_eq!(number(" 4.5 "), Some(4.5));
        assert_eq!(number(""), Some(0.0));
        assert_eq!(number("0x10"), Some(16.0));
        assert_eq!(number("1e3"), Some(1000.0));
        assert_eq!(number("true"), None);
        assert_eq!(number("Infinity"), None);
        assert_eq!(number("inf"), None);
        assert_eq!(number("2024-01-01T00:00:00Z"), None);
        assert_eq!(heartbeat("1700000000000").as_deref(), Some("1700000000000"));
        assert_eq!(heartbeat("2024-01-01T00:00:00Z"), None);
        assert_eq!(heartbeat(""), None);
        assert_eq!(
            failure_cause("branch-contended").as_deref(),
            Some("branch-contended")
        );
        assert_eq!(failure_cause("oom"), None);
    }

    #[test]
    fn the_result_keeps_only_what_cat_factory_keeps() {
        let input = json!({
            "prUrl": "https://github.com/o/r/pull/1", "branch": "b", "summary": "s",
            "error": 5, "defaultBranch": "main", "pushed": true,
            "peerPullRequests": [
                {"repo": "o/p", "prUrl": "u", "branch": "pb", "frameIds": ["f1", 2]},
                {"repo": "o/q", "prUrl": "u"}
            ],
            "custom": {"blueprint": {"any": ["thing"]}},
            "usage": {"inputTokens": 10, "outputTokens": 20, "costUsd": 0.1},
            "callMetrics": [
                {"promptText": "p", "responseText": "r", "reasoningText": "", "messageCount": 2,
                 "inputTokens": 1, "outputTokens": 2, "seq": 1, "model": "m", "phase": 7},
                {"promptText": "p", "responseText": "r", "messageCount": 2, "inputTokens": 1, "outputTokens": 2}
            ],
            "effortReport": {"difficulty": 12.4, "summary": "  hard  ", "obstacles": ["x", " ", 3]},
            "validationReport": {"outcomes": [{"label": "test", "exitCode": 0, "passed": "yes"}]},
            "reproductionReport": {"command": "npm test", "status": "weird"},
            "ralphVerdict": "continue", "stats": {"turns": 3}, "infraSetup": {}, "preview": {"url": "x"}
        });
        let out = Value::Object(result(&input));
        assert_eq!(
            out,
            json!({
                "prUrl": "https://github.com/o/r/pull/1", "branch": "b", "summary": "s",
                "defaultBranch": "main", "pushed": true,
                "peerPullRequests": [{"repo": "o/p", "prUrl": "u", "branch": "pb", "frameIds": ["f1"]}],
                "custom": {"blueprint": {"any": ["thing"]}},
                "usage": {"inputTokens": 10, "outputTokens": 20, "costUsd": 0.1},
                "callMetrics": [
                    {"promptText": "p", "responseText": "r", "reasoningText": "", "messageCount": 2,
                     "inputTokens": 1, "outputTokens": 2, "cacheReadTokens": 0, "cacheWriteTokens": 0,
                     "finishReason": null, "seq": 1, "model": "m"}
                ],
                "effortReport": {"difficulty": 10, "summary": "hard", "obstacles": ["x"]},
                "validationReport": {"passed": false, "attempts": 1, "maxAttempts": 1, "outcomes": [
                    {"label": "test", "exitCode": 0, "command": "", "passed": false}
                ]},
                "reproductionReport": {"command": "npm test", "status": "inconclusive", "testPaths": [],
                    "attempts": 1, "maxAttempts": 1}
            })
        );
        assert_eq!(result(&json!("text")), Map::new());
        // an effort report with only a defaulted difficulty is dropped
        assert!(!result(&json!({"effortReport": {"obstacles": []}})).contains_key("effortReport"));
        assert_eq!(
            result(&json!({"effortReport": {"difficulty": 0.2}}))["effortReport"],
            json!({"difficulty": 1})
        );
    }

    #[test]
    fn channels_are_coerced_by_name_and_empty_lists_are_not_forwarded() {
        assert_eq!(
            channel(
                "followUps",
                &json!([{"kind": "question", "title": " Why? ", "detail": "d"}, {"title": "  "}, {"kind": "x", "title": "t", "suggestedAction": 1}])
            ),
            Some(
                json!([{"kind": "question", "title": "Why?", "detail": "d"}, {"kind": "follow_up", "title": "t"}])
            )
        );
        assert_eq!(channel("followUps", &json!([])), None);
        assert_eq!(channel("callMetrics", &json!([{"promptText": "p"}])), None);
        assert_eq!(
            channel(
                "sliceReviews",
                &json!([{"label": " a ", "status": "completed", "report": "ok"}, {"label": "b", "status": "Completed"}, {"label": ""}])
            ),
            Some(
                json!([{"label": " a ", "status": "completed", "report": "ok"}, {"label": "b", "status": "in_progress"}])
            )
        );
        assert_eq!(
            channel(
                "toolServers",
                &json!([{"id": " gh ", "status": "ready", "toolCount": 0}, {"id": "x", "status": "booting", "toolCount": -1}])
            ),
            Some(
                json!([{"id": "gh", "status": "ready", "toolCount": 0}, {"id": "x", "status": "unknown"}])
            )
        );
        assert_eq!(channel("validationReport", &json!({"outcomes": 3})), None);
        assert_eq!(
            channel("validationReport", &json!({"outcomes": [], "passed": true})),
            Some(json!({"passed": true, "attempts": 1, "maxAttempts": 0, "outcomes": []}))
        );
        assert_eq!(
            channel("reproductionReport", &json!({"status": "reproduced"})),
            None
        );
        assert_eq!(
            channel(
                "reproductionReport",
                &json!({"command": "c", "status": "reproduced", "testPaths": ["a", 1],
                        "base": {"exitCode": 1, "passed": true, "timedOut": false, "setupFailed": true},
                        "final": {"passed": true}, "note": "n"})
            ),
            Some(
                json!({"command": "c", "status": "reproduced", "testPaths": ["a"], "attempts": 1, "maxAttempts": 1,
                        "base": {"exitCode": 1, "passed": true, "setupFailed": true}, "note": "n"})
            )
        );
        assert_eq!(channel("phase", &json!("clone")), Some(json!("clone")));
        assert_eq!(channel("phase", &Value::Null), None);
    }
}
