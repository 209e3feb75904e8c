//! The HTTP client for scheduler calls: built per manifest, no redirects, capped reads.

use crate::manifest::Manifest;
use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;

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

/// Installs the process-wide TLS crypto provider (ring). Call once before building clients;
/// later calls are harmless.
pub fn install_crypto_provider() {
    // An error only means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds the client for one manifest: its extra trust root, no redirects, a user agent.
///
/// # Errors
/// When the CA certificate does not parse.
pub fn build_client(manifest: &Manifest) -> Result<reqwest::Client, ClientError> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("cattery/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(10));
    if let Some(pem) = &manifest.ca_cert_pem {
        let cert =
            reqwest::Certificate::from_pem(pem.as_bytes()).map_err(|_| ClientError::BadCaCert)?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build().map_err(ClientError::Build)
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
    if error.is_timeout() {
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
/// `RateLimit-Reset` (seconds).
pub fn retry_after_ms(headers: &HeaderMap, now: DateTime<Utc>) -> Option<u64> {
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
        assert_eq!(retry_after_ms(&HeaderMap::new(), now), None);
    }
}
