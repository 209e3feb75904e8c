//! Schedulers the tests write: a loopback HTTP server that records every request it receives
//! and answers through a handler the test writes, and can be stopped and started again on its
//! port while the handler's state lives on, like a scheduler restarting over its persisted
//! state. The scripted schedulers of the tests are handlers over such a server.

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::Value;
use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request a [`Recorder`] received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The path as it was sent (percent-encoded).
    pub path: String,
    /// The query string as it was sent.
    pub query: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Seen {
    fn of(req: &HttpRequest, body: &[u8]) -> Seen {
        Seen {
            method: req.method().to_string(),
            path: req.path().to_owned(),
            query: req.query_string().to_owned(),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect(),
            body: body.to_vec(),
        }
    }

    /// The path, percent-decoded (as a server routes it).
    pub fn decoded_path(&self) -> String {
        percent_encoding::percent_decode_str(&self.path)
            .decode_utf8_lossy()
            .into_owned()
    }

    /// The query parameters, decoded.
    pub fn query_params(&self) -> HashMap<String, String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .into_owned()
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    /// The body as JSON, `Null` when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// A header's value, by its name in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

type Handler = Arc<dyn Fn(&Seen) -> HttpResponse + Send + Sync>;

/// A loopback server that records every request and answers with its handler. Clones share
/// the server.
#[derive(Clone)]
pub struct Recorder {
    pub base_url: String,
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    handler: Handler,
    running: Arc<Mutex<Option<ServerHandle>>>,
}

/// The largest request body a [`Recorder`] reads: over every cap of cattery's own, so that
/// whatever cattery sends arrives whole.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

impl Recorder {
    /// Starts a server on a free loopback port.
    pub async fn start(
        handler: impl Fn(&Seen) -> HttpResponse + Send + Sync + 'static,
    ) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let recorder = Recorder {
            base_url: format!("http://127.0.0.1:{port}"),
            port,
            seen: Arc::default(),
            handler: Arc::new(handler),
            running: Arc::default(),
        };
        recorder.serve(listener);
        recorder
    }

    fn serve(&self, listener: TcpListener) {
        let (recorded, handler) = (self.seen.clone(), self.handler.clone());
        let server = HttpServer::new(move || {
            let (recorded, handler) = (recorded.clone(), handler.clone());
            App::new()
                .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
                .default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                    let seen = Seen::of(&req, &body);
                    recorded.lock().unwrap().push(seen.clone());
                    let answer = handler(&seen);
                    async move { answer }
                }))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        *self.running.lock().unwrap() = Some(server.handle());
        actix_web::rt::spawn(server);
    }

    /// Every request received so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Stops the server (connections are dropped), waits `down`, and starts it again on the
    /// same port, with the same handler and record.
    pub async fn restart(&self, down: Duration) {
        let running = self.running.lock().unwrap().take();
        if let Some(handle) = running {
            handle.stop(false).await;
        }
        tokio::time::sleep(down).await;
        self.serve(TcpListener::bind(("127.0.0.1", self.port)).unwrap());
    }
}

/// An answer with a status and a JSON body.
pub fn answer(status: u16, body: Value) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).json(body)
}

/// A redirect.
pub fn redirect(status: u16, location: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .insert_header(("location", location))
        .finish()
}

/// One scripted answer of a test scheduler (to a poll, say).
#[derive(Debug, Clone)]
pub enum Scripted {
    /// 200 with this JSON body.
    Json(Value),
    /// This status with this text body.
    Status(u16, &'static str),
}

impl Scripted {
    pub fn respond(&self) -> HttpResponse {
        match self {
            Scripted::Json(value) => HttpResponse::Ok().json(value),
            Scripted::Status(status, text) => {
                HttpResponse::build(actix_web::http::StatusCode::from_u16(*status).unwrap())
                    .content_type("text/plain")
                    .body(*text)
            }
        }
    }
}

/// The answer of `script` to its `n`th call (from 0): its entries in order, the last one
/// repeating; `otherwise` for an empty script.
pub fn scripted(script: &[Scripted], n: usize, otherwise: Scripted) -> Scripted {
    script
        .get(n.min(script.len().saturating_sub(1)))
        .cloned()
        .unwrap_or(otherwise)
}

/// The client id [`job_api`]'s token endpoint takes.
pub const OAUTH_CLIENT_ID: &str = "probe-client";

/// A scheduler's job API that holds no job, answering like the real APIs do: every request but
/// the token endpoint needs `Authorization: Bearer <token>` (401 without one, 403 with another
/// token); then `GET /jobs/{id}` and `DELETE /jobs/{id}` answer 404 `{"message": "job … not
/// found"}`, for any id. `POST /oauth/token` takes the client credentials grant of
/// [`OAUTH_CLIENT_ID`] and `client_secret` and issues `token`; other credentials get 401
/// `{"error": "invalid_client"}`. What a pool probe expects of a healthy scheduler.
pub fn job_api(
    token: &'static str,
    client_secret: &'static str,
) -> impl Fn(&Seen) -> HttpResponse + Send + Sync + 'static {
    move |seen| {
        if seen.method == "POST" && seen.path == "/oauth/token" {
            let form = seen.form();
            let granted = form.get("grant_type").map(String::as_str) == Some("client_credentials")
                && form.get("client_id").map(String::as_str) == Some(OAUTH_CLIENT_ID)
                && form.get("client_secret").map(String::as_str) == Some(client_secret);
            return if granted {
                answer(
                    200,
                    serde_json::json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600}),
                )
            } else {
                answer(401, serde_json::json!({"error": "invalid_client"}))
            };
        }
        match seen
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
        {
            None => return answer(401, serde_json::json!({"message": "Unauthorized"})),
            Some(given) if given != token => {
                return answer(403, serde_json::json!({"message": "Forbidden"}));
            }
            Some(_) => {}
        }
        match (
            seen.method.as_str(),
            seen.decoded_path().strip_prefix("/jobs/"),
        ) {
            ("GET" | "DELETE", Some(id)) => answer(
                404,
                serde_json::json!({"message": format!("job {id} not found")}),
            ),
            _ => answer(404, serde_json::json!({"message": "no such route"})),
        }
    }
}

impl Seen {
    /// The body read as a form (`application/x-www-form-urlencoded`).
    pub fn form(&self) -> HashMap<String, String> {
        url::form_urlencoded::parse(&self.body)
            .into_owned()
            .collect()
    }
}
