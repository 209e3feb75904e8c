//! Fuzz target: every fixed manifest renders every operation for a run whose job id, kind,
//! labels, job and captures come from the fuzz data. Rendering may refuse; it never panics, and
//! what it renders keeps the promises of manifests/README.md §6: the URL stays on `baseUrl`
//! (scheme, host, port, path prefix, no fragment), values cannot add path segments or query
//! parameters, header values carry no line break or control character, a JSON body parses, and
//! secrets reach headers only.

#![no_main]

use arbitrary::Unstructured;
use cattery::domain::secrets::SecretBundle;
use cattery::manifest::{Manifest, ManifestFormat, OpKind, RenderInput, RenderedRequest};
use cattery_fuzz::{
    ANSWER_KEYS, JOB_KEYS, RENDER_MANIFESTS, SECRET_MARK, compile, hostile_string, json_leaf,
    json_object, json_value, secrets_for,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use std::sync::OnceLock;

const OPS: [OpKind; 4] = [
    OpKind::Dispatch,
    OpKind::Poll,
    OpKind::Release,
    OpKind::Lookup,
];

/// The capture names the fixed manifests declare.
const CAPTURES: [&str; 6] = [
    "uid",
    "first",
    "all",
    "capabilities",
    "jobId",
    "dispatchedJobId",
];

/// One fixed manifest with what a benign run renders to, to compare hostile runs with.
struct Case {
    name: &'static str,
    manifest: Manifest,
    secrets: SecretBundle,
    /// Per operation: the number of path segments of a benign run's URL.
    segments: [usize; 4],
}

fn benign_input() -> RenderInput {
    RenderInput {
        job_id: "job-1".to_owned(),
        kind: Some("agent".to_owned()),
        job: json!({"steps": 3, "image": "img:1"}),
        labels: [("team".to_owned(), json!("core"))].into_iter().collect(),
        dispatch_id: "job-1".to_owned(),
        attempt: 1,
        captures: [
            ("uid".to_owned(), json!("u-1")),
            ("first".to_owned(), json!("a")),
            ("all".to_owned(), json!([1, 2])),
            ("capabilities".to_owned(), json!(["x"])),
            ("jobId".to_owned(), json!(42)),
            ("dispatchedJobId".to_owned(), json!("batch/dispatch-1")),
        ]
        .into_iter()
        .collect(),
        pool_name: "pool-1".to_owned(),
    }
}

fn cases() -> &'static [Case] {
    static CASES: OnceLock<Vec<Case>> = OnceLock::new();
    CASES.get_or_init(|| {
        RENDER_MANIFESTS
            .iter()
            .map(|(name, text)| {
                let manifest = compile(name, text);
                let secrets = secrets_for(&manifest);
                let mut segments = [0; 4];
                for (i, op) in OPS.into_iter().enumerate() {
                    if manifest.operation(op).is_none() {
                        continue;
                    }
                    match manifest.render(op, &benign_input(), &secrets) {
                        Ok(request) => segments[i] = request.url.path().split('/').count(),
                        Err(error) => panic!("{name} {op:?} does not render a benign run: {error}"),
                    }
                }
                Case {
                    name,
                    manifest,
                    secrets,
                    segments,
                }
            })
            .collect()
    })
}

/// A run built from the fuzz data, within what the API accepts: the job is an object and the
/// labels are strings. Captures come from a scheduler's answer, so they may be any JSON.
fn fuzz_input(u: &mut Unstructured<'_>) -> arbitrary::Result<RenderInput> {
    let job_id = hostile_string(u)?;
    let kind = if u.arbitrary()? {
        Some(hostile_string(u)?)
    } else {
        None
    };
    let job = Value::Object(json_object(u, 5, JOB_KEYS)?);
    let mut labels = Map::new();
    for _ in 0..u.int_in_range(0u8..=4)? {
        let name = match u.int_in_range(0u8..=3)? {
            0 => "team".to_owned(),
            1 => "tier".to_owned(),
            2 => "reason".to_owned(),
            _ => hostile_string(u)?,
        };
        labels.insert(name, Value::String(hostile_string(u)?));
    }
    let dispatch_id = if u.arbitrary()? {
        job_id.clone()
    } else {
        format!("{job_id}-{}", u.int_in_range(1u8..=9)?)
    };
    let mut captures = Map::new();
    for name in CAPTURES {
        if u.ratio(3u8, 4)? {
            let value = if u.arbitrary()? {
                json_leaf(u)?
            } else {
                json_value(u, 4, ANSWER_KEYS)?
            };
            captures.insert(name.to_owned(), value);
        }
    }
    Ok(RenderInput {
        job_id,
        kind,
        job,
        labels,
        dispatch_id,
        attempt: u.arbitrary()?,
        captures,
        pool_name: "pool-1".to_owned(),
    })
}

/// The query parameter names an operation declares, sorted, each as often as it is sent.
fn declared_query(manifest: &Manifest, op: OpKind) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(query) = manifest.source()[op.as_str()]["request"]["query"].as_object() {
        for (name, value) in query {
            let times = value.as_array().map_or(1, Vec::len);
            names.extend(std::iter::repeat_n(name.clone(), times));
        }
    }
    names.sort();
    names
}

fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

fn has_mark(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains(SECRET_MARK),
        Value::Array(items) => items.iter().any(has_mark),
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k.contains(SECRET_MARK) || has_mark(v)),
        _ => false,
    }
}

fn check(case: &Case, index: usize, op: OpKind, request: &RenderedRequest) {
    let name = case.name;
    let base = &case.manifest.base_url;
    let url = &request.url;

    // Confinement to baseUrl.
    assert_eq!(
        url.scheme(),
        base.scheme(),
        "{name} {op:?}: scheme of {url}"
    );
    assert_eq!(
        url.host_str(),
        base.host_str(),
        "{name} {op:?}: host of {url}"
    );
    assert_eq!(
        url.port_or_known_default(),
        base.port_or_known_default(),
        "{name} {op:?}: port of {url}"
    );
    assert!(
        url.username().is_empty() && url.password().is_none(),
        "{name} {op:?}: {url}"
    );
    assert!(url.fragment().is_none(), "{name} {op:?}: fragment in {url}");
    let prefix = base.path().trim_end_matches('/');
    let rest = url.path().strip_prefix(prefix);
    assert!(
        rest.is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
        "{name} {op:?}: {url} is not under {prefix:?}"
    );
    // Values are data: they add no path segment, no dot segment, no query parameter.
    assert_eq!(
        url.path().split('/').count(),
        case.segments[index],
        "{name} {op:?}: a value changed the path structure of {url}"
    );
    for segment in url.path().split('/') {
        let lower = segment.to_ascii_lowercase();
        assert!(
            !matches!(
                lower.as_str(),
                "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e."
            ),
            "{name} {op:?}: dot segment in {url}"
        );
    }
    assert!(
        url.path().len() <= 8 * 1024 + base.path().len(),
        "{name} {op:?}: path over the cap"
    );
    let mut sent: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
    sent.sort();
    if case.manifest.format == ManifestFormat::CatteryV1 {
        assert_eq!(
            sent,
            declared_query(&case.manifest, op),
            "{name} {op:?}: query parameters of {url}"
        );
    }

    // Headers: valid names, no line break or control character (tab allowed).
    for (header, value) in &request.headers {
        assert!(
            !header.is_empty()
                && header
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)),
            "{name} {op:?}: header name {header:?}"
        );
        assert!(
            !value.chars().any(|c| c.is_ascii_control() && c != '\t'),
            "{name} {op:?}: header {header} carries a control character: {value:?}"
        );
    }

    // Secrets reach headers only.
    let decoded_path = percent_encoding_free_decode(url.path());
    assert!(
        !decoded_path.contains(SECRET_MARK),
        "{name} {op:?}: a secret in the path"
    );
    for (k, v) in url.query_pairs() {
        assert!(
            !k.contains(SECRET_MARK) && !v.contains(SECRET_MARK),
            "{name} {op:?}: a secret in the query"
        );
    }

    // The body.
    if let Some(body) = &request.body {
        assert!(
            body.len() <= 4 * 1024 * 1024,
            "{name} {op:?}: body over the cap"
        );
        let text = String::from_utf8_lossy(body);
        assert!(
            !text.contains(SECRET_MARK) && !text.to_ascii_lowercase().contains("\\u2603"),
            "{name} {op:?}: a secret in the body"
        );
        let content_type = request
            .content_type
            .as_deref()
            .unwrap_or("application/json");
        if is_json_media_type(content_type) {
            match serde_json::from_slice::<Value>(body) {
                Ok(value) => assert!(!has_mark(&value), "{name} {op:?}: a secret in the body"),
                Err(error) => panic!("{name} {op:?}: the {content_type} body is not JSON: {error}"),
            }
        }
    } else {
        assert!(
            request.content_type.is_none(),
            "{name} {op:?}: a content type without a body"
        );
    }
}

/// Percent-decodes `text` (lossy), without depending on the encoder under test.
fn percent_encoding_free_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(input) = fuzz_input(&mut u) else {
        return;
    };
    for case in cases() {
        for (index, op) in OPS.into_iter().enumerate() {
            if case.manifest.operation(op).is_none() {
                continue;
            }
            if let Ok(request) = case.manifest.render(op, &input, &case.secrets) {
                check(case, index, op, &request);
            }
        }
    }
});
