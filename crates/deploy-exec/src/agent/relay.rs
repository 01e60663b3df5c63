//! `HubRelay`: what the agent hub shares with the other deployd replicas (deliveries, results, relayed log lines, liveness, agent records, announcements), and the batching of its writes.
//!
//! deploy-exec does not depend on the store: deploy-server implements this trait over
//! it. Messages on the bus are short text, each prefixed with the sending hub's origin
//! (a random number, so a replica skips its own): `d <agent>` (the agent's deliveries
//! changed), `r <task> <attempt>` (a key ended), `l <task> <attempt>` (lines were
//! relayed for a key), `a <agent>` (the agent's record changed: registered, rotated,
//! revoked); and the bus's own `resync` (announcements may have been lost: re-read).

use async_trait::async_trait;
use deploy_api::agent::{AgentLogLine as LogLine, TaskDelivery, TaskKey, TaskResultRequest};
use deploy_core::{AgentId, Timestamp};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::agent::hub::AgentInfo;

/// How a relayed delivery ended, or that it has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayState {
    Queued,
    Done,
    Cancelled,
    Lost,
}

/// The end of a delivery, written by the replica that learns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayEnd {
    pub key: TaskKey,
    /// Only this agent's delivery (`None`: whichever agent has it).
    pub agent: Option<AgentId>,
    pub state: RelayState,
    pub result: Option<TaskResultRequest>,
}

/// A stored delivery as another replica wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayedDelivery {
    pub agent: AgentId,
    pub state: RelayState,
    pub result: Option<TaskResultRequest>,
    /// Without registry credentials: [`HubRelay::resolve_auth`] puts them back.
    pub delivery: TaskDelivery,
}

/// An agent's last answered poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollMark {
    pub agent: AgentId,
    pub at: Timestamp,
    pub draining: bool,
}

/// Errors of the relay are text: the hub logs them or turns them into a retryable failure.
pub type RelayResult<T> = Result<T, String>;

/// The shared state behind the hubs of several replicas.
#[async_trait]
pub trait HubRelay: Send + Sync + 'static {
    /// True when other replicas may share it (announcements must be sent).
    fn shared(&self) -> bool;
    /// Stores deliveries (registry credentials are never stored).
    async fn put_deliveries(&self, deliveries: &[(AgentId, TaskDelivery)]) -> RelayResult<()>;
    /// Ends queued deliveries; per end, whether this call ended it.
    async fn finish(&self, ends: &[RelayEnd]) -> RelayResult<Vec<bool>>;
    async fn delivery(&self, key: TaskKey) -> RelayResult<Option<RelayedDelivery>>;
    /// The agent's queued deliveries, oldest first, without registry credentials.
    async fn queued(&self, agent: AgentId) -> RelayResult<Vec<TaskDelivery>>;
    /// Relays a chunk's new lines; the next sequence number, or `None` when the key is not
    /// a delivery of `agent`.
    async fn append_lines(
        &self,
        agent: AgentId,
        key: TaskKey,
        first_seq: u64,
        lines: &[LogLine],
    ) -> RelayResult<Option<u64>>;
    /// Relayed lines of `key` from `from_seq` on, with their sequence numbers.
    async fn lines(&self, key: TaskKey, from_seq: u64) -> RelayResult<Vec<(u64, LogLine)>>;
    async fn record_polls(&self, polls: &[PollMark]) -> RelayResult<()>;
    async fn polls(&self) -> RelayResult<Vec<PollMark>>;
    async fn agent(&self, id: AgentId) -> RelayResult<Option<AgentInfo>>;
    /// Deletes deliveries ended before `finished_before`, and those still queued that
    /// were written before `queued_before`.
    async fn prune(&self, finished_before: Timestamp, queued_before: Timestamp)
    -> RelayResult<u64>;
    async fn announce(&self, message: &str) -> RelayResult<()>;
    fn subscribe(&self) -> broadcast::Receiver<String>;
    /// Resolves the registry credentials of a stored delivery again (from the target's
    /// secret reference), as the dispatching executor did.
    async fn resolve_auth(&self, delivery: &mut TaskDelivery) -> RelayResult<()>;
}

/// One write of the hub to the relay, batched with the others in their order.
#[derive(Debug, Clone)]
pub(crate) enum RelayWrite {
    Put(AgentId, Box<TaskDelivery>),
    End(RelayEnd),
}

/// Writes a batch: its deliveries first, then its ends (an end in the same batch as its
/// delivery comes after it; across batches the order is the batches').
pub(crate) async fn write_all(relay: &dyn HubRelay, items: Vec<RelayWrite>) -> RelayResult<()> {
    let (mut puts, mut ends) = (Vec::new(), Vec::new());
    for item in items {
        match item {
            RelayWrite::Put(agent, delivery) => puts.push((agent, *delivery)),
            RelayWrite::End(end) => ends.push(end),
        }
    }
    if !puts.is_empty() {
        relay.put_deliveries(&puts).await?;
    }
    if !ends.is_empty() {
        relay.finish(&ends).await?;
    }
    Ok(())
}

/// Most bytes of announcements joined into one notification (PostgreSQL's payload
/// limit is 8,000 bytes).
const MAX_ANNOUNCEMENT_BYTES: usize = 7_000;

/// Sends announcements off the caller's path, joining those that come together into
/// one notification (one line each): a burst of 1,000 dispatches is a few `NOTIFY`s.
pub(crate) struct Announcer {
    tx: mpsc::UnboundedSender<String>,
}

impl Announcer {
    pub(crate) fn start(relay: std::sync::Arc<dyn HubRelay>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut joined = first;
                while joined.len() < MAX_ANNOUNCEMENT_BYTES {
                    match rx.try_recv() {
                        Ok(next) => {
                            joined.push('\n');
                            joined.push_str(&next);
                        }
                        Err(_) => break,
                    }
                }
                if let Err(e) = relay.announce(&joined).await {
                    tracing::warn!(error = %e, "cannot announce to the other replicas; they will find it at their next read");
                }
            }
        });
        Self { tx }
    }

    pub(crate) fn send(&self, message: String) {
        let _ = self.tx.send(message);
    }
}

/// A parsed bus message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Message {
    Deliveries(AgentId),
    Ended(TaskKey),
    Lines(TaskKey),
    Agent(AgentId),
    Resync,
}

impl Message {
    /// The message as sent by the hub `origin`.
    pub(crate) fn text(&self, origin: u64) -> String {
        match self {
            Self::Deliveries(a) => format!("{origin} d {a}"),
            Self::Ended(k) => format!("{origin} r {} {}", k.task_id, k.attempt),
            Self::Lines(k) => format!("{origin} l {} {}", k.task_id, k.attempt),
            Self::Agent(a) => format!("{origin} a {a}"),
            Self::Resync => "resync".to_owned(),
        }
    }

    /// The sender (`None` for the bus's own `resync`) and the message; `None` for a
    /// message this build does not know (a newer replica's): ignored.
    pub(crate) fn parse(text: &str) -> Option<(Option<u64>, Self)> {
        if text == "resync" {
            return Some((None, Self::Resync));
        }
        let mut words = text.split(' ');
        let origin: u64 = words.next()?.parse().ok()?;
        let kind = words.next()?;
        let key = |words: &mut std::str::Split<'_, char>| -> Option<TaskKey> {
            Some(TaskKey {
                task_id: deploy_core::TaskId::parse(words.next()?).ok()?,
                attempt: words.next()?.parse().ok()?,
            })
        };
        let message = match kind {
            "d" => Self::Deliveries(AgentId::parse(words.next()?).ok()?),
            "a" => Self::Agent(AgentId::parse(words.next()?).ok()?),
            "r" => Self::Ended(key(&mut words)?),
            "l" => Self::Lines(key(&mut words)?),
            _ => return None,
        };
        Some((Some(origin), message))
    }
}

/// Most items in one batched write.
const MAX_BATCH: usize = 512;

type Flush<T> = Box<
    dyn Fn(Vec<T>) -> std::pin::Pin<Box<dyn std::future::Future<Output = RelayResult<()>> + Send>>
        + Send
        + Sync,
>;

/// Groups writes that arrive together into one call (one transaction, one fsync on
/// SQLite): a burst of 1,000 dispatches costs a few commits, not 1,000.
pub(crate) struct Batcher<T> {
    tx: mpsc::UnboundedSender<(T, Option<oneshot::Sender<RelayResult<()>>>)>,
}

impl<T: Clone + Send + 'static> Batcher<T> {
    pub(crate) fn start(flush: Flush<T>) -> Self {
        let (tx, mut rx) =
            mpsc::unbounded_channel::<(T, Option<oneshot::Sender<RelayResult<()>>>)>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut items = vec![first];
                while items.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(item) => items.push(item),
                        Err(_) => break,
                    }
                }
                let (values, replies): (Vec<T>, Vec<_>) = items.into_iter().unzip();
                // The writes are idempotent (an insert that keeps an existing row, a
                // conditional end): a batch that failed (a database fail-over, say) is
                // tried again before it is given up, since an end that never lands would
                // leave its delivery queued for whoever reads it later.
                let mut outcome = flush(values.clone()).await;
                for delay_ms in [200, 500, 1_000, 2_000, 4_000] {
                    let Err(e) = &outcome else { break };
                    tracing::warn!(error = %e, retry_in_ms = delay_ms, "agent relay write failed");
                    tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
                    outcome = flush(values.clone()).await;
                }
                if let Err(e) = &outcome {
                    tracing::error!(error = %e, "agent relay write given up after retries");
                }
                for reply in replies.into_iter().flatten() {
                    let _ = reply.send(outcome.clone());
                }
            }
        });
        Self { tx }
    }

    /// Queues `item` for the next batch at once (so it is ordered before anything
    /// queued after this call) and returns the wait for that batch's commit.
    pub(crate) fn write(
        &self,
        item: T,
    ) -> impl std::future::Future<Output = RelayResult<()>> + use<T> {
        let (reply, done) = oneshot::channel();
        let queued = self.tx.send((item, Some(reply))).is_ok();
        async move {
            if !queued {
                return Err("the agent relay writer stopped".to_owned());
            }
            done.await
                .map_err(|_| "the agent relay writer stopped".to_owned())?
        }
    }

    /// Writes `item` with the next batch without waiting (failures are logged).
    pub(crate) fn write_later(&self, item: T) {
        let _ = self.tx.send((item, None));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_unknown_ones_are_ignored() {
        let agent = AgentId::parse("0190a000-0000-7000-8000-000000000001").unwrap();
        let key = TaskKey {
            task_id: deploy_core::TaskId::parse("0190a000-0000-7000-8000-000000000002").unwrap(),
            attempt: 3,
        };
        for m in [
            Message::Deliveries(agent),
            Message::Ended(key),
            Message::Lines(key),
            Message::Agent(agent),
        ] {
            assert_eq!(Message::parse(&m.text(7)), Some((Some(7), m)));
        }
        assert_eq!(
            Message::parse(&Message::Resync.text(7)),
            Some((None, Message::Resync))
        );
        assert_eq!(Message::parse("7 z something"), None);
        assert_eq!(Message::parse("7 d not-an-id"), None);
        assert_eq!(
            Message::parse("d 0190a000-0000-7000-8000-000000000001"),
            None
        );
        assert_eq!(
            Message::parse("7 r 0190a000-0000-7000-8000-000000000002"),
            None
        );
    }
}
