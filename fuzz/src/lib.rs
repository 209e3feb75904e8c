//! What the fuzz targets share: hostile values built from the fuzz data, and the fixed manifests
//! the render and mapping targets drive.
//!
//! The targets use cattery's public API only. Every value the fuzzer controls goes through
//! [`hostile_string`] or [`json_value`], which mix free-form text with fragments known to break
//! naive code (template syntax, line breaks, path tricks, percent escapes, long runs), so that
//! libFuzzer does not have to discover them byte by byte.

use arbitrary::{Result, Unstructured};
use cattery::domain::secrets::SecretBundle;
use cattery::manifest::{Defaults, Manifest};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Text fragments that break naive escaping, confinement or parsing.
const FRAGMENTS: &[&str] = &[
    "{{",
    "}}",
    "{{{",
    "}}}",
    "{{input.job}}",
    "{{input.jobId}}",
    "{{secret \"K\"}}",
    "{{#if x}}",
    "{{/if}}",
    "\\{{",
    "\r\n",
    "\n",
    "\r",
    "\0",
    "\t",
    "\u{7f}",
    "\u{85}",
    "\u{2028}",
    "\"",
    "'",
    "\\",
    "\\u0000",
    "../",
    "..",
    ".",
    "/",
    "//",
    "%2e%2e",
    "%2E",
    "%2f",
    "%0d%0a",
    "%00",
    "%",
    "?",
    "#",
    "&",
    "=",
    "@",
    ":",
    "://",
    "https://evil.example/",
    "user:pass@",
    " ",
    "+",
    ";",
    "é",
    "ß",
    "İ",
    "\u{202e}",
    "\u{feff}",
    "\u{fffd}",
    "\u{1f600}",
    "${x}",
    "`",
    "[0]",
    "*",
    "|",
    "&&",
    "||",
    "null",
    "true",
    "-1",
    "1e999",
    "-0",
    "{}",
    "[]",
    "{\"a\":",
    "]",
    "<script>",
    "Content-Type",
    "application/json",
    "Bearer x",
    "ghs_0123456789abcdefghij",
    "A",
    "a",
    "-",
    "_",
    "0",
    "True",
    "Complete",
    "Failed",
    "done",
    "succeeded",
    "evicted",
    "cancelled",
    "in_progress",
    " 4.0 ",
    "0x1f",
    "2026-01-01T00:00:00Z",
    "inactivity-timeout",
    "agent",
];

/// Object keys of the jobs the fixed manifests read.
pub const JOB_KEYS: &[&str] = &[
    "steps",
    "image",
    "instanceType",
    "cloudProvider",
    "command",
    "env",
    "items",
    "id",
    "name",
    "team",
    "count",
    "args",
    "a",
];

/// Object keys of the scheduler answers the fixed manifests map.
pub const ANSWER_KEYS: &[&str] = &[
    "status",
    "conditions",
    "type",
    "active",
    "phase",
    "state",
    "items",
    "name",
    "id",
    "n",
    "msg",
    "metadata",
    "uid",
    "spec",
    "nested",
    "output",
    "url",
    "branch",
    "progress",
    "completed",
    "inProgress",
    "total",
    "result",
    "error",
    "failureCause",
    "reason",
    "detail",
    "ts",
    "heartbeatAt",
    "tags",
    "ratio",
    "delta",
    "spans",
    "one",
    "a",
    "capabilities",
    "followUps",
    "callMetrics",
    "validationReport",
    "reproductionReport",
    "sliceReviews",
    "toolServers",
    "coldStart",
    "prUrl",
    "summary",
    "usage",
    "inputTokens",
    "outputTokens",
    "pushed",
    "custom",
    "job_state",
    "jobs",
    "exit_code",
    "State",
    "ExitCode",
    "Status",
    "ClientStatus",
    "DispatchedJobID",
    "job_id",
];

/// A string that is free-form text, a run of hostile fragments, a mix of both, or a long run
/// (past the path cap of 8 KiB, for example). The text never holds [`SECRET_MARK`], nor its
/// escaped spelling `\u2603`.
///
/// # Errors
/// When the fuzz data is exhausted in a way `arbitrary` reports.
pub fn hostile_string(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(match u.int_in_range(0u8..=31)? {
        0..=7 => u.arbitrary::<String>()?,
        8..=20 => {
            let mut text = String::new();
            for _ in 0..u.int_in_range(0u8..=12)? {
                if u.ratio(1u8, 4)? {
                    text.push_str(&u.arbitrary::<String>()?);
                } else {
                    text.push_str(u.choose(FRAGMENTS)?);
                }
            }
            text
        }
        21 => {
            let unit = u.choose(FRAGMENTS)?;
            unit.repeat(usize::from(u.int_in_range(1u16..=4_096)?))
        }
        _ => {
            // Text in the shape of an identifier, which the templates often expect.
            let len = u.int_in_range(0u8..=80)?;
            let mut text = String::with_capacity(usize::from(len));
            for _ in 0..len {
                text.push(char::from(*u.choose(b"abcxyz0189.-_ABZ")?));
            }
            text
        }
    }
    .replace(SECRET_MARK, "?")
    // Nor its JSON-escaped spelling, which the oracle also looks for in rendered bodies.
    .replace("\\u2603", "?")
    .replace("\\U2603", "?"))
}

/// A JSON scalar: null, a boolean, an integer, a float, or a hostile string.
///
/// # Errors
/// When the fuzz data is exhausted in a way `arbitrary` reports.
pub fn json_leaf(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(match u.int_in_range(0u8..=5)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<i64>()?),
        3 => Value::from(u.arbitrary::<u64>()?),
        4 => serde_json::Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
        _ => Value::String(hostile_string(u)?),
    })
}

/// A JSON value at most `depth` levels deep, with at most 6 members per level; object keys are
/// taken from `keys` or are hostile strings.
///
/// # Errors
/// When the fuzz data is exhausted in a way `arbitrary` reports.
pub fn json_value(u: &mut Unstructured<'_>, depth: u8, keys: &[&str]) -> Result<Value> {
    if depth == 0 {
        return json_leaf(u);
    }
    Ok(match u.int_in_range(0u8..=3)? {
        0 | 1 => json_leaf(u)?,
        2 => {
            let mut items = Vec::new();
            for _ in 0..u.int_in_range(0u8..=6)? {
                items.push(json_value(u, depth - 1, keys)?);
            }
            Value::Array(items)
        }
        _ => Value::Object(json_object(u, depth - 1, keys)?),
    })
}

/// A JSON object whose keys are taken from `keys` or are hostile strings.
///
/// # Errors
/// When the fuzz data is exhausted in a way `arbitrary` reports.
pub fn json_object(
    u: &mut Unstructured<'_>,
    depth: u8,
    keys: &[&str],
) -> Result<Map<String, Value>> {
    let mut map = Map::new();
    for _ in 0..u.int_in_range(0u8..=6)? {
        let key = if u.ratio(1u8, 2)? {
            (*u.choose(keys)?).to_owned()
        } else {
            hostile_string(u)?
        };
        map.insert(key, json_value(u, depth, keys)?);
    }
    Ok(map)
}

/// Compiles a manifest the targets rely on; a failure is a broken fuzz setup, reported at once.
pub fn compile(name: &str, text: &str) -> Manifest {
    match Manifest::parse(text, &Defaults::default()) {
        Ok(manifest) => manifest,
        Err(error) => panic!(
            "fixed manifest {name} does not validate: {:?}",
            error.problems
        ),
    }
}

/// A character that only secret values hold: [`hostile_string`] never yields it, and no helper
/// or escaping makes it from other text, so finding it in a URL or a body is a leak.
pub const SECRET_MARK: char = '\u{2603}';

/// The value of every secret the fixed manifests name (it may sit in headers only).
pub const SECRET_VALUE: &str = "s3cret-\u{2603}-value";

/// A bundle holding [`SECRET_VALUE`] under every key `manifest` references.
pub fn secrets_for(manifest: &Manifest) -> SecretBundle {
    SecretBundle::from_map(
        manifest
            .secret_keys()
            .iter()
            .map(|key| (key.clone(), SECRET_VALUE.to_owned()))
            .collect::<BTreeMap<_, _>>(),
    )
}

/// Renders in every position and calls every helper and variable: path segments, a repeated
/// query parameter, headers with `secret`, a body tree with whole-value leaves, conditionals.
pub const RENDER_TREE: &str = include_str!("../seeds/manifest_parse/render-tree.yaml");

/// A JSON `bodyTemplate` (values escaped for the inside of JSON strings, `json` raw), a PUT
/// body template, and a plain-text `bodyTemplate` with its own content type.
pub const RENDER_TEMPLATE: &str = include_str!("../seeds/manifest_parse/render-template.yaml");

/// Basic and custom-header auth, an empty base path and a path that is only a variable.
pub const RENDER_AUTH: &str = include_str!("../seeds/manifest_parse/render-auth.yaml");

/// Cat-Factory's website example A (CATFACTORY.md §9.1): its own template variables, a JSON body
/// template with `{{input.job}}` outside quotes.
pub const RENDER_CAT_FACTORY: &str = include_str!("../seeds/manifest_parse/cat-factory-a.yaml");

/// Every manifest `template_render` drives: the three above, Cat-Factory's, and every shipped one.
pub const RENDER_MANIFESTS: &[(&str, &str)] = &[
    ("render-tree", RENDER_TREE),
    ("render-template", RENDER_TEMPLATE),
    ("render-auth", RENDER_AUTH),
    ("render-cat-factory", RENDER_CAT_FACTORY),
    ("local", include_str!("../../manifests/local.yaml")),
    ("slurm", include_str!("../../manifests/slurm.yaml")),
    ("podman", include_str!("../../manifests/podman.yaml")),
    (
        "kubernetes-job",
        include_str!("../../manifests/kubernetes-job.yaml"),
    ),
    ("nomad", include_str!("../../manifests/nomad.yaml")),
    ("harness", include_str!("../../manifests/harness.yaml")),
];

/// A poll map and dispatch captures that use every mapped field and most JMESPath constructs:
/// filters, projections, slices, flattening, pipes, `||`/`&&`, literals and functions over
/// values of the wrong type.
pub const MAP_NATIVE: &str = include_str!("../seeds/manifest_parse/map-native.yaml");

/// Cat-Factory's coercion of answers (`coerce: cat-factory`): JavaScript number reading,
/// failure causes, the result envelope and the telemetry channels.
pub const MAP_CAT_FACTORY: &str = include_str!("../seeds/manifest_parse/map-cat-factory.yaml");

/// Every manifest `jmespath_map` drives: the two above, and every shipped one.
pub const MAP_MANIFESTS: &[(&str, &str)] = &[
    ("map-native", MAP_NATIVE),
    ("map-cat-factory", MAP_CAT_FACTORY),
    ("render-cat-factory", RENDER_CAT_FACTORY),
    ("slurm", include_str!("../../manifests/slurm.yaml")),
    ("podman", include_str!("../../manifests/podman.yaml")),
    (
        "kubernetes-job",
        include_str!("../../manifests/kubernetes-job.yaml"),
    ),
    ("nomad", include_str!("../../manifests/nomad.yaml")),
    ("harness", include_str!("../../manifests/harness.yaml")),
];
