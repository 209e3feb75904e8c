//! The HTTP client for scheduler calls: built per pool with the egress resolver, no proxy,
//! redirects only when the manifest allows them (each hop checked), capped reads.

use crate::egress::{EgressGuard, Refusal};
use crate::manifest::Manifest;
use chrono::{DateTime, Utc};
use reqwest::header::{self, HeaderMap};
use std::sync::Arc;

/// Most redirects followed for one call.
pub const MAX_REDIRECTS: usize = 5;

/// The manifest's TLS settings could not be turned into a client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `tls.caCertPem` is not a PEM certificate.
    #[error("tls.caCertPem is not a valid PEM certificate")]
    BadCaCert,
    /// The client could not be built.
    #[error("cannot build the HTTP client")]
    Build(#[source] reqwest::Error),
}

/// Why a call got no answer. Messages name hosts at most, never paths, headers or bodies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The egress policy refused the URL, a redirect target or every resolved address.
    #[error("the egress policy refused the call: {0}")]
    Refused(Refusal),
    /// A redirect that is not followed safely.
    #[error("{0}")]
    Redirect(String),
    /// The request could not be built or the transport failed.
    #[error("{0}")]
    Transport(String),
}

/// Installs the process-wide TLS crypto provider (ring). Call once before building clients;
/// later calls are harmless.
pub fn install_crypto_provider() {
    // An error only means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds the client of one pool: the manifest's extra trust root, the pool's egress resolver
/// (every resolved address is checked), no automatic redirects ([`send`] follows them when
/// allowed), a user agent, and no proxy but the pool's `proxy` route (never one from the
/// environment that the operator did not opt into: see [`crate::proxy`]).
///
/// # Errors
/// When the CA certificate does not parse.
pub fn build_client(
    manifest: &Manifest,
    guard: &Arc<EgressGuard>,
    proxy: Option<&crate::proxy::ProxyRoute>,
) -> Result<reqwest::Client, ClientError> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(guard.resolver())
        .user_agent(concat!("cattery/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(10))
        .pool_max_idle_per_host(
            usize::try_from(manifest.limits.max_connections).unwrap_or(usize::MAX),
        );
    if let Some(route) = proxy {
        for proxy in route.proxies().map_err(ClientError::Build)? {
            builder = builder.proxy(proxy);
        }
    }
    if let Some(pem) = &manifest.ca_cert_pem {
        let cert =
            reqwest::Certificate::from_pem(pem.as_bytes()).map_err(|_| ClientError::BadCaCert)?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build().map_err(ClientError::Build)
}

/// Sends a request built on a pool's client: the URL is checked by the egress guard first
/// (the resolver cannot see IP-literal hosts), then, when `follow_redirects` is set, up to
/// [`MAX_REDIRECTS`] redirects are followed, each target checked again. A hop to another
/// origin drops every header but `Accept` (credentials, secret headers, cookies) and is refused
/// when the request still has a body; `https` is never downgraded to `http`; 303 (and 301/302
/// after a POST) continue as a GET without a body.
///
/// # Errors
/// [`SendError::Refused`] for a policy refusal (before anything is sent to that target),
/// [`SendError::Redirect`] for a redirect not followed safely, [`SendError::Transport`].
pub async fn send(
    builder: reqwest::RequestBuilder,
    guard: &EgressGuard,
    follow_redirects: bool,
) -> Result<reqwest::Response, SendError> {
    let (client, request) = builder.build_split();
    let mut request =
        request.map_err(|_| SendError::Transport("the request could not be built".to_owned()))?;
    let mut hops = 0;
    loop {
        guard.check_url(request.url()).map_err(SendError::Refused)?;
        let again = if follow_redirects {
            request.try_clone()
        } else {
            None
        };
        let current = request.url().clone();
        let response = client.execute(request).await.map_err(|e| transport(&e))?;
        let status = response.status();
        let Some(mut next) = again.filter(|_| status.is_redirection() && status != 304) else {
            return Ok(response);
        };
        let Some(target) = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|location| current.join(location).ok())
        else {
            return Ok(response);
        };
        hops += 1;
        if hops > MAX_REDIRECTS {
            return Err(SendError::Redirect(format!(
                "more than {MAX_REDIRECTS} redirects"
            )));
        }
        if current.scheme() == "https" && target.scheme() != "https" {
            return Err(SendError::Redirect(format!(
                "a redirect from https to {} is not followed",
                target.scheme()
            )));
        }
        let to_get = (status == 303 && next.method() != reqwest::Method::HEAD)
            || (matches!(status.as_u16(), 301 | 302) && next.method() == reqwest::Method::POST);
        if to_get {
            *next.method_mut() = reqwest::Method::GET;
            *next.body_mut() = None;
            next.headers_mut().remove(header::CONTENT_TYPE);
            next.headers_mut().remove(header::CONTENT_LENGTH);
        }
        if target.origin() != current.origin() {
            if next.body().is_some() {
                return Err(SendError::Redirect(format!(
                    "a redirect to another origin ({}) is not followed with the request body",
                    target.host_str().unwrap_or("?")
                )));
            }
            let accept = next.headers().get(header::ACCEPT).cloned();
            next.headers_mut().clear();
            if let Some(accept) = accept {
                next.headers_mut().insert(header::ACCEPT, accept);
            }
        }
        *next.url_mut() = target;
        request = next;
    }
}

fn transport(error: &reqwest::Error) -> SendError {
    match crate::egress::refusal_in(error) {
        Some(refusal) => SendError::Refused(refusal.clone()),
        None => SendError::Transport(describe_transport_error(error)),
    }
}

/// A plain client for cattery's own calls (tests, the CLI's client commands).
///
/// # Errors
/// When the client cannot be built.
pub fn plain_client() -> Result<reqwest::Client, ClientError> {
    install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("cattery/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(ClientError::Build)
}

/// Reads a response body, refusing more than `cap` bytes.
///
/// # Errors
/// A description when the body is larger than the cap or the connection failed mid-body.
pub async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, String> {
    if response
        .content_length()
        .is_some_and(|len| len > cap as u64)
    {
        return Err(format!("the answer is larger than {cap} bytes"));
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > cap {
                    return Err(format!("the answer is larger than {cap} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(describe_transport_error(&e)),
        }
    }
}

/// A short operator-facing description of a transport error (no URL: it may carry ids).
pub fn describe_transport_error(error: &reqwest::Error) -> String {
    if let Some(refusal) = crate::egress::refusal_in(error) {
        format!("the egress policy refused the call: {refusal}")
    } else if let Some(unresolved) = crate::egress::unresolved_in(error) {
        unresolved.to_string()
    } else if error.is_timeout() {
        "the call timed out".to_owned()
    } else if error.is_connect() {
        "cannot connect to the scheduler".to_owned()
    } else if error.is_body() || error.is_decode() {
        "the connection failed while reading the answer".to_owned()
    } else {
        "the call failed before an answer arrived".to_owned()
    }
}

/// The delay a scheduler asked for: `Retry-After` (seconds or an HTTP date), else
/// `RateLimit-Reset` (seconds); at most [`crate::backoff::MAX_RETRY_AFTER_MS`].
pub fn retry_after_ms(headers: &HeaderMap, now: DateTime<Utc>) -> Option<u64> {
    asked_ms(headers, now).map(|ms| ms.min(crate::backoff::MAX_RETRY_AFTER_MS))
}

fn asked_ms(headers: &HeaderMap, now: DateTime<Utc>) -> Option<u64> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(value) = text("retry-after") {
        if let Ok(seconds) = value.parse::<u64>() {
            return Some(seconds.saturating_mul(1000));
        }
        if let Ok(date) = DateTime::parse_from_rfc2822(value) {
            let millis = date
                .with_timezone(&Utc)
                .signed_duration_since(now)
                .num_milliseconds();
            return Some(u64::try_from(millis).unwrap_or(0));
        }
    }
    text("ratelimit-reset")
        .and_then(|v| v.parse::<u64>().ok())
        .map(|seconds| seconds.saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn retry_after_reads_seconds_dates_and_ratelimit_reset() {
        let now = DateTime::parse_from_rfc2822("Sun, 29 Nov 2026 10:00:00 GMT")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            retry_after_ms(&headers(&[("retry-after", "7")]), now),
            Some(7_000)
        );
        assert_eq!(
            retry_after_ms(
                &headers(&[("retry-after", "Sun, 29 Nov 2026 10:00:30 GMT")]),
                now
            ),
            Some(30_000)
        );
        assert_eq!(
            retry_after_ms(
                &headers(&[("retry-after", "Sun, 29 Nov 2026 09:00:00 GMT")]),
                now
            ),
            Some(0),
            "a date in the past means now"
        );
        assert_eq!(
            retry_after_ms(&headers(&[("ratelimit-reset", "3")]), now),
            Some(3_000)
        );
        assert_eq!(
            retry_after_ms(&headers(&[("retry-after", "soon")]), now),
            None
        );
        for huge in [
            ("retry-after", "18446744073709551615"),
            ("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT"),
            ("ratelimit-reset", "99999999999"),
        ] {
            assert_eq!(
                retry_after_ms(&headers(&[huge]), now),
                Some(crate::backoff::MAX_RETRY_AFTER_MS),
                "{huge:?}"
            );
        }
        assert_eq!(retry_after_ms(&HeaderMap::new(), now), None);
    }

    use crate::config::EgressSettings;
    use crate::egress::{Egress, EgressPolicy};
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    use std::sync::Mutex;

    /// What a test server saw: method, path, headers (lower-case names), body.
    type Seen = Arc<Mutex<Vec<(String, String, Vec<(String, String)>, Vec<u8>)>>>;

    /// A loopback server that records every request and answers with `route`.
    fn server(route: fn(&HttpRequest, u16) -> HttpResponse, target_port: u16) -> (u16, Seen) {
        let seen: Seen = Arc::default();
        let recorded = seen.clone();
        let server = HttpServer::new(move || {
            let recorded = recorded.clone();
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let recorded = recorded.clone();
                async move {
                    recorded.lock().unwrap().push((
                        req.method().to_string(),
                        req.path().to_owned(),
                        req.headers()
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                            .collect(),
                        body.to_vec(),
                    ));
                    route(&req, target_port)
                }
            }))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let port = server.addrs()[0].port();
        actix_web::rt::spawn(server.run());
        (port, seen)
    }

    fn redirect(status: u16, location: String) -> HttpResponse {
        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
            .insert_header(("location", location))
            .finish()
    }

    fn origin_route(req: &HttpRequest, target: u16) -> HttpResponse {
        match req.path() {
            "/same" => redirect(302, "/final".to_owned()),
            "/final" => HttpResponse::Ok().body("final"),
            "/cross" => redirect(302, format!("http://127.0.0.1:{target}/landing")),
            "/to-localhost" => redirect(302, format!("http://localhost:{target}/landing")),
            "/to-v6" => redirect(302, format!("http://[::1]:{target}/landing")),
            "/to-decimal" => redirect(302, format!("http://2130706434:{target}/landing")),
            "/to-metadata" => redirect(302, "http://169.254.169.254/latest/meta-data".to_owned()),
            "/to-pinned" => redirect(302, format!("http://pinned.test:{target}/landing")),
            "/post-307-cross" => redirect(307, format!("http://127.0.0.1:{target}/landing")),
            "/post-303" => redirect(303, "/final".to_owned()),
            "/loop" => redirect(302, "/loop".to_owned()),
            _ => HttpResponse::NotFound().finish(),
        }
    }

    fn landing_route(_: &HttpRequest, _: u16) -> HttpResponse {
        HttpResponse::Ok().body("landed")
    }

    fn guard(hosts: &[&str]) -> (Egress, Arc<EgressGuard>) {
        let egress = Egress::new(
            EgressPolicy::from_settings(&EgressSettings {
                allow_http: true,
                allow_hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
                ..EgressSettings::default()
            })
            .unwrap(),
        );
        egress.pin("pinned.test", vec!["127.0.0.1".parse().unwrap()]);
        let guard = egress.guard("p");
        (egress, guard)
    }

    fn manifest() -> Manifest {
        let text = r#"
apiVersion: cattery/v1
baseUrl: http://127.0.0.1:9
auth: { type: none }
dispatch: { request: { method: POST, path: /jobs, body: { a: b } } }
poll: { request: { method: GET, path: "/jobs/{{run.dispatchId}}" }, map: { state: status } }
"#;
        Manifest::parse(text, &crate::manifest::Defaults::default()).unwrap()
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    async fn get(
        client: &reqwest::Client,
        guard: &EgressGuard,
        url: String,
        follow: bool,
    ) -> Result<reqwest::Response, SendError> {
        let builder = client
            .get(url)
            .bearer_auth("scheduler-secret-token")
            .header("x-api-key", "api-key-secret")
            .header("accept", "application/json");
        send(builder, guard, follow).await
    }

    #[actix_web::test]
    async fn redirects_are_followed_only_when_allowed_and_every_hop_is_checked() {
        let (target, landed) = server(landing_route, 0);
        let (origin, seen) = server(origin_route, target);
        let (_egress, guard) = guard(&["127.0.0.1"]);
        let client = build_client(&manifest(), &guard, None).unwrap();
        let base = format!("http://127.0.0.1:{origin}");

        // Not allowed by the manifest: the redirect itself is the answer.
        let response = get(&client, &guard, format!("{base}/cross"), false)
            .await
            .unwrap();
        assert_eq!(response.status(), 302);
        assert!(landed.lock().unwrap().is_empty());

        // Same origin: followed with the credentials.
        let response = get(&client, &guard, format!("{base}/same"), true)
            .await
            .unwrap();
        assert_eq!(response.text().await.unwrap(), "final");
        let final_headers = seen.lock().unwrap().last().unwrap().2.clone();
        assert_eq!(
            header(&final_headers, "authorization"),
            Some("Bearer scheduler-secret-token")
        );
        assert_eq!(header(&final_headers, "x-api-key"), Some("api-key-secret"));

        // Another origin: followed without any credential header.
        let response = get(&client, &guard, format!("{base}/cross"), true)
            .await
            .unwrap();
        assert_eq!(response.text().await.unwrap(), "landed");
        let landed_headers = landed.lock().unwrap().last().unwrap().2.clone();
        assert_eq!(header(&landed_headers, "authorization"), None);
        assert_eq!(header(&landed_headers, "x-api-key"), None);
        assert_eq!(header(&landed_headers, "accept"), Some("application/json"));
        landed.lock().unwrap().clear();

        // Internal targets are refused before anything is sent to them.
        for (path, expected) in [
            ("/to-localhost", "localhost is a loopback name"),
            ("/to-v6", "::1, a loopback address"),
            ("/to-decimal", "127.0.0.2, a loopback address"),
            ("/to-metadata", "never allowed"),
            (
                "/to-pinned",
                "pinned.test resolves to 127.0.0.1, a loopback address",
            ),
        ] {
            match get(&client, &guard, format!("{base}{path}"), true).await {
                Err(SendError::Refused(refusal)) => {
                    assert!(refusal.to_string().contains(expected), "{path}: {refusal}");
                }
                other => panic!("{path}: {other:?}"),
            }
        }
        assert!(
            landed.lock().unwrap().is_empty(),
            "an internal target was reached"
        );

        // Redirect loops end.
        match get(&client, &guard, format!("{base}/loop"), true).await {
            Err(SendError::Redirect(message)) => assert!(message.contains("more than 5")),
            other => panic!("{other:?}"),
        }
    }

    #[actix_web::test]
    async fn a_body_never_follows_a_redirect_to_another_origin_and_303_becomes_get() {
        let (target, landed) = server(landing_route, 0);
        let (origin, seen) = server(origin_route, target);
        let (_egress, guard) = guard(&["127.0.0.1"]);
        let client = build_client(&manifest(), &guard, None).unwrap();
        let base = format!("http://127.0.0.1:{origin}");
        let post = |path: &str| {
            client
                .post(format!("{base}{path}"))
                .header("content-type", "application/json")
                .body(r#"{"ghToken":"job-secret"}"#)
        };
        match send(post("/post-307-cross"), &guard, true).await {
            Err(SendError::Redirect(message)) => {
                assert!(
                    message.contains("not followed with the request body"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(landed.lock().unwrap().is_empty());
        let response = send(post("/post-303"), &guard, true).await.unwrap();
        assert_eq!(response.status(), 200);
        let (method, path, headers, body) = seen.lock().unwrap().last().unwrap().clone();
        assert_eq!((method.as_str(), path.as_str()), ("GET", "/final"));
        assert!(body.is_empty());
        assert_eq!(header(&headers, "content-type"), None);
    }

    #[actix_web::test]
    async fn every_address_is_checked_when_connecting() {
        let (target, landed) = server(landing_route, 0);
        // pinned.test resolves to 127.0.0.1; only the IP literal is allowed.
        let (_egress, strict) = guard(&["127.0.0.1"]);
        let client = build_client(&manifest(), &strict, None).unwrap();
        match get(
            &client,
            &strict,
            format!("http://pinned.test:{target}/landing"),
            false,
        )
        .await
        {
            Err(SendError::Refused(refusal)) => {
                assert!(
                    refusal.to_string().contains("resolves to 127.0.0.1"),
                    "{refusal}"
                );
            }
            other => panic!("{other:?}"),
        }
        // A raw client call (no URL check) is still refused by the resolver.
        let error = client
            .get(format!("http://pinned.test:{target}/landing"))
            .send()
            .await
            .unwrap_err();
        assert!(describe_transport_error(&error).contains("egress policy refused"));
        assert!(landed.lock().unwrap().is_empty());
        // An IP literal is checked before the request (the resolver never sees it).
        match get(
            &client,
            &strict,
            format!("http://127.0.0.2:{target}/landing"),
            false,
        )
        .await
        {
            Err(SendError::Refused(_)) => {}
            other => panic!("{other:?}"),
        }

        // The same name allowed by name: the pinned address is really connected to.
        let (_egress, allowing) = guard(&["pinned.test"]);
        let client = build_client(&manifest(), &allowing, None).unwrap();
        let response = get(
            &client,
            &allowing,
            format!("http://pinned.test:{target}/landing"),
            false,
        )
        .await
        .unwrap();
        assert_eq!(response.text().await.unwrap(), "landed");
        assert_eq!(landed.lock().unwrap().len(), 1);
    }
}
