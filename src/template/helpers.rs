//! The template helpers (`json`, `base64`, `urlencode`, `lower`, `upper`, `dns1123`, `default`, `secret`).

use super::context::SECRETS_KEY;
use super::escape::percent_encode_component;
use base64::Engine as _;
use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, Output, RenderContext, RenderError,
    RenderErrorReason, ScopedJson,
};
use serde_json::Value;

/// The helpers a template may call, with the number of arguments each takes.
pub(crate) const HELPERS: &[(&str, usize)] = &[
    ("json", 1),
    ("base64", 1),
    ("urlencode", 1),
    ("lower", 1),
    ("upper", 1),
    ("dns1123", 1),
    ("default", 2),
    ("secret", 1),
];

/// The block helpers a template may use.
pub(crate) const BLOCK_HELPERS: &[&str] = &["if", "unless"];

/// Built-in handlebars helpers that cattery templates may not use; removed from every registry.
const REMOVED_BUILTINS: &[&str] = &[
    "each", "with", "lookup", "raw", "log", "eq", "ne", "gt", "gte", "lt", "lte", "and", "or",
    "not", "len",
];

/// The longest Kubernetes DNS-1123 label.
const DNS1123_MAX: usize = 63;

/// Which helper a [`ValueHelper`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Json,
    Base64,
    UrlEncode,
    Lower,
    Upper,
    Dns1123,
    Default,
    Secret,
}

/// One helper: computes a value, then writes it through the registry's escape function.
#[derive(Debug, Clone, Copy)]
struct ValueHelper {
    kind: Kind,
    /// Write the output as is, skipping the escape function (only `json` in `bodyTemplate`).
    raw_output: bool,
}

/// Registers the cattery helpers on `registry` and removes the built-ins templates may not use.
///
/// `json_raw` makes `{{json x}}` write raw JSON (for `bodyTemplate`, whose escape function
/// would otherwise escape it a second time); `with_secret` adds the `secret` helper (the
/// registry that renders header values).
pub(crate) fn register(registry: &mut Handlebars<'static>, json_raw: bool, with_secret: bool) {
    for name in REMOVED_BUILTINS {
        registry.unregister_helper(name);
    }
    let helpers = [
        ("json", Kind::Json),
        ("base64", Kind::Base64),
        ("urlencode", Kind::UrlEncode),
        ("lower", Kind::Lower),
        ("upper", Kind::Upper),
        ("dns1123", Kind::Dns1123),
        ("default", Kind::Default),
    ];
    for (name, kind) in helpers {
        let raw_output = json_raw && kind == Kind::Json;
        registry.register_helper(name, Box::new(ValueHelper { kind, raw_output }));
    }
    if with_secret {
        registry.register_helper(
            "secret",
            Box::new(ValueHelper {
                kind: Kind::Secret,
                raw_output: false,
            }),
        );
    }
}

impl ValueHelper {
    fn compute(&self, h: &Helper<'_>, ctx: &Context) -> Result<Value, RenderError> {
        let arg = |i: usize| h.param(i).map(|p| p.value().clone()).unwrap_or(Value::Null);
        let first = arg(0);
        Ok(match self.kind {
            Kind::Json => Value::String(first.to_string()),
            Kind::Base64 => {
                Value::String(base64::engine::general_purpose::STANDARD.encode(value_text(&first)))
            }
            Kind::UrlEncode => Value::String(percent_encode_component(&value_text(&first))),
            Kind::Lower => Value::String(value_text(&first).to_lowercase()),
            Kind::Upper => Value::String(value_text(&first).to_uppercase()),
            Kind::Dns1123 => Value::String(dns1123(&value_text(&first))),
            Kind::Default => {
                if is_empty(&first) {
                    arg(1)
                } else {
                    first
                }
            }
            Kind::Secret => {
                let key = first.as_str().unwrap_or_default();
                let value = ctx
                    .data()
                    .get(SECRETS_KEY)
                    .and_then(|secrets| secrets.get(key))
                    .cloned();
                value.ok_or_else(|| {
                    RenderError::from(RenderErrorReason::Other(format!(
                        "secret {key:?} is not in the pool's secret bundle"
                    )))
                })?
            }
        })
    }
}

impl HelperDef for ValueHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        self.compute(h, ctx).map(ScopedJson::Derived)
    }

    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        registry: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let text = value_text(&self.compute(h, ctx)?);
        if self.raw_output {
            out.write(&text)?;
        } else {
            out.write(&(registry.get_escape_fn())(&text))?;
        }
        Ok(())
    }
}

/// The text of a value: strings as they are, null as nothing, anything else as compact JSON.
pub(crate) fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// What `default` treats as empty: null (or absent), `""`, `[]` and `{}`.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

/// Turns any text into a valid Kubernetes DNS-1123 label of at most 63 characters.
///
/// Lower-cases, replaces every character outside `[a-z0-9-]` with `-` and trims `-` from both
/// ends. When the result differs from the input (it could then collide with another input) or
/// is too long, it is cut to 54 characters and `-` plus the first 8 hex digits of the SHA-256
/// of the original text is appended. A label that is already valid is returned unchanged; the
/// result is never empty.
pub(crate) fn dns1123(original: &str) -> String {
    let cleaned: String = original
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_matches('-');
    if cleaned == original && !cleaned.is_empty() && cleaned.len() <= DNS1123_MAX {
        return cleaned.to_owned();
    }
    let suffix = short_hash(original);
    let keep = DNS1123_MAX - suffix.len() - 1;
    let base: String = cleaned.chars().take(keep).collect();
    let base = base.trim_end_matches('-');
    if base.is_empty() {
        suffix
    } else {
        format!("{base}-{suffix}")
    }
}

/// The first 8 hex digits of the SHA-256 of `text`.
fn short_hash(text: &str) -> String {
    let hex =
        |bytes: &[u8]| -> String { bytes.iter().take(4).map(|b| format!("{b:02x}")).collect() };
    match orion::hazardous::hash::sha2::sha256::Sha256::digest(text.as_bytes()) {
        Ok(digest) => hex(digest.as_ref()),
        // SHA-256 of an in-memory slice cannot fail; FNV-1a keeps the helper total anyway.
        Err(_) => {
            let hash = text.bytes().fold(0x811c_9dc5_u32, |h, b| {
                (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
            });
            hex(&hash.to_be_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    #[test]
    fn dns1123_keeps_valid_labels_and_fixes_everything_else() {
        let long = "a".repeat(200);
        let table: &[(&str, Option<&str>)] = &[
            ("exec-42-coder", Some("exec-42-coder")),
            ("job1", Some("job1")),
            ("Exec-42", None),
            ("exec.42.coder", None),
            ("exec_42", None),
            ("-lead-", None),
            ("___", None),
            ("", None),
            ("ÄÖÜ", None),
            (&long, None),
        ];
        for (input, expected) in table {
            let out = dns1123(input);
            assert!(is_label(&out), "{input:?} gave {out:?}");
            match expected {
                Some(same) => assert_eq!(&out, same),
                None => assert_ne!(&out, input),
            }
            assert_eq!(dns1123(input), out, "dns1123 is deterministic");
        }
    }

    #[test]
    fn dns1123_changes_carry_a_hash_so_distinct_inputs_do_not_collide() {
        assert_ne!(dns1123("exec.42"), dns1123("exec_42"));
        assert_ne!(dns1123("Exec-42"), dns1123("exec-42"));
        assert!(dns1123("Exec-42").starts_with("exec-42-"));
        assert_eq!(dns1123("exec.42").len(), "exec-42-".len() + 8);
        let a = format!("{}a", "x".repeat(100));
        let b = format!("{}b", "x".repeat(100));
        assert_ne!(dns1123(&a), dns1123(&b));
        assert_eq!(dns1123(&a).len(), 63);
        // all-invalid input is only the hash, never empty
        assert_eq!(dns1123("___").len(), 8);
        assert_eq!(dns1123(""), "e3b0c442");
    }
}
