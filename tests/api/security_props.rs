//! Property tests over hostile input (beside the cargo-fuzz targets of fuzz/; see README "Security"):
//! manifest parsing and validation, template rendering with hostile values, JMESPath mapping of
//! hostile answers, the egress URL check and redaction never panic, and keep their promises; so
//! do the numbers a manifest or a scheduler hands to the rate budget, the circuit breaker, the
//! backoff, `Retry-After`, OAuth2 token lifetimes and the run lifecycle.
//!
//! Each property runs `PROPTEST_CASES` cases (256 by default); `.ci/run` runs them again longer.

use cattery::backoff;
use cattery::domain::ids::{JobId, PoolName};
use cattery::domain::run::RunRecord;
use cattery::domain::secrets::SecretBundle;
use cattery::egress::EgressPolicy;
use cattery::lifecycle::{self, CallOutcome, Env, Input, Policy};
use cattery::manifest::{Defaults, Manifest, OpKind, RenderInput};
use cattery::scheduler::auth;
use cattery::scheduler::guard::{Admission, Permit, PoolGuard, Signal};
use cattery::scheduler::http::retry_after_ms;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

/// Strings that break naive code: template syntax, control characters, quotes, path tricks,
/// percent escapes, bidi controls, long runs.
fn hostile_string() -> impl Strategy<Value = String> {
    let fragments = prop::sample::select(vec![
        "{{",
        "}}",
        "{{{",
        "}}}",
        "{{input.job}}",
        "{{secret \"K\"}}",
        "{{#if x}}",
        "\r\n",
        "\n",
        "\0",
        "\"",
        "'",
        "\\",
        "../",
        "..",
        "%2e%2e",
        "%0d%0a",
        "?",
        "#",
        "@",
        "://",
        "/",
        " ",
        "é",
        "\u{202e}",
        "\u{feff}",
        "${x}",
        "`",
        "[0]",
        "*",
        "|",
        "&&",
        "null",
        "-1",
        "1e999",
        "ghs_0123456789abcdefghij",
        "Bearer x",
        "A",
    ]);
    prop_oneof![
        any::<String>(),
        prop::collection::vec(fragments, 0..12).prop_map(|parts| parts.concat()),
        "[a-z0-9.-]{0,80}",
        (1usize..20_000).prop_map(|n| "x".repeat(n)),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        hostile_string().prop_map(Value::String),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(hostile_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// JSON nested `depth` levels deep (arrays and objects alternating).
fn nested(depth: usize) -> String {
    let mut text = String::from("1");
    for level in 0..depth {
        text = if level % 2 == 0 {
            format!("[{text}]")
        } else {
            format!("{{\"a\":{text}}}")
        };
    }
    text
}

/// A valid manifest with templates in every position and expressions worth attacking.
fn rich_manifest() -> Value {
    json!({
        "apiVersion": "cattery/v1",
        "baseUrl": "https://sched.example:8443/api",
        "auth": {"type": "api_key", "headerName": "X-Key", "secretRef": {"key": "K"}},
        "vars": {"ns": "runners"},
        "dispatch": {
            "request": {
                "method": "POST",
                "path": "/ns/{{vars.ns}}/jobs/{{input.jobId}}/{{dns1123 run.dispatchId}}",
                "query": {"kind": "{{input.kind}}", "labels": "{{json input.labels}}"},
                "headers": {"X-Job": "{{input.jobId}}", "X-Kind": "{{upper input.kind}}"},
                "body": {
                    "name": "{{run.dispatchId}}",
                    "spec": "{{input.job}}",
                    "text": "id={{input.jobId}} job={{json input.job}}",
                    "b64": "{{base64 input.jobId}}",
                    "enc": "{{urlencode input.jobId}}",
                    "lower": "{{lower input.jobId}}"
                }
            },
            "expect": [201],
            "capture": {"uid": "metadata.uid", "first": "items[0].name"}
        },
        "poll": {
            "request": {"method": "GET", "path": "/jobs/{{urlencode run.dispatchId}}", "query": {"uid": "{{capture.uid}}"}},
            "map": {
                "state": "status.conditions[?status=='True'].type | [0] || (status.active > `0` && 'Running') || 'Pending'",
                "statusMap": {"Complete": "done", "Failed": "failed"},
                "error": "join(', ', items[*].msg)",
                "result": "output",
                "detail": "max_by(items, &to_number(n)).id",
                "heartbeat": "to_string(ts)",
                "progress": {"completed": "done", "total": "length(items)"}
            }
        },
        "release": {"request": {"method": "DELETE", "path": "/jobs/{{dns1123 run.dispatchId}}"}}
    })
}

fn compiled_rich() -> Manifest {
    Manifest::from_value(&rich_manifest(), &Defaults::default()).unwrap()
}

/// Places in a manifest where a mutation lands.
const PATHS: &[&[&str]] = &[
    &["apiVersion"],
    &["baseUrl"],
    &["auth"],
    &["auth", "type"],
    &["vars"],
    &["limits"],
    &["retry"],
    &["polling"],
    &["followRedirects"],
    &["tls"],
    &["dispatch"],
    &["dispatch", "request", "path"],
    &["dispatch", "request", "method"],
    &["dispatch", "request", "body"],
    &["dispatch", "request", "bodyTemplate"],
    &["dispatch", "request", "headers"],
    &["dispatch", "request", "query"],
    &["dispatch", "capture"],
    &["dispatch", "expect"],
    &["poll", "map"],
    &["poll", "map", "state"],
    &["poll", "map", "statusMap"],
    &["poll", "map", "progress"],
    &["poll", "notFound"],
    &["release"],
    &["pollMany"],
    &["unknownField"],
];

fn set_path(doc: &mut Value, path: &[&str], value: Value) {
    let mut at = doc;
    for (i, key) in path.iter().enumerate() {
        if !at.is_object() {
            *at = Value::Object(Map::new());
        }
        let Some(object) = at.as_object_mut() else {
            return;
        };
        if i + 1 == path.len() {
            object.insert((*key).to_owned(), value);
            return;
        }
        at = object.entry((*key).to_owned()).or_insert(Value::Null);
    }
}

fn template_like() -> impl Strategy<Value = Value> {
    let parts = prop::sample::select(vec![
        "{{input.jobId}}",
        "{{input.job}}",
        "{{json input.job}}",
        "{{run.dispatchId}}",
        "{{capture.uid}}",
        "{{vars.ns}}",
        "{{secret \"K\"}}",
        "{{missing}}",
        "{{#each x}}",
        "{{/each}}",
        "{{lookup input.job 'a'}}",
        "{{dns1123 input.jobId}}",
        "{{{json input.job}}}",
        "/",
        "..",
        "?a=b",
        "#f",
        "text",
        "}}",
        "{{",
        " ",
        "\n",
        "items[0]",
        "|",
        "`1`",
    ]);
    prop::collection::vec(parts, 0..8).prop_map(|p| Value::String(p.concat()))
}

fn sample_input() -> impl Strategy<Value = RenderInput> {
    (
        hostile_string(),
        prop::option::of(hostile_string()),
        arb_json(),
        prop::collection::btree_map(hostile_string(), leaf(), 0..4),
        hostile_string(),
        0u32..5,
        arb_json(),
    )
        .prop_map(
            |(job_id, kind, job, labels, dispatch_id, attempt, uid)| RenderInput {
                job_id,
                kind,
                job: match job {
                    Value::Object(_) => job,
                    other => json!({"value": other}),
                },
                labels: labels.into_iter().collect(),
                dispatch_id,
                attempt,
                captures: [("uid".to_owned(), uid), ("first".to_owned(), Value::Null)]
                    .into_iter()
                    .collect(),
                pool_name: "p".to_owned(),
            },
        )
}

fn secrets() -> SecretBundle {
    SecretBundle::from_map([("K".to_owned(), "secret-value".to_owned())].into())
}

/// The properties below are not vacuous: the rich manifest renders every operation.
#[test]
fn the_rich_manifest_renders_a_benign_run() {
    let input = RenderInput {
        job_id: "job-1".to_owned(),
        kind: Some("agent".to_owned()),
        job: json!({"steps": 3}),
        labels: Map::new(),
        dispatch_id: "job-1".to_owned(),
        attempt: 1,
        captures: [
            ("uid".to_owned(), json!("u-1")),
            ("first".to_owned(), Value::Null),
        ]
        .into_iter()
        .collect(),
        pool_name: "p".to_owned(),
    };
    let manifest = compiled_rich();
    for op in [OpKind::Dispatch, OpKind::Poll, OpKind::Release] {
        let request = manifest.render(op, &input, &secrets()).unwrap();
        assert!(
            request
                .url
                .as_str()
                .starts_with("https://sched.example:8443/api/")
        );
    }
    let observed = manifest
        .poll
        .observe(br#"{"status": {"conditions": [{"status": "True", "type": "Complete"}]}, "items": [{"msg": "a", "n": 1, "id": "x"}], "ts": 5}"#)
        .unwrap();
    assert_eq!(observed.scheduler_state.as_deref(), Some("Complete"));
}

/// IPv4 ranges the default egress policy must refuse, written out by hand from the IANA IPv4
/// Special-Purpose Address Registry (the ranges that are not globally reachable, or are
/// deprecated or reserved) and RFC 1918, 6598, 5737, 2544, 5771, 1112 and 919; the cloud
/// metadata addresses (169.254.169.254, 169.254.170.2, 100.100.100.200) lie inside them. This
/// table is the oracle of the property below, independent of `cattery::egress::classify`.
const V4_SPECIAL: &[(&str, &str)] = &[
    ("0.0.0.0/8", "this network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local, cloud metadata"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation (TEST-NET-1)"),
    ("192.31.196.0/24", "AS112-v4"),
    ("192.88.99.0/24", "6to4 relay anycast (deprecated)"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "documentation (TEST-NET-3)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "limited broadcast"),
];

/// IPv6 ranges refused outright, from the IANA IPv6 Special-Purpose Address Registry and RFC
/// 4291 (the cloud metadata address fd00:ec2::254 lies in fc00::/7). Anything outside global
/// unicast 2000::/3 is refused too, and forms that carry an IPv4 address are judged by it.
const V6_SPECIAL: &[(&str, &str)] = &[
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("64:ff9b:1::/48", "local-use IPv4/IPv6 translation"),
    ("100::/64", "discard-only"),
    ("2001::/32", "Teredo"),
    ("2001:2::/48", "benchmarking"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing (SRv6) SIDs"),
    ("fc00::/7", "unique-local, cloud metadata"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
];

/// IPv6 prefixes that carry an IPv4 address in their last 32 bits: IPv4-mapped, IPv4-translated
/// and the NAT64 well-known prefix.
const V6_EMBEDDING_LOW32: &[&str] = &["::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96"];

fn v4_net(text: &str) -> (u32, u32) {
    let (addr, len) = text.split_once('/').unwrap();
    let len: u32 = len.parse().unwrap();
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    (u32::from(addr.parse::<Ipv4Addr>().unwrap()) & mask, mask)
}

fn v6_net(text: &str) -> (u128, u128) {
    let (addr, len) = text.split_once('/').unwrap();
    let len: u32 = len.parse().unwrap();
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    (u128::from(addr.parse::<Ipv6Addr>().unwrap()) & mask, mask)
}

fn v4_special(ip: Ipv4Addr) -> Option<&'static str> {
    let bits = u32::from(ip);
    V4_SPECIAL.iter().find_map(|(net, why)| {
        let (net, mask) = v4_net(net);
        (bits & mask == net).then_some(*why)
    })
}

/// Why the registries say the default policy must refuse `ip`, or `None` for a public address.
fn refused_by_registry(ip: IpAddr) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V4(v4) => return v4_special(v4),
        IpAddr::V6(v6) => u128::from(v6),
    };
    let inside = |net: &str| {
        let (net, mask) = v6_net(net);
        ip & mask == net
    };
    if ip <= 1 {
        return Some("unspecified or loopback");
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "32 bits are kept on purpose"
    )]
    let low32 = Ipv4Addr::from(ip as u32);
    if V6_EMBEDDING_LOW32.iter().any(|net| inside(net)) {
        return v4_special(low32);
    }
    if inside("2002::/16") {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "32 bits are kept on purpose"
        )]
        let carried = Ipv4Addr::from((ip >> 80) as u32);
        return v4_special(carried);
    }
    if let Some((_, why)) = V6_SPECIAL.iter().find(|(net, _)| inside(net)) {
        return Some(why);
    }
    (!inside("2000::/3")).then_some("outside global unicast 2000::/3")
}

/// IPv4 addresses inside, at the edges of and just outside the special-purpose ranges.
fn near_special_v4() -> impl Strategy<Value = Ipv4Addr> {
    (
        prop::sample::select(V4_SPECIAL.to_vec()),
        any::<u32>(),
        0u8..4,
    )
        .prop_map(|((net, _), host, edge)| {
            let (net, mask) = v4_net(net);
            let bits = match edge {
                0 => net.wrapping_sub(1),
                1 => net,
                2 => net | !mask,
                _ => net | (host & !mask),
            };
            let bits = if edge == 2 && host % 2 == 0 {
                bits.wrapping_add(1)
            } else {
                bits
            };
            Ipv4Addr::from(bits)
        })
}

/// IPv6 addresses inside, at the edges of and just outside the special-purpose ranges, and
/// IPv4-carrying forms of special and public IPv4 addresses.
fn near_special_v6() -> impl Strategy<Value = Ipv6Addr> {
    let ranges: Vec<&'static str> = V6_SPECIAL
        .iter()
        .map(|(net, _)| *net)
        .chain(["2000::/3", "2002::/16"])
        .chain(V6_EMBEDDING_LOW32.iter().copied())
        .collect();
    prop_oneof![
        (prop::sample::select(ranges), any::<u128>(), 0u8..4).prop_map(|(net, host, edge)| {
            let (net, mask) = v6_net(net);
            Ipv6Addr::from(match edge {
                0 => net.wrapping_sub(1),
                1 => net,
                2 => (net | !mask).wrapping_add(u128::from(host % 2 == 0)),
                _ => net | (host & !mask),
            })
        }),
        (
            near_special_v4(),
            prop::sample::select(V6_EMBEDDING_LOW32.to_vec())
        )
            .prop_map(|(v4, net)| Ipv6Addr::from(v6_net(net).0 | u128::from(u32::from(v4)))),
        near_special_v4().prop_map(|v4| Ipv6Addr::from(
            (0x2002_u128 << 112) | (u128::from(u32::from(v4)) << 80)
        )),
    ]
}

/// The oracle itself is right about well-known addresses, in both directions.
#[test]
fn the_registry_table_knows_well_known_addresses() {
    let refused = [
        "127.0.0.1",
        "10.0.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.169.254",
        "169.254.170.2",
        "100.100.100.200",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "192.0.2.10",
        "::1",
        "::",
        "::ffff:127.0.0.1",
        "::127.0.0.1",
        "64:ff9b::a00:1",
        "2002:c0a8:101::1",
        "fd00:ec2::254",
        "fe80::1",
        "ff02::1",
        "2001:db8::1",
        "2001::1",
    ];
    for ip in refused {
        assert!(refused_by_registry(ip.parse().unwrap()).is_some(), "{ip}");
    }
    let public = [
        "8.8.8.8",
        "1.1.1.1",
        "172.32.0.1",
        "100.63.255.255",
        "100.128.0.0",
        "93.184.216.34",
        "2606:4700::1111",
        "2a00:1450:4001::1",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
    ];
    for ip in public {
        assert_eq!(refused_by_registry(ip.parse().unwrap()), None, "{ip}");
    }
}

proptest! {
    #[test]
    fn manifest_text_never_panics_the_parser(text in hostile_string()) {
        let _ = Manifest::parse(&text, &Defaults::default());
    }

    #[test]
    fn mutated_manifests_are_accepted_or_refused_with_problems_never_a_panic(
        mutations in prop::collection::vec(
            (prop::sample::select(PATHS.to_vec()), prop_oneof![arb_json(), template_like()]),
            1..4,
        ),
        input in sample_input(),
    ) {
        let mut doc = rich_manifest();
        for (path, value) in mutations {
            set_path(&mut doc, path, value);
        }
        match Manifest::from_value(&doc, &Defaults::default()) {
            Ok(manifest) => {
                // What registers renders or refuses cleanly, for any run.
                for op in [OpKind::Dispatch, OpKind::Poll, OpKind::Release] {
                    let _ = manifest.render(op, &input, &secrets());
                }
            }
            Err(error) => prop_assert!(!error.problems.is_empty()),
        }
    }

    #[test]
    fn hostile_values_render_confined_to_the_base_url(input in sample_input()) {
        let manifest = compiled_rich();
        for op in [OpKind::Dispatch, OpKind::Poll, OpKind::Release] {
            let Ok(request) = manifest.render(op, &input, &secrets()) else {
                continue;
            };
            prop_assert_eq!(request.url.scheme(), "https");
            prop_assert_eq!(request.url.host_str(), Some("sched.example"));
            prop_assert_eq!(request.url.port(), Some(8443));
            prop_assert!(request.url.path().starts_with("/api/"), "{}", request.url);
            for (name, value) in &request.headers {
                prop_assert!(
                    !value.contains(['\r', '\n', '\0']),
                    "header {} carries a line break", name
                );
            }
            if let Some(body) = &request.body {
                prop_assert!(serde_json::from_slice::<Value>(body).is_ok(), "the body is JSON");
            }
        }
    }

    #[test]
    fn hostile_answers_are_mapped_or_refused_never_a_panic(
        answer in prop_oneof![
            arb_json().prop_map(|v| v.to_string().into_bytes()),
            prop::collection::vec(any::<u8>(), 0..512),
            (1usize..3000).prop_map(|depth| nested(depth).into_bytes()),
            arb_json().prop_map(|v| json!({
                "status": {"conditions": [{"status": "True", "type": v.clone()}], "active": v.clone()},
                "items": [{"msg": v.clone(), "n": v.clone(), "id": v.clone()}, {"n": "12"}],
                "output": v.clone(), "ts": v.clone(), "done": v.clone(),
                "metadata": {"uid": v}
            }).to_string().into_bytes()),
        ],
    ) {
        let manifest = compiled_rich();
        let _ = manifest.poll.observe(&answer);
        let _ = manifest.dispatch.capture(&answer);
    }

    #[test]
    fn the_egress_check_never_panics_and_allows_only_public_literals(
        host in prop_oneof![
            1 => hostile_string(),
            1 => (any::<u32>()).prop_map(|n| n.to_string()),
            1 => (any::<u32>()).prop_map(|n| format!("0x{n:x}")),
            1 => (any::<[u8; 4]>()).prop_map(|b| format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3])),
            1 => (any::<[u16; 8]>()).prop_map(|s| format!("[{:x}:{:x}:{:x}:{:x}:{:x}:{:x}:{:x}:{:x}]", s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7])),
            1 => (any::<[u8; 4]>()).prop_map(|b| format!("[::ffff:{}.{}.{}.{}]", b[0], b[1], b[2], b[3])),
            4 => near_special_v4().prop_map(|ip| ip.to_string()),
            6 => near_special_v6().prop_map(|ip| format!("[{ip}]")),
        ],
        scheme in prop::sample::select(vec!["https", "https", "https", "http", "ftp", "file"]),
    ) {
        let Ok(url) = url::Url::parse(&format!("{scheme}://{host}/x")) else {
            return Ok(());
        };
        let allowed = EgressPolicy::default().check_url(&url).is_ok();
        if allowed {
            prop_assert_eq!(url.scheme(), "https");
        }
        // IP literals are judged against the independent table of special-purpose ranges.
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let (Some(ip), "https") = (ip, url.scheme()) {
            let special = refused_by_registry(ip);
            prop_assert_eq!(allowed, special.is_none(), "{} → {:?}", ip, special);
        }
    }

    #[test]
    fn known_values_never_survive_redaction(
        prefix in hostile_string(),
        suffix in hostile_string(),
        value in "k9[A-Za-z0-9_-]{4,30}",
    ) {
        let text = format!("{prefix}{value}{suffix}");
        let clean = cattery::redact::redact(&text, &[value.as_str()]);
        prop_assert!(!clean.contains(&value), "{:?}", clean);
    }

    #[test]
    fn bearer_credentials_never_survive_redaction(
        prefix in hostile_string(),
        suffix in hostile_string(),
        token in "[A-Za-z0-9._~+/-]{8,40}",
    ) {
        let text = format!("{prefix} Authorization: Bearer {token} {suffix}");
        let clean = cattery::redact::redact_credentials(&text);
        prop_assert!(!clean.contains(&format!("Bearer {token}")), "{:?}", clean);
    }

    #[test]
    fn any_rate_budget_a_manifest_accepts_spaces_calls_without_panicking(
        rate in prop_oneof![
            any::<f64>(),
            (-30i32..30).prop_map(|e| 10f64.powi(e)),
            Just(1e-20),
            Just(f64::MIN_POSITIVE),
        ],
        mut offsets in prop::collection::vec(any::<u32>(), 1..20),
    ) {
        offsets.sort_unstable();
        let mut doc = rich_manifest();
        doc["limits"] = json!({"requestsPerSecond": rate});
        let Ok(manifest) = Manifest::from_value(&doc, &Defaults::default()) else {
            return Ok(());
        };
        let rate = manifest.limits.requests_per_second;
        let guard = PoolGuard::default();
        let start = Instant::now();
        let calls = u32::try_from(offsets.len()).unwrap();
        for offset in offsets {
            let now = start + Duration::from_millis(u64::from(offset));
            let wait = guard.reserve(rate, now);
            // Validation keeps the spacing at 1000 s (with a 5% margin) at most.
            prop_assert!(wait <= Duration::from_secs(1_050) * calls, "{:?}", wait);
        }
    }

    #[test]
    fn the_rate_budget_and_breaker_never_panic_on_any_numbers(
        rate in prop::option::of(any::<f64>()),
        steps in prop::collection::vec(
            (0u8..4, any::<u64>(), any::<u64>(), any::<u64>()),
            1..40,
        ),
    ) {
        let guard = std::sync::Arc::new(PoolGuard::default());
        let start = Instant::now();
        for (kind, at, base, max) in steps {
            let now = start + Duration::from_millis(at % (1 << 40));
            let (base, max) = (Duration::from_millis(base), Duration::from_nanos(max));
            match kind {
                0 => {
                    let _ = guard.reserve(rate, now);
                }
                1 => {
                    if let Admission::Hold(until) = guard.admit(now) {
                        prop_assert!(until >= now);
                    }
                }
                2 => {
                    if let Admission::Go { trial } = guard.admit(now) {
                        // The call "panics": its permit is dropped without a report. A trial
                        // must not leave the breaker waiting for it for ever.
                        drop(Permit::new(guard.clone(), trial, base, max));
                        let after = base
                            .max(max)
                            .checked_add(Duration::from_secs(3_600))
                            .and_then(|d| now.checked_add(d));
                        if let (true, Some(after)) = (trial, after) {
                            let admitted = guard.admit(after);
                            let go = matches!(admitted, Admission::Go { .. });
                            prop_assert!(go, "still held at {:?}: {:?}", after, admitted);
                            if let Admission::Go { trial } = admitted {
                                Permit::new(guard.clone(), trial, base, max)
                                    .record(Signal::Healthy, after);
                            }
                        }
                    }
                }
                _ => guard.record(
                    at % 2 == 0,
                    Signal::Failing("503".to_owned()),
                    now,
                    base,
                    max,
                ),
            }
            let _ = guard.health(now);
        }
    }

    #[test]
    fn backoff_never_panics_and_caps_what_a_scheduler_asks(
        failures in any::<u32>(),
        initial in any::<u64>(),
        max in any::<u64>(),
        jitter in any::<f64>(),
        asked in prop::option::of(any::<u64>()),
    ) {
        let delay = backoff::delay_ms(failures, initial, max, jitter, asked);
        if let Some(asked) = asked {
            prop_assert!(delay >= asked.min(backoff::MAX_RETRY_AFTER_MS));
        }
        prop_assert!(delay <= max.max(initial).max(backoff::MAX_RETRY_AFTER_MS));
        let _ = backoff::spread_ms(initial, jitter);
    }

    #[test]
    fn any_retry_after_header_is_read_within_the_cap(
        value in prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            "[0-9]{1,40}",
            hostile_string(),
            (0i64..253_402_300_799).prop_map(|s| {
                chrono::DateTime::from_timestamp(s, 0)
                    .map_or_else(String::new, |d| d.to_rfc2822())
            }),
        ],
        header in prop::sample::select(vec!["retry-after", "ratelimit-reset"]),
    ) {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(value) = reqwest::header::HeaderValue::from_str(&value) {
            headers.insert(header, value);
        }
        if let Some(ms) = retry_after_ms(&headers, chrono::Utc::now()) {
            prop_assert!(ms <= backoff::MAX_RETRY_AFTER_MS);
        }
    }

    #[test]
    fn any_token_lifetime_is_capped_and_fits_the_clock(
        expires_in in prop_oneof![
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            arb_json(),
        ],
    ) {
        let usable = auth::usable_for(&json!({"access_token": "t", "expires_in": expires_in}));
        prop_assert!(usable <= auth::MAX_TTL);
        prop_assert!(Instant::now().checked_add(usable).is_some());
    }

    #[test]
    fn any_retry_after_at_any_time_schedules_the_next_attempt_without_overflow(
        asked in prop::option::of(any::<u64>()),
        now in prop_oneof![any::<i64>().prop_map(i64::abs), Just(i64::MAX - 1)],
        initial in any::<u64>(),
        max in any::<u64>(),
        jitter in 0.0f64..1.0,
    ) {
        let policy = Policy {
            max_attempts: 100,
            initial_backoff_ms: initial,
            max_backoff_ms: max,
            poll_interval_ms: 1_000,
            poll_max_interval_ms: 10_000,
            max_consecutive_errors: 100,
            lost_redispatch: 1,
            has_release: true,
        };
        let env = Env { now, jitter };
        let queued = RunRecord::queued(
            JobId::parse("job-1").unwrap(),
            PoolName::parse("p").unwrap(),
            now,
        );
        let dispatching = lifecycle::apply(&queued, Input::SlotGranted, &policy, env).run;
        for op in [OpKind::Dispatch, OpKind::Poll, OpKind::Release] {
            let outcome = CallOutcome::Retryable {
                message: "429".to_owned(),
                retry_after_ms: asked,
                unreadable: false,
            };
            let step = lifecycle::apply(&dispatching, Input::Called(op, outcome), &policy, env);
            if let Some(next) = step.run.next_at {
                prop_assert!(next >= now);
            }
        }
    }
}
