//! Position-specific escaping: path segments, the inside of JSON strings, header values.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything except the RFC 3986 unreserved characters `A-Za-z0-9-._~`.
///
/// Used for path segments and `urlencode`: `/`, `?`, `#`, `%`, `\`, spaces and every non-ASCII
/// byte are encoded, so a value can never change the structure of the URL.
pub(crate) const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a value as one URL path segment (or any other URL component).
pub(crate) fn percent_encode_component(value: &str) -> String {
    utf8_percent_encode(value, COMPONENT).to_string()
}

/// Escapes a value for the inside of a JSON string literal (without the quotes).
pub(crate) fn json_string_inner(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// Why a rendered header value cannot be sent, if it cannot.
///
/// CR, LF and NUL would split or truncate the header; other control characters (except tab)
/// are refused by HTTP libraries, so they are refused here, at render time, with a clear cause.
pub(crate) fn header_value_problem(value: &str) -> Option<&'static str> {
    if value.contains(['\r', '\n']) {
        Some("the rendered value contains a line break (CR or LF), which could inject headers")
    } else if value.contains('\0') {
        Some("the rendered value contains a NUL character")
    } else if value.chars().any(|c| c.is_ascii_control() && c != '\t') {
        Some("the rendered value contains a control character, which HTTP headers cannot carry")
    } else {
        None
    }
}

/// True when `name` is a valid HTTP header name (an RFC 9110 token).
pub(crate) fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_encode_everything_that_could_change_the_url_structure() {
        let table = [
            ("abc-1.2_x~", "abc-1.2_x~"),
            ("a/b", "a%2Fb"),
            ("../x", "..%2Fx"),
            ("?q=1#frag", "%3Fq%3D1%23frag"),
            ("100%", "100%25"),
            ("a b\\c", "a%20b%5Cc"),
            ("é", "%C3%A9"),
            ("{{input.jobId}}", "%7B%7Binput.jobId%7D%7D"),
        ];
        for (value, encoded) in table {
            assert_eq!(percent_encode_component(value), encoded, "value {value:?}");
        }
    }

    #[test]
    fn json_string_escaping_round_trips_through_a_json_parser() {
        let values = [
            "plain",
            "q\"uote",
            "back\\slash",
            "line\nbreak\r\t",
            "\u{1}\u{1f}",
            "</x>&'",
        ];
        for value in values {
            let literal = format!("\"{}\"", json_string_inner(value));
            let parsed: String = serde_json::from_str(&literal).unwrap();
            assert_eq!(parsed, value);
        }
    }

    #[test]
    fn header_values_with_line_breaks_or_nul_are_refused() {
        assert!(header_value_problem("ok value\twith tab").is_none());
        assert!(header_value_problem("a\r\nX-Evil: 1").is_some());
        assert!(header_value_problem("a\nb").is_some());
        assert!(header_value_problem("a\0b").is_some());
        assert!(header_value_problem("a\u{7f}b").is_some());
    }

    #[test]
    fn header_names_must_be_tokens() {
        assert!(is_header_name("X-Token"));
        assert!(is_header_name("Idempotency-Key"));
        assert!(!is_header_name(""));
        assert!(!is_header_name("X Token"));
        assert!(!is_header_name("X-Token:"));
        assert!(!is_header_name("Ünicode"));
    }
}
