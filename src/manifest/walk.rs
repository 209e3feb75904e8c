//! Typed, path-aware reading of a raw JSON document that records every problem it meets.

use super::{ManifestError, Problem};
use serde_json::{Map, Value};

/// The problems found so far, in the order they were found.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<Problem>);

impl Problems {
    /// Records one problem at `path`.
    pub(crate) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// True when nothing was found.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many problems were found.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The collected problems as a list, for code that works on plain vectors.
    pub(crate) fn list_mut(&mut self) -> &mut Vec<Problem> {
        &mut self.0
    }

    /// The error that carries every problem.
    pub(crate) fn into_error(self) -> ManifestError {
        ManifestError { problems: self.0 }
    }
}

/// `parent.key`, or `key` at the root.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// "a string", "an object", … for messages.
pub(crate) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A short rendering of a value for a message (values in manifests are never secrets).
pub(crate) fn show(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(57).collect();
        format!("{cut}...")
    } else {
        text
    }
}

/// The closest allowed name, when one is close enough to be a likely typo.
pub(crate) fn suggestion<'a>(name: &str, allowed: &[&'a str]) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    allowed
        .iter()
        .map(|candidate| {
            (
                distance(&lower, &candidate.to_ascii_lowercase()),
                *candidate,
            )
        })
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance, for typo suggestions.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let deletion = previous.get(j + 1).copied().unwrap_or(0) + 1;
            let insertion = current.get(j).copied().unwrap_or(0) + 1;
            current.push(substitution.min(deletion).min(insertion));
        }
        previous = current;
    }
    previous.last().copied().unwrap_or(0)
}

/// The fields of one object of the document, read with their paths.
#[derive(Debug, Clone)]
pub(crate) struct Fields<'a> {
    path: String,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    /// Reads `value` as an object, or records that it must be one.
    pub(crate) fn new(value: &'a Value, path: &str, problems: &mut Problems) -> Option<Self> {
        match value {
            Value::Object(map) => Some(Fields {
                path: path.to_owned(),
                map,
            }),
            other => {
                problems.add(
                    path,
                    format!(
                        "must be an object (a map of fields), not {}",
                        kind_of(other)
                    ),
                );
                None
            }
        }
    }

    /// The path of one of its fields.
    pub(crate) fn child(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The raw map.
    pub(crate) fn map(&self) -> &'a Map<String, Value> {
        self.map
    }

    /// Records every field that is not in `allowed`.
    pub(crate) fn deny_unknown(&self, allowed: &[&str], problems: &mut Problems) {
        for key in self.map.keys() {
            if allowed.contains(&key.as_str()) {
                continue;
            }
            let hint = match suggestion(key, allowed) {
                Some(close) => format!("did you mean `{close}`? "),
                None => String::new(),
            };
            problems.add(
                self.child(key),
                format!(
                    "unknown field `{key}`; {hint}the fields allowed here are: {}",
                    allowed.join(", ")
                ),
            );
        }
    }

    /// A field's value; an explicit `null` counts as absent.
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// A field that must be present.
    pub(crate) fn required(&self, key: &str, problems: &mut Problems) -> Option<&'a Value> {
        let value = self.get(key);
        if value.is_none() {
            problems.add(self.child(key), "is required but missing");
        }
        value
    }

    /// An optional string field.
    pub(crate) fn str(&self, key: &str, problems: &mut Problems) -> Option<&'a str> {
        self.get(key).and_then(|v| self.as_str(key, v, problems))
    }

    /// A required string field.
    pub(crate) fn required_str(&self, key: &str, problems: &mut Problems) -> Option<&'a str> {
        self.required(key, problems)
            .and_then(|v| self.as_str(key, v, problems))
    }

    fn as_str(&self, key: &str, value: &'a Value, problems: &mut Problems) -> Option<&'a str> {
        match value {
            Value::String(s) => Some(s),
            other => {
                problems.add(
                    self.child(key),
                    format!("must be a string, not {}", kind_of(other)),
                );
                None
            }
        }
    }

    /// An optional boolean field.
    pub(crate) fn bool(&self, key: &str, problems: &mut Problems) -> Option<bool> {
        match self.get(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                problems.add(
                    self.child(key),
                    format!("must be true or false, not {}", kind_of(other)),
                );
                None
            }
        }
    }

    /// An optional integer field within `min..=max`.
    pub(crate) fn int(
        &self,
        key: &str,
        min: u64,
        max: u64,
        problems: &mut Problems,
    ) -> Option<u64> {
        let value = self.get(key)?;
        let n = value.as_u64().filter(|n| (min..=max).contains(n));
        if n.is_none() {
            let what = if min == 1 {
                format!("a positive whole number (at most {max})")
            } else {
                format!("a whole number from {min} to {max}")
            };
            problems.add(
                self.child(key),
                format!("must be {what}; got {}", show(value)),
            );
        }
        n
    }

    /// An optional object field.
    pub(crate) fn object(&self, key: &str, problems: &mut Problems) -> Option<(String, &'a Value)> {
        let value = self.get(key)?;
        if value.is_object() {
            Some((self.child(key), value))
        } else {
            problems.add(
                self.child(key),
                format!(
                    "must be an object (a map of fields), not {}",
                    kind_of(value)
                ),
            );
            None
        }
    }

    /// An optional map of name → string (query, headers, capture, statusMap).
    pub(crate) fn string_map(
        &self,
        key: &str,
        problems: &mut Problems,
    ) -> Option<Vec<(String, &'a str)>> {
        let (path, value) = self.object(key, problems)?;
        let map = value.as_object()?;
        let mut out = Vec::with_capacity(map.len());
        for (name, v) in map {
            match v {
                Value::String(s) => out.push((name.clone(), s.as_str())),
                other => problems.add(
                    join(&path, name),
                    format!("must be a string, not {}", kind_of(other)),
                ),
            }
        }
        Some(out)
    }

    /// An optional list of HTTP status codes.
    pub(crate) fn statuses(&self, key: &str, problems: &mut Problems) -> Option<Vec<u16>> {
        let value = self.get(key)?;
        let path = self.child(key);
        let Value::Array(items) = value else {
            problems.add(
                path,
                format!(
                    "must be a list of HTTP status codes such as [200, 201], not {}",
                    kind_of(value)
                ),
            );
            return None;
        };
        if items.is_empty() {
            problems.add(path.clone(), "must list at least one HTTP status code");
        }
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.as_u64().filter(|n| (100..=599).contains(n)) {
                Some(n) => {
                    let code = u16::try_from(n).unwrap_or(599);
                    if !out.contains(&code) {
                        out.push(code);
                    }
                }
                None => problems.add(
                    join(&path, &i.to_string()),
                    format!(
                        "must be an HTTP status code between 100 and 599; got {}",
                        show(item)
                    ),
                ),
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_reported_with_a_suggestion_for_typos() {
        let doc = json!({"maxInFligth": 3, "zzz": 1});
        let mut problems = Problems::default();
        let fields = Fields::new(&doc, "limits", &mut problems).unwrap();
        fields.deny_unknown(&["maxInFlight", "maxQueued"], &mut problems);
        let list = problems.into_error().problems;
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].path, "limits.maxInFligth");
        assert!(list[0].message.contains("did you mean `maxInFlight`"));
        assert_eq!(list[1].path, "limits.zzz");
        assert!(!list[1].message.contains("did you mean"));
    }

    #[test]
    fn integers_out_of_range_or_of_the_wrong_type_are_problems() {
        let doc = json!({"a": 0, "b": 2.5, "c": "3", "d": 7});
        let mut problems = Problems::default();
        let fields = Fields::new(&doc, "x", &mut problems).unwrap();
        assert_eq!(fields.int("a", 1, 10, &mut problems), None);
        assert_eq!(fields.int("b", 1, 10, &mut problems), None);
        assert_eq!(fields.int("c", 1, 10, &mut problems), None);
        assert_eq!(fields.int("d", 1, 10, &mut problems), Some(7));
        let paths: Vec<_> = problems
            .into_error()
            .problems
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(paths, ["x.a", "x.b", "x.c"]);
    }

    #[test]
    fn status_lists_accept_only_codes_between_100_and_599() {
        let doc = json!({"expect": [200, 99, 600, "201", 200]});
        let mut problems = Problems::default();
        let fields = Fields::new(&doc, "poll", &mut problems).unwrap();
        assert_eq!(fields.statuses("expect", &mut problems), Some(vec![200]));
        let paths: Vec<_> = problems
            .into_error()
            .problems
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(paths, ["poll.expect.1", "poll.expect.2", "poll.expect.3"]);
    }
}
