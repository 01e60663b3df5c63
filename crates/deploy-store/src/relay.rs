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

/// Expands the relay's SQL as inherent methods of `$store` (the `Store` impl delegates to
/// them; `async_trait` cannot see into a macro in its impl block).
macro_rules! relay_sql {
    ($store:ty, $db:ty) => {
        impl $store {
            fn delivery_row(r: &<$db as sqlx::Database>::Row) -> Result<crate::relay::DeliveryRecord, StoreError> {
                let state = r.string("state")?;
                Ok(crate::relay::DeliveryRecord {
                    task_id: model::parse("agent_deliveries.task_id", &r.string("task_id")?, deploy_core::TaskId::parse)?,
                    attempt: model::uint32("agent_deliveries.attempt", r.i64("attempt")?)?,
                    agent_id: model::parse("agent_deliveries.agent_id", &r.string("agent_id")?, deploy_core::AgentId::parse)?,
                    payload: r.string("payload")?,
                    state: crate::relay::DeliveryState::parse(&state)
                        .map_err(|e| StoreError::corrupt("agent_deliveries.state", state.clone())(e))?,
                    result: r.opt_string("result")?,
                    log_seq: model::uint("agent_deliveries.log_seq", r.i64("log_seq")?)?,
                    created_at: model::timestamp("agent_deliveries.created_at", r.i64("created_at")?)?,
                    finished_at: model::opt_timestamp("agent_deliveries.finished_at", r.opt_i64("finished_at")?)?,
                })
            }

            pub(crate) async fn relay_put_deliveries(&self, deliveries: &[crate::relay::DeliveryRecord]) -> Result<(), StoreError> {
                if deliveries.is_empty() {
                    return Ok(());
                }
                let mut tx = self.begin_write().await?;
                // One statement per chunk of rows: a burst of dispatches is a few round
                // trips, not one per key. A key already written (a resumed attempt)
                // keeps its row and its state.
                for chunk in deliveries.chunks(crate::relay::ROWS_PER_STATEMENT) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO agent_deliveries (task_id, attempt, agent_id, payload, state, result, log_seq, created_at, finished_at) ",
                    );
                    let mut failed = None;
                    q.push_values(chunk, |mut row, d| {
                        let (log_seq, created, finished) = match (
                            model::int("log_seq", d.log_seq),
                            model::millis(d.created_at),
                            model::opt_millis(d.finished_at),
                        ) {
                            (Ok(a), Ok(b), Ok(c)) => (a, b, c),
                            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                                failed = Some(e);
                                (0, 0, None)
                            }
                        };
                        row.push_bind(d.task_id.to_string())
                            .push_bind(i64::from(d.attempt))
                            .push_bind(d.agent_id.to_string())
                            .push_bind(d.payload.clone())
                            .push_bind(d.state.as_str())
                            .push_bind(d.result.clone())
                            .push_bind(log_seq)
                            .push_bind(created)
                            .push_bind(finished);
                    });
                    if let Some(e) = failed {
                        return Err(e);
                    }
                    q.push(" ON CONFLICT (task_id, attempt) DO NOTHING");
                    q.build()
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::db("write agent deliveries"))?;
                }
                tx.commit().await.map_err(StoreError::db("commit agent deliveries"))
            }

            pub(crate) async fn relay_finish_deliveries(&self, ends: &[crate::relay::DeliveryEnd]) -> Result<Vec<bool>, StoreError> {
                if ends.is_empty() {
                    return Ok(Vec::new());
                }
                // Sequential semantics in one statement per chunk: of two ends of one key
                // in a batch only the first can apply (the second would find it ended).
                let mut seen = std::collections::HashSet::new();
                let first: Vec<bool> = ends.iter().map(|e| seen.insert((e.task_id, e.attempt))).collect();
                let mut ended = std::collections::HashSet::new();
                let mut tx = self.begin_write().await?;
                let unique: Vec<&crate::relay::DeliveryEnd> =
                    ends.iter().zip(&first).filter(|(_, f)| **f).map(|(e, _)| e).collect();
                for chunk in unique.chunks(crate::relay::ROWS_PER_STATEMENT) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "UPDATE agent_deliveries SET state = v.state, result = v.result, finished_at = v.at FROM (",
                    );
                    for (n, e) in chunk.iter().enumerate() {
                        q.push(if n == 0 { "SELECT " } else { " UNION ALL SELECT " });
                        q.push("CAST(").push_bind(e.task_id.to_string()).push(" AS TEXT) AS task_id, ");
                        q.push("CAST(").push_bind(i64::from(e.attempt)).push(" AS BIGINT) AS attempt, ");
                        q.push("CAST(").push_bind(e.agent_id.map(|a| a.to_string())).push(" AS TEXT) AS agent_id, ");
                        q.push("CAST(").push_bind(e.state.as_str()).push(" AS TEXT) AS state, ");
                        q.push("CAST(").push_bind(e.result.clone()).push(" AS TEXT) AS result, ");
                        q.push("CAST(").push_bind(model::millis(e.at)?).push(" AS BIGINT) AS at");
                    }
                    q.push(
                        ") AS v WHERE agent_deliveries.task_id = v.task_id AND agent_deliveries.attempt = v.attempt
                           AND agent_deliveries.state = 'queued'
                           AND (v.agent_id IS NULL OR agent_deliveries.agent_id = v.agent_id)
                         RETURNING agent_deliveries.task_id, agent_deliveries.attempt",
                    );
                    for row in q
                        .build()
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(StoreError::db("end agent deliveries"))?
                    {
                        ended.insert((row.string("task_id")?, row.i64("attempt")?));
                    }
                }
                let done = ends
                    .iter()
                    .zip(first)
                    .map(|(e, first)| first && ended.contains(&(e.task_id.to_string(), i64::from(e.attempt))))
                    .collect();
                tx.commit().await.map_err(StoreError::db("commit agent delivery ends"))?;
                Ok(done)
            }

            pub(crate) async fn relay_get_delivery(&self, task: deploy_core::TaskId, attempt: u32) -> Result<Option<crate::relay::DeliveryRecord>, StoreError> {
                sqlx::query("SELECT * FROM agent_deliveries WHERE task_id = $1 AND attempt = $2")
                    .bind(task.to_string())
                    .bind(i64::from(attempt))
                    .fetch_optional(&self.writer)
                    .await
                    .map_err(StoreError::db("read an agent delivery"))?
                    .as_ref()
                    .map(Self::delivery_row)
                    .transpose()
            }

            pub(crate) async fn relay_queued_deliveries(&self, agent: deploy_core::AgentId) -> Result<Vec<crate::relay::DeliveryRecord>, StoreError> {
                // The writer pool: a delivery committed a moment ago must be seen (SQLite's
                // readers may hold an older snapshot).
                sqlx::query("SELECT * FROM agent_deliveries WHERE agent_id = $1 AND state = 'queued' ORDER BY created_at, task_id, attempt")
                    .bind(agent.to_string())
                    .fetch_all(&self.writer)
                    .await
                    .map_err(StoreError::db("read an agent's deliveries"))?
                    .iter()
                    .map(Self::delivery_row)
                    .collect()
            }

            pub(crate) async fn relay_append_lines(
                &self,
                task: deploy_core::TaskId,
                attempt: u32,
                agent: deploy_core::AgentId,
                first_seq: u64,
                lines: &[crate::relay::RelayLine],
            ) -> Result<Option<u64>, StoreError> {
                let mut tx = self.begin_write().await?;
                let row = sqlx::query("SELECT agent_id, state, log_seq FROM agent_deliveries WHERE task_id = $1 AND attempt = $2")
                    .bind(task.to_string())
                    .bind(i64::from(attempt))
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(StoreError::db("read an agent delivery"))?;
                let Some(row) = row else {
                    return Ok(None);
                };
                if row.string("agent_id")? != agent.to_string() {
                    return Ok(None);
                }
                let end = first_seq.saturating_add(lines.len() as u64);
                if row.string("state")? != "queued" {
                    // Finished: the lines are no longer wanted; acknowledge them.
                    return Ok(Some(end));
                }
                let stored = model::uint("agent_deliveries.log_seq", row.i64("log_seq")?)?;
                if end <= stored {
                    return Ok(Some(stored));
                }
                // A chunk past `stored` is taken as it is: after a fail-over the lines
                // before it went to the waiting replica directly and are not relayed.
                let skip = usize::try_from(stored.saturating_sub(first_seq)).unwrap_or(usize::MAX);
                for (i, line) in lines.iter().enumerate().skip(skip) {
                    sqlx::query(
                        "INSERT INTO agent_log_lines (task_id, attempt, seq, stream, text) VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (task_id, attempt, seq) DO NOTHING",
                    )
                    .bind(task.to_string())
                    .bind(i64::from(attempt))
                    .bind(model::int("seq", first_seq + i as u64)?)
                    .bind(line.stream.clone())
                    .bind(line.text.clone())
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db("relay an agent log line"))?;
                }
                sqlx::query("UPDATE agent_deliveries SET log_seq = $1 WHERE task_id = $2 AND attempt = $3 AND log_seq < $1")
                    .bind(model::int("log_seq", end)?)
                    .bind(task.to_string())
                    .bind(i64::from(attempt))
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db("advance a relayed log"))?;
                tx.commit().await.map_err(StoreError::db("commit relayed log lines"))?;
                Ok(Some(end))
            }

            pub(crate) async fn relay_read_lines(&self, task: deploy_core::TaskId, attempt: u32, from_seq: u64) -> Result<Vec<crate::relay::RelayLine>, StoreError> {
                sqlx::query("SELECT seq, stream, text FROM agent_log_lines WHERE task_id = $1 AND attempt = $2 AND seq >= $3 ORDER BY seq")
                    .bind(task.to_string())
                    .bind(i64::from(attempt))
                    .bind(model::int("from_seq", from_seq)?)
                    .fetch_all(&self.writer)
                    .await
                    .map_err(StoreError::db("read relayed log lines"))?
                    .iter()
                    .map(|r| {
                        Ok(crate::relay::RelayLine {
                            seq: model::uint("agent_log_lines.seq", r.i64("seq")?)?,
                            stream: r.string("stream")?,
                            text: r.string("text")?,
                        })
                    })
                    .collect()
            }

            pub(crate) async fn relay_record_polls(&self, polls: &[crate::relay::AgentPoll]) -> Result<(), StoreError> {
                if polls.is_empty() {
                    return Ok(());
                }
                let mut tx = self.begin_write().await?;
                for chunk in polls.chunks(crate::relay::ROWS_PER_STATEMENT) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "UPDATE agents SET last_poll_at = v.at, draining = v.draining FROM (",
                    );
                    for (n, p) in chunk.iter().enumerate() {
                        q.push(if n == 0 { "SELECT " } else { " UNION ALL SELECT " });
                        q.push("CAST(").push_bind(p.agent_id.to_string()).push(" AS TEXT) AS id, ");
                        q.push("CAST(").push_bind(model::millis(p.at)?).push(" AS BIGINT) AS at, ");
                        q.push("CAST(").push_bind(p.draining).push(" AS BOOLEAN) AS draining");
                    }
                    // The ids are compared as text (UUID on PostgreSQL, text on SQLite).
                    q.push(
                        ") AS v WHERE CAST(agents.id AS TEXT) = v.id
                           AND (agents.last_poll_at IS NULL OR agents.last_poll_at <= v.at)",
                    );
                    q.build()
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::db("record agent polls"))?;
                }
                tx.commit().await.map_err(StoreError::db("commit agent polls"))
            }

            pub(crate) async fn relay_agent_polls(&self) -> Result<Vec<crate::relay::AgentPoll>, StoreError> {
                sqlx::query("SELECT id, last_poll_at, draining FROM agents WHERE last_poll_at IS NOT NULL AND revoked_at IS NULL")
                    .fetch_all(&self.reader)
                    .await
                    .map_err(StoreError::db("read agent polls"))?
                    .iter()
                    .map(|r| {
                        Ok(crate::relay::AgentPoll {
                            agent_id: model::typed("agents.id", r.uuid("id")?)?,
                            at: model::timestamp("agents.last_poll_at", r.i64("last_poll_at")?)?,
                            draining: r.boolean("draining")?,
                        })
                    })
                    .collect()
            }

            pub(crate) async fn relay_prune(&self, finished_before: deploy_core::Timestamp, queued_before: deploy_core::Timestamp) -> Result<u64, StoreError> {
                let (finished, queued) = (model::millis(finished_before)?, model::millis(queued_before)?);
                let mut tx = self.begin_write().await?;
                sqlx::query(
                    "DELETE FROM agent_log_lines WHERE EXISTS (
                         SELECT 1 FROM agent_deliveries d
                         WHERE d.task_id = agent_log_lines.task_id AND d.attempt = agent_log_lines.attempt
                           AND ((d.state <> 'queued' AND d.finished_at < $1) OR (d.state = 'queued' AND d.created_at < $2)))",
                )
                .bind(finished)
                .bind(queued)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("prune relayed log lines"))?;
                let done = sqlx::query(
                    "DELETE FROM agent_deliveries
                     WHERE (state <> 'queued' AND finished_at < $1) OR (state = 'queued' AND created_at < $2)",
                )
                .bind(finished)
                .bind(queued)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("prune agent deliveries"))?;
                tx.commit().await.map_err(StoreError::db("commit a relay prune"))?;
                Ok(done.rows_affected())
            }
        }
    };
}

pub(crate) use relay_sql;
