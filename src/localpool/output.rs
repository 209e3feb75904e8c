//! Reading a job's output: stdout split into bounded lines, progress and result lines recognised,
//! and the tail of stderr kept for the error message.

use super::registry::Progress;
use serde_json::Value;

/// The longest stdout line that is interpreted, in bytes; a longer line is skipped whole. It
/// keeps a job's view (which carries the result) well under the 4 MiB response cap of cattery's
/// adapter, and bounds what each remembered job can hold.
pub(crate) const MAX_LINE_BYTES: usize = 1024 * 1024;
/// How much of the end of stderr is kept as a failed job's error, in bytes.
pub(crate) const STDERR_TAIL_BYTES: usize = 2048;

/// What one stdout line means for the job.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct LineEffect {
    /// The line was a JSON object with a `progress` object.
    pub(crate) progress: Option<Progress>,
    /// The line was a JSON object with a `result` key (its value may be null).
    pub(crate) result: Option<Value>,
}

/// Interprets one stdout line (without its newline). Anything that is not a JSON object means
/// nothing beyond a sign of life.
pub(crate) fn interpret_line(line: &[u8]) -> LineEffect {
    if line.trim_ascii_start().first() != Some(&b'{') {
        return LineEffect::default();
    }
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(line) else {
        return LineEffect::default();
    };
    let progress = match object.get("progress") {
        Some(Value::Object(progress)) => Some(Progress {
            completed: progress.get("completed").and_then(Value::as_u64),
            in_progress: progress.get("inProgress").and_then(Value::as_u64),
            total: progress.get("total").and_then(Value::as_u64),
        }),
        _ => None,
    };
    LineEffect {
        progress,
        result: object.remove("result"),
    }
}

/// Splits a byte stream into lines, skipping (whole) any line longer than its limit so that a
/// job cannot make the pool buffer without bound.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    line: Vec<u8>,
    overlong: bool,
    max: usize,
}

impl LineSplitter {
    pub(crate) fn new(max: usize) -> LineSplitter {
        LineSplitter {
            line: Vec::new(),
            overlong: false,
            max,
        }
    }

    /// Feeds the next chunk, calling `on_line` for every line it completes.
    pub(crate) fn push(&mut self, chunk: &[u8], mut on_line: impl FnMut(&[u8])) {
        let mut rest = chunk;
        while let Some(newline) = rest.iter().position(|b| *b == b'\n') {
            let (head, tail) = rest.split_at(newline);
            self.append(head);
            if !self.overlong {
                on_line(&self.line);
            }
            self.line.clear();
            self.overlong = false;
            rest = tail.get(1..).unwrap_or_default();
        }
        self.append(rest);
    }

    /// Ends the stream: a last line without a newline still counts.
    pub(crate) fn finish(&mut self, mut on_line: impl FnMut(&[u8])) {
        if !self.overlong && !self.line.is_empty() {
            on_line(&self.line);
        }
        self.line = Vec::new();
        self.overlong = false;
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.overlong {
            return;
        }
        if self.line.len() + bytes.len() > self.max {
            self.overlong = true;
            self.line = Vec::new();
        } else {
            self.line.extend_from_slice(bytes);
        }
    }
}

/// The last [`STDERR_TAIL_BYTES`] bytes a job wrote to stderr.
#[derive(Debug, Default)]
pub(crate) struct StderrTail {
    bytes: Vec<u8>,
    truncated: bool,
}

impl StderrTail {
    /// Appends a chunk, dropping what falls out of the window.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        let keep_from = chunk.len().saturating_sub(STDERR_TAIL_BYTES);
        if keep_from > 0 {
            self.truncated = true;
        }
        self.bytes
            .extend_from_slice(chunk.get(keep_from..).unwrap_or_default());
        let excess = self.bytes.len().saturating_sub(STDERR_TAIL_BYTES);
        if excess > 0 {
            self.bytes.drain(..excess);
            self.truncated = true;
        }
    }

    /// The tail as trimmed text (invalid UTF-8 replaced), without a character cut in half at
    /// its start.
    pub(crate) fn text(&self) -> String {
        let mut bytes = self.bytes.as_slice();
        if self.truncated {
            // UTF-8 continuation bytes look like 0b10xx_xxxx.
            while let Some((first, rest)) = bytes.split_first() {
                if first & 0b1100_0000 != 0b1000_0000 {
                    break;
                }
                bytes = rest;
            }
        }
        String::from_utf8_lossy(bytes).trim().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lines_of(chunks: &[&[u8]], max: usize) -> Vec<String> {
        let mut splitter = LineSplitter::new(max);
        let mut lines = Vec::new();
        for chunk in chunks {
            splitter.push(chunk, |line| {
                lines.push(String::from_utf8_lossy(line).into_owned())
            });
        }
        splitter.finish(|line| lines.push(String::from_utf8_lossy(line).into_owned()));
        lines
    }

    #[test]
    fn lines_are_reassembled_across_chunks() {
        let lines = lines_of(&[b"ab", b"c\nde", b"\n\nlast"], 100);
        assert_eq!(lines, ["abc", "de", "", "last"]);
    }

    #[test]
    fn an_overlong_line_is_skipped_whole() {
        let lines = lines_of(&[b"short\n0123", b"456789abc\nok\n"], 8);
        assert_eq!(lines, ["short", "ok"]);
    }

    #[test]
    fn a_progress_line_is_recognised_with_missing_fields_left_empty() {
        let effect = interpret_line(br#"{"progress":{"completed":2,"total":5}}"#);
        assert_eq!(
            effect.progress,
            Some(Progress {
                completed: Some(2),
                in_progress: None,
                total: Some(5)
            })
        );
        assert_eq!(effect.result, None);
    }

    #[test]
    fn a_result_line_keeps_its_value_even_when_null() {
        assert_eq!(
            interpret_line(br#"  {"result": {"a": [1]}}"#).result,
            Some(json!({"a": [1]}))
        );
        assert_eq!(
            interpret_line(br#"{"result": null}"#).result,
            Some(Value::Null)
        );
    }

    #[test]
    fn lines_that_are_not_json_objects_mean_nothing() {
        for line in [&b"hello"[..], b"[1,2]", b"{broken", br#"{"progress": 3}"#] {
            assert_eq!(interpret_line(line), LineEffect::default());
        }
    }

    #[test]
    fn the_stderr_tail_keeps_the_end_and_trims_it() {
        let mut tail = StderrTail::default();
        tail.push(b"  first\n");
        assert_eq!(tail.text(), "first");
        tail.push("é".repeat(STDERR_TAIL_BYTES).as_bytes());
        tail.push(b"the end!\n");
        let text = tail.text();
        assert!(text.ends_with("the end!"));
        assert!(!text.contains('\u{fffd}'), "a character was cut in half");
        assert!(text.len() <= STDERR_TAIL_BYTES);
    }
}
