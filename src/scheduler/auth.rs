//! OAuth2 client-credentials tokens: cached per pool and credential, fetched once for
//! concurrent callers, dropped on a 401.

use crate::domain::ids::PoolName;
use crate::domain::secrets::{SecretBundle, SecretValue};
use crate::manifest::Auth;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How long before its expiry a token is no longer used.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// The lifetime assumed when the token endpoint gives no numeric `expires_in`.
const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// The largest token answer read.
const MAX_TOKEN_RESPONSE: usize = 200 * 1024;

/// Why no token could be had. Messages never contain credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// A credential is missing from the pool's secrets.
    #[error("the OAuth2 secret {0:?} is missing from the pool's secrets")]
    MissingSecret(String),
    /// The token endpoint could not be reached.
    #[error("OAuth2 token request failed: {0}")]
    Transport(String),
    /// The token endpoint refused.
    #[error("OAuth2 token request → {0}")]
    Status(u16),
    /// The answer has no usable `access_token`.
    #[error("the OAuth2 token answer has no access_token")]
    NoToken,
}

#[derive(Debug)]
struct Cached {
    token: SecretValue,
    usable_until: Instant,
}

/// Per pool and credential: one slot, locked while a token is fetched (single flight).
type Slot = Arc<Mutex<Option<Cached>>>;

/// The token cache.
#[derive(Debug, Default)]
pub struct TokenCache {
    slots: std::sync::Mutex<HashMap<String, Slot>>,
}

fn cache_key(pool: &PoolName, auth: &Auth, secrets: &SecretBundle) -> Option<String> {
    let Auth::OAuth2ClientCredentials {
        token_url,
        client_id_key,
        client_secret_key,
        scope,
        audience,
    } = auth
    else {
        return None;
    };
    let id = secrets
        .get(client_id_key)
        .map(SecretValue::expose)
        .unwrap_or_default();
    let secret = secrets
        .get(client_secret_key)
        .map(SecretValue::expose)
        .unwrap_or_default();
    // The key names the pool and a digest of the whole credential, so two pools (or two
    // secrets of one pool) never share a token.
    let material = serde_json::json!([token_url.as_str(), id, secret, scope, audience]).to_string();
    Some(format!(
        "{pool}:{}",
        crate::crypto::sha256_hex(material.as_bytes())
    ))
}

impl TokenCache {
    fn slot(&self, key: &str) -> Slot {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.entry(key.to_owned()).or_default().clone()
    }

    /// A valid token for the pool's credential, fetched if needed.
    ///
    /// # Errors
    /// When a credential is missing or the token endpoint fails.
    pub async fn token(
        &self,
        pool: &PoolName,
        auth: &Auth,
        secrets: &SecretBundle,
        client: &reqwest::Client,
        timeout: Duration,
    ) -> Result<SecretValue, TokenError> {
        let Some(key) = cache_key(pool, auth, secrets) else {
            return Err(TokenError::NoToken);
        };
        let slot = self.slot(&key);
        let mut guard = slot.lock().await;
        if let Some(cached) = guard.as_ref().filter(|c| c.usable_until > Instant::now()) {
            return Ok(cached.token.clone());
        }
        let (token, ttl) = fetch(auth, secrets, client, timeout).await?;
        let usable = ttl.saturating_sub(EXPIRY_MARGIN.min(ttl / 2));
        *guard = Some(Cached {
            token: token.clone(),
            usable_until: Instant::now() + usable,
        });
        Ok(token)
    }

    /// Drops the cached token of the pool's credential.
    pub async fn invalidate(&self, pool: &PoolName, auth: &Auth, secrets: &SecretBundle) {
        if let Some(key) = cache_key(pool, auth, secrets) {
            *self.slot(&key).lock().await = None;
        }
    }
}

async fn fetch(
    auth: &Auth,
    secrets: &SecretBundle,
    client: &reqwest::Client,
    timeout: Duration,
) -> Result<(SecretValue, Duration), TokenError> {
    let Auth::OAuth2ClientCredentials {
        token_url,
        client_id_key,
        client_secret_key,
        scope,
        audience,
    } = auth
    else {
        return Err(TokenError::NoToken);
    };
    let secret = |key: &String| {
        secrets
            .get(key)
            .map(|v| v.expose().to_owned())
            .ok_or_else(|| TokenError::MissingSecret(key.clone()))
    };
    let mut form = vec![
        ("grant_type", "client_credentials".to_owned()),
        ("client_id", secret(client_id_key)?),
        ("client_secret", secret(client_secret_key)?),
    ];
    if let Some(scope) = scope {
        form.push(("scope", scope.clone()));
    }
    if let Some(audience) = audience {
        form.push(("audience", audience.clone()));
    }
    let response = client
        .post(token_url.clone())
        .timeout(timeout)
        .header(reqwest::header::ACCEPT, "application/json")
        .form(&form)
        .send()
        .await
        .map_err(|e| TokenError::Transport(super::http::describe_transport_error(&e)))?;
    let status = response.status().as_u16();
    if !response.status().is_success() {
        return Err(TokenError::Status(status));
    }
    let body = super::http::read_capped(response, MAX_TOKEN_RESPONSE)
        .await
        .map_err(TokenError::Transport)?;
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|_| TokenError::NoToken)?;
    let token = value
        .get("access_token")
        .and_then(serde_json::Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or(TokenError::NoToken)?;
    let ttl = value
        .get("expires_in")
        .and_then(serde_json::Value::as_u64)
        .map_or(DEFAULT_TTL, Duration::from_secs);
    Ok((SecretValue::new(token.to_owned()), ttl))
}
