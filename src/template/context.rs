//! Builds the data a template sees (`input`, `run`, `capture`, `vars`, `pool`) from a render input.

use crate::domain::secrets::SecretBundle;
use crate::manifest::RenderInput;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// The context key that carries secrets while header values render.
///
/// No template can name it: the static check admits only the `input`, `run`, `capture`,
/// `vars` and `pool` roots, so only the `secret` helper reads it.
pub(crate) const SECRETS_KEY: &str = "__cattery_secrets";

/// Job fields that are also offered as `input.<name>`.
const JOB_HINTS: &[&str] = &["instanceType", "cloudProvider", "image"];

/// The template data for one call.
pub(crate) fn build(input: &RenderInput, vars: &Map<String, Value>) -> Value {
    let job = if input.job.is_null() {
        Value::Object(Map::new())
    } else {
        input.job.clone()
    };
    let mut input_obj = Map::new();
    input_obj.insert("jobId".into(), Value::String(input.job_id.clone()));
    input_obj.insert(
        "kind".into(),
        Value::String(input.kind.clone().unwrap_or_default()),
    );
    for hint in JOB_HINTS {
        let value = job
            .get(hint)
            .filter(|v| !v.is_null())
            .cloned()
            .unwrap_or_else(|| Value::String(String::new()));
        input_obj.insert((*hint).into(), value);
    }
    input_obj.insert("labels".into(), Value::Object(input.labels.clone()));
    input_obj.insert("job".into(), job);
    json!({
        "input": input_obj,
        "run": {"dispatchId": input.dispatch_id, "attempt": input.attempt},
        "capture": input.captures,
        "vars": vars,
        "pool": {"name": input.pool_name},
    })
}

/// A render input for the registration-time trial render: a job that has none of the
/// optional fields, and the value `"sample"` for every declared capture.
pub(crate) fn sample_input(captures: &BTreeSet<String>) -> RenderInput {
    RenderInput {
        job_id: "sample-job".into(),
        kind: None,
        job: Value::Object(Map::new()),
        labels: Map::new(),
        dispatch_id: "sample-job".into(),
        attempt: 1,
        captures: captures
            .iter()
            .map(|name| (name.clone(), Value::String("sample".into())))
            .collect(),
        pool_name: "sample-pool".into(),
    }
}

/// A secret bundle holding a placeholder for every key, for the trial render.
pub(crate) fn sample_secrets(keys: &BTreeSet<String>) -> SecretBundle {
    SecretBundle::from_map(
        keys.iter()
            .map(|k| (k.clone(), "sample-secret".to_owned()))
            .collect::<BTreeMap<_, _>>(),
    )
}

/// Follows a template path (`input.job.items.0.id`) through the data.
pub(crate) fn lookup<'a>(data: &'a Value, segments: &[String]) -> Option<&'a Value> {
    segments
        .iter()
        .try_fold(data, |current, seg| match current {
            Value::Object(map) => map.get(seg),
            Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_are_read_from_the_job_and_default_to_empty_strings() {
        let input = RenderInput {
            job_id: "j1".into(),
            kind: Some("agent".into()),
            job: json!({"instanceType": "c7g.xlarge", "image": null, "items": [{"id": 7}]}),
            dispatch_id: "j1".into(),
            attempt: 2,
            pool_name: "k8s".into(),
            ..RenderInput::default()
        };
        let data = build(&input, &Map::new());
        assert_eq!(data["input"]["instanceType"], "c7g.xlarge");
        assert_eq!(data["input"]["image"], "");
        assert_eq!(data["input"]["cloudProvider"], "");
        assert_eq!(data["input"]["kind"], "agent");
        assert_eq!(data["run"]["attempt"], 2);
        let path: Vec<String> = ["input", "job", "items", "0", "id"]
            .map(String::from)
            .to_vec();
        assert_eq!(lookup(&data, &path), Some(&json!(7)));
    }
}
