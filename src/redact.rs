//! Cuts credentials out of text that came from a scheduler (error bodies, mapped messages)
//! before it is stored, logged or shown.
//!
//! Two passes, both pure:
//!
//! * [`redact_values`] replaces every occurrence of values cattery knows to be secret (the pool's
//!   secrets, the string values of the run's job) — exact, whatever their shape;
//! * [`redact_credentials`] replaces what looks like a credential whatever it is: the value after
//!   a sensitive key (`token=…`, `"password": "…"`, `Authorization: …`), the token after an
//!   auth scheme (`Bearer …`, `Basic …`), user:password in URLs, JWTs, PEM private keys, AWS
//!   access key ids, GitHub/GitLab/Slack/OpenAI-style tokens and long random-looking runs.
//!
//! [`scrub_outcome`] applies both to every text of a scheduler call's outcome.

use crate::domain::secrets::SecretBundle;
use crate::lifecycle::CallOutcome;

/// What replaces a credential.
pub const REDACTED: &str = "[redacted]";

/// Known values shorter than this are not replaced (they would match ordinary words).
const MIN_VALUE_CHARS: usize = 6;
/// Job string values shorter than this are not treated as secrets.
const MIN_JOB_VALUE_CHARS: usize = 8;

/// Key names (lower case) whose values are credentials.
const SENSITIVE_KEYS: [&str; 17] = [
    "token",
    "secret",
    "password",
    "passwd",
    "passphrase",
    "apikey",
    "api_key",
    "api-key",
    "authorization",
    "credential",
    "cookie",
    "session",
    "private_key",
    "privatekey",
    "access_key",
    "accesskey",
    "signature",
];

/// Auth scheme words followed by a credential.
const SCHEMES: [&str; 6] = ["bearer", "basic", "token", "digest", "negotiate", "apikey"];

/// Prefixes of well-known token formats, with the shortest credible length.
const TOKEN_PREFIXES: [(&str, usize); 14] = [
    ("ghp_", 20),
    ("gho_", 20),
    ("ghu_", 20),
    ("ghs_", 20),
    ("ghr_", 20),
    ("github_pat_", 30),
    ("glpat-", 20),
    ("xoxb-", 20),
    ("xoxp-", 20),
    ("xoxa-", 20),
    ("xoxr-", 20),
    ("sk-", 20),
    ("AKIA", 20),
    ("ASIA", 20),
];

/// Replaces every occurrence of each value (longest first) with [`REDACTED`]. Values shorter
/// than 6 characters are left alone.
pub fn redact_values<S: AsRef<str>>(text: &str, values: &[S]) -> String {
    let mut values: Vec<&str> = values
        .iter()
        .map(AsRef::as_ref)
        .filter(|v| v.chars().count() >= MIN_VALUE_CHARS)
        .collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    values.dedup();
    let mut out = text.to_owned();
    for value in values {
        if out.contains(value) {
            out = out.replace(value, REDACTED);
        }
        // The value as it appears inside JSON text (quotes, backslashes escaped).
        let escaped = serde_json::to_string(value).unwrap_or_default();
        let escaped = escaped.trim_matches('"');
        if escaped != value && out.contains(escaped) {
            out = out.replace(escaped, REDACTED);
        }
    }
    out
}

/// Replaces everything that looks like a credential with [`REDACTED`].
pub fn redact_credentials(text: &str) -> String {
    let text = redact_pem(text);
    let text = redact_url_userinfo(&text);
    let text = redact_schemes(&text);
    let text = redact_key_values(&text);
    redact_shapes(&text)
}

/// Both passes: the known values, then the shapes.
pub fn redact<S: AsRef<str>>(text: &str, values: &[S]) -> String {
    redact_credentials(&redact_values(text, values))
}

/// The values of a run's call that must never appear in its texts: the pool's secrets and the
/// job's string values (of 8 characters or more).
pub fn known_values<'a>(secrets: &'a SecretBundle, job: &'a serde_json::Value) -> Vec<&'a str> {
    let mut values: Vec<&str> = secrets
        .keys()
        .filter_map(|key| secrets.get(key))
        .map(|v| v.expose())
        .collect();
    collect_strings(job, &mut values);
    values
}

fn collect_strings<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match value {
        serde_json::Value::String(s) if s.chars().count() >= MIN_JOB_VALUE_CHARS => out.push(s),
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

/// True when `text` is long enough to hold one of a job's values: only job strings of
/// [`MIN_JOB_VALUE_CHARS`] or more are redacted, so a shorter text never needs the job body.
pub fn may_hold_job_value(text: &str) -> bool {
    text.chars().nth(MIN_JOB_VALUE_CHARS - 1).is_some()
}

/// True when the outcome carries text from the scheduler (or about it).
fn has_text(outcome: &CallOutcome) -> bool {
    match outcome {
        CallOutcome::Retryable { .. } | CallOutcome::Rejected { .. } => true,
        CallOutcome::Accepted { note, .. } => note.is_some(),
        CallOutcome::Observed(o) => {
            o.error.is_some()
                || o.detail.is_some()
                || o.scheduler_state.is_some()
                || o.failure_cause.is_some()
        }
        _ => false,
    }
}

/// Redacts every text of a call's outcome (messages, notes, the mapped error, detail, status
/// word and failure cause): the pool's secrets and the job's strings exactly, then every
/// credential shape ([`redact`]).
pub fn scrub_outcome(
    outcome: CallOutcome,
    secrets: &SecretBundle,
    job: &serde_json::Value,
) -> CallOutcome {
    if !has_text(&outcome) {
        return outcome;
    }
    let values = known_values(secrets, job);
    let clean = |text: String| redact(&text, &values);
    match outcome {
        CallOutcome::Retryable {
            message,
            retry_after_ms,
            unreadable,
        } => CallOutcome::Retryable {
            message: clean(message),
            retry_after_ms,
            unreadable,
        },
        CallOutcome::Rejected { message } => CallOutcome::Rejected {
            message: clean(message),
        },
        CallOutcome::Accepted { captures, note } => CallOutcome::Accepted {
            captures,
            note: note.map(clean),
        },
        CallOutcome::Observed(mut observation) => {
            observation.error = observation.error.take().map(clean);
            observation.detail = observation.detail.take().map(clean);
            observation.scheduler_state = observation.scheduler_state.take().map(clean);
            observation.failure_cause = observation.failure_cause.take().map(clean);
            CallOutcome::Observed(observation)
        }
        other => other,
    }
}

/// What replaces scheduler text that could not be redacted.
const WITHHELD: &str = "[withheld: the scheduler's text could not be checked for the job's values]";

/// `outcome` with every free text replaced by a fixed notice: for text that cannot be redacted
/// (the values to look for are not at hand), which is never kept as it came.
pub fn withhold_text(outcome: CallOutcome) -> CallOutcome {
    let withheld = |text: Option<String>| text.map(|_| WITHHELD.to_owned());
    match outcome {
        CallOutcome::Retryable {
            retry_after_ms,
            unreadable,
            ..
        } => CallOutcome::Retryable {
            message: WITHHELD.to_owned(),
            retry_after_ms,
            unreadable,
        },
        CallOutcome::Rejected { .. } => CallOutcome::Rejected {
            message: WITHHELD.to_owned(),
        },
        CallOutcome::Accepted { captures, note } => CallOutcome::Accepted {
            captures,
            note: withheld(note),
        },
        CallOutcome::Observed(mut observation) => {
            observation.error = withheld(observation.error.take());
            observation.detail = withheld(observation.detail.take());
            observation.failure_cause = observation
                .failure_cause
                .take()
                .map(|_| "scheduler".to_owned());
            observation.scheduler_state = withheld(observation.scheduler_state.take());
            CallOutcome::Observed(observation)
        }
        other => other,
    }
}

fn redact_pem(text: &str) -> String {
    const BEGIN: &str = "-----BEGIN ";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let after_begin = &rest[start + BEGIN.len()..];
        let label = after_begin.find("-----").map(|end| &after_begin[..end]);
        if !label.is_some_and(|l| l.contains("PRIVATE KEY")) {
            out.push_str(&rest[..start + BEGIN.len()]);
            rest = after_begin;
            continue;
        }
        out.push_str(&rest[..start]);
        out.push_str(REDACTED);
        rest = match after_begin.find("-----END ") {
            Some(end) => {
                let after_end = &after_begin[end + 9..];
                after_end
                    .find("-----")
                    .map_or("", |close| &after_end[close + 5..])
            }
            None => "",
        };
    }
    out.push_str(rest);
    out
}

fn redact_url_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let authority_end = after
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '"')
            .unwrap_or(after.len());
        let authority = &after[..authority_end];
        match authority.rfind('@') {
            Some(i) => {
                out.push_str(REDACTED);
                out.push_str(&authority[i..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[authority_end..];
    }
    out.push_str(rest);
    out
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '+' | '/' | '=')
}

/// `Bearer abc…`, `Basic abc…`: the word after an auth scheme.
fn redact_schemes(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    loop {
        let found = SCHEMES
            .iter()
            .filter_map(|scheme| find_word(&lower, scheme, pos).map(|at| (at, scheme.len())))
            .min_by_key(|(at, _)| *at);
        let Some((at, len)) = found else {
            out.push_str(&text[pos..]);
            return out;
        };
        let word_end = at + len;
        let after_word = &text[word_end..];
        let spaces = after_word.len() - after_word.trim_start_matches([' ', '\t']).len();
        let value = &after_word[spaces..];
        let value_len = value
            .find(|c: char| !is_token_char(c))
            .unwrap_or(value.len());
        out.push_str(&text[pos..word_end]);
        if spaces > 0 && value_len >= 6 && !value.starts_with(REDACTED) {
            out.push_str(&after_word[..spaces]);
            out.push_str(REDACTED);
            pos = word_end + spaces + value_len;
        } else {
            pos = word_end;
        }
    }
}

/// The first position at or after `from` of `word` in `haystack` (both lower case) that is a
/// whole word.
fn find_word(haystack: &str, word: &str, mut from: usize) -> Option<usize> {
    while let Some(i) = haystack.get(from..)?.find(word) {
        let at = from + i;
        let before_ok = haystack[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_');
        let after_ok = haystack[at + word.len()..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_');
        if before_ok && after_ok {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// `token=…`, `"client_secret": "…"`, `password: …`, `X-Api-Key: …`.
fn redact_key_values(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < text.len() {
        if !text.is_char_boundary(i) || (i > 0 && is_key_char(char::from(bytes[i - 1]))) {
            i += 1;
            continue;
        }
        // A key starts here: read it whole.
        let key_len = text[i..]
            .find(|c: char| !is_key_char(c))
            .unwrap_or(text.len() - i);
        if key_len == 0 {
            i += 1;
            continue;
        }
        let key = &lower[i..i + key_len];
        let mut j = i + key_len;
        if !SENSITIVE_KEYS.iter().any(|k| key.contains(k)) {
            i = j;
            continue;
        }
        // Optional closing quote (escaped or not), spaces, then `:` or `=`.
        j = skip_quote(text, j);
        j = skip_spaces(text, j);
        if !matches!(bytes.get(j), Some(b':' | b'=')) {
            i = j.max(i + 1);
            continue;
        }
        j = skip_spaces(text, j + 1);
        let Some((start, end)) = value_span(text, j) else {
            i = j.max(i + 1);
            continue;
        };
        if text[start..end] != *REDACTED {
            out.push_str(&text[copied..start]);
            out.push_str(REDACTED);
            copied = end;
        }
        i = end.max(i + 1);
    }
    out.push_str(&text[copied..]);
    out
}

fn skip_spaces(text: &str, mut j: usize) -> usize {
    while matches!(text.as_bytes().get(j), Some(b' ' | b'\t')) {
        j += 1;
    }
    j
}

fn skip_quote(text: &str, j: usize) -> usize {
    let rest = &text[j..];
    if rest.starts_with("\\\"") {
        j + 2
    } else if rest.starts_with('"') || rest.starts_with('\'') {
        j + 1
    } else {
        j
    }
}

/// The span of the value starting at `j`: inside quotes (plain or backslash-escaped), or a bare
/// run up to a delimiter; a scheme word takes the word after it too. None for objects, arrays
/// and empty values.
fn value_span(text: &str, j: usize) -> Option<(usize, usize)> {
    let rest = &text[j..];
    if rest.starts_with("\\\"") {
        let start = j + 2;
        let end = text[start..].find("\\\"").map_or(text.len(), |e| start + e);
        return (end > start).then_some((start, end));
    }
    if let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let start = j + 1;
        let mut end = start;
        let mut escaped = false;
        for (k, c) in text[start..].char_indices() {
            end = start + k;
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == quote {
                break;
            }
            end = start + k + c.len_utf8();
        }
        return (end > start).then_some((start, end));
    }
    if rest.starts_with(['{', '[']) {
        return None;
    }
    let bare = |from: usize| {
        text[from..]
            .find(|c: char| {
                c.is_whitespace()
                    || matches!(
                        c,
                        '&' | ',' | ';' | '}' | ']' | '"' | '\'' | '<' | '>' | '\\'
                    )
            })
            .map_or(text.len(), |e| from + e)
    };
    let mut end = bare(j);
    if end == j {
        return None;
    }
    let word = text[j..end].to_ascii_lowercase();
    if SCHEMES.contains(&word.as_str()) {
        let next = skip_spaces(text, end);
        if next > end && text[next..].starts_with(REDACTED) {
            end = next + REDACTED.len();
        } else if next > end {
            let next_end = bare(next);
            if next_end > next {
                end = next_end;
            }
        }
    }
    Some((j, end))
}

/// JWTs, known token formats and long random-looking runs.
fn redact_shapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(is_token_char) {
        out.push_str(&rest[..start]);
        let run = &rest[start..];
        let len = run.find(|c: char| !is_token_char(c)).unwrap_or(run.len());
        let word = &run[..len];
        if looks_secret(word) {
            out.push_str(REDACTED);
        } else {
            out.push_str(&redact_segments(word));
        }
        rest = &run[len..];
    }
    out.push_str(rest);
    out
}

fn looks_secret(word: &str) -> bool {
    let trimmed = word.trim_matches(|c: char| c == '.' || c == '/');
    if trimmed.starts_with("eyJ") && trimmed.matches('.').count() >= 2 && trimmed.len() >= 20 {
        return true;
    }
    if TOKEN_PREFIXES
        .iter()
        .any(|(prefix, min)| trimmed.starts_with(prefix) && trimmed.len() >= *min)
    {
        return true;
    }
    !trimmed.starts_with('/') && !trimmed.contains('.') && random_looking(trimmed, 32)
}

/// Redacts the long random-looking parts of a word split at `/` and `.`.
fn redact_segments(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    let mut segment_start = 0;
    for (i, c) in word
        .char_indices()
        .chain(std::iter::once((word.len(), '/')))
    {
        if c == '/' || c == '.' {
            let segment = &word[segment_start..i];
            if random_looking(segment, 24) {
                out.push_str(REDACTED);
            } else {
                out.push_str(segment);
            }
            if i < word.len() {
                out.push(c);
            }
            segment_start = i + c.len_utf8();
        }
    }
    out
}

/// Long, and either all hex (32+) or mixing upper case, lower case and digits.
fn random_looking(s: &str, min: usize) -> bool {
    if s.len() < min {
        return false;
    }
    let hex = s.len() >= 32 && s.chars().all(|c| c.is_ascii_hexdigit());
    let upper = s.chars().any(|c| c.is_ascii_uppercase());
    let lower = s.chars().any(|c| c.is_ascii_lowercase());
    let digit = s.chars().any(|c| c.is_ascii_digit());
    hex || (upper && lower && digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(text: &str) -> String {
        redact_credentials(text)
    }

    #[test]
    fn auth_schemes_lose_their_credential() {
        assert_eq!(
            clean("Authorization: Bearer abc.def-123_XYZ"),
            "Authorization: [redacted]"
        );
        assert_eq!(
            clean("got bearer s3cr3tvalue back"),
            "got bearer [redacted] back"
        );
        assert_eq!(
            clean("header was Basic dXNlcjpwYXNzd29yZA=="),
            "header was Basic [redacted]"
        );
        // A short word after a scheme word is ordinary text.
        assert_eq!(clean("the token is bad"), "the token is bad");
    }

    #[test]
    fn sensitive_keys_lose_their_values_in_every_notation() {
        let cases = [
            (r#"{"ghToken":"abc123456"}"#, r#"{"ghToken":"[redacted]"}"#),
            (
                r#"{"password": "p@ss w0rd"}"#,
                r#"{"password": "[redacted]"}"#,
            ),
            ("token=abcdef&x=1", "token=[redacted]&x=1"),
            (
                "client_secret=xyz123, next",
                "client_secret=[redacted], next",
            ),
            ("X-Api-Key: k-1234567", "X-Api-Key: [redacted]"),
            ("sessionId='s-998877'", "sessionId='[redacted]'"),
            (
                r#"echo: {\"accessToken\":\"tok-9988\"}"#,
                r#"echo: {\"accessToken\":\"[redacted]\"}"#,
            ),
            ("cookie: a=b", "cookie: [redacted]"),
        ];
        for (input, expected) in cases {
            assert_eq!(clean(input), expected, "{input}");
        }
        // Objects are not swallowed: the sensitive keys inside them are redacted one by one.
        assert_eq!(
            clean(r#"{"auth": {"token": "zzz999", "user": "ann"}}"#),
            r#"{"auth": {"token": "[redacted]", "user": "ann"}}"#
        );
    }

    #[test]
    fn token_shapes_are_redacted_and_ordinary_text_is_kept() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(
            clean(&format!("bad jwt {jwt} here")),
            "bad jwt [redacted] here"
        );
        assert_eq!(
            clean("clone with ghs_16C7e42F292c6912E7710c838347Ae178B4a failed"),
            "clone with [redacted] failed"
        );
        assert_eq!(
            clean("key AKIAIOSFODNN7EXAMPLE used"),
            "key [redacted] used"
        );
        assert_eq!(
            clean("digest 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
            "digest [redacted]"
        );
        assert_eq!(
            clean("random Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1JkLmN tail"),
            "random [redacted] tail"
        );
        let ordinary = "job exec-42-coder failed: pod runners/exec-42 OOMKilled at 2026-11-29T10:00:00Z (uid 550e8400-e29b-41d4-a716-446655440000)";
        assert_eq!(clean(ordinary), ordinary);
        assert_eq!(
            clean("GET /apis/batch/v1/namespaces/runners/jobs/exec-42 → 404"),
            "GET /apis/batch/v1/namespaces/runners/jobs/exec-42 → 404"
        );
    }

    #[test]
    fn urls_lose_their_user_info_and_pem_keys_disappear() {
        assert_eq!(
            clean("cannot reach https://admin:hunter2@sched.example/x"),
            "cannot reach https://[redacted]@sched.example/x"
        );
        assert_eq!(
            clean("see https://sched.example/x"),
            "see https://sched.example/x"
        );
        let pem = "key: -----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY----- end";
        assert_eq!(clean(pem), "key: [redacted] end");
        let cert = "-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----";
        assert_eq!(clean(cert), cert);
    }

    #[test]
    fn known_values_are_replaced_wherever_they_appear() {
        let values = ["sched-secret-token-value-42", "short", "ghs_job_token"];
        assert_eq!(
            redact_values(
                "echo sched-secret-token-value-42 and ghs_job_token, short",
                &values
            ),
            "echo [redacted] and [redacted], short"
        );
        // Inside JSON text, where quotes and backslashes are escaped.
        let quoted = [r#"pa"ss\word"#];
        assert_eq!(
            redact_values(r#"{"p":"pa\"ss\\word"}"#, &quoted),
            r#"{"p":"[redacted]"}"#
        );
    }

    #[test]
    fn known_values_come_from_the_secrets_and_the_job_strings() {
        let secrets =
            SecretBundle::from_map([("TOKEN".to_owned(), "secret-value-1".to_owned())].into());
        let job = serde_json::json!({"ghToken": "ghs_abcdefgh", "steps": 3, "nested": [{"k": "long-value-xyz"}], "s": "tiny"});
        let mut values = known_values(&secrets, &job);
        values.sort_unstable();
        assert_eq!(values, ["ghs_abcdefgh", "long-value-xyz", "secret-value-1"]);
    }

    #[test]
    fn outcomes_are_scrubbed_in_every_text() {
        let secrets = SecretBundle::default();
        let job = serde_json::json!({"credential": "live-job-token-1"});
        let rejected = scrub_outcome(
            CallOutcome::Rejected {
                message: "dispatch → 400: bad token live-job-token-1".to_owned(),
            },
            &secrets,
            &job,
        );
        assert_eq!(
            rejected,
            CallOutcome::Rejected {
                message: "dispatch → 400: bad token [redacted]".to_owned()
            }
        );
        let observation = crate::manifest::Observation {
            error: Some("failed with Authorization: Bearer abcdef123".to_owned()),
            detail: Some("live-job-token-1".to_owned()),
            ..crate::manifest::Observation::default()
        };
        match scrub_outcome(CallOutcome::Observed(Box::new(observation)), &secrets, &job) {
            CallOutcome::Observed(o) => {
                assert_eq!(
                    o.error.as_deref(),
                    Some("failed with Authorization: [redacted]")
                );
                assert_eq!(o.detail.as_deref(), Some("[redacted]"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn redaction_never_panics_on_odd_text() {
        for text in [
            "",
            "token",
            "token=",
            "token:\"",
            "password='",
            "\\\"token\\\":\\\"",
            "Bearer",
            "://@",
            "-----BEGIN PRIVATE KEY",
            "é token=ü€ bearer ééééééé",
            "a@b://c@d",
        ] {
            let _ = redact_credentials(text);
        }
    }
}
