//! The `auth` section: reading the scheme from the document and rendering its headers.

use super::walk::{Fields, Problems, join, kind_of};
use super::{Auth, RenderError};
use crate::domain::secrets::SecretBundle;
use crate::template::escape::{header_value_problem, is_header_name};
use base64::Engine as _;
use serde_json::Value;

/// The auth scheme names, for messages.
const SCHEMES: &str = "none, api_key, bearer, basic, oauth2_client_credentials, custom_headers";

/// True when `key` is a valid secret key: 1 to 64 characters from `A-Za-z0-9_.-`.
pub(crate) fn is_secret_key(key: &str) -> bool {
    (1..=64).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Reads `auth` (absent means `none`).
pub(crate) fn parse(value: Option<&Value>, problems: &mut Problems) -> Auth {
    let Some(value) = value else {
        return Auth::None;
    };
    let Some(fields) = Fields::new(value, "auth", problems) else {
        return Auth::None;
    };
    let Some(scheme) = fields.required_str("type", problems) else {
        return Auth::None;
    };
    let allowed: &[&str] = match scheme {
        "none" => &["type"],
        "api_key" => &["type", "headerName", "secretRef", "valuePrefix"],
        "bearer" => &["type", "secretRef"],
        "basic" => &["type", "usernameSecretRef", "passwordSecretRef"],
        "oauth2_client_credentials" => &[
            "type",
            "tokenUrl",
            "clientIdSecretRef",
            "clientSecretSecretRef",
            "scope",
            "audience",
        ],
        "custom_headers" => &["type", "headers"],
        other => {
            problems.add(
                "auth.type",
                format!("unknown auth type {other:?}; use one of: {SCHEMES}"),
            );
            return Auth::None;
        }
    };
    fields.deny_unknown(allowed, problems);
    let before = problems.len();
    let auth = match scheme {
        "api_key" => {
            let header_name = fields
                .required_str("headerName", problems)
                .map(str::to_owned);
            if let Some(name) = &header_name
                && !is_header_name(name)
            {
                problems.add(
                    "auth.headerName",
                    format!("{name:?} is not a valid header name; use letters, digits and -"),
                );
            }
            let secret_key = secret_ref(&fields, "secretRef", problems);
            let value_prefix = fields.str("valuePrefix", problems).unwrap_or_default();
            if header_value_problem(value_prefix).is_some() {
                problems.add(
                    "auth.valuePrefix",
                    "must not contain line breaks or control characters",
                );
            }
            Auth::ApiKey {
                header_name: header_name.unwrap_or_default(),
                secret_key: secret_key.unwrap_or_default(),
                value_prefix: value_prefix.to_owned(),
            }
        }
        "bearer" => Auth::Bearer {
            secret_key: secret_ref(&fields, "secretRef", problems).unwrap_or_default(),
        },
        "basic" => Auth::Basic {
            username_key: secret_ref(&fields, "usernameSecretRef", problems).unwrap_or_default(),
            password_key: secret_ref(&fields, "passwordSecretRef", problems).unwrap_or_default(),
        },
        "oauth2_client_credentials" => {
            let token_url = fields.required_str("tokenUrl", problems).and_then(|text| {
                match url::Url::parse(text) {
                    Ok(url)
                        if matches!(url.scheme(), "http" | "https")
                            && url.host_str().is_some()
                            && url.fragment().is_none() =>
                    {
                        Some(url)
                    }
                    _ => {
                        problems.add(
                            "auth.tokenUrl",
                            format!(
                                "{text:?} is not an absolute http(s) URL without a fragment, \
                                 e.g. https://login.example/oauth2/token"
                            ),
                        );
                        None
                    }
                }
            });
            let client_id_key = secret_ref(&fields, "clientIdSecretRef", problems);
            let client_secret_key = secret_ref(&fields, "clientSecretSecretRef", problems);
            let scope = fields.str("scope", problems).map(str::to_owned);
            let audience = fields.str("audience", problems).map(str::to_owned);
            match token_url {
                Some(token_url) => Auth::OAuth2ClientCredentials {
                    token_url,
                    client_id_key: client_id_key.unwrap_or_default(),
                    client_secret_key: client_secret_key.unwrap_or_default(),
                    scope,
                    audience,
                },
                None => Auth::None,
            }
        }
        "custom_headers" => Auth::CustomHeaders(custom_headers(&fields, problems)),
        _ => Auth::None,
    };
    if problems.len() > before {
        Auth::None
    } else {
        auth
    }
}

/// Reads `{key: "NAME"}` at `field` (required).
fn secret_ref(fields: &Fields<'_>, field: &str, problems: &mut Problems) -> Option<String> {
    let value = fields.required(field, problems)?;
    let path = fields.child(field);
    let inner = Fields::new(value, &path, problems)?;
    inner.deny_unknown(&["key"], problems);
    let key = inner.required_str("key", problems)?;
    if is_secret_key(key) {
        Some(key.to_owned())
    } else {
        problems.add(
            join(&path, "key"),
            format!(
                "secret key {key:?} is not valid: use 1 to 64 characters from A-Z a-z 0-9 _ . -"
            ),
        );
        None
    }
}

fn custom_headers(fields: &Fields<'_>, problems: &mut Problems) -> Vec<(String, String)> {
    let Some(value) = fields.required("headers", problems) else {
        return Vec::new();
    };
    let Value::Array(items) = value else {
        problems.add(
            "auth.headers",
            format!(
                "must be a list of {{name, secretRef: {{key}}}} entries, not {}",
                kind_of(value)
            ),
        );
        return Vec::new();
    };
    if items.is_empty() {
        problems.add("auth.headers", "must list at least one header");
    }
    let mut out: Vec<(String, String)> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("auth.headers.{i}");
        let Some(entry) = Fields::new(item, &path, problems) else {
            continue;
        };
        entry.deny_unknown(&["name", "secretRef"], problems);
        let name = entry.required_str("name", problems);
        if let Some(name) = name {
            if !is_header_name(name) {
                problems.add(
                    join(&path, "name"),
                    format!("{name:?} is not a valid header name; use letters, digits and -"),
                );
            } else if out.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                problems.add(
                    join(&path, "name"),
                    format!("header {name} is listed twice"),
                );
            }
        }
        let key = secret_ref(&entry, "secretRef", problems);
        if let (Some(name), Some(key)) = (name, key) {
            out.push((name.to_owned(), key));
        }
    }
    out
}

/// The header names the scheme sets (none for OAuth2's header, which the sender adds, but it
/// is still reserved).
pub(crate) fn header_names(auth: &Auth) -> Vec<String> {
    match auth {
        Auth::None => Vec::new(),
        Auth::ApiKey { header_name, .. } => vec![header_name.clone()],
        Auth::Bearer { .. } | Auth::Basic { .. } | Auth::OAuth2ClientCredentials { .. } => {
            vec!["Authorization".to_owned()]
        }
        Auth::CustomHeaders(headers) => headers.iter().map(|(name, _)| name.clone()).collect(),
    }
}

/// Every secret key the scheme needs.
pub(crate) fn secret_keys(auth: &Auth) -> Vec<String> {
    match auth {
        Auth::None => Vec::new(),
        Auth::ApiKey { secret_key, .. } | Auth::Bearer { secret_key } => vec![secret_key.clone()],
        Auth::Basic {
            username_key,
            password_key,
        } => vec![username_key.clone(), password_key.clone()],
        Auth::OAuth2ClientCredentials {
            client_id_key,
            client_secret_key,
            ..
        } => vec![client_id_key.clone(), client_secret_key.clone()],
        Auth::CustomHeaders(headers) => headers.iter().map(|(_, key)| key.clone()).collect(),
    }
}

/// The auth headers of one call. OAuth2 adds nothing: the sender fetches and adds the token.
///
/// # Errors
/// A [`RenderError`] at path `auth` naming a key that is missing from `secrets`, or whose value
/// cannot go into a header (never the value itself).
pub(crate) fn headers(
    auth: &Auth,
    secrets: &SecretBundle,
) -> Result<Vec<(String, String)>, RenderError> {
    let secret = |key: &str| -> Result<String, RenderError> {
        let value = secrets.get(key).ok_or_else(|| RenderError {
            path: "auth".to_owned(),
            message: format!(
                "secret key {key:?} is not in the pool's secret bundle; add it to the pool's secrets"
            ),
        })?;
        let value = value.expose();
        if header_value_problem(value).is_some() {
            return Err(RenderError {
                path: "auth".to_owned(),
                message: format!(
                    "the value of secret {key:?} contains a line break or control character \
                     and cannot be sent in a header"
                ),
            });
        }
        Ok(value.to_owned())
    };
    Ok(match auth {
        Auth::None | Auth::OAuth2ClientCredentials { .. } => Vec::new(),
        Auth::ApiKey {
            header_name,
            secret_key,
            value_prefix,
        } => vec![(
            header_name.clone(),
            format!("{value_prefix}{}", secret(secret_key)?),
        )],
        Auth::Bearer { secret_key } => vec![(
            "Authorization".to_owned(),
            format!("Bearer {}", secret(secret_key)?),
        )],
        Auth::Basic {
            username_key,
            password_key,
        } => {
            let pair = format!("{}:{}", secret(username_key)?, secret(password_key)?);
            vec![(
                "Authorization".to_owned(),
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ),
            )]
        }
        Auth::CustomHeaders(entries) => entries
            .iter()
            .map(|(name, key)| Ok((name.clone(), secret(key)?)))
            .collect::<Result<_, RenderError>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn bundle(pairs: &[(&str, &str)]) -> SecretBundle {
        SecretBundle::from_map(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    fn parsed(doc: Value) -> (Auth, Vec<String>) {
        let mut problems = Problems::default();
        let auth = parse(Some(&doc), &mut problems);
        let paths = problems
            .into_error()
            .problems
            .into_iter()
            .map(|p| p.path)
            .collect();
        (auth, paths)
    }

    #[test]
    fn every_scheme_renders_its_header_form() {
        let secrets = bundle(&[
            ("T", "tok"),
            ("U", "user"),
            ("P", "pa:ss"),
            ("ID", "i"),
            ("SEC", "s"),
        ]);
        let table: Vec<(Value, Vec<(&str, &str)>)> = vec![
            (json!({"type": "none"}), vec![]),
            (
                json!({"type": "api_key", "headerName": "X-Api-Key", "secretRef": {"key": "T"}, "valuePrefix": "Key "}),
                vec![("X-Api-Key", "Key tok")],
            ),
            (
                json!({"type": "bearer", "secretRef": {"key": "T"}}),
                vec![("Authorization", "Bearer tok")],
            ),
            (
                json!({"type": "basic", "usernameSecretRef": {"key": "U"}, "passwordSecretRef": {"key": "P"}}),
                vec![("Authorization", "Basic dXNlcjpwYTpzcw==")],
            ),
            (
                json!({"type": "oauth2_client_credentials", "tokenUrl": "https://login.example/token",
                       "clientIdSecretRef": {"key": "ID"}, "clientSecretSecretRef": {"key": "SEC"},
                       "scope": "jobs", "audience": "sched"}),
                vec![],
            ),
            (
                json!({"type": "custom_headers", "headers": [
                    {"name": "X-A", "secretRef": {"key": "T"}}, {"name": "X-B", "secretRef": {"key": "U"}}]}),
                vec![("X-A", "tok"), ("X-B", "user")],
            ),
        ];
        for (doc, expected) in table {
            let (auth, problems) = parsed(doc.clone());
            assert!(problems.is_empty(), "{doc}: {problems:?}");
            let got = headers(&auth, &secrets).unwrap();
            let got: Vec<(&str, &str)> =
                got.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            assert_eq!(got, expected, "{doc}");
        }
    }

    #[test]
    fn oauth2_keeps_its_settings_and_reserves_authorization() {
        let (auth, _) = parsed(
            json!({"type": "oauth2_client_credentials", "tokenUrl": "https://login.example/token",
            "clientIdSecretRef": {"key": "ID"}, "clientSecretSecretRef": {"key": "SEC"}, "scope": "jobs"}),
        );
        let Auth::OAuth2ClientCredentials {
            token_url,
            scope,
            audience,
            ..
        } = &auth
        else {
            panic!("not oauth2: {auth:?}");
        };
        assert_eq!(token_url.as_str(), "https://login.example/token");
        assert_eq!(scope.as_deref(), Some("jobs"));
        assert_eq!(audience, &None);
        assert_eq!(header_names(&auth), ["Authorization"]);
        assert_eq!(secret_keys(&auth), ["ID", "SEC"]);
    }

    #[test]
    fn a_missing_secret_names_the_key_and_never_a_value() {
        let (auth, _) = parsed(
            json!({"type": "basic", "usernameSecretRef": {"key": "U"}, "passwordSecretRef": {"key": "P"}}),
        );
        let err = headers(&auth, &bundle(&[("U", "hunter2-user")])).unwrap_err();
        assert_eq!(err.path, "auth");
        assert!(err.message.contains("\"P\""));
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn a_secret_with_a_line_break_cannot_become_a_header() {
        let (auth, _) = parsed(json!({"type": "bearer", "secretRef": {"key": "T"}}));
        let err = headers(&auth, &bundle(&[("T", "tok\r\nX-Evil: 1")])).unwrap_err();
        assert!(!err.message.contains("Evil"));
    }

    #[test]
    fn bad_auth_sections_report_each_problem_with_its_path() {
        let (auth, problems) =
            parsed(json!({"type": "bearer", "secretRef": {"key": "bad key!"}, "extra": 1}));
        assert_eq!(auth, Auth::None);
        assert_eq!(problems, ["auth.extra", "auth.secretRef.key"]);
        let (_, problems) = parsed(json!({"type": "kerberos"}));
        assert_eq!(problems, ["auth.type"]);
        let (_, problems) = parsed(
            json!({"type": "oauth2_client_credentials", "tokenUrl": "/token",
            "clientIdSecretRef": {"key": "ID"}}),
        );
        assert_eq!(problems, ["auth.tokenUrl", "auth.clientSecretSecretRef"]);
        let (_, problems) = parsed(
            json!({"type": "custom_headers", "headers": [{"name": "Bad Name", "secretRef": {"key": "K"}}]}),
        );
        assert_eq!(problems, ["auth.headers.0.name"]);
    }

    #[test]
    fn secret_keys_follow_the_documented_pattern() {
        assert!(is_secret_key("K8S_TOKEN"));
        assert!(is_secret_key("a.b-c_d"));
        assert!(!is_secret_key(""));
        assert!(!is_secret_key(&"a".repeat(65)));
        assert!(!is_secret_key("with space"));
    }
}
