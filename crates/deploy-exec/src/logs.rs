//! Task logs: a `LogSink` receives lines as they arrive; `TaskLog` splits, redacts secrets and enforces a byte cap.

use std::sync::{Arc, Mutex};

/// Default per-task log budget, in bytes.
pub const DEFAULT_LOG_CAP: usize = 256 * 1024;

/// The line written once when a task's log budget is used up.
pub const TRUNCATION_MARKER: &str = "[deploy-exec: log truncated: byte cap reached]";

/// What replaces a secret in a log line.
pub const REDACTED: &str = "[REDACTED]";

/// Where the lines of a task log go (the store, an SSE stream, a test buffer).
pub trait LogSink: Send + Sync {
    /// One complete line, without its newline, already redacted.
    fn line(&self, line: &str);
}

/// A sink that keeps every line in memory.
#[derive(Debug, Default, Clone)]
pub struct MemorySink {
    lines: Arc<Mutex<Vec<String>>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// The lines received so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl LogSink for MemorySink {
    fn line(&self, line: &str) {
        if let Ok(mut lines) = self.lines.lock() {
            lines.push(line.to_owned());
        }
    }
}

/// A sink that drops everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl LogSink for NullSink {
    fn line(&self, _line: &str) {}
}

#[derive(Debug, Default)]
struct LogState {
    written: usize,
    truncated: bool,
    /// Bytes of an unfinished line, per stream (0 = stdout, 1 = stderr).
    partial: [Vec<u8>; 2],
}

/// One task's log: line splitting, redaction of known secrets and a byte cap.
#[derive(Clone)]
pub struct TaskLog {
    sink: Arc<dyn LogSink>,
    cap: usize,
    secrets: Arc<Vec<String>>,
    state: Arc<Mutex<LogState>>,
}

impl std::fmt::Debug for TaskLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskLog").field("cap", &self.cap).finish()
    }
}

/// Which output stream bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout = 0,
    Stderr = 1,
}

impl TaskLog {
    /// A log writing to `sink`, at most `cap` bytes of lines (the marker comes on top).
    pub fn new(sink: Arc<dyn LogSink>, cap: usize) -> Self {
        Self {
            sink,
            cap,
            secrets: Arc::new(Vec::new()),
            state: Arc::new(Mutex::new(LogState::default())),
        }
    }

    /// What this log redacts (each secret, and each of its lines of 4+ bytes), longest
    /// first: the agent executor hands them to the agent, which redacts its lines too.
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// This log, also redacting `secret` (each of its lines of 4+ bytes) from every line.
    pub fn with_secret(mut self, secret: &str) -> Self {
        let mut secrets: Vec<String> = self.secrets.as_ref().clone();
        for part in std::iter::once(secret).chain(secret.lines()) {
            let part = part.trim();
            if part.len() >= 4 && !secrets.iter().any(|s| s == part) {
                secrets.push(part.to_owned());
            }
        }
        // Longest first, so a whole secret is replaced before any of its lines.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        self.secrets = Arc::new(secrets);
        self
    }

    /// Replaces every known secret in `text`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in self.secrets.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), REDACTED);
            }
        }
        out
    }

    /// Writes one line (a message of the executor itself).
    pub fn line(&self, line: &str) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        self.emit(&mut state, line);
    }

    /// Feeds raw output bytes; complete lines go to the sink at once.
    pub fn bytes(&self, stream: Stream, data: &[u8]) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let idx = stream as usize;
        let mut buf = std::mem::take(&mut state.partial[idx]);
        buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos;
            let text = String::from_utf8_lossy(&buf[start..end]);
            let text = text.strip_suffix('\r').unwrap_or(&text).to_owned();
            self.emit(&mut state, &text);
            start = end + 1;
        }
        buf.drain(..start);
        // A very long line without newline is flushed in pieces so memory stays bounded.
        if buf.len() > 64 * 1024 {
            let text = String::from_utf8_lossy(&buf).into_owned();
            self.emit(&mut state, &text);
            buf.clear();
        }
        state.partial[idx] = buf;
    }

    /// Flushes unfinished lines (at the end of a command).
    pub fn flush(&self) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        for idx in 0..2 {
            let buf = std::mem::take(&mut state.partial[idx]);
            if !buf.is_empty() {
                let text = String::from_utf8_lossy(&buf).into_owned();
                self.emit(&mut state, &text);
            }
        }
    }

    /// True once the cap cut the log.
    pub fn truncated(&self) -> bool {
        self.state.lock().map(|s| s.truncated).unwrap_or(false)
    }

    fn emit(&self, state: &mut LogState, line: &str) {
        if state.truncated {
            return;
        }
        let line = self.redact(line);
        let cost = line.len() + 1;
        if state.written + cost > self.cap {
            state.truncated = true;
            self.sink.line(TRUNCATION_MARKER);
            return;
        }
        state.written += cost;
        self.sink.line(&line);
    }
}

impl deploy_docker::StepLog for TaskLog {
    fn step(&self, text: &str) {
        self.line(text);
    }

    fn output(&self, text: &str) {
        self.line(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(cap: usize) -> (MemorySink, TaskLog) {
        let sink = MemorySink::new();
        let log = TaskLog::new(Arc::new(sink.clone()), cap);
        (sink, log)
    }

    #[test]
    fn splits_lines_across_chunks_and_streams() {
        let (sink, log) = log(1000);
        log.bytes(Stream::Stdout, b"hel");
        log.bytes(Stream::Stderr, b"err one\r\nerr");
        log.bytes(Stream::Stdout, b"lo\nwor");
        assert_eq!(sink.lines(), ["err one", "hello"]);
        log.flush();
        assert_eq!(sink.lines(), ["err one", "hello", "wor", "err"]);
    }

    #[test]
    fn caps_bytes_with_one_marker() {
        let (sink, log) = log(11);
        log.line("12345");
        log.line("1234");
        log.line("x");
        log.line("more");
        assert_eq!(sink.lines(), ["12345", "1234", TRUNCATION_MARKER]);
        assert!(log.truncated());
    }

    #[test]
    fn redacts_secrets_and_their_lines() {
        let (sink, log) = log(1000);
        let log = log
            .with_secret("hunter22")
            .with_secret("-----BEGIN-----\nAAAAsecretline\n");
        log.bytes(
            Stream::Stdout,
            b"password=hunter22 ok\nkey AAAAsecretline\n",
        );
        assert_eq!(sink.lines(), ["password=[REDACTED] ok", "key [REDACTED]"]);
    }
}
