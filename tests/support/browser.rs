//! A real browser for the dashboard tests: Debian's headless Chromium driven by `chromedriver`
//! through the W3C WebDriver API, which is plain JSON over loopback HTTP, spoken here with the
//! tests' own HTTP client (no WebDriver crate needed for the handful of commands used).
//!
//! Chromium starts with a fresh profile and the flags that keep it from reaching for the network
//! (this machine has none; without them it stalls). chromedriver runs in a process group of its
//! own, and the whole group (driver and browser) is killed when the [`Browser`] is dropped.

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long a page may take to show what a test waits for.
pub const PAGE_LIMIT: Duration = Duration::from_secs(15);

/// How often a page is looked at again while waiting.
const LOOK_EVERY: Duration = Duration::from_millis(50);

/// Finds `name` on `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A headless Chromium under chromedriver, with one WebDriver session.
pub struct Browser {
    driver: Child,
    driver_port: u16,
    session: String,
    client: reqwest::Client,
    profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Close the session (the browser exits), then end the driver's whole process group, so
        // that no browser process outlives the test whatever happened.
        let _ = delete_session_blocking(self.driver_port, &self.session);
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `DELETE /session/{id}` without a runtime (for `Drop`), bounded by a short timeout.
fn delete_session_blocking(port: u16, session: &str) -> std::io::Result<()> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    Ok(())
}

impl Browser {
    /// Starts chromedriver and a headless Chromium, or answers `None` after saying on stderr why
    /// it cannot (Chromium or chromedriver not installed). With `CI` set that fails the test
    /// instead: CI installs both.
    pub async fn start() -> Option<Browser> {
        let chromium = ["chromium", "chromium-browser", "google-chrome"]
            .iter()
            .find_map(|name| on_path(name));
        let driver = on_path("chromedriver");
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            let reason = "chromium and chromedriver are not both installed \
                          (apt-get install -y chromium chromium-driver)";
            assert!(std::env::var_os("CI").is_none(), "CI is set and {reason}");
            // Printed on the real stderr, so that the skip shows even when output is captured.
            let _ = writeln!(std::io::stderr(), "SKIPPED: {reason}");
            return None;
        };
        let driver_port = super::gateway::free_port();
        let child = Command::new(driver)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let client = cattery::scheduler::http::plain_client().unwrap();
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            driver: child,
            driver_port,
            session: String::new(),
            client,
            profile,
        };
        let status = format!("http://127.0.0.1:{driver_port}/status");
        let client = browser.client.clone();
        super::wait::until(
            "chromedriver to get ready",
            Duration::from_secs(20),
            super::wait::CHECK_EVERY,
            async || match client.get(&status).send().await {
                Ok(response) => {
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    if body["value"]["ready"] == true {
                        Ok(())
                    } else {
                        Err(body.to_string())
                    }
                }
                Err(err) => Err(err.to_string()),
            },
        )
        .await;
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1360,1000",
        ]
        .iter()
        .map(|arg| (*arg).to_owned())
        .chain([format!(
            "--user-data-dir={}",
            browser.profile.path().display()
        )])
        .collect::<Vec<_>>();
        let created = browser
            .command(
                reqwest::Method::POST,
                "/session",
                json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {"binary": chromium, "args": args},
                    "goog:loggingPrefs": {"browser": "ALL"},
                }}}),
            )
            .await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_owned();
        Some(browser)
    }

    /// One WebDriver command; answers its `value`, fails the test on a WebDriver error.
    async fn command(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        self.try_command(method, path, body)
            .await
            .unwrap_or_else(|error| panic!("WebDriver {path} failed: {error}"))
    }

    /// One WebDriver command: its `value`, or the WebDriver error (`{"error", "message"}`).
    async fn try_command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Result<Value, Value> {
        let url = format!("http://127.0.0.1:{}{path}", self.driver_port);
        let mut request = self
            .client
            .request(method.clone(), &url)
            .timeout(Duration::from_secs(60));
        if method != reqwest::Method::GET && method != reqwest::Method::DELETE {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(answer["value"].clone())
        } else {
            Err(json!({"error": answer["value"]["error"], "message": answer["value"]["message"]}))
        }
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens `url` and waits until it has loaded.
    pub async fn goto(&self, url: &str) {
        self.command(
            reqwest::Method::POST,
            &self.session_path("/url"),
            json!({"url": url}),
        )
        .await;
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page; answers what it
    /// returns.
    pub async fn run(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            &self.session_path("/execute/sync"),
            json!({"script": script, "args": args}),
        )
        .await
    }

    /// Runs `script` until it returns something other than `null` or `false`, and answers that;
    /// fails the test after [`PAGE_LIMIT`], saying `what` was awaited and what the page showed.
    pub async fn wait_for(&self, what: &str, script: &str, args: Value) -> Value {
        self.wait_until(what, PAGE_LIMIT, script, args, |seen| {
            !seen.is_null() && *seen != Value::Bool(false)
        })
        .await
    }

    /// Runs `script` until `done` holds for what it returns, and answers that; fails the test
    /// after `limit`, saying `what` was awaited, what the script saw last and what the page
    /// showed.
    pub async fn wait_until(
        &self,
        what: &str,
        limit: Duration,
        script: &str,
        args: Value,
        mut done: impl FnMut(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let seen = self.run(script, args.clone()).await;
            if done(&seen) {
                return seen;
            }
            if start.elapsed() >= limit {
                let page = self.run("return document.body.innerText", json!([])).await;
                panic!("timed out waiting for {what}; last seen: {seen}\nthe page shows:\n{page}");
            }
            tokio::time::sleep(LOOK_EVERY).await;
        }
    }

    /// The text of the first element matching `css`, once there is one.
    pub async fn text_of(&self, css: &str) -> String {
        self.wait_for(
            &format!("an element {css}"),
            "const el = document.querySelector(arguments[0]); return el ? el.textContent : null;",
            json!([css]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    async fn element(&self, css: &str) -> String {
        self.wait_for(
            &format!("an element {css}"),
            "return document.querySelector(arguments[0]) !== null;",
            json!([css]),
        )
        .await;
        let found = self
            .command(
                reqwest::Method::POST,
                &self.session_path("/element"),
                json!({"using": "css selector", "value": css}),
            )
            .await;
        found[ELEMENT].as_str().unwrap().to_owned()
    }

    /// Clicks the element matching `css` as a user would. A live page may replace the element
    /// between finding and clicking it; then the new one is found and clicked.
    pub async fn click(&self, css: &str) {
        let start = Instant::now();
        loop {
            let element = self.element(css).await;
            let clicked = self
                .try_command(
                    reqwest::Method::POST,
                    &self.session_path(&format!("/element/{element}/click")),
                    json!({}),
                )
                .await;
            match clicked {
                Ok(_) => return,
                Err(error)
                    if error["error"] == "stale element reference"
                        && start.elapsed() < PAGE_LIMIT =>
                {
                    tokio::time::sleep(LOOK_EVERY).await;
                }
                Err(error) => panic!("clicking {css} failed: {error}"),
            }
        }
    }

    /// Types `text` into the element matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css).await;
        self.command(
            reqwest::Method::POST,
            &self.session_path(&format!("/element/{element}/value")),
            json!({"text": text}),
        )
        .await;
    }

    /// Saves a PNG of the window at `path`.
    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let data = self
            .command(
                reqwest::Method::GET,
                &self.session_path("/screenshot"),
                Value::Null,
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// The browser's console and network log since the last call: every entry, each with its
    /// `level` (`SEVERE` for errors), `source` and `message`.
    pub async fn console(&self) -> Vec<Value> {
        self.command(
            reqwest::Method::POST,
            &self.session_path("/se/log"),
            json!({"type": "browser"}),
        )
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
    }

    /// Ends the session: the browser exits.
    pub async fn quit(mut self) {
        let session = std::mem::take(&mut self.session);
        self.command(
            reqwest::Method::DELETE,
            &format!("/session/{session}"),
            Value::Null,
        )
        .await;
    }
}
