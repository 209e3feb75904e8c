//! A fault-injecting scheduler on loopback, written on raw TCP so that it can misbehave the way
//! real APIs under load do: 503s (random, seeded), 429 with `Retry-After`, connection resets,
//! hangs past the client's timeout, truncated and non-JSON bodies, slow answers, going away
//! (the port refuses connections) and coming back, and forgetting jobs.
//!
//! When it behaves, it is a small job API: `POST /jobs` (body `{"name"}`) creates a job (201,
//! 409 if the name exists, or the answer set with `set_exists_answer`), `GET /jobs` lists the
//! jobs (`{"jobs": [{"name", "id"}]}`), `GET /jobs/{name}` answers `{"status": "Running"}` for the first
//! `polls_to_finish` polls and then `{"status": "Complete", "output": {"name": …}}`, `DELETE
//! /jobs/{name}` removes it (404 when unknown). Every request is recorded with its arrival time.

use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One way to answer a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Behave.
    None,
    /// 503 with a JSON body.
    Unavailable,
    /// 429 with `Retry-After: <seconds>`.
    TooMany(u64),
    /// Close the connection without answering.
    Reset,
    /// Never answer (until the client gives up).
    Hang,
    /// Announce a longer body than is sent, then close.
    Truncated,
    /// 200 with an HTML body.
    NotJson,
    /// Behave, but only after this delay.
    Slow(Duration),
    /// 200 with a JSON body of 5 MiB (over cattery's 4 MiB cap).
    Huge,
    /// Do what was asked (create the job), then answer 503: the caller cannot tell.
    DoThenUnavailable,
    /// Do what was asked (create the job), then never answer.
    DoThenHang,
}

/// A recorded request.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub at: Instant,
    pub method: String,
    pub path: String,
}

#[derive(Debug)]
struct State {
    /// Faults to use for the next requests, in order (then `default_fault`).
    queue: Vec<Fault>,
    default_fault: Fault,
    /// Probability of a 503 for requests that would otherwise behave.
    unavailable_rate: f64,
    rng: fastrand::Rng,
    polls_to_finish: usize,
    jobs: HashMap<String, usize>,
    created: HashMap<String, usize>,
    forget_jobs: bool,
    arrivals: Vec<Arrival>,
    /// The answer to a create whose name exists.
    exists_answer: (u16, Value),
    /// Slow requests being worked on now (from their arrival until just before their answer
    /// is written), and the most there ever were at once.
    slow_now: usize,
    slow_peak: usize,
}

/// A running fault-injecting scheduler.
#[derive(Clone)]
pub struct FaultyScheduler {
    pub base_url: String,
    port: u16,
    state: Arc<Mutex<State>>,
    /// Dropping the sender stops the accept loop (the port then refuses connections).
    stop: Arc<Mutex<Option<tokio::sync::oneshot::Sender<()>>>>,
}

impl FaultyScheduler {
    pub async fn start(polls_to_finish: usize) -> FaultyScheduler {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let scheduler = FaultyScheduler {
            base_url: format!("http://127.0.0.1:{port}"),
            port,
            state: Arc::new(Mutex::new(State {
                queue: Vec::new(),
                default_fault: Fault::None,
                unavailable_rate: 0.0,
                rng: fastrand::Rng::with_seed(7),
                polls_to_finish,
                jobs: HashMap::new(),
                created: HashMap::new(),
                forget_jobs: false,
                arrivals: Vec::new(),
                exists_answer: (409, json!({"message": "exists"})),
                slow_now: 0,
                slow_peak: 0,
            })),
            stop: Arc::new(Mutex::new(None)),
        };
        scheduler.serve(listener);
        scheduler
    }

    fn serve(&self, listener: TcpListener) {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        *self.stop.lock().unwrap() = Some(stop);
        let state = self.state.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { return };
                        tokio::spawn(handle(stream, state.clone()));
                    }
                }
            }
        });
    }

    /// Answers the next requests with these faults, in order.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state.lock().unwrap().queue.extend(faults);
    }

    /// Answers every request (after the queued faults) with this fault.
    pub fn set_default_fault(&self, fault: Fault) {
        self.state.lock().unwrap().default_fault = fault;
    }

    /// Answers this share of the requests with 503, at random (seeded).
    pub fn set_unavailable_rate(&self, rate: f64) {
        self.state.lock().unwrap().unavailable_rate = rate;
    }

    /// Answers a create whose name exists with this status and body (instead of 409).
    pub fn set_exists_answer(&self, status: u16, body: Value) {
        self.state.lock().unwrap().exists_answer = (status, body);
    }

    pub fn forget_jobs(&self) {
        self.state.lock().unwrap().forget_jobs = true;
    }

    /// Goes away: the port refuses connections until [`FaultyScheduler::come_back`].
    pub fn go_away(&self) {
        self.stop.lock().unwrap().take();
    }

    /// Listens again on the same port, with the same jobs.
    pub async fn come_back(&self) {
        let start = Instant::now();
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(e) => {
                    assert!(
                        start.elapsed() < Duration::from_secs(10),
                        "cannot rebind: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        self.serve(listener);
    }

    /// The most slow requests (see [`Fault::Slow`]) ever worked on at once.
    pub fn slow_peak(&self) -> usize {
        self.state.lock().unwrap().slow_peak
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.state.lock().unwrap().arrivals.clone()
    }

    pub fn created(&self, name: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .created
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    pub fn total_created(&self) -> usize {
        self.state.lock().unwrap().created.values().sum()
    }
}

async fn handle(mut stream: TcpStream, state: Arc<Mutex<State>>) {
    let Some((method, path, body)) = read_request(&mut stream).await else {
        return;
    };
    let fault = {
        let mut state = state.lock().unwrap();
        state.arrivals.push(Arrival {
            at: Instant::now(),
            method: method.clone(),
            path: path.clone(),
        });
        let fault = if state.queue.is_empty() {
            state.default_fault.clone()
        } else {
            state.queue.remove(0)
        };
        let rate = state.unavailable_rate;
        if fault == Fault::None && rate > 0.0 && state.rng.f64() < rate {
            Fault::Unavailable
        } else {
            fault
        }
    };
    match fault {
        Fault::Reset => drop(stream),
        Fault::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Fault::Truncated => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\nconnection: close\r\n\r\n{\"status\":";
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
        Fault::NotJson => {
            respond(
                &mut stream,
                200,
                &[],
                "text/html",
                "<html>maintenance</html>",
            )
            .await
        }
        Fault::Huge => {
            let body = format!(
                "{{\"status\":\"Running\",\"padding\":\"{}\"}}",
                "x".repeat(5 * 1024 * 1024)
            );
            respond(&mut stream, 200, &[], "application/json", &body).await;
        }
        Fault::Unavailable => {
            respond(
                &mut stream,
                503,
                &[],
                "application/json",
                r#"{"message":"overloaded"}"#,
            )
            .await;
        }
        Fault::TooMany(seconds) => {
            let retry = seconds.to_string();
            respond(
                &mut stream,
                429,
                &[("retry-after", &retry)],
                "application/json",
                r#"{"message":"slow down"}"#,
            )
            .await;
        }
        Fault::Slow(delay) => {
            {
                let mut state = state.lock().unwrap();
                state.slow_now += 1;
                state.slow_peak = state.slow_peak.max(state.slow_now);
            }
            tokio::time::sleep(delay).await;
            // Counted out before the answer is written: a client that waits for this answer to
            // send its next request can never be counted twice.
            state.lock().unwrap().slow_now -= 1;
            let (status, answer) = behave(&state, &method, &path, &body);
            respond(
                &mut stream,
                status,
                &[],
                "application/json",
                &answer.to_string(),
            )
            .await;
        }
        Fault::DoThenUnavailable => {
            behave(&state, &method, &path, &body);
            respond(
                &mut stream,
                503,
                &[],
                "application/json",
                r#"{"message":"overloaded"}"#,
            )
            .await;
        }
        Fault::DoThenHang => {
            behave(&state, &method, &path, &body);
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Fault::None => {
            let (status, answer) = behave(&state, &method, &path, &body);
            respond(
                &mut stream,
                status,
                &[],
                "application/json",
                &answer.to_string(),
            )
            .await;
        }
    }
}

fn behave(state: &Arc<Mutex<State>>, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let mut state = state.lock().unwrap();
    let name = path.strip_prefix("/jobs/").map(str::to_owned);
    match (method, name) {
        ("POST", None) if path == "/jobs" => {
            let Some(name) = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v["name"].as_str().map(str::to_owned))
            else {
                return (400, json!({"message": "body.name is required"}));
            };
            if state.jobs.contains_key(&name) {
                return state.exists_answer.clone();
            }
            state.jobs.insert(name.clone(), 0);
            *state.created.entry(name.clone()).or_default() += 1;
            (201, json!({"metadata": {"name": name}}))
        }
        ("GET", None) if path == "/jobs" => {
            let mut names: Vec<&String> = state.jobs.keys().collect();
            names.sort();
            let jobs: Vec<Value> = names
                .into_iter()
                .map(|name| json!({"name": name, "id": format!("id-{name}")}))
                .collect();
            (200, json!({"jobs": jobs}))
        }
        ("GET", Some(name)) => {
            let finish = state.polls_to_finish;
            if state.forget_jobs {
                return (404, json!({"message": "not found"}));
            }
            match state.jobs.get_mut(&name) {
                None => (404, json!({"message": "not found"})),
                Some(polls) => {
                    *polls += 1;
                    if *polls > finish {
                        (200, json!({"status": "Complete", "output": {"name": name}}))
                    } else {
                        (200, json!({"status": "Running"}))
                    }
                }
            }
        }
        ("DELETE", Some(name)) => match state.jobs.remove(&name) {
            Some(_) => (200, json!({"deleted": name})),
            None => (404, json!({"message": "not found"})),
        },
        _ => (404, json!({"message": "no such route"})),
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(&str, &str)],
    content_type: &str,
    body: &str,
) {
    let reason = match status {
        200 => "OK",
        201 => "Created",
        404 => "Not Found",
        409 => "Conflict",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Reads one HTTP/1.1 request (head and a content-length body).
async fn read_request(stream: &mut TcpStream) -> Option<(String, String, Vec<u8>)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let mut lines = head.lines();
    let mut request_line = lines.next()?.split_whitespace();
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?.to_owned();
    let path = target.split('?').next().unwrap_or("").to_owned();
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    let body = buffer[head_end..].to_vec();
    Some((method, path, body))
}
