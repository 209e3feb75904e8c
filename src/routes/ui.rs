//! `/ui`: the read-only dashboard (SPEC §2.4), plain HTML, CSS and JavaScript shipped inside the
//! binary.
//!
//! The files hold no data, so they are served without a token; the page asks for an API token
//! once, keeps it in `sessionStorage` and calls the `/v1` JSON API with it (the live updates come
//! from `GET /v1/events`, read with `fetch()` so that the token travels in the `Authorization`
//! header, never in a URL). Every answer under `/ui` carries a strict Content-Security-Policy (no
//! inline script or style, connections to this origin only), `X-Content-Type-Options: nosniff`
//! and `Referrer-Policy: no-referrer`.
//!
//! Caching: the page itself is revalidated on every load (`no-cache` with an `ETag`); it names
//! its assets with a `?v=` digest of their content, and an asset asked for with its current
//! digest may be cached for a year, since another build names it differently.

use crate::error::ApiError;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::DefaultHeaders;
use actix_web::{HttpRequest, HttpResponse, web};
use std::sync::LazyLock;

/// The Content-Security-Policy of every `/ui` answer.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// How long a versioned asset may be cached: a year, the usual "forever".
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// The page and unversioned assets: cached, but asked again before each use.
const REVALIDATE: &str = "no-cache";

/// One file of the dashboard.
struct File {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// The assets the page loads, by the name after `/ui/`.
const ASSETS: [File; 3] = [
    File {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../ui/app.js"),
    },
    File {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../ui/app.css"),
    },
    File {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../ui/favicon.svg"),
    },
];

/// The page, with `{{v:NAME}}` where the version of asset NAME goes.
const INDEX: &str = include_str!("../../ui/index.html");

/// A file ready to serve: its bytes and its version (a digest of its content).
struct Served {
    content_type: &'static str,
    body: web::Bytes,
    version: String,
}

impl Served {
    fn new(content_type: &'static str, body: Vec<u8>) -> Served {
        let digest = crate::crypto::sha256_hex(&body);
        Served {
            content_type,
            version: digest.chars().take(16).collect(),
            body: web::Bytes::from(body),
        }
    }

    fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }
}

/// The page and its assets, prepared once.
struct Dashboard {
    index: Served,
    assets: Vec<(&'static str, Served)>,
}

static DASHBOARD: LazyLock<Dashboard> = LazyLock::new(|| {
    let assets: Vec<(&'static str, Served)> = ASSETS
        .iter()
        .map(|file| {
            (
                file.name,
                Served::new(file.content_type, file.body.to_vec()),
            )
        })
        .collect();
    let mut index = INDEX.to_owned();
    for (name, asset) in &assets {
        index = index.replace(&format!("{{{{v:{name}}}}}"), &asset.version);
    }
    Dashboard {
        index: Served::new("text/html; charset=utf-8", index.into_bytes()),
        assets,
    }
});

/// The `/ui` scope: the page at `/ui` and `/ui/`, its assets at `/ui/<name>`, a 404 for
/// anything else under `/ui` (whatever the facade does with unknown paths), each with the
/// security headers.
pub fn scope() -> impl actix_web::dev::HttpServiceFactory {
    web::scope("/ui")
        .wrap(
            DefaultHeaders::new()
                .add((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
                .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                .add((header::REFERRER_POLICY, "no-referrer")),
        )
        .service(
            web::resource(["", "/"])
                .route(web::get().to(index))
                .route(web::head().to(index)),
        )
        .service(
            web::resource("/{asset}")
                .route(web::get().to(asset))
                .route(web::head().to(asset)),
        )
        .default_service(web::to(not_found))
}

/// `GET /ui`: the page.
async fn index(request: HttpRequest) -> HttpResponse {
    let page = &DASHBOARD.index;
    answer(&request, page, REVALIDATE)
}

/// `GET /ui/{asset}`: an asset; cacheable for long when asked for with its current version.
async fn asset(request: HttpRequest, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let Some((_, file)) = DASHBOARD
        .assets
        .iter()
        .find(|(asset, _)| *asset == name.as_str())
    else {
        return Err(missing());
    };
    let versioned = request
        .query_string()
        .split('&')
        .any(|pair| pair.strip_prefix("v=") == Some(file.version.as_str()));
    Ok(answer(
        &request,
        file,
        if versioned { IMMUTABLE } else { REVALIDATE },
    ))
}

/// 200 with the file, or 304 when the client already holds this version.
fn answer(request: &HttpRequest, file: &Served, cache_control: &'static str) -> HttpResponse {
    let etag = file.etag();
    let fresh = request
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == etag || tag == "*" || tag.strip_prefix("W/") == Some(etag.as_str()));
    let mut response = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((
            header::CACHE_CONTROL,
            HeaderValue::from_static(cache_control),
        ))
        .insert_header((header::ETAG, etag));
    if fresh {
        response.finish()
    } else {
        response
            .content_type(file.content_type)
            .body(file.body.clone())
    }
}

fn missing() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such dashboard file")
}

/// Anything else under `/ui`.
async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(missing())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_every_asset_by_its_current_version() {
        let page = String::from_utf8_lossy(&DASHBOARD.index.body).into_owned();
        assert!(!page.contains("{{"), "a placeholder was left: {page}");
        for (name, asset) in &DASHBOARD.assets {
            assert_eq!(asset.version.len(), 16);
            assert!(
                page.contains(&format!("/ui/{name}?v={}", asset.version)),
                "{name} is not linked with its version"
            );
        }
    }

    #[test]
    fn the_files_hold_no_inline_script_or_style() {
        let page = INDEX;
        assert!(!page.contains("style="), "an inline style attribute");
        assert!(!page.contains("<style"), "an inline style sheet");
        for script in page.split("<script").skip(1) {
            let open = script.split('>').next().unwrap_or_default();
            assert!(open.contains("src="), "an inline script: <script{open}>");
        }
        let script = String::from_utf8_lossy(ASSETS[0].body);
        assert!(!script.contains("innerHTML"), "data must go in as text");
        assert!(!script.contains("eval("), "no eval under the policy");
    }
}
