//! The static check of a compiled template: walks its AST and admits only known variables and helpers.

use super::helpers::{BLOCK_HELPERS, HELPERS};
use crate::manifest::{OpKind, Problem};
use handlebars::template::{HelperTemplate, Parameter, Template, TemplateElement};
use handlebars::{Path, PathSeg};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// Where in a request a template's output goes; decides its escaping and what it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Position {
    /// `request.path`: values are percent-encoded as path segments.
    Path,
    /// `request.query.*`: rendered raw, then percent-encoded into the query string.
    Query,
    /// `request.headers.*`: rendered raw; CR, LF and NUL are refused; `secret` is allowed.
    Header,
    /// A string leaf of `request.body`: rendered raw, becomes a JSON string.
    BodyLeaf,
    /// `request.bodyTemplate`: values are escaped for the inside of a JSON string.
    BodyTemplate,
}

/// Which part of the manifest a template belongs to; decides which variables exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// One of the three per-run operations.
    Operation(OpKind),
    /// The `pollMany` list request, which is not about one run.
    PollMany,
}

/// What a template may refer to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scope<'a> {
    /// The part of the manifest.
    pub(crate) stage: Stage,
    /// The names declared in `dispatch.capture`.
    pub(crate) captures: &'a BTreeSet<String>,
    /// The manifest's `vars`.
    pub(crate) vars: &'a Map<String, Value>,
}

/// What the check learnt about a template.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Facts {
    /// Keys named by `{{secret "KEY"}}`.
    pub(crate) secret_keys: BTreeSet<String>,
    /// True when the template reads `capture.*`.
    pub(crate) uses_capture: bool,
}

/// The variables, for messages.
const VARIABLES: &str = "input.jobId, input.kind, input.job (and input.job.<field>…), \
input.labels (and input.labels.<name>), input.instanceType, input.cloudProvider, input.image, \
run.dispatchId, run.attempt, capture.<name> (poll and release only), vars.<key>, pool.name";

/// The helpers, for messages.
const HELPER_LIST: &str = "json, base64, urlencode, lower, upper, dns1123, default, \
secret (header values only), and the blocks #if / #unless";

/// Checks `template` (found at manifest path `path`), returning every problem.
pub(crate) fn check(
    template: &Template,
    path: &str,
    position: Position,
    scope: &Scope<'_>,
    facts: &mut Facts,
) -> Vec<Problem> {
    let mut checker = Checker {
        path,
        position,
        scope,
        facts,
        problems: Vec::new(),
        whole_leaf: position == Position::BodyLeaf && plain_variable(template).is_some(),
    };
    checker.template(template);
    checker.problems
}

/// The path of a template that is exactly one `{{variable}}` and nothing else.
pub(crate) fn plain_variable(template: &Template) -> Option<Vec<String>> {
    let [TemplateElement::Expression(ht)] = template.elements.as_slice() else {
        return None;
    };
    if !is_name_only(ht) {
        return None;
    }
    let Parameter::Path(Path::Relative((segs, _))) = &ht.name else {
        return None;
    };
    let names = named_segments(segs)?;
    let is_helper = names.len() == 1
        && HELPERS
            .iter()
            .any(|(h, _)| names.first() == Some(&h.to_string()));
    (!names.is_empty() && !is_helper).then_some(names)
}

/// Every piece of literal text of a template, including text inside `#if` blocks.
pub(crate) fn literal_texts(template: &Template) -> Vec<&str> {
    let mut out = Vec::new();
    collect_literals(template, &mut out);
    out
}

fn collect_literals<'a>(template: &'a Template, out: &mut Vec<&'a str>) {
    for element in &template.elements {
        match element {
            TemplateElement::RawString(text) => out.push(text),
            TemplateElement::HelperBlock(ht) => {
                if let Some(t) = &ht.template {
                    collect_literals(t, out);
                }
                if let Some(t) = &ht.inverse {
                    collect_literals(t, out);
                }
            }
            _ => {}
        }
    }
}

fn is_name_only(ht: &HelperTemplate) -> bool {
    !ht.block && ht.params.is_empty() && ht.hash.is_empty()
}

fn named_segments(segs: &[PathSeg]) -> Option<Vec<String>> {
    segs.iter()
        .map(|seg| match seg {
            PathSeg::Named(name) => Some(name.clone()),
            _ => None,
        })
        .collect()
}

fn helper_arity(name: &str) -> Option<usize> {
    HELPERS.iter().find(|(h, _)| *h == name).map(|(_, n)| *n)
}

struct Checker<'a, 'f> {
    path: &'a str,
    position: Position,
    scope: &'a Scope<'a>,
    facts: &'f mut Facts,
    problems: Vec<Problem>,
    /// The template is exactly one variable in a body leaf, so an object value is fine.
    whole_leaf: bool,
}

impl Checker<'_, '_> {
    fn problem(&mut self, message: String) {
        self.problems.push(Problem {
            path: self.path.to_owned(),
            message,
        });
    }

    fn template(&mut self, template: &Template) {
        for element in &template.elements {
            match element {
                TemplateElement::RawString(_) | TemplateElement::Comment(_) => {}
                TemplateElement::HtmlExpression(_) => self.problem(
                    "triple braces {{{ … }}} are not allowed: escaping is by position (path \
                     segments are percent-encoded, JSON strings are JSON-escaped, headers are \
                     checked), so triple braces are never needed; write {{ … }}"
                        .to_owned(),
                ),
                TemplateElement::Expression(ht) => self.expression(ht),
                TemplateElement::HelperBlock(ht) => self.block(ht),
                TemplateElement::DecoratorExpression(_) | TemplateElement::DecoratorBlock(_) => {
                    self.problem("decorators ({{* … }}) are not supported".to_owned())
                }
                TemplateElement::PartialExpression(_) | TemplateElement::PartialBlock(_) => self
                    .problem(
                        "partials ({{> … }}) are not supported; write the text in place".to_owned(),
                    ),
                _ => self.problem("this template construct is not supported".to_owned()),
            }
        }
    }

    fn expression(&mut self, ht: &HelperTemplate) {
        if ht.block_param.is_some() {
            self.problem("block parameters (as |x|) are not supported".to_owned());
        }
        if is_name_only(ht) {
            match &ht.name {
                Parameter::Path(path) => {
                    if let Some(arity) = single_name(path).and_then(helper_arity) {
                        let name = single_name(path).unwrap_or_default().to_owned();
                        self.problem(format!(
                            "the helper `{name}` needs {arity} argument(s), e.g. {{{{{name} input.jobId}}}}"
                        ));
                    } else if single_name(path).is_some_and(|n| BLOCK_HELPERS.contains(&n)) {
                        self.problem(
                            "#if and #unless are blocks: write {{#if x}}…{{/if}}".to_owned(),
                        );
                    } else {
                        self.variable(path, true);
                    }
                }
                Parameter::Subexpression(_) => self.problem(
                    "a parenthesised expression cannot stand alone; write {{helper arg}} \
                     without the outer parentheses"
                        .to_owned(),
                ),
                _ => self.problem("this expression is not supported".to_owned()),
            }
            return;
        }
        match ht.name.as_name() {
            Some(name) => self.helper_call(name, ht, false),
            None => self.problem("a helper name must be a plain word".to_owned()),
        }
    }

    fn block(&mut self, ht: &HelperTemplate) {
        let Some(name) = ht.name.as_name() else {
            self.problem("a block must name a helper (#if or #unless)".to_owned());
            return;
        };
        self.helper_call(name, ht, true);
        if let Some(t) = &ht.template {
            self.template(t);
        }
        if let Some(t) = &ht.inverse {
            self.template(t);
        }
    }

    fn helper_call(&mut self, name: &str, ht: &HelperTemplate, is_block: bool) {
        if ht.block_param.is_some() && !is_block {
            self.problem("block parameters (as |x|) are not supported".to_owned());
        }
        if BLOCK_HELPERS.contains(&name) {
            if !is_block {
                self.problem(format!(
                    "`{name}` is a block helper: write {{{{#{name} x}}}}…{{{{/{name}}}}}"
                ));
                return;
            }
            if ht.block_param.is_some() {
                self.problem("block parameters (as |x|) are not supported".to_owned());
            }
            if ht.params.len() != 1 {
                self.problem(format!("#{name} takes exactly one condition"));
            }
            for key in ht.hash.keys() {
                if key != "includeZero" {
                    self.problem(format!(
                        "#{name} takes no named argument `{key}` (only includeZero)"
                    ));
                }
            }
            for param in ht.params.iter().chain(ht.hash.values()) {
                self.param(param);
            }
            return;
        }
        let Some(arity) = helper_arity(name) else {
            let why = match name {
                "each" | "with" | "lookup" => {
                    "templates cannot loop or change scope; map the data with a JMESPath \
                     capture or put it in the body tree instead"
                }
                "raw" => "use \\{{ to write literal braces",
                _ => "it is not a cattery helper",
            };
            self.problem(format!(
                "the helper `{name}` is not supported ({why}); the helpers are: {HELPER_LIST}"
            ));
            return;
        };
        if is_block {
            self.problem(format!(
                "`{name}` is not a block helper: write {{{{{name} …}}}} without # and /"
            ));
            return;
        }
        if ht.params.len() != arity {
            self.problem(format!(
                "the helper `{name}` takes {arity} argument(s), not {}",
                ht.params.len()
            ));
        }
        if !ht.hash.is_empty() {
            self.problem(format!("the helper `{name}` takes no named arguments"));
        }
        if name == "secret" {
            self.secret(ht.params.first());
            return;
        }
        for param in &ht.params {
            self.param(param);
        }
    }

    fn secret(&mut self, param: Option<&Parameter>) {
        if self.position != Position::Header {
            self.problem(
                "{{secret \"KEY\"}} is only allowed in header values (request.headers.*); \
                 secrets never go into paths, queries or bodies"
                    .to_owned(),
            );
            return;
        }
        match param {
            Some(Parameter::Literal(Value::String(key))) if crate::manifest::is_secret_key(key) => {
                self.facts.secret_keys.insert(key.clone());
            }
            Some(Parameter::Literal(Value::String(key))) => self.problem(format!(
                "secret key {key:?} is not valid: use 1 to 64 characters from A-Z a-z 0-9 _ . -"
            )),
            Some(_) => self.problem(
                "secret takes the key as a quoted literal, e.g. {{secret \"API_TOKEN\"}}"
                    .to_owned(),
            ),
            None => {}
        }
    }

    fn param(&mut self, param: &Parameter) {
        match param {
            Parameter::Path(path) => self.variable(path, false),
            Parameter::Literal(_) => {}
            Parameter::Subexpression(sub) => match sub.as_element() {
                TemplateElement::Expression(ht) if !is_name_only(ht) => match ht.name.as_name() {
                    Some(name) => self.helper_call(name, ht, false),
                    None => self.problem("a helper name must be a plain word".to_owned()),
                },
                _ => self.problem(
                    "a parenthesised expression must call a helper, e.g. (lower input.kind); \
                     write a variable without parentheses"
                        .to_owned(),
                ),
            },
            Parameter::Name(name) => self.problem(format!("`{name}` is not a variable")),
            _ => self.problem("this argument is not supported".to_owned()),
        }
    }

    fn variable(&mut self, path: &Path, is_output: bool) {
        let (segs, raw) = match path {
            Path::Local((_, name, _)) => {
                self.problem(format!(
                    "@-variables such as @{name} are not supported; the variables are: {VARIABLES}"
                ));
                return;
            }
            Path::Relative((segs, raw)) => (segs, raw),
        };
        let Some(names) = named_segments(segs) else {
            self.problem(format!(
                "`{raw}`: ../ and @root are not supported; write the full path from a root, \
                 e.g. input.jobId"
            ));
            return;
        };
        if names.is_empty() {
            self.problem(format!(
                "`{raw}` is not a variable; the variables are: {VARIABLES}"
            ));
            return;
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        if let Err(message) = self.allowed(&names) {
            self.problem(format!("`{raw}`: {message}"));
            return;
        }
        if is_output && !self.whole_leaf && self.is_object(&names) {
            self.problem(format!(
                "`{raw}` is an object or a list and would render as \"[object]\"; write \
                 {{{{json {raw}}}}} to render it as JSON, or make {{{{{raw}}}}} the whole \
                 value of a body leaf to forward it as is"
            ));
        }
    }

    fn is_object(&self, names: &[&str]) -> bool {
        match names {
            ["input", "job"] | ["input", "labels"] => true,
            ["vars", rest @ ..] => {
                let mut current: Option<&Value> = None;
                for (i, key) in rest.iter().enumerate() {
                    current = if i == 0 {
                        self.scope.vars.get(*key)
                    } else {
                        match current {
                            Some(Value::Object(map)) => map.get(*key),
                            Some(Value::Array(items)) => {
                                key.parse::<usize>().ok().and_then(|i| items.get(i))
                            }
                            _ => None,
                        }
                    };
                }
                matches!(current, Some(Value::Object(_) | Value::Array(_)))
            }
            _ => false,
        }
    }

    fn allowed(&mut self, names: &[&str]) -> Result<(), String> {
        let unknown = || format!("unknown variable; the variables are: {VARIABLES}");
        let listing = self.scope.stage == Stage::PollMany;
        if listing && !matches!(names.first(), Some(&"vars") | Some(&"pool")) {
            return Err(
                "a pollMany request is not about one run: it may use only vars.<key> and \
                 pool.name"
                    .to_owned(),
            );
        }
        let dispatch = self.scope.stage == Stage::Operation(OpKind::Dispatch);
        match names {
            [
                "input",
                "job" | "instanceType" | "cloudProvider" | "image",
                ..,
            ] if !dispatch => Err(format!(
                "input.{} exists only in dispatch: the job body (which carries short-lived \
                     credentials) is opened for the dispatch call alone, so here it would render \
                     empty; carry what later calls need through run.dispatchId or \
                     dispatch.capture (capture.<name>)",
                names[1]
            )),
            [
                "input",
                "jobId" | "kind" | "instanceType" | "cloudProvider" | "image",
            ] => Ok(()),
            ["input", "job" | "labels", ..] => Ok(()),
            [
                "input",
                "jobId" | "kind" | "instanceType" | "cloudProvider" | "image",
                ..,
            ] => Err(
                "this value is a plain string and has no fields; use input.job.<field> for \
                 fields of the job"
                    .to_owned(),
            ),
            ["run", "dispatchId" | "attempt"] | ["pool", "name"] => Ok(()),
            ["capture", name, ..] => {
                if let Stage::Operation(op @ (OpKind::Dispatch | OpKind::Lookup)) = self.scope.stage
                {
                    return Err(format!(
                        "capture.* is not available in {}: captures are read from the \
                         dispatch (or lookup) answer, so only poll, release and failureLog can \
                         use them",
                        op.as_str()
                    ));
                }
                if !self.scope.captures.contains(*name) {
                    let declared: Vec<&str> =
                        self.scope.captures.iter().map(String::as_str).collect();
                    return Err(format!(
                        "capture `{name}` is not declared in dispatch.capture (declared: {})",
                        if declared.is_empty() {
                            "none".to_owned()
                        } else {
                            declared.join(", ")
                        }
                    ));
                }
                self.facts.uses_capture = true;
                Ok(())
            }
            ["vars", key, ..] => {
                if self.scope.vars.contains_key(*key) {
                    Ok(())
                } else {
                    let keys: Vec<&str> = self.scope.vars.keys().map(String::as_str).collect();
                    Err(format!(
                        "`{key}` is not a key of vars (keys: {})",
                        if keys.is_empty() {
                            "none".to_owned()
                        } else {
                            keys.join(", ")
                        }
                    ))
                }
            }
            _ => Err(unknown()),
        }
    }
}

fn single_name(path: &Path) -> Option<&str> {
    match path {
        Path::Relative((segs, _)) => match segs.as_slice() {
            [PathSeg::Named(name)] => Some(name),
            _ => None,
        },
        Path::Local(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(source: &str, position: Position, stage: Stage) -> (Vec<Problem>, Facts) {
        let vars = json!({"namespace": "runners", "obj": {"a": 1}})
            .as_object()
            .cloned()
            .unwrap();
        let captures: BTreeSet<String> = ["uid".to_owned()].into();
        let scope = Scope {
            stage,
            captures: &captures,
            vars: &vars,
        };
        let template = Template::compile(source).unwrap();
        let mut facts = Facts::default();
        let problems = check(&template, "t", position, &scope, &mut facts);
        (problems, facts)
    }

    fn problems(source: &str, position: Position) -> Vec<String> {
        run(source, position, Stage::Operation(OpKind::Poll))
            .0
            .into_iter()
            .map(|p| p.message)
            .collect()
    }

    fn dispatch_problems(source: &str, position: Position) -> Vec<String> {
        run(source, position, Stage::Operation(OpKind::Dispatch))
            .0
            .into_iter()
            .map(|p| p.message)
            .collect()
    }

    #[test]
    fn the_documented_variables_and_helpers_are_accepted() {
        let sources = [
            "{{input.jobId}}{{input.kind}}{{input.instanceType}}{{input.cloudProvider}}{{input.image}}",
            "{{input.job.spec.items.[0]}}{{input.labels.team}}{{run.dispatchId}}{{run.attempt}}",
            "{{capture.uid}}{{vars.namespace}}{{vars.obj.a}}{{pool.name}}{{input.kind}}",
            "{{json input.job}}{{base64 input.jobId}}{{urlencode input.kind}}{{lower input.kind}}",
            "{{upper input.kind}}{{dns1123 run.dispatchId}}{{default input.labels.team \"none\"}}",
            "{{#if input.labels.team}}{{input.labels.team}}{{else}}x{{/if}}",
            "{{#unless input.kind}}none{{/unless}}{{lower (default input.kind \"A\")}}",
            "{{#if input.kind}}a{{else if input.image}}b{{/if}} \\{{literal}}",
        ];
        for source in sources {
            // Captures exist only after dispatch; the job's values only in dispatch.
            let op = if source.contains("capture.") {
                OpKind::Poll
            } else {
                OpKind::Dispatch
            };
            let (found, _) = run(source, Position::BodyTemplate, Stage::Operation(op));
            assert_eq!(found, Vec::new(), "{source}");
        }
    }

    #[test]
    fn unknown_variables_are_refused_with_the_list_of_variables() {
        for source in [
            "{{input.foo}}",
            "{{job.id}}",
            "{{secrets.x}}",
            "{{input}}",
            "{{run.id}}",
            "{{vars.missing}}",
            "{{capture.other}}",
            "{{#if nothing}}x{{/if}}",
            "{{lower input.nope}}",
            "{{input.jobId.length}}",
        ] {
            let found = problems(source, Position::BodyTemplate);
            assert_eq!(found.len(), 1, "{source}: {found:?}");
        }
        let message = &problems("{{input.foo}}", Position::Path)[0];
        assert!(message.contains("input.jobId, input.kind"), "{message}");
    }

    #[test]
    fn job_values_are_refused_outside_dispatch_instead_of_rendering_empty() {
        for source in [
            "{{input.job}}",
            "{{json input.job}}",
            "{{input.job.token}}",
            "{{input.instanceType}}",
            "{{input.cloudProvider}}",
            "{{input.image}}",
        ] {
            for op in [OpKind::Poll, OpKind::Release, OpKind::FailureLog] {
                let (found, _) = run(source, Position::BodyTemplate, Stage::Operation(op));
                assert_eq!(found.len(), 1, "{source} in {op:?}: {found:?}");
                assert!(
                    found[0].message.contains("exists only in dispatch"),
                    "{}",
                    found[0].message
                );
            }
            let (found, _) = run(
                source,
                Position::BodyLeaf,
                Stage::Operation(OpKind::Dispatch),
            );
            assert!(found.is_empty(), "{source} in dispatch: {found:?}");
        }
        // What the run record itself holds stays available everywhere.
        let (found, _) = run(
            "{{input.jobId}}{{input.kind}}{{input.labels.team}}",
            Position::Path,
            Stage::Operation(OpKind::Release),
        );
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn capture_is_refused_in_dispatch_and_recorded_in_poll() {
        let (found, _) = run(
            "{{capture.uid}}",
            Position::Path,
            Stage::Operation(OpKind::Dispatch),
        );
        assert_eq!(found.len(), 1);
        assert!(found[0].message.contains("not available in dispatch"));
        let (found, facts) = run(
            "{{capture.uid}}",
            Position::Path,
            Stage::Operation(OpKind::Release),
        );
        assert!(found.is_empty());
        assert!(facts.uses_capture);
    }

    #[test]
    fn secret_is_allowed_only_in_headers_and_its_key_is_collected() {
        let (found, facts) = run(
            "Bearer {{secret \"API_TOKEN\"}}",
            Position::Header,
            Stage::Operation(OpKind::Poll),
        );
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(facts.secret_keys, ["API_TOKEN".to_owned()].into());
        for position in [
            Position::Path,
            Position::Query,
            Position::BodyLeaf,
            Position::BodyTemplate,
        ] {
            let found = problems("{{secret \"API_TOKEN\"}}", position);
            assert_eq!(found.len(), 1);
            assert!(found[0].contains("only allowed in header values"));
        }
        assert_eq!(
            problems("{{secret input.jobId}}", Position::Header).len(),
            1
        );
        assert_eq!(
            problems("{{secret \"bad key!\"}}", Position::Header).len(),
            1
        );
    }

    #[test]
    fn triple_braces_are_html_expressions_and_are_refused() {
        let template = Template::compile("{{{input.jobId}}}").unwrap();
        assert!(matches!(
            template.elements.as_slice(),
            [TemplateElement::HtmlExpression(_)]
        ));
        let found = problems("a{{{input.jobId}}}b", Position::BodyTemplate);
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("escaping is by position"));
    }

    #[test]
    fn loops_scope_changes_partials_decorators_and_local_variables_are_refused() {
        for source in [
            "{{#each input.job.items}}x{{/each}}",
            "{{#with input.job}}x{{/with}}",
            "{{lookup input.job \"a\"}}",
            "{{> partial}}",
            "{{#> layout}}x{{/layout}}",
            "{{*inline \"x\"}}",
            "{{@index}}",
            "{{../input.jobId}}",
            "{{@root.input.jobId}}",
            "{{this}}",
            "{{#if input.kind as |x|}}a{{/if}}",
            "{{{{raw}}}}{{x}}{{{{/raw}}}}",
            "{{json}}",
            "{{lower input.kind input.image}}",
            "{{#lower input.kind}}x{{/lower}}",
            "{{if input.kind}}",
            "{{(input.kind)}}",
            "{{eq input.kind \"a\"}}",
        ] {
            let found = problems(source, Position::BodyTemplate);
            assert!(!found.is_empty(), "{source} was accepted");
        }
    }

    #[test]
    fn objects_rendered_as_text_are_refused_unless_they_are_a_whole_body_leaf() {
        assert_eq!(
            dispatch_problems("{{input.job}}", Position::BodyLeaf),
            Vec::<String>::new()
        );
        assert_eq!(
            dispatch_problems("{{vars.obj}}", Position::BodyLeaf),
            Vec::<String>::new()
        );
        assert_eq!(
            dispatch_problems("x{{input.job}}", Position::BodyLeaf).len(),
            1
        );
        assert_eq!(
            dispatch_problems("{{input.labels}}", Position::BodyTemplate).len(),
            1
        );
        assert_eq!(dispatch_problems("{{vars.obj}}", Position::Header).len(), 1);
        assert_eq!(
            dispatch_problems("{{json input.job}}", Position::BodyTemplate).len(),
            0
        );
        assert_eq!(
            dispatch_problems("{{#if input.job}}y{{/if}}", Position::Path).len(),
            0
        );
    }

    #[test]
    fn poll_many_requests_may_only_use_vars_and_pool() {
        let (found, _) = run(
            "{{vars.namespace}}/{{pool.name}}",
            Position::Path,
            Stage::PollMany,
        );
        assert!(found.is_empty());
        let (found, _) = run("{{input.jobId}}", Position::Path, Stage::PollMany);
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn a_plain_variable_is_recognised_only_when_it_is_the_whole_template() {
        let plain = |s: &str| plain_variable(&Template::compile(s).unwrap());
        assert_eq!(
            plain("{{input.job}}"),
            Some(vec!["input".to_owned(), "job".to_owned()])
        );
        assert_eq!(
            plain("{{~ run.attempt ~}}"),
            Some(vec!["run".to_owned(), "attempt".to_owned()])
        );
        assert_eq!(plain(" {{input.job}}"), None);
        assert_eq!(plain("{{json input.job}}"), None);
        assert_eq!(plain("{{json}}"), None);
    }
}
