//! `AgentHub`: the in-memory meeting point of agents (long-polls, log chunks, results) and the `AgentExecutor` (dispatch, waiting, cancel).
//!
//! Everything here is memory only: known agents (loaded from the store at start and
//! updated on register, rotate and revoke), per-agent outstanding deliveries, the
//! waiter of each [`TaskKey`] and a bounded memory of finished keys. An agent is
//! *active* when its last poll arrived less than the heartbeat timeout ago; the
//! reaper fails the in-flight keys of an agent that went silent, as retryable.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use deploy_api::agent::{
    AGENT_PROTOCOL_VERSION, AgentCapability, AgentSummary, LogAck, LogChunkRequest, LogStream,
    MAX_LOG_LINES_PER_CHUNK, MAX_POLL_WAIT_MS, PollRequest, PollResponse, ResultAck, TaskDelivery,
    TaskKey, TaskResultRequest,
};
use deploy_core::{AgentId, Digest, Labels, Name, Timestamp};
use thiserror::Error;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

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
    pub labels: Labels,
    pub capabilities: Vec<AgentCapability>,
    /// The sha256 of its credential; `None`: it cannot authenticate.
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
    /// When its last poll arrived (liveness).
    last_poll: Option<Instant>,
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
            last_touch: None,
            queue: BTreeSet::new(),
            cancel: BTreeMap::new(),
            notify: Arc::new(Notify::new()),
            draining: false,
        }
    }

    fn active(&self, now: Instant, timeout: Duration) -> bool {
        self.info.revoked_at.is_none()
            && self
                .last_poll
                .is_some_and(|t| now.saturating_duration_since(t) < timeout)
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
    done: Option<oneshot::Sender<Completion>>,
    log: TaskLog,
    next_seq: u64,
}

#[derive(Default)]
struct HubState {
    agents: BTreeMap<AgentId, AgentEntry>,
    credentials: HashMap<Digest, AgentId>,
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
    /// ignores cancels of keys it does not know).
    fn fail(&mut self, key: TaskKey, reason: String) {
        if let Some(mut pending) = self.finish(key) {
            if let Some(entry) = self.agents.get_mut(&pending.agent) {
                entry.cancel.insert(key, CancelNotice::new());
                entry.notify.notify_waiters();
            }
            if let Some(done) = pending.done.take() {
                let _ = done.send(Completion::Lost { reason });
            }
        }
    }
}

/// The hub. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct AgentHub {
    inner: Arc<Inner>,
}

struct Inner {
    heartbeat_timeout: Duration,
    state: Mutex<HubState>,
    /// Woken when an agent becomes available (a first poll after silence, the end of
    /// draining, a registration): executors waiting for one look again.
    available: Notify,
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
        Self {
            inner: Arc::new(Inner {
                heartbeat_timeout,
                state: Mutex::new(HubState::default()),
                available: Notify::new(),
            }),
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

    /// Adds or updates an agent (registration, start-up load, revocation). A revoked
    /// agent keeps no credential mapping and has its in-flight keys failed. An update
    /// never clears a known revocation: a stale record (read before a concurrent revoke)
    /// must not bring a revoked agent back.
    pub fn upsert_agent(&self, mut info: AgentInfo) {
        let mut state = self.state();
        let id = info.id;
        if let Some(at) = state.agents.get(&id).and_then(|e| e.info.revoked_at) {
            info.revoked_at.get_or_insert(at);
        }
        state.credentials.retain(|_, a| *a != id);
        if info.revoked_at.is_none()
            && let Some(hash) = &info.credential_hash
        {
            state.credentials.insert(hash.clone(), id);
        }
        let revoked = info.revoked_at.is_some();
        match state.agents.get_mut(&id) {
            Some(entry) => entry.info = info,
            None => {
                state.agents.insert(id, AgentEntry::new(info));
            }
        }
        if revoked {
            Self::fail_agent_keys(&mut state, id, "the agent was revoked".to_owned());
        }
        self.inner.available.notify_waiters();
    }

    /// Marks the agent revoked: its credential is refused at once and its in-flight
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
        state.credentials.retain(|_, a| *a != id);
        Self::fail_agent_keys(&mut state, id, "the agent was revoked".to_owned());
        true
    }

    /// Replaces the agent's credential (rotation) in one lock section: the old credential
    /// is refused from now on. A revoked or unknown agent is refused
    /// ([`HubError::UnknownAgent`]), so a rotation racing a revocation cannot re-admit it.
    pub fn set_credential(&self, id: AgentId, hash: Digest) -> Result<(), HubError> {
        let mut state = self.state();
        let entry = state
            .agents
            .get_mut(&id)
            .filter(|e| e.info.revoked_at.is_none())
            .ok_or(HubError::UnknownAgent(id))?;
        entry.info.credential_hash = Some(hash.clone());
        state.credentials.retain(|_, a| *a != id);
        state.credentials.insert(hash, id);
        Ok(())
    }

    fn fail_agent_keys(state: &mut HubState, id: AgentId, reason: String) {
        let keys: Vec<TaskKey> = state
            .agents
            .get(&id)
            .map(|e| e.queue.iter().copied().collect())
            .unwrap_or_default();
        for key in keys {
            state.fail(key, reason.clone());
        }
    }

    /// The (unrevoked) agent whose credential hashes to `hash`.
    pub fn authenticate(&self, hash: &Digest) -> Option<AgentId> {
        self.state().credentials.get(hash).copied()
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
        entry.last_poll = Some(now);
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
                .filter_map(|k| state.pending.get(k).map(|p| p.delivery.clone()))
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
        if chunk.lines.len() > MAX_LOG_LINES_PER_CHUNK {
            return Err(HubError::TooManyLines {
                lines: chunk.lines.len(),
                max: MAX_LOG_LINES_PER_CHUNK,
            });
        }
        let mut guard = self.state();
        let state = &mut *guard;
        let end = chunk.first_seq.saturating_add(chunk.lines.len() as u64);
        match state.pending.get_mut(&key) {
            Some(p) if p.agent == agent => {
                if chunk.first_seq <= p.next_seq && end > p.next_seq {
                    let skip = usize::try_from(p.next_seq - chunk.first_seq).unwrap_or(usize::MAX);
                    for line in chunk.lines.iter().skip(skip) {
                        match line.stream {
                            LogStream::Stderr => p.log.line(&format!("stderr: {}", line.text)),
                            LogStream::Stdout | LogStream::Agent => p.log.line(&line.text),
                        }
                    }
                    p.next_seq = end;
                }
                Ok(LogAck {
                    protocol: AGENT_PROTOCOL_VERSION,
                    next_seq: p.next_seq,
                })
            }
            _ if state.completed_set.contains(&(key, agent)) => Ok(LogAck {
                protocol: AGENT_PROTOCOL_VERSION,
                next_seq: end,
            }),
            _ => Err(HubError::UnknownKey(key)),
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
        let mut state = self.state();
        let ack = ResultAck {
            protocol: AGENT_PROTOCOL_VERSION,
            key,
        };
        match state.pending.get(&key) {
            Some(p) if p.agent == agent => {
                if let Some(mut pending) = state.finish(key)
                    && let Some(done) = pending.done.take()
                {
                    let _ = done.send(Completion::Result(result.clone()));
                }
                Ok(ack)
            }
            _ if state.completed_set.contains(&(key, agent)) => {
                // The agent is done with the key: no need to tell it to stop any more.
                if let Some(entry) = state.agents.get_mut(&agent) {
                    entry.cancel.remove(&key);
                }
                tracing::info!(agent = %agent, task = %key.task_id, attempt = key.attempt,
                    "result of a finished or abandoned key acknowledged and dropped");
                Ok(ack)
            }
            _ => Err(HubError::UnknownKey(key)),
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
        self.try_select(agent_id, selector, capability)
            .map_err(|(e, _)| e)
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
            match self.try_select(agent_id, selector, capability) {
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
            if entry.draining {
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
        capable
            .iter()
            .filter(|e| e.active(now, timeout) && !e.draining)
            .min_by_key(|e| (e.queue.len(), e.info.id))
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
    /// agent sends for the key go to `log`. A key already outstanding is replaced.
    pub fn dispatch(
        &self,
        agent: AgentId,
        delivery: TaskDelivery,
        log: TaskLog,
    ) -> Result<oneshot::Receiver<Completion>, HubError> {
        let (tx, rx) = oneshot::channel();
        let mut state = self.state();
        let key = delivery.key;
        let entry = state
            .agents
            .get_mut(&agent)
            .filter(|e| e.info.revoked_at.is_none())
            .ok_or(HubError::UnknownAgent(agent))?;
        entry.queue.insert(key);
        entry.cancel.remove(&key);
        // Every waiting poll of the agent wakes: the oldest may be a stale one whose
        // connection is gone while the live poll would sleep its full wait.
        entry.notify.notify_waiters();
        if let Some(old) = state.pending.insert(
            key,
            Pending {
                agent,
                delivery,
                done: Some(tx),
                log,
                next_seq: 0,
            },
        ) && old.agent != agent
            && let Some(entry) = state.agents.get_mut(&old.agent)
        {
            entry.queue.remove(&key);
        }
        state.completed_set.remove(&(key, agent));
        Ok(rx)
    }

    /// Gives up on `key` (timeout or cancel): it leaves the queue and goes into the agent's
    /// next poll answers as a cancel notice; a later result for it is acknowledged and dropped.
    pub fn abandon(&self, key: TaskKey) {
        let mut state = self.state();
        if let Some(pending) = state.finish(key)
            && let Some(entry) = state.agents.get_mut(&pending.agent)
        {
            entry.cancel.insert(key, CancelNotice::new());
            entry.notify.notify_waiters();
        }
    }

    /// Fails every in-flight key of every agent whose last poll is a heartbeat timeout old.
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
                let silent = e
                    .last_poll
                    .map_or(timeout, |t| now.saturating_duration_since(t));
                (silent >= timeout).then_some((e.info.id, silent))
            })
            .collect();
        for (id, silent) in expired {
            tracing::warn!(agent = %id, silent_ms = silent.as_millis() as u64,
                "agent missed its heartbeat; failing its in-flight tasks as retryable");
            Self::fail_agent_keys(
                &mut state,
                id,
                format!(
                    "no poll for {} s (heartbeat timeout {} ms)",
                    silent.as_secs(),
                    timeout.as_millis()
                ),
            );
        }
    }

    /// Runs [`AgentHub::reap`] every heartbeat timeout / 4 until `stop` is cancelled.
    pub fn spawn_reaper(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let hub = self.clone();
        let period = (self.inner.heartbeat_timeout / 4).max(Duration::from_millis(10));
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
