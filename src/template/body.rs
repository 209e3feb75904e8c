//! The `body` tree: a JSON document whose string leaves are templates, rendered leaf by leaf.

use super::check::{Facts, Position, Scope};
use super::context::lookup;
use super::engine::{Engine, TemplateRef};
use crate::manifest::{Problem, RenderError};
use handlebars::Context;
use serde_json::{Map, Value};

/// A compiled body tree.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BodyNode {
    /// A value without templates (numbers, booleans, null, strings without `{{`).
    Literal(Value),
    /// A string leaf that holds a template.
    Leaf(TemplateRef),
    /// An object; its keys are literal.
    Object(Vec<(String, BodyNode)>),
    /// A list.
    Array(Vec<BodyNode>),
}

/// Compiles every string leaf of `value` (found at manifest path `path`).
pub(crate) fn compile(
    engine: &mut Engine,
    value: &Value,
    path: &str,
    scope: &Scope<'_>,
    facts: &mut Facts,
    problems: &mut Vec<Problem>,
) -> BodyNode {
    match value {
        Value::String(text) if text.contains("{{") => {
            match engine.compile(path, text, Position::BodyLeaf, scope, facts, problems) {
                Some(template) => BodyNode::Leaf(template),
                None => BodyNode::Literal(Value::Null),
            }
        }
        Value::Object(map) => BodyNode::Object(
            map.iter()
                .map(|(key, child)| {
                    let child_path = format!("{path}.{key}");
                    let node = compile(engine, child, &child_path, scope, facts, problems);
                    (key.clone(), node)
                })
                .collect(),
        ),
        Value::Array(items) => BodyNode::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, child)| {
                    compile(
                        engine,
                        child,
                        &format!("{path}.{i}"),
                        scope,
                        facts,
                        problems,
                    )
                })
                .collect(),
        ),
        other => BodyNode::Literal(other.clone()),
    }
}

/// Renders the tree into a JSON value.
///
/// A leaf is rendered without escaping and becomes a JSON string, so whatever a value holds
/// (quotes, newlines, braces) stays data. A leaf that is exactly one `{{variable}}` whose
/// value is not a string is replaced by that value (an object, list, number, boolean or null).
pub(crate) fn render(
    node: &BodyNode,
    engine: &Engine,
    ctx: &Context,
) -> Result<Value, RenderError> {
    Ok(match node {
        BodyNode::Literal(value) => value.clone(),
        BodyNode::Leaf(template) => {
            if let Some(segments) = &template.plain_variable
                && let Some(value) = lookup(ctx.data(), segments)
                && !value.is_string()
            {
                return Ok(value.clone());
            }
            Value::String(engine.render(template, ctx)?)
        }
        BodyNode::Object(entries) => {
            let mut map = Map::new();
            for (key, child) in entries {
                map.insert(key.clone(), render(child, engine, ctx)?);
            }
            Value::Object(map)
        }
        BodyNode::Array(items) => Value::Array(
            items
                .iter()
                .map(|child| render(child, engine, ctx))
                .collect::<Result<_, _>>()?,
        ),
    })
}
