//! Validated identifiers: pool names, job ids and secret keys, parsed once at the edge.

use std::fmt;

/// Why an identifier was refused; the message says what the valid form is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidId(pub String);

fn check(
    value: &str,
    max: usize,
    first: impl Fn(char) -> bool,
    rest: impl Fn(char) -> bool,
) -> bool {
    let mut chars = value.chars();
    match chars.next() {
        Some(c) if first(c) => {}
        _ => return false,
    }
    value.len() <= max && chars.all(rest)
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// A pool name: `^[a-z0-9][a-z0-9-]{0,62}$`.
    PoolName
);
id_type!(
    /// A caller's job id: `^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$`.
    JobId
);
id_type!(
    /// A key of a pool's secret bundle: `^[A-Za-z0-9_.-]{1,64}$`.
    SecretKey
);

impl PoolName {
    /// Parses a pool name.
    ///
    /// # Errors
    /// When the name does not match `^[a-z0-9][a-z0-9-]{0,62}$`.
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        let lower_digit = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        if check(value, 63, lower_digit, |c| lower_digit(c) || c == '-') {
            Ok(Self(value.to_owned()))
        } else {
            Err(InvalidId(
                "a pool name is 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit"
                    .to_owned(),
            ))
        }
    }
}

impl JobId {
    /// Parses a job id.
    ///
    /// # Errors
    /// When the id does not match `^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$`.
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        let alnum = |c: char| c.is_ascii_alphanumeric();
        if check(value, 200, alnum, |c| {
            alnum(c) || matches!(c, '.' | '_' | '-')
        }) {
            Ok(Self(value.to_owned()))
        } else {
            Err(InvalidId(
                "a jobId is 1-200 characters of A-Z, a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
                    .to_owned(),
            ))
        }
    }
}

impl SecretKey {
    /// Parses a secret key.
    ///
    /// # Errors
    /// When the key does not match `^[A-Za-z0-9_.-]{1,64}$`.
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        if check(value, 64, ok, ok) {
            Ok(Self(value.to_owned()))
        } else {
            Err(InvalidId(
                "a secret key is 1-64 characters of A-Z, a-z, 0-9, '_', '.' and '-'".to_owned(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names_follow_the_documented_pattern() {
        assert!(PoolName::parse("k8s-prod").is_ok());
        assert!(PoolName::parse("0pool").is_ok());
        assert!(PoolName::parse(&"a".repeat(63)).is_ok());
        for bad in ["", "-pool", "Pool", "po_ol", "pool/x", &"a".repeat(64)] {
            assert!(PoolName::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn job_ids_follow_the_documented_pattern() {
        assert!(JobId::parse("exec-42-coder").is_ok());
        assert!(JobId::parse("A.b_c-9").is_ok());
        assert!(JobId::parse(&"x".repeat(200)).is_ok());
        for bad in [
            "",
            ".x",
            "a/b",
            "a b",
            "a\"b",
            "a\nb",
            &"x".repeat(201),
            "é",
        ] {
            assert!(JobId::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn secret_keys_follow_the_documented_pattern() {
        assert!(SecretKey::parse("K8S_TOKEN").is_ok());
        assert!(SecretKey::parse(".a-b").is_ok());
        for bad in ["", "a b", "a/b", &"k".repeat(65)] {
            assert!(SecretKey::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
