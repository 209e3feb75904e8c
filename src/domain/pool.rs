//! The pool record: a registered manifest with its sealed secret bundle, as persisted.

use super::ids::PoolName;
use super::run::Millis;

/// One registered pool, as persisted.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolRecord {
    /// The pool's name.
    pub name: PoolName,
    /// Starts at 1, +1 on every manifest replacement.
    pub revision: i64,
    /// SHA-256 (hex) of the canonical manifest JSON.
    pub digest: String,
    /// `cattery/v1` or `cat-factory`.
    pub format: String,
    /// The manifest as registered, as JSON text (it holds no secret values: those live in the bundle).
    pub manifest: String,
    /// The secret bundle, sealed; the store never sees it in clear.
    pub secrets_sealed: Vec<u8>,
    /// The keys of the secret bundle (names only).
    pub secret_keys: Vec<String>,
    /// Registration warnings, as JSON text (`[{"code","message"}]`).
    pub warnings: String,
    /// First registration.
    pub created_at: Millis,
    /// Last change of manifest or secrets.
    pub updated_at: Millis,
}
