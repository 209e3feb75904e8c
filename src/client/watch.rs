//! `cattery runs watch ID`: follows one run through the gateway's server-sent events
//! (`GET /v1/events?jobId=ID`) until it is finished, and exits with its outcome.
//!
//! The run is read first (an unknown id is the API's 404; a finished run answers at once), then
//! the stream is opened with `Last-Event-ID: 0`, which replays the run's persisted log before
//! going live, so nothing that happened in between is missed. A stream that breaks (the gateway
//! restarted) is opened again from the last event id seen, for about 25 s, before the command
//! gives up. On a terminal
//! the progress line is redrawn in place with `\r`; otherwise each change is one plain line.

use super::table::{bar, cell, one_line, progress};
use super::{Client, ClientError, Output, exit, segment};
use serde_json::Value;
use std::io::Write;
use std::time::Duration;

/// Stream (re)connections in a row that may fail before the command gives up: with the pauses
/// below, about 25 s, enough for a gateway to restart.
const MAX_RECONNECTS: u32 = 6;
/// The pause before the first reconnection; it doubles with each failure in a row, up to
/// [`MAX_RECONNECT_PAUSE`].
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);
/// The longest pause between two reconnections.
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(8);
/// The gateway sends a keep-alive comment every 15 s: a stream silent for this long is dead.
const SILENCE_LIMIT: Duration = Duration::from_secs(60);

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// `id:`, when it is a number.
    pub id: Option<i64>,
    /// `event:` (`run`).
    pub event: Option<String>,
    /// The `data:` lines joined by newlines.
    pub data: String,
}

/// Splits a byte stream into events: blank-line separated blocks of `field: value` lines,
/// comments (`:`) ignored, CR LF accepted.
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
}

impl SseParser {
    /// Feeds bytes; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buffer
            .extend(bytes.iter().copied().filter(|b| *b != b'\r'));
        let mut events = Vec::new();
        while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
            if let Some(event) = parse_block(&String::from_utf8_lossy(&block)) {
                events.push(event);
            }
        }
        events
    }
}

fn parse_block(block: &str) -> Option<SseEvent> {
    let mut event = SseEvent::default();
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => event.id = value.trim().parse().ok(),
            "event" => event.event = Some(value.to_owned()),
            "data" => data.push(value),
            _ => {}
        }
    }
    if data.is_empty() {
        return None;
    }
    event.data = data.join("\n");
    Some(event)
}

/// The exit code of a finished run; `None` while it is not finished.
pub fn outcome(run: &Value) -> Option<u8> {
    match run["state"].as_str()? {
        "done" => Some(exit::OK),
        "failed" => Some(exit::FAILED),
        "cancelled" => Some(exit::CANCELLED),
        _ => None,
    }
}

/// Shows a run's changes: a line redrawn in place on a terminal, a line per change elsewhere,
/// or one JSON document per change.
#[derive(Debug)]
pub struct Display {
    output: Output,
    tty: bool,
    last: String,
    drawn: usize,
}

impl Display {
    /// A display for `output`; `tty` when stdout is a terminal.
    pub fn new(output: Output, tty: bool) -> Display {
        Display {
            output,
            tty,
            last: String::new(),
            drawn: 0,
        }
    }

    /// The progress line of a run.
    pub fn line(run: &Value) -> String {
        let mut line = format!(
            "{}  {:<11}",
            cell(&run["jobId"]),
            run["state"].as_str().unwrap_or("?")
        );
        let bar = bar(run);
        if !bar.is_empty() {
            line.push_str(&format!("  {bar} {}", progress(run)));
        }
        if let Some(word) = run["schedulerState"].as_str().filter(|word| {
            !run["state"]
                .as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case(word))
        }) {
            line.push_str(&format!("  ({})", one_line(word)));
        }
        line.trim_end().to_owned()
    }

    /// Shows the run as it is now.
    pub fn show(&mut self, run: &Value, out: &mut dyn Write) -> std::io::Result<()> {
        if self.output == Output::Json {
            writeln!(out, "{run}")?;
            return out.flush();
        }
        let line = Display::line(run);
        if line == self.last {
            return Ok(());
        }
        if self.tty {
            let width = line.chars().count();
            let pad = self.drawn.saturating_sub(width);
            write!(out, "\r{line}{}", " ".repeat(pad))?;
            self.drawn = width;
        } else {
            writeln!(out, "{line}")?;
        }
        self.last = line;
        out.flush()
    }

    /// Shows the finished run's summary line (after its last progress line).
    pub fn finish(&mut self, run: &Value, out: &mut dyn Write) -> std::io::Result<()> {
        self.show(run, out)?;
        if self.output == Output::Json {
            return Ok(());
        }
        if self.tty && self.drawn > 0 {
            writeln!(out)?;
        }
        writeln!(out, "{}", Display::summary(run))?;
        out.flush()
    }

    /// `run ID done`, `run ID failed (cause): error`, `run ID cancelled`.
    pub fn summary(run: &Value) -> String {
        let id = cell(&run["jobId"]);
        match run["state"].as_str().unwrap_or("?") {
            "failed" => {
                let cause = run["failureCause"]
                    .as_str()
                    .map(|c| format!(" ({})", one_line(c)))
                    .unwrap_or_default();
                let error = run["error"]
                    .as_str()
                    .map(|e| format!(": {}", one_line(e)))
                    .unwrap_or_default();
                format!("run {id} failed{cause}{error}")
            }
            "done" if !run["result"].is_null() => {
                let mut result = one_line(&run["result"].to_string());
                if result.chars().count() > 200 {
                    result = result.chars().take(200).collect::<String>() + "…";
                }
                format!("run {id} done; result: {result}")
            }
            state => format!("run {id} {state}"),
        }
    }
}

/// Follows run `job_id` until it is finished; answers its exit code (0 done, 1 failed,
/// 2 cancelled).
///
/// # Errors
/// [`ClientError::Api`] (unknown run, token refused), [`ClientError::Transport`] when the
/// stream cannot be kept open.
pub async fn watch(
    client: &Client,
    job_id: &str,
    display: &mut Display,
    out: &mut dyn Write,
) -> Result<u8, ClientError> {
    let written = |e: std::io::Error| ClientError::Usage(format!("cannot write the output: {e}"));
    let run = client
        .get(&format!("/v1/runs/{}", segment(job_id)), &[])
        .await?
        .body;
    if let Some(code) = outcome(&run) {
        display.finish(&run, out).map_err(written)?;
        return Ok(code);
    }
    display.show(&run, out).map_err(written)?;
    let mut last_id = 0i64;
    let mut failures = 0u32;
    loop {
        let stream = match client.event_stream(job_id, last_id).await {
            Ok(stream) => Some(stream),
            Err(error @ ClientError::Transport { .. }) => {
                failures += 1;
                if failures > MAX_RECONNECTS {
                    return Err(error);
                }
                None
            }
            Err(other) => return Err(other),
        };
        if let Some(mut stream) = stream {
            let mut parser = SseParser::default();
            loop {
                let chunk = match tokio::time::timeout(SILENCE_LIMIT, stream.chunk()).await {
                    Ok(Ok(Some(chunk))) => chunk,
                    // The stream ended, broke or fell silent: open it again.
                    Ok(Ok(None)) | Ok(Err(_)) | Err(_) => break,
                };
                for event in parser.push(&chunk) {
                    if let Some(id) = event.id {
                        last_id = last_id.max(id);
                    }
                    let Ok(run) = serde_json::from_str::<Value>(&event.data) else {
                        continue;
                    };
                    if run["jobId"].as_str() != Some(job_id) {
                        continue;
                    }
                    failures = 0;
                    if let Some(code) = outcome(&run) {
                        display.finish(&run, out).map_err(written)?;
                        return Ok(code);
                    }
                    display.show(&run, out).map_err(written)?;
                }
            }
            failures += 1;
            if failures > MAX_RECONNECTS {
                return Err(ClientError::Transport {
                    server: client.server().to_owned(),
                    reason: "the event stream kept breaking".to_owned(),
                });
            }
        }
        let doubling = 2u32.saturating_pow(failures.saturating_sub(1));
        tokio::time::sleep((RECONNECT_PAUSE * doubling).min(MAX_RECONNECT_PAUSE)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_split_on_blank_lines_whatever_the_chunking() {
        let stream = b": keep-alive\n\nid: 7\nevent: run\ndata: {\"jobId\":\"a\"}\n\nid: 9\r\nevent: run\r\ndata: {\"jobId\":\r\ndata: \"b\"}\r\n\r\n";
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for chunk in stream.chunks(5) {
            events.extend(parser.push(chunk));
        }
        assert_eq!(
            events,
            vec![
                SseEvent {
                    id: Some(7),
                    event: Some("run".into()),
                    data: "{\"jobId\":\"a\"}".into()
                },
                SseEvent {
                    id: Some(9),
                    event: Some("run".into()),
                    data: "{\"jobId\":\n\"b\"}".into()
                },
            ]
        );
    }

    #[test]
    fn the_outcome_maps_final_states_to_exit_codes() {
        assert_eq!(outcome(&json!({"state": "done"})), Some(0));
        assert_eq!(outcome(&json!({"state": "failed"})), Some(1));
        assert_eq!(outcome(&json!({"state": "cancelled"})), Some(2));
        assert_eq!(outcome(&json!({"state": "running"})), None);
    }

    #[test]
    fn on_a_terminal_the_line_is_redrawn_in_place() {
        let mut display = Display::new(Output::Table, true);
        let mut out = Vec::new();
        let running =
            json!({"jobId": "j", "state": "running", "progress": {"completed": 1, "total": 2}});
        let done = json!({"jobId": "j", "state": "done", "progress": {"completed": 2, "total": 2}});
        display.show(&running, &mut out).unwrap();
        display.show(&running, &mut out).unwrap();
        display.finish(&done, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches('\r').count(), 2, "{text:?}");
        assert!(text.ends_with("\nrun j done\n"), "{text:?}");
        assert!(text.contains("1/2") && text.contains("2/2"), "{text:?}");
    }

    #[test]
    fn elsewhere_each_change_is_a_plain_line() {
        let mut display = Display::new(Output::Table, false);
        let mut out = Vec::new();
        display
            .show(&json!({"jobId": "j", "state": "queued"}), &mut out)
            .unwrap();
        display
            .finish(
                &json!({"jobId": "j", "state": "failed", "failureCause": "scheduler", "error": "exit 3\nboom"}),
                &mut out,
            )
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains('\r'));
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            vec![
                "j  queued",
                "j  failed",
                "run j failed (scheduler): exit 3 boom"
            ]
        );
    }
}
