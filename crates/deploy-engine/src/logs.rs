//! `StoreLog`: a task log sink that appends lines to the store's log chunks in order, batched, off the executor's path.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use deploy_core::TaskId;
use deploy_exec::LogSink;
use deploy_store::Store;
use tokio::sync::mpsc;

use crate::clock::Clock;

/// Lines per chunk at most; a chunk is also written as soon as the queue is empty.
const LINES_PER_CHUNK: usize = 64;

/// Bytes of an attempt's last log lines kept on its task (`DeploymentTask::logs`); the
/// complete log is in the store's log chunks (`GET /api/v1/tasks/{id}/logs`).
pub const LOG_TAIL_BYTES: usize = 4096;

/// Receives log lines synchronously and writes them to the store from a background task.
pub(crate) struct StoreLog {
    tx: mpsc::UnboundedSender<String>,
    /// The last lines, at most [`LOG_TAIL_BYTES`] with their line ends.
    tail: Mutex<(VecDeque<String>, usize)>,
}

/// Waits for every line given to a [`StoreLog`] to be written.
pub(crate) struct StoreLogWriter(tokio::task::JoinHandle<()>);

impl StoreLog {
    pub(crate) fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        task: TaskId,
    ) -> (Arc<Self>, StoreLogWriter) {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let handle = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut chunk = first;
                let mut lines = 1;
                while lines < LINES_PER_CHUNK {
                    match rx.try_recv() {
                        Ok(line) => {
                            chunk.push('\n');
                            chunk.push_str(&line);
                            lines += 1;
                        }
                        Err(_) => break,
                    }
                }
                if let Err(e) = store.append_log(task, clock.now(), &chunk).await {
                    tracing::warn!(task = %task, error = %e, "cannot store a task log chunk");
                }
            }
        });
        let tail = Mutex::new((VecDeque::new(), 0));
        (Arc::new(Self { tx, tail }), StoreLogWriter(handle))
    }

    /// The last lines logged so far, oldest first, newline-terminated.
    pub(crate) fn tail(&self) -> String {
        let tail = self
            .tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::with_capacity(tail.1);
        for line in &tail.0 {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

impl LogSink for StoreLog {
    fn line(&self, line: &str) {
        let _ = self.tx.send(line.to_owned());
        let mut tail = self
            .tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A single line longer than the tail keeps its end.
        let kept = if line.len() + 1 > LOG_TAIL_BYTES {
            let mut cut = line.len() + 1 - LOG_TAIL_BYTES;
            while !line.is_char_boundary(cut) {
                cut += 1;
            }
            &line[cut..]
        } else {
            line
        };
        tail.1 += kept.len() + 1;
        tail.0.push_back(kept.to_owned());
        while tail.1 > LOG_TAIL_BYTES {
            match tail.0.pop_front() {
                Some(old) => tail.1 -= old.len() + 1,
                None => break,
            }
        }
    }
}

impl StoreLogWriter {
    /// Waits until every line sent before the sink was dropped is stored.
    pub(crate) async fn finish(self) {
        let _ = self.0.await;
    }
}
