//! Encryption at rest: seals secret bundles and job bodies under a master key, bound to their row.
//!
//! This is the only module that names `orion`.
//!
//! It also holds [`DigestKey`], the HMAC key of the idempotency digests, itself stored sealed.
//!
//! # Envelope format (version 1)
//!
//! ```text
//! 0x01 ‖ key id (8 bytes) ‖ nonce (24 bytes) ‖ XChaCha20-Poly1305 ciphertext ‖ tag (16 bytes)
//! ```
//!
//! * The key id is the first 8 bytes of SHA-256 of the 32-byte master key, so a [`Sealer`] holding
//!   several keys knows which one opens an envelope without trying them all, and a
//!   rotation tool can tell which envelopes still use an old key.
//! * The nonce is random (orion's CSPRNG); 24 bytes make random nonces safe.
//! * The associated data is the *row binding* (for example `pool-secrets:<name>` or
//!   `run-job:<jobId>`): it is authenticated but not stored, so a ciphertext copied into another
//!   row does not open. [`binding`] builds these strings.
//!
//! # Keys
//!
//! Master keys are 32 random bytes, written base64 (standard alphabet; URL-safe and unpadded
//! forms are also read). [`Sealer::load_or_create`] takes them from `CATTERY_MASTER_KEY`, from a
//! configured key file, or from `<dataDir>/master.key`, which it creates (mode 0600) when nothing
//! else is configured. Several keys may be given (comma-separated in the variable, one per line in
//! a file; `#` starts a comment line): the first seals, all of them open. That is how a key is
//! rotated: put the new key first, keep the old one after it, and re-seal ([`Sealer::reseal`]).

use base64::Engine as _;
use orion::hazardous::aead::xchacha20poly1305::{Nonce, SecretKey, XChaCha20Poly1305};
use orion::hazardous::hash::sha2::sha256::Sha256;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The envelope version this build writes.
const VERSION: u8 = 0x01;
/// Length of a key id: the first bytes of SHA-256 of the key.
const KEY_ID_LEN: usize = 8;
/// Length of an XChaCha20 nonce.
const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag.
const TAG_LEN: usize = 16;
/// Everything in an envelope except the ciphertext itself.
const OVERHEAD: usize = 1 + KEY_ID_LEN + NONCE_LEN + TAG_LEN;
/// Length of a master key.
pub const MASTER_KEY_LEN: usize = 32;
/// File name of the key created in the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";

/// Why sealing, opening or loading keys failed. Messages never contain key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The envelope was sealed under a key this sealer does not hold.
    #[error(
        "the data was sealed with master key {key_id}, which is not configured; add that key (after the current one) to open it"
    )]
    UnknownKey {
        /// Hex id of the missing key (not secret: a hash prefix).
        key_id: String,
    },
    /// The envelope is damaged, was tampered with, or belongs to another row.
    #[error("sealed data is corrupt, was modified, or belongs to another record")]
    Corrupt,
    /// Sealing failed (the random source or the cipher refused).
    #[error("sealing failed")]
    Seal,
    /// A configured master key is not usable.
    #[error("the master key from {origin} is invalid: {reason}")]
    InvalidKey {
        /// Where the key came from (`CATTERY_MASTER_KEY` or a file path); never the key itself.
        origin: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The key file could not be read or created.
    #[error("cannot use master key file {path}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Row bindings used as associated data, so each kind of row has one spelling.
pub mod binding {
    /// The binding of a pool's secret bundle.
    pub fn pool_secrets(pool: &str) -> Vec<u8> {
        format!("pool-secrets:{pool}").into_bytes()
    }

    /// The binding of a run's job body.
    pub fn run_job(job_id: &str) -> Vec<u8> {
        format!("run-job:{job_id}").into_bytes()
    }

    /// The binding of a gateway-wide key kept in the database (see [`super::DigestKey`]).
    pub fn gateway_key(name: &str) -> Vec<u8> {
        format!("gateway-key:{name}").into_bytes()
    }
}

/// The key of the idempotency digests: HMAC-SHA256 over a submission, so that a stored digest
/// reveals nothing about a job to whoever reads the database without the master key.
///
/// The key is 32 random bytes kept in the database sealed under the master key (binding
/// [`binding::gateway_key`]), not derived from the master key itself: `cattery keys rotate`
/// re-seals it like any other sealed row, so the key and every digest made with it outlive
/// any number of master key rotations, and an old master key can be removed afterwards.
/// `Debug` shows nothing of the key.
pub struct DigestKey {
    key: orion::hazardous::mac::hmac::sha256::SecretKey,
}

impl fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DigestKey(..)")
    }
}

/// Length of the idempotency digest key.
const DIGEST_KEY_LEN: usize = 32;

impl DigestKey {
    /// The name the digest key is stored under.
    pub const NAME: &'static str = "idempotency";

    /// A new random key, and its envelope sealed under `sealer`'s sealing key for storage.
    ///
    /// # Errors
    /// [`CryptoError::Seal`] when the random source or the cipher fails.
    pub fn generate(sealer: &Sealer) -> Result<(DigestKey, Vec<u8>), CryptoError> {
        let mut raw = [0u8; DIGEST_KEY_LEN];
        orion::util::secure_rand_bytes(&mut raw).map_err(|_| CryptoError::Seal)?;
        let sealed = sealer.seal(&raw, &binding::gateway_key(Self::NAME));
        let key = Self::from_raw(&raw);
        raw.fill(0);
        Ok((key?, sealed?))
    }

    /// Opens a stored digest key.
    ///
    /// # Errors
    /// As [`Sealer::open`]; [`CryptoError::Corrupt`] when the content is not a key.
    pub fn open(sealer: &Sealer, envelope: &[u8]) -> Result<DigestKey, CryptoError> {
        let mut raw = sealer.open(envelope, &binding::gateway_key(Self::NAME))?;
        let key = if raw.len() == DIGEST_KEY_LEN {
            Self::from_raw(&raw)
        } else {
            Err(CryptoError::Corrupt)
        };
        raw.fill(0);
        key
    }

    fn from_raw(raw: &[u8]) -> Result<DigestKey, CryptoError> {
        orion::hazardous::mac::hmac::sha256::SecretKey::try_from(raw)
            .map(|key| DigestKey { key })
            .map_err(|_| CryptoError::Corrupt)
    }

    /// HMAC-SHA256 of `data` under this key, as lowercase hex.
    ///
    /// # Errors
    /// [`CryptoError::Seal`] when the MAC cannot be computed (orion refuses only inputs that
    /// cannot be in memory).
    pub fn mac_hex(&self, data: &[u8]) -> Result<String, CryptoError> {
        orion::hazardous::mac::hmac::sha256::HmacSha256::hmac(&self.key, data)
            .map(|tag| hex(tag.unprotected_as_ref()))
            .map_err(|_| CryptoError::Seal)
    }
}

/// One master key with its id.
struct MasterKey {
    id: [u8; KEY_ID_LEN],
    key: SecretKey,
}

/// Where [`Sealer::load_or_create`] found its keys (never the keys themselves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// From the `CATTERY_MASTER_KEY` environment variable.
    Environment,
    /// From the configured key file.
    KeyFile(PathBuf),
    /// From the existing `<dataDir>/master.key`.
    DataDir(PathBuf),
    /// A new key was generated and written to this path (mode 0600).
    Created(PathBuf),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Environment => f.write_str("CATTERY_MASTER_KEY"),
            KeySource::KeyFile(path) | KeySource::DataDir(path) => {
                write!(f, "{}", path.display())
            }
            KeySource::Created(path) => write!(f, "{} (created)", path.display()),
        }
    }
}

/// Seals and opens data under one or more master keys: the first key seals, every key opens.
///
/// Cheap to clone. `Debug` shows key ids only.
#[derive(Clone)]
pub struct Sealer {
    keys: Arc<Vec<MasterKey>>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("key_ids", &self.key_ids())
            .finish()
    }
}

impl Sealer {
    /// Builds a sealer from raw 32-byte keys; the first one seals.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKey`] when no key is given or one is not 32 bytes long.
    pub fn from_keys(keys: &[&[u8]], origin: &str) -> Result<Self, CryptoError> {
        if keys.is_empty() {
            return Err(invalid(origin, "no key was given"));
        }
        let keys = keys
            .iter()
            .map(|raw| {
                if raw.len() != MASTER_KEY_LEN {
                    return Err(invalid(
                        origin,
                        &format!(
                            "a key must be exactly {MASTER_KEY_LEN} bytes, this one has {}; generate one with `head -c 32 /dev/urandom | base64`",
                            raw.len()
                        ),
                    ));
                }
                let key = SecretKey::try_from(*raw)
                    .map_err(|_| invalid(origin, "the key was refused by the cipher"))?;
                Ok(MasterKey {
                    id: key_id(raw),
                    key,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            keys: Arc::new(keys),
        })
    }

    /// Builds a sealer from base64 keys (standard or URL-safe alphabet, padded or not); the first
    /// one seals.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKey`] when a key is not base64 or does not decode to 32 bytes.
    pub fn from_base64_keys(keys: &[&str]) -> Result<Self, CryptoError> {
        Self::from_base64_keys_of(keys, "the configuration")
    }

    fn from_base64_keys_of(keys: &[&str], origin: &str) -> Result<Self, CryptoError> {
        let raw = keys
            .iter()
            .map(|key| decode_base64(key.trim()).ok_or_else(|| {
                invalid(
                    origin,
                    "a key must be base64 of 32 random bytes; generate one with `head -c 32 /dev/urandom | base64`",
                )
            }))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&[u8]> = raw.iter().map(Vec::as_slice).collect();
        Self::from_keys(&refs, origin)
    }

    /// Loads the master keys: `env_key` (the value of `CATTERY_MASTER_KEY`, comma-separated keys)
    /// wins; else `key_file` (which must exist); else `<data_dir>/master.key`, created with a new
    /// random key (mode 0600) when it is missing.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKey`] for a malformed key, [`CryptoError::KeyFile`] when a file cannot
    /// be read or created, [`CryptoError::Seal`] when the random source fails.
    pub fn load_or_create(
        data_dir: &Path,
        env_key: Option<&str>,
        key_file: Option<&Path>,
    ) -> Result<(Sealer, KeySource), CryptoError> {
        if let Some(value) = env_key {
            let keys: Vec<&str> = value
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .collect();
            let sealer = Self::from_base64_keys_of(&keys, "CATTERY_MASTER_KEY")?;
            return Ok((sealer, KeySource::Environment));
        }
        if let Some(path) = key_file {
            let sealer = Self::read_key_file(path)?;
            return Ok((sealer, KeySource::KeyFile(path.to_owned())));
        }
        let path = data_dir.join(MASTER_KEY_FILE);
        if path.exists() {
            let sealer = Self::read_key_file(&path)?;
            return Ok((sealer, KeySource::DataDir(path)));
        }
        match Self::create_key_file(data_dir, &path) {
            Ok(sealer) => Ok((sealer, KeySource::Created(path))),
            // Another process created it between our check and our create: use theirs.
            Err(CryptoError::KeyFile { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                let sealer = Self::read_key_file(&path)?;
                Ok((sealer, KeySource::DataDir(path)))
            }
            Err(err) => Err(err),
        }
    }

    fn read_key_file(path: &Path) -> Result<Sealer, CryptoError> {
        let text = std::fs::read_to_string(path).map_err(|source| CryptoError::KeyFile {
            path: path.to_owned(),
            source,
        })?;
        warn_if_readable_by_others(path);
        let keys: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect();
        Self::from_base64_keys_of(&keys, &path.display().to_string())
    }

    fn create_key_file(data_dir: &Path, path: &Path) -> Result<Sealer, CryptoError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let file_error = |source| CryptoError::KeyFile {
            path: path.to_owned(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(file_error)?;
        let key = SecretKey::generate().map_err(|_| CryptoError::Seal)?;
        let raw: &[u8] = key.unprotected_as_ref();
        let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(file_error)?;
        file.write_all(encoded.as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_all())
            .map_err(file_error)?;
        Self::from_keys(&[raw], &path.display().to_string())
    }

    /// A sealer with one fixed, well-known key, for tests only.
    pub fn for_testing() -> Self {
        let raw = [7u8; MASTER_KEY_LEN];
        match Self::from_keys(&[&raw], "tests") {
            Ok(sealer) => sealer,
            // A 32-byte key is always accepted; this arm cannot run.
            Err(_) => Self {
                keys: Arc::new(Vec::new()),
            },
        }
    }

    /// Hex ids of the configured keys, the sealing key first (safe to log).
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| hex(&k.id)).collect()
    }

    /// Seals `plaintext`, bound to `aad` (the row binding, see [`binding`]).
    ///
    /// # Errors
    /// [`CryptoError::Seal`] when the random source or the cipher fails.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let master = self.keys.first().ok_or(CryptoError::Seal)?;
        let nonce = Nonce::generate().map_err(|_| CryptoError::Seal)?;
        let mut out = vec![0u8; OVERHEAD + plaintext.len()];
        let (header, body) = out.split_at_mut(1 + KEY_ID_LEN + NONCE_LEN);
        header[0] = VERSION;
        header[1..=KEY_ID_LEN].copy_from_slice(&master.id);
        header[1 + KEY_ID_LEN..].copy_from_slice(nonce.as_ref());
        XChaCha20Poly1305::seal(&master.key, &nonce, plaintext, Some(aad), body)
            .map_err(|_| CryptoError::Seal)?;
        Ok(out)
    }

    /// Opens an envelope made by [`Sealer::seal`] with the same `aad`.
    ///
    /// # Errors
    /// [`CryptoError::UnknownKey`] when the sealing key is not configured, [`CryptoError::Corrupt`]
    /// when the envelope is malformed, modified, or bound to another row.
    pub fn open(&self, envelope: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let parts = split(envelope)?;
        let master = self
            .keys
            .iter()
            .find(|k| k.id == parts.key_id)
            .ok_or_else(|| CryptoError::UnknownKey {
                key_id: hex(&parts.key_id),
            })?;
        let nonce = Nonce::try_from(parts.nonce).map_err(|_| CryptoError::Corrupt)?;
        let mut out = vec![0u8; parts.ciphertext.len() - TAG_LEN];
        XChaCha20Poly1305::open(&master.key, &nonce, parts.ciphertext, Some(aad), &mut out)
            .map_err(|_| CryptoError::Corrupt)?;
        Ok(out)
    }

    /// True when `envelope` was sealed with a key other than the current sealing key.
    ///
    /// # Errors
    /// [`CryptoError::Corrupt`] when the envelope is malformed.
    pub fn needs_reseal(&self, envelope: &[u8]) -> Result<bool, CryptoError> {
        let key_id = split(envelope)?.key_id;
        Ok(self.keys.first().is_none_or(|k| k.id != key_id))
    }

    /// Opens `envelope` and seals it again under the current sealing key, with the same binding.
    ///
    /// # Errors
    /// As [`Sealer::open`] and [`Sealer::seal`].
    pub fn reseal(&self, envelope: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let plaintext = self.open(envelope, aad)?;
        self.seal(&plaintext, aad)
    }
}

/// The parts of an envelope.
struct Envelope<'a> {
    key_id: [u8; KEY_ID_LEN],
    nonce: &'a [u8],
    /// Ciphertext followed by the tag.
    ciphertext: &'a [u8],
}

/// Splits an envelope into its parts, checking the version and the minimum length.
fn split(envelope: &[u8]) -> Result<Envelope<'_>, CryptoError> {
    if envelope.len() < OVERHEAD || envelope.first() != Some(&VERSION) {
        return Err(CryptoError::Corrupt);
    }
    let (key_id, rest) = envelope[1..].split_at(KEY_ID_LEN);
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    Ok(Envelope {
        key_id: key_id.try_into().map_err(|_| CryptoError::Corrupt)?,
        nonce,
        ciphertext,
    })
}

fn key_id(raw: &[u8]) -> [u8; KEY_ID_LEN] {
    let digest = sha256(raw);
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&digest[..KEY_ID_LEN]);
    id
}

fn invalid(origin: &str, reason: &str) -> CryptoError {
    CryptoError::InvalidKey {
        origin: origin.to_owned(),
        reason: reason.to_owned(),
    }
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            "master key file {} is readable by other users; run `chmod 600` on it",
            path.display()
        );
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // SHA-256 only fails for inputs over 2^61 bytes, which cannot be in memory here.
    if let Ok(digest) = Sha256::digest(bytes) {
        out.copy_from_slice(digest.as_ref());
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// SHA-256 of `bytes`, as lowercase hex (manifest digests, request digests, token hashes).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&sha256(bytes))
}

/// Compares two byte strings in constant time (for their common length; a length difference is
/// not hidden).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    orion::util::secure_cmp(a, b).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_a() -> String {
        base64::engine::general_purpose::STANDARD.encode([1u8; 32])
    }

    fn key_b() -> String {
        base64::engine::general_purpose::STANDARD.encode([2u8; 32])
    }

    #[test]
    fn sealed_data_opens_with_the_same_binding() {
        let sealer = Sealer::for_testing();
        let envelope = sealer
            .seal(b"{\"token\":\"s3cr3t\"}", &binding::run_job("job-1"))
            .unwrap();
        assert_eq!(envelope[0], VERSION);
        assert_eq!(envelope.len(), OVERHEAD + 18);
        assert!(!envelope.windows(6).any(|w| w == b"s3cr3t"));
        let opened = sealer.open(&envelope, &binding::run_job("job-1")).unwrap();
        assert_eq!(opened, b"{\"token\":\"s3cr3t\"}");
    }

    #[test]
    fn empty_plaintext_round_trips() {
        let sealer = Sealer::for_testing();
        let envelope = sealer.seal(b"", b"row").unwrap();
        assert_eq!(sealer.open(&envelope, b"row").unwrap(), b"");
    }

    #[test]
    fn two_seals_of_the_same_data_differ() {
        let sealer = Sealer::for_testing();
        assert_ne!(
            sealer.seal(b"same", b"row").unwrap(),
            sealer.seal(b"same", b"row").unwrap()
        );
    }

    #[test]
    fn data_moved_to_another_row_does_not_open() {
        let sealer = Sealer::for_testing();
        let envelope = sealer.seal(b"secret", &binding::pool_secrets("a")).unwrap();
        assert!(matches!(
            sealer.open(&envelope, &binding::pool_secrets("b")),
            Err(CryptoError::Corrupt)
        ));
        assert!(matches!(
            sealer.open(&envelope, &binding::run_job("a")),
            Err(CryptoError::Corrupt)
        ));
    }

    #[test]
    fn any_tampered_byte_is_detected() {
        let sealer = Sealer::for_testing();
        let envelope = sealer.seal(b"secret data", b"row").unwrap();
        for i in 0..envelope.len() {
            let mut bad = envelope.clone();
            bad[i] ^= 0x01;
            assert!(sealer.open(&bad, b"row").is_err(), "byte {i} not detected");
        }
        assert!(matches!(
            sealer.open(&envelope[..envelope.len() - 1], b"row"),
            Err(CryptoError::Corrupt)
        ));
        assert!(matches!(
            sealer.open(&envelope[..OVERHEAD - 1], b"row"),
            Err(CryptoError::Corrupt)
        ));
        assert!(matches!(
            sealer.open(b"", b"row"),
            Err(CryptoError::Corrupt)
        ));
    }

    #[test]
    fn rotated_keys_open_old_data_and_seal_under_the_new_key() {
        let old = Sealer::from_base64_keys(&[&key_a()]).unwrap();
        let envelope = old.seal(b"payload", b"row").unwrap();

        let rotated = Sealer::from_base64_keys(&[&key_b(), &key_a()]).unwrap();
        assert_eq!(rotated.open(&envelope, b"row").unwrap(), b"payload");
        assert!(rotated.needs_reseal(&envelope).unwrap());
        let resealed = rotated.reseal(&envelope, b"row").unwrap();
        assert!(!rotated.needs_reseal(&resealed).unwrap());

        let new_only = Sealer::from_base64_keys(&[&key_b()]).unwrap();
        assert_eq!(new_only.open(&resealed, b"row").unwrap(), b"payload");
        match new_only.open(&envelope, b"row") {
            Err(CryptoError::UnknownKey { key_id }) => assert_eq!(key_id, old.key_ids()[0]),
            other => panic!("expected UnknownKey, got {other:?}"),
        }
    }

    #[test]
    fn keys_must_be_base64_of_32_bytes() {
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 31]);
        for bad in ["", "not base64 !!", short.as_str()] {
            let err = Sealer::from_base64_keys(&[bad]).unwrap_err();
            assert!(matches!(err, CryptoError::InvalidKey { .. }), "{bad:?}");
        }
        assert!(Sealer::from_base64_keys(&[]).is_err());
        let unpadded_url_safe =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xfbu8; 32]);
        assert!(Sealer::from_base64_keys(&[&unpadded_url_safe]).is_ok());
    }

    #[test]
    fn a_bad_environment_key_is_rejected_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Sealer::load_or_create(dir.path(), Some("c2hvcnQ="), None).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("CATTERY_MASTER_KEY"), "{message}");
        assert!(message.contains("32 bytes"), "{message}");
        assert!(!dir.path().join(MASTER_KEY_FILE).exists());
    }

    #[test]
    fn the_environment_key_wins_and_may_list_several_keys() {
        let dir = tempfile::tempdir().unwrap();
        let env = format!("{}, {}", key_b(), key_a());
        let (sealer, source) = Sealer::load_or_create(dir.path(), Some(&env), None).unwrap();
        assert_eq!(source, KeySource::Environment);
        assert_eq!(sealer.key_ids().len(), 2);
        assert!(!dir.path().join(MASTER_KEY_FILE).exists());
    }

    #[test]
    fn load_or_create_creates_a_private_key_file_and_reuses_it() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let (first, source) = Sealer::load_or_create(&data_dir, None, None).unwrap();
        let path = data_dir.join(MASTER_KEY_FILE);
        assert_eq!(source, KeySource::Created(path.clone()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let envelope = first.seal(b"payload", b"row").unwrap();
        let (second, source) = Sealer::load_or_create(&data_dir, None, None).unwrap();
        assert_eq!(source, KeySource::DataDir(path));
        assert_eq!(second.key_ids(), first.key_ids());
        assert_eq!(second.open(&envelope, b"row").unwrap(), b"payload");
    }

    #[test]
    fn a_configured_key_file_must_exist_and_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.key");
        assert!(matches!(
            Sealer::load_or_create(dir.path(), None, Some(&missing)),
            Err(CryptoError::KeyFile { .. })
        ));
        assert!(!dir.path().join(MASTER_KEY_FILE).exists());

        let file = dir.path().join("keys");
        std::fs::write(
            &file,
            format!("# newest first\n{}\n\n{}\n", key_b(), key_a()),
        )
        .unwrap();
        let (sealer, source) = Sealer::load_or_create(dir.path(), None, Some(&file)).unwrap();
        assert_eq!(source, KeySource::KeyFile(file));
        assert_eq!(sealer.key_ids().len(), 2);
    }

    #[test]
    fn debug_output_shows_key_ids_only() {
        let raw = [9u8; 32];
        let sealer = Sealer::from_keys(&[&raw], "test").unwrap();
        let shown = format!("{sealer:?}");
        assert!(shown.contains(&sealer.key_ids()[0]));
        assert!(!shown.contains("9, 9"));
    }

    #[test]
    fn sha256_hex_matches_known_vectors() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn constant_time_eq_compares_contents_and_lengths() {
        assert!(constant_time_eq(b"token", b"token"));
        assert!(!constant_time_eq(b"token", b"tokem"));
        assert!(!constant_time_eq(b"token", b"token2"));
        assert!(constant_time_eq(b"", b""));
    }
}
