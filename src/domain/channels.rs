//! Drain-on-read channels: every batch a poll reports is kept, in order, within a bound per run.
//!
//! The executor harness hands out `spans`, `followUps` and `callMetrics` in batches: each read of
//! a job returns what accumulated since the previous read, then forgets it. cattery polls the
//! scheduler on its own schedule, so keeping only the latest batch (what every other mapped
//! channel does) would lose every batch but the last between two reads of the facade. Instead a
//! drain channel's value in the run's `fields` is the list of the items its batches carried, the
//! newest last, and [`SEEN_KEY`] counts how many items each channel has carried in all, so that
//! a reader can tell which items are new to it (see `routes::facade`). The list is bounded: at
//! most [`MAX_KEPT_ITEMS`] items and about [`MAX_KEPT_BYTES`] bytes of JSON per channel, the
//! oldest dropped first (the newest item is always kept).

use serde_json::{Map, Value};

/// The channel names whose values arrive as drained batches (the harness's drain-on-read
/// channels, CATFACTORY.md §6.4).
pub const DRAIN_CHANNELS: &[&str] = &["spans", "followUps", "callMetrics"];

/// The member of `fields` that counts, per drain channel, the items carried in all. Its name
/// holds a dot, which no manifest field name may, so it never collides with a mapped channel.
pub const SEEN_KEY: &str = "cattery.drained";

/// Most items kept per drain channel of one run.
pub const MAX_KEPT_ITEMS: usize = 1000;

/// Most bytes of JSON kept per drain channel of one run (the newest item is kept whatever its
/// size).
pub const MAX_KEPT_BYTES: usize = 1024 * 1024;

/// True for a drain channel's name.
pub fn is_drain_channel(name: &str) -> bool {
    DRAIN_CHANNELS.contains(&name)
}

/// Merges the channels one poll observed into a run's `fields`: a drain channel's batch is
/// appended to what is kept (an empty batch adds nothing), every other channel keeps the
/// latest value.
pub fn merge(fields: &mut Map<String, Value>, observed: &Map<String, Value>) {
    for (name, value) in observed {
        if !is_drain_channel(name) {
            fields.insert(name.clone(), value.clone());
            continue;
        }
        let batch: Vec<Value> = match value {
            Value::Array(items) => items.clone(),
            Value::Null => Vec::new(),
            other => vec![other.clone()],
        };
        if batch.is_empty() {
            continue;
        }
        let added = u64::try_from(batch.len()).unwrap_or(u64::MAX);
        let mut kept = match fields.remove(name) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        kept.extend(batch);
        bound(&mut kept);
        fields.insert(name.clone(), Value::Array(kept));
        let seen = fields
            .entry(SEEN_KEY)
            .or_insert_with(|| Value::Object(Map::new()));
        if !seen.is_object() {
            *seen = Value::Object(Map::new());
        }
        if let Value::Object(counts) = seen {
            let total = counts
                .get(name)
                .and_then(Value::as_u64)
                .unwrap_or(0)
                .saturating_add(added);
            counts.insert(name.clone(), Value::from(total));
        }
    }
}

/// Drops the oldest items until at most [`MAX_KEPT_ITEMS`] and [`MAX_KEPT_BYTES`] remain (the
/// newest item stays).
fn bound(kept: &mut Vec<Value>) {
    if kept.len() > MAX_KEPT_ITEMS {
        kept.drain(..kept.len() - MAX_KEPT_ITEMS);
    }
    let sizes: Vec<usize> = kept.iter().map(json_len).collect();
    let mut total: usize = sizes.iter().sum();
    let mut drop = 0;
    while total > MAX_KEPT_BYTES && drop + 1 < kept.len() {
        total -= sizes[drop];
        drop += 1;
    }
    kept.drain(..drop);
}

/// The length of a value as compact JSON.
pub fn json_len(value: &Value) -> usize {
    serde_json::to_vec(value).map_or(0, |bytes| bytes.len())
}

/// How many items a drain channel has carried in all, according to `fields`.
pub fn seen(fields: &Map<String, Value>, name: &str) -> u64 {
    fields
        .get(SEEN_KEY)
        .and_then(|counts| counts.get(name))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

/// `fields` without cattery's own bookkeeping, as views show them.
pub fn visible(fields: &Map<String, Value>) -> Map<String, Value> {
    let mut shown = fields.clone();
    shown.remove(SEEN_KEY);
    shown
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn observed(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn drain_batches_accumulate_in_order_and_other_channels_keep_the_latest_value() {
        let mut fields = Map::new();
        merge(
            &mut fields,
            &observed(json!({"followUps": [{"title": "a"}], "phase": "clone"})),
        );
        merge(
            &mut fields,
            &observed(json!({"followUps": [{"title": "b"}, {"title": "c"}], "phase": "agent"})),
        );
        merge(&mut fields, &observed(json!({"followUps": []})));
        assert_eq!(
            fields["followUps"],
            json!([{"title": "a"}, {"title": "b"}, {"title": "c"}])
        );
        assert_eq!(fields["phase"], "agent");
        assert_eq!(seen(&fields, "followUps"), 3);
        assert_eq!(seen(&fields, "callMetrics"), 0);
        assert_eq!(
            Value::Object(visible(&fields)),
            json!({"followUps": [{"title": "a"}, {"title": "b"}, {"title": "c"}], "phase": "agent"})
        );
    }

    #[test]
    fn the_kept_items_are_bounded_by_count_and_size_oldest_first() {
        let mut fields = Map::new();
        let many: Vec<Value> = (0..MAX_KEPT_ITEMS + 5).map(|i| json!(i)).collect();
        merge(&mut fields, &observed(json!({ "spans": many })));
        let kept = fields["spans"].as_array().unwrap();
        assert_eq!(kept.len(), MAX_KEPT_ITEMS);
        assert_eq!(kept[0], json!(5));
        assert_eq!(seen(&fields, "spans"), (MAX_KEPT_ITEMS + 5) as u64);

        let big = "x".repeat(MAX_KEPT_BYTES / 2);
        let mut fields = Map::new();
        for i in 0..3 {
            merge(
                &mut fields,
                &observed(json!({"callMetrics": [{"seq": i, "promptText": big}]})),
            );
        }
        let kept = fields["callMetrics"].as_array().unwrap();
        assert_eq!(kept.len(), 1, "two halves and a bit do not fit");
        assert_eq!(kept[0]["seq"], 2);
        let huge = "y".repeat(MAX_KEPT_BYTES * 2);
        merge(&mut fields, &observed(json!({"callMetrics": [huge]})));
        assert_eq!(fields["callMetrics"].as_array().unwrap().len(), 1);
        assert_eq!(seen(&fields, "callMetrics"), 4);
    }
}
