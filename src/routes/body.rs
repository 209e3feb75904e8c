//! Reading JSON request bodies under a size cap, with problem+json errors for every failure.

use crate::error::ApiError;
use actix_web::http::StatusCode;
use actix_web::web;
use futures_util::StreamExt;

/// Deepest JSON nesting accepted in a request body.
const MAX_DEPTH: usize = 64;

/// Reads the whole body, refusing more than `limit` bytes with 413 `payload_too_large`.
///
/// # Errors
/// 413 over the limit, 400 when the connection fails mid-body.
pub async fn read_limited(
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match e {
            actix_web::error::PayloadError::Overflow => too_large(limit),
            _ => ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the request body could not be read",
            ),
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body is larger than {limit} bytes"),
    )
}

/// Parses a JSON body: 422 `malformed_json` with the line and column of the first error.
///
/// # Errors
/// 422 when the body is not JSON or nests deeper than 64 levels.
pub fn parse_json(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "malformed_json",
            "the request body is empty; send a JSON object",
        ));
    }
    if nesting_depth(body) > MAX_DEPTH {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "malformed_json",
            format!("the JSON nests deeper than {MAX_DEPTH} levels"),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "malformed_json",
            format!(
                "the request body is not valid JSON (line {}, column {}): {}",
                e.line(),
                e.column(),
                e
            ),
        )
    })
}

/// The deepest bracket nesting outside strings (a cheap check before parsing).
fn nesting_depth(body: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &byte in body {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_and_deep_json_are_refused_with_422() {
        assert_eq!(parse_json(b"{\"a\":").unwrap_err().code(), "malformed_json");
        assert_eq!(parse_json(b"  ").unwrap_err().code(), "malformed_json");
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(
            parse_json(deep.as_bytes()).unwrap_err().code(),
            "malformed_json"
        );
        assert!(
            parse_json(
                br#"{"a":"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}"#
            )
            .is_ok()
        );
    }
}
