//! Fuzz target: arbitrary bytes as manifest text (YAML or JSON, cattery/v1 or Cat-Factory), and
//! as a JSON document when they are JSON. Validation accepts or lists problems, never panics;
//! what it accepts reloads from its stored form (as a restart does) and renders or refuses a
//! benign run cleanly.

#![no_main]

use cattery::manifest::{Defaults, Manifest, ManifestError, OpKind, RenderInput};
use cattery_fuzz::secrets_for;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fn check(result: Result<Manifest, ManifestError>) {
    let manifest = match result {
        Ok(manifest) => manifest,
        Err(error) => {
            assert!(!error.problems.is_empty(), "a refusal without a problem");
            return;
        }
    };
    // The pool store keeps `source()` as JSON text and compiles it again on every start.
    let stored = manifest.source().to_string();
    let reloaded: Value = match serde_json::from_str(&stored) {
        Ok(doc) => doc,
        Err(error) => panic!("an accepted manifest is stored as text that is not JSON: {error}"),
    };
    match Manifest::from_value(&reloaded, &Defaults::default()) {
        Ok(again) => {
            assert_eq!(
                again.format, manifest.format,
                "the format changed on reload"
            );
            assert_eq!(
                again.source(),
                manifest.source(),
                "the source changed on reload"
            );
        }
        Err(error) => panic!("an accepted manifest does not reload: {:?}", error.problems),
    }

    let input = RenderInput {
        job_id: "job-1".to_owned(),
        kind: Some("agent".to_owned()),
        job: json!({"steps": 3}),
        labels: [("team".to_owned(), json!("core"))].into_iter().collect(),
        dispatch_id: "job-1".to_owned(),
        attempt: 1,
        captures: serde_json::Map::new(),
        pool_name: "pool-1".to_owned(),
    };
    let secrets = secrets_for(&manifest);
    for op in [
        OpKind::Dispatch,
        OpKind::Poll,
        OpKind::Release,
        OpKind::Lookup,
    ] {
        let _ = manifest.render(op, &input, &secrets);
    }
    let answer = br#"{"state": "done", "status": "Running", "id": "x", "items": [1, "a", null]}"#;
    let _ = manifest.poll.observe(answer);
    let _ = manifest.dispatch.capture(answer);
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check(Manifest::parse(&text, &Defaults::default()));
    if let Ok(doc) = serde_json::from_slice::<Value>(data) {
        check(Manifest::from_value(&doc, &Defaults::default()));
    }
});
