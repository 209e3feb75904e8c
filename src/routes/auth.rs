//! API authentication: bearer tokens with a role each, compared by SHA-256 digest in constant time.

use crate::crypto::{constant_time_eq, sha256_hex};
use crate::error::ApiError;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use std::future::{Ready, ready};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// GET only.
    Reader,
    /// Runs: dispatch, cancel, and everything a reader may.
    Dispatcher,
    /// Everything, pools and keys included.
    Admin,
}

impl Role {
    /// Parses `admin`, `dispatcher` or `reader`.
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "admin" => Some(Role::Admin),
            "dispatcher" => Some(Role::Dispatcher),
            "reader" => Some(Role::Reader),
            _ => None,
        }
    }

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Dispatcher => "dispatcher",
            Role::Reader => "reader",
        }
    }
}

/// One accepted token.
#[derive(Debug, Clone)]
pub struct TokenEntry {
    /// A name for logs.
    pub name: String,
    /// Hex SHA-256 of the token (lower case).
    pub sha256: String,
    /// Its role.
    pub role: Role,
}

/// The accepted tokens.
#[derive(Debug, Clone, Default)]
pub struct ApiAuth {
    tokens: Vec<TokenEntry>,
}

impl ApiAuth {
    /// Accepts these tokens.
    pub fn new(tokens: Vec<TokenEntry>) -> Self {
        Self { tokens }
    }

    /// The role of a presented token, if it is accepted. Every entry is compared, so the time
    /// taken does not tell which entry matched.
    pub fn role_of(&self, presented: &str) -> Option<(Role, &str)> {
        let digest = sha256_hex(presented.as_bytes());
        let mut found = None;
        for entry in &self.tokens {
            if constant_time_eq(
                digest.as_bytes(),
                entry.sha256.to_ascii_lowercase().as_bytes(),
            ) && found.is_none()
            {
                found = Some((entry.role, entry.name.as_str()));
            }
        }
        found
    }
}

/// The authenticated caller of a `/v1` route.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// The caller's role.
    pub role: Role,
}

impl Caller {
    /// Refuses a caller whose role is below `needed`.
    ///
    /// # Errors
    /// 403 `forbidden`.
    pub fn require(self, needed: Role) -> Result<(), ApiError> {
        if self.role >= needed {
            Ok(())
        } else {
            Err(ApiError::forbidden(&format!(
                "this route needs the {} role; the token has {}",
                needed.as_str(),
                self.role.as_str()
            )))
        }
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
    let Some(auth) = req.app_data::<web::Data<ApiAuth>>() else {
        return Err(ApiError::internal(anyhow::anyhow!(
            "API auth is not configured"
        )));
    };
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("send Authorization: Bearer <token>"))?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized("the Authorization header must be: Bearer <token>")
        })?;
    let (role, name) = auth
        .role_of(token)
        .ok_or_else(|| ApiError::unauthorized("the token is not accepted"))?;
    tracing::debug!(token = name, role = role.as_str(), "authenticated");
    Ok(Caller { role })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_matched_by_digest_and_roles_are_ordered() {
        let auth = ApiAuth::new(vec![
            TokenEntry {
                name: "ops".into(),
                sha256: sha256_hex(b"admin-token").to_uppercase(),
                role: Role::Admin,
            },
            TokenEntry {
                name: "ci".into(),
                sha256: sha256_hex(b"reader-token"),
                role: Role::Reader,
            },
        ]);
        assert_eq!(auth.role_of("admin-token").map(|r| r.0), Some(Role::Admin));
        assert_eq!(
            auth.role_of("reader-token").map(|r| r.0),
            Some(Role::Reader)
        );
        assert!(auth.role_of("nope").is_none());
        assert!(
            Caller { role: Role::Admin }
                .require(Role::Dispatcher)
                .is_ok()
        );
        assert_eq!(
            Caller { role: Role::Reader }
                .require(Role::Dispatcher)
                .unwrap_err()
                .code(),
            "forbidden"
        );
    }
}
