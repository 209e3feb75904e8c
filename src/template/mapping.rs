//! JMESPath mapping of scheduler answers: compiled expressions, captures and the poll observation.

use crate::domain::run::Progress;
use crate::domain::state::MappedState;
use crate::manifest::catfactory_coerce as cf;
use crate::manifest::{MapError, Observation, Problem, classify};
use serde_json::{Map, Value};
use std::fmt;

/// A compiled JMESPath expression and the manifest path it came from.
#[derive(Clone)]
pub(crate) struct Expr {
    path: String,
    expr: jmespath::Expression<'static>,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expr")
            .field("path", &self.path)
            .field("expr", &self.expr.as_str())
            .finish()
    }
}

impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.expr.as_str() == other.expr.as_str()
    }
}

/// The JMESPath runtime: the standard functions plus `div` and `mod`, integer arithmetic that
/// JMESPath lacks (for example a wait status into an exit code: `div(exit_code, `256`)`).
static RUNTIME: std::sync::LazyLock<jmespath::Runtime> = std::sync::LazyLock::new(|| {
    use jmespath::functions::{ArgumentType, CustomFunction, Signature};
    let mut runtime = jmespath::Runtime::new();
    runtime.register_builtin_functions();
    let numbers = || Signature::new(vec![ArgumentType::Number, ArgumentType::Number], None);
    runtime.register_function(
        "div",
        Box::new(CustomFunction::new(
            numbers(),
            Box::new(|args, _| Ok(arithmetic(args, i64::checked_div_euclid))),
        )),
    );
    runtime.register_function(
        "mod",
        Box::new(CustomFunction::new(
            numbers(),
            Box::new(|args, _| Ok(arithmetic(args, i64::checked_rem_euclid))),
        )),
    );
    runtime
});

/// Applies an integer operation to two numeric arguments (truncated toward zero); `null` when
/// either is not a whole number, the divisor is zero, or the result overflows (`i64::MIN / -1`).
fn arithmetic(args: &[jmespath::Rcvar], op: fn(i64, i64) -> Option<i64>) -> jmespath::Rcvar {
    let int = |v: &jmespath::Rcvar| v.as_number().filter(|n| n.is_finite() && n.fract() == 0.0);
    let value = match (args.first().and_then(int), args.get(1).and_then(int)) {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "whole numbers within i64 range; larger ones saturate"
        )]
        (Some(a), Some(b)) => op(a as i64, b as i64).map_or(jmespath::Variable::Null, |n| {
            jmespath::Variable::Number(serde_json::Number::from(n))
        }),
        _ => jmespath::Variable::Null,
    };
    jmespath::Rcvar::new(value)
}

/// Compiles `source` (found at manifest path `path`), or records why it does not compile.
pub(crate) fn compile(path: &str, source: &str, problems: &mut Vec<Problem>) -> Option<Expr> {
    if source.trim().is_empty() {
        problems.push(Problem {
            path: path.to_owned(),
            message: "the JMESPath expression is empty; write one such as status.phase".to_owned(),
        });
        return None;
    }
    match RUNTIME.compile(source) {
        Ok(expr) => Some(Expr {
            path: path.to_owned(),
            expr,
        }),
        Err(err) => {
            problems.push(Problem {
                path: path.to_owned(),
                message: format!(
                    "the JMESPath expression does not compile (at character {}): {}; see \
                     https://jmespath.org/specification.html",
                    err.offset, err.reason
                ),
            });
            None
        }
    }
}

impl Expr {
    /// Evaluates the expression on a JSON document.
    ///
    /// # Errors
    /// [`MapError::Expression`] with the manifest path when evaluation fails (a function given
    /// the wrong type, for example).
    pub(crate) fn eval(&self, doc: &Value) -> Result<Value, MapError> {
        let failed = |message: String| MapError::Expression {
            path: self.path.clone(),
            message,
        };
        let result = self
            .expr
            .search(doc)
            .map_err(|err| failed(err.reason.to_string()))?;
        serde_json::to_value(&*result).map_err(|err| failed(err.to_string()))
    }
}

/// Parses an answer body as JSON; an empty or non-JSON body is [`MapError::NotJson`].
pub(crate) fn parse_body(body: &[u8]) -> Result<Value, MapError> {
    serde_json::from_slice(body).map_err(|_| MapError::NotJson)
}

/// The compiled `map` of a poll operation.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct StateMapping {
    /// `map.state`.
    pub(crate) state: Option<Expr>,
    /// `map.statusMap`, in document order.
    pub(crate) status_map: Vec<(String, MappedState)>,
    /// `map.progress.completed`.
    pub(crate) completed: Option<Expr>,
    /// `map.progress.inProgress`.
    pub(crate) in_progress: Option<Expr>,
    /// `map.progress.total`.
    pub(crate) total: Option<Expr>,
    /// `map.result`.
    pub(crate) result: Option<Expr>,
    /// `map.error`.
    pub(crate) error: Option<Expr>,
    /// `map.failureCause`.
    pub(crate) failure_cause: Option<Expr>,
    /// `map.detail`.
    pub(crate) detail: Option<Expr>,
    /// `map.heartbeat`.
    pub(crate) heartbeat: Option<Expr>,
    /// `map.externalId`.
    pub(crate) external_id: Option<Expr>,
    /// `map.resultFields`: on done, each non-empty scalar overrides `result.<name>`.
    pub(crate) result_fields: Vec<(String, Expr)>,
    /// `map.fields`: extra channels passed through into the observation.
    pub(crate) fields: Vec<(String, Expr)>,
    /// `map.coerce: cat-factory`: read the answer the way Cat-Factory does.
    pub(crate) cat_factory: bool,
}

impl StateMapping {
    /// Maps one parsed answer onto an [`Observation`].
    ///
    /// # Errors
    /// [`MapError::Expression`] when an expression fails on this document.
    pub(crate) fn observe(&self, doc: &Value) -> Result<Observation, MapError> {
        let eval = |expr: &Option<Expr>| -> Result<Value, MapError> {
            match expr {
                Some(e) => e.eval(doc),
                None => Ok(Value::Null),
            }
        };
        let word = status_word(&eval(&self.state)?);
        let (state, unmapped) = match &word {
            Some(word) if self.cat_factory => cf::classify(word, &self.status_map),
            Some(word) => {
                let classified = classify(word, &self.status_map);
                (classified.state, classified.unmapped)
            }
            None => (MappedState::Running, false),
        };
        let count_of = |value: &Value| {
            if self.cat_factory {
                scalar_text(value)
                    .and_then(|text| cf::number(&text))
                    .and_then(truncate)
            } else {
                count(value)
            }
        };
        let counts = [
            count_of(&eval(&self.completed)?),
            count_of(&eval(&self.in_progress)?),
            count_of(&eval(&self.total)?),
        ];
        let progress = counts.iter().any(Option::is_some).then(|| Progress {
            completed: counts[0].unwrap_or(0),
            in_progress: counts[1].unwrap_or(0),
            total: counts[2].unwrap_or(0),
        });
        let error = scalar_text(&eval(&self.error)?);
        let mut failure_cause = scalar_text(&eval(&self.failure_cause)?);
        let mut detail = scalar_text(&eval(&self.detail)?);
        let mut heartbeat = scalar_text(&eval(&self.heartbeat)?);
        let raw_result = eval(&self.result)?;
        let mut result = if self.cat_factory {
            // Cat-Factory: a done job always has a result, possibly empty.
            Some(Value::Object(cf::result(&raw_result)))
        } else {
            Some(raw_result).filter(|v| !v.is_null())
        };
        for (name, expr) in &self.result_fields {
            let Some(text) = scalar_text(&expr.eval(doc)?).filter(|t| !t.is_empty()) else {
                continue;
            };
            let object = result.get_or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(map) = object {
                map.insert(name.clone(), Value::String(text));
            }
        }
        let mut fields = Map::new();
        for (name, expr) in &self.fields {
            let value = expr.eval(doc)?;
            let kept = if self.cat_factory {
                cf::channel(name, &value)
            } else {
                Some(value).filter(|v| !v.is_null())
            };
            if let Some(value) = kept {
                fields.insert(name.clone(), value);
            }
        }
        if self.cat_factory {
            failure_cause = failure_cause.and_then(|c| cf::failure_cause(&c));
            detail = detail.filter(|d| !d.is_empty());
            heartbeat = heartbeat.and_then(|h| cf::heartbeat(&h));
            if state == MappedState::Done
                && let Some(text) = error.as_ref().filter(|e| !e.is_empty())
                && let Some(Value::Object(map)) = result.as_mut()
            {
                // A done job with an error text is a failure for Cat-Factory's engine.
                map.insert("error".to_owned(), Value::String(text.clone()));
            }
        }
        Ok(Observation {
            state: Some(state),
            scheduler_state: word,
            unmapped,
            progress,
            result,
            error,
            failure_cause,
            detail,
            heartbeat,
            external_id: scalar_text(&eval(&self.external_id)?),
            fields,
        })
    }
}

/// A number truncated toward zero, when it fits a progress count.
#[expect(
    clippy::cast_possible_truncation,
    reason = "the value is finite and below 2^53 in magnitude"
)]
fn truncate(n: f64) -> Option<i64> {
    n.is_finite()
        .then(|| n.trunc())
        .filter(|f| f.abs() < 9.0e15)
        .map(|f| f as i64)
}

/// The compiled `capture` of an operation: name → expression.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Captures(pub(crate) Vec<(String, Expr)>);

impl Captures {
    /// Evaluates every capture on an answer body; a null result is left out.
    ///
    /// # Errors
    /// [`MapError::NotJson`] when there are captures and the body is not JSON;
    /// [`MapError::Expression`] when an expression fails.
    pub(crate) fn capture(&self, body: &[u8]) -> Result<Map<String, Value>, MapError> {
        if self.0.is_empty() {
            return Ok(Map::new());
        }
        self.capture_doc(&parse_body(body)?)
    }

    /// Evaluates every capture on a parsed document (the whole answer, or the one item of a
    /// list that `lookup` matched); a null result is left out.
    ///
    /// # Errors
    /// [`MapError::Expression`] when an expression fails.
    pub(crate) fn capture_doc(&self, doc: &Value) -> Result<Map<String, Value>, MapError> {
        let mut out = Map::new();
        for (name, expr) in &self.0 {
            let value = expr.eval(doc)?;
            if !value.is_null() {
                out.insert(name.clone(), value);
            }
        }
        Ok(out)
    }
}

/// The status word of a `state` result: strings as they are, numbers and booleans as text;
/// null, blank text, objects and lists give no word.
fn status_word(value: &Value) -> Option<String> {
    scalar_text(value).filter(|w| !w.trim().is_empty())
}

/// A scalar as text; null, objects and lists are absent.
pub(crate) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// A progress count: integers, other numbers truncated toward zero, numeric text.
fn count(value: &Value) -> Option<i64> {
    let from_float = |f: f64| {
        f.is_finite()
            .then(|| f.trunc())
            .filter(|f| f.abs() < 9.0e15)
            .map(|f| f as i64)
    };
    match value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().and_then(from_float)),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>()
                .ok()
                .or_else(|| s.parse::<f64>().ok().and_then(from_float))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn expr(source: &str) -> Option<Expr> {
        let mut problems = Vec::new();
        let e = compile("poll.map.x", source, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        e
    }

    #[test]
    fn div_and_mod_do_integer_arithmetic_and_give_null_when_they_cannot() {
        let eval = |source: &str, doc: Value| expr(source).unwrap().eval(&doc).unwrap();
        assert_eq!(
            eval("div(exit_code, `256`)", json!({"exit_code": 768})),
            json!(3)
        );
        assert_eq!(
            eval("mod(exit_code, `256`)", json!({"exit_code": 9})),
            json!(9)
        );
        assert_eq!(eval("div(`-7`, `2`)", json!({})), json!(-4));
        assert_eq!(eval("div(`7`, `0`)", json!({})), Value::Null);
        assert_eq!(eval("div(`7.5`, `2`)", json!({})), Value::Null);
        assert_eq!(eval("mod(`7`, `0`)", json!({})), Value::Null);
        assert_eq!(
            eval("length(@)", json!([1, 2])),
            json!(2),
            "the standard functions stay"
        );
        let mut problems = Vec::new();
        let wrong = compile("poll.map.x", "div(name, `2`)", &mut problems).unwrap();
        assert!(
            wrong.eval(&json!({"name": "x"})).is_err(),
            "a string is refused by the signature"
        );
    }

    #[test]
    fn div_and_mod_overflowing_give_null_not_a_panic() {
        // i64::MIN / -1 overflows; an answer can hold both numbers (-1e19 saturates to i64::MIN).
        for doc in [
            json!({"a": -9_223_372_036_854_775_808_i64, "b": -1}),
            json!({"a": -1e19, "b": -1}),
        ] {
            for source in ["div(a, b)", "mod(a, b)"] {
                assert_eq!(
                    expr(source).unwrap().eval(&doc).unwrap(),
                    Value::Null,
                    "{source} of {doc}"
                );
            }
        }
        assert_eq!(
            expr("div(a, b)")
                .unwrap()
                .eval(&json!({"a": -8, "b": -1}))
                .unwrap(),
            json!(8)
        );
    }

    #[test]
    fn a_bad_expression_is_a_problem_with_its_path_and_position() {
        let mut problems = Vec::new();
        assert!(compile("poll.map.state", "status.[", &mut problems).is_none());
        assert!(compile("poll.map.error", "  ", &mut problems).is_none());
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].path, "poll.map.state");
        assert!(
            problems[0].message.contains("at character"),
            "{}",
            problems[0].message
        );
        assert_eq!(problems[1].path, "poll.map.error");
    }

    #[test]
    fn the_spec_kubernetes_state_expression_reads_job_conditions() {
        let mapping = StateMapping {
            state: expr(
                "status.conditions[?status=='True'].type | [0] || (status.active > `0` && 'Running') || 'Pending'",
            ),
            status_map: vec![
                ("Complete".into(), MappedState::Done),
                ("Running".into(), MappedState::Running),
                ("Pending".into(), MappedState::Running),
            ],
            error: expr("status.conditions[?type=='Failed'].message | [0]"),
            ..StateMapping::default()
        };
        let done = json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}});
        let obs = mapping.observe(&done).unwrap();
        assert_eq!(obs.state, Some(MappedState::Done));
        assert_eq!(obs.scheduler_state.as_deref(), Some("Complete"));
        assert!(!obs.unmapped);
        let failed = json!({"status": {"conditions": [
            {"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]}});
        let obs = mapping.observe(&failed).unwrap();
        assert_eq!(obs.state, Some(MappedState::Failed));
        assert_eq!(obs.error.as_deref(), Some("BackoffLimitExceeded"));
        let running = json!({"status": {"active": 1}});
        assert_eq!(
            mapping.observe(&running).unwrap().state,
            Some(MappedState::Running)
        );
    }

    #[test]
    fn state_words_are_classified_and_unknown_ones_flagged() {
        let mapping = StateMapping {
            state: expr("s"),
            status_map: vec![("Ok".into(), MappedState::Done)],
            ..StateMapping::default()
        };
        let table: &[(Value, MappedState, Option<&str>, bool)] = &[
            (json!("Ok"), MappedState::Done, Some("Ok"), false),
            (json!(" ok "), MappedState::Done, Some(" ok "), false),
            (json!("FAILED"), MappedState::Failed, Some("FAILED"), false),
            (
                json!("Cancelled"),
                MappedState::Cancelled,
                Some("Cancelled"),
                false,
            ),
            (json!("Evicted"), MappedState::Lost, Some("Evicted"), false),
            (json!("wibble"), MappedState::Running, Some("wibble"), true),
            (json!(3), MappedState::Running, Some("3"), true),
            (json!(true), MappedState::Running, Some("true"), true),
            (json!(null), MappedState::Running, None, false),
            (json!("   "), MappedState::Running, None, false),
            (json!({"a": 1}), MappedState::Running, None, false),
        ];
        for (value, state, word, unmapped) in table {
            let obs = mapping.observe(&json!({"s": value})).unwrap();
            assert_eq!(obs.state, Some(*state), "{value}");
            assert_eq!(obs.scheduler_state.as_deref(), *word, "{value}");
            assert_eq!(obs.unmapped, *unmapped, "{value}");
        }
        let absent = mapping.observe(&json!({})).unwrap();
        assert_eq!(absent.state, Some(MappedState::Running));
        assert!(!absent.unmapped);
    }

    #[test]
    fn progress_members_are_coerced_to_integers_and_default_to_zero() {
        let mapping = StateMapping {
            completed: expr("c"),
            in_progress: expr("i"),
            total: expr("t"),
            ..StateMapping::default()
        };
        let table: &[(Value, Option<Progress>)] = &[
            (json!({}), None),
            (json!({"c": null, "t": "x"}), None),
            (
                json!({"c": 3, "i": "1", "t": " 8 "}),
                Some(Progress {
                    completed: 3,
                    in_progress: 1,
                    total: 8,
                }),
            ),
            (
                json!({"c": 2.9, "t": "4.0"}),
                Some(Progress {
                    completed: 2,
                    in_progress: 0,
                    total: 4,
                }),
            ),
            (
                json!({"t": 5}),
                Some(Progress {
                    completed: 0,
                    in_progress: 0,
                    total: 5,
                }),
            ),
            (
                json!({"c": true, "i": [1], "t": -1}),
                Some(Progress {
                    completed: 0,
                    in_progress: 0,
                    total: -1,
                }),
            ),
        ];
        for (doc, expected) in table {
            assert_eq!(mapping.observe(doc).unwrap().progress, *expected, "{doc}");
        }
    }

    #[test]
    fn scalar_channels_become_text_and_result_keeps_any_json() {
        let mapping = StateMapping {
            result: expr("r"),
            error: expr("e"),
            failure_cause: expr("f"),
            detail: expr("d"),
            heartbeat: expr("h"),
            external_id: expr("x"),
            ..StateMapping::default()
        };
        let obs = mapping
            .observe(&json!({"r": {"prUrl": "u"}, "e": "boom", "f": 3, "d": false, "h": 1700000000000_i64, "x": {"no": 1}}))
            .unwrap();
        assert_eq!(obs.result, Some(json!({"prUrl": "u"})));
        assert_eq!(obs.error.as_deref(), Some("boom"));
        assert_eq!(obs.failure_cause.as_deref(), Some("3"));
        assert_eq!(obs.detail.as_deref(), Some("false"));
        assert_eq!(obs.heartbeat.as_deref(), Some("1700000000000"));
        assert_eq!(obs.external_id, None);
        let empty = mapping.observe(&json!({"r": null})).unwrap();
        assert_eq!(empty.result, None);
        assert_eq!(empty.error, None);
    }

    #[test]
    fn a_failing_expression_is_an_error_naming_its_path() {
        let mapping = StateMapping {
            state: expr("length(s)"),
            ..StateMapping::default()
        };
        let err = mapping.observe(&json!({"s": 5})).unwrap_err();
        assert!(
            matches!(err, MapError::Expression { ref path, .. } if path == "poll.map.x"),
            "{err:?}"
        );
    }

    #[test]
    fn captures_skip_null_results_and_need_json_only_when_declared() {
        let none = Captures::default();
        assert_eq!(none.capture(b"not json").unwrap(), Map::new());
        let some = Captures(vec![
            ("uid".into(), expr("metadata.uid").unwrap()),
            ("missing".into(), expr("nope").unwrap()),
        ]);
        let out = some.capture(br#"{"metadata": {"uid": "abc"}}"#).unwrap();
        assert_eq!(Value::Object(out), json!({"uid": "abc"}));
        assert_eq!(some.capture(b"<html>"), Err(MapError::NotJson));
        assert_eq!(some.capture(b""), Err(MapError::NotJson));
    }
}
