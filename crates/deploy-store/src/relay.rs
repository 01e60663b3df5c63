//! The agent relay's records and SQL: deliveries, relayed log lines, shared liveness and the replicas' announcement bus (issue #18).
//!
//! Every deployd replica keeps its own agent hub in memory (long-polls, waiters). What
//! must cross replicas goes through these tables: the executor that dispatches a key
//! writes its delivery, the replica the agent polls hands it out, and the result and
//! log lines come back the same way. Announcements (PostgreSQL `NOTIFY` on
//! [`RELAY_CHANNEL`], an in-process broadcast on SQLite) wake the replica concerned at
//! once; the rows are the truth, so a lost announcement delays and never loses.

use deploy_core::{AgentId, TaskId, Timestamp};
use tokio::sync::broadcast;

/// The PostgreSQL channel of relay announcements.
pub const RELAY_CHANNEL: &str = "deploy_agent_relay";

/// Sent on the bus when a replica's listener (re)connects: announcements may have been
/// missed, so every subscriber re-reads what it cares about.
pub const RESYNC: &str = "resync";

/// Rows written by one statement of a batch.
pub(crate) const ROWS_PER_STATEMENT: usize = 200;

/// Announcements kept for a slow subscriber before it lags (and re-reads everything).
const BUS_CAPACITY: usize = 4096;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Waiting for the agent's result.
    Queued,
    /// The agent's result is in `result`.
    Done,
    /// The executor gave up on it (timeout, cancel): the agent must stop it.
    Cancelled,
    /// The agent went silent or was revoked; the attempt failed as retryable.
    Lost,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Done => "done",
            Self::Cancelled => "cancelled",
            Self::Lost => "lost",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "queued" => Self::Queued,
            "done" => Self::Done,
            "cancelled" => Self::Cancelled,
            "lost" => Self::Lost,
            other => {
                return Err(format!(
                    "unknown delivery state `{other}`; expected queued, done, cancelled or lost"
                ));
            }
        })
    }
}

/// One key handed to one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub task_id: TaskId,
    pub attempt: u32,
    pub agent_id: AgentId,
    /// The delivery as JSON, without registry credentials (the replica that hands it out
    /// resolves them again from the target's secret reference).
    pub payload: String,
    pub state: DeliveryState,
    /// The agent's result as JSON, once `Done`.
    pub result: Option<String>,
    /// Log lines relayed so far.
    pub log_seq: u64,
    pub created_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

/// The end of a queued delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryEnd {
    pub task_id: TaskId,
    pub attempt: u32,
    /// Only this agent's delivery is ended (`None`: whoever has it).
    pub agent_id: Option<AgentId>,
    pub state: DeliveryState,
    pub result: Option<String>,
    pub at: Timestamp,
}

/// A log line relayed from the replica an agent talks to to the one waiting for the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayLine {
    pub seq: u64,
    pub stream: String,
    pub text: String,
}

/// An agent's last answered poll, as shared between replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentPoll {
    pub agent_id: AgentId,
    pub at: Timestamp,
    pub draining: bool,
}

/// The announcement bus of one store handle: a broadcast that PostgreSQL's listener
/// (started at the first subscription) feeds, or that SQLite's single process feeds itself.
#[derive(Debug, Clone)]
pub(crate) struct RelayBus {
    pub(crate) tx: broadcast::Sender<String>,
    pub(crate) listening: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Default for RelayBus {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(BUS_CAPACITY).0,
            listening: std::sync::Arc::default(),
        }
    }
}
