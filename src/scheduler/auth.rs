//! OAuth2 client-credentials tokens: cached per pool and credential, fetched once for
//! concurrent callers, dropped on a 401.

use crate::domain::ids::PoolName;
use crate::domain::secrets::{SecretBundle, SecretValue};
use crate::egress::EgressGuard;
use crate::manifest::Auth;
use crate::metrics::CallClass;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How long before its expiry a token is no longer used.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// The lifetime assumed when the token endpoint gives no numeric `expires_in`.
const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// The longest a token is kept, whatever `expires_in` says: an absurd lifetime (up to
/// `u64::MAX` seconds) must neither overflow the clock nor pin a token for ever.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3_600);
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
    /// Drops every cached token of `pool` but the one of `auth` with `secrets` (its current
    /// credential, if it uses OAuth2): tokens of replaced credentials are never used again.
    pub fn retain_current(&self, pool: &PoolName, auth: &Auth, secrets: &SecretBundle) {
        let keep = cache_key(pool, auth, secrets);
        let prefix = format!("{pool}:");
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|key, _| !key.starts_with(&prefix) || Some(key) == keep.as_ref());
    }

    /// Drops every cached token of `pool` (deleted).
    pub fn forget_pool(&self, pool: &PoolName) {
        let prefix = format!("{pool}:");
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|key, _| !key.starts_with(&prefix));
    }

    /// How many credentials have a slot (cached or being fetched).
    pub fn len(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// True when no credential has a slot.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

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
        guard: &EgressGuard,
        timeout: Duration,
    ) -> Result<SecretValue, TokenError> {
        let ignore = |_: CallClass, _: Duration| {};
        self.token_observed(pool, auth, secrets, client, guard, timeout, &ignore)
            .await
    }

    /// [`TokenCache::token`], telling `observe` how each request to the token endpoint ended
    /// and how long it took (none when the cached token is used).
    ///
    /// # Errors
    /// When a credential is missing or the token endpoint fails.
    #[expect(
        clippy::too_many_arguments,
        reason = "the arguments of `token` and the observer"
    )]
    pub async fn token_observed(
        &self,
        pool: &PoolName,
        auth: &Auth,
        secrets: &SecretBundle,
        client: &reqwest::Client,
        guard: &EgressGuard,
        timeout: Duration,
        observe: &(dyn Fn(CallClass, Duration) + Sync),
    ) -> Result<SecretValue, TokenError> {
        let Some(key) = cache_key(pool, auth, secrets) else {
            return Err(TokenError::NoToken);
        };
        let slot = self.slot(&key);
        let mut cached_slot = slot.lock().await;
        if let Some(cached) = cached_slot
            .as_ref()
            .filter(|c| c.usable_until > Instant::now())
        {
            return Ok(cached.token.clone());
        }
        let (token, usable) = fetch(auth, secrets, client, guard, timeout, observe).await?;
        let now = Instant::now();
        *cached_slot = Some(Cached {
            token: token.clone(),
            usable_until: now.checked_add(usable).unwrap_or(now),
        });
        Ok(token)
    }

    /// Drops the cached token of the pool's credential: only `refused` when given (so that
    /// several calls refused with the same old token drop it once, not its successor).
    pub async fn invalidate(
        &self,
        pool: &PoolName,
        auth: &Auth,
        secrets: &SecretBundle,
        refused: Option<&SecretValue>,
    ) {
        if let Some(key) = cache_key(pool, auth, secrets) {
            let slot = self.slot(&key);
            let mut cached = slot.lock().await;
            let matches = match (cached.as_ref(), refused) {
                (Some(current), Some(refused)) => current.token.expose() == refused.expose(),
                _ => true,
            };
            if matches {
                *cached = None;
            }
        }
    }
}

/// Fetches a new token from the token endpoint (no cache): the token and how long to use it.
pub(super) async fn fetch(
    auth: &Auth,
    secrets: &SecretBundle,
    client: &reqwest::Client,
    guard: &EgressGuard,
    timeout: Duration,
    observe: &(dyn Fn(CallClass, Duration) + Sync),
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
    let request = client
        .post(token_url.clone())
        .timeout(timeout)
        .header(reqwest::header::ACCEPT, "application/json")
        .form(&form);
    // Never redirected: the credentials are in the body.
    let started = Instant::now();
    let response = super::http::send(request, guard, false)
        .await
        .map_err(|e| {
            observe(super::call_class_of(&e), started.elapsed());
            TokenError::Transport(e.to_string())
        })?;
    let status = response.status().as_u16();
    if !response.status().is_success() {
        observe(CallClass::Status(status), started.elapsed());
        return Err(TokenError::Status(status));
    }
    let body = super::http::read_capped(response, MAX_TOKEN_RESPONSE).await;
    observe(CallClass::Status(status), started.elapsed());
    let body = body.map_err(TokenError::Transport)?;
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|_| TokenError::NoToken)?;
    let token = value
        .get("access_token")
        .and_then(serde_json::Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or(TokenError::NoToken)?;
    Ok((SecretValue::new(token.to_owned()), usable_for(&value)))
}

/// How long the token of a token answer is used: its `expires_in` (or [`DEFAULT_TTL`] when it
/// has no numeric one), at most [`MAX_TTL`], less a margin before it expires (30 s, or half the
/// lifetime of a shorter-lived token).
pub fn usable_for(answer: &serde_json::Value) -> Duration {
    let ttl = answer
        .get("expires_in")
        .and_then(serde_json::Value::as_u64)
        .map_or(DEFAULT_TTL, |seconds| {
            Duration::from_secs(seconds.min(MAX_TTL.as_secs()))
        });
    ttl.saturating_sub(EXPIRY_MARGIN.min(ttl / 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EgressSettings;
    use crate::egress::{Egress, EgressPolicy};
    use actix_web::{App, HttpResponse, HttpServer, web};
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A token endpoint that takes 200 ms per token, numbers its tokens, and answers 500 to a
    /// client secret of "broken".
    fn token_server() -> (String, Arc<AtomicUsize>) {
        let issued = Arc::new(AtomicUsize::new(0));
        let counter = issued.clone();
        let server = HttpServer::new(move || {
            let counter = counter.clone();
            App::new().route(
                "/token",
                web::post().to(move |form: web::Form<BTreeMap<String, String>>| {
                    let counter = counter.clone();
                    async move {
                        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
                        if form.get("client_secret").map(String::as_str) == Some("broken") {
                            return HttpResponse::InternalServerError()
                                .body("client_secret=broken");
                        }
                        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                        HttpResponse::Ok().json(serde_json::json!({
                            "access_token": format!("tok-{n}"),
                            "expires_in": 3600,
                        }))
                    }
                }),
            )
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let port = server.addrs()[0].port();
        actix_web::rt::spawn(server.run());
        (format!("http://127.0.0.1:{port}/token"), issued)
    }

    fn oauth(token_url: &str) -> Auth {
        Auth::OAuth2ClientCredentials {
            token_url: url::Url::parse(token_url).unwrap(),
            client_id_key: "ID".to_owned(),
            client_secret_key: "SECRET".to_owned(),
            scope: Some("jobs".to_owned()),
            audience: None,
        }
    }

    fn secrets(id: &str, secret: &str) -> SecretBundle {
        SecretBundle::from_map(BTreeMap::from([
            ("ID".to_owned(), id.to_owned()),
            ("SECRET".to_owned(), secret.to_owned()),
        ]))
    }

    fn guard() -> Arc<EgressGuard> {
        Egress::new(
            EgressPolicy::from_settings(&EgressSettings {
                allow_http: true,
                allow_hosts: vec!["127.0.0.1".to_owned()],
                ..EgressSettings::default()
            })
            .unwrap(),
        )
        .guard("p")
    }

    #[actix_web::test]
    async fn concurrent_first_calls_fetch_one_token_and_a_drop_fetches_a_new_one() {
        let (url, issued) = token_server();
        let auth = oauth(&url);
        let bundle = secrets("client-a", "secret-a");
        let pool = PoolName::parse("p").unwrap();
        let cache = TokenCache::default();
        let client = crate::scheduler::http::plain_client().unwrap();
        let guard = guard();
        let timeout = Duration::from_secs(5);
        let calls = (0..8).map(|_| cache.token(&pool, &auth, &bundle, &client, &guard, timeout));
        let tokens = futures_util::future::join_all(calls).await;
        for token in &tokens {
            assert_eq!(token.as_ref().unwrap().expose(), "tok-1");
        }
        assert_eq!(issued.load(Ordering::SeqCst), 1, "single flight");
        let again = cache
            .token(&pool, &auth, &bundle, &client, &guard, timeout)
            .await
            .unwrap();
        assert_eq!(again.expose(), "tok-1", "cached");
        assert_eq!(issued.load(Ordering::SeqCst), 1);

        // A 401 drops it: the next call fetches a new token; a late 401 of a call that still
        // used the old token does not drop the new one.
        cache.invalidate(&pool, &auth, &bundle, Some(&again)).await;
        let renewed = cache
            .token(&pool, &auth, &bundle, &client, &guard, timeout)
            .await
            .unwrap();
        assert_eq!(renewed.expose(), "tok-2");
        assert_eq!(issued.load(Ordering::SeqCst), 2);
        cache.invalidate(&pool, &auth, &bundle, Some(&again)).await;
        let kept = cache
            .token(&pool, &auth, &bundle, &client, &guard, timeout)
            .await
            .unwrap();
        assert_eq!(kept.expose(), "tok-2");
        assert_eq!(issued.load(Ordering::SeqCst), 2);
    }

    #[actix_web::test]
    async fn tokens_are_never_shared_across_pools_or_credentials() {
        let (url, issued) = token_server();
        let auth = oauth(&url);
        let cache = TokenCache::default();
        let client = crate::scheduler::http::plain_client().unwrap();
        let guard = guard();
        let timeout = Duration::from_secs(5);
        let a = PoolName::parse("tenant-a").unwrap();
        let b = PoolName::parse("tenant-b").unwrap();
        let first = cache
            .token(
                &a,
                &auth,
                &secrets("client", "secret-a"),
                &client,
                &guard,
                timeout,
            )
            .await
            .unwrap();
        // Same token URL and client id, another secret: its own token (a guessed client id
        // with a wrong secret never gets the cached one).
        let other_secret = cache
            .token(
                &a,
                &auth,
                &secrets("client", "wrong"),
                &client,
                &guard,
                timeout,
            )
            .await
            .unwrap();
        // Same credential, another pool: its own token too.
        let other_pool = cache
            .token(
                &b,
                &auth,
                &secrets("client", "secret-a"),
                &client,
                &guard,
                timeout,
            )
            .await
            .unwrap();
        assert_eq!(issued.load(Ordering::SeqCst), 3);
        assert_ne!(first.expose(), other_secret.expose());
        assert_ne!(first.expose(), other_pool.expose());
    }

    #[actix_web::test]
    async fn replaced_credentials_and_deleted_pools_leave_no_token_behind() {
        let (url, issued) = token_server();
        let auth = oauth(&url);
        let cache = TokenCache::default();
        let client = crate::scheduler::http::plain_client().unwrap();
        let guard = guard();
        let timeout = Duration::from_secs(5);
        let a = PoolName::parse("tenant-a").unwrap();
        let b = PoolName::parse("tenant-b").unwrap();
        for (pool, secret) in [(&a, "old"), (&a, "new"), (&b, "old")] {
            cache
                .token(
                    pool,
                    &auth,
                    &secrets("client", secret),
                    &client,
                    &guard,
                    timeout,
                )
                .await
                .unwrap();
        }
        assert_eq!(cache.len(), 3);
        // tenant-a now uses the new secret: only its token stays, and it is still cached.
        cache.retain_current(&a, &auth, &secrets("client", "new"));
        assert_eq!(cache.len(), 2);
        cache
            .token(
                &a,
                &auth,
                &secrets("client", "new"),
                &client,
                &guard,
                timeout,
            )
            .await
            .unwrap();
        assert_eq!(issued.load(Ordering::SeqCst), 3);
        // A pool that no longer uses OAuth2 keeps none.
        cache.retain_current(&a, &Auth::None, &SecretBundle::default());
        assert_eq!(cache.len(), 1);
        cache.forget_pool(&b);
        assert!(cache.is_empty());
    }

    #[actix_web::test]
    async fn a_failing_token_endpoint_is_reported_without_credentials() {
        let (url, _) = token_server();
        let auth = oauth(&url);
        let cache = TokenCache::default();
        let pool = PoolName::parse("p").unwrap();
        let err = cache
            .token(
                &pool,
                &auth,
                &secrets("client", "broken"),
                &crate::scheduler::http::plain_client().unwrap(),
                &guard(),
                Duration::from_secs(5),
            )
            .await
            .unwrap_err();
        assert_eq!(err, TokenError::Status(500));
        let missing = cache
            .token(
                &pool,
                &auth,
                &SecretBundle::default(),
                &crate::scheduler::http::plain_client().unwrap(),
                &guard(),
                Duration::from_secs(5),
            )
            .await
            .unwrap_err();
        assert_eq!(missing, TokenError::MissingSecret("ID".to_owned()));
    }

    #[test]
    fn token_lifetimes_are_capped_and_keep_a_margin() {
        let usable = |answer| usable_for(&answer);
        assert_eq!(
            usable(serde_json::json!({"expires_in": 3600})),
            Duration::from_secs(3570)
        );
        assert_eq!(
            usable(serde_json::json!({"expires_in": 20})),
            Duration::from_secs(10)
        );
        assert_eq!(usable(serde_json::json!({"expires_in": 0})), Duration::ZERO);
        assert_eq!(
            usable(serde_json::json!({"expires_in": u64::MAX})),
            MAX_TTL - EXPIRY_MARGIN
        );
        assert_eq!(
            usable(serde_json::json!({"expires_in": "soon"})),
            DEFAULT_TTL - EXPIRY_MARGIN
        );
    }

    #[actix_web::test]
    async fn the_token_url_is_checked_by_the_egress_policy() {
        let auth = oauth("http://10.0.0.1/token");
        let err = TokenCache::default()
            .token(
                &PoolName::parse("p").unwrap(),
                &auth,
                &secrets("client", "secret"),
                &crate::scheduler::http::plain_client().unwrap(),
                &guard(),
                Duration::from_secs(5),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, TokenError::Transport(m) if m.contains("10.0.0.1, a private address")),
            "{err:?}"
        );
    }
}
