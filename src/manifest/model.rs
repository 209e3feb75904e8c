//! The registered manifest and its operations: the compiled model the rest of cattery uses.

use super::{
    Auth, Limits, ManifestError, ManifestFormat, MapError, Method, NotFound, Observation, OpKind,
    Polling, RenderError, RenderInput, RenderedRequest, RetryPolicy, Warning, auth, source,
    validate,
};
use crate::domain::secrets::SecretBundle;
use crate::domain::state::MappedState;
use crate::template::{Captures, Engine, Expr, RequestTemplate, StateMapping, context, mapping};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// Pool defaults for the values a manifest omits (from the `defaults` configuration section).
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    /// Default `limits`.
    pub limits: Limits,
    /// Default `retry`.
    pub retry: RetryPolicy,
    /// Default `polling`.
    pub polling: Polling,
}

/// `limits.maxConnections` when the manifest does not say: enough for a busy pool on one
/// scheduler endpoint, far below a process's descriptor limit.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 64;

/// The largest `limits.maxConnections`.
pub const MAX_CONNECTIONS: u32 = 4_096;

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            limits: Limits {
                max_in_flight: 100,
                max_queued: 10_000,
                requests_per_second: None,
                timeout_ms: 10_000,
                max_connections: DEFAULT_MAX_CONNECTIONS,
            },
            retry: RetryPolicy {
                max_attempts: 5,
                initial_backoff_ms: 250,
                max_backoff_ms: 30_000,
            },
            polling: Polling {
                interval_ms: 5_000,
                max_interval_ms: 30_000,
                deadline_seconds: None,
                max_consecutive_errors: 8,
            },
        }
    }
}

/// A validated cattery/v1 manifest whose templates and expressions are all compiled.
///
/// Every variable a template names was checked at registration, so rendering never fails for
/// lack of a variable; it fails only when a value cannot be sent safely (see
/// [`Manifest::render`]).
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The format it was written in.
    pub format: ManifestFormat,
    /// `description`.
    pub description: Option<String>,
    /// `baseUrl`: absolute http(s), no query or fragment; every request stays under it.
    pub base_url: url::Url,
    /// `tls.caCertPem`: an extra trust root.
    pub ca_cert_pem: Option<String>,
    /// `tls.insecureSkipVerify` (the egress policy decides whether it is honoured).
    pub insecure_skip_verify: bool,
    /// `followRedirects` (default false): follow up to 5 redirects, each target checked by the
    /// egress policy; a hop to another origin drops every credential header.
    pub follow_redirects: bool,
    /// `proxy`: `direct`, a proxy of the pool's own, or (absent) the gateway's
    /// `egress.proxy` choice.
    pub proxy: crate::proxy::ProxyChoice,
    /// `auth`.
    pub auth: Auth,
    /// `limits`, with defaults applied.
    pub limits: Limits,
    /// `fairShare`: how the pool's slots are shared among tenants when runs wait.
    pub fair_share: crate::actors::fair::FairShare,
    /// `retry`, with defaults applied.
    pub retry: RetryPolicy,
    /// `polling`, with defaults applied.
    pub polling: Polling,
    /// `lost.redispatch`: how many times a lost job is dispatched again (default 0).
    pub lost_redispatch: u32,
    /// `dispatch`.
    pub dispatch: Operation,
    /// `lookup`, if the manifest has one: finds a job that an earlier dispatch attempt may have
    /// created, so that a retried or recovered dispatch re-attaches to it instead of sending
    /// again.
    pub lookup: Option<Operation>,
    /// `poll`.
    pub poll: Operation,
    /// `release`, if the manifest has one.
    pub release: Option<Operation>,
    /// `failureLog`, if the manifest has one: fetched once when the scheduler reports a job
    /// failed; the end of its text answer is added to the run's error.
    pub failure_log: Option<Operation>,
    /// Non-fatal remarks (`no_release`, `no_state_mapping`, `poll_many_unsupported`).
    pub warnings: Vec<Warning>,
    pub(crate) vars: Map<String, Value>,
    pub(crate) engine: Engine,
    pub(crate) source: Value,
    pub(crate) secret_keys: BTreeSet<String>,
}

impl Manifest {
    /// Parses YAML or JSON text and validates it.
    ///
    /// # Errors
    /// A [`ManifestError`] listing every problem with its path; a syntax error is one problem
    /// with the empty path and the line and column.
    pub fn parse(text: &str, defaults: &Defaults) -> Result<Manifest, ManifestError> {
        let doc = source::parse_text(text).map_err(|problem| ManifestError {
            problems: vec![problem],
        })?;
        Manifest::from_value(&doc, defaults)
    }

    /// Validates a JSON document.
    ///
    /// # Errors
    /// A [`ManifestError`] listing every problem with its path.
    /// A document without `apiVersion` that has Cat-Factory's shape (`providerId`, `label`,
    /// `response`, `pathTemplate`) is a Cat-Factory runner-pool manifest: it is converted to
    /// cattery/v1 and reported with [`ManifestFormat::CatFactory`].
    pub fn from_value(doc: &Value, defaults: &Defaults) -> Result<Manifest, ManifestError> {
        if super::catfactory::looks_like_cat_factory(doc) {
            super::catfactory::build(doc, defaults)
        } else {
            validate::build(doc, defaults)
        }
    }

    /// The document as registered, as JSON (for storage and the digest).
    pub fn source(&self) -> &Value {
        &self.source
    }

    /// Every secret key the manifest references (through `auth` and `{{secret "KEY"}}`).
    pub fn secret_keys(&self) -> &BTreeSet<String> {
        &self.secret_keys
    }

    /// The manifest's `vars`.
    pub fn vars(&self) -> &Map<String, Value> {
        &self.vars
    }

    /// One operation, if the manifest has it (`lookup`, `release` and `failureLog` are optional).
    pub fn operation(&self, kind: OpKind) -> Option<&Operation> {
        match kind {
            OpKind::Dispatch => Some(&self.dispatch),
            OpKind::Lookup => self.lookup.as_ref(),
            OpKind::Poll => Some(&self.poll),
            OpKind::Release => self.release.as_ref(),
            OpKind::FailureLog => self.failure_log.as_ref(),
        }
    }

    /// Renders the request of one operation for one run.
    ///
    /// The headers are the auth headers first (none for OAuth2: the sender adds the token),
    /// then the template headers. A `Content-Type` template header is moved into
    /// [`RenderedRequest::content_type`] when there is a body.
    ///
    /// # Errors
    /// A [`RenderError`] naming the manifest path when the manifest has no such operation, a
    /// secret key is missing from `secrets` (the key is named, never a value), a header value
    /// holds CR, LF or NUL, the path leaves `baseUrl` or forms a dot segment, a JSON
    /// `bodyTemplate` renders as invalid JSON, or the path (8 KiB) or body (4 MiB, or the job's
    /// size plus 64 KiB for a larger job) is too big.
    pub fn render(
        &self,
        kind: OpKind,
        input: &RenderInput,
        secrets: &SecretBundle,
    ) -> Result<RenderedRequest, RenderError> {
        let op = self.operation(kind).ok_or_else(|| RenderError {
            path: kind.as_str().to_owned(),
            message: format!("the manifest has no {} operation", kind.as_str()),
        })?;
        let auth_headers = auth::headers(&self.auth, secrets)?;
        let data = context::build(input, &self.vars);
        op.request
            .render(&self.engine, &self.base_url, data, auth_headers, secrets)
    }

    /// True when the poll request reads `capture.*`, so a run cannot be polled before its
    /// dispatch answer was captured.
    pub fn poll_needs_captures(&self) -> bool {
        self.poll.request.uses_capture()
    }

    /// The operation that tells whether a job an earlier dispatch attempt may have created
    /// exists: `lookup` when the manifest has one (it also gives the captures), else `poll`
    /// when it needs no captured value (it can address the job by `run.dispatchId`), else none:
    /// the dispatch is simply sent again and only the scheduler's idempotency prevents a
    /// duplicate.
    pub fn reconcile_op(&self) -> Option<OpKind> {
        if self.lookup.is_some() {
            Some(OpKind::Lookup)
        } else if !self.poll_needs_captures() {
            Some(OpKind::Poll)
        } else {
            None
        }
    }
}

/// One compiled operation of a manifest.
#[derive(Debug, Clone)]
pub struct Operation {
    /// Which operation.
    pub kind: OpKind,
    /// Its HTTP method.
    pub method: Method,
    /// `expect`: success statuses; `None` means any 2xx.
    pub expect: Option<Vec<u16>>,
    /// `alreadyExists` (dispatch only): answers meaning the job exists, so go on polling.
    pub already_exists: Vec<ExistsRule>,
    /// What a 404 means.
    pub not_found: NotFound,
    /// `timeoutMs` of this operation (else the pool's `limits.timeoutMs`).
    pub timeout_ms: Option<u64>,
    pub(crate) request: RequestTemplate,
    pub(crate) map: Option<StateMapping>,
    pub(crate) captures: Captures,
    /// `items` and `id` (lookup only): how the job is picked out of a list answer.
    pub(crate) finder: Option<Finder>,
}

/// One `alreadyExists` entry: a status, and what the answer's body must say when the status
/// alone is ambiguous (Podman answers a pod name in use with a plain 500).
#[derive(Debug, Clone, PartialEq)]
pub struct ExistsRule {
    /// The status.
    pub status: u16,
    pub(crate) when: Option<BodyCondition>,
}

/// What an answer body must say for an [`ExistsRule`] with a condition to match.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BodyCondition {
    /// `bodyContains`: the body's text contains this substring (case-sensitive).
    Contains(String),
    /// `when`: a JMESPath expression over the JSON body that gives a truthy value (not null,
    /// false, an empty string, list or object). A body that is not JSON does not match.
    Matches(Expr),
}

impl ExistsRule {
    /// True when an answer with `status` and `body` matches this rule.
    pub fn matches(&self, status: u16, body: &[u8]) -> bool {
        if status != self.status {
            return false;
        }
        match &self.when {
            None => true,
            Some(BodyCondition::Contains(text)) => {
                String::from_utf8_lossy(body).contains(text.as_str())
            }
            Some(BodyCondition::Matches(expr)) => mapping::parse_body(body)
                .and_then(|doc| expr.eval(&doc))
                .is_ok_and(|value| truthy(&value)),
        }
    }
}

/// JMESPath truthiness: null, false and empty strings, lists and objects are false.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
        Value::Bool(true) | Value::Number(_) => true,
    }
}

/// How `lookup` picks the job out of a list answer: the first element of `items` whose `id`
/// equals `run.dispatchId`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Finder {
    /// `items`: the list (null reads as an empty list).
    pub(crate) items: Expr,
    /// `id`: evaluated on each element; a string, number or boolean compared as text.
    pub(crate) id: Expr,
}

impl Operation {
    /// True when `status` is a success: listed in `expect`, or any 2xx without `expect`.
    pub fn is_success(&self, status: u16) -> bool {
        match &self.expect {
            Some(list) => list.contains(&status),
            None => (200..300).contains(&status),
        }
    }

    /// True when an answer means the job exists already (dispatch's `alreadyExists`).
    pub fn is_already_exists(&self, status: u16, body: &[u8]) -> bool {
        self.already_exists
            .iter()
            .any(|rule| rule.matches(status, body))
    }

    /// Reads a successful `lookup` answer: `Some(captures)` when it shows the job of
    /// `dispatch_id`, `None` when it does not.
    ///
    /// Without `items`, a successful answer is the job itself and the captures are read from
    /// it; with `items`, the first element whose `id` is `dispatch_id` is the job and the
    /// captures are read from that element.
    ///
    /// # Errors
    /// [`MapError::NotJson`] when the body must be read and is not JSON;
    /// [`MapError::Expression`] when an expression fails or `items` is not a list.
    pub fn find(
        &self,
        body: &[u8],
        dispatch_id: &str,
    ) -> Result<Option<Map<String, Value>>, MapError> {
        let Some(finder) = &self.finder else {
            return self.captures.capture(body).map(Some);
        };
        let doc = mapping::parse_body(body)?;
        let items = match finder.items.eval(&doc)? {
            Value::Array(items) => items,
            Value::Null => Vec::new(),
            other => {
                return Err(MapError::Expression {
                    path: "lookup.items".to_owned(),
                    message: format!("gives {}, not a list", super::walk::kind_of(&other)),
                });
            }
        };
        for item in &items {
            let id = finder.id.eval(item)?;
            if mapping::scalar_text(&id).is_some_and(|id| id == dispatch_id) {
                return self.captures.capture_doc(item).map(Some);
            }
        }
        Ok(None)
    }

    /// True when the operation maps a state (`map.state`); without it every poll reads as running.
    pub fn has_state_mapping(&self) -> bool {
        self.map.as_ref().is_some_and(|m| m.state.is_some())
    }

    /// The secret keys this operation's header templates name.
    pub fn secret_keys(&self) -> &BTreeSet<String> {
        self.request.secret_keys()
    }

    /// Evaluates `capture` on the answer body (dispatch).
    ///
    /// # Errors
    /// [`MapError::NotJson`] when captures are declared and the body is not JSON (an operation
    /// without captures never reads the body); [`MapError::Expression`] when one fails.
    pub fn capture(&self, body: &[u8]) -> Result<Map<String, Value>, MapError> {
        self.captures.capture(body)
    }

    /// Maps an answer body onto an [`Observation`] (poll).
    ///
    /// Without a `map`, the body is not read and the observation is `running`. With one, the
    /// body must be JSON; an empty body is not JSON.
    ///
    /// # Errors
    /// [`MapError::NotJson`] or [`MapError::Expression`]: an unreadable poll.
    pub fn observe(&self, body: &[u8]) -> Result<Observation, MapError> {
        match &self.map {
            None => Ok(Observation {
                state: Some(MappedState::Running),
                ..Observation::default()
            }),
            Some(map) => map.observe(&mapping::parse_body(body)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{SPEC_EXAMPLE, build, input, minimal, secrets};
    use super::*;
    use serde_json::json;

    /// Quotes, newlines, slashes, `../`, `?#%` and handlebars syntax in one value.
    const HOSTILE: &str = "a\"b'c\nd\re/../f?g#h%2e%i {{input.jobId}} {{{x}}} \\ é";

    fn spec() -> Manifest {
        Manifest::parse(SPEC_EXAMPLE, &Defaults::default()).unwrap()
    }

    fn body_json(request: &RenderedRequest) -> Value {
        serde_json::from_slice(request.body.as_deref().unwrap()).unwrap()
    }

    #[test]
    fn the_spec_dispatch_renders_the_kubernetes_job() {
        let job = json!({"jobId": "Exec_42", "kind": "agent", "repo": "x/y"});
        let request = spec()
            .render(
                OpKind::Dispatch,
                &input("Exec_42", job.clone()),
                &secrets(&[("K8S_TOKEN", "tok")]),
            )
            .unwrap();
        assert_eq!(request.method, Method::Post);
        assert_eq!(
            request.url.as_str(),
            "https://kube.example.internal:6443/apis/batch/v1/namespaces/runners/jobs"
        );
        assert_eq!(
            request.headers,
            [("Authorization".to_owned(), "Bearer tok".to_owned())]
        );
        assert_eq!(request.content_type.as_deref(), Some("application/json"));
        let body = body_json(&request);
        let name = body["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("exec-42-") && name.len() == 16, "{name}");
        assert_eq!(
            body["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "cattery"
        );
        assert_eq!(body["spec"]["backoffLimit"], 0);
        let container = &body["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "registry.example/executor:1.4");
        let env_value = container["env"][0]["value"].as_str().unwrap();
        assert_eq!(serde_json::from_str::<Value>(env_value).unwrap(), job);
    }

    #[test]
    fn the_spec_poll_and_release_address_the_same_job_name() {
        let m = spec();
        let s = secrets(&[("K8S_TOKEN", "tok")]);
        let run = input("exec-42-coder", json!({}));
        let poll = m.render(OpKind::Poll, &run, &s).unwrap();
        assert_eq!(
            poll.url.as_str(),
            "https://kube.example.internal:6443/apis/batch/v1/namespaces/runners/jobs/exec-42-coder"
        );
        assert_eq!(poll.body, None);
        assert_eq!(poll.content_type, None);
        let release = m.render(OpKind::Release, &run, &s).unwrap();
        assert_eq!(release.method, Method::Delete);
        assert_eq!(
            release.url.as_str(),
            "https://kube.example.internal:6443/apis/batch/v1/namespaces/runners/jobs/exec-42-coder?propagationPolicy=Background"
        );
        assert!(m.release.as_ref().unwrap().is_success(404));
        assert!(!m.dispatch.is_success(200));
        assert!(m.dispatch.is_success(201));
        assert!(m.dispatch.is_already_exists(409, b"{}"));
    }

    fn hostile_manifest(headers: Value) -> Manifest {
        let mut doc = minimal();
        doc["baseUrl"] = json!("https://sched.example/api/");
        doc["dispatch"]["request"] = json!({
            "method": "POST",
            "path": "/jobs/{{input.job.name}}/x",
            "query": {"q": "{{input.job.name}}", "id": "{{input.jobId}}"},
            "headers": headers,
            "body": {
                "name": "{{input.job.name}}",
                "mixed": "<{{input.job.name}}>",
                "job": "{{input.job}}",
                "attempt": "{{run.attempt}}",
                "labels": "{{input.labels}}",
                "{{literal key}}": ["{{input.jobId}}", 7, true, null]
            }
        });
        doc["poll"]["request"] = json!({
            "method": "POST",
            "path": "/jobs/{{input.jobId}}",
            "bodyTemplate": "{\"name\": \"{{input.labels.team}}\", \"labels\": {{json input.labels}}, \"upper\": \"{{upper input.labels.team}}\"}"
        });
        build(&doc).unwrap()
    }

    #[test]
    fn hostile_values_stay_data_in_path_query_and_body() {
        let m = hostile_manifest(json!({}));
        let job = json!({"name": HOSTILE, "nested": {"q": "\"}"}});
        let mut run = input("x/../y", job.clone());
        run.labels.insert("team".into(), json!(HOSTILE));
        let request = m.render(OpKind::Dispatch, &run, &secrets(&[])).unwrap();

        // path: one percent-encoded segment, confined under the base path
        assert_eq!(request.url.host_str(), Some("sched.example"));
        let segments: Vec<&str> = request.url.path_segments().unwrap().collect();
        assert_eq!(segments.len(), 4, "{}", request.url);
        assert_eq!(segments[0], "api");
        assert_eq!(segments[3], "x");
        let decoded = percent_encoding::percent_decode_str(segments[2])
            .decode_utf8()
            .unwrap();
        assert_eq!(decoded, HOSTILE);
        assert_eq!(request.url.fragment(), None);

        // query: encoded, round-trips exactly
        let pairs: Vec<(String, String)> = request.url.query_pairs().into_owned().collect();
        // (query parameters come in name order)
        assert_eq!(
            pairs,
            [
                ("id".to_owned(), "x/../y".to_owned()),
                ("q".to_owned(), HOSTILE.to_owned())
            ]
        );

        // body tree: the exact text as JSON strings, objects and numbers forwarded as values
        let body = body_json(&request);
        assert_eq!(body["name"], HOSTILE);
        assert_eq!(body["mixed"], format!("<{HOSTILE}>"));
        assert_eq!(body["job"], job);
        assert_eq!(body["attempt"], 1);
        assert_eq!(body["labels"], json!({"team": HOSTILE}));
        assert_eq!(body["{{literal key}}"], json!(["x/../y", 7, true, null]));

        // bodyTemplate: valid JSON whatever the values hold
        let poll = m.render(OpKind::Poll, &run, &secrets(&[])).unwrap();
        let body = body_json(&poll);
        assert_eq!(body["name"], HOSTILE);
        assert_eq!(body["labels"], json!({"team": HOSTILE}));
        assert_eq!(body["upper"], HOSTILE.to_uppercase());
        assert_eq!(poll.url.path(), "/api/jobs/x%2F..%2Fy");
    }

    #[test]
    fn a_value_that_forms_a_dot_segment_is_refused_in_the_path() {
        let m = hostile_manifest(json!({}));
        for name in ["..", "."] {
            let err = m
                .render(
                    OpKind::Dispatch,
                    &input("j", json!({"name": name})),
                    &secrets(&[]),
                )
                .unwrap_err();
            assert_eq!(err.path, "dispatch.request.path", "{name}");
        }
        // an encoded dot is only text: its '%' is encoded again, so it is no dot segment
        let ok = m
            .render(
                OpKind::Dispatch,
                &input("j", json!({"name": "%2e%2e"})),
                &secrets(&[]),
            )
            .unwrap();
        assert_eq!(ok.url.path(), "/api/jobs/%252e%252e/x");
    }

    #[test]
    fn header_values_with_line_breaks_are_refused_and_others_pass_verbatim() {
        let m = hostile_manifest(json!({"X-Name": "{{input.job.name}}"}));
        let err = m
            .render(
                OpKind::Dispatch,
                &input("j", json!({"name": HOSTILE})),
                &secrets(&[]),
            )
            .unwrap_err();
        assert_eq!(err.path, "dispatch.request.headers.X-Name");
        assert!(err.message.contains("line break"));
        let ok = m
            .render(
                OpKind::Dispatch,
                &input("j", json!({"name": "a\"b {{x}} /../?#%"})),
                &secrets(&[]),
            )
            .unwrap();
        assert_eq!(
            ok.headers,
            [("X-Name".to_owned(), "a\"b {{x}} /../?#%".to_owned())]
        );
    }

    #[test]
    fn a_body_that_is_one_variable_forwards_the_job_verbatim() {
        let mut doc = minimal();
        doc["dispatch"]["request"]["body"] = json!("{{input.job}}");
        let m = build(&doc).unwrap();
        let job = json!({"jobId": "j", "deep": {"list": [1, "two", {"three": null}]}, "s": "{{input.jobId}}"});
        let request = m
            .render(OpKind::Dispatch, &input("j", job.clone()), &secrets(&[]))
            .unwrap();
        assert_eq!(body_json(&request), job);
        let absent = m
            .render(OpKind::Dispatch, &input("j", Value::Null), &secrets(&[]))
            .unwrap();
        assert_eq!(body_json(&absent), json!({}));
    }

    #[test]
    fn template_headers_follow_the_auth_headers_and_content_type_moves_out() {
        let mut doc = minimal();
        doc["auth"] =
            json!({"type": "api_key", "headerName": "X-Api-Key", "secretRef": {"key": "KEY"}});
        doc["dispatch"]["request"]["headers"] = json!({
            "Content-Type": "application/merge-patch+json",
            "X-Sig": "{{secret \"SIG\"}}-{{input.jobId}}"
        });
        let m = build(&doc).unwrap();
        let request = m
            .render(
                OpKind::Dispatch,
                &input("j1", json!({})),
                &secrets(&[("KEY", "k"), ("SIG", "s")]),
            )
            .unwrap();
        assert_eq!(
            request.headers,
            [
                ("X-Api-Key".to_owned(), "k".to_owned()),
                ("X-Sig".to_owned(), "s-j1".to_owned())
            ]
        );
        assert_eq!(
            request.content_type.as_deref(),
            Some("application/merge-patch+json")
        );
        // GET without a body keeps its headers as they are
        let poll = m
            .render(
                OpKind::Poll,
                &input("j1", json!({})),
                &secrets(&[("KEY", "k"), ("SIG", "s")]),
            )
            .unwrap();
        assert_eq!(poll.headers, [("X-Api-Key".to_owned(), "k".to_owned())]);
    }

    #[test]
    fn a_missing_secret_at_render_names_the_key_but_no_value() {
        let mut doc = minimal();
        doc["poll"]["request"]["headers"] = json!({"X-Token": "t={{secret \"TOKEN\"}}"});
        doc["auth"] = json!({"type": "bearer", "secretRef": {"key": "BEARER"}});
        let m = build(&doc).unwrap();
        let err = m
            .render(
                OpKind::Poll,
                &input("j", json!({})),
                &secrets(&[("BEARER", "very-secret-value")]),
            )
            .unwrap_err();
        assert_eq!(err.path, "poll.request.headers.X-Token");
        assert!(err.message.contains("\"TOKEN\""));
        assert!(!err.to_string().contains("very-secret-value"));
        let err = m
            .render(
                OpKind::Poll,
                &input("j", json!({})),
                &secrets(&[("TOKEN", "t0k3n-value")]),
            )
            .unwrap_err();
        assert_eq!(err.path, "auth");
        assert!(err.message.contains("\"BEARER\""));
        assert!(!err.to_string().contains("t0k3n-value"));
    }

    #[test]
    fn a_non_json_body_template_is_refused_unless_the_content_type_says_otherwise() {
        let mut doc = minimal();
        doc["dispatch"]["request"]
            .as_object_mut()
            .unwrap()
            .remove("body");
        doc["dispatch"]["request"]["bodyTemplate"] =
            json!("{\"id\": \"{{input.jobId}}\"{{#if input.labels.broken}},{{/if}}}");
        let m = build(&doc).unwrap();
        let mut run = input("j", json!({}));
        assert!(m.render(OpKind::Dispatch, &run, &secrets(&[])).is_ok());
        run.labels.insert("broken".into(), json!("yes"));
        let err = m.render(OpKind::Dispatch, &run, &secrets(&[])).unwrap_err();
        assert_eq!(err.path, "dispatch.request.bodyTemplate");

        doc["dispatch"]["request"]["headers"] = json!({"Content-Type": "text/plain"});
        doc["dispatch"]["request"]["bodyTemplate"] =
            json!("job {{input.jobId}} \"{{input.job.note}}\"");
        let m = build(&doc).unwrap();
        let request = m
            .render(
                OpKind::Dispatch,
                &input("j", json!({"note": "say \"hi\""})),
                &secrets(&[]),
            )
            .unwrap();
        // values are still escaped for a JSON string; only the JSON check is skipped
        assert_eq!(
            request.body.as_deref(),
            Some(&b"job j \"say \\\"hi\\\"\""[..])
        );
        assert_eq!(request.content_type.as_deref(), Some("text/plain"));
    }

    #[test]
    fn render_of_a_missing_release_is_an_error() {
        let mut doc = minimal();
        doc.as_object_mut().unwrap().remove("release");
        let m = build(&doc).unwrap();
        let err = m
            .render(OpKind::Release, &input("j", json!({})), &secrets(&[]))
            .unwrap_err();
        assert_eq!(err.path, "release");
    }

    #[test]
    fn observe_reads_the_map_and_refuses_bodies_that_are_not_json() {
        let m = spec();
        let obs = m
            .poll
            .observe(br#"{"status": {"conditions": [{"type": "Complete", "status": "True"}]}}"#)
            .unwrap();
        assert_eq!(obs.state, Some(MappedState::Done));
        assert_eq!(m.poll.observe(b""), Err(MapError::NotJson));
        assert_eq!(m.poll.observe(b"<html>oops</html>"), Err(MapError::NotJson));
        let captured = m
            .dispatch
            .capture(br#"{"metadata": {"uid": "u-1"}}"#)
            .unwrap();
        assert_eq!(Value::Object(captured), json!({"uid": "u-1"}));
        assert_eq!(m.dispatch.capture(b"nope"), Err(MapError::NotJson));
        // release has no captures: its body is never read
        assert_eq!(m.release.as_ref().unwrap().capture(b"nope"), Ok(Map::new()));

        let mut doc = minimal();
        doc["poll"].as_object_mut().unwrap().remove("map");
        let m = build(&doc).unwrap();
        let obs = m.poll.observe(b"").unwrap();
        assert_eq!(obs.state, Some(MappedState::Running));
        assert!(!obs.unmapped);
        assert!(!m.poll.has_state_mapping());
    }
}
