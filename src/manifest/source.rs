//! Turns manifest text (YAML or JSON) into a JSON document, or one located syntax problem.

use super::Problem;
use serde_json::Value;

/// Parses YAML (a superset of JSON) into a JSON value.
///
/// # Errors
/// A syntax error, or YAML that has no JSON equivalent (a non-string key, for example), is one
/// [`Problem`] with the empty path and the line and column where the parser stopped.
pub(crate) fn parse_text(text: &str) -> Result<Value, Problem> {
    if flow_depth_exceeds(text, MAX_FLOW_DEPTH) {
        return Err(Problem {
            path: String::new(),
            message: format!(
                "the manifest nests brackets or braces deeper than {MAX_FLOW_DEPTH} levels; \
                 no manifest needs that many"
            ),
        });
    }
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

/// The deepest `[`/`{` nesting a manifest text may have. The YAML scanner keeps state per flow
/// level, so a text of a few hundred kilobytes nested a hundred thousand deep costs seconds of
/// CPU before the parser's own depth limit is reached; this bound is checked in one pass first.
const MAX_FLOW_DEPTH: usize = 64;

/// True when `text` opens more than `max` brackets or braces without closing them, counted
/// outside quoted strings and comments (an over-estimate elsewhere only errs towards refusing
/// texts that no manifest looks like).
fn flow_depth_exceeds(text: &str, max: usize) -> bool {
    let mut depth = 0usize;
    let mut chars = text.chars().peekable();
    let mut previous = '\n';
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                while let Some(q) = chars.next() {
                    match q {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '\'' => {
                while let Some(q) = chars.next() {
                    if q == '\'' {
                        if chars.peek() == Some(&'\'') {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
            }
            '#' if previous.is_whitespace() => {
                for q in chars.by_ref() {
                    if q == '\n' {
                        break;
                    }
                }
            }
            '[' | '{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        previous = c;
    }
    false
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
    fn deep_flow_nesting_is_refused_before_parsing_and_quoted_brackets_do_not_count() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let problem = parse_text(&deep).unwrap_err();
        assert!(
            problem.message.contains("deeper than 64"),
            "{}",
            problem.message
        );
        let quoted = format!(
            "a: \"{}\"\nb: '{}'\n# {}\nc: [[1]]\n",
            "[".repeat(100),
            "{".repeat(100),
            "[".repeat(100)
        );
        assert_eq!(parse_text(&quoted).unwrap()["c"], json!([[1]]),);
        let at_limit = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(!flow_depth_exceeds(&at_limit, MAX_FLOW_DEPTH));
        assert!(flow_depth_exceeds(&format!("[{at_limit}]"), MAX_FLOW_DEPTH));
    }

    #[test]
    fn a_syntax_error_is_one_problem_with_its_line() {
        let problem = parse_text("a: 1\nb: [unclosed\nc: 2\n").unwrap_err();
        assert_eq!(problem.path, "");
        assert!(problem.message.contains("line "), "{}", problem.message);
    }
}
