//! Turns manifest text (YAML or JSON) into a JSON document, or one located syntax problem.

use super::Problem;
use serde_json::Value;

/// Parses YAML (a superset of JSON) into a JSON value.
///
/// # Errors
/// A syntax error, or YAML that has no JSON equivalent (a non-string key, for example), is one
/// [`Problem`] with the empty path and the line and column where the parser stopped.
pub(crate) fn parse_text(text: &str) -> Result<Value, Problem> {
    yaml_serde::from_str::<Value>(text).map_err(|err| {
        let text = err.to_string();
        let location = match err.location() {
            Some(at) if !text.contains(" line ") => {
                format!(" (line {}, column {})", at.line(), at.column())
            }
            _ => String::new(),
        };
        Problem {
            path: String::new(),
            message: format!(
                "the manifest is not valid YAML or JSON{location}: {text}; fix the syntax at that place"
            ),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_and_json_texts_give_the_same_document() {
        let yaml = parse_text("a: 1\nb: [x, 'y']\nc: {d: true}\n").unwrap();
        let json = parse_text(r#"{"a": 1, "b": ["x", "y"], "c": {"d": true}}"#).unwrap();
        assert_eq!(yaml, json);
        assert_eq!(yaml, json!({"a": 1, "b": ["x", "y"], "c": {"d": true}}));
    }

    #[test]
    fn a_syntax_error_is_one_problem_with_its_line() {
        let problem = parse_text("a: 1\nb: [unclosed\nc: 2\n").unwrap_err();
        assert_eq!(problem.path, "");
        assert!(problem.message.contains("line "), "{}", problem.message);
    }
}
