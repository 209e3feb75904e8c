//! The walk of one operation (`dispatch`, `poll`, `release`, and the shape of `pollMany`).

use super::model::{BodyCondition, ExistsRule, Finder};
use super::walk::{Fields, Problems, join, kind_of};
use super::{Method, NotFound, OpKind, Operation};
use crate::domain::state::MappedState;
use crate::template::{
    BodySource, Captures, Engine, Expr, RequestSource, RequestTemplate, Scope, Stage, StateMapping,
    mapping,
};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// The most milliseconds a timeout may be (one hour).
pub(crate) const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// What every operation of a manifest shares while it is read.
pub(crate) struct OpEnv<'a> {
    /// The engine the templates are registered in.
    pub(crate) engine: &'a mut Engine,
    /// The manifest's `vars`.
    pub(crate) vars: &'a Map<String, Value>,
    /// Names declared in `dispatch.capture`.
    pub(crate) captures: &'a BTreeSet<String>,
    /// Header names the auth scheme sets.
    pub(crate) auth_headers: &'a [String],
}

/// Fields that exist on some operations only, with where they belong.
const OP_SPECIFIC: &[(&str, &str)] = &[
    ("alreadyExists", "dispatch"),
    ("capture", "dispatch and lookup"),
    ("items", "lookup"),
    ("id", "lookup"),
    ("notFound", "poll and release"),
    ("map", "poll"),
];

fn op_fields(kind: OpKind) -> &'static [&'static str] {
    match kind {
        OpKind::Dispatch => &["request", "expect", "alreadyExists", "timeoutMs", "capture"],
        OpKind::Lookup => &["request", "expect", "timeoutMs", "items", "id", "capture"],
        OpKind::Poll => &["request", "expect", "notFound", "timeoutMs", "map"],
        OpKind::Release => &["request", "expect", "notFound", "timeoutMs"],
        OpKind::FailureLog => &["request", "expect", "timeoutMs"],
    }
}

/// Reads one operation at `kind.as_str()`.
pub(crate) fn parse(
    kind: OpKind,
    value: &Value,
    env: &mut OpEnv<'_>,
    problems: &mut Problems,
) -> Option<Operation> {
    let at = kind.as_str();
    let fields = Fields::new(value, at, problems)?;
    let allowed = op_fields(kind);
    for (name, belongs) in OP_SPECIFIC {
        if fields.map().contains_key(*name) && !allowed.contains(name) {
            problems.add(
                fields.child(name),
                format!("`{name}` is only allowed in {belongs}, not in {at}"),
            );
        }
    }
    let all: Vec<&str> = allowed
        .iter()
        .copied()
        .chain(OP_SPECIFIC.iter().map(|(name, _)| *name))
        .collect();
    fields.deny_unknown(&all, problems);
    let before = problems.len();

    let scope = Scope {
        stage: Stage::Operation(kind),
        captures: env.captures,
        vars: env.vars,
    };
    let request = fields
        .required("request", problems)
        .and_then(|v| read_request(v, &join(at, "request"), problems))
        .and_then(|source| {
            RequestTemplate::compile(
                env.engine,
                &source,
                &scope,
                env.auth_headers,
                problems.list_mut(),
            )
            .map(|t| (source.method, t))
        });

    let expect = fields.statuses("expect", problems);
    let already_exists = if kind == OpKind::Dispatch {
        read_already_exists(&fields, problems)
    } else {
        Vec::new()
    };
    if let Some(expect) = &expect {
        let mut both: Vec<String> = already_exists
            .iter()
            .filter(|rule| expect.contains(&rule.status))
            .map(|rule| rule.status.to_string())
            .collect();
        both.dedup();
        if !both.is_empty() {
            problems.add(
                fields.child("alreadyExists"),
                format!(
                    "status {} is in both expect and alreadyExists; keep it in one",
                    both.join(", ")
                ),
            );
        }
    }
    let not_found = read_not_found(kind, &fields, problems);
    let timeout_ms = fields.int("timeoutMs", 1, MAX_TIMEOUT_MS, problems);
    let captures = match kind {
        OpKind::Dispatch => read_captures(&fields, problems),
        OpKind::Lookup => {
            let captures = read_captures(&fields, problems);
            check_lookup_captures(&fields, &captures, env.captures, problems);
            captures
        }
        _ => Captures::default(),
    };
    let finder = if kind == OpKind::Lookup {
        read_finder(&fields, problems)
    } else {
        None
    };
    let map = if kind == OpKind::Poll {
        fields
            .object("map", problems)
            .and_then(|(path, v)| read_map(v, &path, problems))
    } else {
        None
    };

    let (method, request) = request?;
    (problems.len() == before).then_some(Operation {
        kind,
        method,
        expect,
        already_exists,
        not_found,
        timeout_ms,
        request,
        map,
        captures,
        finder,
    })
}

/// `alreadyExists`: a list whose entries are a status (`409`), or a status with what the body
/// must say (`{status: 500, bodyContains: "already exists"}` or `{status: 500, when: <JMESPath>}`)
/// for a scheduler that answers a name in use with a status it also uses for other errors.
fn read_already_exists(fields: &Fields<'_>, problems: &mut Problems) -> Vec<ExistsRule> {
    let Some(value) = fields.get("alreadyExists") else {
        return Vec::new();
    };
    let path = fields.child("alreadyExists");
    let Value::Array(entries) = value else {
        problems.add(
            path,
            format!(
                "must be a list of HTTP statuses, or of {{status, bodyContains}} or \
                 {{status, when}} entries, not {}",
                kind_of(value)
            ),
        );
        return Vec::new();
    };
    if entries.is_empty() {
        problems.add(path.clone(), "must list at least one entry");
    }
    let mut out: Vec<ExistsRule> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let at = join(&path, &i.to_string());
        let rule = match entry {
            Value::Number(_) => {
                status_of(entry, &at, problems).map(|status| ExistsRule { status, when: None })
            }
            Value::Object(_) => read_exists_entry(entry, &at, problems),
            other => {
                problems.add(
                    at,
                    format!(
                        "must be an HTTP status or a {{status, bodyContains}} or {{status, when}} \
                         entry, not {}",
                        kind_of(other)
                    ),
                );
                None
            }
        };
        if let Some(rule) = rule
            && !out.contains(&rule)
        {
            out.push(rule);
        }
    }
    out
}

fn status_of(value: &Value, at: &str, problems: &mut Problems) -> Option<u16> {
    let status = value
        .as_u64()
        .filter(|n| (100..=599).contains(n))
        .and_then(|n| u16::try_from(n).ok());
    if status.is_none() {
        problems.add(
            at,
            format!(
                "must be an HTTP status code between 100 and 599; got {}",
                super::walk::show(value)
            ),
        );
    }
    status
}

/// One `{status, bodyContains | when}` entry of `alreadyExists`.
fn read_exists_entry(value: &Value, at: &str, problems: &mut Problems) -> Option<ExistsRule> {
    let entry = Fields::new(value, at, problems)?;
    entry.deny_unknown(&["status", "bodyContains", "when"], problems);
    let status = entry
        .required("status", problems)
        .and_then(|v| status_of(v, &entry.child("status"), problems));
    let contains = entry.str("bodyContains", problems);
    let when = entry.str("when", problems);
    let condition = match (contains, when) {
        (Some(_), Some(_)) => {
            problems.add(
                entry.child("when"),
                "use either bodyContains (a substring) or when (a JMESPath expression), not both",
            );
            None
        }
        (Some(""), None) => {
            problems.add(
                entry.child("bodyContains"),
                "an empty substring matches every body; write the text the scheduler answers",
            );
            None
        }
        (Some(text), None) => Some(BodyCondition::Contains(text.to_owned())),
        (None, Some(source)) => mapping::compile(&entry.child("when"), source, problems.list_mut())
            .map(BodyCondition::Matches),
        (None, None) => {
            problems.add(
                at,
                "an entry with only a status is written as the bare status; add bodyContains or \
                 when to say what the body must hold",
            );
            None
        }
    };
    Some(ExistsRule {
        status: status?,
        when: Some(condition?),
    })
}

/// `lookup.capture` must give every value that `dispatch.capture` gives, and no other: poll,
/// release and failureLog read them after a re-attached job as after an accepted one.
fn check_lookup_captures(
    fields: &Fields<'_>,
    captures: &Captures,
    declared: &BTreeSet<String>,
    problems: &mut Problems,
) {
    let given: BTreeSet<&str> = captures.0.iter().map(|(name, _)| name.as_str()).collect();
    let missing: Vec<&str> = declared
        .iter()
        .map(String::as_str)
        .filter(|name| !given.contains(name))
        .collect();
    // Names whose expression did not compile are reported already.
    let written: BTreeSet<&str> = fields
        .get("capture")
        .and_then(Value::as_object)
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let missing: Vec<&str> = missing
        .into_iter()
        .filter(|name| !written.contains(name))
        .collect();
    if !missing.is_empty() {
        problems.add(
            fields.child("capture"),
            format!(
                "must capture {} like dispatch.capture does: poll and release read them after \
                 a re-attached job",
                missing.join(", ")
            ),
        );
    }
    for name in written {
        if !declared.contains(name) {
            problems.add(
                join(&fields.child("capture"), name),
                format!(
                    "capture `{name}` is not declared in dispatch.capture; lookup captures the \
                     same values as dispatch"
                ),
            );
        }
    }
}

/// `items` and `id` of a lookup: both or neither.
fn read_finder(fields: &Fields<'_>, problems: &mut Problems) -> Option<Finder> {
    let items = fields.str("items", problems);
    let id = fields.str("id", problems);
    match (items, id) {
        (None, None) => None,
        (Some(items), Some(id)) => {
            let items = mapping::compile(&fields.child("items"), items, problems.list_mut());
            let id = mapping::compile(&fields.child("id"), id, problems.list_mut());
            Some(Finder {
                items: items?,
                id: id?,
            })
        }
        (Some(_), None) => {
            problems.add(
                fields.child("id"),
                "items needs id: the expression, on each element, that is compared with \
                 run.dispatchId",
            );
            None
        }
        (None, Some(_)) => {
            problems.add(
                fields.child("items"),
                "id needs items: the expression that gives the list of jobs to search",
            );
            None
        }
    }
}

/// The names declared in `dispatch.capture`, read before the operations so that poll and
/// release templates can be checked against them.
pub(crate) fn declared_captures(doc: &Value) -> BTreeSet<String> {
    doc.get("dispatch")
        .and_then(|d| d.get("capture"))
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn read_not_found(kind: OpKind, fields: &Fields<'_>, problems: &mut Problems) -> NotFound {
    let path = fields.child("notFound");
    let default = match kind {
        OpKind::Dispatch | OpKind::Lookup => NotFound::Reject,
        OpKind::Poll => NotFound::Lost,
        OpKind::Release => NotFound::Success,
        OpKind::FailureLog => NotFound::Reject,
    };
    if matches!(kind, OpKind::Dispatch | OpKind::Lookup | OpKind::FailureLog) {
        return default;
    }
    let Some(word) = fields.str("notFound", problems) else {
        return default;
    };
    match (kind, word) {
        (OpKind::Poll, "lost") => NotFound::Lost,
        (OpKind::Poll, "retry") => NotFound::Retry,
        (OpKind::Release, "success") => NotFound::Success,
        (OpKind::Release, "fail") => NotFound::Reject,
        (OpKind::Poll, other) => {
            problems.add(
                path,
                format!(
                    "{other:?} is not a poll notFound; use lost (the scheduler lost the job; \
                     the default) or retry (count it as an unreadable poll)"
                ),
            );
            default
        }
        (_, other) => {
            problems.add(
                path,
                format!(
                    "{other:?} is not a release notFound; use success (the job is gone \
                     already; the default) or fail (retry like any other rejection)"
                ),
            );
            default
        }
    }
}

/// Reads `request` into its raw parts; `None` when the shape is unusable.
pub(crate) fn read_request<'a>(
    value: &'a Value,
    at: &str,
    problems: &mut Problems,
) -> Option<RequestSource<'a>> {
    let fields = Fields::new(value, at, problems)?;
    fields.deny_unknown(
        &["method", "path", "query", "headers", "body", "bodyTemplate"],
        problems,
    );
    let method = fields.required_str("method", problems).and_then(|m| {
        let method = match m {
            "GET" => Some(Method::Get),
            "POST" => Some(Method::Post),
            "PUT" => Some(Method::Put),
            "PATCH" => Some(Method::Patch),
            "DELETE" => Some(Method::Delete),
            _ => None,
        };
        if method.is_none() {
            problems.add(
                fields.child("method"),
                format!("{m:?} is not a supported method; use GET, POST, PUT, PATCH or DELETE (upper case)"),
            );
        }
        method
    });
    let path = fields.required_str("path", problems);
    let query = query_map(&fields, problems);
    let headers = scalar_map(&fields, "headers", problems);
    let body = fields.get("body");
    let body_template = fields.str("bodyTemplate", problems);
    let body = match (body, body_template) {
        (Some(_), Some(_)) => {
            problems.add(
                fields.child("bodyTemplate"),
                "use either body (a tree) or bodyTemplate (one text template), not both",
            );
            BodySource::None
        }
        (Some(tree), None) => BodySource::Tree(tree),
        (None, Some(text)) => BodySource::Template(text),
        (None, None) => BodySource::None,
    };
    if let (
        Some(method @ (Method::Get | Method::Delete)),
        BodySource::Tree(_) | BodySource::Template(_),
    ) = (method, body)
    {
        let field = if matches!(body, BodySource::Tree(_)) {
            "body"
        } else {
            "bodyTemplate"
        };
        problems.add(
            fields.child(field),
            format!(
                "a {} request cannot have a body; remove it or use POST, PUT or PATCH",
                method.as_str()
            ),
        );
    }
    // A bad method is already a problem; the templates are still checked so that every
    // problem is reported at once.
    Some(RequestSource {
        at: at.to_owned(),
        method: method.unwrap_or(Method::Post),
        path,
        query,
        headers,
        body,
    })
}

/// `query`: name → template text, or a list of template texts for a repeated parameter
/// (`ids: ["a", "b"]` sends `ids=a&ids=b`). List entries are named `name.<index>`.
fn query_map(fields: &Fields<'_>, problems: &mut Problems) -> Vec<(String, String)> {
    let Some((path, value)) = fields.object("query", problems) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
        _ => None,
    };
    for (name, v) in value.as_object().into_iter().flatten() {
        match v {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    match text(item) {
                        Some(t) => out.push((name.clone(), t)),
                        None => problems.add(
                            join(&join(&path, name), &i.to_string()),
                            format!("must be a string (a template), not {}", kind_of(item)),
                        ),
                    }
                }
            }
            other => match text(other) {
                Some(t) => out.push((name.clone(), t)),
                None => problems.add(
                    join(&path, name),
                    format!(
                        "must be a string (a template) or a list of them, not {}",
                        kind_of(other)
                    ),
                ),
            },
        }
    }
    out
}

/// A map of name → template text; numbers and booleans are taken as their literal text.
fn scalar_map(fields: &Fields<'_>, key: &str, problems: &mut Problems) -> Vec<(String, String)> {
    let Some((path, value)) = fields.object(key, problems) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, v) in value.as_object().into_iter().flatten() {
        match v {
            Value::String(s) => out.push((name.clone(), s.clone())),
            Value::Number(_) | Value::Bool(_) => out.push((name.clone(), v.to_string())),
            other => problems.add(
                join(&path, name),
                format!("must be a string (a template), not {}", kind_of(other)),
            ),
        }
    }
    out
}

fn read_captures(fields: &Fields<'_>, problems: &mut Problems) -> Captures {
    let Some(entries) = fields.string_map("capture", problems) else {
        return Captures::default();
    };
    let mut out = Vec::with_capacity(entries.len());
    for (name, source) in entries {
        let path = join(&fields.child("capture"), &name);
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            problems.add(
                path.clone(),
                format!(
                    "capture name {name:?} must start with a letter or _ and use only letters, \
                     digits and _ (templates read it as capture.<name>)"
                ),
            );
        }
        if let Some(expr) = mapping::compile(&path, source, problems.list_mut()) {
            out.push((name, expr));
        }
    }
    Captures(out)
}

/// Reads a `map` (poll, and each item of pollMany).
pub(crate) fn read_map(value: &Value, at: &str, problems: &mut Problems) -> Option<StateMapping> {
    let fields = Fields::new(value, at, problems)?;
    fields.deny_unknown(
        &[
            "state",
            "statusMap",
            "progress",
            "result",
            "error",
            "failureCause",
            "detail",
            "heartbeat",
            "externalId",
            "resultFields",
            "fields",
            "coerce",
        ],
        problems,
    );
    let expr = |key: &str, problems: &mut Problems| -> Option<Expr> {
        let source = fields.str(key, problems)?;
        mapping::compile(&fields.child(key), source, problems.list_mut())
    };
    let mut mapping = StateMapping {
        state: expr("state", problems),
        result: expr("result", problems),
        error: expr("error", problems),
        failure_cause: expr("failureCause", problems),
        detail: expr("detail", problems),
        heartbeat: expr("heartbeat", problems),
        external_id: expr("externalId", problems),
        result_fields: named_exprs(&fields, "resultFields", problems),
        fields: named_exprs(&fields, "fields", problems),
        ..StateMapping::default()
    };
    match fields.str("coerce", problems) {
        None => {}
        Some(COERCE_CAT_FACTORY) => mapping.cat_factory = true,
        Some(other) => problems.add(
            fields.child("coerce"),
            format!("{other:?} is not a coercion; the only one is {COERCE_CAT_FACTORY}"),
        ),
    }
    if let Some((path, value)) = fields.object("statusMap", problems) {
        for (word, target) in value.as_object().into_iter().flatten() {
            let entry_path = join(&path, word);
            match target.as_str().and_then(MappedState::parse) {
                Some(state) => mapping.status_map.push((word.clone(), state)),
                None => problems.add(
                    entry_path,
                    format!(
                        "maps to {}, which is not a state; use pending, running, done, failed, \
                         cancelled or lost",
                        super::walk::show(target)
                    ),
                ),
            }
        }
    }
    if let Some((path, value)) = fields.object("progress", problems)
        && let Some(progress) = Fields::new(value, &path, problems)
    {
        progress.deny_unknown(&["completed", "inProgress", "total"], problems);
        let expr = |key: &str, problems: &mut Problems| -> Option<Expr> {
            let source = progress.str(key, problems)?;
            mapping::compile(&progress.child(key), source, problems.list_mut())
        };
        mapping.completed = expr("completed", problems);
        mapping.in_progress = expr("inProgress", problems);
        mapping.total = expr("total", problems);
    }
    Some(mapping)
}

/// The one value of `map.coerce`: read answers the way Cat-Factory's runner pools do.
pub(crate) const COERCE_CAT_FACTORY: &str = "cat-factory";

/// Names that a `map.fields` entry may not take: the run view's own members.
const RESERVED_FIELDS: &[&str] = &[
    "id",
    "jobId",
    "state",
    "progress",
    "result",
    "error",
    "failureCause",
    "detail",
    "heartbeatAt",
    "startedAt",
];

/// Reads a map of name → JMESPath (`map.resultFields`, `map.fields`).
fn named_exprs(fields: &Fields<'_>, key: &str, problems: &mut Problems) -> Vec<(String, Expr)> {
    let Some(entries) = fields.string_map(key, problems) else {
        return Vec::new();
    };
    let at = fields.child(key);
    let mut out = Vec::with_capacity(entries.len());
    for (name, source) in entries {
        let path = join(&at, &name);
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            problems.add(
                path.clone(),
                format!(
                    "{name:?} must start with a letter or _ and use only letters, digits and _"
                ),
            );
        } else if key == "fields" && RESERVED_FIELDS.contains(&name.as_str()) {
            problems.add(
                path.clone(),
                format!("{name:?} is a member of the run view already; map it with its own field"),
            );
        }
        if let Some(expr) = mapping::compile(&path, source, problems.list_mut()) {
            out.push((name, expr));
        }
    }
    out
}

/// Validates the shape of `pollMany` (`{request, items, id, map}`); the result is not used.
pub(crate) fn check_poll_many(value: &Value, vars: &Map<String, Value>, problems: &mut Problems) {
    let Some(fields) = Fields::new(value, "pollMany", problems) else {
        return;
    };
    fields.deny_unknown(&["request", "items", "id", "map"], problems);
    let mut engine = Engine::new();
    let captures = BTreeSet::new();
    let scope = Scope {
        stage: Stage::PollMany,
        captures: &captures,
        vars,
    };
    if let Some(source) = fields
        .required("request", problems)
        .and_then(|v| read_request(v, "pollMany.request", problems))
    {
        RequestTemplate::compile(&mut engine, &source, &scope, &[], problems.list_mut());
    }
    for key in ["items", "id"] {
        if let Some(source) = fields.required_str(key, problems) {
            mapping::compile(&fields.child(key), source, problems.list_mut());
        }
    }
    if let Some(map) = fields.required("map", problems) {
        read_map(map, "pollMany.map", problems);
    }
}
