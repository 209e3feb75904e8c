//! A loopback proxy in front of a real scheduler that loses answers: the first requests that
//! match a method and path reach the scheduler and take effect there, but the caller gets a 503
//! instead of the scheduler's answer, the way a gateway sees a create that timed out or failed
//! at a load balancer after the scheduler acted on it. Every other request is relayed as is.

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What the proxy was asked to lose, and what it saw.
struct Rules {
    upstream: String,
    method: String,
    path: String,
    /// How many more matching answers to lose.
    to_lose: AtomicUsize,
    /// Matching requests seen (lost or relayed).
    matched: AtomicUsize,
    /// The scheduler's answers that the caller never saw.
    lost: Mutex<Vec<(u16, String)>>,
    client: reqwest::Client,
}

/// A running lossy proxy.
pub struct LossyProxy {
    pub base_url: String,
    rules: Arc<Rules>,
    handle: actix_web::dev::ServerHandle,
}

impl LossyProxy {
    /// Relays to `upstream`; the answers to the first `lose` requests with `method` and `path`
    /// are replaced by a 503.
    pub fn start(upstream: &str, method: &str, path: &str, lose: usize) -> LossyProxy {
        let rules = Arc::new(Rules {
            upstream: upstream.trim_end_matches('/').to_owned(),
            method: method.to_owned(),
            path: path.to_owned(),
            to_lose: AtomicUsize::new(lose),
            matched: AtomicUsize::new(0),
            lost: Mutex::new(Vec::new()),
            client: cattery::scheduler::http::plain_client().unwrap(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = rules.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(shared.clone()))
                .app_data(web::PayloadConfig::new(8 * 1024 * 1024))
                .default_service(web::to(relay))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        LossyProxy {
            base_url: format!("http://127.0.0.1:{port}"),
            rules,
            handle,
        }
    }

    /// How many requests matched the method and path.
    pub fn matched(&self) -> usize {
        self.rules.matched.load(Ordering::SeqCst)
    }

    /// The scheduler's answers the caller did not get (status and body).
    pub fn lost(&self) -> Vec<(u16, String)> {
        self.rules.lost.lock().unwrap().clone()
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

async fn relay(req: HttpRequest, body: web::Bytes, rules: web::Data<Arc<Rules>>) -> HttpResponse {
    let target = match req.uri().query() {
        Some(query) => format!("{}{}?{query}", rules.upstream, req.path()),
        None => format!("{}{}", rules.upstream, req.path()),
    };
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap();
    let mut upstream = rules.client.request(method, target).body(body.to_vec());
    for (name, value) in req.headers() {
        if !matches!(name.as_str(), "host" | "content-length" | "connection") {
            upstream = upstream.header(name.as_str(), value.as_bytes());
        }
    }
    let matches = req.method().as_str() == rules.method && req.path() == rules.path;
    if matches {
        rules.matched.fetch_add(1, Ordering::SeqCst);
    }
    let answer = match upstream.send().await {
        Ok(answer) => answer,
        Err(e) => return HttpResponse::BadGateway().body(format!("proxy: {e}")),
    };
    let status = answer.status().as_u16();
    let content_type = answer
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let text = answer.text().await.unwrap_or_default();
    let lose = matches
        && rules
            .to_lose
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    if lose {
        rules.lost.lock().unwrap().push((status, text));
        return HttpResponse::ServiceUnavailable()
            .content_type("application/json")
            .body(r#"{"message":"proxy: the scheduler's answer was lost"}"#);
    }
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .content_type(content_type)
        .body(text)
}
