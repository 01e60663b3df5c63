//! `StoreRelay`: the agent hub's relay over the store (deliveries, results, relayed lines, liveness, agent records, announcements), so that every deployd replica serves every agent.
//!
//! Deliveries are stored without registry credentials: the replica that hands one to
//! an agent resolves them again from the target's secret reference, so no password
//! reaches the database.
//!
//! Every stored payload is sealed with deployd's application secrets key
//! ([`SecretKeys`], AES-256-GCM, the key id and `agent-delivery <task>/<attempt>` as
//! associated data) as `<key id> <base64 of nonce || ciphertext || tag>`: a payload
//! carries the resolved values of `secret:NAME` env references (and the target's
//! details), and the column never holds them in clear. Every payload, not only those
//! with secrets: sealing a few kilobytes costs microseconds, and one stored form needs
//! no second reading path. A payload copied to another key does not open. A delivery
//! sealed under a key that is no longer first still opens while its line stays in the
//! key file; deliveries live at most a day (`EXPIRE_QUEUED`), so an old key line can go
//! a day after a rotation.

use std::sync::Arc;

use async_trait::async_trait;
use deploy_api::agent::{AgentLogLine, LogStream, TaskDelivery, TaskKey, TaskResultRequest};
use deploy_core::{AgentId, Timestamp};
use deploy_exec::SecretsProvider;
use deploy_exec::agent::{
    AgentInfo, HubRelay, PollMark, RelayEnd, RelayResult, RelayState, RelayedDelivery,
    resolve_registry_auth,
};
use deploy_store::{AgentPoll, DeliveryEnd, DeliveryRecord, DeliveryState, RelayLine, Store};
use tokio::sync::broadcast;

use crate::agent_records::agent_info;
use crate::app_secrets::SecretKeys;

/// The relay of a replica's hub, over its store.
pub struct StoreRelay {
    store: Arc<dyn Store>,
    secrets: Arc<dyn SecretsProvider>,
    keys: Arc<SecretKeys>,
}

impl StoreRelay {
    /// A relay over `store`, resolving registry credentials with `secrets` (the agent
    /// executor's provider) and sealing stored payloads with `keys` (the application
    /// secrets key; every replica has the same key file).
    pub fn new(
        store: Arc<dyn Store>,
        secrets: Arc<dyn SecretsProvider>,
        keys: Arc<SecretKeys>,
    ) -> Self {
        Self {
            store,
            secrets,
            keys,
        }
    }
}

fn text<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn now() -> RelayResult<Timestamp> {
    Timestamp::from_datetime(time::OffsetDateTime::now_utc()).map_err(text)
}

fn state_of(state: RelayState) -> DeliveryState {
    match state {
        RelayState::Queued => DeliveryState::Queued,
        RelayState::Done => DeliveryState::Done,
        RelayState::Cancelled => DeliveryState::Cancelled,
        RelayState::Lost => DeliveryState::Lost,
    }
}

fn relay_state(state: DeliveryState) -> RelayState {
    match state {
        DeliveryState::Queued => RelayState::Queued,
        DeliveryState::Done => RelayState::Done,
        DeliveryState::Cancelled => RelayState::Cancelled,
        DeliveryState::Lost => RelayState::Lost,
    }
}

/// What a stored payload is sealed for: a delivery's key, never a secret's name (a
/// name has no space), so neither ciphertext opens as the other.
fn sealed_context(task: deploy_core::TaskId, attempt: u32) -> String {
    format!("agent-delivery {task}/{attempt}")
}

/// The delivery as stored: sealed, and without registry credentials (never written).
fn stored_payload(keys: &SecretKeys, delivery: &TaskDelivery) -> RelayResult<String> {
    let mut stored = delivery.clone();
    if let deploy_api::agent::AgentAction::Deploy { deploy }
    | deploy_api::agent::AgentAction::Rollback { deploy } = &mut stored.action
    {
        deploy.registry_auth = None;
    }
    let json = serde_json::to_vec(&stored).map_err(text)?;
    let context = sealed_context(delivery.key.task_id, delivery.key.attempt);
    let (key_id, sealed) = keys.seal(&context, &json).map_err(text)?;
    Ok(format!("{key_id} {sealed}"))
}

/// The delivery of a stored record: opened, then read.
fn delivery_of(keys: &SecretKeys, record: &DeliveryRecord) -> RelayResult<TaskDelivery> {
    let what = || {
        format!(
            "stored delivery of task {} attempt {}",
            record.task_id, record.attempt
        )
    };
    let (key_id, sealed) = record.payload.split_once(' ').ok_or_else(|| {
        format!(
            "{} is not sealed; expected `<key id> <sealed payload>`",
            what()
        )
    })?;
    let context = sealed_context(record.task_id, record.attempt);
    let json = keys
        .open(&context, key_id, sealed)
        .map_err(|e| format!("open the {}: {e}", what()))?;
    serde_json::from_slice(&json).map_err(|e| format!("{} is not a delivery: {e}", what()))
}

fn stream_name(stream: LogStream) -> &'static str {
    match stream {
        LogStream::Stdout => "stdout",
        LogStream::Stderr => "stderr",
        LogStream::Agent => "agent",
    }
}

fn stream_of(name: &str) -> LogStream {
    match name {
        "stderr" => LogStream::Stderr,
        "agent" => LogStream::Agent,
        _ => LogStream::Stdout,
    }
}

#[async_trait]
impl HubRelay for StoreRelay {
    fn shared(&self) -> bool {
        self.store.shared()
    }

    async fn put_deliveries(&self, deliveries: &[(AgentId, TaskDelivery)]) -> RelayResult<()> {
        let at = now()?;
        let records = deliveries
            .iter()
            .map(|(agent, d)| {
                Ok(DeliveryRecord {
                    task_id: d.key.task_id,
                    attempt: d.key.attempt,
                    agent_id: *agent,
                    payload: stored_payload(&self.keys, d)?,
                    state: DeliveryState::Queued,
                    result: None,
                    log_seq: 0,
                    created_at: at,
                    finished_at: None,
                })
            })
            .collect::<RelayResult<Vec<_>>>()?;
        self.store.put_deliveries(&records).await.map_err(text)
    }

    async fn finish(&self, ends: &[RelayEnd]) -> RelayResult<Vec<bool>> {
        let at = now()?;
        let ends = ends
            .iter()
            .map(|e| {
                Ok(DeliveryEnd {
                    task_id: e.key.task_id,
                    attempt: e.key.attempt,
                    agent_id: e.agent,
                    state: state_of(e.state),
                    result: e
                        .result
                        .as_ref()
                        .map(serde_json::to_string)
                        .transpose()
                        .map_err(text)?,
                    at,
                })
            })
            .collect::<RelayResult<Vec<_>>>()?;
        self.store.finish_deliveries(&ends).await.map_err(text)
    }

    async fn delivery(&self, key: TaskKey) -> RelayResult<Option<RelayedDelivery>> {
        let Some(record) = self
            .store
            .get_delivery(key.task_id, key.attempt)
            .await
            .map_err(text)?
        else {
            return Ok(None);
        };
        let result = record
            .result
            .as_deref()
            .map(serde_json::from_str::<TaskResultRequest>)
            .transpose()
            .map_err(|e| format!("stored result of task {} is not a result: {e}", key.task_id))?;
        Ok(Some(RelayedDelivery {
            agent: record.agent_id,
            state: relay_state(record.state),
            result,
            delivery: delivery_of(&self.keys, &record)?,
        }))
    }

    async fn queued(&self, agent: AgentId) -> RelayResult<Vec<TaskDelivery>> {
        self.store
            .queued_deliveries(agent)
            .await
            .map_err(text)?
            .iter()
            .map(|r| delivery_of(&self.keys, r))
            .collect()
    }

    async fn append_lines(
        &self,
        agent: AgentId,
        key: TaskKey,
        first_seq: u64,
        lines: &[AgentLogLine],
    ) -> RelayResult<Option<u64>> {
        let lines: Vec<RelayLine> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| RelayLine {
                seq: first_seq + i as u64,
                stream: stream_name(l.stream).to_owned(),
                text: l.text.clone(),
            })
            .collect();
        self.store
            .append_relay_lines(key.task_id, key.attempt, agent, first_seq, &lines)
            .await
            .map_err(text)
    }

    async fn lines(&self, key: TaskKey, from_seq: u64) -> RelayResult<Vec<(u64, AgentLogLine)>> {
        Ok(self
            .store
            .relay_lines(key.task_id, key.attempt, from_seq)
            .await
            .map_err(text)?
            .into_iter()
            .map(|l| {
                (
                    l.seq,
                    AgentLogLine {
                        stream: stream_of(&l.stream),
                        text: l.text,
                    },
                )
            })
            .collect())
    }

    async fn record_polls(&self, polls: &[PollMark]) -> RelayResult<()> {
        let polls: Vec<AgentPoll> = polls
            .iter()
            .map(|p| AgentPoll {
                agent_id: p.agent,
                at: p.at,
                draining: p.draining,
            })
            .collect();
        self.store.record_agent_polls(&polls).await.map_err(text)
    }

    async fn polls(&self) -> RelayResult<Vec<PollMark>> {
        Ok(self
            .store
            .agent_polls()
            .await
            .map_err(text)?
            .into_iter()
            .map(|p| PollMark {
                agent: p.agent_id,
                at: p.at,
                draining: p.draining,
            })
            .collect())
    }

    async fn agent(&self, id: AgentId) -> RelayResult<Option<AgentInfo>> {
        match self.store.get_agent(id).await {
            Ok(record) => agent_info(&record).map(Some).map_err(text),
            Err(deploy_store::StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(text(e)),
        }
    }

    async fn prune(
        &self,
        finished_before: Timestamp,
        queued_before: Timestamp,
    ) -> RelayResult<u64> {
        self.store
            .prune_deliveries(finished_before, queued_before)
            .await
            .map_err(text)
    }

    async fn announce(&self, message: &str) -> RelayResult<()> {
        self.store.announce(message).await.map_err(text)
    }

    fn subscribe(&self) -> broadcast::Receiver<String> {
        self.store.subscribe()
    }

    async fn resolve_auth(&self, delivery: &mut TaskDelivery) -> RelayResult<()> {
        resolve_registry_auth(self.secrets.as_ref(), delivery)
            .await
            .map_err(text)
    }
}
