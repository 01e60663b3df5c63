//! `AgentHub`: the in-memory meeting point of agents (long-polls, log chunks, results) and the `AgentExecutor` (dispatch, waiting, cancel).
//!
//! Each replica's hub holds in memory the agents (loaded from the store at start and
//! updated on register, rotate and revoke), per-agent outstanding deliveries, the
//! waiter of each [`TaskKey`] and a bounded memory of finished keys. An agent is
//! *active* when its last poll, answered by this replica or another, arrived less than
//! the heartbeat timeout ago; the reaper fails the in-flight keys of an agent that went
//! silent, as retryable.
//!
//! With a [`HubRelay`] (deployd always has one) a delivery is stored before any poll can
//! take it, and whatever crosses replicas goes through the relay: a key dispatched here
//! for an agent polling another replica, its result and log lines coming back, liveness,
//! and agent records changed elsewhere (`relay.rs` has the messages). Without one (unit
//! tests) the hub is memory only.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use deploy_api::agent::{
    AGENT_PROTOCOL_VERSION, AgentAction, AgentCapability, AgentLogLine, AgentSummary, LogAck,
    LogChunkRequest, LogStream, MAX_LOG_LINES_PER_CHUNK, MAX_POLL_WAIT_MS, PollRequest,
    PollResponse, ResultAck, TaskDelivery, TaskKey, TaskResultRequest,
};
use deploy_core::{AgentId, Digest, Labels, Name, Timestamp};
use thiserror::Error;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::agent::relay::{Batcher, HubRelay, Message, PollMark, RelayEnd, RelayState, RelayWrite};
use crate::logs::TaskLog;

/// How many finished keys the hub remembers (so a re-sent result or log chunk is acknowledged again).
const COMPLETED_MEMORY: usize = 10_000;
/// A cancel notice is repeated for this many heartbeat timeouts at most: by then a live
/// agent has polled several times, and a silent one has had its keys reaped.
const CANCEL_MEMORY_FACTOR: u32 = 2;
/// The store's `last_seen_at` of an agent is written at most this often.
pub const TOUCH_RESOLUTION: Duration = Duration::from_secs(60);

/// An agent as the hub knows it (from the store's record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    pub id: AgentId,
    pub name: Name,
    /// Set by its bootstrap token, then only by admins (never by the agent).
    pub labels: Labels,
    /// The version of `labels` (bumped by each change).
    pub labels_version: u64,
    pub capabilities: Vec<AgentCapability>,
    /// The sha256 of its credential, as stored (`None`: it cannot authenticate). Carried
    /// with the record so that every replica's copy is current; checking a credential
    /// against it is the server's business, the hub never reads it.
    pub credential_hash: Option<Digest>,
    pub created_at: Timestamp,
    pub last_seen_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

/// A hub call was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HubError {
    /// The agent is not known to this server, or revoked.
    #[error("agent `{0}` is unknown or revoked")]
    UnknownAgent(AgentId),
    /// The key is not an outstanding (or recently finished) key of the calling agent.
    #[error("task `{}` attempt {} is not a task of this agent", .0.task_id, .0.attempt)]
    UnknownKey(TaskKey),
    #[error("log chunk has {lines} lines; expected at most {max}")]
    TooManyLines { lines: usize, max: usize },
    /// The shared state behind the replicas could not be read or written (retryable).
    #[error("the agent relay is unavailable: {0}")]
    Relay(String),
}

/// How a dispatched key ended, as seen by its waiting executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// The agent reported the result.
    Result(TaskResultRequest),
    /// The agent stopped polling (heartbeat expiry) or was revoked; `reason` says which.
    Lost { reason: String },
}

/// Why no agent can take a target's task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoAgent(pub String);

struct AgentEntry {
    info: AgentInfo,
    /// When its last poll to this replica arrived (liveness).
    last_poll: Option<Instant>,
    /// When its last poll to any replica arrived, as the relay last told (liveness of an
    /// agent served by another replica), and whether it was draining then.
    remote_poll: Option<Instant>,
    remote_draining: bool,
    /// A local poll the relay has not been told of yet.
    unsynced: bool,
    /// It just came (back) to this replica: its stored deliveries are read before its
    /// next answer (it may have failed over from a replica that died).
    needs_refresh: bool,
    /// When this process last wrote its `last_seen_at` to the store.
    last_touch: Option<Instant>,
    /// Outstanding keys (delivered on every poll until their result arrives).
    queue: BTreeSet<TaskKey>,
    /// Keys the agent must stop, with when they were abandoned. Sent on every poll (a
    /// stale long-poll of a reconnected agent may answer into a dropped connection, so
    /// one answer is no proof of receipt); kept until the key's result arrives or
    /// [`CANCEL_MEMORY_FACTOR`] heartbeat timeouts pass (memory stays bounded).
    cancel: BTreeMap<TaskKey, CancelNotice>,
    notify: Arc<Notify>,
    /// Its last poll said it is stopping: nothing new is delivered to it.
    draining: bool,
}

impl AgentEntry {
    fn new(info: AgentInfo) -> Self {
        Self {
            info,
            last_poll: None,
            remote_poll: None,
            remote_draining: false,
            unsynced: false,
            needs_refresh: true,
            last_touch: None,
            queue: BTreeSet::new(),
            cancel: BTreeMap::new(),
            notify: Arc::new(Notify::new()),
            draining: false,
        }
    }

    fn active(&self, now: Instant, timeout: Duration) -> bool {
        self.info.revoked_at.is_none()
            && (self.locally_active(now, timeout)
                || self
                    .remote_poll
                    .is_some_and(|t| now.saturating_duration_since(t) < timeout))
    }

    /// It polls this replica.
    fn locally_active(&self, now: Instant, timeout: Duration) -> bool {
        self.last_poll
            .is_some_and(|t| now.saturating_duration_since(t) < timeout)
    }

    /// Draining, as said by its latest poll wherever it went.
    fn is_draining(&self, now: Instant, timeout: Duration) -> bool {
        if self.locally_active(now, timeout) {
            self.draining
        } else {
            self.remote_draining
        }
    }
}

/// A key the agent must stop.
struct CancelNotice {
    /// When the server gave up on it (the notice is forgotten some time after).
    since: Instant,
    /// Some poll answered it already: later polls still carry it, but it alone no longer
    /// makes a poll answer at once (the agent would spin on its long-poll).
    sent: bool,
}

impl CancelNotice {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            sent: false,
        }
    }
}

struct Pending {
    agent: AgentId,
    delivery: TaskDelivery,
    /// The waiting executor; `None` for a key another replica waits for (this one only
    /// hands it to the agent polling here).
    done: Option<oneshot::Sender<Completion>>,
    /// The waiter's log; `None` with `done` (lines go through the relay).
    log: Option<TaskLog>,
    next_seq: u64,
    /// Stored (or no relay): a poll may hand it out. A replica that dies after handing
    /// out a key must leave its row for the replica that takes the job over.
    ready: bool,
    /// Waited for here (`done` is `None` once the completion was sent).
    local: bool,
    /// Re-attached after a fail-over: the agent may send lines past `next_seq` (the
    /// earlier ones went to the replica that died), and they are taken.
    resumed: bool,
}

#[derive(Default)]
struct HubState {
    agents: BTreeMap<AgentId, AgentEntry>,
    /// The agent that last took a deploy of each selector-matched target: it keeps the
    /// target while it is active (a target does not hop between hosts that match).
    pins: HashMap<deploy_core::TargetId, AgentId>,
    /// Agents whose stored deliveries are being read, and whether another read was asked
    /// for meanwhile: one read at a time per agent, so an older read never undoes a newer.
    refreshing: HashMap<AgentId, bool>,
    pending: HashMap<TaskKey, Pending>,
    /// Finished (or abandoned) keys and the agent they belonged to, oldest first.
    completed: VecDeque<(TaskKey, AgentId)>,
    completed_set: HashSet<(TaskKey, AgentId)>,
}

impl HubState {
    fn remember(&mut self, key: TaskKey, agent: AgentId) {
        if self.completed_set.insert((key, agent)) {
            self.completed.push_back((key, agent));
        }
        while self.completed.len() > COMPLETED_MEMORY {
            if let Some(old) = self.completed.pop_front() {
                self.completed_set.remove(&old);
            }
        }
    }

    /// Removes `key` from the pending set and its agent's queue; remembers it as finished.
    fn finish(&mut self, key: TaskKey) -> Option<Pending> {
        let pending = self.pending.remove(&key)?;
        if let Some(entry) = self.agents.get_mut(&pending.agent) {
            entry.queue.remove(&key);
        }
        self.remember(key, pending.agent);
        Some(pending)
    }

    /// Fails `key` as lost and tells its agent to stop it: the engine gives up on the
    /// attempt, so a partitioned agent that comes back must not keep running it (an agent
    /// ignores cancels of keys it does not know). Returns the agent when the key was
    /// waited for here (its end is this replica's to record).
    fn fail(&mut self, key: TaskKey, reason: String) -> Option<AgentId> {
        let mut pending = self.finish(key)?;
        if let Some(entry) = self.agents.get_mut(&pending.agent) {
            entry.cancel.insert(key, CancelNotice::new());
            entry.notify.notify_waiters();
        }
        if let Some(done) = pending.done.take() {
            let _ = done.send(Completion::Lost { reason });
        }
        pending.local.then_some(pending.agent)
    }
}

/// What the memory alone says of a result or log chunk.
enum Local<T> {
    /// Handled here (the waiter is here, or the key finished here).
    Done(T),
    /// The key is known to be waited for elsewhere, or not known here: ask the relay.
    Relay,
}

/// The hub. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct AgentHub {
    inner: Arc<Inner>,
}

struct Inner {
    heartbeat_timeout: Duration,
    state: Mutex<HubState>,
    relay: Option<Relay>,
    /// This hub's name on the bus (its own announcements come back and are skipped).
    origin: u64,
    /// Woken when an agent becomes available (a first poll after silence, the end of
    /// draining, a registration): executors waiting for one look again.
    available: Notify,
}

/// The relay and the batchers of its writes.
struct Relay {
    shared: Arc<dyn HubRelay>,
    /// Deliveries and ends, written in the order they are given (an end never
    /// overtakes its delivery).
    writes: Batcher<RelayWrite>,
    /// Announcements, several per notification when they come together.
    announcements: crate::agent::relay::Announcer,
}

impl std::fmt::Debug for AgentHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentHub")
            .field("heartbeat_timeout", &self.inner.heartbeat_timeout)
            .finish_non_exhaustive()
    }
}

fn wall_now() -> Option<Timestamp> {
    Timestamp::from_datetime(time::OffsetDateTime::now_utc()).ok()
}

impl AgentHub {
    /// An empty hub; agents are inactive until they poll within `heartbeat_timeout`.
    pub fn new(heartbeat_timeout: Duration) -> Self {
        Self::build(heartbeat_timeout, None)
    }

    /// A hub sharing its agents' work with the other replicas through `relay` (must be
    /// called in a Tokio runtime: its batched writers start here).
    pub fn with_relay(heartbeat_timeout: Duration, relay: Arc<dyn HubRelay>) -> Self {
        let writer = relay.clone();
        let relay = Relay {
            announcements: crate::agent::relay::Announcer::start(relay.clone()),
            shared: relay,
            writes: Batcher::start(Box::new(move |items| {
                let r = writer.clone();
                Box::pin(async move { crate::agent::relay::write_all(r.as_ref(), items).await })
            })),
        };
        Self::build(heartbeat_timeout, Some(relay))
    }

    fn build(heartbeat_timeout: Duration, relay: Option<Relay>) -> Self {
        Self {
            inner: Arc::new(Inner {
                heartbeat_timeout,
                state: Mutex::new(HubState::default()),
                relay,
                origin: rand_origin(),
                available: Notify::new(),
            }),
        }
    }

    pub(crate) fn relay(&self) -> Option<&Arc<dyn HubRelay>> {
        self.inner.relay.as_ref().map(|r| &r.shared)
    }

    /// True when other replicas share the relay (announcements are needed).
    pub fn shared(&self) -> bool {
        self.relay().is_some_and(|r| r.shared())
    }

    /// Announces `message` to the other replicas, off the caller's path.
    pub(crate) fn announce(&self, message: Message) {
        if let Some(relay) = self.inner.relay.as_ref().filter(|r| r.shared.shared()) {
            relay.announcements.send(message.text(self.inner.origin));
        }
    }

    /// Records the end of a key waited for here (lost or abandoned), off the caller's
    /// path, and tells the replica its agent polls.
    fn record_end(&self, key: TaskKey, agent: AgentId, state: RelayState) {
        if let Some(relay) = &self.inner.relay {
            relay.writes.write_later(RelayWrite::End(RelayEnd {
                key,
                agent: Some(agent),
                state,
                result: None,
            }));
            self.announce(Message::Deliveries(agent));
        }
    }

    /// The heartbeat timeout agents are told to poll within.
    pub fn heartbeat_timeout(&self) -> Duration {
        self.inner.heartbeat_timeout
    }

    fn state(&self) -> MutexGuard<'_, HubState> {
        // A panic while holding the lock leaves consistent maps (every update is a
        // single insert/remove), so a poisoned lock is used as is.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds or updates an agent (registration, start-up load, rotation, revocation). A
    /// revoked agent has its in-flight keys failed. An update
    /// never clears a known revocation: a stale record (read before a concurrent revoke)
    /// must not bring a revoked agent back; nor does it undo a newer label change.
    pub fn upsert_agent(&self, mut info: AgentInfo) {
        let mut state = self.state();
        let id = info.id;
        if let Some(known) = state.agents.get(&id).map(|e| &e.info) {
            if let Some(at) = known.revoked_at {
                info.revoked_at.get_or_insert(at);
            }
            if known.labels_version > info.labels_version {
                info.labels = known.labels.clone();
                info.labels_version = known.labels_version;
            }
        }
        let revoked = info.revoked_at.is_some();
        match state.agents.get_mut(&id) {
            Some(entry) => entry.info = info,
            None => {
                state.agents.insert(id, AgentEntry::new(info));
            }
        }
        let lost = if revoked {
            Self::fail_agent_keys(&mut state, id, "the agent was revoked".to_owned())
        } else {
            Vec::new()
        };
        drop(state);
        self.record_lost(lost);
        self.inner.available.notify_waiters();
    }

    fn record_lost(&self, lost: Vec<(TaskKey, AgentId)>) {
        for (key, agent) in lost {
            self.record_end(key, agent, RelayState::Lost);
        }
    }

    /// Marks the agent revoked: nothing is delivered to it any more and its in-flight
    /// keys fail as retryable. False when the agent is unknown.
    pub fn revoke_agent(&self, id: AgentId, at: Timestamp) -> bool {
        let mut state = self.state();
        let Some(entry) = state.agents.get_mut(&id) else {
            return false;
        };
        entry.info.revoked_at.get_or_insert(at);
        entry.notify.notify_waiters();
        // An executor waiting for this agent to come back fails at once, naming why.
        self.inner.available.notify_waiters();
        let lost = Self::fail_agent_keys(&mut state, id, "the agent was revoked".to_owned());
        drop(state);
        self.record_lost(lost);
        self.announce(Message::Agent(id));
        true
    }

    /// Fails the agent's in-flight keys; those waited for here, with their agent.
    fn fail_agent_keys(
        state: &mut HubState,
        id: AgentId,
        reason: String,
    ) -> Vec<(TaskKey, AgentId)> {
        let keys: Vec<TaskKey> = state
            .agents
            .get(&id)
            .map(|e| e.queue.iter().copied().collect())
            .unwrap_or_default();
        keys.into_iter()
            .filter_map(|key| state.fail(key, reason.clone()).map(|a| (key, a)))
            .collect()
    }

    /// True when an agent (revoked or not) has this name.
    pub fn name_taken(&self, name: &Name) -> bool {
        self.state().agents.values().any(|e| e.info.name == *name)
    }

    /// The agent as known, if it is.
    pub fn agent(&self, id: AgentId) -> Option<AgentInfo> {
        self.state().agents.get(&id).map(|e| e.info.clone())
    }

    /// Every known agent as listed to operators, oldest first.
    pub fn summaries(&self) -> Vec<AgentSummary> {
        let state = self.state();
        let now = Instant::now();
        let mut out: Vec<AgentSummary> = state
            .agents
            .values()
            .map(|e| self.summary_of(e, now))
            .collect();
        out.sort_by_key(|s| (s.created_at, s.id));
        out
    }

    /// One agent as listed to operators.
    pub fn summary(&self, id: AgentId) -> Option<AgentSummary> {
        let state = self.state();
        state
            .agents
            .get(&id)
            .map(|e| self.summary_of(e, Instant::now()))
    }

    fn summary_of(&self, e: &AgentEntry, now: Instant) -> AgentSummary {
        AgentSummary {
            id: e.info.id,
            name: e.info.name.clone(),
            capabilities: e.info.capabilities.clone(),
            labels: e.info.labels.clone(),
            labels_version: e.info.labels_version,
            active: e.active(now, self.inner.heartbeat_timeout),
            in_flight: u32::try_from(e.queue.len()).unwrap_or(u32::MAX),
            last_seen_at: e.info.last_seen_at,
            created_at: e.info.created_at,
            revoked_at: e.info.revoked_at,
        }
    }

    /// Records that a request of the agent arrived now; returns the time to write as its
    /// `last_seen_at` when the last write is [`TOUCH_RESOLUTION`] old (else `None`).
    pub fn heartbeat(&self, id: AgentId) -> Result<Option<Timestamp>, HubError> {
        let mut state = self.state();
        let entry = state
            .agents
            .get_mut(&id)
            .filter(|e| e.info.revoked_at.is_none())
            .ok_or(HubError::UnknownAgent(id))?;
        let now = Instant::now();
        let was_active = entry.active(now, self.inner.heartbeat_timeout);
        if !entry.locally_active(now, self.inner.heartbeat_timeout) {
            // (Back) on this replica: what is stored for it is read before its next answer.
            entry.needs_refresh = true;
        }
        entry.last_poll = Some(now);
        entry.unsynced = true;
        if !was_active {
            // First sign of life since start or silence: waiting executors look again.
            self.inner.available.notify_waiters();
        }
        let seen = wall_now();
        if let Some(seen) = seen {
            entry.info.last_seen_at = Some(seen);
        }
        let due = entry
            .last_touch
            .is_none_or(|t| now.saturating_duration_since(t) >= TOUCH_RESOLUTION);
        if due {
            entry.last_touch = Some(now);
        }
        Ok(seen.filter(|_| due))
    }

    /// A long-poll: records the heartbeat, then answers at once when something is to be
    /// delivered or cancelled, else waits for a notification up to
    /// min(`wait_ms`, [`MAX_POLL_WAIT_MS`], heartbeat timeout / 3) or until `shutdown`.
    /// A draining poll (the agent is stopping) keeps the agent alive and gets its cancel
    /// notices but no delivery: its queued keys stay queued for it (the executor's
    /// timeout bounds them) and the selection passes it over.
    pub async fn poll(
        &self,
        agent: AgentId,
        request: &PollRequest,
        shutdown: CancellationToken,
    ) -> Result<PollResponse, HubError> {
        self.heartbeat(agent)?;
        let running: BTreeSet<TaskKey> = request.running.iter().copied().collect();
        let refresh = self
            .state()
            .agents
            .get_mut(&agent)
            .is_some_and(|e| std::mem::take(&mut e.needs_refresh));
        if refresh {
            self.refresh(agent).await;
        }
        let notify = {
            let mut state = self.state();
            let entry = state
                .agents
                .get_mut(&agent)
                .ok_or(HubError::UnknownAgent(agent))?;
            let was_draining = std::mem::replace(&mut entry.draining, request.draining);
            if was_draining && !request.draining {
                // Back in service: executors waiting for an available agent may go on.
                self.inner.available.notify_waiters();
            }
            entry.notify.clone()
        };
        let wait = Duration::from_millis(request.wait_ms.min(MAX_POLL_WAIT_MS))
            .min(self.inner.heartbeat_timeout / 3);
        // Register interest before looking, so a dispatch between the look and the wait
        // is not missed (`notify_waiters` wakes every future created before it).
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(response) = self.take(agent, &running, request.draining, false)? {
            return Ok(response);
        }
        if !wait.is_zero() {
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => {}
            }
        }
        Ok(self
            .take(agent, &running, request.draining, true)?
            .unwrap_or_else(|| PollResponse {
                protocol: AGENT_PROTOCOL_VERSION,
                deliveries: Vec::new(),
                cancel: Vec::new(),
            }))
    }

    /// The deliveries (outstanding keys not in `running`; none when `draining`) and cancel
    /// notices of `agent`; `None` when there is no delivery nor unsent notice and `always`
    /// is false.
    fn take(
        &self,
        agent: AgentId,
        running: &BTreeSet<TaskKey>,
        draining: bool,
        always: bool,
    ) -> Result<Option<PollResponse>, HubError> {
        let mut state = self.state();
        let state = &mut *state;
        let entry = state
            .agents
            .get_mut(&agent)
            .filter(|e| e.info.revoked_at.is_none())
            .ok_or(HubError::UnknownAgent(agent))?;
        let deliveries: Vec<TaskDelivery> = if draining {
            Vec::new()
        } else {
            entry
                .queue
                .iter()
                .filter(|k| !running.contains(k))
                .filter_map(|k| state.pending.get(k).filter(|p| p.ready))
                .map(|p| p.delivery.clone())
                .collect()
        };
        // A notice is not dropped once answered (the answer may go to a stale poll whose
        // connection is gone): it is repeated until the key's result arrives, while the
        // agent reports the key running, or for a bounded time.
        let now = Instant::now();
        let keep = self.inner.heartbeat_timeout * CANCEL_MEMORY_FACTOR;
        entry.cancel.retain(|k, notice| {
            running.contains(k) || now.saturating_duration_since(notice.since) < keep
        });
        let fresh = entry.cancel.values().any(|n| !n.sent);
        if deliveries.is_empty() && !fresh && !always {
            return Ok(None);
        }
        for notice in entry.cancel.values_mut() {
            notice.sent = true;
        }
        let cancel: Vec<TaskKey> = entry.cancel.keys().copied().collect();
        Ok(Some(PollResponse {
            protocol: AGENT_PROTOCOL_VERSION,
            deliveries,
            cancel,
        }))
    }

    /// Stores the lines of a chunk the key's log does not have yet (idempotent by
    /// sequence number). A chunk starting past the stored lines stores nothing: the ack's
    /// `next_seq` tells the agent where to resume.
    pub fn log_chunk(
        &self,
        agent: AgentId,
        key: TaskKey,
        chunk: &LogChunkRequest,
    ) -> Result<LogAck, HubError> {
        match self.log_chunk_local(agent, key, chunk) {
            Local::Done(ack) => ack,
            Local::Relay => Err(HubError::UnknownKey(key)),
        }
    }

    /// [`AgentHub::log_chunk`], relaying the lines of a key waited for on another replica.
    pub async fn report_log(
        &self,
        agent: AgentId,
        key: TaskKey,
        chunk: &LogChunkRequest,
    ) -> Result<LogAck, HubError> {
        if let Local::Done(ack) = self.log_chunk_local(agent, key, chunk) {
            return ack;
        }
        let Some(relay) = self.relay() else {
            return Err(HubError::UnknownKey(key));
        };
        // Relayed lines are stored: the secret values of the delivery handed out here are
        // hidden again before they are (the agent hides them already; this does not
        // depend on it).
        let redaction = self.state().pending.get(&key).map(|p| {
            with_delivery_secrets(
                TaskLog::new(Arc::new(crate::logs::NullSink), 0),
                &p.delivery,
            )
        });
        let lines: Vec<AgentLogLine> = match &redaction {
            Some(r) if !r.secrets().is_empty() => chunk
                .lines
                .iter()
                .map(|l| AgentLogLine {
                    stream: l.stream,
                    text: r.redact(&l.text),
                })
                .collect(),
            _ => chunk.lines.clone(),
        };
        let next = relay
            .append_lines(agent, key, chunk.first_seq, &lines)
            .await
            .map_err(HubError::Relay)?
            .ok_or(HubError::UnknownKey(key))?;
        if next > chunk.first_seq {
            self.announce(Message::Lines(key));
        }
        Ok(LogAck {
            protocol: AGENT_PROTOCOL_VERSION,
            next_seq: next,
        })
    }

    fn log_chunk_local(
        &self,
        agent: AgentId,
        key: TaskKey,
        chunk: &LogChunkRequest,
    ) -> Local<Result<LogAck, HubError>> {
        // Checked here, before anything is stored or relayed, for both entry points.
        if chunk.lines.len() > MAX_LOG_LINES_PER_CHUNK {
            return Local::Done(Err(HubError::TooManyLines {
                lines: chunk.lines.len(),
                max: MAX_LOG_LINES_PER_CHUNK,
            }));
        }
        let shared = self.shared();
        let mut guard = self.state();
        let state = &mut *guard;
        let end = chunk.first_seq.saturating_add(chunk.lines.len() as u64);
        match state.pending.get_mut(&key) {
            Some(p) if p.agent == agent && p.local => {
                let Some(log) = &p.log else {
                    return Local::Relay;
                };
                // Past a gap: taken after a fail-over (resumed), or when replicas share the
                // agent (the lines before went to another replica, which relays them).
                let gap_ok = p.resumed || shared;
                if (chunk.first_seq <= p.next_seq || gap_ok) && end > p.next_seq {
                    let skip = usize::try_from(p.next_seq.saturating_sub(chunk.first_seq))
                        .unwrap_or(usize::MAX);
                    for line in chunk.lines.iter().skip(skip) {
                        write_line(log, line);
                    }
                    p.next_seq = end;
                }
                Local::Done(Ok(LogAck {
                    protocol: AGENT_PROTOCOL_VERSION,
                    next_seq: p.next_seq,
                }))
            }
            Some(p) if p.agent == agent => Local::Relay,
            _ if state.completed_set.contains(&(key, agent)) => Local::Done(Ok(LogAck {
                protocol: AGENT_PROTOCOL_VERSION,
                next_seq: end,
            })),
            _ => Local::Relay,
        }
    }

    /// Hands the result to the waiting executor; a re-sent (or late) result of a key this
    /// agent had is acknowledged again and dropped.
    pub fn complete(
        &self,
        agent: AgentId,
        key: TaskKey,
        result: &TaskResultRequest,
    ) -> Result<ResultAck, HubError> {
        match self.complete_local(agent, key, result) {
            Local::Done(ack) => ack,
            Local::Relay => Err(HubError::UnknownKey(key)),
        }
    }

    /// [`AgentHub::complete`], ending through the relay a key waited for on another
    /// replica (or not known here: this replica restarted, or the agent failed over).
    pub async fn report_result(
        &self,
        agent: AgentId,
        key: TaskKey,
        result: &TaskResultRequest,
    ) -> Result<ResultAck, HubError> {
        if let Local::Done(ack) = self.complete_local(agent, key, result) {
            return ack;
        }
        let Some(relay) = &self.inner.relay else {
            return Err(HubError::UnknownKey(key));
        };
        let end = RelayEnd {
            key,
            agent: Some(agent),
            state: RelayState::Done,
            result: Some(result.clone()),
        };
        let handed_out_here = self
            .state()
            .pending
            .get(&key)
            .is_some_and(|p| p.agent == agent && !p.local);
        if handed_out_here {
            // This replica gave the agent the key: it is this agent's, so the end goes
            // with the next batch (results that come together share a commit).
            relay
                .writes
                .write(RelayWrite::End(end))
                .await
                .map_err(HubError::Relay)?;
            self.announce(Message::Ended(key));
        } else if relay
            .shared
            .finish(&[end])
            .await
            .map_err(HubError::Relay)?
            .first()
            == Some(&true)
        {
            self.announce(Message::Ended(key));
        } else {
            let relay = &relay.shared;
            // Not queued for this agent: acknowledged again if it was its key, which ended.
            match relay.delivery(key).await.map_err(HubError::Relay)? {
                Some(d) if d.agent == agent && d.state != RelayState::Queued => {}
                _ => return Err(HubError::UnknownKey(key)),
            }
        }
        let mut state = self.state();
        if state.pending.get(&key).is_some_and(|p| p.agent == agent) {
            state.finish(key);
        } else {
            state.remember(key, agent);
        }
        drop(state);
        Ok(ResultAck {
            protocol: AGENT_PROTOCOL_VERSION,
            key,
        })
    }

    fn complete_local(
        &self,
        agent: AgentId,
        key: TaskKey,
        result: &TaskResultRequest,
    ) -> Local<Result<ResultAck, HubError>> {
        let mut state = self.state();
        let ack = ResultAck {
            protocol: AGENT_PROTOCOL_VERSION,
            key,
        };
        match state.pending.get(&key) {
            Some(p) if p.agent == agent && p.local => {
                if let Some(mut pending) = state.finish(key)
                    && let Some(done) = pending.done.take()
                {
                    let _ = done.send(Completion::Result(result.clone()));
                }
                drop(state);
                if let Some(relay) = &self.inner.relay {
                    // The waiter has it; the row is for whoever looks later.
                    relay.writes.write_later(RelayWrite::End(RelayEnd {
                        key,
                        agent: Some(agent),
                        state: RelayState::Done,
                        result: Some(result.clone()),
                    }));
                }
                Local::Done(Ok(ack))
            }
            // Waited for on another replica: ended through the relay, then forgotten here.
            Some(p) if p.agent == agent => Local::Relay,
            _ if state.completed_set.contains(&(key, agent)) => {
                // The agent is done with the key: no need to tell it to stop any more.
                if let Some(entry) = state.agents.get_mut(&agent) {
                    entry.cancel.remove(&key);
                }
                tracing::info!(agent = %agent, task = %key.task_id, attempt = key.attempt,
                    "result of a finished or abandoned key acknowledged and dropped");
                Local::Done(Ok(ack))
            }
            _ => Local::Relay,
        }
    }

    /// Picks the agent for a target: `agent_id` when given (must be active, unrevoked,
    /// capable and not draining), else the active, non-draining capable agent whose
    /// labels contain every `selector` label, least in flight first, then by id.
    pub fn select(
        &self,
        agent_id: Option<AgentId>,
        selector: &Labels,
        capability: AgentCapability,
    ) -> Result<AgentId, NoAgent> {
        self.try_select(agent_id, selector, capability, None)
            .map_err(|(e, _)| e)
    }

    /// Pins a selector-matched `target` to `agent`: later selections for it prefer that
    /// agent while it is active, capable and not draining.
    pub fn pin(&self, target: deploy_core::TargetId, agent: AgentId) {
        self.state().pins.insert(target, agent);
    }

    /// Like [`AgentHub::select`], but while the only candidates are registered, unrevoked
    /// and capable yet inactive or draining (after a restart, agents reconnect with a
    /// backoff), waits for one to poll: by notification, at most `max_wait`, until
    /// `cancel`. Without that, a restart would burn attempts on `NoAgentAvailable`.
    pub async fn select_waiting(
        &self,
        agent_id: Option<AgentId>,
        selector: &Labels,
        capability: AgentCapability,
        target: Option<deploy_core::TargetId>,
        max_wait: Duration,
        cancel: &CancellationToken,
    ) -> Result<AgentId, NoAgent> {
        let deadline = Instant::now() + max_wait;
        loop {
            // Register interest before looking, so a poll between the look and the wait
            // is not missed.
            let notified = self.inner.available.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_select(agent_id, selector, capability, target) {
                Ok(id) => return Ok(id),
                Err((e, false)) => return Err(e),
                Err((e, true)) => {
                    if Instant::now() >= deadline || cancel.is_cancelled() {
                        return Err(e);
                    }
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep_until(deadline) => {}
                        () = cancel.cancelled() => {}
                    }
                }
            }
        }
    }

    /// The selection; an error says whether an agent may yet come (`true`: a registered,
    /// unrevoked, capable candidate is only inactive or draining).
    fn try_select(
        &self,
        agent_id: Option<AgentId>,
        selector: &Labels,
        capability: AgentCapability,
        target: Option<deploy_core::TargetId>,
    ) -> Result<AgentId, (NoAgent, bool)> {
        let state = self.state();
        let now = Instant::now();
        let timeout = self.inner.heartbeat_timeout;
        let cap = capability_name(capability);
        let definitive = |text: String| (NoAgent(text), false);
        if let Some(id) = agent_id {
            let entry = state
                .agents
                .get(&id)
                .ok_or_else(|| definitive(format!("agent `{id}` is not registered")))?;
            let name = &entry.info.name;
            if let Some(at) = entry.info.revoked_at {
                return Err(definitive(format!(
                    "agent `{name}` ({id}) was revoked at {at}"
                )));
            }
            if !entry.info.capabilities.contains(&capability) {
                return Err(definitive(format!(
                    "agent `{name}` ({id}) lacks the `{cap}` capability"
                )));
            }
            if !entry.active(now, timeout) {
                return Err((
                    NoAgent(match entry.info.last_seen_at {
                        Some(at) => format!("agent `{name}` ({id}) is inactive since {at}"),
                        None => format!("agent `{name}` ({id}) has never polled this server"),
                    }),
                    true,
                ));
            }
            if entry.is_draining(now, timeout) {
                return Err((
                    NoAgent(format!(
                        "agent `{name}` ({id}) is draining (stopping) and takes no new task"
                    )),
                    true,
                ));
            }
            return Ok(id);
        }
        let matching: Vec<&AgentEntry> = state
            .agents
            .values()
            .filter(|e| e.info.labels.matches(selector))
            .collect();
        if matching.is_empty() {
            return Err(definitive(format!(
                "no agent matches the selector {}",
                labels_text(selector)
            )));
        }
        let capable: Vec<&&AgentEntry> = matching
            .iter()
            .filter(|e| e.info.revoked_at.is_none() && e.info.capabilities.contains(&capability))
            .collect();
        if capable.is_empty() {
            return Err(definitive(format!(
                "no unrevoked agent matching the selector {} has the `{cap}` capability",
                labels_text(selector)
            )));
        }
        let available: Vec<&&&AgentEntry> = capable
            .iter()
            .filter(|e| e.active(now, timeout) && !e.is_draining(now, timeout))
            .collect();
        let pinned = target.and_then(|t| state.pins.get(&t));
        available
            .iter()
            .find(|e| Some(&e.info.id) == pinned)
            .or_else(|| available.iter().min_by_key(|e| (e.queue.len(), e.info.id)))
            .map(|e| e.info.id)
            .ok_or_else(|| {
                (
                    NoAgent(format!(
                        "the {} agent(s) matching the selector {} with the `{cap}` capability are inactive (no poll within {} ms) or draining",
                        capable.len(),
                        labels_text(selector),
                        timeout.as_millis()
                    )),
                    true,
                )
            })
    }

    /// Queues `delivery` for `agent` and returns the receiver of its completion; lines the
    /// agent sends for the key go to `log`. A key already outstanding is replaced. With a
    /// relay the delivery is stored before a poll can take it, and the replica the agent
    /// polls is told.
    pub async fn dispatch(
        &self,
        agent: AgentId,
        delivery: TaskDelivery,
        log: TaskLog,
    ) -> Result<oneshot::Receiver<Completion>, HubError> {
        let (tx, rx) = oneshot::channel();
        let key = delivery.key;
        // Shared with other replicas: stored before any poll can take it, so a replica
        // that dies after handing it out leaves its row to the one taking the job over.
        // One process (SQLite): written behind the hand-out, off the task's path (a
        // crash in those milliseconds falls back to the engine's inspect reconcile).
        let stored = match &self.inner.relay {
            Some(r) if r.shared.shared() => Some(
                r.writes
                    .write(RelayWrite::Put(agent, Box::new(delivery.clone()))),
            ),
            Some(r) => {
                r.writes
                    .write_later(RelayWrite::Put(agent, Box::new(delivery.clone())));
                None
            }
            None => None,
        };
        {
            let mut state = self.state();
            let entry = state
                .agents
                .get_mut(&agent)
                .filter(|e| e.info.revoked_at.is_none())
                .ok_or(HubError::UnknownAgent(agent))?;
            entry.queue.insert(key);
            entry.cancel.remove(&key);
            if let Some(old) = state.pending.insert(
                key,
                Pending {
                    agent,
                    delivery,
                    done: Some(tx),
                    log: Some(log),
                    next_seq: 0,
                    ready: stored.is_none(),
                    local: true,
                    resumed: false,
                },
            ) && old.agent != agent
                && let Some(entry) = state.agents.get_mut(&old.agent)
            {
                entry.queue.remove(&key);
            }
            state.completed_set.remove(&(key, agent));
        }
        if let Some(stored) = stored {
            if let Err(e) = stored.await {
                let mut state = self.state();
                state.pending.remove(&key);
                if let Some(entry) = state.agents.get_mut(&agent) {
                    entry.queue.remove(&key);
                }
                return Err(HubError::Relay(e));
            }
            if let Some(p) = self.state().pending.get_mut(&key) {
                p.ready = true;
            }
            self.announce(Message::Deliveries(agent));
        }
        // Every waiting poll of the agent wakes: the oldest may be a stale one whose
        // connection is gone while the live poll would sleep its full wait.
        if let Some(entry) = self.state().agents.get(&agent) {
            entry.notify.notify_waiters();
        }
        Ok(rx)
    }

    /// Gives up on `key` (timeout or cancel): it leaves the queue and goes into the agent's
    /// next poll answers as a cancel notice; a later result for it is acknowledged and dropped.
    pub fn abandon(&self, key: TaskKey) {
        let mut state = self.state();
        let Some(pending) = state.finish(key) else {
            return;
        };
        if let Some(entry) = state.agents.get_mut(&pending.agent) {
            entry.cancel.insert(key, CancelNotice::new());
            entry.notify.notify_waiters();
        }
        drop(state);
        if pending.local {
            self.record_end(key, pending.agent, RelayState::Cancelled);
        }
    }

    /// Fails every in-flight key of every agent whose last poll, to any replica, is a
    /// heartbeat timeout old.
    pub fn reap(&self) {
        let mut state = self.state();
        let now = Instant::now();
        let timeout = self.inner.heartbeat_timeout;
        let expired: Vec<(AgentId, Duration)> = state
            .agents
            .values()
            .filter(|e| !e.queue.is_empty())
            .filter_map(|e| {
                // Never polled (only possible for a key queued by hand): as silent as expired.
                let last = match (e.last_poll, e.remote_poll) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                let silent = last.map_or(timeout, |t| now.saturating_duration_since(t));
                (silent >= timeout).then_some((e.info.id, silent))
            })
            .collect();
        let mut lost = Vec::new();
        for (id, silent) in expired {
            tracing::warn!(agent = %id, silent_ms = silent.as_millis() as u64,
                "agent missed its heartbeat; failing its in-flight tasks as retryable");
            lost.extend(Self::fail_agent_keys(
                &mut state,
                id,
                format!(
                    "no poll for {} s (heartbeat timeout {} ms)",
                    silent.as_secs(),
                    timeout.as_millis()
                ),
            ));
        }
        drop(state);
        self.record_lost(lost);
    }
}

/// Memory operations of the relay's side (`sync.rs`), each one lock section.
impl AgentHub {
    pub(crate) fn origin(&self) -> u64 {
        self.inner.origin
    }

    /// Its stored deliveries are read again before its next poll answer.
    pub(crate) fn mark_refresh(&self, agent: AgentId) {
        if let Some(entry) = self.state().agents.get_mut(&agent) {
            entry.needs_refresh = true;
        }
    }

    /// Which of `keys` of `agent` are pending or finished here.
    pub(crate) fn known_keys(
        &self,
        agent: AgentId,
        keys: impl Iterator<Item = TaskKey>,
    ) -> HashSet<TaskKey> {
        let state = self.state();
        keys.filter(|k| state.pending.contains_key(k) || state.completed_set.contains(&(*k, agent)))
            .collect()
    }

    /// Starts a read of the agent's stored deliveries unless one runs (then asks it to
    /// read again when done); true when the caller is to read.
    pub(crate) fn begin_refresh(&self, agent: AgentId) -> bool {
        let mut state = self.state();
        match state.refreshing.get_mut(&agent) {
            Some(again) => {
                *again = true;
                false
            }
            None => {
                state.refreshing.insert(agent, false);
                true
            }
        }
    }

    /// Ends a read; true when another was asked for meanwhile (the caller reads again).
    pub(crate) fn end_refresh(&self, agent: AgentId) -> bool {
        let mut state = self.state();
        match state.refreshing.get_mut(&agent) {
            Some(again) if *again => {
                *again = false;
                true
            }
            _ => {
                state.refreshing.remove(&agent);
                false
            }
        }
    }

    /// Tells the other replicas that this agent's record changed (a registration, a
    /// label change): they reload it from the store.
    pub fn announce_agent(&self, id: AgentId) {
        self.announce(Message::Agent(id));
    }

    /// Queues deliveries stored by other replicas for `agent`, and drops the keys waited
    /// for elsewhere that are no longer queued (`queued`: every key stored as queued).
    pub(crate) fn merge_remote(
        &self,
        agent: AgentId,
        fresh: Vec<TaskDelivery>,
        queued: &HashSet<TaskKey>,
    ) {
        let mut guard = self.state();
        let state = &mut *guard;
        let Some(entry) = state.agents.get_mut(&agent) else {
            return;
        };
        let gone: Vec<TaskKey> = entry
            .queue
            .iter()
            .filter(|k| !queued.contains(k))
            .filter(|k| state.pending.get(k).is_some_and(|p| !p.local))
            .copied()
            .collect();
        for key in fresh {
            let key_of = key.key;
            if state.pending.contains_key(&key_of) || state.completed_set.contains(&(key_of, agent))
            {
                continue;
            }
            entry.queue.insert(key_of);
            state.pending.insert(
                key_of,
                Pending {
                    agent,
                    delivery: key,
                    done: None,
                    log: None,
                    next_seq: 0,
                    ready: true,
                    local: false,
                    resumed: false,
                },
            );
        }
        for key in gone {
            state.finish(key);
            if let Some(entry) = state.agents.get_mut(&agent) {
                entry.cancel.insert(key, CancelNotice::new());
            }
        }
        if let Some(entry) = state.agents.get(&agent) {
            entry.notify.notify_waiters();
        }
    }

    /// Waits here for a stored key (resumed after a fail-over).
    pub(crate) fn attach(
        &self,
        agent: AgentId,
        delivery: TaskDelivery,
        done: oneshot::Sender<Completion>,
        log: TaskLog,
        next_seq: u64,
    ) {
        let mut state = self.state();
        let key = delivery.key;
        if let Some(entry) = state.agents.get_mut(&agent) {
            entry.queue.insert(key);
            entry.notify.notify_waiters();
        }
        state.pending.insert(
            key,
            Pending {
                agent,
                delivery,
                done: Some(done),
                log: Some(log),
                next_seq,
                ready: true,
                local: true,
                resumed: true,
            },
        );
        state.completed_set.remove(&(key, agent));
    }

    pub(crate) fn waits_here(&self, key: TaskKey) -> bool {
        self.state()
            .pending
            .get(&key)
            .is_some_and(|p| p.local && p.done.is_some())
    }

    pub(crate) fn complete_waiter(&self, key: TaskKey, completion: Completion) {
        let mut state = self.state();
        if !state.pending.get(&key).is_some_and(|p| p.local) {
            return;
        }
        if let Some(mut pending) = state.finish(key)
            && let Some(done) = pending.done.take()
        {
            let _ = done.send(completion);
        }
    }

    pub(crate) fn next_seq_here(&self, key: TaskKey) -> Option<u64> {
        self.state()
            .pending
            .get(&key)
            .filter(|p| p.local && p.log.is_some())
            .map(|p| p.next_seq)
    }

    /// Writes relayed lines not written yet (a line past `next_seq` is taken: the lines
    /// before it went to this replica directly).
    pub(crate) fn write_relayed(&self, key: TaskKey, lines: Vec<(u64, AgentLogLine)>) {
        let mut state = self.state();
        let Some(p) = state.pending.get_mut(&key) else {
            return;
        };
        let Some(log) = &p.log else {
            return;
        };
        for (seq, line) in lines {
            if seq >= p.next_seq {
                write_line(log, &line);
                p.next_seq = seq + 1;
            }
        }
    }

    pub(crate) fn polls_here(&self, agent: AgentId) -> bool {
        let now = Instant::now();
        self.state()
            .agents
            .get(&agent)
            .is_some_and(|e| e.locally_active(now, self.inner.heartbeat_timeout))
    }

    pub(crate) fn agents_polling_here(&self) -> Vec<AgentId> {
        let now = Instant::now();
        self.state()
            .agents
            .values()
            .filter(|e| e.locally_active(now, self.inner.heartbeat_timeout))
            .map(|e| e.info.id)
            .collect()
    }

    pub(crate) fn keys_waited_here(&self) -> Vec<TaskKey> {
        self.state()
            .pending
            .iter()
            .filter(|(_, p)| p.local && p.done.is_some())
            .map(|(k, _)| *k)
            .collect()
    }

    /// The polls answered here since the last call, as wall-clock marks.
    pub(crate) fn unsynced_polls(&self, wall: Timestamp, now: Instant) -> Vec<PollMark> {
        let mut state = self.state();
        state
            .agents
            .values_mut()
            .filter_map(|e| {
                if !std::mem::take(&mut e.unsynced) {
                    return None;
                }
                let ago = now.saturating_duration_since(e.last_poll?);
                let at = Timestamp::from_unix_millis(
                    wall.unix_millis().saturating_sub(ago.as_millis() as u64),
                )
                .ok()?;
                Some(PollMark {
                    agent: e.info.id,
                    at,
                    draining: e.draining,
                })
            })
            .collect()
    }

    /// Takes the shared liveness in; returns the agents this replica does not know.
    pub(crate) fn apply_remote_polls(
        &self,
        polls: &[PollMark],
        wall: Timestamp,
        now: Instant,
    ) -> Vec<AgentId> {
        let mut state = self.state();
        let timeout = self.inner.heartbeat_timeout;
        let mut unknown = Vec::new();
        let mut woke = false;
        for p in polls {
            let Some(entry) = state.agents.get_mut(&p.agent) else {
                unknown.push(p.agent);
                continue;
            };
            let ago = Duration::from_millis(wall.unix_millis().saturating_sub(p.at.unix_millis()));
            let was_active = entry.active(now, timeout);
            entry.remote_poll = now.checked_sub(ago);
            entry.remote_draining = p.draining;
            woke |= !was_active && entry.active(now, timeout);
        }
        drop(state);
        if woke {
            self.inner.available.notify_waiters();
        }
        unknown
    }
}

/// A random bus origin for a hub.
fn rand_origin() -> u64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default())
}

/// `log`, also redacting the application secret values `delivery` carries (a waiter
/// attached to a stored delivery: resumed after a fail-over).
pub(crate) fn with_delivery_secrets(log: TaskLog, delivery: &TaskDelivery) -> TaskLog {
    match &delivery.action {
        AgentAction::Deploy { deploy } | AgentAction::Rollback { deploy } => deploy
            .secret_values
            .iter()
            .fold(log, |log, value| log.with_secret(value)),
        _ => log,
    }
}

/// One agent line into a waiter's log (stderr lines say so).
pub(crate) fn write_line(log: &TaskLog, line: &AgentLogLine) {
    match line.stream {
        LogStream::Stderr => log.line(&format!("stderr: {}", line.text)),
        LogStream::Stdout | LogStream::Agent => log.line(&line.text),
    }
}

/// The wire name of a capability.
pub fn capability_name(capability: AgentCapability) -> &'static str {
    match capability {
        AgentCapability::Docker => "docker",
        AgentCapability::Compose => "compose",
    }
}

fn labels_text(labels: &Labels) -> String {
    if labels.as_map().is_empty() {
        return "{} (any agent)".to_owned();
    }
    let pairs: Vec<String> = labels
        .as_map()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!("{{{}}}", pairs.join(", "))
}
