//! Classifies a scheduler's status word into a canonical state: statusMap first, then built-ins.

use crate::domain::state::MappedState;

/// Built-in words for `done` (compared trimmed and lower-cased).
pub(crate) const DONE_WORDS: &[&str] = &[
    "done",
    "complete",
    "completed",
    "succeeded",
    "success",
    "finished",
];

/// Built-in words for `failed`.
pub(crate) const FAILED_WORDS: &[&str] = &[
    "failed",
    "failure",
    "error",
    "errored",
    "aborted",
    "killed",
    "timeout",
    "timedout",
    "timed_out",
    "timed-out",
    "deadlineexceeded",
    "deadline_exceeded",
];

/// Built-in words for `cancelled`.
pub(crate) const CANCELLED_WORDS: &[&str] = &["cancelled", "canceled"];

/// Built-in words for `lost` (the job was evicted or its node went away). They are also
/// Cat-Factory's eviction vocabulary (CATFACTORY.md §1.8): the facade answers a lost run with
/// one of them, and a Cat-Factory manifest's eviction words map onto them.
pub(crate) const LOST_WORDS: &[&str] = &[
    "evicted",
    "eviction",
    "preempted",
    "preemption",
    "lost",
    "nodelost",
    "node_lost",
    "node-lost",
    "nodefailure",
    "node_failure",
    "oomkilled",
    "oom_killed",
    "oom-killed",
];

/// The outcome of classifying one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Classified {
    /// The canonical state.
    pub(crate) state: MappedState,
    /// True when nothing recognised the word (it then reads as running).
    pub(crate) unmapped: bool,
}

/// Classifies a non-blank status word.
///
/// Order: the statusMap exactly, the statusMap trimmed and case-insensitively, a canonical
/// state name, the built-in vocabulary; anything else is `running` and flagged unmapped.
pub(crate) fn classify(word: &str, status_map: &[(String, MappedState)]) -> Classified {
    let found = |state| Classified {
        state,
        unmapped: false,
    };
    if let Some((_, state)) = status_map.iter().find(|(from, _)| from == word) {
        return found(*state);
    }
    let normalised = word.trim().to_lowercase();
    if let Some((_, state)) = status_map
        .iter()
        .find(|(from, _)| from.trim().to_lowercase() == normalised)
    {
        return found(*state);
    }
    if let Some(state) = MappedState::parse(&normalised) {
        return found(state);
    }
    let builtin = [
        (DONE_WORDS, MappedState::Done),
        (FAILED_WORDS, MappedState::Failed),
        (CANCELLED_WORDS, MappedState::Cancelled),
        (LOST_WORDS, MappedState::Lost),
    ];
    for (words, state) in builtin {
        if words.contains(&normalised.as_str()) {
            return found(state);
        }
    }
    Classified {
        state: MappedState::Running,
        unmapped: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, MappedState)]) -> Vec<(String, MappedState)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn words_are_classified_in_the_documented_order() {
        let status_map = map(&[
            ("Complete", MappedState::Done),
            ("complete", MappedState::Failed),
            ("Queued", MappedState::Pending),
            ("failed", MappedState::Running),
        ]);
        let table: &[(&str, MappedState, bool)] = &[
            // exact statusMap entry wins over the case-insensitive one
            ("Complete", MappedState::Done, false),
            ("complete", MappedState::Failed, false),
            // trimmed and case-insensitive
            ("  QUEUED ", MappedState::Pending, false),
            // the operator's map beats the built-ins
            ("FAILED", MappedState::Running, false),
            // canonical names
            ("Cancelled", MappedState::Cancelled, false),
            ("pending", MappedState::Pending, false),
            ("Lost", MappedState::Lost, false),
            // built-in vocabulary
            ("Succeeded", MappedState::Done, false),
            ("finished", MappedState::Done, false),
            ("Error", MappedState::Failed, false),
            ("DeadlineExceeded", MappedState::Failed, false),
            ("timed-out", MappedState::Failed, false),
            ("canceled", MappedState::Cancelled, false),
            ("OOMKilled", MappedState::Lost, false),
            ("Preempted", MappedState::Lost, false),
            ("node_lost", MappedState::Lost, false),
            // unknown words read as running and are flagged
            ("wibble", MappedState::Running, true),
            ("provisioning", MappedState::Running, true),
        ];
        for (word, state, unmapped) in table {
            let got = classify(word, &status_map);
            assert_eq!(got.state, *state, "word {word:?}");
            assert_eq!(got.unmapped, *unmapped, "word {word:?}");
        }
    }
}
