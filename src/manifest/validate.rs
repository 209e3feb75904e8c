//! The walk of a whole manifest document: every section checked, every problem collected.

use super::operation::{self, MAX_TIMEOUT_MS, OpEnv};
use super::walk::{Fields, Problems};
use super::{
    Defaults, Limits, Manifest, ManifestError, ManifestFormat, OpKind, Polling, RetryPolicy,
    Warning, auth,
};
use crate::template::{Engine, context};
use serde_json::Value;
use std::collections::BTreeSet;

/// The only `apiVersion` this module reads.
pub(crate) const API_VERSION: &str = "cattery/v1";

const TOP_FIELDS: &[&str] = &[
    "apiVersion",
    "description",
    "baseUrl",
    "followRedirects",
    "proxy",
    "tls",
    "auth",
    "vars",
    "limits",
    "fairShare",
    "retry",
    "polling",
    "lost",
    "dispatch",
    "lookup",
    "poll",
    "release",
    "failureLog",
    "pollMany",
];

/// `proxy`: the string `direct`, or `{url, noProxy}` (a proxy without credentials: the manifest's
/// text is not sealed).
fn proxy(root: &Fields<'_>, problems: &mut Problems) -> crate::proxy::ProxyChoice {
    use crate::proxy::ProxyChoice;
    let path = root.child("proxy");
    match root.get("proxy") {
        None | Some(Value::Null) => ProxyChoice::Inherit,
        Some(Value::String(word)) if word == "direct" => ProxyChoice::Direct,
        Some(value @ Value::Object(_)) => {
            let Some(fields) = Fields::new(value, &path, problems) else {
                return ProxyChoice::Inherit;
            };
            fields.deny_unknown(&["url", "noProxy"], problems);
            let url = fields.required_str("url", problems).and_then(|text| {
                crate::proxy::parse_proxy_url(text, &fields.child("url"), false)
                    .map_err(|error| match error {
                        crate::proxy::ProxyError::BadUrl { key, problem } => {
                            problems.add(key, problem);
                        }
                        crate::proxy::ProxyError::Both => {}
                    })
                    .ok()
            });
            let no_proxy = match fields.get("noProxy") {
                None => Vec::new(),
                Some(Value::Array(items)) => items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| match item.as_str() {
                        Some(text) if !text.trim().is_empty() => Some(text.trim().to_owned()),
                        _ => {
                            problems.add(
                                format!("{}[{i}]", fields.child("noProxy")),
                                "write a host name, .suffix, IP address or CIDR",
                            );
                            None
                        }
                    })
                    .collect(),
                Some(_) => {
                    problems.add(
                        fields.child("noProxy"),
                        "write a list of host names, .suffixes, IP addresses or CIDRs",
                    );
                    Vec::new()
                }
            };
            url.map_or(ProxyChoice::Inherit, |url| ProxyChoice::Via {
                url,
                no_proxy,
            })
        }
        Some(_) => {
            problems.add(
                path,
                "write `direct` (never through a proxy) or {url, noProxy} (a proxy of this \
                 pool's own); leave it out to use the gateway's egress.proxy",
            );
            ProxyChoice::Inherit
        }
    }
}

/// A day in milliseconds: the ceiling for intervals and backoffs.
const DAY_MS: u64 = 86_400_000;

/// Builds a [`Manifest`] from a document, or reports every problem.
pub(crate) fn build(doc: &Value, defaults: &Defaults) -> Result<Manifest, ManifestError> {
    let mut problems = Problems::default();
    let Some(root) = Fields::new(doc, "", &mut problems) else {
        return Err(problems.into_error());
    };
    root.deny_unknown(TOP_FIELDS, &mut problems);

    match root.required_str("apiVersion", &mut problems) {
        Some(API_VERSION) | None => {}
        Some(other) => problems.add(
            "apiVersion",
            format!("{other:?} is not supported; write apiVersion: {API_VERSION}"),
        ),
    }
    let description = root.str("description", &mut problems).map(str::to_owned);
    let base_url = root
        .required_str("baseUrl", &mut problems)
        .and_then(|text| base_url(text, &mut problems));
    let (ca_cert_pem, insecure_skip_verify) = tls(&root, &mut problems);
    let follow_redirects = root.bool("followRedirects", &mut problems).unwrap_or(false);
    let proxy = proxy(&root, &mut problems);
    let auth = auth::parse(root.get("auth"), &mut problems);
    let vars = root
        .object("vars", &mut problems)
        .and_then(|(_, v)| v.as_object().cloned())
        .unwrap_or_default();
    let limits = limits(&root, defaults, &mut problems);
    let fair_share = fair_share(&root, &mut problems);
    let retry = retry(&root, defaults, &mut problems);
    let polling = polling(&root, defaults, &mut problems);
    let lost_redispatch = root
        .object("lost", &mut problems)
        .and_then(|(path, v)| {
            let lost = Fields::new(v, &path, &mut problems)?;
            lost.deny_unknown(&["redispatch"], &mut problems);
            lost.int("redispatch", 0, 100, &mut problems)
        })
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0);

    let captures = operation::declared_captures(doc);
    let auth_headers = auth::header_names(&auth);
    let mut engine = Engine::new();
    let mut env = OpEnv {
        engine: &mut engine,
        vars: &vars,
        captures: &captures,
        auth_headers: &auth_headers,
    };
    let dispatch = root
        .required("dispatch", &mut problems)
        .and_then(|v| operation::parse(OpKind::Dispatch, v, &mut env, &mut problems));
    let lookup = root
        .get("lookup")
        .and_then(|v| operation::parse(OpKind::Lookup, v, &mut env, &mut problems));
    let poll = root
        .required("poll", &mut problems)
        .and_then(|v| operation::parse(OpKind::Poll, v, &mut env, &mut problems));
    let release = root
        .get("release")
        .and_then(|v| operation::parse(OpKind::Release, v, &mut env, &mut problems));
    let failure_log = root
        .get("failureLog")
        .and_then(|v| operation::parse(OpKind::FailureLog, v, &mut env, &mut problems));

    let mut warnings = Vec::new();
    if let Some(value) = root.get("pollMany") {
        operation::check_poll_many(value, &vars, &mut problems);
        warnings.push(Warning {
            code: "poll_many_unsupported".into(),
            message: "pollMany is validated but not used yet: every run is polled on its own \
                      with poll"
                .into(),
        });
    }
    if root.get("release").is_none() {
        warnings.push(Warning {
            code: "no_release".into(),
            message: "the manifest has no release operation: finished runs are not cleaned up \
                      at the scheduler and cancellation cannot stop them; released stays false"
                .into(),
        });
    }
    if let Some(poll) = &poll
        && !poll.has_state_mapping()
    {
        warnings.push(Warning {
            code: "no_state_mapping".into(),
            message: "poll has no map.state: every poll reads as running until the run's \
                      deadline; add map.state (and statusMap) so runs can finish"
                .into(),
        });
    }

    let (Some(base_url), Some(dispatch), Some(poll), true) =
        (base_url, dispatch, poll, problems.is_empty())
    else {
        return Err(problems.into_error());
    };
    let mut secret_keys: BTreeSet<String> = auth::secret_keys(&auth).into_iter().collect();
    for op in std::iter::once(&dispatch)
        .chain(lookup.as_ref())
        .chain(Some(&poll))
        .chain(release.as_ref())
        .chain(failure_log.as_ref())
    {
        secret_keys.extend(op.secret_keys().iter().cloned());
    }
    let manifest = Manifest {
        format: ManifestFormat::CatteryV1,
        description,
        base_url,
        ca_cert_pem,
        insecure_skip_verify,
        follow_redirects,
        proxy,
        auth,
        limits,
        fair_share,
        retry,
        polling,
        lost_redispatch,
        dispatch,
        lookup,
        poll,
        release,
        failure_log,
        warnings,
        vars,
        engine,
        source: doc.clone(),
        secret_keys,
    };
    trial_render(&manifest, &captures, &mut problems);
    if problems.is_empty() {
        Ok(manifest)
    } else {
        Err(problems.into_error())
    }
}

/// Renders every operation with a job that has none of the optional fields, so that a
/// manifest whose output can never be sent (a `bodyTemplate` that is not JSON, a var with a
/// line break in a header, a literal `..` in a path) is refused at registration.
fn trial_render(manifest: &Manifest, captures: &BTreeSet<String>, problems: &mut Problems) {
    let input = context::sample_input(captures);
    let secrets = context::sample_secrets(manifest.secret_keys());
    for kind in [
        OpKind::Dispatch,
        OpKind::Lookup,
        OpKind::Poll,
        OpKind::Release,
        OpKind::FailureLog,
    ] {
        if manifest.operation(kind).is_none() {
            continue;
        }
        if let Err(err) = manifest.render(kind, &input, &secrets) {
            problems.add(
                err.path,
                format!(
                    "a trial render with a job that has none of the optional fields fails: {}",
                    err.message
                ),
            );
        }
    }
}

fn base_url(text: &str, problems: &mut Problems) -> Option<url::Url> {
    if text.contains("{{") {
        problems.add(
            "baseUrl",
            "baseUrl is never templated; put variable parts in the operation paths",
        );
        return None;
    }
    let url = match url::Url::parse(text) {
        Ok(url) => url,
        Err(err) => {
            problems.add(
                "baseUrl",
                format!("{text:?} is not an absolute URL ({err}); write e.g. https://scheduler.example:8443"),
            );
            return None;
        }
    };
    let mut wrong = Vec::new();
    if !matches!(url.scheme(), "http" | "https") {
        wrong.push("the scheme must be http or https");
    }
    if url.host_str().is_none_or(str::is_empty) {
        wrong.push("it needs a host");
    }
    if url.query().is_some() {
        wrong.push("it must not have a query (put query parameters in request.query)");
    }
    if url.fragment().is_some() {
        wrong.push("it must not have a fragment");
    }
    if !url.username().is_empty() || url.password().is_some() {
        wrong.push("it must not carry credentials (use auth)");
    }
    if wrong.is_empty() {
        Some(url)
    } else {
        problems.add("baseUrl", format!("{text:?}: {}", wrong.join("; ")));
        None
    }
}

fn tls(root: &Fields<'_>, problems: &mut Problems) -> (Option<String>, bool) {
    let Some((path, value)) = root.object("tls", problems) else {
        return (None, false);
    };
    let Some(tls) = Fields::new(value, &path, problems) else {
        return (None, false);
    };
    tls.deny_unknown(&["caCertPem", "insecureSkipVerify"], problems);
    let pem = tls.str("caCertPem", problems).map(str::to_owned);
    if let Some(pem) = &pem
        && !pem.contains("-----BEGIN CERTIFICATE-----")
    {
        problems.add(
            "tls.caCertPem",
            "must be a PEM certificate (-----BEGIN CERTIFICATE----- …)",
        );
    }
    let insecure = tls.bool("insecureSkipVerify", problems).unwrap_or(false);
    (pem, insecure)
}

fn section<'a>(
    root: &Fields<'a>,
    key: &str,
    allowed: &[&str],
    problems: &mut Problems,
) -> Option<(String, &'a Value)> {
    let (path, value) = root.object(key, problems)?;
    if let Some(fields) = Fields::new(value, &path, problems) {
        fields.deny_unknown(allowed, problems);
    }
    Some((path, value))
}

fn u32_of(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The slowest rate budget: one call every 1000 s. A smaller rate would space calls further
/// apart than any clock arithmetic needs to handle (and than any pool could use).
pub const MIN_REQUESTS_PER_SECOND: f64 = 0.001;
/// The fastest rate budget.
pub const MAX_REQUESTS_PER_SECOND: f64 = 1_000_000.0;

/// The largest tenant weight.
const MAX_WEIGHT: u64 = 1_000;

/// `fairShare`: `tenantLabel`, `weights` (tenant → 1..1000), `defaultWeight`,
/// `maxInFlightPerTenant`.
fn fair_share(root: &Fields<'_>, problems: &mut Problems) -> crate::actors::fair::FairShare {
    let mut share = crate::actors::fair::FairShare::default();
    let allowed = [
        "tenantLabel",
        "weights",
        "defaultWeight",
        "maxInFlightPerTenant",
    ];
    let Some((path, value)) = section(root, "fairShare", &allowed, problems) else {
        return share;
    };
    let Some(f) = Fields::new(value, &path, problems) else {
        return share;
    };
    if let Some(label) = f.str("tenantLabel", problems) {
        if label.is_empty() || label.len() > 63 {
            problems.add(
                f.child("tenantLabel"),
                "must be a label key of 1 to 63 characters",
            );
        } else {
            label.clone_into(&mut share.tenant_label);
        }
    }
    if let Some((weights_path, weights)) = f.object("weights", problems)
        && let Some(map) = weights.as_object()
    {
        for (tenant, weight) in map {
            match weight.as_u64().filter(|w| (1..=MAX_WEIGHT).contains(w)) {
                Some(w) => {
                    share.weights.insert(tenant.clone(), u32_of(w));
                }
                None => problems.add(
                    super::walk::join(&weights_path, tenant),
                    format!(
                        "must be a whole number from 1 to {MAX_WEIGHT}; got {}",
                        super::walk::show(weight)
                    ),
                ),
            }
        }
    }
    if let Some(n) = f.int("defaultWeight", 1, MAX_WEIGHT, problems) {
        share.default_weight = u32_of(n);
    }
    if let Some(n) = f.int("maxInFlightPerTenant", 1, 1_000_000, problems) {
        share.max_in_flight_per_tenant = Some(u32_of(n));
    }
    share
}

fn limits(root: &Fields<'_>, defaults: &Defaults, problems: &mut Problems) -> Limits {
    let mut limits = defaults.limits.clone();
    let allowed = [
        "maxInFlight",
        "maxQueued",
        "requestsPerSecond",
        "timeoutMs",
        "maxConnections",
    ];
    let Some((path, value)) = section(root, "limits", &allowed, problems) else {
        return limits;
    };
    let Some(f) = Fields::new(value, &path, problems) else {
        return limits;
    };
    if let Some(n) = f.int("maxInFlight", 1, 1_000_000, problems) {
        limits.max_in_flight = u32_of(n);
    }
    if let Some(n) = f.int("maxQueued", 0, 100_000_000, problems) {
        limits.max_queued = u32_of(n);
    }
    if let Some(v) = f.get("requestsPerSecond") {
        match v
            .as_f64()
            .filter(|r| (MIN_REQUESTS_PER_SECOND..=MAX_REQUESTS_PER_SECOND).contains(r))
        {
            Some(r) => limits.requests_per_second = Some(r),
            None => problems.add(
                f.child("requestsPerSecond"),
                format!(
                    "must be a number from {MIN_REQUESTS_PER_SECOND} to {MAX_REQUESTS_PER_SECOND}, \
                     e.g. 50 or 0.5; got {}",
                    super::walk::show(v)
                ),
            ),
        }
    }
    if let Some(n) = f.int("timeoutMs", 1, MAX_TIMEOUT_MS, problems) {
        limits.timeout_ms = n;
    }
    if let Some(n) = f.int(
        "maxConnections",
        1,
        u64::from(super::model::MAX_CONNECTIONS),
        problems,
    ) {
        limits.max_connections = u32_of(n);
    }
    limits
}

fn retry(root: &Fields<'_>, defaults: &Defaults, problems: &mut Problems) -> RetryPolicy {
    let mut retry = defaults.retry.clone();
    let allowed = ["maxAttempts", "initialBackoffMs", "maxBackoffMs"];
    let Some((path, value)) = section(root, "retry", &allowed, problems) else {
        return retry;
    };
    let Some(f) = Fields::new(value, &path, problems) else {
        return retry;
    };
    if let Some(n) = f.int("maxAttempts", 1, 100, problems) {
        retry.max_attempts = u32_of(n);
    }
    let initial = f.int("initialBackoffMs", 0, DAY_MS, problems);
    let max = f.int("maxBackoffMs", 1, DAY_MS, problems);
    if let Some(n) = initial {
        retry.initial_backoff_ms = n;
    }
    if let Some(n) = max {
        retry.max_backoff_ms = n;
    }
    if retry.max_backoff_ms < retry.initial_backoff_ms {
        if max.is_some() {
            problems.add(
                f.child("maxBackoffMs"),
                format!(
                    "must be at least initialBackoffMs ({})",
                    retry.initial_backoff_ms
                ),
            );
        } else {
            retry.max_backoff_ms = retry.initial_backoff_ms;
        }
    }
    retry
}

fn polling(root: &Fields<'_>, defaults: &Defaults, problems: &mut Problems) -> Polling {
    let mut polling = defaults.polling.clone();
    polling.max_interval_ms = polling.max_interval_ms.max(polling.interval_ms);
    let allowed = [
        "intervalMs",
        "maxIntervalMs",
        "deadlineSeconds",
        "maxConsecutiveErrors",
    ];
    let Some((path, value)) = section(root, "polling", &allowed, problems) else {
        return polling;
    };
    let Some(f) = Fields::new(value, &path, problems) else {
        return polling;
    };
    let interval = f.int("intervalMs", 1, DAY_MS, problems);
    let max_interval = f.int("maxIntervalMs", 1, DAY_MS, problems);
    if let Some(n) = interval {
        polling.interval_ms = n;
    }
    match (interval, max_interval) {
        (_, Some(max)) if max < polling.interval_ms => problems.add(
            f.child("maxIntervalMs"),
            format!("must be at least intervalMs ({})", polling.interval_ms),
        ),
        (_, Some(max)) => polling.max_interval_ms = max,
        // An explicit interval without a ceiling stretches to six times the interval.
        (Some(n), None) => polling.max_interval_ms = n.saturating_mul(6).min(DAY_MS).max(n),
        (None, None) => {}
    }
    if let Some(n) = f.int("deadlineSeconds", 1, 31_536_000, problems) {
        polling.deadline_seconds = Some(n);
    }
    if let Some(n) = f.int("maxConsecutiveErrors", 1, 10_000, problems) {
        polling.max_consecutive_errors = u32_of(n);
    }
    polling
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{SPEC_EXAMPLE, build, minimal, problem_messages, problem_paths};
    use super::super::{Auth, Manifest, Method, NotFound};
    use super::*;
    use serde_json::json;

    #[test]
    fn the_spec_kubernetes_manifest_parses_from_yaml_and_from_json() {
        let from_yaml = Manifest::parse(SPEC_EXAMPLE, &Defaults::default()).unwrap();
        let json_text = serde_json::to_string_pretty(from_yaml.source()).unwrap();
        let from_json = Manifest::parse(&json_text, &Defaults::default()).unwrap();
        for m in [&from_yaml, &from_json] {
            assert_eq!(m.format, ManifestFormat::CatteryV1);
            assert_eq!(m.base_url.as_str(), "https://kube.example.internal:6443/");
            assert_eq!(
                m.description.as_deref(),
                Some("Kubernetes Jobs in namespace \"runners\"")
            );
            assert!(m.ca_cert_pem.is_some());
            assert_eq!(
                m.auth,
                Auth::Bearer {
                    secret_key: "K8S_TOKEN".into()
                }
            );
            assert_eq!(m.limits.max_in_flight, 200);
            assert_eq!(m.limits.requests_per_second, Some(50.0));
            assert_eq!(m.retry.max_attempts, 6);
            assert_eq!(m.polling.deadline_seconds, Some(7200));
            assert_eq!(m.dispatch.method, Method::Post);
            assert_eq!(m.dispatch.expect, Some(vec![201]));
            assert_eq!(
                m.dispatch
                    .already_exists
                    .iter()
                    .map(|rule| rule.status)
                    .collect::<Vec<_>>(),
                vec![409]
            );
            assert_eq!(m.poll.not_found, NotFound::Lost);
            assert_eq!(m.release.as_ref().map(|r| r.method), Some(Method::Delete));
            assert_eq!(
                m.release.as_ref().map(|r| r.not_found),
                Some(NotFound::Success)
            );
            assert!(m.warnings.is_empty(), "{:?}", m.warnings);
            assert_eq!(m.secret_keys(), &["K8S_TOKEN".to_owned()].into());
            assert!(!m.poll_needs_captures());
        }
        assert_eq!(from_yaml.source(), from_json.source());
    }

    #[test]
    fn max_connections_defaults_to_64_and_is_bounded() {
        let doc = minimal();
        assert_eq!(build(&doc).unwrap().limits.max_connections, 64);
        let mut doc = minimal();
        doc["limits"] = json!({"maxConnections": 8});
        assert_eq!(build(&doc).unwrap().limits.max_connections, 8);
        for bad in [json!(0), json!(4097), json!("many"), json!(2.5)] {
            let mut doc = minimal();
            doc["limits"] = json!({"maxConnections": bad});
            assert_eq!(problem_paths(&doc), ["limits.maxConnections"], "{bad}");
        }
    }

    #[test]
    fn five_mistakes_give_five_problems_with_their_paths() {
        let mut doc = minimal();
        doc["limits"] = json!({"maxInFlight": -3});
        doc["dispatch"]["request"]["method"] = json!("FETCH");
        doc["poll"]["map"]["state"] = json!("status.[");
        doc["poll"]["request"]["headers"] = json!({"X-Token": "{{input.secret}}"});
        doc["release"]["notFound"] = json!("maybe");
        assert_eq!(
            problem_paths(&doc),
            [
                "limits.maxInFlight",
                "dispatch.request.method",
                "poll.request.headers.X-Token",
                "poll.map.state",
                "release.notFound",
            ]
        );
    }

    #[test]
    fn unknown_fields_are_reported_wherever_they_are() {
        let mut doc = minimal();
        doc["apiVerison"] = json!("x");
        doc["limits"] = json!({"maxInFligth": 3});
        doc["dispatch"]["request"]["bodyy"] = json!({});
        doc["poll"]["map"]["progress"] = json!({"done": "a"});
        doc["poll"]["alreadyExists"] = json!([409]);
        let problems = build(&doc).unwrap_err().problems;
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "apiVerison",
                "limits.maxInFligth",
                "dispatch.request.bodyy",
                "poll.alreadyExists",
                "poll.map.progress.done",
            ]
        );
        assert!(problems[0].message.contains("did you mean `apiVersion`"));
        assert!(problems[3].message.contains("only allowed in dispatch"));
    }

    #[test]
    fn missing_sections_and_wrong_types_are_problems() {
        let doc = json!({"baseUrl": 5, "dispatch": [], "vars": "x", "release": {"request": {}}});
        assert_eq!(
            problem_paths(&doc),
            [
                "apiVersion",
                "baseUrl",
                "vars",
                "dispatch",
                "poll",
                "release.request.method",
                "release.request.path",
            ]
        );
        assert_eq!(problem_paths(&json!([1, 2])), [""]);
        let mut doc = minimal();
        doc["apiVersion"] = json!("cattery/v2");
        assert_eq!(problem_paths(&doc), ["apiVersion"]);
    }

    #[test]
    fn a_yaml_syntax_error_is_one_problem_at_the_root() {
        let err = Manifest::parse(
            "apiVersion: cattery/v1\npoll: {request: [\n",
            &Defaults::default(),
        )
        .unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert_eq!(err.problems[0].path, "");
        assert!(err.problems[0].message.contains("line"));
    }

    #[test]
    fn unknown_variables_are_problems_that_list_the_variables() {
        let mut doc = minimal();
        doc["dispatch"]["request"]["path"] = json!("/jobs/{{input.jobid}}");
        doc["dispatch"]["request"]["body"] = json!({"a": ["{{vars.nope}}", "{{pool.id}}"]});
        let problems = build(&doc).unwrap_err().problems;
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "dispatch.request.path",
                "dispatch.request.body.a.0",
                "dispatch.request.body.a.1"
            ]
        );
        assert!(
            problems[0].message.contains("input.jobId, input.kind"),
            "{}",
            problems[0].message
        );
        assert!(problems[1].message.contains("not a key of vars"));
    }

    #[test]
    fn captures_are_for_poll_and_release_only_and_must_be_declared() {
        let mut doc = minimal();
        doc["dispatch"]["capture"] = json!({"uid": "metadata.uid"});
        doc["dispatch"]["request"]["headers"] = json!({"X-Uid": "{{capture.uid}}"});
        doc["release"]["request"]["path"] = json!("/jobs/{{capture.other}}");
        let problems = build(&doc).unwrap_err().problems;
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].path, "dispatch.request.headers.X-Uid");
        assert!(problems[0].message.contains("not available in dispatch"));
        assert_eq!(problems[1].path, "release.request.path");
        assert!(problems[1].message.contains("declared: uid"));

        let mut doc = minimal();
        doc["dispatch"]["capture"] = json!({"uid": "metadata.uid", "bad-name": "x"});
        assert_eq!(problem_paths(&doc), ["dispatch.capture.bad-name"]);

        let mut doc = minimal();
        doc["dispatch"]["capture"] = json!({"uid": "metadata.uid"});
        doc["poll"]["request"]["path"] = json!("/jobs/{{capture.uid}}");
        let manifest = build(&doc).unwrap();
        assert!(manifest.poll_needs_captures());
    }

    #[test]
    fn secret_is_refused_outside_headers_and_collected_inside_them() {
        let mut doc = minimal();
        doc["dispatch"]["request"]["body"] = json!({"token": "{{secret \"TOKEN\"}}"});
        doc["poll"]["request"]["query"] = json!({"t": "{{secret \"TOKEN\"}}"});
        assert_eq!(
            problem_paths(&doc),
            ["dispatch.request.body.token", "poll.request.query.t"]
        );
        let mut doc = minimal();
        doc["auth"] =
            json!({"type": "api_key", "headerName": "X-Key", "secretRef": {"key": "KEY"}});
        doc["poll"]["request"]["headers"] = json!({"X-Extra": "v={{secret \"EXTRA\"}}"});
        let manifest = build(&doc).unwrap();
        assert_eq!(
            manifest.secret_keys(),
            &["EXTRA".to_owned(), "KEY".to_owned()].into()
        );
        assert_eq!(manifest.poll.secret_keys(), &["EXTRA".to_owned()].into());
    }

    #[test]
    fn triple_braces_are_refused_with_an_explanation() {
        let mut doc = minimal();
        doc["dispatch"]["request"]["bodyTemplate"] = json!("{\"id\": \"{{{input.jobId}}}\"}");
        doc["dispatch"]["request"]
            .as_object_mut()
            .unwrap()
            .remove("body");
        let messages = problem_messages(&doc);
        assert_eq!(messages.len(), 1);
        assert!(messages[0].contains("triple braces"));
        assert!(messages[0].contains("escaping is by position"));
    }

    #[test]
    fn bad_jmespath_is_a_problem_at_its_path() {
        let mut doc = minimal();
        doc["poll"]["map"] = json!({"state": "a[?", "progress": {"total": "length("}, "statusMap": {"X": "finished"}});
        doc["dispatch"]["capture"] = json!({"uid": "]"});
        assert_eq!(
            problem_paths(&doc),
            [
                "dispatch.capture.uid",
                "poll.map.state",
                "poll.map.statusMap.X",
                "poll.map.progress.total",
            ]
        );
    }

    #[test]
    fn request_shape_rules_are_enforced() {
        let mut doc = minimal();
        doc["poll"]["request"]["body"] = json!({"a": 1});
        doc["release"]["request"]["bodyTemplate"] = json!("{}");
        doc["dispatch"]["request"]["bodyTemplate"] = json!("{}");
        doc["dispatch"]["request"]["headers"] = json!({"Bad Header": "x", "x-a": "1", "X-A": "2"});
        doc["dispatch"]["request"]["path"] = json!("jobs?x=1");
        doc["dispatch"]["expect"] = json!([200, 409]);
        doc["dispatch"]["alreadyExists"] = json!([409]);
        assert_eq!(
            problem_paths(&doc),
            [
                "dispatch.request.bodyTemplate",
                "dispatch.request.path",
                "dispatch.request.path",
                "dispatch.request.headers.Bad Header",
                "dispatch.request.headers.x-a",
                "dispatch.alreadyExists",
                "poll.request.body",
                "release.request.bodyTemplate",
            ]
        );
    }

    #[test]
    fn a_template_header_may_not_override_the_auth_header() {
        let mut doc = minimal();
        doc["auth"] = json!({"type": "bearer", "secretRef": {"key": "T"}});
        doc["poll"]["request"]["headers"] = json!({"authorization": "x"});
        assert_eq!(problem_paths(&doc), ["poll.request.headers.authorization"]);
    }

    #[test]
    fn base_urls_must_be_static_absolute_http_urls() {
        for (url, ok) in [
            ("https://h.example", true),
            ("http://10.0.0.1:8080/prefix/", true),
            ("ftp://h.example", false),
            ("/relative", false),
            ("https://h.example/?a=1", false),
            ("https://h.example/#x", false),
            ("https://user:pw@h.example", false),
            ("https://{{vars.host}}", false),
        ] {
            let mut doc = minimal();
            doc["baseUrl"] = json!(url);
            assert_eq!(build(&doc).is_ok(), ok, "{url}");
        }
    }

    #[test]
    fn missing_release_and_state_mapping_are_warnings() {
        let mut doc = minimal();
        doc.as_object_mut().unwrap().remove("release");
        doc["poll"].as_object_mut().unwrap().remove("map");
        let manifest = build(&doc).unwrap();
        let codes: Vec<&str> = manifest.warnings.iter().map(|w| w.code.as_str()).collect();
        assert_eq!(codes, ["no_release", "no_state_mapping"]);
        assert!(
            manifest.warnings[0]
                .message
                .contains("released stays false")
        );
        assert!(manifest.operation(OpKind::Release).is_none());
    }

    #[test]
    fn poll_many_is_validated_and_reported_as_not_used() {
        let mut doc = minimal();
        doc["pollMany"] = json!({
            "request": {"method": "GET", "path": "/jobs", "query": {"pool": "{{pool.name}}"}},
            "items": "items", "id": "metadata.name", "map": {"state": "status"}
        });
        let manifest = build(&doc).unwrap();
        assert_eq!(manifest.warnings[0].code, "poll_many_unsupported");
        doc["pollMany"]["request"]["path"] = json!("/jobs/{{input.jobId}}");
        doc["pollMany"]["map"] = json!({"state": "[["});
        doc["pollMany"].as_object_mut().unwrap().remove("id");
        assert_eq!(
            problem_paths(&doc),
            ["pollMany.request.path", "pollMany.id", "pollMany.map.state"]
        );
    }

    #[test]
    fn defaults_fill_what_the_manifest_omits() {
        let manifest = build(&minimal()).unwrap();
        assert_eq!(manifest.limits, Defaults::default().limits);
        assert_eq!(manifest.retry, Defaults::default().retry);
        assert_eq!(manifest.polling, Defaults::default().polling);
        assert_eq!(manifest.lost_redispatch, 0);

        let mut doc = minimal();
        doc["polling"] = json!({"intervalMs": 1000});
        doc["lost"] = json!({"redispatch": 2});
        doc["limits"] = json!({"maxQueued": 0});
        let manifest = build(&doc).unwrap();
        assert_eq!(manifest.polling.interval_ms, 1000);
        assert_eq!(manifest.polling.max_interval_ms, 6000);
        assert_eq!(manifest.lost_redispatch, 2);
        assert_eq!(manifest.limits.max_queued, 0);
        assert_eq!(manifest.limits.max_in_flight, 100);

        let mut doc = minimal();
        doc["polling"] = json!({"intervalMs": 1000, "maxIntervalMs": 500});
        doc["retry"] = json!({"initialBackoffMs": 100, "maxBackoffMs": 50, "maxAttempts": 0});
        doc["limits"] = json!({"requestsPerSecond": 0});
        assert_eq!(
            problem_paths(&doc),
            [
                "limits.requestsPerSecond",
                "retry.maxAttempts",
                "retry.maxBackoffMs",
                "polling.maxIntervalMs",
            ]
        );
    }

    #[test]
    fn not_found_words_depend_on_the_operation() {
        let mut doc = minimal();
        doc["poll"]["notFound"] = json!("retry");
        doc["release"]["notFound"] = json!("fail");
        let manifest = build(&doc).unwrap();
        assert_eq!(manifest.poll.not_found, NotFound::Retry);
        assert_eq!(manifest.release.unwrap().not_found, NotFound::Reject);
        assert_eq!(manifest.dispatch.not_found, NotFound::Reject);

        let mut doc = minimal();
        doc["dispatch"]["notFound"] = json!("lost");
        doc["poll"]["notFound"] = json!("success");
        assert_eq!(problem_paths(&doc), ["dispatch.notFound", "poll.notFound"]);
    }

    #[test]
    fn a_body_template_that_can_never_be_json_is_refused_at_registration() {
        let mut doc = minimal();
        doc["dispatch"]["request"]
            .as_object_mut()
            .unwrap()
            .remove("body");
        doc["dispatch"]["request"]["bodyTemplate"] = json!("{\"n\": {{input.job.count}} }");
        let problems = build(&doc).unwrap_err().problems;
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "dispatch.request.bodyTemplate");
        assert!(problems[0].message.contains("trial render"));
        doc["dispatch"]["request"]["bodyTemplate"] = json!("{\"n\": {{json input.job.count}} }");
        assert!(build(&doc).is_ok());
    }

    #[test]
    fn a_var_with_a_line_break_cannot_go_into_a_header() {
        let mut doc = minimal();
        doc["vars"] = json!({"v": "a\nb"});
        doc["poll"]["request"]["headers"] = json!({"X-V": "{{vars.v}}"});
        let problems = build(&doc).unwrap_err().problems;
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "poll.request.headers.X-V");
    }

    #[test]
    fn map_result_fields_fields_and_coerce_are_read_and_checked() {
        let mut doc = minimal();
        doc["poll"]["map"] = json!({
            "state": "status",
            "result": "out",
            "resultFields": {"prUrl": "links.pr"},
            "fields": {"phase": "phase", "spans": "spans"},
            "coerce": "cat-factory"
        });
        let manifest = build(&doc).unwrap();
        let obs = manifest
            .poll
            .observe(br#"{"status": "cancelled", "out": {"summary": "s"}, "links": {"pr": "u"}, "phase": "clone", "spans": null}"#)
            .unwrap();
        assert_eq!(obs.state, Some(crate::domain::state::MappedState::Failed));
        assert_eq!(obs.result, Some(json!({"summary": "s", "prUrl": "u"})));
        assert_eq!(Value::Object(obs.fields), json!({"phase": "clone"}));

        doc["poll"]["map"]["coerce"] = json!("javascript");
        doc["poll"]["map"]["fields"] = json!({"state": "x", "bad-name": "y", "ok": "[["});
        doc["poll"]["map"]["resultFields"] = json!({"prUrl": 3});
        assert_eq!(
            problem_paths(&doc),
            [
                "poll.map.resultFields.prUrl",
                "poll.map.fields.bad-name",
                "poll.map.fields.ok",
                "poll.map.fields.state",
                "poll.map.coerce",
            ]
        );
    }

    #[test]
    fn without_coerce_result_fields_override_and_fields_pass_raw_values() {
        let mut doc = minimal();
        doc["poll"]["map"] = json!({
            "state": "status",
            "resultFields": {"branch": "b"},
            "fields": {"coldStart": "coldStart"}
        });
        let manifest = build(&doc).unwrap();
        let obs = manifest
            .poll
            .observe(br#"{"status": "cancelled", "b": 7, "coldStart": {"atMs": 1}}"#)
            .unwrap();
        assert_eq!(
            obs.state,
            Some(crate::domain::state::MappedState::Cancelled)
        );
        assert_eq!(obs.result, Some(json!({"branch": "7"})));
        assert_eq!(Value::Object(obs.fields), json!({"coldStart": {"atMs": 1}}));
    }

    #[test]
    fn a_query_list_repeats_the_parameter_and_an_empty_path_calls_the_base_url() {
        let mut doc = minimal();
        doc["poll"]["request"]["query"] = json!({"tag": ["a", "{{input.jobId}}"], "one": 1});
        doc["release"]["request"]["path"] = json!("");
        let manifest = build(&doc).unwrap();
        let run = crate::manifest::fixtures::input("j-1", json!({}));
        let secrets = crate::manifest::fixtures::secrets(&[]);
        let poll = manifest.render(OpKind::Poll, &run, &secrets).unwrap();
        assert_eq!(
            poll.url.as_str(),
            "https://sched.example/api/jobs/j-1?one=1&tag=a&tag=j-1"
        );
        let release = manifest.render(OpKind::Release, &run, &secrets).unwrap();
        assert_eq!(release.url.as_str(), "https://sched.example/api");
        doc["poll"]["request"]["query"] = json!({"tag": ["a", {"no": 1}]});
        doc["release"]["request"]["path"] = json!("jobs");
        assert_eq!(
            problem_paths(&doc),
            ["poll.request.query.tag.1", "release.request.path"]
        );
    }

    fn with_lookup() -> Value {
        let mut doc = minimal();
        doc["dispatch"]["capture"] = json!({"id": "job_id"});
        doc["poll"]["request"]["path"] = json!("/jobs/{{capture.id}}");
        doc["lookup"] = json!({
            "request": {"method": "GET", "path": "/jobs", "query": {"name": "{{run.dispatchId}}"}},
            "items": "jobs",
            "id": "name",
            "capture": {"id": "job_id"}
        });
        doc
    }

    #[test]
    fn a_lookup_finds_the_job_of_the_dispatch_id_in_a_list_and_captures_from_it() {
        let manifest = build(&with_lookup()).unwrap();
        assert_eq!(manifest.reconcile_op(), Some(OpKind::Lookup));
        let lookup = manifest.lookup.as_ref().unwrap();
        let body = br#"{"jobs": [{"name": "job-0", "job_id": 1}, {"name": "job-1", "job_id": 2}, {"name": "job-1", "job_id": 3}]}"#;
        let found = lookup.find(body, "job-1").unwrap().unwrap();
        assert_eq!(Value::Object(found), json!({"id": 2}), "the first match");
        assert_eq!(lookup.find(body, "job-9").unwrap(), None);
        assert_eq!(lookup.find(br#"{"jobs": null}"#, "job-1").unwrap(), None);
        assert!(lookup.find(br#"{"jobs": "no"}"#, "job-1").is_err());
        assert!(lookup.find(b"<html>", "job-1").is_err());
        let run = crate::manifest::fixtures::input("j-1", json!({}));
        let request = manifest
            .render(
                OpKind::Lookup,
                &run,
                &crate::manifest::fixtures::secrets(&[]),
            )
            .unwrap();
        assert_eq!(
            request.url.as_str(),
            "https://sched.example/api/jobs?name=j-1"
        );
        // Without a lookup, a poll that needs a capture cannot ask; one that does not can.
        let mut doc = with_lookup();
        doc.as_object_mut().unwrap().remove("lookup");
        assert_eq!(build(&doc).unwrap().reconcile_op(), None);
        assert_eq!(
            build(&minimal()).unwrap().reconcile_op(),
            Some(OpKind::Poll)
        );
    }

    #[test]
    fn a_lookup_is_checked_strictly_at_registration() {
        let mut doc = with_lookup();
        doc["lookup"]["capture"] = json!({"other": "x"});
        doc["lookup"]["items"] = json!("jobs[");
        doc["lookup"]["map"] = json!({"state": "s"});
        doc["lookup"]["request"]["path"] = json!("/jobs/{{capture.id}}/{{input.job.name}}");
        let mut paths = problem_paths(&doc);
        paths.sort();
        assert_eq!(
            paths,
            [
                "lookup.capture",
                "lookup.capture.other",
                "lookup.items",
                "lookup.map",
                "lookup.request.path",
                "lookup.request.path"
            ]
        );
        let mut doc = with_lookup();
        doc["lookup"].as_object_mut().unwrap().remove("id");
        assert_eq!(problem_paths(&doc), ["lookup.id"]);
        let mut doc = with_lookup();
        doc["dispatch"]["items"] = json!("jobs");
        assert_eq!(problem_paths(&doc), ["dispatch.items"]);
    }

    #[test]
    fn already_exists_entries_are_statuses_or_statuses_with_a_body_condition() {
        let mut doc = minimal();
        doc["dispatch"]["expect"] = json!([201]);
        doc["dispatch"]["alreadyExists"] = json!([
            409,
            {"status": 500, "bodyContains": "already exists"},
            {"status": 500, "when": "cause == 'pod already exists'"}
        ]);
        let manifest = build(&doc).unwrap();
        let dispatch = &manifest.dispatch;
        assert!(dispatch.is_already_exists(409, b""));
        assert!(dispatch.is_already_exists(500, br#"{"message": "name in use: already exists"}"#));
        assert!(dispatch.is_already_exists(500, br#"{"cause": "pod already exists"}"#));
        assert!(!dispatch.is_already_exists(500, br#"{"cause": "storage full"}"#));
        assert!(!dispatch.is_already_exists(500, b"<html>"));
        assert!(!dispatch.is_already_exists(503, b"already exists"));

        doc["dispatch"]["alreadyExists"] = json!([
            {"status": 500},
            {"status": 500, "bodyContains": "x", "when": "a"},
            {"status": 500, "bodyContains": ""},
            {"status": 500, "when": "a["},
            {"status": 99, "when": "a"},
            {"status": 201, "when": "a"},
            {"status": 500, "when": "a", "extra": 1},
            "409"
        ]);
        let mut paths = problem_paths(&doc);
        paths.sort();
        assert_eq!(
            paths,
            [
                "dispatch.alreadyExists",
                "dispatch.alreadyExists.0",
                "dispatch.alreadyExists.1.when",
                "dispatch.alreadyExists.2.bodyContains",
                "dispatch.alreadyExists.3.when",
                "dispatch.alreadyExists.4.status",
                "dispatch.alreadyExists.6.extra",
                "dispatch.alreadyExists.7"
            ]
        );
    }
}
