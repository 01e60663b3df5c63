//! `Outbox`: log chunks and results waiting for the server's acknowledgement, re-sent with backoff per key until acknowledged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use deploy_api::agent::{
    AGENT_PROTOCOL_VERSION, LogAck, LogChunkRequest, MAX_LOG_LINES_PER_CHUNK, ResultAck, TaskKey,
    TaskResultRequest,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::client::ClientError;
use crate::errors::AgentRunError;
use crate::journal::{Journal, JournalEntry};
use crate::redact::Redactor;
use crate::tasklog::TaskLog;

/// Where the outbox sends (the HTTP client in the agent; a recording fake in tests).
pub trait Sender: Send + Sync {
    /// Sends one log chunk of `key`.
    fn logs(
        &self,
        key: &TaskKey,
        req: &LogChunkRequest,
    ) -> impl Future<Output = Result<LogAck, ClientError>> + Send;
    /// Sends the result of `key`.
    fn result(
        &self,
        key: &TaskKey,
        req: &TaskResultRequest,
    ) -> impl Future<Output = Result<ResultAck, ClientError>> + Send;
}

#[derive(Debug)]
struct Item {
    log: TaskLog,
    result: Option<TaskResultRequest>,
    backoff: Backoff,
    next_try: Instant,
}

/// Pending sends by key.
#[derive(Debug, Default)]
pub struct Outbox {
    items: Mutex<BTreeMap<TaskKey, Item>>,
    wake: Arc<Notify>,
}

/// What happened to one key in a flush.
enum Step {
    /// Everything of the key is acknowledged (or unknown to the server): forget it.
    Done,
    /// Sent what there was; more may come (a running task's log).
    Idle,
    /// The server could not be reached: retry after a backoff.
    Later(String),
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Notified when lines pile up or a result is added (the sender loop waits on it).
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<TaskKey, Item>> {
        self.items
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts tracking the log of a running key; returns the log to write to.
    pub fn track(&self, key: TaskKey, label: &str, redactor: Redactor) -> TaskLog {
        let log = TaskLog::new(label, redactor, self.wake.clone());
        self.lock().insert(
            key,
            Item {
                log: log.clone(),
                result: None,
                backoff: Backoff::default(),
                next_try: Instant::now(),
            },
        );
        log
    }

    /// The result of `key` is ready to send (after its log lines).
    pub fn finish(&self, key: &TaskKey, result: TaskResultRequest) {
        if let Some(item) = self.lock().get_mut(key) {
            item.result = Some(result);
            item.next_try = Instant::now();
        }
        self.wake.notify_one();
    }

    /// Re-sends a journalled result (and its unacknowledged lines), unless already queued.
    pub fn restore(&self, entry: &JournalEntry) {
        let Some(f) = &entry.finished else { return };
        let mut items = self.lock();
        if items.contains_key(&entry.key) {
            return;
        }
        let label = format!("{}/{}", entry.key.task_id, entry.key.attempt);
        items.insert(
            entry.key,
            Item {
                log: TaskLog::restore(
                    label,
                    Redactor::new(),
                    self.wake.clone(),
                    f.logs_first_seq,
                    f.logs.clone(),
                ),
                result: Some(f.result.clone()),
                backoff: Backoff::default(),
                next_try: Instant::now(),
            },
        );
        drop(items);
        self.wake.notify_one();
    }

    /// Whether `key` still has something to send.
    pub fn contains(&self, key: &TaskKey) -> bool {
        self.lock().contains_key(key)
    }

    /// Keys with something to send.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn send_key<S: Sender>(
        sender: &S,
        key: &TaskKey,
        log: &TaskLog,
        result: Option<&TaskResultRequest>,
    ) -> Result<Step, AgentRunError> {
        let verdict = |e: ClientError| match e {
            ClientError::Unauthorized { detail, .. } => {
                Err(AgentRunError::CredentialRefused { detail })
            }
            ClientError::NotFound { what, detail } => {
                tracing::info!(
                    task = %key.task_id, attempt = key.attempt,
                    "{what}: the server does not know this task attempt ({detail}); dropping it"
                );
                Ok(Step::Done)
            }
            other => Ok(Step::Later(other.to_string())),
        };
        while let Some((first_seq, lines)) = log.chunk(MAX_LOG_LINES_PER_CHUNK) {
            let req = LogChunkRequest {
                protocol: AGENT_PROTOCOL_VERSION,
                first_seq,
                lines,
            };
            match sender.logs(key, &req).await {
                Ok(ack) => {
                    let sent_to = first_seq + req.lines.len() as u64;
                    // The server lacks lines before these (it lost them, or this agent
                    // dropped them after a 404) and will never take these: re-sending
                    // would block the result forever, so they are dropped.
                    if ack.next_seq <= first_seq {
                        tracing::warn!(
                            task = %key.task_id, attempt = key.attempt,
                            "the server stores lines from {} on, these start at {first_seq}: dropping {} lines",
                            ack.next_seq, req.lines.len()
                        );
                        log.ack(sent_to);
                        continue;
                    }
                    log.ack(ack.next_seq.min(sent_to));
                }
                Err(e) => return verdict(e),
            }
        }
        let Some(result) = result else {
            return Ok(Step::Idle);
        };
        match sender.result(key, result).await {
            Ok(_) => Ok(Step::Done),
            Err(e) => verdict(e),
        }
    }

    /// Sends what is due for every key once. Acknowledged keys are marked in `journal` and
    /// forgotten; a 401 stops with [`AgentRunError::CredentialRefused`].
    pub async fn flush<S: Sender>(
        &self,
        sender: &S,
        journal: &Journal,
        now_ms: u64,
    ) -> Result<(), AgentRunError> {
        let now = Instant::now();
        let due: Vec<(TaskKey, TaskLog, Option<TaskResultRequest>)> = self
            .lock()
            .iter()
            .filter(|(_, item)| item.next_try <= now)
            .map(|(k, item)| (*k, item.log.clone(), item.result.clone()))
            .collect();
        for (key, log, result) in due {
            let step = Self::send_key(sender, &key, &log, result.as_ref()).await?;
            let acknowledged = self.after_send(&key, &log, result.is_some(), step);
            if acknowledged {
                // On the blocking pool: the write fsyncs (see `Journal::run_blocking`).
                if let Err(e) = journal
                    .run_blocking(move |j| j.acknowledge(&key, now_ms))
                    .await
                {
                    tracing::warn!("mark the result acknowledged: {e}");
                }
            }
        }
        Ok(())
    }

    /// Applies the answer of one send to the queue; `true` when a finished key was
    /// acknowledged and forgotten (the journal must then mark it).
    fn after_send(&self, key: &TaskKey, log: &TaskLog, finished: bool, step: Step) -> bool {
        let mut items = self.lock();
        match step {
            Step::Done => {
                // Only a finished key is forgotten; a running one the server does not
                // know drops the lines it has so far instead of re-sending them.
                if finished {
                    items.remove(key);
                    true
                } else {
                    log.ack(log.total());
                    false
                }
            }
            Step::Idle => {
                if let Some(item) = items.get_mut(key) {
                    item.backoff.reset();
                }
                false
            }
            Step::Later(why) => {
                if let Some(item) = items.get_mut(key) {
                    let delay = item.backoff.next_delay();
                    item.next_try = Instant::now() + delay;
                    tracing::warn!(
                        task = %key.task_id, attempt = key.attempt,
                        "{why}; retrying in {} ms", delay.as_millis()
                    );
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deploy_api::agent::{AgentLogLine, LogStream, TaskOutcome};
    use deploy_core::testing::task_id;

    /// Records what was sent and answers from a script of failures.
    #[derive(Default)]
    struct Fake {
        sent: Mutex<Vec<String>>,
        /// Answers to the next calls: `None` = success.
        fail: Mutex<Vec<Option<ClientError>>>,
        /// A fixed `next_seq` for log acks (a server with a gap).
        ack_at: Mutex<Option<u64>>,
        /// The `next_seq` of the next log ack only (a server that stored part of a chunk).
        ack_once: Mutex<Option<u64>>,
    }

    impl Fake {
        fn next(&self) -> Option<ClientError> {
            let mut f = self.fail.lock().unwrap();
            if f.is_empty() { None } else { f.remove(0) }
        }
    }

    impl Sender for Fake {
        async fn logs(&self, key: &TaskKey, req: &LogChunkRequest) -> Result<LogAck, ClientError> {
            self.sent.lock().unwrap().push(format!(
                "logs {} {} {}",
                key.attempt,
                req.first_seq,
                req.lines.len()
            ));
            match self.next() {
                Some(e) => Err(e),
                None => Ok(LogAck {
                    protocol: 1,
                    next_seq: self.ack_once.lock().unwrap().take().unwrap_or(
                        self.ack_at
                            .lock()
                            .unwrap()
                            .unwrap_or(req.first_seq + req.lines.len() as u64),
                    ),
                }),
            }
        }
        async fn result(
            &self,
            key: &TaskKey,
            _: &TaskResultRequest,
        ) -> Result<ResultAck, ClientError> {
            self.sent
                .lock()
                .unwrap()
                .push(format!("result {}", key.attempt));
            match self.next() {
                Some(e) => Err(e),
                None => Ok(ResultAck {
                    protocol: 1,
                    key: *key,
                }),
            }
        }
    }

    fn key(attempt: u32) -> TaskKey {
        TaskKey {
            task_id: task_id(1),
            attempt,
        }
    }

    fn result() -> TaskResultRequest {
        TaskResultRequest {
            protocol: 1,
            log_lines: 3,
            outcome: TaskOutcome::Inspected {
                digest: None,
                published: Vec::new(),
            },
        }
    }

    fn down() -> ClientError {
        ClientError::Transport {
            what: "send".to_owned(),
            detail: "connection refused".to_owned(),
        }
    }

    #[tokio::test]
    async fn lines_then_result_retried_with_backoff_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        journal.begin(&key(1), "inspect", 0).unwrap();
        let outbox = Outbox::new();
        let fake = Fake::default();
        let log = outbox.track(key(1), "t/1", Redactor::new());
        log.agent("a\nb");
        // A running key sends its lines, keeps tracking.
        outbox.flush(&fake, &journal, 1).await.unwrap();
        log.agent("c");
        *fake.fail.lock().unwrap() = vec![Some(down())];
        journal
            .finish(&key(1), result(), 2, log.unacknowledged().1, 2)
            .unwrap();
        outbox.finish(&key(1), result());
        outbox.flush(&fake, &journal, 3).await.unwrap();
        assert!(outbox.contains(&key(1)), "kept after a failed send");
        // Not due before its backoff: nothing is sent.
        let before = fake.sent.lock().unwrap().len();
        tokio::time::sleep(backoff::INITIAL + std::time::Duration::from_millis(20)).await;
        outbox.flush(&fake, &journal, 4).await.unwrap();
        assert!(!outbox.contains(&key(1)));
        assert!(fake.sent.lock().unwrap().len() > before);
        assert_eq!(
            *fake.sent.lock().unwrap(),
            ["logs 1 0 2", "logs 1 2 1", "logs 1 2 1", "result 1"]
        );
        let entry = journal.read(&key(1)).unwrap().unwrap();
        assert!(entry.finished.unwrap().acknowledged_at_ms.is_some());
    }

    #[tokio::test]
    async fn unknown_keys_are_dropped_and_a_revoked_credential_stops() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let outbox = Outbox::new();
        let fake = Fake::default();
        let mut entry = journal.finish(&key(2), result(), 0, Vec::new(), 0).unwrap();
        outbox.restore(&entry);
        *fake.fail.lock().unwrap() = vec![Some(ClientError::NotFound {
            what: "send the result".to_owned(),
            detail: "unknown".to_owned(),
        })];
        outbox.flush(&fake, &journal, 1).await.unwrap();
        assert!(outbox.is_empty());

        entry.key = key(3);
        if let Some(f) = entry.finished.as_mut() {
            f.logs = vec![AgentLogLine {
                stream: LogStream::Agent,
                text: "x".to_owned(),
            }];
        }
        outbox.restore(&entry);
        *fake.fail.lock().unwrap() = vec![Some(ClientError::Unauthorized {
            what: "send log lines".to_owned(),
            detail: "revoked".to_owned(),
        })];
        let err = outbox.flush(&fake, &journal, 2).await.unwrap_err();
        assert!(
            matches!(err, AgentRunError::CredentialRefused { .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn lines_the_server_cannot_take_do_not_block_the_result() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let outbox = Outbox::new();
        let fake = Fake::default();
        *fake.ack_at.lock().unwrap() = Some(0);
        let mut entry = journal.finish(&key(4), result(), 5, Vec::new(), 0).unwrap();
        if let Some(f) = entry.finished.as_mut() {
            f.logs = vec![AgentLogLine {
                stream: LogStream::Agent,
                text: "x".to_owned(),
            }];
        }
        outbox.restore(&entry);
        outbox.flush(&fake, &journal, 1).await.unwrap();
        assert!(outbox.is_empty());
        assert_eq!(*fake.sent.lock().unwrap(), ["logs 4 5 1", "result 4"]);
    }

    /// The result goes only after the server acknowledged every line of the key: a
    /// chunk that fails, or is stored in part, holds the result back until the rest is in.
    #[tokio::test]
    async fn the_result_waits_until_every_log_line_is_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        journal.begin(&key(5), "deploy", 0).unwrap();
        let outbox = Outbox::new();
        let fake = Fake::default();
        let log = outbox.track(key(5), "t/5", Redactor::new());
        let lines = MAX_LOG_LINES_PER_CHUNK + 500;
        for i in 0..lines {
            log.agent(&format!("line {i}"));
        }
        let mut done = result();
        done.log_lines = lines as u64;
        outbox.finish(&key(5), done);
        // The first chunk is stored, the second is not: no result.
        *fake.fail.lock().unwrap() = vec![None, Some(down())];
        outbox.flush(&fake, &journal, 1).await.unwrap();
        assert_eq!(
            *fake.sent.lock().unwrap(),
            ["logs 5 0 1000", "logs 5 1000 500"]
        );
        assert!(outbox.contains(&key(5)));
        // Next time the server stores 200 of the 500: the other 300 go before the result.
        *fake.ack_once.lock().unwrap() = Some(1_200);
        tokio::time::sleep(backoff::INITIAL + std::time::Duration::from_millis(20)).await;
        outbox.flush(&fake, &journal, 2).await.unwrap();
        assert_eq!(
            fake.sent.lock().unwrap()[2..],
            ["logs 5 1000 500", "logs 5 1200 300", "result 5"]
        );
        assert!(!outbox.contains(&key(5)));
        assert!(log.chunk(1).is_none(), "every line acknowledged");
    }

    use crate::backoff;
}
