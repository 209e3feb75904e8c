//! The gateway's API as the tests call it: one client for the application in process and for
//! the real binary, with the token each route needs, and every answer read whole into a
//! [`Reply`] (its status, headers and body), so that a test asserts on values, not on a stream.

use super::wait::{self, CHECK_EVERY, RUN_LIMIT};
use super::{ADMIN_TOKEN, DISPATCHER_TOKEN, READER_TOKEN};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// One answer of the gateway, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    /// The body as JSON, `Null` when it is not JSON (an empty answer, a text error).
    pub body: Value,
    /// The body as it was sent.
    pub text: String,
}

impl Reply {
    /// Reads a response whole.
    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        Reply {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    /// The body as JSON; fails the test when the gateway sent something else.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|err| panic!("the answer is not JSON ({err}): {}", self.text))
    }
}

/// The tokens a client presents: an operator's for pools, a dispatcher's for runs, a reader's
/// for views.
#[derive(Debug, Clone, Copy)]
pub struct Tokens {
    pub admin: &'static str,
    pub dispatcher: &'static str,
    pub reader: &'static str,
}

impl Tokens {
    /// One token per role, as the application of [`super::app`] is configured.
    pub const ROLES: Tokens = Tokens {
        admin: ADMIN_TOKEN,
        dispatcher: DISPATCHER_TOKEN,
        reader: READER_TOKEN,
    };

    /// The admin token for everything: the real binary is started with that token only.
    pub const ADMIN: Tokens = Tokens {
        admin: ADMIN_TOKEN,
        dispatcher: ADMIN_TOKEN,
        reader: ADMIN_TOKEN,
    };
}

/// A client of one gateway's API.
#[derive(Clone)]
pub struct Api {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    pub client: reqwest::Client,
    pub tokens: Tokens,
}

impl Api {
    /// A client of the gateway at `address`, presenting `tokens`.
    pub fn new(address: String, tokens: Tokens) -> Api {
        Api {
            address,
            client: cattery::scheduler::http::plain_client().unwrap(),
            tokens,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// `PUT /v1/pools/{name}` with a manifest and its secret bundle.
    pub async fn put_pool(&self, name: &str, manifest: Value, secrets: Value) -> Reply {
        let request = self
            .client
            .put(self.url(&format!("/v1/pools/{name}")))
            .bearer_auth(self.tokens.admin)
            .json(&json!({"manifest": manifest, "secrets": secrets}));
        Reply::read(request.send().await.unwrap()).await
    }

    /// Registers a pool and fails the test unless it is created.
    pub async fn register(&self, name: &str, manifest: Value, secrets: Value) {
        let reply = self.put_pool(name, manifest, secrets).await;
        assert_eq!(reply.status, 201, "registering {name}: {}", reply.text);
    }

    /// `POST /v1/pools/{pool}/runs`.
    pub async fn dispatch(&self, pool: &str, body: Value) -> Reply {
        let request = self
            .client
            .post(self.url(&format!("/v1/pools/{pool}/runs")))
            .bearer_auth(self.tokens.dispatcher)
            .json(&body);
        Reply::read(request.send().await.unwrap()).await
    }

    /// Submits a run and fails the test unless it is accepted.
    pub async fn submit(&self, pool: &str, body: Value) {
        let reply = self.dispatch(pool, body).await;
        assert_eq!(reply.status, 202, "dispatching to {pool}: {}", reply.text);
    }

    /// A submission to a gateway that may be going down: `None` when no answer came (the
    /// connection was refused or reset, or no answer within `timeout`).
    pub async fn try_dispatch(&self, pool: &str, body: Value, timeout: Duration) -> Option<Reply> {
        let response = self
            .client
            .post(self.url(&format!("/v1/pools/{pool}/runs")))
            .bearer_auth(self.tokens.dispatcher)
            .json(&body)
            .timeout(timeout)
            .send()
            .await
            .ok()?;
        Some(Reply::read(response).await)
    }

    /// `POST /v1/runs/{job_id}/cancel`.
    pub async fn cancel(&self, job_id: &str) -> Reply {
        let request = self
            .client
            .post(self.url(&format!("/v1/runs/{job_id}/cancel")))
            .bearer_auth(self.tokens.dispatcher);
        Reply::read(request.send().await.unwrap()).await
    }

    /// `GET` of any path, with the reader's token.
    pub async fn get(&self, path: &str) -> Reply {
        let request = self
            .client
            .get(self.url(path))
            .bearer_auth(self.tokens.reader);
        Reply::read(request.send().await.unwrap()).await
    }

    /// `GET /metrics` with the reader's token, asking for `accept` (OpenMetrics or the
    /// Prometheus text format) when given.
    pub async fn scrape(&self, accept: Option<&str>) -> Reply {
        let mut request = self
            .client
            .get(self.url("/metrics"))
            .bearer_auth(self.tokens.reader);
        if let Some(accept) = accept {
            request = request.header(reqwest::header::ACCEPT, accept);
        }
        Reply::read(request.send().await.unwrap()).await
    }

    /// A run's view; fails the test unless it is found.
    pub async fn run(&self, job_id: &str) -> Value {
        let reply = self.get(&format!("/v1/runs/{job_id}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json()
    }

    /// A run's history; fails the test unless it is found.
    pub async fn events(&self, job_id: &str) -> Vec<Value> {
        let reply = self.get(&format!("/v1/runs/{job_id}/events")).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json()["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Every run of `pool` by job id, read page by page.
    pub async fn runs_of(&self, pool: &str) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!("/v1/runs?pool={pool}&limit=1000");
            if let Some(cursor) = &after {
                path.push_str(&format!("&after={cursor}"));
            }
            let page = self.get(&path).await.json();
            for run in page["runs"].as_array().unwrap() {
                out.insert(run["jobId"].as_str().unwrap().to_owned(), run.clone());
            }
            match page["next"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => return out,
            }
        }
    }

    /// Polls the run until `done` says so; fails the test after `limit`, showing the run and
    /// its history.
    pub async fn wait_for(
        &self,
        job_id: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let reached = wait::poll(limit, CHECK_EVERY, async || {
            let run = self.run(job_id).await;
            if done(&run) { Ok(run) } else { Err(run) }
        })
        .await;
        match reached {
            Ok(run) => run,
            Err(run) => {
                let events = self.events(job_id).await;
                panic!("run {job_id} did not reach the expected state: {run}\nevents: {events:#?}")
            }
        }
    }

    /// Waits until the run is final.
    pub async fn wait_settled(&self, job_id: &str) -> Value {
        self.wait_for(job_id, RUN_LIMIT, |run| {
            matches!(run["state"].as_str(), Some("done" | "failed" | "cancelled"))
        })
        .await
    }

    /// Waits until the run is in `state` and its release is confirmed.
    pub async fn wait_released(&self, job_id: &str, state: &str, limit: Duration) -> Value {
        self.wait_for(job_id, limit, |run| {
            run["state"] == state && run["released"] == true
        })
        .await
    }
}

/// The event types of a run's history.
pub fn event_types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["type"].as_str().map(str::to_owned))
        .collect()
}
