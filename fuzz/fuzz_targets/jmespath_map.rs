//! Fuzz target: the fuzz data is a scheduler's answer body, mapped by fixed manifests with rich
//! `poll.map`s and `dispatch.capture`s (`Operation::observe`, `Operation::capture`). Mapping
//! reads the answer or calls it unreadable, never panics, and is deterministic.
//!
//! The data is the raw body, or, when its first byte is a control character, the seed of a JSON
//! answer whose keys are the ones the manifests read (so that deep mappings are reached quickly).

#![no_main]

use arbitrary::Unstructured;
use cattery::manifest::{Manifest, ManifestFormat, MapError};
use cattery_fuzz::{ANSWER_KEYS, MAP_MANIFESTS, compile, json_object, json_value};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::sync::OnceLock;

fn manifests() -> &'static [(&'static str, Manifest)] {
    static MANIFESTS: OnceLock<Vec<(&'static str, Manifest)>> = OnceLock::new();
    MANIFESTS.get_or_init(|| {
        MAP_MANIFESTS
            .iter()
            .map(|(name, text)| (*name, compile(name, text)))
            .collect()
    })
}

/// The declared capture names of a manifest, from its source (a Cat-Factory manifest declares
/// `capabilities` through `response.dispatchCapabilitiesPath`).
fn declared_captures(manifest: &Manifest) -> Vec<String> {
    if manifest.format == ManifestFormat::CatFactory {
        return vec!["capabilities".to_owned()];
    }
    manifest.source()["dispatch"]["capture"]
        .as_object()
        .map(|map| map.keys().cloned().collect())
        .unwrap_or_default()
}

/// The answer body: `data` as it is, unless its first byte is a control character other than
/// whitespace; then the rest seeds a JSON answer built from [`ANSWER_KEYS`].
fn answer(data: &[u8]) -> Vec<u8> {
    match data.split_first() {
        Some((&mode, rest)) if mode < 0x20 && !matches!(mode, b'\t' | b'\n' | b'\r') => {
            let mut u = Unstructured::new(rest);
            let value = if mode % 2 == 0 {
                json_object(&mut u, 6, ANSWER_KEYS).map(Value::Object)
            } else {
                json_value(&mut u, 6, ANSWER_KEYS)
            };
            value.map_or_else(|_| rest.to_vec(), |v| v.to_string().into_bytes())
        }
        _ => data.to_vec(),
    }
}

fuzz_target!(|data: &[u8]| {
    let body = answer(data);
    let is_json = serde_json::from_slice::<Value>(&body).is_ok();
    for (name, manifest) in manifests() {
        let observed = manifest.poll.observe(&body);
        assert_eq!(
            observed,
            manifest.poll.observe(&body),
            "{name}: mapping the same answer twice differs"
        );
        match &observed {
            Ok(observation) => {
                assert!(is_json, "{name}: an answer that is not JSON was mapped");
                assert!(
                    !observation.unmapped || observation.scheduler_state.is_some(),
                    "{name}: unmapped without a status word"
                );
                assert!(
                    observation.fields.values().all(|v| !v.is_null()),
                    "{name}: a null channel was kept"
                );
            }
            Err(MapError::NotJson) => {
                assert!(!is_json, "{name}: a JSON answer was called not JSON")
            }
            Err(MapError::Expression { path, .. }) => {
                assert!(
                    is_json,
                    "{name}: an expression ran on an answer that is not JSON"
                );
                assert!(path.starts_with("poll.map"), "{name}: error path {path}");
            }
        }

        let declared = declared_captures(manifest);
        match manifest.dispatch.capture(&body) {
            Ok(captured) => {
                for (key, value) in &captured {
                    assert!(declared.contains(key), "{name}: undeclared capture {key}");
                    assert!(!value.is_null(), "{name}: a null capture {key} was kept");
                }
            }
            Err(MapError::NotJson) => {
                assert!(
                    !is_json,
                    "{name}: a JSON dispatch answer was called not JSON"
                )
            }
            Err(MapError::Expression { path, .. }) => {
                assert!(
                    is_json,
                    "{name}: a capture ran on an answer that is not JSON"
                );
                assert!(
                    path.starts_with("dispatch.capture"),
                    "{name}: error path {path}"
                );
            }
        }
    }
});
