//! The hub's side of the relay: reading what other replicas stored (an agent's deliveries, a key's end and lines, agent records), resuming a key after a fail-over, and the loops that keep a replica in step (announcements, shared liveness, pruning).

use std::collections::HashSet;
use std::time::Duration;

use deploy_api::agent::TaskKey;
use deploy_core::{AgentId, Timestamp};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::agent::hub::{AgentHub, Completion, HubError};
use crate::agent::relay::{Message, PollMark, RelayState};
use crate::logs::TaskLog;

/// Finished deliveries are kept this long (a late result or chunk is acknowledged from
/// them), then pruned.
const KEEP_FINISHED: Duration = Duration::from_secs(3_600);
/// A delivery still queued this long after it was written is abandoned (an end that
/// never landed, a replica that died with its ad-hoc keys): no attempt lives that long.
const EXPIRE_QUEUED: Duration = Duration::from_secs(24 * 3_600);
/// How often finished deliveries are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Further reads of a stored delivery when resuming after a failed one, a second apart.
const RESUME_READ_RETRIES: usize = 3;
/// How often the records of the agents polling here are re-read: a backstop for a
/// revocation announcement this replica missed.
const RELOAD_EVERY: Duration = Duration::from_secs(10);

fn wall_now() -> Option<Timestamp> {
    Timestamp::from_datetime(time::OffsetDateTime::now_utc()).ok()
}

impl AgentHub {
    /// Reads the agent's stored deliveries: keys dispatched by other replicas are queued
    /// here for its polls; keys waited for elsewhere that ended there are dropped (and
    /// their agent told to stop them).
    pub(crate) async fn refresh(&self, agent: AgentId) {
        if self.relay().is_none() || !self.begin_refresh(agent) {
            return;
        }
        loop {
            self.refresh_once(agent).await;
            if !self.end_refresh(agent) {
                return;
            }
        }
    }

    async fn refresh_once(&self, agent: AgentId) {
        let Some(relay) = self.relay().cloned() else {
            return;
        };
        let stored = match relay.queued(agent).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(agent = %agent, error = %e, "cannot read an agent's stored deliveries; trying again at its next poll");
                self.mark_refresh(agent);
                return;
            }
        };
        let known: HashSet<TaskKey> = self.known_keys(agent, stored.iter().map(|d| d.key));
        let mut fresh = Vec::new();
        let mut queued = HashSet::new();
        for mut delivery in stored {
            queued.insert(delivery.key);
            if known.contains(&delivery.key) {
                continue;
            }
            match relay.resolve_auth(&mut delivery).await {
                Ok(()) => fresh.push(delivery),
                // Its executor's timeout ends it; the agent must not get it half-made.
                Err(e) => tracing::warn!(agent = %agent, task = %delivery.key.task_id,
                    error = %e, "cannot resolve the registry credentials of a stored delivery"),
            }
        }
        self.merge_remote(agent, fresh, &queued);
    }

    /// Waits again for a key an earlier process or replica dispatched (the engine
    /// reconciling an attempt left in flight): `None` when no delivery of it was stored;
    /// else the receiver of its completion, at once when it already ended.
    pub async fn resume(
        &self,
        key: TaskKey,
        log: TaskLog,
    ) -> Result<Option<oneshot::Receiver<Completion>>, HubError> {
        let Some(relay) = self.relay().cloned() else {
            return Ok(None);
        };
        // A read that fails is tried again: giving up here makes the engine inspect the
        // target, and start another attempt beside one that may still run.
        let mut read = relay.delivery(key).await;
        for _ in 0..RESUME_READ_RETRIES {
            if read.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            read = relay.delivery(key).await;
        }
        let Some(stored) = read.map_err(HubError::Relay)? else {
            return Ok(None);
        };
        let (tx, rx) = oneshot::channel();
        // The values resolved for the attempt travel (sealed) in its delivery; the
        // engine's resumed log knows none of them.
        let log = super::hub::with_delivery_secrets(log, &stored.delivery);
        let mut next_seq = 0;
        for (seq, line) in relay.lines(key, 0).await.map_err(HubError::Relay)? {
            super::hub::write_line(&log, &line);
            next_seq = seq + 1;
        }
        match (stored.state, stored.result) {
            (RelayState::Queued, _) => {
                let mut delivery = stored.delivery;
                // Needed only if this replica hands it out again; without them the agent's
                // pull fails, which is better than a second attempt.
                if let Err(e) = relay.resolve_auth(&mut delivery).await {
                    tracing::warn!(task = %key.task_id, error = %e, "cannot resolve the registry credentials of a resumed delivery");
                }
                self.attach(stored.agent, delivery, tx, log, next_seq);
                self.announce(Message::Deliveries(stored.agent));
                // It may have ended between the read and the attach.
                self.check_key(key).await;
            }
            (RelayState::Done, Some(result)) => {
                let _ = tx.send(Completion::Result(result));
            }
            (state, _) => {
                let _ = tx.send(Completion::Lost {
                    reason: format!(
                        "its delivery ended as {state:?} before this replica took the job over"
                    ),
                });
            }
        }
        Ok(Some(rx))
    }

    /// Completes a key waited for here that ended on another replica, if it did.
    pub async fn check_key(&self, key: TaskKey) {
        let Some(relay) = self.relay().cloned() else {
            return;
        };
        if !self.waits_here(key) {
            return;
        }
        let stored = match relay.delivery(key).await {
            Ok(Some(d)) if d.state != RelayState::Queued => d,
            Ok(Some(d)) => {
                // Still queued: tell the replica its agent polls again, in case the first
                // announcement was lost (a lost one delays, never loses).
                self.announce(Message::Deliveries(d.agent));
                return;
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(task = %key.task_id, error = %e, "cannot read a delivery's end");
                return;
            }
        };
        self.pull_lines(key).await;
        let completion = match (stored.state, stored.result) {
            (RelayState::Done, Some(result)) => Completion::Result(result),
            (state, _) => Completion::Lost {
                reason: format!("its delivery ended as {state:?} on another replica"),
            },
        };
        self.complete_waiter(key, completion);
    }

    /// Copies the lines relayed for a key waited for here into its log.
    pub(crate) async fn pull_lines(&self, key: TaskKey) {
        let Some(relay) = self.relay().cloned() else {
            return;
        };
        let Some(from) = self.next_seq_here(key) else {
            return;
        };
        match relay.lines(key, from).await {
            Ok(lines) => self.write_relayed(key, lines),
            Err(e) => {
                tracing::warn!(task = %key.task_id, error = %e, "cannot read relayed log lines");
            }
        }
    }

    async fn reload_agent(&self, id: AgentId) {
        let Some(relay) = self.relay().cloned() else {
            return;
        };
        match relay.agent(id).await {
            Ok(Some(info)) => self.upsert_agent(info),
            Ok(None) => {}
            Err(e) => tracing::warn!(agent = %id, error = %e, "cannot reload an agent record"),
        }
    }

    async fn on_message(&self, message: Message) {
        match message {
            Message::Deliveries(agent) => {
                if self.polls_here(agent) {
                    self.refresh(agent).await;
                }
            }
            Message::Ended(key) => self.check_key(key).await,
            Message::Lines(key) => self.pull_lines(key).await,
            Message::Agent(id) => self.reload_agent(id).await,
            Message::Resync => {
                for agent in self.agents_polling_here() {
                    self.reload_agent(agent).await;
                    self.refresh(agent).await;
                }
                for key in self.keys_waited_here() {
                    self.check_key(key).await;
                }
            }
        }
    }

    /// Tells the relay of the polls answered here, and learns of those answered elsewhere
    /// (and of agents registered elsewhere).
    async fn sync_liveness(&self) {
        let Some(relay) = self.relay().cloned() else {
            return;
        };
        let (Some(wall), now) = (wall_now(), Instant::now()) else {
            return;
        };
        let marks: Vec<PollMark> = self.unsynced_polls(wall, now);
        if let Err(e) = relay.record_polls(&marks).await {
            tracing::warn!(error = %e, "cannot share agent liveness with the other replicas");
        }
        match relay.polls().await {
            Ok(polls) => {
                for id in self.apply_remote_polls(&polls, wall, now) {
                    self.reload_agent(id).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the agents' shared liveness"),
        }
    }

    /// Runs the reaper, and with a relay the replica's relay loops, until `stop`.
    pub fn spawn_reaper(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let hub = self.clone();
        let period = (self.heartbeat_timeout() / 4).max(Duration::from_millis(10));
        if self.relay().is_some() {
            tokio::spawn(hub.clone().relay_loop(stop.clone()));
        }
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => hub.reap(),
                }
            }
        })
    }

    /// Announcements, shared liveness (every heartbeat timeout / 4, at most a second
    /// apart), record reloads and pruning.
    async fn relay_loop(self, stop: CancellationToken) {
        let Some(relay) = self.relay().cloned() else {
            return;
        };
        let mut bus = relay.subscribe();
        let period =
            (self.heartbeat_timeout() / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut last_prune, mut last_reload) = (Instant::now(), Instant::now());
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                received = bus.recv() => {
                    let messages: Vec<Message> = match received {
                        // One notification may carry several messages, one per line.
                        Ok(text) => text
                            .lines()
                            .filter_map(Message::parse)
                            .filter(|(origin, _)| *origin != Some(self.origin()))
                            .map(|(_, m)| m)
                            .collect(),
                        // Lagged: what was missed is re-read.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => vec![Message::Resync],
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    };
                    for message in messages {
                        let hub = self.clone();
                        tokio::spawn(async move { hub.on_message(message).await });
                    }
                }
                _ = tick.tick() => {
                    // One process (SQLite): nobody else answers polls or changes agents.
                    if relay.shared() {
                        self.sync_liveness().await;
                    }
                    if relay.shared() && last_reload.elapsed() >= RELOAD_EVERY {
                        last_reload = Instant::now();
                        for agent in self.agents_polling_here() {
                            self.reload_agent(agent).await;
                        }
                    }
                    if last_prune.elapsed() >= PRUNE_EVERY {
                        last_prune = Instant::now();
                        let ago = |d: Duration| {
                            wall_now().and_then(|w| Timestamp::from_unix_millis(w.unix_millis().saturating_sub(d.as_millis() as u64)).ok())
                        };
                        if let (Some(before), Some(queued_before)) = (ago(KEEP_FINISHED), ago(EXPIRE_QUEUED)) {
                            match relay.prune(before, queued_before).await {
                                Ok(n) if n > 0 => tracing::info!(deliveries = n, "pruned finished agent deliveries"),
                                Ok(_) => {}
                                Err(e) => tracing::warn!(error = %e, "cannot prune agent deliveries"),
                            }
                        }
                    }
                }
            }
        }
    }
}
