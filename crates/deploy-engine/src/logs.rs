//! `StoreLog`: a task log sink that appends lines to the store's log chunks in order, batched, off the executor's path.

use std::sync::Arc;

use deploy_core::TaskId;
use deploy_exec::LogSink;
use deploy_store::Store;
use tokio::sync::mpsc;

use crate::clock::Clock;

/// Lines per chunk at most; a chunk is also written as soon as the queue is empty.
const LINES_PER_CHUNK: usize = 64;

/// Receives log lines synchronously and writes them to the store from a background task.
pub(crate) struct StoreLog {
    tx: mpsc::UnboundedSender<String>,
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
        (Arc::new(Self { tx }), StoreLogWriter(handle))
    }
}

impl LogSink for StoreLog {
    fn line(&self, line: &str) {
        let _ = self.tx.send(line.to_owned());
    }
}

impl StoreLogWriter {
    /// Waits until every line sent before the sink was dropped is stored.
    pub(crate) async fn finish(self) {
        let _ = self.0.await;
    }
}
