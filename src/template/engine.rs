//! The per-manifest template engine: one handlebars registry per escaping position.

use super::check::{self, Facts, Position, Scope};
use super::escape::{json_string_inner, percent_encode_component};
use super::helpers;
use crate::manifest::{Problem, RenderError};
use handlebars::template::Template;
use handlebars::{Context, Handlebars};

/// A template compiled, checked and registered in an [`Engine`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TemplateRef {
    /// The manifest path, which is also the registered name.
    pub(crate) name: String,
    /// Where it renders (decides the registry).
    pub(crate) position: Position,
    /// Set when the template is exactly one `{{variable}}`: the variable's path.
    pub(crate) plain_variable: Option<Vec<String>>,
}

/// The registries of one manifest.
///
/// Escaping is a property of a registry in handlebars, so each position that escapes
/// differently has its own: path segments are percent-encoded, `bodyTemplate` values are
/// JSON-string-escaped, and query values, header values and body leaves are rendered raw
/// (the caller encodes, checks or wraps them). Rendering is non-strict: every variable path
/// is checked at registration, and an optional value that is absent renders as "".
#[derive(Debug, Clone)]
pub(crate) struct Engine {
    path: Handlebars<'static>,
    raw: Handlebars<'static>,
    json: Handlebars<'static>,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

impl Engine {
    /// An engine with no templates.
    pub(crate) fn new() -> Self {
        let mut path = Handlebars::new();
        path.register_escape_fn(percent_encode_component);
        helpers::register(&mut path, false, false);

        let mut raw = Handlebars::new();
        raw.register_escape_fn(handlebars::no_escape);
        helpers::register(&mut raw, false, true);

        let mut json = Handlebars::new();
        json.register_escape_fn(json_string_inner);
        helpers::register(&mut json, true, false);

        Engine { path, raw, json }
    }

    fn registry(&self, position: Position) -> &Handlebars<'static> {
        match position {
            Position::Path => &self.path,
            Position::Query | Position::Header | Position::BodyLeaf => &self.raw,
            Position::BodyTemplate => &self.json,
        }
    }

    /// Compiles `source`, checks it against `scope`, and registers it under `name`.
    ///
    /// Returns `None` (after adding to `problems`) when the template does not compile or does
    /// not pass the check.
    pub(crate) fn compile(
        &mut self,
        name: &str,
        source: &str,
        position: Position,
        scope: &Scope<'_>,
        facts: &mut Facts,
        problems: &mut Vec<Problem>,
    ) -> Option<TemplateRef> {
        let template = match Template::compile(source) {
            Ok(t) => t,
            Err(err) => {
                let at = match err.pos() {
                    Some((line, column)) => format!(" at line {line}, column {column}"),
                    None => String::new(),
                };
                problems.push(Problem {
                    path: name.to_owned(),
                    message: format!(
                        "the template does not compile{at}: {}; check the {{{{ … }}}} syntax",
                        err.reason()
                    ),
                });
                return None;
            }
        };
        let found = check::check(&template, name, position, scope, facts);
        if !found.is_empty() {
            problems.extend(found);
            return None;
        }
        let plain_variable = check::plain_variable(&template);
        let registry = match position {
            Position::Path => &mut self.path,
            Position::Query | Position::Header | Position::BodyLeaf => &mut self.raw,
            Position::BodyTemplate => &mut self.json,
        };
        registry.register_template(name, template);
        Some(TemplateRef {
            name: name.to_owned(),
            position,
            plain_variable,
        })
    }

    /// The literal text pieces of a registered template.
    pub(crate) fn literal_texts(&self, template: &TemplateRef) -> Vec<String> {
        self.registry(template.position)
            .get_template(&template.name)
            .map(|t| {
                check::literal_texts(t)
                    .into_iter()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Renders a registered template with `ctx`.
    ///
    /// # Errors
    /// A handlebars failure, reported with the template's manifest path.
    pub(crate) fn render(
        &self,
        template: &TemplateRef,
        ctx: &Context,
    ) -> Result<String, RenderError> {
        self.registry(template.position)
            .render_with_context(&template.name, ctx)
            .map_err(|err| RenderError {
                path: template.name.clone(),
                message: match (err.line_no, err.column_no) {
                    (Some(line), Some(column)) => {
                        format!("{} (line {line}, column {column})", err.reason())
                    }
                    _ => err.reason().to_string(),
                },
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::OpKind;
    use check::Stage;
    use serde_json::{Map, json};
    use std::collections::BTreeSet;

    fn engine_with(name: &str, source: &str, position: Position) -> (Engine, TemplateRef) {
        let vars = Map::new();
        let captures = BTreeSet::new();
        let scope = Scope {
            stage: Stage::Operation(OpKind::Dispatch),
            captures: &captures,
            vars: &vars,
        };
        let mut engine = Engine::new();
        let mut problems = Vec::new();
        let template = engine
            .compile(
                name,
                source,
                position,
                &scope,
                &mut Facts::default(),
                &mut problems,
            )
            .unwrap();
        assert!(problems.is_empty());
        (engine, template)
    }

    #[test]
    fn each_position_escapes_values_its_own_way() {
        let ctx = Context::from(json!({"input": {"jobId": "a/b \"c\"\n<d>&"}}));
        let table = [
            (
                Position::Path,
                "/x/{{input.jobId}}",
                "/x/a%2Fb%20%22c%22%0A%3Cd%3E%26",
            ),
            (Position::Query, "{{input.jobId}}", "a/b \"c\"\n<d>&"),
            (
                Position::BodyLeaf,
                "{{lower input.jobId}}",
                "a/b \"c\"\n<d>&",
            ),
            (
                Position::BodyTemplate,
                "\"{{input.jobId}}\"",
                "\"a/b \\\"c\\\"\\n<d>&\"",
            ),
            (
                Position::BodyTemplate,
                "{{json input.jobId}}",
                "\"a/b \\\"c\\\"\\n<d>&\"",
            ),
            (
                Position::Path,
                "/{{json input.jobId}}",
                "/%22a%2Fb%20%5C%22c%5C%22%5Cn%3Cd%3E%26%22",
            ),
        ];
        for (position, source, expected) in table {
            let (engine, template) = engine_with("t", source, position);
            assert_eq!(
                engine.render(&template, &ctx).unwrap(),
                expected,
                "{source}"
            );
        }
    }

    #[test]
    fn absent_optional_values_render_as_empty_text() {
        let ctx = Context::from(json!({"input": {"labels": {}}}));
        let (engine, template) = engine_with("t", "[{{input.labels.team}}]", Position::Query);
        assert_eq!(engine.render(&template, &ctx).unwrap(), "[]");
    }

    #[test]
    fn substituted_values_are_never_expanded_again() {
        let ctx = Context::from(json!({"input": {"jobId": "{{input.jobId}}{{#if x}}y{{/if}}"}}));
        let (engine, template) = engine_with("t", "{{input.jobId}}", Position::BodyLeaf);
        assert_eq!(
            engine.render(&template, &ctx).unwrap(),
            "{{input.jobId}}{{#if x}}y{{/if}}"
        );
    }

    #[test]
    fn a_template_that_does_not_compile_is_a_problem_with_its_path() {
        let vars = Map::new();
        let captures = BTreeSet::new();
        let scope = Scope {
            stage: Stage::Operation(OpKind::Dispatch),
            captures: &captures,
            vars: &vars,
        };
        let mut problems = Vec::new();
        let out = Engine::new().compile(
            "dispatch.request.path",
            "/x/{{#if input.kind}}",
            Position::Path,
            &scope,
            &mut Facts::default(),
            &mut problems,
        );
        assert!(out.is_none());
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "dispatch.request.path");
        assert!(problems[0].message.contains("does not compile"));
    }

    #[test]
    fn the_engine_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Engine>();
    }
}
