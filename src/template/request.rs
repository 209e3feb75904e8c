//! One operation's request template: compiled at registration, rendered into a confined request.

use super::body::{self, BodyNode};
use super::check::{Facts, Position, Scope};
use super::context::SECRETS_KEY;
use super::engine::{Engine, TemplateRef};
use super::escape::{header_value_problem, is_header_name};
use crate::domain::secrets::SecretBundle;
use crate::manifest::{Method, Problem, RenderError, RenderedRequest};
use handlebars::Context;
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use url::Url;

/// The most bytes a rendered path may have.
pub(crate) const MAX_PATH_BYTES: usize = 8 * 1024;

/// The most bytes a rendered body may have, unless the job it carries is larger.
pub(crate) const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The room a rendered body has around a job larger than [`MAX_BODY_BYTES`]: such a body may
/// hold the job once plus this much (a large job is sent, an amplified one is not).
pub(crate) const BODY_ROOM_OVER_JOB: usize = 64 * 1024;

/// The raw parts of a request, as read from the manifest.
#[derive(Debug, Clone)]
pub(crate) struct RequestSource<'a> {
    /// The manifest path of the request object, e.g. `dispatch.request`.
    pub(crate) at: String,
    /// The method.
    pub(crate) method: Method,
    /// The path template (`None` when it is missing, which is already a problem).
    pub(crate) path: Option<&'a str>,
    /// Query parameters: literal name → value template.
    pub(crate) query: Vec<(String, String)>,
    /// Headers: literal name → value template.
    pub(crate) headers: Vec<(String, String)>,
    /// The body, if any.
    pub(crate) body: BodySource<'a>,
}

/// The body of a request as written in the manifest.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BodySource<'a> {
    /// No body.
    None,
    /// `body`: a tree whose string leaves are templates.
    Tree(&'a Value),
    /// `bodyTemplate`: one text template.
    Template(&'a str),
}

#[derive(Debug, Clone, PartialEq)]
enum Body {
    None,
    Tree { node: BodyNode, at: String },
    Template(TemplateRef),
}

#[derive(Debug, Clone, PartialEq)]
struct Header {
    name: String,
    template: TemplateRef,
    secret_keys: BTreeSet<String>,
}

/// A compiled request template.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RequestTemplate {
    method: Method,
    path: TemplateRef,
    query: Vec<(String, TemplateRef)>,
    headers: Vec<Header>,
    body: Body,
    facts: Facts,
}

impl RequestTemplate {
    /// Compiles and checks every template of a request.
    ///
    /// `auth_headers` are the header names the auth scheme sets (a template header may not set
    /// them again). Returns `None` when any problem was found (all of them are added).
    pub(crate) fn compile(
        engine: &mut Engine,
        source: &RequestSource<'_>,
        scope: &Scope<'_>,
        auth_headers: &[String],
        problems: &mut Vec<Problem>,
    ) -> Option<RequestTemplate> {
        let before = problems.len();
        let mut facts = Facts::default();
        let at = &source.at;

        let path_at = format!("{at}.path");
        if source
            .path
            .is_some_and(|p| !p.is_empty() && !p.starts_with('/'))
        {
            problems.push(Problem {
                path: path_at.clone(),
                message: "must begin with '/' (it is joined to baseUrl), or be empty to call \
                          baseUrl itself"
                    .to_owned(),
            });
        }
        let path = source.path.and_then(|text| {
            engine.compile(&path_at, text, Position::Path, scope, &mut facts, problems)
        });
        if let Some(path) = &path {
            for text in engine.literal_texts(path) {
                if let Some(c) = text.chars().find(|c| matches!(c, '?' | '#' | '\\')) {
                    problems.push(Problem {
                        path: path_at.clone(),
                        message: format!(
                            "the literal text of the path contains {c:?}; put query parameters \
                             in request.query, and never use fragments or backslashes in a path"
                        ),
                    });
                    break;
                }
            }
        }

        let mut query = Vec::with_capacity(source.query.len());
        for (i, (name, text)) in source.query.iter().enumerate() {
            // A repeated parameter (a list in the manifest) is numbered like a list.
            let repeats = source.query.iter().filter(|(n, _)| n == name).count();
            let q_at = if repeats > 1 {
                let k = source.query[..i].iter().filter(|(n, _)| n == name).count();
                format!("{at}.query.{name}.{k}")
            } else {
                format!("{at}.query.{name}")
            };
            if name.is_empty() {
                problems.push(Problem {
                    path: q_at.clone(),
                    message: "a query parameter needs a non-empty name".to_owned(),
                });
            }
            if let Some(t) =
                engine.compile(&q_at, text, Position::Query, scope, &mut facts, problems)
            {
                query.push((name.clone(), t));
            }
        }

        let mut headers = Vec::with_capacity(source.headers.len());
        let mut seen: Vec<String> = Vec::new();
        for (name, text) in &source.headers {
            let h_at = format!("{at}.headers.{name}");
            let lower = name.to_ascii_lowercase();
            if !is_header_name(name) {
                problems.push(Problem {
                    path: h_at.clone(),
                    message: format!(
                        "{name:?} is not a valid header name; use letters, digits and \
                         !#$%&'*+-.^_`|~ only"
                    ),
                });
            } else if auth_headers.iter().any(|a| a.eq_ignore_ascii_case(name)) {
                problems.push(Problem {
                    path: h_at.clone(),
                    message: format!(
                        "the auth scheme already sets {name}; remove this header or change auth"
                    ),
                });
            } else if seen.contains(&lower) {
                problems.push(Problem {
                    path: h_at.clone(),
                    message: format!("header {name} is set twice (header names ignore case)"),
                });
            }
            seen.push(lower);
            let mut header_facts = Facts::default();
            if let Some(template) = engine.compile(
                &h_at,
                text,
                Position::Header,
                scope,
                &mut header_facts,
                problems,
            ) {
                headers.push(Header {
                    name: name.clone(),
                    template,
                    secret_keys: header_facts.secret_keys.clone(),
                });
            }
            facts.uses_capture |= header_facts.uses_capture;
            facts.secret_keys.extend(header_facts.secret_keys);
        }

        let body = match source.body {
            BodySource::None => Body::None,
            BodySource::Tree(value) => {
                let body_at = format!("{at}.body");
                let node = body::compile(engine, value, &body_at, scope, &mut facts, problems);
                Body::Tree { node, at: body_at }
            }
            BodySource::Template(text) => {
                let t_at = format!("{at}.bodyTemplate");
                match engine.compile(
                    &t_at,
                    text,
                    Position::BodyTemplate,
                    scope,
                    &mut facts,
                    problems,
                ) {
                    Some(t) => Body::Template(t),
                    None => Body::None,
                }
            }
        };

        let path = path?;
        (problems.len() == before).then_some(RequestTemplate {
            method: source.method,
            path,
            query,
            headers,
            body,
            facts,
        })
    }

    /// The secret keys named by `{{secret "KEY"}}` in header values.
    pub(crate) fn secret_keys(&self) -> &BTreeSet<String> {
        &self.facts.secret_keys
    }

    /// True when some template of the request reads `capture.*`.
    pub(crate) fn uses_capture(&self) -> bool {
        self.facts.uses_capture
    }

    /// Renders the request.
    ///
    /// `data` is the template data (see `context::build`); `auth_headers` come first in the
    /// result. Secrets enter the data only for the header values, and only the keys they name.
    ///
    /// # Errors
    /// A [`RenderError`] naming the template's manifest path when a rendered value cannot be
    /// sent: a path that leaves the base URL or forms a dot segment, a header with a line
    /// break, a missing secret key, a `bodyTemplate` that is not JSON, or a size over the caps.
    pub(crate) fn render(
        &self,
        engine: &Engine,
        base: &Url,
        data: Value,
        auth_headers: Vec<(String, String)>,
        secrets: &SecretBundle,
    ) -> Result<RenderedRequest, RenderError> {
        let mut ctx = Context::from(data);

        let path = engine.render(&self.path, &ctx)?;
        check_path(&path).map_err(|message| RenderError {
            path: self.path.name.clone(),
            message,
        })?;
        let mut query = Vec::with_capacity(self.query.len());
        for (name, template) in &self.query {
            query.push((name.clone(), engine.render(template, &ctx)?));
        }
        let url = join_url(base, &path, &query).map_err(|message| RenderError {
            path: self.path.name.clone(),
            message,
        })?;

        let body = match &self.body {
            Body::None => None,
            Body::Tree { node, at } => {
                let value = body::render(node, engine, &ctx)?;
                let bytes = serde_json::to_vec(&value).map_err(|err| RenderError {
                    path: at.clone(),
                    message: format!("the body could not be serialised: {err}"),
                })?;
                Some((bytes, at.clone(), false))
            }
            Body::Template(template) => Some((
                engine.render(template, &ctx)?.into_bytes(),
                template.name.clone(),
                true,
            )),
        };

        // A body over the plain cap may still carry a large job once (measured only then: the
        // job is serialised once more).
        let body_cap = match &body {
            Some((bytes, _, _)) if bytes.len() > MAX_BODY_BYTES => ctx
                .data()
                .pointer("/input/job")
                .map_or(MAX_BODY_BYTES, |job| {
                    let size = serde_json::to_vec(job).map_or(0, |bytes| bytes.len());
                    MAX_BODY_BYTES.max(size.saturating_add(BODY_ROOM_OVER_JOB))
                }),
            _ => MAX_BODY_BYTES,
        };

        let mut rendered_headers = Vec::with_capacity(self.headers.len());
        let mut needed = Map::new();
        for header in &self.headers {
            for key in &header.secret_keys {
                let value = secrets.get(key).ok_or_else(|| RenderError {
                    path: header.template.name.clone(),
                    message: format!(
                        "secret key {key:?} is not in the pool's secret bundle; add it to the \
                         pool's secrets"
                    ),
                })?;
                needed.insert(key.clone(), Value::String(value.expose().to_owned()));
            }
        }
        if !needed.is_empty()
            && let Value::Object(map) = ctx.data_mut()
        {
            map.insert(SECRETS_KEY.to_owned(), Value::Object(needed));
        }
        for header in &self.headers {
            let value = engine.render(&header.template, &ctx)?;
            if let Some(problem) = header_value_problem(&value) {
                return Err(RenderError {
                    path: header.template.name.clone(),
                    message: problem.to_owned(),
                });
            }
            rendered_headers.push((header.name.clone(), value));
        }
        drop(ctx);

        let mut content_type = None;
        let body = match body {
            None => None,
            Some((bytes, at, from_template)) => {
                if let Some(i) = rendered_headers
                    .iter()
                    .position(|(name, _)| name.eq_ignore_ascii_case("content-type"))
                {
                    content_type = Some(rendered_headers.remove(i).1);
                }
                let ct = content_type.get_or_insert_with(|| "application/json".to_owned());
                if from_template
                    && is_json_media_type(ct)
                    && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err()
                {
                    return Err(RenderError {
                        path: at,
                        message: "the rendered bodyTemplate is not valid JSON; write values \
                                  inside quotes (\"{{input.jobId}}\") and use {{json x}} for \
                                  values placed outside quotes"
                            .to_owned(),
                    });
                }
                if bytes.len() > body_cap {
                    return Err(RenderError {
                        path: at,
                        message: format!(
                            "the rendered body is {} bytes, over the cap of {body_cap}",
                            bytes.len()
                        ),
                    });
                }
                Some(bytes)
            }
        };

        let mut headers = auth_headers;
        headers.extend(rendered_headers);
        Ok(RenderedRequest {
            method: self.method,
            url,
            headers,
            body,
            content_type,
        })
    }
}

/// True for `application/json`, `text/json` and any `…+json` media type.
fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

/// Refuses paths over the size cap and paths with `.` or `..` segments.
fn check_path(path: &str) -> Result<(), String> {
    if path.len() > MAX_PATH_BYTES {
        return Err(format!(
            "the rendered path is {} bytes, over the cap of {MAX_PATH_BYTES}",
            path.len()
        ));
    }
    for segment in path.split('/') {
        let decoded = percent_decode_str(segment).decode_utf8_lossy();
        if decoded == "." || decoded == ".." {
            return Err(
                "the rendered path has a '.' or '..' segment, which would change the path \
                 structure"
                    .to_owned(),
            );
        }
    }
    Ok(())
}

/// Joins `path` (beginning with '/') to `base` (trailing slash stripped), adds the query, and
/// checks confinement: same scheme, host and port, and a path under the base URL's path.
pub(crate) fn join_url(base: &Url, path: &str, query: &[(String, String)]) -> Result<Url, String> {
    let joined = format!("{}{path}", base.as_str().trim_end_matches('/'));
    let mut url =
        Url::parse(&joined).map_err(|err| format!("the rendered URL is invalid: {err}"))?;
    let base_path = base.path().trim_end_matches('/');
    let under_base = url
        .path()
        .strip_prefix(base_path)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    if url.scheme() != base.scheme()
        || url.host_str() != base.host_str()
        || url.port_or_known_default() != base.port_or_known_default()
        || !url.username().is_empty()
        || url.password().is_some()
        || !under_base
        || url.fragment().is_some()
        || url.query().is_some()
    {
        return Err(format!(
            "the rendered path leaves the base URL (it must stay on {}://{} under {:?})",
            base.scheme(),
            base.host_str().unwrap_or_default(),
            if base_path.is_empty() { "/" } else { base_path }
        ));
    }
    if !query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (name, value) in query {
            pairs.append_pair(name, value);
        }
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_joined_without_doubling_slashes_and_queries_are_encoded() {
        let base = Url::parse("https://kube.example:6443/prefix/").unwrap();
        let url = join_url(
            &base,
            "/apis/jobs",
            &[
                ("q".into(), "a b&c=d#e".into()),
                ("x".into(), String::new()),
            ],
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://kube.example:6443/prefix/apis/jobs?q=a+b%26c%3Dd%23e&x="
        );
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs[0], ("q".to_owned(), "a b&c=d#e".to_owned()));
    }

    #[test]
    fn paths_that_leave_the_base_are_refused() {
        let base = Url::parse("https://h.example/api").unwrap();
        assert!(join_url(&base, "/jobs/1", &[]).is_ok());
        assert!(join_url(&base, "/../admin", &[]).is_err());
        assert!(join_url(&base, "/%2e%2e/admin", &[]).is_err());
        assert!(join_url(&base, "x", &[]).is_err());
        let root = Url::parse("https://h.example").unwrap();
        assert_eq!(
            join_url(&root, "//evil.example/x", &[]).unwrap().host_str(),
            Some("h.example")
        );
    }

    #[test]
    fn dot_segments_and_oversized_paths_are_refused() {
        assert!(check_path("/jobs/a.b/..x").is_ok());
        assert!(check_path("/jobs/../x").is_err());
        assert!(check_path("/jobs/%2E%2e/x").is_err());
        assert!(check_path("/jobs/./x").is_err());
        assert!(check_path(&format!("/{}", "a".repeat(MAX_PATH_BYTES))).is_err());
    }

    #[test]
    fn json_media_types_are_recognised() {
        assert!(is_json_media_type("application/json"));
        assert!(is_json_media_type(
            "application/merge-patch+json; charset=utf-8"
        ));
        assert!(!is_json_media_type("application/x-www-form-urlencoded"));
        assert!(!is_json_media_type("text/plain"));
    }
}
