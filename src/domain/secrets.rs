//! A pool's decrypted secret bundle; it never prints its values.

use std::collections::BTreeMap;
use std::fmt;

/// A secret value whose `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    /// Wraps a value.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The clear value, for the one place that must use it (an outgoing header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// The secrets of one pool, by key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBundle(BTreeMap<String, SecretValue>);

impl SecretBundle {
    /// Builds a bundle from clear key/value pairs.
    pub fn from_map(map: BTreeMap<String, String>) -> Self {
        Self(
            map.into_iter()
                .map(|(k, v)| (k, SecretValue::new(v)))
                .collect(),
        )
    }

    /// The value of `key`, if the bundle has it.
    pub fn get(&self, key: &str) -> Option<&SecretValue> {
        self.0.get(key)
    }

    /// The keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// True when the bundle holds `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// Serialises the clear bundle for sealing; the caller seals it at once.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        let map: BTreeMap<&str, &str> = self
            .0
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        serde_json::to_vec(&map).unwrap_or_default()
    }

    /// Reads a bundle serialised by [`SecretBundle::to_json_bytes`].
    pub fn from_json_bytes(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice::<BTreeMap<String, String>>(bytes)
            .ok()
            .map(Self::from_map)
    }
}

impl fmt::Debug for SecretBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_values() {
        let bundle = SecretBundle::from_map(BTreeMap::from([(
            "TOKEN".to_owned(),
            "s3cr3t-value".to_owned(),
        )]));
        let shown = format!("{bundle:?} {:?}", bundle.get("TOKEN"));
        assert!(shown.contains("TOKEN"));
        assert!(!shown.contains("s3cr3t"));
    }

    #[test]
    fn bundles_round_trip_through_bytes() {
        let bundle = SecretBundle::from_map(BTreeMap::from([
            ("A".to_owned(), "1".to_owned()),
            ("B".to_owned(), "two\n\"quoted\"".to_owned()),
        ]));
        let back = SecretBundle::from_json_bytes(&bundle.to_json_bytes());
        assert_eq!(back, Some(bundle));
    }
}
