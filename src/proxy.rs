//! Egress through an HTTP(S) forward proxy, for networks that reach their schedulers only that
//! way.
//!
//! Off unless the operator opts in: `egress.proxy: {url, noProxy}` in the configuration, or
//! `egress.useEnvProxy: true` to take `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` (or their lower
//! case forms) from cattery's environment. A variable set by accident never redirects scheduler
//! traffic. A pool may override the choice in its manifest: `proxy: direct` (never through a
//! proxy) or `proxy: {url, noProxy}` (its own proxy).
//!
//! What the egress policy guarantees through a proxy: the target URL is still checked before
//! every call (scheme, credentials, IP literals, names that mean this machine, `allowHosts`) and
//! its host name is resolved and judged at registration, but the addresses a name resolves to at
//! connect time are the proxy's to choose, since the proxy resolves it. The operator's proxy
//! (from the configuration) is trusted: its own address is not judged. A proxy named in a
//! manifest is not: its URL must pass the policy at registration and its addresses when cattery
//! connects, like a scheduler's.

use crate::config::{EgressSettings, ProxySettings};

/// A proxy setting that cannot be used. Messages never carry the proxy's credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// Both `egress.proxy` and `egress.useEnvProxy` are set.
    #[error("egress.proxy and egress.useEnvProxy exclude each other: set one")]
    Both,
    /// The URL does not parse, or is not a plain http(s) origin.
    #[error("{key}: {problem}")]
    BadUrl {
        /// The setting or variable that holds it.
        key: String,
        /// What is wrong, without the URL's credentials.
        problem: String,
    },
}

/// Where one pool's scheduler calls go through, if anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRoute {
    /// The proxy for `https` targets (CONNECT tunnels).
    pub https: Option<url::Url>,
    /// The proxy for plain `http` targets.
    pub http: Option<url::Url>,
    /// Targets reached directly: `NO_PROXY` syntax (host names, `.suffix`, IPs, CIDRs, `*`).
    pub no_proxy: Vec<String>,
    /// True for the operator's own proxy (configuration or environment): its address is not
    /// judged by the egress policy. False for a proxy a manifest names.
    pub trusted: bool,
}

impl ProxyRoute {
    /// The host names of the proxies (IP literals are connected to without a lookup), for the
    /// egress resolver to let through when the route is trusted.
    pub fn host_names(&self) -> Vec<String> {
        self.https
            .iter()
            .chain(self.http.iter())
            .filter_map(|url| match url.host() {
                Some(url::Host::Domain(name)) => Some(name.to_ascii_lowercase()),
                _ => None,
            })
            .collect()
    }

    /// The route as reqwest proxies, in the order they are tried.
    ///
    /// # Errors
    /// When reqwest refuses a URL (already checked by [`parse_proxy_url`], so not expected).
    pub fn proxies(&self) -> reqwest::Result<Vec<reqwest::Proxy>> {
        let no_proxy = || reqwest::NoProxy::from_string(&self.no_proxy.join(","));
        let mut proxies = Vec::new();
        if let Some(url) = &self.https {
            let (bare, credentials) = split_credentials(url);
            proxies.push(with_credentials(
                reqwest::Proxy::https(bare.as_str())?.no_proxy(no_proxy()),
                credentials,
            ));
        }
        if let Some(url) = &self.http {
            let (bare, credentials) = split_credentials(url);
            proxies.push(with_credentials(
                reqwest::Proxy::http(bare.as_str())?.no_proxy(no_proxy()),
                credentials,
            ));
        }
        Ok(proxies)
    }
}

/// The URL without its user info, and the (percent-decoded) user and password it carried: sent
/// as `Proxy-Authorization: Basic`, on CONNECT and on plain-http requests alike.
fn split_credentials(url: &url::Url) -> (url::Url, Option<(String, String)>) {
    if url.username().is_empty() && url.password().is_none() {
        return (url.clone(), None);
    }
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    };
    let credentials = (
        decode(url.username()),
        decode(url.password().unwrap_or_default()),
    );
    let mut bare = url.clone();
    // Cannot fail on an http(s) URL with a host, which parse_proxy_url ensured.
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    (bare, Some(credentials))
}

fn with_credentials(
    proxy: reqwest::Proxy,
    credentials: Option<(String, String)>,
) -> reqwest::Proxy {
    match credentials {
        Some((user, password)) => proxy.basic_auth(&user, &password),
        None => proxy,
    }
}

/// A pool's own choice (`proxy` in its manifest).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ProxyChoice {
    /// No `proxy`: whatever the configuration says.
    #[default]
    Inherit,
    /// `proxy: direct`: never through a proxy.
    Direct,
    /// `proxy: {url, noProxy}`: this proxy, checked by the egress policy like a scheduler.
    Via {
        /// The proxy.
        url: url::Url,
        /// Targets reached directly.
        no_proxy: Vec<String>,
    },
}

impl ProxyChoice {
    /// The route of a pool making this choice under the operator's `gateway` route.
    pub fn route(&self, gateway: Option<&ProxyRoute>) -> Option<ProxyRoute> {
        match self {
            ProxyChoice::Inherit => gateway.cloned(),
            ProxyChoice::Direct => None,
            ProxyChoice::Via { url, no_proxy } => Some(ProxyRoute {
                https: Some(url.clone()),
                http: Some(url.clone()),
                no_proxy: no_proxy.clone(),
                trusted: false,
            }),
        }
    }
}

/// The operator's route from the `egress` settings, reading the environment through `var` when
/// `useEnvProxy` is on: `None` when no proxy is configured (the default).
///
/// # Errors
/// [`ProxyError`] for both settings at once or a URL that cannot be used.
pub fn from_settings(
    settings: &EgressSettings,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<ProxyRoute>, ProxyError> {
    match (&settings.proxy, settings.use_env_proxy) {
        (Some(_), true) => Err(ProxyError::Both),
        (Some(ProxySettings { url, no_proxy }), false) => {
            let url = parse_proxy_url(url, "egress.proxy.url", true)?;
            Ok(Some(ProxyRoute {
                https: Some(url.clone()),
                http: Some(url),
                no_proxy: no_proxy.clone(),
                trusted: true,
            }))
        }
        (None, true) => from_env(var),
        (None, false) => Ok(None),
    }
}

/// The route the standard variables describe (upper case first, then lower case; `ALL_PROXY`
/// serves both schemes when the specific one is unset).
fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<ProxyRoute>, ProxyError> {
    let read = |name: &str| {
        var(name)
            .or_else(|| var(&name.to_ascii_lowercase()))
            .filter(|value| !value.trim().is_empty())
            .map(|value| (name.to_owned(), value))
    };
    let url_of = |found: Option<(String, String)>| {
        found
            .map(|(name, value)| parse_proxy_url(value.trim(), &name, true))
            .transpose()
    };
    let all = read("ALL_PROXY");
    let https = url_of(read("HTTPS_PROXY").or_else(|| all.clone()))?;
    let http = url_of(read("HTTP_PROXY").or(all))?;
    if https.is_none() && http.is_none() {
        return Ok(None);
    }
    let no_proxy = read("NO_PROXY")
        .map(|(_, value)| {
            value
                .split(',')
                .map(str::trim)
                .filter(|entry| !entry.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(ProxyRoute {
        https,
        http,
        no_proxy,
        trusted: true,
    }))
}

/// Parses a proxy URL: `http` or `https`, a host, no path, query or fragment; credentials only
/// where `credentials_allowed` (the operator's configuration, not a manifest, whose text is not
/// sealed). Error messages never repeat the URL, which may hold a password.
///
/// # Errors
/// [`ProxyError::BadUrl`] naming `key`.
pub fn parse_proxy_url(
    text: &str,
    key: &str,
    credentials_allowed: bool,
) -> Result<url::Url, ProxyError> {
    let bad = |problem: &str| ProxyError::BadUrl {
        key: key.to_owned(),
        problem: problem.to_owned(),
    };
    let url = url::Url::parse(text)
        .map_err(|_| bad("not an absolute URL such as http://proxy.example:3128"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the proxy must be an http:// or https:// URL"));
    }
    if url.host().is_none() {
        return Err(bad("the proxy URL has no host"));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(bad("the proxy URL takes no path, query or fragment"));
    }
    if !credentials_allowed && (!url.username().is_empty() || url.password().is_some()) {
        return Err(bad(
            "a manifest cannot hold proxy credentials (its text is not sealed); set the proxy \
             with its credentials in the gateway's egress.proxy instead",
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(proxy: Option<(&str, &[&str])>, use_env: bool) -> EgressSettings {
        EgressSettings {
            allow_http: false,
            allow_hosts: Vec::new(),
            proxy: proxy.map(|(url, no_proxy)| ProxySettings {
                url: url.to_owned(),
                no_proxy: no_proxy.iter().map(|s| (*s).to_owned()).collect(),
            }),
            use_env_proxy: use_env,
        }
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn no_proxy_unless_the_operator_opts_in_even_with_the_variables_set() {
        let vars = env(&[
            ("HTTPS_PROXY", "http://proxy:3128"),
            ("HTTP_PROXY", "http://p:1"),
        ]);
        assert_eq!(from_settings(&settings(None, false), vars), Ok(None));
    }

    #[test]
    fn the_configured_proxy_serves_both_schemes_and_is_trusted() {
        let route = from_settings(
            &settings(Some(("http://user:pw@proxy.corp:3128", &[".corp"])), false),
            env(&[]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(route.https, route.http);
        assert_eq!(route.https.as_ref().unwrap().host_str(), Some("proxy.corp"));
        assert_eq!(route.no_proxy, [".corp"]);
        assert!(route.trusted);
        assert_eq!(route.host_names(), ["proxy.corp", "proxy.corp"]);
        assert_eq!(route.proxies().unwrap().len(), 2);
    }

    #[test]
    fn the_environment_is_read_upper_case_first_then_lower_case_then_all_proxy() {
        let route = from_settings(
            &settings(None, true),
            env(&[
                ("HTTPS_PROXY", "http://upper:1"),
                ("https_proxy", "http://lower:1"),
                ("all_proxy", "http://all:1"),
                ("no_proxy", "localhost, .internal,,10.0.0.0/8"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(route.https.unwrap().host_str(), Some("upper"));
        assert_eq!(route.http.unwrap().host_str(), Some("all"));
        assert_eq!(route.no_proxy, ["localhost", ".internal", "10.0.0.0/8"]);
        assert_eq!(
            from_settings(&settings(None, true), env(&[("NO_PROXY", "x")])),
            Ok(None)
        );
    }

    #[test]
    fn both_settings_at_once_are_refused() {
        assert_eq!(
            from_settings(&settings(Some(("http://p:1", &[])), true), env(&[])),
            Err(ProxyError::Both)
        );
    }

    #[test]
    fn bad_urls_are_refused_without_repeating_them() {
        for (text, word) in [
            ("proxy.corp", "absolute"),
            ("proxy:3128", "http:// or https://"),
            ("socks5://p:1", "http:// or https://"),
            ("http://p:1/path", "no path"),
            ("http://p:1/?q=1", "no path"),
        ] {
            let error = parse_proxy_url(text, "egress.proxy.url", true).unwrap_err();
            let message = error.to_string();
            assert!(message.starts_with("egress.proxy.url: "), "{message}");
            assert!(message.contains(word), "{text}: {message}");
        }
        let error = parse_proxy_url("http://user:s3cret@p:1", "proxy.url", false).unwrap_err();
        assert!(error.to_string().contains("credentials"));
        assert!(!error.to_string().contains("s3cret"));
        let error = from_settings(
            &settings(None, true),
            env(&[("HTTPS_PROXY", "ftp://user:s3cret@p:1")]),
        )
        .unwrap_err();
        assert!(error.to_string().starts_with("HTTPS_PROXY: "), "{error}");
        assert!(!error.to_string().contains("s3cret"));
    }

    #[test]
    fn a_manifest_choice_overrides_the_gateway_route() {
        let gateway = from_settings(&settings(Some(("http://p:1", &[])), false), env(&[]))
            .unwrap()
            .unwrap();
        assert_eq!(
            ProxyChoice::Inherit.route(Some(&gateway)),
            Some(gateway.clone())
        );
        assert_eq!(ProxyChoice::Direct.route(Some(&gateway)), None);
        let own = url::Url::parse("http://own:2").unwrap();
        let via = ProxyChoice::Via {
            url: own.clone(),
            no_proxy: vec!["x".into()],
        }
        .route(None)
        .unwrap();
        assert_eq!(via.https, Some(own));
        assert!(!via.trusted);
    }
}
