//! Property tests over hostile input (beside the cargo-fuzz targets of fuzz/; see README "Security"):
//! manifest parsing and validation, template rendering with hostile values, JMESPath mapping of
//! hostile answers, the egress URL check and redaction never panic, and keep their promises.
//!
//! Each property runs `PROPTEST_CASES` cases (256 by default); `.ci/run` runs them again longer.

use cattery::domain::secrets::SecretBundle;
use cattery::egress::{Class, EgressPolicy, classify};
use cattery::manifest::{Defaults, Manifest, OpKind, RenderInput};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Strings that break naive code: template syntax, control characters, quotes, path tricks,
/// percent escapes, bidi controls, long runs.
fn hostile_string() -> impl Strategy<Value = String> {
    let fragments = prop::sample::select(vec![
        "{{",
        "}}",
        "{{{",
        "}}}",
        "{{input.job}}",
        "{{secret \"K\"}}",
        "{{#if x}}",
        "\r\n",
        "\n",
        "\0",
        "\"",
        "'",
        "\\",
        "../",
        "..",
        "%2e%2e",
        "%0d%0a",
        "?",
        "#",
        "@",
        "://",
        "/",
        " ",
        "é",
        "\u{202e}",
        "\u{feff}",
        "${x}",
        "`",
        "[0]",
        "*",
        "|",
        "&&",
        "null",
        "-1",
        "1e999",
        "ghs_0123456789abcdefghij",
        "Bearer x",
        "A",
    ]);
    prop_oneof![
        any::<String>(),
        prop::collection::vec(fragments, 0..12).prop_map(|parts| parts.concat()),
        "[a-z0-9.-]{0,80}",
        (1usize..20_000).prop_map(|n| "x".repeat(n)),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        hostile_string().prop_map(Value::String),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(hostile_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// JSON nested `depth` levels deep (arrays and objects alternating).
fn nested(depth: usize) -> String {
    let mut text = String::from("1");
    for level in 0..depth {
        text = if level % 2 == 0 {
            format!("[{text}]")
        } else {
            format!("{{\"a\":{text}}}")
        };
    }
    text
}

/// A valid manifest with templates in every position and expressions worth attacking.
fn rich_manifest() -> Value {
    json!({
        "apiVersion": "cattery/v1",
        "baseUrl": "https://sched.example:8443/api",
        "auth": {"type": "api_key", "headerName": "X-Key", "secretRef": {"key": "K"}},
        "vars": {"ns": "runners"},
        "dispatch": {
            "request": {
                "method": "POST",
                "path": "/ns/{{vars.ns}}/jobs/{{input.jobId}}/{{dns1123 run.dispatchId}}",
                "query": {"kind": "{{input.kind}}", "labels": "{{json input.labels}}"},
                "headers": {"X-Job": "{{input.jobId}}", "X-Kind": "{{upper input.kind}}"},
                "body": {
                    "name": "{{run.dispatchId}}",
                    "spec": "{{input.job}}",
                    "text": "id={{input.jobId}} job={{json input.job}}",
                    "b64": "{{base64 input.jobId}}",
                    "enc": "{{urlencode input.jobId}}",
                    "lower": "{{lower input.jobId}}"
                }
            },
            "expect": [201],
            "capture": {"uid": "metadata.uid", "first": "items[0].name"}
        },
        "poll": {
            "request": {"method": "GET", "path": "/jobs/{{urlencode run.dispatchId}}", "query": {"uid": "{{capture.uid}}"}},
            "map": {
                "state": "status.conditions[?status=='True'].type | [0] || (status.active > `0` && 'Running') || 'Pending'",
                "statusMap": {"Complete": "done", "Failed": "failed"},
                "error": "join(', ', items[*].msg)",
                "result": "output",
                "detail": "max_by(items, &to_number(n)).id",
                "heartbeat": "to_string(ts)",
                "progress": {"completed": "done", "total": "length(items)"}
            }
        },
        "release": {"request": {"method": "DELETE", "path": "/jobs/{{dns1123 run.dispatchId}}"}}
    })
}

fn compiled_rich() -> Manifest {
    Manifest::from_value(&rich_manifest(), &Defaults::default()).unwrap()
}

/// Places in a manifest where a mutation lands.
const PATHS: &[&[&str]] = &[
    &["apiVersion"],
    &["baseUrl"],
    &["auth"],
    &["auth", "type"],
    &["vars"],
    &["limits"],
    &["retry"],
    &["polling"],
    &["followRedirects"],
    &["tls"],
    &["dispatch"],
    &["dispatch", "request", "path"],
    &["dispatch", "request", "method"],
    &["dispatch", "request", "body"],
    &["dispatch", "request", "bodyTemplate"],
    &["dispatch", "request", "headers"],
    &["dispatch", "request", "query"],
    &["dispatch", "capture"],
    &["dispatch", "expect"],
    &["poll", "map"],
    &["poll", "map", "state"],
    &["poll", "map", "statusMap"],
    &["poll", "map", "progress"],
    &["poll", "notFound"],
    &["release"],
    &["pollMany"],
    &["unknownField"],
];

fn set_path(doc: &mut Value, path: &[&str], value: Value) {
    let mut at = doc;
    for (i, key) in path.iter().enumerate() {
        if !at.is_object() {
            *at = Value::Object(Map::new());
        }
        let Some(object) = at.as_object_mut() else {
            return;
        };
        if i + 1 == path.len() {
            object.insert((*key).to_owned(), value);
            return;
        }
        at = object.entry((*key).to_owned()).or_insert(Value::Null);
    }
}

fn template_like() -> impl Strategy<Value = Value> {
    let parts = prop::sample::select(vec![
        "{{input.jobId}}",
        "{{input.job}}",
        "{{json input.job}}",
        "{{run.dispatchId}}",
        "{{capture.uid}}",
        "{{vars.ns}}",
        "{{secret \"K\"}}",
        "{{missing}}",
        "{{#each x}}",
        "{{/each}}",
        "{{lookup input.job 'a'}}",
        "{{dns1123 input.jobId}}",
        "{{{json input.job}}}",
        "/",
        "..",
        "?a=b",
        "#f",
        "text",
        "}}",
        "{{",
        " ",
        "\n",
        "items[0]",
        "|",
        "`1`",
    ]);
    prop::collection::vec(parts, 0..8).prop_map(|p| Value::String(p.concat()))
}

fn sample_input() -> impl Strategy<Value = RenderInput> {
    (
        hostile_string(),
        prop::option::of(hostile_string()),
        arb_json(),
        prop::collection::btree_map(hostile_string(), leaf(), 0..4),
        hostile_string(),
        0u32..5,
        arb_json(),
    )
        .prop_map(
            |(job_id, kind, job, labels, dispatch_id, attempt, uid)| RenderInput {
                job_id,
                kind,
                job: match job {
                    Value::Object(_) => job,
                    other => json!({"value": other}),
                },
                labels: labels.into_iter().collect(),
                dispatch_id,
                attempt,
                captures: [("uid".to_owned(), uid), ("first".to_owned(), Value::Null)]
                    .into_iter()
                    .collect(),
                pool_name: "p".to_owned(),
            },
        )
}

fn secrets() -> SecretBundle {
    SecretBundle::from_map([("K".to_owned(), "secret-value".to_owned())].into())
}

/// The properties below are not vacuous: the rich manifest renders every operation.
#[test]
fn the_rich_manifest_renders_a_benign_run() {
    let input = RenderInput {
        job_id: "job-1".to_owned(),
        kind: Some("agent".to_owned()),
        job: json!({"steps": 3}),
        labels: Map::new(),
        dispatch_id: "job-1".to_owned(),
        attempt: 1,
        captures: [
            ("uid".to_owned(), json!("u-1")),
            ("first".to_owned(), Value::Null),
        ]
        .into_iter()
        .collect(),
        pool_name: "p".to_owned(),
    };
    let manifest = compiled_rich();
    for op in [OpKind::Dispatch, OpKind::Poll, OpKind::Release] {
        let request = manifest.render(op, &input, &secrets()).unwrap();
        assert!(
            request
                .url
                .as_str()
                .starts_with("https://sched.example:8443/api/")
        );
    }
    let observed = manifest
        .poll
        .observe(br#"{"status": {"conditions": [{"status": "True", "type": "Complete"}]}, "items": [{"msg": "a", "n": 1, "id": "x"}], "ts": 5}"#)
        .unwrap();
    assert_eq!(observed.scheduler_state.as_deref(), Some("Complete"));
}

proptest! {
    #[test]
    fn manifest_text_never_panics_the_parser(text in hostile_string()) {
        let _ = Manifest::parse(&text, &Defaults::default());
    }

    #[test]
    fn mutated_manifests_are_accepted_or_refused_with_problems_never_a_panic(
        mutations in prop::collection::vec(
            (prop::sample::select(PATHS.to_vec()), prop_oneof![arb_json(), template_like()]),
            1..4,
        ),
        input in sample_input(),
    ) {
        let mut doc = rich_manifest();
        for (path, value) in mutations {
            set_path(&mut doc, path, value);
        }
        match Manifest::from_value(&doc, &Defaults::default()) {
            Ok(manifest) => {
                // What registers renders or refuses cleanly, for any run.
                for op in [OpKind::Dispatch, OpKind::Poll, OpKind::Release] {
                    let _ = manifest.render(op, &input, &secrets());
                }
            }
            Err(error) => prop_assert!(!error.problems.is_empty()),
        }
    }

    #[test]
    fn hostile_values_render_confined_to_the_base_url(input in sample_input()) {
        let manifest = compiled_rich();
        for op in [OpKind::Dispatch, OpKind::Poll, OpKind::Release] {
            let Ok(request) = manifest.render(op, &input, &secrets()) else {
                continue;
            };
            prop_assert_eq!(request.url.scheme(), "https");
            prop_assert_eq!(request.url.host_str(), Some("sched.example"));
            prop_assert_eq!(request.url.port(), Some(8443));
            prop_assert!(request.url.path().starts_with("/api/"), "{}", request.url);
            for (name, value) in &request.headers {
                prop_assert!(
                    !value.contains(['\r', '\n', '\0']),
                    "header {} carries a line break", name
                );
            }
            if let Some(body) = &request.body {
                prop_assert!(serde_json::from_slice::<Value>(body).is_ok(), "the body is JSON");
            }
        }
    }

    #[test]
    fn hostile_answers_are_mapped_or_refused_never_a_panic(
        answer in prop_oneof![
            arb_json().prop_map(|v| v.to_string().into_bytes()),
            prop::collection::vec(any::<u8>(), 0..512),
            (1usize..3000).prop_map(|depth| nested(depth).into_bytes()),
            arb_json().prop_map(|v| json!({
                "status": {"conditions": [{"status": "True", "type": v.clone()}], "active": v.clone()},
                "items": [{"msg": v.clone(), "n": v.clone(), "id": v.clone()}, {"n": "12"}],
                "output": v.clone(), "ts": v.clone(), "done": v.clone(),
                "metadata": {"uid": v}
            }).to_string().into_bytes()),
        ],
    ) {
        let manifest = compiled_rich();
        let _ = manifest.poll.observe(&answer);
        let _ = manifest.dispatch.capture(&answer);
    }

    #[test]
    fn the_egress_check_never_panics_and_allows_only_public_literals(
        host in prop_oneof![
            hostile_string(),
            (any::<u32>()).prop_map(|n| n.to_string()),
            (any::<u32>()).prop_map(|n| format!("0x{n:x}")),
            (any::<[u8; 4]>()).prop_map(|b| format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3])),
            (any::<[u16; 8]>()).prop_map(|s| format!("[{:x}:{:x}:{:x}:{:x}:{:x}:{:x}:{:x}:{:x}]", s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7])),
            (any::<[u8; 4]>()).prop_map(|b| format!("[::ffff:{}.{}.{}.{}]", b[0], b[1], b[2], b[3])),
        ],
        scheme in prop::sample::select(vec!["https", "http", "ftp", "file"]),
    ) {
        let Ok(url) = url::Url::parse(&format!("{scheme}://{host}/x")) else {
            return Ok(());
        };
        let allowed = EgressPolicy::default().check_url(&url).is_ok();
        if allowed {
            prop_assert_eq!(url.scheme(), "https");
            let ip = match url.host() {
                Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
                _ => None,
            };
            if let Some(ip) = ip {
                prop_assert_eq!(classify(ip), Class::Public, "{} was allowed", url);
            }
        }
    }

    #[test]
    fn known_values_never_survive_redaction(
        prefix in hostile_string(),
        suffix in hostile_string(),
        value in "k9[A-Za-z0-9_-]{4,30}",
    ) {
        let text = format!("{prefix}{value}{suffix}");
        let clean = cattery::redact::redact(&text, &[value.as_str()]);
        prop_assert!(!clean.contains(&value), "{:?}", clean);
    }

    #[test]
    fn bearer_credentials_never_survive_redaction(
        prefix in hostile_string(),
        suffix in hostile_string(),
        token in "[A-Za-z0-9._~+/-]{8,40}",
    ) {
        let text = format!("{prefix} Authorization: Bearer {token} {suffix}");
        let clean = cattery::redact::redact_credentials(&text);
        prop_assert!(!clean.contains(&format!("Bearer {token}")), "{:?}", clean);
    }
}
