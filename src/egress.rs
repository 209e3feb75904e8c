//! The egress policy: which URLs and addresses cattery may call, checked at registration, before
//! every request (and every redirect hop) and after every DNS resolution.
//!
//! By default only `https` to public addresses is allowed. A URL is parsed first (WHATWG rules
//! through `url`, so decimal, octal, hex, percent-encoded and trailing-dot hosts arrive here
//! already normalised) and its host checked:
//!
//! * an IP literal is classified at once ([`classify`]): loopback, private, shared (CGNAT),
//!   link-local, unique-local, site-local, multicast, documentation, benchmarking, reserved and
//!   unspecified addresses are refused, and so are IPv6 forms that embed a refused IPv4 address
//!   (IPv4-mapped, IPv4-compatible, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`);
//! * `localhost` and `*.localhost` always mean this machine and are treated as loopback;
//! * any other name is resolved at registration (a name resolving only to refused addresses is
//!   refused then; one that does not resolve is accepted, DNS may be down for a moment) and
//!   checked again when cattery connects: the resolver installed in every scheduler client
//!   ([`EgressGuard::resolver`]) drops every resolved address the policy refuses, so a name
//!   that resolves (or is rebound) to an internal address cannot be reached. A name that does
//!   not resolve when cattery connects is a transient fault ([`Unresolved`]), retried with
//!   backoff like a refused connection, not a refusal.
//!
//! Cloud metadata services (`169.254.169.254`, `169.254.170.2`, `100.100.100.200`,
//! `fd00:ec2::254`, `metadata.google.internal`) and unspecified addresses are refused always.
//! Operators widen the rest with `egress.allowHosts` (an exact host, a `.suffix` matching the
//! domain and its subdomains, or a CIDR matching the addresses connected to) and
//! `egress.allowHttp`. An exact IP entry matches a URL that names that address; a name that
//! resolves into a private network needs its name or a CIDR listed.

use crate::config::EgressSettings;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};

/// Why a URL, a name or an address is refused. Messages name hosts and addresses, never paths,
/// queries or credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A scheme other than https (or http when allowed).
    #[error(
        "the scheme {scheme:?} is not allowed: use https{}",
        if *.http_allowed { " or http" } else { " (plain http needs egress.allowHttp: true)" }
    )]
    Scheme {
        /// The URL's scheme.
        scheme: String,
        /// Whether http would have been accepted.
        http_allowed: bool,
    },
    /// The URL carries a user name or password.
    #[error("the URL carries credentials (user:password@host); put them in the manifest's auth")]
    Credentials,
    /// The URL has no host.
    #[error("the URL has no host")]
    NoHost,
    /// The URL names a refused address (or a name that always means one).
    #[error("{host} is {class}{}", hint(*.allowable))]
    Address {
        /// The host as written in the URL (normalised).
        host: String,
        /// What kind of address it is, e.g. "127.0.0.1, a loopback address".
        class: String,
        /// Whether `egress.allowHosts` can allow it.
        allowable: bool,
    },
    /// A name is a cloud metadata service.
    #[error("{host} is a cloud metadata service, which is never allowed")]
    MetadataName {
        /// The name.
        host: String,
    },
    /// Every address a name resolved to is refused.
    #[error("{host} resolves to {class}{}", hint(*.allowable))]
    Resolved {
        /// The name.
        host: String,
        /// The first refused address and its kind.
        class: String,
        /// Whether `egress.allowHosts` can allow it.
        allowable: bool,
    },
}

/// A name that did not resolve when cattery asked. Not a [`Refusal`]: DNS can be down or slow
/// for a moment, so the call is retried with backoff (and counts against the scheduler's health)
/// instead of failing the run at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot resolve {host}")]
pub struct Unresolved {
    /// The name.
    pub host: String,
}

/// Why a name yields no address to connect to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The policy refuses every address the name resolved to: permanent until the policy or
    /// the name's records change.
    #[error(transparent)]
    Refused(Refusal),
    /// The name did not resolve: transient.
    #[error(transparent)]
    Unresolved(Unresolved),
}

fn hint(allowable: bool) -> &'static str {
    if allowable {
        ", which the egress policy refuses; list it in egress.allowHosts to allow it"
    } else {
        ", which is never allowed"
    }
}

/// A bad `egress.allowHosts` entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "egress.allowHosts entry {entry:?} is not a host name, a .suffix, an IP address or a CIDR: {reason}"
)]
pub struct BadEntry {
    /// The entry as configured.
    pub entry: String,
    /// What is wrong.
    pub reason: String,
}

/// An IP network (`10.0.0.0/8`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `addr/prefix`; host bits are cleared.
    ///
    /// # Errors
    /// A description when the address or the prefix length is invalid.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| "a CIDR is address/prefix".to_owned())?;
        let addr: IpAddr = addr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("the prefix length must be 0 to {max}"))?;
        Ok(Cidr {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// True when `ip` is inside the network (an IPv4 network never contains an IPv6 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.prefix) == self.addr
            }
            _ => false,
        }
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let kept = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & kept))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & kept))
        }
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u8) -> bool {
    mask(IpAddr::V4(ip), prefix) == IpAddr::V4(Ipv4Addr::from(net))
}

fn in_v6(ip: Ipv6Addr, net: u128, prefix: u8) -> bool {
    mask(IpAddr::V6(ip), prefix) == IpAddr::V6(Ipv6Addr::from(net))
}

/// What the policy thinks of one address, before any allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// A public address: allowed.
    Public,
    /// Refused by default.
    Refused {
        /// For example "a loopback address".
        kind: &'static str,
        /// The IPv4 address an IPv6 form embeds, when that is what is refused.
        embedded: Option<Ipv4Addr>,
        /// Whether an allow-list entry may allow it (false for metadata and unspecified).
        allowable: bool,
    },
}

const METADATA_V4: [Ipv4Addr; 3] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(100, 100, 100, 200),
];
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
/// Names of cloud metadata services, refused without a lookup.
const METADATA_NAMES: [&str; 4] = [
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
];

fn refused(kind: &'static str) -> Class {
    Class::Refused {
        kind,
        embedded: None,
        allowable: true,
    }
}

fn never(kind: &'static str) -> Class {
    Class::Refused {
        kind,
        embedded: None,
        allowable: false,
    }
}

/// Classifies an IPv4 address.
pub fn classify_v4(ip: Ipv4Addr) -> Class {
    if METADATA_V4.contains(&ip) {
        return never("a cloud metadata service address");
    }
    let ranges: [([u8; 4], u8, &'static str, bool); 17] = [
        (
            [0, 0, 0, 0],
            8,
            "an unspecified (\"this network\") address",
            false,
        ),
        ([127, 0, 0, 0], 8, "a loopback address", true),
        ([10, 0, 0, 0], 8, "a private address", true),
        ([172, 16, 0, 0], 12, "a private address", true),
        ([192, 168, 0, 0], 16, "a private address", true),
        (
            [100, 64, 0, 0],
            10,
            "a shared (carrier-grade NAT) address",
            true,
        ),
        ([169, 254, 0, 0], 16, "a link-local address", true),
        (
            [192, 0, 0, 0],
            24,
            "an IETF protocol assignment address",
            true,
        ),
        ([192, 0, 2, 0], 24, "a documentation address", true),
        ([198, 51, 100, 0], 24, "a documentation address", true),
        ([203, 0, 113, 0], 24, "a documentation address", true),
        ([198, 18, 0, 0], 15, "a benchmarking address", true),
        ([192, 88, 99, 0], 24, "a 6to4 relay anycast address", true),
        ([224, 0, 0, 0], 4, "a multicast address", true),
        ([255, 255, 255, 255], 32, "the broadcast address", true),
        ([240, 0, 0, 0], 4, "a reserved address", true),
        ([192, 31, 196, 0], 24, "an AS112 address", true),
    ];
    for (net, prefix, kind, allowable) in ranges {
        if in_v4(ip, net, prefix) {
            return Class::Refused {
                kind,
                embedded: None,
                allowable,
            };
        }
    }
    Class::Public
}

/// The IPv4 address an IPv6 form carries: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-translated
/// (`::ffff:0:a.b.c.d`), NAT64 (`64:ff9b::/96`), 6to4 (`2002::/16`) and IPv4-compatible
/// (`::a.b.c.d`).
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    if in_v6(ip, 0xffff_u128 << 32, 96)
        || in_v6(ip, 0xffff_u128 << 48, 96)
        || in_v6(ip, 0x0064_ff9b_u128 << 96, 96)
    {
        return Some(low32);
    }
    if in_v6(ip, 0x2002_u128 << 112, 16) {
        return Some(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32));
    }
    if in_v6(ip, 0, 96) && bits > 1 {
        return Some(low32);
    }
    None
}

/// Classifies an IPv6 address; forms that embed an IPv4 address are judged by it.
pub fn classify_v6(ip: Ipv6Addr) -> Class {
    if ip == METADATA_V6 {
        return never("a cloud metadata service address");
    }
    if ip.is_unspecified() {
        return never("the unspecified address");
    }
    if ip.is_loopback() {
        return refused("a loopback address");
    }
    if let Some(v4) = embedded_v4(ip) {
        return match classify_v4(v4) {
            Class::Refused {
                kind, allowable, ..
            } => Class::Refused {
                kind,
                embedded: Some(v4),
                allowable,
            },
            // The deprecated IPv4-compatible form is never routed publicly.
            Class::Public if in_v6(ip, 0, 96) => refused("an IPv4-compatible address (deprecated)"),
            Class::Public => Class::Public,
        };
    }
    let ranges: [(u128, u8, &'static str); 11] = [
        (0x0064_ff9b_0001_u128 << 80, 48, "a local-use NAT64 address"),
        (0x0100_u128 << 112, 64, "a discard-only address"),
        (0x2001_0db8_u128 << 96, 32, "a documentation address"),
        (0x2001_0002_u128 << 96, 48, "a benchmarking address"),
        (0x2001_u128 << 112, 32, "a Teredo tunnel address"),
        (0xfc00_u128 << 112, 7, "a unique-local address"),
        (0xfe80_u128 << 112, 10, "a link-local address"),
        (0xfec0_u128 << 112, 10, "a site-local address (deprecated)"),
        (0xff00_u128 << 112, 8, "a multicast address"),
        (0x3fff_u128 << 112, 20, "a documentation address"),
        (0x5f00_u128 << 112, 16, "a segment-routing address"),
    ];
    for (net, prefix, kind) in ranges {
        if in_v6(ip, net, prefix) {
            return refused(kind);
        }
    }
    // Everything outside global unicast 2000::/3 is reserved.
    if !in_v6(ip, 0x2000_u128 << 112, 3) {
        return refused("a reserved address");
    }
    Class::Public
}

/// Classifies an address.
pub fn classify(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn describe(ip: IpAddr, class: &Class) -> String {
    match class {
        Class::Public => format!("{ip}, a public address"),
        Class::Refused {
            kind,
            embedded: Some(v4),
            ..
        } => format!("{ip}, which embeds {v4}, {kind}"),
        Class::Refused { kind, .. } => format!("{ip}, {kind}"),
    }
}

/// One `allowHosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    /// A host name, matched exactly (case-insensitively, ignoring a trailing dot).
    Host(String),
    /// `.example.com`: the domain and every subdomain.
    Suffix(String),
    /// An IP address, matched against IP-literal URL hosts.
    Ip(IpAddr),
    /// A network, matched against every address connected to.
    Net(Cidr),
}

fn parse_rule(entry: &str) -> Result<Rule, BadEntry> {
    let bad = |reason: &str| BadEntry {
        entry: entry.to_owned(),
        reason: reason.to_owned(),
    };
    let text = entry.trim();
    if text.is_empty() {
        return Err(bad("it is empty"));
    }
    if text.contains("://") || text.contains('@') || text.contains('*') {
        return Err(bad(
            "write a bare host (pool.corp), a suffix (.corp) or a CIDR (10.0.0.0/8)",
        ));
    }
    if text.contains('/') {
        return Cidr::parse(text).map(Rule::Net).map_err(|r| bad(&r));
    }
    if let Ok(ip) = text
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(Rule::Ip(canonical_ip(ip)));
    }
    let (suffix, name) = match text.strip_prefix('.') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let name = match url::Host::parse(name) {
        Ok(url::Host::Domain(domain)) => normalise_name(&domain),
        Ok(url::Host::Ipv4(ip)) if !suffix => return Ok(Rule::Ip(IpAddr::V4(ip))),
        _ => return Err(bad("it is not a valid host name")),
    };
    if name.is_empty() {
        return Err(bad("it is not a valid host name"));
    }
    Ok(if suffix {
        Rule::Suffix(name)
    } else {
        Rule::Host(name)
    })
}

/// Lower case, without one trailing dot.
fn normalise_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// IPv4-mapped IPv6 addresses are compared as the IPv4 address they carry.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// True for names that always mean this machine (RFC 6761).
fn is_loopback_name(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost")
}

/// The rules from `egress.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    allow_http: bool,
    rules: Vec<Rule>,
}

impl EgressPolicy {
    /// The policy of the `egress` settings.
    ///
    /// # Errors
    /// [`BadEntry`] for the first `allowHosts` entry that is not a host, suffix, IP or CIDR.
    pub fn from_settings(settings: &EgressSettings) -> Result<EgressPolicy, BadEntry> {
        let rules = settings
            .allow_hosts
            .iter()
            .map(|entry| parse_rule(entry))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EgressPolicy {
            allow_http: settings.allow_http,
            rules,
        })
    }

    /// True when an `allowHosts` host or suffix entry names `name`.
    fn name_allowed(&self, name: &str) -> bool {
        let name = normalise_name(name);
        self.rules.iter().any(|rule| match rule {
            Rule::Host(host) => *host == name,
            Rule::Suffix(suffix) => {
                name == *suffix
                    || name
                        .strip_suffix(suffix.as_str())
                        .is_some_and(|rest| rest.ends_with('.'))
            }
            Rule::Ip(_) | Rule::Net(_) => false,
        })
    }

    fn net_allowed(&self, ip: IpAddr, class: &Class) -> bool {
        let embedded = match class {
            Class::Refused {
                embedded: Some(v4), ..
            } => Some(IpAddr::V4(*v4)),
            _ => None,
        };
        self.rules.iter().any(|rule| match rule {
            Rule::Net(net) => net.contains(ip) || embedded.is_some_and(|v4| net.contains(v4)),
            _ => false,
        })
    }

    /// Judges one address reached through `name` (a URL host or a resolved name):
    /// `Ok(())` when allowed, else the refused address described.
    fn judge(&self, ip: IpAddr, exact_allowed: bool) -> Result<(), (String, bool)> {
        let ip = canonical_ip(ip);
        let class = classify(ip);
        match &class {
            Class::Public => Ok(()),
            Class::Refused {
                allowable: false, ..
            } => Err((describe(ip, &class), false)),
            Class::Refused { .. } if exact_allowed || self.net_allowed(ip, &class) => Ok(()),
            Class::Refused { .. } => Err((describe(ip, &class), true)),
        }
    }

    /// Checks a URL before anything is sent to it: scheme, credentials, and the host when it is
    /// an IP literal or a name that always means this machine. Other names are checked when
    /// they are resolved ([`EgressPolicy::filter_resolved`]).
    ///
    /// # Errors
    /// The [`Refusal`].
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refusal> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            other => {
                return Err(Refusal::Scheme {
                    scheme: other.to_owned(),
                    http_allowed: self.allow_http,
                });
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refusal::Credentials);
        }
        let host = url.host().ok_or(Refusal::NoHost)?;
        let (ip, exact) = match host {
            url::Host::Domain(domain) => {
                let name = normalise_name(domain);
                if name.is_empty() {
                    return Err(Refusal::NoHost);
                }
                if METADATA_NAMES.contains(&name.as_str()) {
                    return Err(Refusal::MetadataName { host: name });
                }
                if self.name_allowed(&name) || !is_loopback_name(&name) {
                    return Ok(());
                }
                // localhost always resolves to the loopback addresses; judge it as one.
                let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
                return self
                    .judge(loopback, false)
                    .map_err(|(_, allowable)| Refusal::Address {
                        host: name,
                        class: "a loopback name (it always means this machine)".to_owned(),
                        allowable,
                    });
            }
            url::Host::Ipv4(v4) => (IpAddr::V4(v4), false),
            url::Host::Ipv6(v6) => (IpAddr::V6(v6), false),
        };
        let ip = canonical_ip(ip);
        let exact = exact || self.rules.contains(&Rule::Ip(ip));
        self.judge(ip, exact)
            .map_err(|(class, allowable)| Refusal::Address {
                host: host.to_string(),
                class,
                allowable,
            })
    }

    /// The addresses `name` resolved to that the policy allows (empty only when `addrs` is:
    /// a name without addresses is a lookup failure, which the resolver reports as
    /// [`Unresolved`], not a refusal).
    ///
    /// # Errors
    /// [`Refusal::Resolved`] naming the first refused address when none is allowed.
    pub fn filter_resolved(&self, name: &str, addrs: &[IpAddr]) -> Result<Vec<IpAddr>, Refusal> {
        let host = normalise_name(name);
        if METADATA_NAMES.contains(&host.as_str()) {
            return Err(Refusal::MetadataName { host });
        }
        let exact = self.name_allowed(&host);
        let mut first_refused = None;
        let mut kept = Vec::new();
        for ip in addrs {
            match self.judge(*ip, exact) {
                Ok(()) => kept.push(*ip),
                Err(refused) => {
                    first_refused.get_or_insert(refused);
                }
            }
        }
        match (kept.is_empty(), first_refused) {
            (true, Some((class, allowable))) => Err(Refusal::Resolved {
                host,
                class,
                allowable,
            }),
            _ => Ok(kept),
        }
    }
}

/// The policy shared by all pools, with the pools exempted by cattery itself (the built-in
/// local pool) and names pinned to addresses.
#[derive(Debug, Default)]
pub struct Egress {
    policy: Arc<EgressPolicy>,
    exempt: RwLock<HashMap<String, url::Origin>>,
    pins: Arc<RwLock<HashMap<String, Vec<IpAddr>>>>,
    /// The operator's proxy (`egress.proxy` or the environment), if any.
    proxy: Option<crate::proxy::ProxyRoute>,
}

impl Egress {
    /// The shared egress state for a policy.
    pub fn new(policy: EgressPolicy) -> Egress {
        Egress {
            policy: Arc::new(policy),
            ..Egress::default()
        }
    }

    /// The shared egress state for a policy and the operator's proxy route.
    pub fn with_proxy(policy: EgressPolicy, proxy: Option<crate::proxy::ProxyRoute>) -> Egress {
        Egress {
            proxy,
            ..Egress::new(policy)
        }
    }

    /// The policy.
    pub fn policy(&self) -> &EgressPolicy {
        &self.policy
    }

    /// The guard and the proxy route of one pool: the pool's own `proxy` choice over the
    /// operator's; never a proxy for an exempt pool (cattery's own listener). The resolver of a
    /// pool that goes through the operator's proxy lets that proxy's name through unjudged; a
    /// proxy a manifest names is judged like a scheduler.
    pub fn route(
        &self,
        pool: &str,
        choice: &crate::proxy::ProxyChoice,
    ) -> (Arc<EgressGuard>, Option<crate::proxy::ProxyRoute>) {
        let guard = self.guard(pool);
        if guard.exempt.is_some() {
            return (guard, None);
        }
        let route = choice.route(self.proxy.as_ref());
        let trusted_hosts = route
            .as_ref()
            .filter(|route| route.trusted)
            .map(crate::proxy::ProxyRoute::host_names)
            .unwrap_or_default();
        if trusted_hosts.is_empty() {
            return (guard, route);
        }
        let guard = Arc::new(EgressGuard {
            policy: guard.policy.clone(),
            exempt: None,
            pins: guard.pins.clone(),
            trusted_hosts,
        });
        (guard, route)
    }

    /// Exempts one origin of one pool from the policy: used by cattery for its own built-in
    /// local pool, whose address is cattery's own listener.
    pub fn exempt(&self, pool: &str, origin: url::Origin) {
        self.exempt
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(pool.to_owned(), origin);
    }

    /// Resolves `name` to `addrs` instead of asking the system resolver (an `/etc/hosts` for
    /// cattery's scheduler calls, used by embedders and tests). Pinned addresses are checked
    /// like any other.
    pub fn pin(&self, name: &str, addrs: Vec<IpAddr>) {
        self.pins
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(normalise_name(name), addrs);
    }

    /// The guard of one pool: the policy plus the pool's exemption, if any.
    pub fn guard(&self, pool: &str) -> Arc<EgressGuard> {
        let exempt = self
            .exempt
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(pool)
            .cloned();
        Arc::new(EgressGuard {
            policy: self.policy.clone(),
            exempt,
            pins: self.pins.clone(),
            trusted_hosts: Vec::new(),
        })
    }

    /// Checks the URLs a manifest names (`baseUrl`, an OAuth2 `tokenUrl`) for a pool about to
    /// be registered, resolving their host names ([`EgressGuard::check_registration`]): every
    /// refusal as `(manifest path, message)`.
    pub async fn check_manifest(
        &self,
        pool: &str,
        manifest: &crate::manifest::Manifest,
    ) -> Vec<(String, String)> {
        let guard = self.guard(pool);
        let mut urls = vec![("baseUrl", &manifest.base_url)];
        if let crate::manifest::Auth::OAuth2ClientCredentials { token_url, .. } = &manifest.auth {
            urls.push(("auth.tokenUrl", token_url));
        }
        if let crate::proxy::ProxyChoice::Via { url, .. } = &manifest.proxy {
            urls.push(("proxy.url", url));
        }
        let mut problems = Vec::new();
        for (path, url) in urls {
            if let Err(refusal) = guard.check_registration(url).await {
                problems.push((
                    path.to_owned(),
                    format!("the egress policy refuses this URL: {refusal}"),
                ));
            }
        }
        if manifest.insecure_skip_verify {
            problems.push((
                "tls.insecureSkipVerify".to_owned(),
                "the egress policy never turns certificate checks off; give the scheduler's CA \
                 in tls.caCertPem instead"
                    .to_owned(),
            ));
        }
        problems
    }
}

/// How long registration waits for a host name to resolve before accepting it unresolved.
pub const REGISTRATION_LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The policy as one pool sees it; builds the resolver of the pool's HTTP client.
#[derive(Debug)]
pub struct EgressGuard {
    policy: Arc<EgressPolicy>,
    exempt: Option<url::Origin>,
    pins: Arc<RwLock<HashMap<String, Vec<IpAddr>>>>,
    /// The names of the operator's proxies this pool goes through: resolved, not judged.
    trusted_hosts: Vec<String>,
}

impl EgressGuard {
    /// A guard with no exemption and no pins.
    pub fn of(policy: EgressPolicy) -> Arc<EgressGuard> {
        Egress::new(policy).guard("")
    }

    /// [`EgressPolicy::check_url`], except for the pool's exempt origin.
    ///
    /// # Errors
    /// The [`Refusal`].
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refusal> {
        if self.exempt.as_ref().is_some_and(|o| *o == url.origin()) {
            return Ok(());
        }
        self.policy.check_url(url)
    }

    /// The check made when a pool is registered: [`EgressGuard::check_url`], and for a host
    /// name the addresses it resolves to now, so that the operator sees a name pointing at a
    /// refused address when registering rather than as failing calls later. The check at
    /// connect time stays (DNS answers change). A name that does not resolve now (or not
    /// within [`REGISTRATION_LOOKUP_TIMEOUT`]) is not refused: DNS may be down for a moment.
    ///
    /// # Errors
    /// The [`Refusal`]; for a name that always means this machine and resolves to a refused
    /// address, the refusal names that address.
    pub async fn check_registration(&self, url: &url::Url) -> Result<(), Refusal> {
        let checked = self.check_url(url);
        let Some(url::Host::Domain(name)) = url.host() else {
            return checked;
        };
        match &checked {
            // A loopback name: what it resolves to is the more useful explanation.
            Ok(()) | Err(Refusal::Address { .. }) => {}
            Err(_) => return checked,
        }
        match tokio::time::timeout(REGISTRATION_LOOKUP_TIMEOUT, self.resolve(name)).await {
            Ok(Err(ResolveError::Refused(refusal))) => Err(refusal),
            Ok(Ok(_) | Err(ResolveError::Unresolved(_))) | Err(_) => checked,
        }
    }

    fn exempt_host(&self, name: &str) -> bool {
        match &self.exempt {
            Some(url::Origin::Tuple(_, url::Host::Domain(host), _)) => {
                normalise_name(host) == normalise_name(name)
            }
            _ => false,
        }
    }

    /// The DNS resolver for the pool's client: resolves with the system resolver (or a pin) and
    /// keeps only the addresses the policy allows.
    pub fn resolver(self: &Arc<Self>) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver {
            guard: self.clone(),
        })
    }

    /// Resolves `name` (a pin, else the system resolver) and keeps the addresses the policy
    /// allows.
    ///
    /// # Errors
    /// [`ResolveError::Unresolved`] when the lookup fails or yields nothing (transient),
    /// [`ResolveError::Refused`] when the policy refuses every address.
    pub async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let host = normalise_name(name);
        let pinned = self
            .pins
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&host)
            .cloned();
        let unresolved = || ResolveError::Unresolved(Unresolved { host: host.clone() });
        let addrs: Vec<IpAddr> = match pinned {
            Some(addrs) => addrs,
            None => tokio::net::lookup_host((name, 0))
                .await
                .map_err(|_| unresolved())?
                .map(|addr| addr.ip())
                .collect(),
        };
        if addrs.is_empty() {
            return Err(unresolved());
        }
        if self.exempt_host(&host) || self.trusted_hosts.contains(&host) {
            return Ok(addrs);
        }
        self.policy
            .filter_resolved(&host, &addrs)
            .map_err(ResolveError::Refused)
    }
}

/// The resolver installed in scheduler clients ([`reqwest::dns::Resolve`]).
pub struct GuardedResolver {
    guard: Arc<EgressGuard>,
}

impl fmt::Debug for GuardedResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GuardedResolver")
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard.clone();
        let name = name.as_str().to_owned();
        Box::pin(async move {
            match guard.resolve(&name).await {
                Ok(addrs) => {
                    let addrs: reqwest::dns::Addrs =
                        Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
                    Ok(addrs)
                }
                // The inner error itself is boxed, so that `refusal_in` and `unresolved_in`
                // find it in the HTTP client's error chain.
                Err(ResolveError::Refused(refusal)) => {
                    let error: Box<dyn std::error::Error + Send + Sync> = Box::new(refusal);
                    Err(error)
                }
                Err(ResolveError::Unresolved(unresolved)) => {
                    let error: Box<dyn std::error::Error + Send + Sync> = Box::new(unresolved);
                    Err(error)
                }
            }
        })
    }
}

/// The egress refusal somewhere in an error's source chain (how a resolver refusal comes back
/// out of the HTTP client).
pub fn refusal_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refusal> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(refusal) = e.downcast_ref::<Refusal>() {
            return Some(refusal);
        }
        current = e.source();
    }
    None
}

/// The failed name lookup somewhere in an error's source chain (a transient fault).
pub fn unresolved_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Unresolved> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(unresolved) = e.downcast_ref::<Unresolved>() {
            return Some(unresolved);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a case expects: allowed, or refused with a message containing this text.
    #[derive(Debug, Clone, Copy)]
    enum Expect {
        Allowed,
        Refused(&'static str),
    }
    use Expect::{Allowed, Refused};

    fn policy(allow_http: bool, hosts: &[&str]) -> EgressPolicy {
        EgressPolicy::from_settings(&EgressSettings {
            allow_http,
            allow_hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            ..EgressSettings::default()
        })
        .unwrap()
    }

    /// The whole verdict on a URL: the check made at registration and before every request,
    /// then, for a name, the check of the addresses it resolves to when cattery connects.
    fn verdict(policy: &EgressPolicy, url: &str, resolves_to: &[&str]) -> Result<(), String> {
        let url = url::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
        policy.check_url(&url).map_err(|e| e.to_string())?;
        if let Some(url::Host::Domain(name)) = url.host() {
            let addrs: Vec<IpAddr> = resolves_to.iter().map(|a| a.parse().unwrap()).collect();
            policy
                .filter_resolved(name, &addrs)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn check_table(policy: &EgressPolicy, table: &[(&str, &[&str], Expect)]) {
        let mut failures = Vec::new();
        for (url, resolves_to, expect) in table {
            let got = verdict(policy, url, resolves_to);
            let ok = match (expect, &got) {
                (Allowed, Ok(())) => true,
                (Refused(text), Err(message)) => message.contains(text),
                _ => false,
            };
            if !ok {
                failures.push(format!(
                    "{url} {resolves_to:?}: expected {expect:?}, got {got:?}"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    const PUBLIC: &[&str] = &["93.184.216.34"];
    const NONE: &[&str] = &[];

    #[test]
    fn the_default_policy_allows_only_https_to_public_addresses_in_every_encoding() {
        let table: &[(&str, &[&str], Expect)] = &[
            ("https://scheduler.example.com/", PUBLIC, Allowed),
            (
                "https://scheduler.example.com:8443/api",
                &["2606:2800:220:1::1"],
                Allowed,
            ),
            ("https://8.8.8.8/", NONE, Allowed),
            ("https://[2606:4700::1111]/", NONE, Allowed),
            ("https://172.32.0.1/", NONE, Allowed),
            ("https://[64:ff9b::808:808]/", NONE, Allowed),
            // Scheme and credentials.
            (
                "http://scheduler.example.com/",
                PUBLIC,
                Refused("scheme \"http\""),
            ),
            (
                "ftp://scheduler.example.com/",
                PUBLIC,
                Refused("scheme \"ftp\""),
            ),
            (
                "https://user:pw@scheduler.example.com/",
                PUBLIC,
                Refused("credentials"),
            ),
            (
                "https://user@scheduler.example.com/",
                PUBLIC,
                Refused("credentials"),
            ),
            // Loopback in every IPv4 spelling the URL parser accepts.
            (
                "https://127.0.0.1/",
                NONE,
                Refused("127.0.0.1, a loopback address"),
            ),
            (
                "https://127.1/",
                NONE,
                Refused("127.0.0.1, a loopback address"),
            ),
            (
                "https://2130706433/",
                NONE,
                Refused("127.0.0.1, a loopback address"),
            ),
            (
                "https://0x7f000001/",
                NONE,
                Refused("127.0.0.1, a loopback address"),
            ),
            (
                "https://0x7f.0.0.1/",
                NONE,
                Refused("127.0.0.1, a loopback address"),
            ),
            (
                "https://017700000001/",
                NONE,
                Refused("127.0.0.1, a loopback address"),
            ),
            (
                "https://0177.0.0.01/",
                NONE,
                Refused("127.0.0.1, a loopback address"),
            ),
            (
                "https://%31%32%37.0.0.1/",
                NONE,
                Refused("127.0.0.1, a loopback address"),
            ),
            (
                "https://127.0.0.1./",
                NONE,
                Refused("127.0.0.1, a loopback address"),
            ),
            (
                "https://127.0.0.1\\@evil.example/",
                NONE,
                Refused("127.0.0.1"),
            ),
            (
                "https://\u{ff11}\u{ff12}\u{ff17}.\u{ff10}.\u{ff10}.\u{ff11}/",
                NONE,
                Refused("127.0.0.1, a loopback address"),
            ),
            (
                "https://127.255.255.254/",
                NONE,
                Refused("a loopback address"),
            ),
            // Names that always mean this machine.
            (
                "https://localhost/",
                NONE,
                Refused("localhost is a loopback name"),
            ),
            (
                "https://localhost./",
                NONE,
                Refused("localhost is a loopback name"),
            ),
            (
                "https://LOCALHOST:8443/",
                NONE,
                Refused("localhost is a loopback name"),
            ),
            (
                "https://loc\talhost/",
                NONE,
                Refused("localhost is a loopback name"),
            ),
            (
                "https://%6c%6f%63alhost/",
                NONE,
                Refused("localhost is a loopback name"),
            ),
            (
                "https://\u{24db}ocalhost/",
                NONE,
                Refused("localhost is a loopback name"),
            ),
            (
                "https://api.localhost/",
                NONE,
                Refused("api.localhost is a loopback name"),
            ),
            // IPv6 and IPv6 forms that carry an IPv4 address.
            ("https://[::1]/", NONE, Refused("a loopback address")),
            (
                "https://[0:0:0:0:0:0:0:1]/",
                NONE,
                Refused("a loopback address"),
            ),
            (
                "https://[::ffff:127.0.0.1]/",
                NONE,
                Refused("127.0.0.1, a loopback address"),
            ),
            (
                "https://[0:0:0:0:0:ffff:7f00:1]/",
                NONE,
                Refused("127.0.0.1, a loopback address"),
            ),
            (
                "https://[::ffff:0:7f00:1]/",
                NONE,
                Refused("embeds 127.0.0.1, a loopback address"),
            ),
            (
                "https://[::127.0.0.1]/",
                NONE,
                Refused("embeds 127.0.0.1, a loopback address"),
            ),
            ("https://[::8.8.8.8]/", NONE, Refused("IPv4-compatible")),
            (
                "https://[64:ff9b::7f00:1]/",
                NONE,
                Refused("embeds 127.0.0.1, a loopback address"),
            ),
            (
                "https://[64:ff9b::a00:1]/",
                NONE,
                Refused("embeds 10.0.0.1, a private address"),
            ),
            ("https://[64:ff9b:1::1]/", NONE, Refused("local-use NAT64")),
            (
                "https://[2002:7f00:1::]/",
                NONE,
                Refused("embeds 127.0.0.1, a loopback address"),
            ),
            (
                "https://[2002:c0a8:101::1]/",
                NONE,
                Refused("embeds 192.168.1.1, a private address"),
            ),
            (
                "https://[::]/",
                NONE,
                Refused("unspecified address, which is never allowed"),
            ),
            ("https://[fe80::1]/", NONE, Refused("a link-local address")),
            (
                "https://[fc00::1]/",
                NONE,
                Refused("a unique-local address"),
            ),
            (
                "https://[fd12:3456::1]/",
                NONE,
                Refused("a unique-local address"),
            ),
            ("https://[fec0::1]/", NONE, Refused("site-local")),
            ("https://[ff02::1]/", NONE, Refused("a multicast address")),
            (
                "https://[2001:db8::1]/",
                NONE,
                Refused("a documentation address"),
            ),
            ("https://[2001::1]/", NONE, Refused("Teredo")),
            ("https://[100::1]/", NONE, Refused("discard-only")),
            // Private, shared, special IPv4 ranges.
            ("https://10.0.0.1/", NONE, Refused("a private address")),
            ("https://172.16.5.4/", NONE, Refused("a private address")),
            ("https://192.168.1.1/", NONE, Refused("a private address")),
            ("https://100.64.0.1/", NONE, Refused("carrier-grade NAT")),
            (
                "https://169.254.1.1/",
                NONE,
                Refused("a link-local address"),
            ),
            ("https://0.0.0.0/", NONE, Refused("unspecified")),
            ("https://0/", NONE, Refused("unspecified")),
            ("https://224.0.0.1/", NONE, Refused("a multicast address")),
            (
                "https://255.255.255.255/",
                NONE,
                Refused("the broadcast address"),
            ),
            ("https://240.0.0.1/", NONE, Refused("a reserved address")),
            (
                "https://198.18.0.1/",
                NONE,
                Refused("a benchmarking address"),
            ),
            (
                "https://192.0.2.1/",
                NONE,
                Refused("a documentation address"),
            ),
            (
                "https://192.0.0.8/",
                NONE,
                Refused("IETF protocol assignment"),
            ),
            // Cloud metadata, in any form: never allowed.
            (
                "https://169.254.169.254/",
                NONE,
                Refused("metadata service address, which is never allowed"),
            ),
            (
                "https://0xa9fea9fe/",
                NONE,
                Refused("metadata service address"),
            ),
            (
                "https://[::ffff:a9fe:a9fe]/",
                NONE,
                Refused("metadata service address"),
            ),
            (
                "https://[fd00:ec2::254]/",
                NONE,
                Refused("metadata service address"),
            ),
            (
                "https://100.100.100.200/",
                NONE,
                Refused("metadata service address"),
            ),
            (
                "https://169.254.170.2/",
                NONE,
                Refused("metadata service address"),
            ),
            (
                "https://metadata.google.internal/",
                NONE,
                Refused("cloud metadata service"),
            ),
            (
                "https://METADATA.google.internal./",
                NONE,
                Refused("cloud metadata service"),
            ),
            // Names are judged by what they resolve to, when cattery connects.
            (
                "https://rebind.example/",
                &["127.0.0.1"],
                Refused("rebind.example resolves to 127.0.0.1, a loopback address"),
            ),
            (
                "https://127.0.0.1.nip.io/",
                &["127.0.0.1"],
                Refused("resolves to 127.0.0.1, a loopback address"),
            ),
            (
                "https://sched.example:8443/",
                &["192.168.0.10"],
                Refused("resolves to 192.168.0.10, a private address"),
            ),
            (
                "https://v6.example/",
                &["::ffff:10.0.0.1"],
                Refused("resolves to 10.0.0.1, a private address"),
            ),
            (
                "https://v6b.example/",
                &["fd00::1"],
                Refused("a unique-local address"),
            ),
            (
                "https://meta.example/",
                &["169.254.169.254"],
                Refused("never allowed"),
            ),
            // A name with one public and one internal address keeps only the public one.
            (
                "https://mixed.example/",
                &["10.0.0.1", "93.184.216.34"],
                Allowed,
            ),
        ];
        assert!(table.len() >= 40);
        check_table(&EgressPolicy::default(), table);
    }

    #[test]
    fn a_mixed_resolution_keeps_only_the_allowed_addresses() {
        let kept = EgressPolicy::default()
            .filter_resolved(
                "mixed.example",
                &[
                    "10.0.0.1".parse().unwrap(),
                    "93.184.216.34".parse().unwrap(),
                    "::1".parse().unwrap(),
                ],
            )
            .unwrap();
        assert_eq!(kept, vec!["93.184.216.34".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn allow_hosts_widens_the_policy_by_name_suffix_address_and_network() {
        let policy = policy(
            true,
            &[
                "sched.corp",
                ".internal.example",
                "10.1.0.0/16",
                "127.0.0.1",
                "fd00:1::/32",
                "169.254.0.0/16",
                ".internal",
            ],
        );
        let table: &[(&str, &[&str], Expect)] = &[
            ("http://sched.corp:8080/", &["10.9.9.9"], Allowed),
            ("http://SCHED.corp./", &["10.9.9.9"], Allowed),
            ("https://a.b.internal.example/", &["192.168.3.3"], Allowed),
            ("https://internal.example/", &["10.0.0.1"], Allowed),
            (
                "https://evilinternal.example/",
                &["10.0.0.1"],
                Refused("private"),
            ),
            (
                "https://sched.corp.evil.example/",
                &["10.0.0.1"],
                Refused("private"),
            ),
            ("https://10.1.2.3/", NONE, Allowed),
            (
                "https://10.2.0.1/",
                NONE,
                Refused("10.2.0.1, a private address"),
            ),
            ("https://other.example/", &["10.1.9.9"], Allowed),
            (
                "https://other.example/",
                &["10.3.9.9"],
                Refused("resolves to 10.3.9.9"),
            ),
            ("http://127.0.0.1:9/", NONE, Allowed),
            ("http://[::ffff:127.0.0.1]:9/", NONE, Allowed),
            ("http://127.0.0.2/", NONE, Refused("loopback")),
            // An exact address entry matches URLs that name it, not names resolving to it.
            (
                "http://rebind.example/",
                &["127.0.0.1"],
                Refused("resolves to 127.0.0.1"),
            ),
            (
                "http://localhost:9/",
                NONE,
                Refused("localhost is a loopback name"),
            ),
            ("https://[fd00:1::5]/", NONE, Allowed),
            ("https://[fd00:2::5]/", NONE, Refused("unique-local")),
            // What is never allowed stays refused whatever the list says.
            ("https://169.254.169.254/", NONE, Refused("never allowed")),
            ("https://169.254.1.1/", NONE, Allowed),
            (
                "https://metadata.google.internal/",
                &["169.254.169.254"],
                Refused("cloud metadata"),
            ),
            (
                "https://anything.internal/",
                &["169.254.169.254"],
                Refused("never allowed"),
            ),
            ("https://0.0.0.0/", NONE, Refused("never allowed")),
            ("ftp://sched.corp/", NONE, Refused("scheme")),
        ];
        check_table(&policy, table);
    }

    #[test]
    fn loopback_networks_allow_localhost_and_http_needs_its_setting() {
        let policy = policy(false, &["127.0.0.0/8", "::1/128"]);
        assert_eq!(
            verdict(&policy, "https://localhost:8443/", &["127.0.0.1", "::1"]),
            Ok(())
        );
        assert_eq!(verdict(&policy, "https://[::1]/", NONE), Ok(()));
        assert_eq!(
            verdict(&policy, "https://name.example/", &["127.0.0.5"]),
            Ok(())
        );
        let err = verdict(&policy, "http://127.0.0.1/", NONE).unwrap_err();
        assert!(err.contains("egress.allowHttp"), "{err}");
    }

    #[test]
    fn bad_allow_list_entries_are_refused_with_the_reason() {
        for entry in [
            "",
            "http://x.example",
            "*.corp",
            "10.0.0.0/33",
            "fd00::/129",
            "a b",
            ".",
            "user@host",
        ] {
            let settings = EgressSettings {
                allow_http: false,
                allow_hosts: vec![entry.to_owned()],
                ..EgressSettings::default()
            };
            let err = EgressPolicy::from_settings(&settings).unwrap_err();
            assert_eq!(err.entry, entry);
        }
        for entry in [
            "pool.corp",
            ".corp",
            "10.0.0.0/8",
            "10.1.2.3",
            "[::1]",
            "fd00::/8",
            "0.0.0.0/0",
        ] {
            let settings = EgressSettings {
                allow_http: false,
                allow_hosts: vec![entry.to_owned()],
                ..EgressSettings::default()
            };
            assert!(EgressPolicy::from_settings(&settings).is_ok(), "{entry}");
        }
    }

    #[test]
    fn cidrs_match_by_prefix_and_family() {
        let net = Cidr::parse("10.1.2.3/16").unwrap();
        assert!(net.contains("10.1.200.1".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(!net.contains("::ffff:10.1.0.1".parse().unwrap()));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
    }

    #[test]
    fn an_exempt_origin_is_exempt_only_for_its_pool() {
        let egress = Egress::new(EgressPolicy::default());
        let url = url::Url::parse("http://127.0.0.1:7777/jobs").unwrap();
        egress.exempt("local", url.origin());
        assert!(egress.guard("local").check_url(&url).is_ok());
        let other_port = url::Url::parse("http://127.0.0.1:7778/jobs").unwrap();
        assert!(egress.guard("local").check_url(&other_port).is_err());
        assert!(egress.guard("other").check_url(&url).is_err());
    }

    #[actix_web::test]
    async fn the_resolver_checks_pinned_and_system_answers() {
        let egress = Egress::new(EgressPolicy::default());
        egress.pin("pinned.example", vec!["127.0.0.1".parse().unwrap()]);
        let guard = egress.guard("p");
        assert_eq!(
            guard.resolve("pinned.example.").await,
            Err(ResolveError::Refused(Refusal::Resolved {
                host: "pinned.example".to_owned(),
                class: "127.0.0.1, a loopback address".to_owned(),
                allowable: true,
            }))
        );
        // localhost comes from the system resolver (/etc/hosts): loopback, refused.
        match guard.resolve("localhost").await {
            Err(ResolveError::Refused(Refusal::Resolved { class, .. })) => {
                assert!(class.contains("loopback"), "{class}");
            }
            other => panic!("{other:?}"),
        }
        let allowing = Egress::new(policy(false, &["pinned.example"]));
        allowing.pin("pinned.example", vec!["127.0.0.1".parse().unwrap()]);
        assert_eq!(
            allowing.guard("p").resolve("pinned.example").await,
            Ok(vec!["127.0.0.1".parse::<IpAddr>().unwrap()])
        );
    }

    #[actix_web::test]
    async fn a_name_that_does_not_resolve_is_a_lookup_failure_not_a_refusal() {
        let guard = Egress::new(EgressPolicy::default()).guard("p");
        assert_eq!(
            guard.resolve("no-such-host.invalid").await,
            Err(ResolveError::Unresolved(Unresolved {
                host: "no-such-host.invalid".to_owned()
            }))
        );
        // A pin without addresses is a name without records: the same lookup failure.
        let egress = Egress::new(EgressPolicy::default());
        egress.pin("empty.example", Vec::new());
        assert!(matches!(
            egress.guard("p").resolve("empty.example").await,
            Err(ResolveError::Unresolved(_))
        ));
    }
}
