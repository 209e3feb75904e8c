//! Cat-Factory runner-pool manifests: detected by their shape and converted into cattery/v1.
//!
//! A Cat-Factory manifest (CATFACTORY.md §1: `providerId`, `label`, `baseUrl`, `auth`,
//! `dispatch`/`poll`/`release` with `pathTemplate`, `query` and `headers` lists, `bodyTemplate`,
//! `timeoutMs`, and a `response` of dot-paths) is read with Cat-Factory's own schema rules
//! (unknown keys are ignored, as Cat-Factory strips them), then rewritten as the cattery/v1
//! document that behaves the same, and compiled by the cattery/v1 compiler. The conversion:
//!
//! - `{{input.x}}` placeholders are found with Cat-Factory's pattern; `input.job` becomes
//!   `{{json input.job}}` (compact JSON, as Cat-Factory splices it), the variables Cat-Factory
//!   leaves empty in an operation (anything but `input.jobId` in poll and release, unknown keys,
//!   other namespaces) render as empty text, with a warning; other text is kept literally.
//! - dot-paths become JMESPath (`items.0.id` → `items[0].id`, odd keys quoted);
//! - `statusMap` lists become maps keyed by the trimmed, lower-cased word (first entry wins);
//! - `query` and `headers` lists become maps (a repeated query key becomes a list);
//! - the response mapping becomes `poll.map` with `coerce: cat-factory`, which applies
//!   Cat-Factory's status vocabulary and its result and channel coercions;
//!   `dispatchCapabilitiesPath` becomes a dispatch capture named `capabilities`.
//!
//! Where cattery is stricter than Cat-Factory (values JSON-escaped inside a `bodyTemplate`,
//! percent-encoded in a path), the manifest still registers and a warning says so. Problems
//! are reported with Cat-Factory paths (`dispatch.pathTemplate`, `response.statusMap.1.to`).

use super::walk::{Problems, join};
use super::{
    Defaults, Manifest, ManifestError, ManifestFormat, OpKind, Problem, Warning, validate,
};
use serde_json::{Map, Value, json};

/// Top-level fields of Cat-Factory's schema.
const TOP_FIELDS: &[&str] = &[
    "providerId",
    "label",
    "baseUrl",
    "auth",
    "dispatch",
    "poll",
    "release",
    "response",
];

/// Fields of one request template.
const TEMPLATE_FIELDS: &[&str] = &[
    "method",
    "pathTemplate",
    "query",
    "headers",
    "bodyTemplate",
    "timeoutMs",
];

/// The scalar dot-paths of the response mapping and where each goes in `poll.map`.
const SCALAR_PATHS: &[(&str, &str)] = &[
    ("statusPath", "state"),
    ("heartbeatPath", "heartbeat"),
    ("errorPath", "error"),
    ("failureCausePath", "failureCause"),
    ("detailPath", "detail"),
    ("resultPath", "result"),
];

/// Dot-paths that become `poll.map.progress.*`.
const PROGRESS_PATHS: &[(&str, &str)] = &[
    ("progressCompletedPath", "completed"),
    ("progressInProgressPath", "inProgress"),
    ("progressTotalPath", "total"),
];

/// Dot-paths that override result fields on done (`poll.map.resultFields.*`).
const RESULT_FIELD_PATHS: &[(&str, &str)] = &[
    ("prUrlPath", "prUrl"),
    ("branchPath", "branch"),
    ("summaryPath", "summary"),
];

/// Dot-paths of the live channels (`poll.map.fields.*`).
const CHANNEL_PATHS: &[(&str, &str)] = &[
    ("followUpsPath", "followUps"),
    ("callMetricsPath", "callMetrics"),
    ("validationReportPath", "validationReport"),
    ("reproductionReportPath", "reproductionReport"),
    ("sliceReviewsPath", "sliceReviews"),
    ("toolServersPath", "toolServers"),
];

/// Read from the dispatch answer, kept as the capture `capabilities`.
const CAPABILITIES_PATH: &str = "dispatchCapabilitiesPath";

/// Cat-Factory's default call timeout for runner pools.
const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// A Cat-Factory manifest converted to cattery/v1.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// The cattery/v1 document.
    pub document: Value,
    /// What behaves differently from Cat-Factory, or what Cat-Factory would ignore.
    pub warnings: Vec<Warning>,
    /// cattery/v1 path prefix → Cat-Factory path, to report problems where the author wrote them.
    paths: Vec<(String, String)>,
}

/// True when `doc` has Cat-Factory's shape: an object without `apiVersion` that has
/// `providerId`, `label` or `response`, or an operation with a `pathTemplate`.
pub(crate) fn looks_like_cat_factory(doc: &Value) -> bool {
    let Some(map) = doc.as_object() else {
        return false;
    };
    if map.contains_key("apiVersion") {
        return false;
    }
    ["providerId", "label", "response"]
        .iter()
        .any(|k| map.contains_key(*k))
        || ["dispatch", "poll", "release"]
            .iter()
            .any(|op| map.get(*op).and_then(|o| o.get("pathTemplate")).is_some())
}

/// Converts Cat-Factory manifest text (YAML or JSON) into its cattery/v1 equivalent and checks
/// that the result compiles.
///
/// # Errors
/// A [`ManifestError`] when the text is not a Cat-Factory manifest, breaks Cat-Factory's schema,
/// or converts to something cattery cannot run (each problem with its Cat-Factory path).
pub fn convert_catfactory(text: &str, defaults: &Defaults) -> Result<Converted, ManifestError> {
    let doc = super::source::parse_text(text).map_err(|problem| ManifestError {
        problems: vec![problem],
    })?;
    if !looks_like_cat_factory(&doc) {
        return Err(ManifestError {
            problems: vec![Problem {
                path: String::new(),
                message: "this is not a Cat-Factory runner-pool manifest (it has apiVersion, or \
                          none of providerId, label, response, pathTemplate); a cattery/v1 \
                          manifest needs no conversion"
                    .to_owned(),
            }],
        });
    }
    let converted = convert(&doc)?;
    let mut compiled =
        validate::build(&converted.document, defaults).map_err(|e| converted.remap(e))?;
    let mut warnings = converted.warnings.clone();
    warnings.append(&mut compiled.warnings);
    Ok(Converted {
        warnings,
        ..converted
    })
}

/// Builds a [`Manifest`] from a Cat-Factory document: converted, compiled, and reported with
/// `format: cat-factory`, its source kept as registered.
pub(crate) fn build(doc: &Value, defaults: &Defaults) -> Result<Manifest, ManifestError> {
    let converted = convert(doc)?;
    let mut manifest =
        validate::build(&converted.document, defaults).map_err(|e| converted.remap(e))?;
    manifest.format = ManifestFormat::CatFactory;
    manifest.source = doc.clone();
    let mut warnings = converted.warnings;
    warnings.append(&mut manifest.warnings);
    manifest.warnings = warnings;
    Ok(manifest)
}

impl Converted {
    /// Rewrites the paths of cattery/v1 problems into Cat-Factory paths (longest prefix wins).
    fn remap(&self, error: ManifestError) -> ManifestError {
        let problems = error
            .problems
            .into_iter()
            .map(|p| Problem {
                path: self.remap_path(&p.path),
                message: p.message,
            })
            .collect();
        ManifestError { problems }
    }

    fn remap_path(&self, path: &str) -> String {
        self.paths
            .iter()
            .filter(|(from, _)| {
                path == from
                    || path
                        .strip_prefix(from.as_str())
                        .is_some_and(|rest| rest.starts_with('.'))
            })
            .max_by_key(|(from, _)| from.len())
            .map_or_else(
                || path.to_owned(),
                |(from, to)| format!("{to}{}", &path[from.len()..]),
            )
    }
}

/// The conversion state: the problems and warnings found so far.
struct Converter {
    problems: Problems,
    warnings: Vec<Warning>,
    paths: Vec<(String, String)>,
}

impl Converter {
    fn warn(&mut self, code: &str, message: String) {
        if !self
            .warnings
            .iter()
            .any(|w| w.code == code && w.message == message)
        {
            self.warnings.push(Warning {
                code: code.to_owned(),
                message,
            });
        }
    }

    fn map_path(&mut self, cattery: impl Into<String>, cat_factory: impl Into<String>) {
        self.paths.push((cattery.into(), cat_factory.into()));
    }

    /// Reads a string field with Cat-Factory's rules: `trim` first, then a length range.
    fn string(
        &mut self,
        object: &Map<String, Value>,
        parent: &str,
        key: &str,
        required: bool,
        trim: bool,
        max: usize,
    ) -> Option<String> {
        let path = join(parent, key);
        match object.get(key) {
            None | Some(Value::Null) => {
                if required {
                    self.problems.add(path, "is required but missing");
                }
                None
            }
            Some(Value::String(s)) => {
                let s = if trim { s.trim() } else { s.as_str() };
                let len = s.chars().count();
                if required && len == 0 {
                    self.problems.add(path, "must not be empty");
                    None
                } else if len > max {
                    self.problems
                        .add(path, format!("is {len} characters long; the most is {max}"));
                    None
                } else {
                    Some(s.to_owned())
                }
            }
            Some(other) => {
                self.problems.add(
                    path,
                    format!("must be a string, not {}", super::walk::kind_of(other)),
                );
                None
            }
        }
    }

    /// Warns once about fields Cat-Factory's schema does not know (it strips them silently).
    fn ignored(&mut self, object: &Map<String, Value>, parent: &str, allowed: &[&str]) {
        let unknown: Vec<&str> = object
            .keys()
            .map(String::as_str)
            .filter(|k| !allowed.contains(k))
            .collect();
        if unknown.is_empty() {
            return;
        }
        let mut message = format!(
            "{} not part of Cat-Factory's manifest schema, which ignores {}: {}",
            if unknown.len() == 1 { "is" } else { "are" },
            if unknown.len() == 1 { "it" } else { "them" },
            unknown
                .iter()
                .map(|k| format!("`{}`", join(parent, k)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        message = format!(
            "{}{message}",
            if unknown.len() == 1 {
                "this field "
            } else {
                "these fields "
            }
        );
        if unknown
            .iter()
            .any(|k| matches!(*k, "queryTemplate" | "headersTemplate"))
        {
            message.push_str("; the fields are named `query` and `headers`");
        }
        message.push_str("; cattery ignores them too");
        self.warn("ignored_field", message);
    }
}

/// Converts a Cat-Factory document into a cattery/v1 document, or lists every problem.
fn convert(doc: &Value) -> Result<Converted, ManifestError> {
    let mut cv = Converter {
        problems: Problems::default(),
        warnings: Vec::new(),
        paths: Vec::new(),
    };
    let Some(root) = doc.as_object() else {
        cv.problems
            .add("", "a Cat-Factory manifest must be an object");
        return Err(cv.problems.into_error());
    };
    cv.ignored(root, "", TOP_FIELDS);
    let provider_id = cv.string(root, "", "providerId", true, false, 64);
    if let Some(id) = &provider_id
        && !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        cv.problems
            .add("providerId", format!("{id:?} must use only a-z, 0-9 and -"));
    }
    let label = cv.string(root, "", "label", true, true, 120);
    let base_url = cv.string(root, "", "baseUrl", true, true, 2000);
    cv.map_path("baseUrl", "baseUrl");

    let auth = convert_auth(root.get("auth"), &mut cv);
    let auth_headers = auth_header_names(&auth);
    cv.map_path("auth", "auth");

    let response = match root.get("response") {
        Some(Value::Object(map)) => Some(map),
        None | Some(Value::Null) => {
            cv.problems.add("response", "is required but missing");
            None
        }
        Some(other) => {
            cv.problems.add(
                "response",
                format!("must be an object, not {}", super::walk::kind_of(other)),
            );
            None
        }
    };

    let mut out = Map::new();
    out.insert("apiVersion".into(), json!(validate::API_VERSION));
    let description = match (&label, &provider_id) {
        (Some(label), Some(id)) => format!("{label} (Cat-Factory runner pool {id})"),
        _ => "a Cat-Factory runner pool".to_owned(),
    };
    out.insert("description".into(), Value::String(description));
    if let Some(url) = base_url {
        out.insert("baseUrl".into(), Value::String(url));
    }
    out.insert("auth".into(), auth);

    let mut any_json_escaped = false;
    for (kind, required) in [
        (OpKind::Dispatch, true),
        (OpKind::Poll, true),
        (OpKind::Release, false),
    ] {
        let name = kind.as_str();
        match root.get(name) {
            None | Some(Value::Null) => {
                if required {
                    cv.problems.add(name, "is required but missing");
                }
            }
            Some(Value::Object(template)) => {
                let (op, escaped) = convert_operation(kind, template, &auth_headers, &mut cv);
                any_json_escaped |= escaped;
                out.insert(name.into(), op);
            }
            Some(other) => cv.problems.add(
                name,
                format!(
                    "must be a request template object, not {}",
                    super::walk::kind_of(other)
                ),
            ),
        }
    }
    if any_json_escaped {
        cv.warn(
            "json_escaping",
            "values substituted into a bodyTemplate are JSON-escaped (Cat-Factory inserts them \
             raw): a value holding a quote, a backslash or a line break stays data inside its \
             JSON string instead of breaking the body; {{input.job}} is spliced as compact JSON"
                .to_owned(),
        );
    }

    if let Some(response) = response {
        convert_response(response, &mut out, &mut cv);
    }

    if cv.problems.is_empty() {
        Ok(Converted {
            document: Value::Object(out),
            warnings: cv.warnings,
            paths: cv.paths,
        })
    } else {
        Err(cv.problems.into_error())
    }
}

/// The auth section with only the fields Cat-Factory's schema knows (strings trimmed where it
/// trims them); an empty `custom_headers` list is no auth at all.
fn convert_auth(value: Option<&Value>, cv: &mut Converter) -> Value {
    let object = match value {
        Some(Value::Object(map)) => map,
        None | Some(Value::Null) => {
            cv.problems.add("auth", "is required but missing");
            return json!({"type": "none"});
        }
        Some(other) => {
            cv.problems.add(
                "auth",
                format!("must be an object, not {}", super::walk::kind_of(other)),
            );
            return json!({"type": "none"});
        }
    };
    let scheme = object
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let known: &[&str] = match scheme {
        "none" => &["type"],
        "api_key" => &["type", "headerName", "secretRef", "valuePrefix"],
        "bearer" => &["type", "secretRef"],
        "basic" => &["type", "usernameSecretRef", "passwordSecretRef"],
        "oauth2_client_credentials" => &[
            "type",
            "tokenUrl",
            "clientIdSecretRef",
            "clientSecretSecretRef",
            "scope",
            "audience",
        ],
        "custom_headers" => &["type", "headers"],
        // An unknown type is reported by the cattery/v1 auth reader, with the list of types.
        _ => return Value::Object(object.clone()),
    };
    cv.ignored(object, "auth", known);
    let mut out = Map::new();
    for key in known {
        let Some(value) = object.get(*key).filter(|v| !v.is_null()) else {
            continue;
        };
        let value = match (*key, value) {
            ("tokenUrl", Value::String(s)) => Value::String(s.trim().to_owned()),
            (
                "secretRef"
                | "usernameSecretRef"
                | "passwordSecretRef"
                | "clientIdSecretRef"
                | "clientSecretSecretRef",
                Value::Object(r),
            ) => secret_ref(r),
            ("headers", Value::Array(items)) => Value::Array(
                items
                    .iter()
                    .map(|item| match item.as_object() {
                        Some(entry) => {
                            let mut e = Map::new();
                            for k in ["name", "secretRef"] {
                                if let Some(v) = entry.get(k) {
                                    let v = match v {
                                        Value::Object(r) if k == "secretRef" => secret_ref(r),
                                        other => other.clone(),
                                    };
                                    e.insert(k.to_owned(), v);
                                }
                            }
                            Value::Object(e)
                        }
                        None => item.clone(),
                    })
                    .collect(),
            ),
            (_, other) => other.clone(),
        };
        out.insert((*key).to_owned(), value);
    }
    if scheme == "custom_headers"
        && out
            .get("headers")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
    {
        return json!({"type": "none"});
    }
    Value::Object(out)
}

fn secret_ref(reference: &Map<String, Value>) -> Value {
    match reference.get("key") {
        Some(key) => json!({ "key": key }),
        None => json!({}),
    }
}

/// The header names the converted auth scheme sets.
fn auth_header_names(auth: &Value) -> Vec<String> {
    match auth.get("type").and_then(Value::as_str) {
        Some("api_key") => auth
            .get("headerName")
            .and_then(Value::as_str)
            .map(|h| vec![h.to_owned()])
            .unwrap_or_default(),
        Some("bearer" | "basic" | "oauth2_client_credentials") => vec!["authorization".to_owned()],
        Some("custom_headers") => auth
            .get("headers")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.get("name").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Where a converted template renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spot {
    Path,
    Query,
    Header,
    Body,
}

/// Converts one request template into a cattery/v1 operation. Returns the operation and
/// whether its body substitutes values that cattery JSON-escapes.
fn convert_operation(
    kind: OpKind,
    template: &Map<String, Value>,
    auth_headers: &[String],
    cv: &mut Converter,
) -> (Value, bool) {
    let at = kind.as_str();
    cv.ignored(template, at, TEMPLATE_FIELDS);
    cv.map_path(at, at);
    cv.map_path(format!("{at}.request"), at);
    cv.map_path(format!("{at}.request.method"), format!("{at}.method"));
    cv.map_path(format!("{at}.request.path"), format!("{at}.pathTemplate"));
    cv.map_path(
        format!("{at}.request.bodyTemplate"),
        format!("{at}.bodyTemplate"),
    );
    cv.map_path(format!("{at}.timeoutMs"), format!("{at}.timeoutMs"));

    let mut request = Map::new();
    let method = match template.get("method") {
        Some(Value::String(m))
            if matches!(m.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE") =>
        {
            Some(m.clone())
        }
        None | Some(Value::Null) => {
            cv.problems
                .add(join(at, "method"), "is required but missing");
            None
        }
        Some(other) => {
            cv.problems.add(
                join(at, "method"),
                format!(
                    "{} is not a method; use GET, POST, PUT, PATCH or DELETE",
                    super::walk::show(other)
                ),
            );
            None
        }
    };
    if let Some(m) = &method {
        request.insert("method".into(), Value::String(m.clone()));
    }

    let mut query: Vec<(String, String, String)> = Vec::new();
    if let Some(path) = cv.string(template, at, "pathTemplate", false, false, 2000) {
        let (path, path_query) = split_path(&path, kind, cv);
        for (key, value) in path_query {
            query.push((key, value, join(at, "pathTemplate")));
        }
        request.insert("path".into(), Value::String(path));
    } else if !template.contains_key("pathTemplate") {
        cv.problems
            .add(join(at, "pathTemplate"), "is required but missing");
    }

    match template.get("query") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("{at}.query.{i}");
                let Some(entry) = item.as_object() else {
                    cv.problems.add(path, "must be an object {key, value}");
                    continue;
                };
                let key = cv.string(entry, &path, "key", false, false, usize::MAX);
                let value = cv.string(entry, &path, "value", false, false, usize::MAX);
                for (field, present) in [("key", key.is_some()), ("value", value.is_some())] {
                    if !present && !entry.contains_key(field) {
                        cv.problems
                            .add(join(&path, field), "is required but missing");
                    }
                }
                if let (Some(key), Some(value)) = (key, value) {
                    let converted = template_text(&value, kind, Spot::Query, &path, cv).0;
                    query.push((key, converted, path));
                }
            }
        }
        Some(other) => cv.problems.add(
            join(at, "query"),
            format!(
                "must be a list of {{key, value}}, not {}",
                super::walk::kind_of(other)
            ),
        ),
    }
    if !query.is_empty() {
        let mut map: Map<String, Value> = Map::new();
        for (key, value, path) in query {
            if key.is_empty() {
                cv.warn(
                    "query_dropped",
                    format!(
                        "{path}: a query parameter with an empty key is not sent (cattery needs \
                         a name; Cat-Factory would send \"={value}\")"
                    ),
                );
                continue;
            }
            cv.map_path(format!("{at}.request.query.{key}"), path);
            match map.get_mut(&key) {
                Some(Value::Array(list)) => list.push(Value::String(value)),
                Some(existing) => {
                    let first = existing.take();
                    *existing = Value::Array(vec![first, Value::String(value)]);
                }
                None => {
                    map.insert(key, Value::String(value));
                }
            }
        }
        if !map.is_empty() {
            request.insert("query".into(), Value::Object(map));
        }
    }

    let headers = convert_headers(template.get("headers"), kind, auth_headers, cv);
    if !headers.is_empty() {
        request.insert("headers".into(), Value::Object(headers));
    }

    let mut json_escaped = false;
    if let Some(body) = cv.string(template, at, "bodyTemplate", false, false, usize::MAX) {
        match method.as_deref() {
            Some("GET") => cv.warn(
                "body_not_sent",
                format!("{at}.bodyTemplate is never sent with GET (as in Cat-Factory)"),
            ),
            Some("DELETE") => cv.warn(
                "body_not_sent",
                format!(
                    "{at}.bodyTemplate is not sent: cattery sends no body with DELETE \
                     (Cat-Factory does)"
                ),
            ),
            _ if body.is_empty() => {}
            _ => {
                let (text, escaped) =
                    template_text(&body, kind, Spot::Body, &join(at, "bodyTemplate"), cv);
                json_escaped = escaped;
                request.insert("bodyTemplate".into(), Value::String(text));
            }
        }
    }

    let timeout = match template.get("timeoutMs") {
        None | Some(Value::Null) => Some(DEFAULT_TIMEOUT_MS),
        Some(value) => match value.as_f64().filter(|n| (1.0..=60_000.0).contains(n)) {
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "the value lies in [1, 60000]"
            )]
            Some(ms) => Some(ms.ceil() as u64),
            None => {
                cv.problems.add(
                    join(at, "timeoutMs"),
                    format!(
                        "must be a number from 1 to 60000; got {}",
                        super::walk::show(value)
                    ),
                );
                None
            }
        },
    };

    let mut op = Map::new();
    op.insert("request".into(), Value::Object(request));
    if let Some(ms) = timeout {
        op.insert("timeoutMs".into(), json!(ms));
    }
    if kind == OpKind::Poll {
        // 404 and 410 mean the job is lost, as in Cat-Factory (cattery's default, said aloud).
        op.insert("notFound".into(), json!("lost"));
    }
    (Value::Object(op), json_escaped)
}

/// Splits a path template whose literal text holds `?` into the path and its query pairs,
/// and puts a `/` in front when Cat-Factory would insert one.
fn split_path(path: &str, kind: OpKind, cv: &mut Converter) -> (String, Vec<(String, String)>) {
    let at = format!("{}.pathTemplate", kind.as_str());
    let mut query = Vec::new();
    let (path_part, query_part) = match literal_position(path, '?') {
        Some(i) => (&path[..i], Some(&path[i + 1..])),
        None => (path, None),
    };
    if let Some(q) = query_part {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if key.contains("{{") {
                cv.problems.add(
                    at.clone(),
                    format!(
                        "the query key {key:?} in the path holds a placeholder; cattery cannot \
                         template query names"
                    ),
                );
                continue;
            }
            let key = percent_encoding::percent_decode_str(key)
                .decode_utf8_lossy()
                .into_owned();
            let value = template_text(value, kind, Spot::Query, &at, cv).0;
            query.push((key, value));
        }
    }
    let mut converted = template_text(path_part, kind, Spot::Path, &at, cv).0;
    if !converted.is_empty() && !converted.starts_with('/') {
        converted.insert(0, '/');
    }
    (converted, query)
}

/// The byte position of `needle` in the literal text of a Cat-Factory template (outside its
/// placeholders).
fn literal_position(text: &str, needle: char) -> Option<usize> {
    let mut i = 0;
    while i < text.len() {
        if let Some(len) = placeholder_at(text, i).map(|(len, _)| len) {
            i += len;
            continue;
        }
        let c = text[i..].chars().next()?;
        if c == needle {
            return Some(i);
        }
        i += c.len_utf8();
    }
    None
}

/// Converts the `headers` list into a map: names kept, values converted, the last of a name
/// (ignoring case) wins, and a header the auth scheme sets is left to the auth scheme.
fn convert_headers(
    value: Option<&Value>,
    kind: OpKind,
    auth_headers: &[String],
    cv: &mut Converter,
) -> Map<String, Value> {
    let at = kind.as_str();
    let mut out: Map<String, Value> = Map::new();
    let items = match value {
        None | Some(Value::Null) => return out,
        Some(Value::Array(items)) => items,
        Some(other) => {
            cv.problems.add(
                join(at, "headers"),
                format!(
                    "must be a list of {{name, value}}, not {}",
                    super::walk::kind_of(other)
                ),
            );
            return out;
        }
    };
    for (i, item) in items.iter().enumerate() {
        let path = format!("{at}.headers.{i}");
        let Some(entry) = item.as_object() else {
            cv.problems.add(path, "must be an object {name, value}");
            continue;
        };
        let name = cv.string(entry, &path, "name", true, false, usize::MAX);
        let value = cv.string(entry, &path, "value", false, false, usize::MAX);
        if value.is_none() && !entry.contains_key("value") {
            cv.problems
                .add(join(&path, "value"), "is required but missing");
        }
        let (Some(name), Some(value)) = (name, value) else {
            continue;
        };
        if auth_headers.iter().any(|a| a.eq_ignore_ascii_case(&name)) {
            cv.warn(
                "header_conflict",
                format!(
                    "{path}: {name} is set by the auth scheme, which cattery keeps; this template \
                     header is not sent (Cat-Factory would let it override the auth header)"
                ),
            );
            continue;
        }
        if let Some(previous) = out.keys().find(|k| k.eq_ignore_ascii_case(&name)).cloned() {
            out.remove(&previous);
            cv.warn(
                "header_conflict",
                format!("{path}: header {name} is listed more than once; the last one is sent"),
            );
        }
        cv.map_path(format!("{at}.request.headers.{name}"), path.clone());
        let converted = template_text(&value, kind, Spot::Header, &path, cv).0;
        out.insert(name, Value::String(converted));
    }
    out
}

/// Finds a Cat-Factory placeholder at byte `i`: `{{`, optional whitespace, a name of
/// `[A-Za-z0-9_.]+`, optional whitespace, `}}`. Returns its length and the name.
fn placeholder_at(text: &str, i: usize) -> Option<(usize, &str)> {
    let rest = text.get(i..)?.strip_prefix("{{")?;
    let inner_start = rest.len() - rest.trim_start().len();
    let after_ws = &rest[inner_start..];
    let name_len = after_ws
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.')
        .count();
    if name_len == 0 {
        return None;
    }
    let name = &after_ws[..name_len];
    let tail = &after_ws[name_len..];
    let trailing = tail.len() - tail.trim_start().len();
    tail[trailing..].strip_prefix("}}")?;
    let len = 2 + inner_start + name_len + trailing + 2;
    Some((len, name))
}

/// What a placeholder becomes in one operation.
enum Resolved {
    /// A cattery template expression.
    Expr(&'static str),
    /// Empty text (Cat-Factory renders it empty).
    Empty,
}

fn resolve(name: &str, kind: OpKind) -> (Resolved, Option<&'static str>) {
    let dispatch = kind == OpKind::Dispatch;
    let Some((namespace, key)) = name.split_once('.') else {
        return (Resolved::Empty, Some("unknown"));
    };
    match (namespace, key) {
        ("input", "jobId") => (Resolved::Expr("{{input.jobId}}"), None),
        ("input", "job") if dispatch => (Resolved::Expr("{{json input.job}}"), None),
        ("input", "kind") if dispatch => (Resolved::Expr("{{input.kind}}"), None),
        ("input", "instanceType") if dispatch => (Resolved::Expr("{{input.instanceType}}"), None),
        ("input", "cloudProvider") if dispatch => (Resolved::Expr("{{input.cloudProvider}}"), None),
        ("input", "image") if dispatch => (Resolved::Expr("{{input.image}}"), None),
        ("input", "job" | "kind" | "instanceType" | "cloudProvider" | "image") => {
            (Resolved::Empty, Some("dispatch-only"))
        }
        ("provision", _) => (Resolved::Empty, Some("provision")),
        _ => (Resolved::Empty, Some("unknown")),
    }
}

/// One piece of a converted template.
enum Piece {
    /// A character of literal text.
    Literal(char),
    /// A cattery template expression.
    Expr(&'static str),
}

/// A literal `{` written so that handlebars cannot read it as the start of a mustache.
const OPEN_BRACE: &str = "{{lower \"{\"}}";

/// Converts one Cat-Factory template into a cattery template. Literal text stays literal
/// (a `{` that would form `{{` with what follows is written as a helper call, a `\` before a
/// mustache is doubled). Returns the text and whether a value other than `input.job` is
/// substituted into a body (which cattery JSON-escapes).
fn template_text(
    text: &str,
    kind: OpKind,
    spot: Spot,
    path: &str,
    cv: &mut Converter,
) -> (String, bool) {
    let mut pieces = Vec::with_capacity(text.len());
    let mut escaped_value = false;
    let mut i = 0;
    while i < text.len() {
        if let Some((len, name)) = placeholder_at(text, i) {
            let (resolved, remark) = resolve(name, kind);
            if let Resolved::Expr(expr) = resolved {
                escaped_value |= name != "input.job";
                pieces.push(Piece::Expr(expr));
            }
            match remark {
                Some("dispatch-only") => cv.warn(
                    "empty_variable",
                    format!(
                        "{path}: {{{{{name}}}}} exists only in dispatch; it renders as empty \
                         text in {} (as in Cat-Factory)",
                        kind.as_str()
                    ),
                ),
                Some("provision") => cv.warn(
                    "empty_variable",
                    format!(
                        "{path}: {{{{{name}}}}} is always empty for runner pools (as in \
                         Cat-Factory)"
                    ),
                ),
                Some(_) => cv.warn(
                    "unknown_variable",
                    format!(
                        "{path}: {{{{{name}}}}} is not a variable (input.jobId, input.job, \
                         input.kind, input.instanceType, input.cloudProvider, input.image); it \
                         renders as empty text, as in Cat-Factory; check it for a typo"
                    ),
                ),
                None => {}
            }
            i += len;
            continue;
        }
        let Some(c) = text[i..].chars().next() else {
            break;
        };
        pieces.push(Piece::Literal(c));
        i += c.len_utf8();
    }
    let mut out = String::with_capacity(text.len() + 16);
    let push_mustache = |out: &mut String, mustache: &str| {
        // `\{{` would escape the mustache; `\\{{` prints one backslash and keeps it.
        if out.ends_with('\\') {
            out.push('\\');
        }
        out.push_str(mustache);
    };
    for (k, piece) in pieces.iter().enumerate() {
        match piece {
            Piece::Expr(expr) => push_mustache(&mut out, expr),
            Piece::Literal('{')
                if matches!(
                    pieces.get(k + 1),
                    Some(Piece::Expr(_) | Piece::Literal('{'))
                ) =>
            {
                push_mustache(&mut out, OPEN_BRACE);
            }
            Piece::Literal(c) => out.push(*c),
        }
    }
    (out, escaped_value && spot == Spot::Body)
}

/// Converts a Cat-Factory dot-path into a JMESPath expression: `a.b.0.c` → `a.b[0].c`, keys
/// that are not plain identifiers quoted. `None` for an empty path (which means absent).
pub(crate) fn dot_path(path: &str) -> Option<String> {
    if path.is_empty() {
        return None;
    }
    let mut out = String::new();
    for (i, segment) in path.split('.').enumerate() {
        let is_index = !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit());
        let is_identifier = segment
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if is_index {
            out.push_str(&format!(
                "[{}]",
                segment
                    .trim_start_matches('0')
                    .parse::<usize>()
                    .unwrap_or(0)
            ));
            continue;
        }
        if i > 0 {
            out.push('.');
        }
        if is_identifier {
            out.push_str(segment);
        } else {
            out.push_str(&serde_json::Value::String(segment.to_owned()).to_string());
        }
    }
    Some(out)
}

/// Converts the response mapping into `poll.map` (and the capabilities capture of dispatch).
fn convert_response(
    response: &Map<String, Value>,
    out: &mut Map<String, Value>,
    cv: &mut Converter,
) {
    let mut known: Vec<&str> = SCALAR_PATHS.iter().map(|(k, _)| *k).collect();
    known.extend(PROGRESS_PATHS.iter().map(|(k, _)| *k));
    known.extend(RESULT_FIELD_PATHS.iter().map(|(k, _)| *k));
    known.extend(CHANNEL_PATHS.iter().map(|(k, _)| *k));
    known.push(CAPABILITIES_PATH);
    known.push("statusMap");
    cv.ignored(response, "response", &known);

    let path_of = |cv: &mut Converter, key: &str| -> Option<String> {
        let text = cv.string(response, "response", key, false, false, usize::MAX)?;
        dot_path(&text)
    };
    let mut map = Map::new();
    for (key, target) in SCALAR_PATHS {
        if let Some(expr) = path_of(cv, key) {
            cv.map_path(format!("poll.map.{target}"), format!("response.{key}"));
            map.insert((*target).to_owned(), Value::String(expr));
        }
    }
    for (group, entries) in [
        ("progress", PROGRESS_PATHS),
        ("resultFields", RESULT_FIELD_PATHS),
        ("fields", CHANNEL_PATHS),
    ] {
        let mut inner = Map::new();
        for (key, target) in entries {
            if let Some(expr) = path_of(cv, key) {
                cv.map_path(
                    format!("poll.map.{group}.{target}"),
                    format!("response.{key}"),
                );
                inner.insert((*target).to_owned(), Value::String(expr));
            }
        }
        if !inner.is_empty() {
            map.insert(group.to_owned(), Value::Object(inner));
        }
    }
    match response.get("statusMap") {
        None | Some(Value::Null) => {}
        Some(Value::Array(entries)) => {
            let mut status_map = Map::new();
            for (i, entry) in entries.iter().enumerate() {
                let path = format!("response.statusMap.{i}");
                let Some(entry) = entry.as_object() else {
                    cv.problems.add(path, "must be an object {from, to}");
                    continue;
                };
                let from = cv.string(entry, &path, "from", false, false, usize::MAX);
                if from.is_none() && !entry.contains_key("from") {
                    cv.problems
                        .add(join(&path, "from"), "is required but missing");
                }
                let to = match entry.get("to").and_then(Value::as_str) {
                    Some(t @ ("running" | "done" | "failed")) => Some(t),
                    _ => {
                        cv.problems.add(
                            join(&path, "to"),
                            format!(
                                "must be running, done or failed; got {}",
                                entry
                                    .get("to")
                                    .map_or_else(|| "nothing".to_owned(), super::walk::show)
                            ),
                        );
                        None
                    }
                };
                let (Some(from), Some(to)) = (from, to) else {
                    continue;
                };
                let word = from.trim().to_lowercase();
                // A blank word is never read (a blank status means no status); the first entry
                // of a word wins.
                if word.is_empty() || status_map.contains_key(&word) {
                    continue;
                }
                cv.map_path(format!("poll.map.statusMap.{word}"), path);
                status_map.insert(word, Value::String(to.to_owned()));
            }
            if !status_map.is_empty() {
                map.insert("statusMap".into(), Value::Object(status_map));
            }
        }
        Some(other) => cv.problems.add(
            "response.statusMap",
            format!(
                "must be a list of {{from, to}}, not {}",
                super::walk::kind_of(other)
            ),
        ),
    }
    if !map.is_empty() {
        map.insert("coerce".into(), json!(super::operation::COERCE_CAT_FACTORY));
        if let Some(Value::Object(poll)) = out.get_mut("poll") {
            poll.insert("map".into(), Value::Object(map));
        }
    }
    if let Some(expr) = path_of(cv, CAPABILITIES_PATH) {
        cv.map_path(
            "dispatch.capture.capabilities",
            format!("response.{CAPABILITIES_PATH}"),
        );
        if let Some(Value::Object(dispatch)) = out.get_mut("dispatch") {
            dispatch.insert(
                "capture".into(),
                json!({ "capabilities": format!("{expr}[?type(@) == 'string']") }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::state::MappedState;
    use crate::manifest::fixtures::{input, secrets};
    use crate::manifest::{Method, RenderInput};

    fn convert_doc(doc: &Value) -> Converted {
        convert(doc).unwrap_or_else(|e| panic!("{:?}", e.problems))
    }

    fn transparent() -> Value {
        json!({
            "providerId": "acme-pool",
            "label": " Acme Runner Pool ",
            "baseUrl": " https://runners.acme.example/api ",
            "auth": {"type": "bearer", "secretRef": {"key": "API_TOKEN"}},
            "dispatch": {
                "method": "POST",
                "pathTemplate": "/dispatch/{{input.kind}}",
                "bodyTemplate": "{\"id\":\"{{input.jobId}}\",\"job\":{{input.job}}}"
            },
            "poll": {"method": "GET", "pathTemplate": "/jobs/{{input.jobId}}"},
            "release": {"method": "DELETE", "pathTemplate": "/jobs/{{ input.jobId }}"},
            "response": {
                "statusPath": "state",
                "statusMap": [
                    {"from": "in_progress", "to": "running"},
                    {"from": "succeeded", "to": "done"},
                    {"from": "errored", "to": "failed"}
                ],
                "resultPath": "result",
                "progressCompletedPath": "progress.completed",
                "progressInProgressPath": "progress.inProgress",
                "progressTotalPath": "progress.total",
                "callMetricsPath": "callMetrics",
                "sliceReviewsPath": "sliceReviews",
                "toolServersPath": "toolServers",
                "dispatchCapabilitiesPath": "capabilities",
                "errorPath": "error"
            }
        })
    }

    #[test]
    fn the_shape_decides_the_format() {
        assert!(looks_like_cat_factory(&transparent()));
        assert!(looks_like_cat_factory(
            &json!({"dispatch": {"pathTemplate": "/x"}})
        ));
        assert!(!looks_like_cat_factory(
            &json!({"apiVersion": "cattery/v1", "label": "x"})
        ));
        assert!(!looks_like_cat_factory(&json!({"baseUrl": "https://x"})));
        assert!(!looks_like_cat_factory(&json!([1])));
    }

    #[test]
    fn the_transparent_example_converts_to_the_expected_cattery_document() {
        let converted = convert_doc(&transparent());
        assert_eq!(
            converted.document,
            json!({
                "apiVersion": "cattery/v1",
                "description": "Acme Runner Pool (Cat-Factory runner pool acme-pool)",
                "baseUrl": "https://runners.acme.example/api",
                "auth": {"type": "bearer", "secretRef": {"key": "API_TOKEN"}},
                "dispatch": {
                    "request": {
                        "method": "POST",
                        "path": "/dispatch/{{input.kind}}",
                        "bodyTemplate": "{\"id\":\"{{input.jobId}}\",\"job\":{{json input.job}}}"
                    },
                    "timeoutMs": 30000,
                    "capture": {"capabilities": "capabilities[?type(@) == 'string']"}
                },
                "poll": {
                    "request": {"method": "GET", "path": "/jobs/{{input.jobId}}"},
                    "timeoutMs": 30000,
                    "notFound": "lost",
                    "map": {
                        "coerce": "cat-factory",
                        "state": "state",
                        "statusMap": {"in_progress": "running", "succeeded": "done", "errored": "failed"},
                        "result": "result",
                        "error": "error",
                        "progress": {"completed": "progress.completed", "inProgress": "progress.inProgress", "total": "progress.total"},
                        "fields": {"callMetrics": "callMetrics", "sliceReviews": "sliceReviews", "toolServers": "toolServers"}
                    }
                },
                "release": {
                    "request": {"method": "DELETE", "path": "/jobs/{{input.jobId}}"},
                    "timeoutMs": 30000
                }
            })
        );
        let codes: Vec<&str> = converted.warnings.iter().map(|w| w.code.as_str()).collect();
        assert_eq!(codes, ["json_escaping"]);
        let manifest = build(&transparent(), &Defaults::default()).unwrap();
        assert_eq!(manifest.format, ManifestFormat::CatFactory);
        assert_eq!(manifest.source(), &transparent());
        assert_eq!(manifest.secret_keys(), &["API_TOKEN".to_owned()].into());
    }

    #[test]
    fn dot_paths_become_jmespath() {
        let table = [
            ("state", "state"),
            ("data.phase", "data.phase"),
            ("items.0.id", "items[0].id"),
            ("0.state", "[0].state"),
            ("a.my-key.b", "a.\"my-key\".b"),
            ("a.10", "a[10]"),
            ("we\"ird", "\"we\\\"ird\""),
        ];
        for (path, expected) in table {
            assert_eq!(dot_path(path).as_deref(), Some(expected), "{path}");
            let mut problems = Vec::new();
            assert!(
                crate::template::mapping::compile("x", expected, &mut problems).is_some(),
                "{expected}: {problems:?}"
            );
        }
        assert_eq!(dot_path(""), None);
    }

    #[test]
    fn templates_follow_cat_factory_variables_per_operation() {
        let mut doc = transparent();
        doc["dispatch"]["headers"] = json!([
            {"name": "X-Kind", "value": "{{input.kind}}/{{input.instanceType}}/{{input.cloudProvider}}/{{input.image}}"},
            {"name": "X-Typo", "value": "[{{input.jobid}}][{{input.job.kind}}][{{jobId}}][{{provision.host}}]"},
            {"name": "X-Literal", "value": "{{input.instance-type}} {{{input.jobId}}}"}
        ]);
        doc["poll"]["query"] = json!([
            {"key": "id", "value": "{{input.jobId}}"},
            {"key": "kind", "value": "{{input.kind}}"},
            {"key": "id", "value": "again"},
            {"key": "", "value": "x"}
        ]);
        let converted = convert_doc(&doc);
        let headers = &converted.document["dispatch"]["request"]["headers"];
        assert_eq!(
            headers["X-Kind"],
            "{{input.kind}}/{{input.instanceType}}/{{input.cloudProvider}}/{{input.image}}"
        );
        assert_eq!(headers["X-Typo"], "[][][][]");
        assert_eq!(
            headers["X-Literal"],
            "{{lower \"{\"}}{input.instance-type}} {{lower \"{\"}}{{input.jobId}}}"
        );
        assert_eq!(
            converted.document["poll"]["request"]["query"],
            json!({"id": ["{{input.jobId}}", "again"], "kind": ""})
        );
        let codes: Vec<&str> = converted.warnings.iter().map(|w| w.code.as_str()).collect();
        assert!(codes.contains(&"unknown_variable"), "{codes:?}");
        assert!(codes.contains(&"empty_variable"), "{codes:?}");
        assert!(codes.contains(&"query_dropped"), "{codes:?}");

        let manifest = build(&doc, &Defaults::default()).unwrap();
        let mut run = input(
            "job-1",
            json!({"instanceType": "c7g.xlarge", "cloudProvider": "aws"}),
        );
        run.kind = Some("agent".into());
        let s = secrets(&[("API_TOKEN", "t")]);
        let dispatch = manifest.render(OpKind::Dispatch, &run, &s).unwrap();
        let header = |name: &str| {
            dispatch
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(header("X-Kind"), "agent/c7g.xlarge/aws/");
        assert_eq!(header("X-Literal"), "{{input.instance-type}} {job-1}");
        let poll = manifest.render(OpKind::Poll, &run, &s).unwrap();
        assert_eq!(
            poll.url.as_str(),
            "https://runners.acme.example/api/jobs/job-1?id=job-1&id=again&kind="
        );
    }

    #[test]
    fn the_body_splices_the_job_and_escapes_other_values() {
        let manifest = build(&transparent(), &Defaults::default()).unwrap();
        let job = json!({"jobId": "j\"1", "kind": "agent", "ghToken": "gh-secret", "nested": [1, {"a": null}]});
        let request = manifest
            .render(
                OpKind::Dispatch,
                &input("j\"1", job.clone()),
                &secrets(&[("API_TOKEN", "t")]),
            )
            .unwrap();
        assert_eq!(request.method, Method::Post);
        assert_eq!(
            request.url.as_str(),
            "https://runners.acme.example/api/dispatch/agent"
        );
        let body: Value = serde_json::from_slice(request.body.as_deref().unwrap()).unwrap();
        assert_eq!(body, json!({"id": "j\"1", "job": job}));
        assert_eq!(
            request.headers,
            [("Authorization".to_owned(), "Bearer t".to_owned())]
        );
    }

    #[test]
    fn a_path_with_a_query_and_no_slash_is_split_and_joined_like_cat_factory() {
        let mut doc = transparent();
        doc["poll"]["pathTemplate"] = json!("jobs?id={{input.jobId}}&v=2");
        doc["release"]["pathTemplate"] = json!("");
        let manifest = build(&doc, &Defaults::default()).unwrap();
        let s = secrets(&[("API_TOKEN", "t")]);
        let run: RenderInput = input("j-1", json!({}));
        let poll = manifest.render(OpKind::Poll, &run, &s).unwrap();
        assert_eq!(
            poll.url.as_str(),
            "https://runners.acme.example/api/jobs?id=j-1&v=2"
        );
        let release = manifest.render(OpKind::Release, &run, &s).unwrap();
        assert_eq!(release.url.as_str(), "https://runners.acme.example/api");
    }

    #[test]
    fn schema_violations_are_problems_with_cat_factory_paths() {
        let mut doc = transparent();
        doc["providerId"] = json!("Acme Pool");
        doc["label"] = json!("   ");
        doc["dispatch"]["method"] = json!("HEAD");
        doc["dispatch"]["timeoutMs"] = json!(60001);
        doc["poll"].as_object_mut().unwrap().remove("pathTemplate");
        doc["response"]["statusMap"] = json!([{"from": "ok", "to": "finished"}]);
        doc["dispatch"]["headers"] = json!([{"name": "", "value": "x"}]);
        let problems = convert(&doc).unwrap_err().problems;
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "providerId",
                "label",
                "dispatch.method",
                "dispatch.headers.0.name",
                "dispatch.timeoutMs",
                "poll.pathTemplate",
                "response.statusMap.0.to",
            ]
        );
        // a problem the cattery/v1 compiler finds is reported where the author wrote it
        let mut doc = transparent();
        doc["dispatch"]["headers"] = json!([{"name": "Bad Header", "value": "x"}]);
        doc["response"]["errorPath"] = json!("a.");
        doc["baseUrl"] = json!("ftp://x");
        let problems = build(&doc, &Defaults::default()).unwrap_err().problems;
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert!(paths.contains(&"baseUrl"), "{paths:?}");
        assert!(paths.contains(&"dispatch.headers.0"), "{paths:?}");
    }

    #[test]
    fn auth_keeps_known_fields_and_headers_it_sets_win() {
        let mut doc = transparent();
        doc["auth"] = json!({"type": "api_key", "headerName": "X-Api-Key", "secretRef": {"key": "K", "extra": 1}, "valuePrefix": "Key ", "note": "x"});
        doc["poll"]["headers"] = json!([{"name": "x-api-key", "value": "mine"}, {"name": "Accept", "value": "a"}, {"name": "accept", "value": "b"}]);
        let converted = convert_doc(&doc);
        assert_eq!(
            converted.document["auth"],
            json!({"type": "api_key", "headerName": "X-Api-Key", "secretRef": {"key": "K"}, "valuePrefix": "Key "})
        );
        assert_eq!(
            converted.document["poll"]["request"]["headers"],
            json!({"accept": "b"})
        );
        let codes: Vec<&str> = converted.warnings.iter().map(|w| w.code.as_str()).collect();
        assert_eq!(
            codes.iter().filter(|c| **c == "header_conflict").count(),
            2,
            "{codes:?}"
        );
        assert!(codes.contains(&"ignored_field"));
        doc["auth"] = json!({"type": "custom_headers", "headers": []});
        assert_eq!(convert_doc(&doc).document["auth"], json!({"type": "none"}));
    }

    #[test]
    fn website_field_names_are_ignored_with_a_warning() {
        let mut doc = transparent();
        doc["poll"]["queryTemplate"] = json!([{"key": "a", "value": "b"}]);
        let converted = convert_doc(&doc);
        assert!(converted.document["poll"]["request"].get("query").is_none());
        let warning = converted
            .warnings
            .iter()
            .find(|w| w.code == "ignored_field")
            .unwrap();
        assert!(
            warning.message.contains("poll.queryTemplate"),
            "{}",
            warning.message
        );
        assert!(warning.message.contains("`query` and `headers`"));
    }

    #[test]
    fn the_converted_poll_reads_answers_like_cat_factory() {
        let manifest = build(&transparent(), &Defaults::default()).unwrap();
        let obs = manifest
            .poll
            .observe(br#"{"state": " Succeeded ", "result": {"prUrl": "u", "ralphVerdict": "x"}, "progress": {"completed": "2", "total": ""}, "toolServers": []}"#)
            .unwrap();
        assert_eq!(obs.state, Some(MappedState::Done));
        assert_eq!(obs.result, Some(json!({"prUrl": "u"})));
        assert_eq!(
            obs.progress.map(|p| (p.completed, p.in_progress, p.total)),
            Some((2, 0, 0))
        );
        assert!(obs.fields.is_empty());
        let obs = manifest
            .poll
            .observe(br#"{"state": "cancelled", "error": "stopped"}"#)
            .unwrap();
        assert_eq!(obs.state, Some(MappedState::Failed));
        let obs = manifest.poll.observe(br#"{"state": "OOMKilled"}"#).unwrap();
        assert_eq!(obs.state, Some(MappedState::Lost));
        let obs = manifest
            .poll
            .observe(br#"{"state": "succeeded", "error": "no changes"}"#)
            .unwrap();
        assert_eq!(obs.result, Some(json!({"error": "no changes"})));
        let captured = manifest
            .dispatch
            .capture(br#"{"capabilities": ["mcpServers", 3, "skills"]}"#)
            .unwrap();
        assert_eq!(captured["capabilities"], json!(["mcpServers", "skills"]));
        assert!(
            manifest
                .dispatch
                .capture(br#"{"capabilities": "all"}"#)
                .unwrap()
                .is_empty()
        );
    }
}
