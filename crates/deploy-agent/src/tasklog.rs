//! `TaskLog`: the log lines of one task attempt, redacted and numbered, buffered until the server acknowledges them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use deploy_api::agent::{AgentLogLine, LogStream};
use tokio::sync::Notify;

use crate::redact::Redactor;

/// Lines buffered before the uploader is woken early (it also runs every ~200 ms).
pub const WAKE_AT_LINES: usize = 200;

#[derive(Debug, Default)]
struct Buffer {
    /// Lines not yet acknowledged; `pending[0]` has sequence number `first_seq`.
    pending: VecDeque<AgentLogLine>,
    first_seq: u64,
}

/// A task's log. Cloning shares the buffer.
#[derive(Debug, Clone)]
pub struct TaskLog {
    buffer: Arc<Mutex<Buffer>>,
    redactor: Redactor,
    /// What the agent's own log calls this task (`<task id>/<attempt>`).
    label: String,
    wake: Arc<Notify>,
}

impl TaskLog {
    /// An empty log; every line passes through `redactor` before it is kept.
    pub fn new(label: impl Into<String>, redactor: Redactor, wake: Arc<Notify>) -> Self {
        Self::restore(label, redactor, wake, 0, Vec::new())
    }

    /// A log holding unacknowledged `lines` from `first_seq` on (read back from the journal).
    pub fn restore(
        label: impl Into<String>,
        redactor: Redactor,
        wake: Arc<Notify>,
        first_seq: u64,
        lines: Vec<AgentLogLine>,
    ) -> Self {
        Self {
            buffer: Arc::new(Mutex::new(Buffer {
                pending: lines.into(),
                first_seq,
            })),
            redactor,
            label: label.into(),
            wake,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Buffer> {
        // A poisoned buffer still holds valid lines: a panic elsewhere must not lose the log.
        self.buffer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The redactor this log applies.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Appends `text` (split into lines, redacted) from `stream`.
    pub fn line(&self, stream: LogStream, text: &str) {
        let mut n = 0;
        {
            let mut b = self.lock();
            for raw in text.lines() {
                let text = self.redactor.apply(raw);
                tracing::info!(task = %self.label, stream = ?stream, "{text}");
                b.pending.push_back(AgentLogLine { stream, text });
                n = b.pending.len();
            }
        }
        if n >= WAKE_AT_LINES {
            self.wake.notify_one();
        }
    }

    /// One of the agent's own progress lines.
    pub fn agent(&self, text: &str) {
        self.line(LogStream::Agent, text);
    }

    /// Lines sent so far plus buffered: the sequence number of the next line.
    pub fn total(&self) -> u64 {
        let b = self.lock();
        b.first_seq + b.pending.len() as u64
    }

    /// The first `max` unacknowledged lines and the sequence number of the first one.
    pub fn chunk(&self, max: usize) -> Option<(u64, Vec<AgentLogLine>)> {
        let b = self.lock();
        if b.pending.is_empty() {
            return None;
        }
        Some((b.first_seq, b.pending.iter().take(max).cloned().collect()))
    }

    /// Every unacknowledged line (for the journal).
    pub fn unacknowledged(&self) -> (u64, Vec<AgentLogLine>) {
        let b = self.lock();
        (b.first_seq, b.pending.iter().cloned().collect())
    }

    /// The server holds every line before `next_seq`.
    pub fn ack(&self, next_seq: u64) {
        let mut b = self.lock();
        while b.first_seq < next_seq && b.pending.pop_front().is_some() {
            b.first_seq += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_redacted_numbered_and_acked() {
        let log = TaskLog::new(
            "t/1",
            Redactor::new().with("hunter2"),
            Arc::new(Notify::new()),
        );
        log.agent("pulling with hunter2\nsecond");
        log.line(LogStream::Stderr, "third");
        assert_eq!(log.total(), 3);
        let (first, lines) = log.chunk(2).unwrap();
        assert_eq!(first, 0);
        assert_eq!(lines[0].text, "pulling with [REDACTED]");
        assert_eq!(lines.len(), 2);
        log.ack(2);
        let (first, lines) = log.chunk(10).unwrap();
        assert_eq!((first, lines.len()), (2, 1));
        // An old ack changes nothing; an ack past the end empties the buffer.
        log.ack(1);
        assert_eq!(log.chunk(10).unwrap().0, 2);
        log.ack(9);
        assert!(log.chunk(10).is_none());
        assert_eq!(log.total(), 3);
    }
}
