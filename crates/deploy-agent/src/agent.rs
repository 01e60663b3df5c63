//! `Agent`: registration (or stored credentials), then the long-poll loop that is also the heartbeat, one spawned tokio task per delivery, the outbox sender and a graceful stop.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deploy_api::agent::{
    AGENT_PROTOCOL_VERSION, AgentAction, AgentCapability, AgentErrorCode, LogAck, LogChunkRequest,
    MAX_POLL_WAIT_MS, PollRequest, RegisterAgentRequest, ResultAck, TaskDelivery, TaskKey,
    TaskOutcome, TaskResultRequest,
};
use deploy_core::{Labels, Name};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::client::{Client, ClientError, Secret};
use crate::credentials::{self, StoredCredentials};
use crate::enroll;
use crate::errors::{AgentRunError, TaskError};
use crate::journal::{Begin, Journal, KEEP_ACKNOWLEDGED, Repair};
use crate::outbox::{Outbox, Sender};
use crate::redact::Redactor;
use crate::runtime::Runtime;

/// Longest poll the agent asks for, below the server's [`MAX_POLL_WAIT_MS`].
pub const DEFAULT_MAX_WAIT_MS: u64 = 25_000;
/// How often the outbox is flushed when nothing wakes it.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// How often acknowledged journal entries are pruned.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// After the grace period, how long cancelled tasks and the last flush may take.
pub const FINAL_FLUSH: Duration = Duration::from_secs(5);
/// Longest poll wait while draining: short, so that a cancel reaches the tasks quickly
/// and the drain never outlives its tasks by a long poll.
pub const DRAIN_POLL_MS: u64 = 1_000;

/// Everything the agent needs, validated by the binary.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `http(s)://host[:port]`, no trailing path: deployd replicas sharing one database,
    /// tried in this order (the client fails over and sticks to one that answers).
    pub servers: Vec<String>,
    pub name: Name,
    pub state_dir: PathBuf,
    pub labels: Labels,
    pub capabilities: Vec<AgentCapability>,
    pub ca_file: Option<PathBuf>,
    /// Overrides `min(25 s, heartbeat timeout / 3)`.
    pub poll_wait_ms: Option<u64>,
    /// Only needed when no credentials are stored.
    pub bootstrap_token: Option<Secret>,
    /// Rotate the credential at start (the new one is stored before polling).
    pub rotate_credential: bool,
    /// How long running tasks may finish after SIGTERM before they are cancelled.
    pub shutdown_grace: Duration,
}

/// A registered agent, ready to run.
pub struct Agent {
    config: AgentConfig,
    client: Client,
    creds: StoredCredentials,
    runtime: Arc<Runtime>,
    journal: Arc<Journal>,
    outbox: Arc<Outbox>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("config", &self.config)
            .field("creds", &self.creds)
            .finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch (journal timestamps).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The poll wait: the configured one, else `min(25 s, heartbeat timeout / 3)`, so that at
/// least three polls fit in one heartbeat timeout; never above the server's maximum.
pub fn poll_wait_ms(configured: Option<u64>, heartbeat_timeout_ms: u64) -> u64 {
    configured
        .unwrap_or_else(|| DEFAULT_MAX_WAIT_MS.min(heartbeat_timeout_ms / 3))
        .min(MAX_POLL_WAIT_MS)
}

/// The poll wait while draining: `min(1 s, heartbeat timeout / 3)`, at least 100 ms so a
/// tiny heartbeat timeout does not turn the drain into a busy loop.
pub fn drain_poll_ms(heartbeat_timeout_ms: u64) -> u64 {
    DRAIN_POLL_MS.min(heartbeat_timeout_ms / 3).max(100)
}

/// Whether an error status may heal by itself (timeout, rate limit, server error): those
/// are retried; any other 4xx (protocol-version mismatch, forbidden, unknown agent) would
/// be refused forever, so the agent stops and says why.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429) || status >= 500
}

/// Whether `e` is worth retrying: transport errors and retryable statuses.
fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Transport { .. } => true,
        ClientError::Status { status, .. } => retryable_status(*status),
        _ => false,
    }
}

/// Retries `f` on transport errors (server down or restarting) and retryable statuses
/// (408, 429, 5xx) with backoff, until `stop`. The client has moved on to the next
/// server by then when the error said the server is unusable.
pub(crate) async fn with_retries<T, F, Fut>(
    what: &str,
    stop: &CancellationToken,
    mut f: F,
) -> Result<Option<T>, ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let mut backoff = Backoff::default();
    loop {
        match f().await {
            Ok(v) => return Ok(Some(v)),
            Err(e) if retryable(&e) => {
                let delay = backoff.next_delay();
                tracing::warn!(request = what, "{e}; retrying in {} ms", delay.as_millis());
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => return Ok(None),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The outbox's way to the server.
struct HttpSender {
    client: Client,
    bearer: Secret,
}

impl Sender for HttpSender {
    async fn logs(&self, key: &TaskKey, req: &LogChunkRequest) -> Result<LogAck, ClientError> {
        self.client.logs(&self.bearer, key, req).await
    }

    async fn result(
        &self,
        key: &TaskKey,
        req: &TaskResultRequest,
    ) -> Result<ResultAck, ClientError> {
        self.client.result(&self.bearer, key, req).await
    }
}

type Running = Arc<Mutex<HashMap<TaskKey, CancellationToken>>>;

fn running_keys(running: &Running) -> Vec<TaskKey> {
    let mut keys: Vec<TaskKey> = running
        .lock()
        .map(|m| m.keys().copied().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

impl Agent {
    /// Loads the stored credentials or registers with the bootstrap token, rotates the
    /// credential when asked. Transport errors are retried until `stop`.
    pub async fn connect(
        config: AgentConfig,
        runtime: Runtime,
        stop: &CancellationToken,
    ) -> Result<Option<Self>, AgentRunError> {
        let journal = Journal::open(&config.state_dir)?;
        let client = Client::with_servers(&config.servers, config.ca_file.as_deref())?;
        let state_dir = config.state_dir.clone();
        let creds = match credentials::load(&state_dir)? {
            Some(c)
                if !client
                    .servers()
                    .contains(&c.server.trim_end_matches('/').to_owned()) =>
            {
                return Err(AgentRunError::ServerMismatch {
                    path: credentials::path(&state_dir),
                    stored: c.server,
                    configured: config.servers.join(", "),
                });
            }
            Some(c) => {
                tracing::info!(agent_id = %c.agent_id, "using the stored credentials");
                match enroll::resume(&client, &state_dir, c, stop).await? {
                    Some(c) => c,
                    None => return Ok(None),
                }
            }
            None => {
                let Some(token) = config.bootstrap_token.clone() else {
                    return Err(AgentRunError::NoBootstrapToken {
                        path: credentials::path(&state_dir),
                    });
                };
                let req = RegisterAgentRequest {
                    protocol: AGENT_PROTOCOL_VERSION,
                    name: config.name.clone(),
                    capabilities: config.capabilities.clone(),
                    labels: config.labels.clone(),
                    agent_version: env!("CARGO_PKG_VERSION").to_owned(),
                    credential: None,
                };
                match enroll::register(&client, &state_dir, &token, req, stop).await? {
                    Some(c) => c,
                    None => return Ok(None),
                }
            }
        };
        let mut agent = Self {
            config,
            client,
            creds,
            runtime: Arc::new(
                runtime
                    .with_default_work_root(state_dir.join(deploy_core::DEFAULT_AGENT_WORK_SUBDIR)),
            ),
            journal: Arc::new(journal),
            outbox: Arc::new(Outbox::new()),
        };
        if agent.config.rotate_credential && !agent.rotate(stop).await? {
            return Ok(None);
        }
        Ok(Some(agent))
    }

    /// Rotates the credential and stores the new one; `false` when stopped first.
    async fn rotate(&mut self, stop: &CancellationToken) -> Result<bool, AgentRunError> {
        match enroll::rotate(&self.client, &self.config.state_dir, &self.creds, stop).await? {
            Some(creds) => {
                self.creds = creds;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The agent id and heartbeat timeout in use.
    pub fn credentials(&self) -> &StoredCredentials {
        &self.creds
    }

    /// Polls and runs tasks until `stop` (SIGTERM), then lets running tasks finish for the
    /// grace period, cancels the rest and flushes their results. A refused credential ends
    /// it with [`AgentRunError::CredentialRefused`].
    pub async fn run(self, stop: CancellationToken) -> Result<(), AgentRunError> {
        let now = now_ms();
        let recovered = self.journal.run_blocking(move |j| j.recover(now)).await?;
        for entry in &recovered.outbox {
            self.outbox.restore(entry);
        }
        // Before any new task: a deploy cut by a crash may have left `<name>` missing.
        for (key, repair) in &recovered.repairs {
            let did = self.runtime.repair(&repair.container, &repair.target).await;
            tracing::info!(
                task = %key.task_id, attempt = key.attempt, container = %repair.container,
                target = %repair.target, "repair after an agent crash: {}",
                if did.is_empty() { "nothing to do".to_owned() } else { did.join("; ") }
            );
        }
        let now = now_ms();
        if let Ok(n) = self
            .journal
            .run_blocking(move |j| j.prune(now, KEEP_ACKNOWLEDGED))
            .await
            && n > 0
        {
            tracing::info!("pruned {n} acknowledged journal entries");
        }
        let sender = Arc::new(HttpSender {
            client: self.client.clone(),
            bearer: self.creds.bearer(),
        });
        let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::channel::<AgentRunError>(1);
        let flusher_stop = CancellationToken::new();
        let flusher = {
            let (outbox, journal, sender, stop) = (
                self.outbox.clone(),
                self.journal.clone(),
                sender.clone(),
                flusher_stop.clone(),
            );
            tokio::spawn(async move {
                let wake = outbox.wake();
                let mut last_prune = tokio::time::Instant::now();
                loop {
                    tokio::select! {
                        () = wake.notified() => {}
                        () = tokio::time::sleep(FLUSH_EVERY) => {}
                        () = stop.cancelled() => return,
                    }
                    if let Err(e) = outbox.flush(sender.as_ref(), &journal, now_ms()).await {
                        let _ = fatal_tx.send(e).await;
                        return;
                    }
                    if last_prune.elapsed() > PRUNE_EVERY {
                        last_prune = tokio::time::Instant::now();
                        let now = now_ms();
                        let _ = journal
                            .run_blocking(move |j| j.prune(now, KEEP_ACKNOWLEDGED))
                            .await;
                    }
                }
            })
        };

        let running: Running = Arc::default();
        let mut tasks = JoinSet::new();
        let wait_ms = poll_wait_ms(self.config.poll_wait_ms, self.creds.heartbeat_timeout_ms);
        let bearer = self.creds.bearer();
        let mut backoff = Backoff::default();
        tracing::info!(
            server = %self.client.server(), agent_id = %self.creds.agent_id, wait_ms,
            "polling for tasks"
        );
        let outcome = loop {
            while let Some(joined) = tasks.try_join_next() {
                if let Err(e) = joined {
                    tracing::error!("a task panicked: {e}");
                }
            }
            let req = PollRequest {
                protocol: AGENT_PROTOCOL_VERSION,
                running: running_keys(&running),
                wait_ms,
                draining: false,
            };
            let answer = tokio::select! {
                () = stop.cancelled() => break Ok(()),
                Some(fatal) = fatal_rx.recv() => break Err(fatal),
                answer = self.client.poll(&bearer, &req) => answer,
            };
            match answer {
                Ok(resp) => {
                    backoff.reset();
                    cancel_keys(&running, &resp.cancel);
                    for delivery in resp.deliveries {
                        self.accept(delivery, &running, &mut tasks).await;
                    }
                }
                Err(ClientError::Unauthorized { detail, .. }) => {
                    break Err(AgentRunError::CredentialRefused { detail });
                }
                Err(e) if !retryable(&e) && !matches!(e, ClientError::Decode { .. }) => {
                    break Err(refused("poll", e));
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!("{e}; polling again in {} ms", delay.as_millis());
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = stop.cancelled() => break Ok(()),
                    }
                }
            }
        };
        if outcome.is_err() {
            // Nothing can be reported any more: stop the tasks where they are.
            if let Ok(map) = running.lock() {
                map.values().for_each(CancellationToken::cancel);
            }
            flusher_stop.cancel();
            let _ = tokio::time::timeout(FINAL_FLUSH, async {
                while tasks.join_next().await.is_some() {}
            })
            .await;
            return outcome;
        }
        self.drain(&running, &mut tasks, sender.as_ref()).await;
        flusher_stop.cancel();
        let _ = flusher.await;
        Ok(())
    }

    /// After SIGTERM: tasks get the grace period, then are cancelled; results are flushed.
    /// Meanwhile the agent keeps polling with `draining: true` (short waits): those polls
    /// are its heartbeat, without which the server would fail the running attempts after
    /// its heartbeat timeout (shorter than the grace) and drop their late results; they
    /// also still carry the server's cancels.
    async fn drain(&self, running: &Running, tasks: &mut JoinSet<()>, sender: &HttpSender) {
        if !tasks.is_empty() {
            tracing::info!(
                "stopping: waiting up to {} s for {} running tasks",
                self.config.shutdown_grace.as_secs(),
                tasks.len()
            );
        }
        let wait_ms = drain_poll_ms(self.creds.heartbeat_timeout_ms);
        let deadline = tokio::time::Instant::now() + self.config.shutdown_grace;
        let mut next_poll = tokio::time::Instant::now();
        let mut polling = true;
        let finished = loop {
            if tasks.is_empty() {
                break true;
            }
            let req = PollRequest {
                protocol: AGENT_PROTOCOL_VERSION,
                running: running_keys(running),
                wait_ms,
                draining: true,
            };
            let poll = async {
                if !polling {
                    return std::future::pending().await;
                }
                tokio::time::sleep_until(next_poll).await;
                self.client.poll(&sender.bearer, &req).await
            };
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break false,
                joined = tasks.join_next() => {
                    if let Some(Err(e)) = joined {
                        tracing::error!("a task panicked: {e}");
                    }
                }
                answer = poll => {
                    // Spaced by the wait even when the server answers at once.
                    next_poll = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
                    match answer {
                        Ok(resp) => cancel_keys(running, &resp.cancel),
                        Err(ClientError::Unauthorized { detail, .. }) => {
                            tracing::error!("draining: the server refused the credential ({detail}); no more heartbeats");
                            polling = false;
                        }
                        Err(e) => tracing::warn!("draining: {e}"),
                    }
                }
            }
        };
        if !finished {
            if let Ok(map) = running.lock() {
                map.values().for_each(CancellationToken::cancel);
            }
            let _ = tokio::time::timeout(FINAL_FLUSH, async {
                while tasks.join_next().await.is_some() {}
            })
            .await;
        }
        // One last send of what is pending; the rest stays in the journal for the next start.
        let _ = tokio::time::timeout(FINAL_FLUSH, async {
            for _ in 0..3 {
                if self.outbox.is_empty() {
                    break;
                }
                if self
                    .outbox
                    .flush(sender, &self.journal, now_ms())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        })
        .await;
    }

    /// One delivery: run it (new key), or answer from the journal (known key).
    async fn accept(&self, delivery: TaskDelivery, running: &Running, tasks: &mut JoinSet<()>) {
        let key = delivery.key;
        let is_running = running
            .lock()
            .map(|m| m.contains_key(&key))
            .unwrap_or(false);
        // Running, or finished with its result still on the way: nothing new to do.
        if is_running || self.outbox.contains(&key) {
            return;
        }
        let action = delivery.action.name();
        let repair = match &delivery.action {
            AgentAction::Deploy { deploy } | AgentAction::Rollback { deploy }
                if delivery.target.target_type == deploy_core::TargetType::DockerHost =>
            {
                deploy.component.as_ref().map(|c| Repair {
                    container: c.name.clone(),
                    target: delivery.target.name.clone(),
                })
            }
            _ => None,
        };
        let now = now_ms();
        let begun = self
            .journal
            .run_blocking(move |j| j.begin_with(&key, action, repair, now))
            .await;
        match begun {
            Ok(Begin::Fresh) => {}
            Ok(Begin::Finished(entry)) => {
                tracing::info!(task = %key.task_id, attempt = key.attempt, "redelivered a finished {action}: sending its result again");
                self.outbox.restore(&entry);
                return;
            }
            Ok(Begin::Interrupted(entry)) => {
                tracing::info!(task = %key.task_id, attempt = key.attempt, "redelivered a {action} cut by an agent stop: reporting it interrupted");
                self.outbox.restore(&entry);
                return;
            }
            Err(e) => {
                // Without a journal entry the key could run twice: refuse to run it.
                tracing::error!("journal {action}: {e}");
                let log = self.outbox.track(key, &label(&key), Redactor::new());
                let error = TaskError::host("record the task in the journal", e);
                self.outbox.finish(
                    &key,
                    TaskResultRequest {
                        protocol: AGENT_PROTOCOL_VERSION,
                        log_lines: log.total(),
                        outcome: TaskOutcome::Failed {
                            error: error.to_wire(),
                            previous_digest: None,
                        },
                    },
                );
                return;
            }
        }
        let redactor = redactor_for(&delivery, &self.creds.credential);
        let log = self.outbox.track(key, &label(&key), redactor);
        let token = CancellationToken::new();
        if let Ok(mut map) = running.lock() {
            map.insert(key, token.clone());
        }
        let (runtime, journal, outbox, running) = (
            self.runtime.clone(),
            self.journal.clone(),
            self.outbox.clone(),
            running.clone(),
        );
        tracing::info!(task = %key.task_id, attempt = key.attempt, target = %delivery.target.name, "starting {action}");
        tasks.spawn(async move {
            let outcome = runtime.execute(&delivery, &log, &token).await;
            let code = match &outcome {
                TaskOutcome::Failed { error, .. } => Some(error.code),
                _ => None,
            };
            let result = TaskResultRequest {
                protocol: AGENT_PROTOCOL_VERSION,
                log_lines: log.total(),
                outcome,
            };
            let (first, lines) = log.unacknowledged();
            let (stored, now) = (result.clone(), now_ms());
            let journalled = journal
                .run_blocking(move |j| j.finish(&key, stored, first, lines, now))
                .await;
            if let Err(e) = journalled {
                tracing::error!("journal the result: {e}");
            }
            match code {
                None => tracing::info!(task = %key.task_id, attempt = key.attempt, "{action} done"),
                Some(AgentErrorCode::Cancelled) => {
                    tracing::info!(task = %key.task_id, attempt = key.attempt, "{action} cancelled");
                }
                Some(code) => {
                    tracing::warn!(task = %key.task_id, attempt = key.attempt, "{action} failed: {}", code.as_str());
                }
            }
            // Into the outbox before leaving `running`: the key is never in neither.
            outbox.finish(&key, result);
            if let Ok(mut map) = running.lock() {
                map.remove(&key);
            }
        });
    }
}

/// Stops the running tasks whose keys the server no longer wants.
fn cancel_keys(running: &Running, cancel: &[TaskKey]) {
    if let Ok(map) = running.lock() {
        for key in cancel {
            if let Some(token) = map.get(key) {
                tracing::info!(task = %key.task_id, attempt = key.attempt, "cancelled by the server");
                token.cancel();
            }
        }
    }
}

/// A request the server refuses in a way retrying cannot fix.
fn refused(what: &str, e: ClientError) -> AgentRunError {
    let (status, detail) = match e {
        ClientError::Status { status, detail, .. } => (status, detail),
        ClientError::NotFound { detail, .. } => (404, detail),
        ClientError::Unauthorized { detail, .. } => (401, detail),
        other => (0, other.to_string()),
    };
    AgentRunError::Refused {
        what: what.to_owned(),
        status,
        detail,
    }
}

/// What a task's log must never show: the agent credential, the registry password and
/// the values of the application secrets the payload carries.
pub fn redactor_for(delivery: &TaskDelivery, credential: &str) -> Redactor {
    let mut redactor = Redactor::new().with(credential);
    if let AgentAction::Deploy { deploy } | AgentAction::Rollback { deploy } = &delivery.action {
        if let Some(auth) = &deploy.registry_auth {
            redactor = redactor.with(&auth.password);
        }
        for value in &deploy.secret_values {
            redactor = redactor.with(value);
        }
    }
    redactor
}

fn label(key: &TaskKey) -> String {
    format!("{}/{}", key.task_id, key.attempt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deploy_core::testing::{agent_id, name, ssh_target, task_id};
    use deploy_core::{CommandSpec, Connection};

    use crate::testing::{Log, fake_server};

    fn agent(state_dir: &std::path::Path) -> Agent {
        Agent {
            config: AgentConfig {
                servers: vec!["http://127.0.0.1:1".to_owned()],
                name: name("a1"),
                state_dir: state_dir.to_owned(),
                labels: Labels::default(),
                capabilities: Vec::new(),
                ca_file: None,
                poll_wait_ms: None,
                bootstrap_token: None,
                rotate_credential: false,
                shutdown_grace: Duration::from_secs(1),
            },
            client: Client::new("http://127.0.0.1:1", None).unwrap(),
            creds: StoredCredentials {
                server: "http://127.0.0.1:1".to_owned(),
                agent_id: agent_id(1),
                credential: "dpa_x".to_owned(),
                heartbeat_timeout_ms: 30_000,
            },
            runtime: Arc::new(Runtime::new(None, None)),
            journal: Arc::new(Journal::open(state_dir).unwrap()),
            outbox: Arc::new(Outbox::new()),
        }
    }

    /// A health command that leaves a mark in `marker` each time it really runs.
    fn delivery(n: u64, marker: &std::path::Path) -> TaskDelivery {
        let mut target = ssh_target(1);
        target.connection = Connection::Agent(deploy_core::AgentConnection {
            agent_id: None,
            selector: Labels::default(),
            work_dir: Some(deploy_core::UnixPath::parse("/tmp").unwrap()),
            stop_first: false,
            registry_auth: None,
        });
        TaskDelivery {
            key: TaskKey {
                task_id: task_id(n),
                attempt: 1,
            },
            target,
            action: AgentAction::HealthCommand {
                command: CommandSpec::new(vec![
                    "sh".to_owned(),
                    "-c".to_owned(),
                    format!("echo run >> {}", marker.display()),
                ])
                .unwrap(),
            },
            timeout_ms: 10_000,
        }
    }

    fn runs(marker: &std::path::Path) -> usize {
        std::fs::read_to_string(marker)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn a_redelivered_key_runs_once_and_a_crashed_one_is_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("marker");
        let a = agent(dir.path());
        let running: Running = Arc::default();
        let mut tasks = JoinSet::new();
        let d = delivery(1, &marker);
        a.accept(d.clone(), &running, &mut tasks).await;
        // Redelivered while it runs or before its result is acknowledged: not run again.
        a.accept(d.clone(), &running, &mut tasks).await;
        while tasks.join_next().await.is_some() {}
        a.accept(d.clone(), &running, &mut tasks).await;
        assert!(tasks.is_empty());
        assert_eq!(runs(&marker), 1);
        assert!(a.outbox.contains(&d.key));

        // After a restart (a new agent on the same state dir, empty outbox): the journal
        // answers with the stored result, still without running it.
        let b = agent(dir.path());
        b.accept(d.clone(), &running, &mut tasks).await;
        assert!(tasks.is_empty());
        assert_eq!(runs(&marker), 1);
        assert!(b.outbox.contains(&d.key));
        let entry = b.journal.read(&d.key).unwrap().unwrap();
        assert!(matches!(
            entry.finished.unwrap().result.outcome,
            TaskOutcome::CommandRan { exit_status: 0, .. }
        ));

        // A key journalled as started by an agent that died: interrupted, never run.
        let cut = delivery(2, &marker);
        b.journal.begin(&cut.key, "health_command", 1).unwrap();
        let c = agent(dir.path());
        c.accept(cut.clone(), &running, &mut tasks).await;
        assert!(tasks.is_empty());
        assert_eq!(runs(&marker), 1);
        let entry = c.journal.read(&cut.key).unwrap().unwrap();
        match entry.finished.unwrap().result.outcome {
            TaskOutcome::Failed { error, .. } => {
                assert_eq!(error.code, AgentErrorCode::Interrupted);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn on_stop_running_tasks_get_the_grace_period_then_are_reported_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let a = agent(dir.path());
        let running: Running = Arc::default();
        let mut tasks = JoinSet::new();
        let mut slow = delivery(7, &dir.path().join("m"));
        slow.action = AgentAction::HealthCommand {
            command: CommandSpec::new(vec!["sleep".to_owned(), "30".to_owned()]).unwrap(),
        };
        a.accept(slow.clone(), &running, &mut tasks).await;
        let sender = HttpSender {
            client: a.client.clone(),
            bearer: a.creds.bearer(),
        };
        let started = tokio::time::Instant::now();
        a.drain(&running, &mut tasks, &sender).await;
        // The grace period (1 s here), not the command's 30 s.
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(tasks.is_empty());
        let entry = a.journal.read(&slow.key).unwrap().unwrap();
        match entry.finished.unwrap().result.outcome {
            TaskOutcome::Failed { error, .. } => assert_eq!(error.code, AgentErrorCode::Cancelled),
            other => panic!("{other:?}"),
        }
        // The server was unreachable: the result waits in the journal for the next start.
        assert_eq!(a.journal.recover(now_ms()).unwrap().outbox.len(), 1);
    }

    #[test]
    fn the_registry_password_and_the_credential_are_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = delivery(1, &dir.path().join("m"));
        d.action = AgentAction::Deploy {
            deploy: deploy_api::agent::DeployPayload {
                digest: deploy_core::testing::digest(1),
                component: None,
                project: name("p"),
                artifacts: Vec::new(),
                registry_auth: Some(deploy_api::agent::RegistryAuth {
                    server: "r:5000".to_owned(),
                    username: "u".to_owned(),
                    password: "pw-123".to_owned(),
                }),
                secret_values: vec!["db-pa55".to_owned(), "line-one\nline-two".to_owned()],
            },
        };
        let r = redactor_for(&d, "dpa_cred");
        assert_eq!(r.apply("pw-123 dpa_cred"), "[REDACTED] [REDACTED]");
        // An application secret, and each line of a multi-line one (a log line holds one).
        assert_eq!(
            r.apply("DB=db-pa55 then line-two"),
            "DB=[REDACTED] then [REDACTED]"
        );
    }

    fn polls(seen: &Log) -> Vec<PollRequest> {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|r| r.path.ends_with("/poll"))
            .map(|r| serde_json::from_str(&r.body).unwrap())
            .collect()
    }

    fn with_server(mut a: Agent, url: &str, heartbeat_timeout_ms: u64, grace: Duration) -> Agent {
        a.client = Client::new(url, None).unwrap();
        a.config.servers = vec![url.to_owned()];
        a.creds.server = url.to_owned();
        a.creds.heartbeat_timeout_ms = heartbeat_timeout_ms;
        a.config.shutdown_grace = grace;
        a
    }

    #[tokio::test]
    async fn a_draining_agent_keeps_polling_as_heartbeat_and_honours_cancels() {
        let key = TaskKey {
            task_id: task_id(9),
            attempt: 1,
        };
        let cancel = serde_json::to_string(&key).unwrap();
        // The third draining poll carries a cancel of the running task.
        let (url, seen) = fake_server(move |path, n| {
            if path.ends_with("/poll") {
                let cancel = if n >= 2 { cancel.as_str() } else { "" };
                (
                    200,
                    format!(r#"{{"protocol":1,"deliveries":[],"cancel":[{cancel}]}}"#),
                )
            } else {
                (404, r#"{"detail":"unknown key"}"#.to_owned())
            }
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        // Heartbeat timeout 3 s: the drain polls every second; a grace of 60 s.
        let a = with_server(agent(dir.path()), &url, 3_000, Duration::from_secs(60));
        let running: Running = Arc::default();
        let mut tasks = JoinSet::new();
        let mut slow = delivery(9, &dir.path().join("m"));
        slow.action = AgentAction::HealthCommand {
            command: CommandSpec::new(vec!["sleep".to_owned(), "30".to_owned()]).unwrap(),
        };
        a.accept(slow.clone(), &running, &mut tasks).await;
        let sender = HttpSender {
            client: a.client.clone(),
            bearer: a.creds.bearer(),
        };
        let started = tokio::time::Instant::now();
        a.drain(&running, &mut tasks, &sender).await;
        // Ended by the server's cancel (about 2 s), not by the 60 s grace nor the 30 s sleep.
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{:?}",
            started.elapsed()
        );
        let polls = polls(&seen);
        assert!(polls.len() >= 3, "{polls:?}");
        for p in &polls {
            assert!(p.draining, "{p:?}");
            assert_eq!(p.running, vec![key]);
            assert_eq!(p.wait_ms, 1_000);
        }
        let entry = a.journal.read(&key).unwrap().unwrap();
        match entry.finished.unwrap().result.outcome {
            TaskOutcome::Failed { error, .. } => assert_eq!(error.code, AgentErrorCode::Cancelled),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_unfixable_poll_refusal_stops_the_agent_with_the_servers_detail() {
        let (url, seen) = fake_server(|_, _| {
            (
                400,
                r#"{"title":"Bad Request","detail":"protocol version 1 is not supported"}"#
                    .to_owned(),
            )
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let a = with_server(agent(dir.path()), &url, 30_000, Duration::from_secs(1));
        let err = tokio::time::timeout(Duration::from_secs(10), a.run(CancellationToken::new()))
            .await
            .expect("a 400 on poll ends the agent, not a retry loop")
            .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, AgentRunError::Refused { status: 400, .. }),
            "{text}"
        );
        assert!(
            text.contains("protocol version 1 is not supported"),
            "{text}"
        );
        assert_eq!(polls(&seen).len(), 1);
        assert!(!retryable_status(404) && !retryable_status(422) && !retryable_status(403));
        assert!(retryable_status(503) && retryable_status(429) && retryable_status(408));
    }

    #[tokio::test]
    async fn registration_retries_a_503_and_stops_on_a_409_with_the_detail() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = calls.clone();
        let (url, seen) = fake_server(move |_, _| {
            if counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                (503, r#"{"detail":"starting"}"#.to_owned())
            } else {
                (409, r#"{"detail":"an agent named a1 exists"}"#.to_owned())
            }
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = agent(dir.path()).config;
        config.servers = vec![url];
        config.bootstrap_token = Some(Secret::new("dpb_x"));
        let err = Agent::connect(config, Runtime::new(None, None), &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, AgentRunError::RegistrationRefused { status: 409, detail, .. } if detail.contains("a1 exists")),
            "{err}"
        );
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn results_waiting_in_the_outbox_go_to_the_server_that_answers() {
        let key = TaskKey {
            task_id: task_id(11),
            attempt: 1,
        };
        let ack = serde_json::to_string(&ResultAck {
            protocol: AGENT_PROTOCOL_VERSION,
            key,
        })
        .unwrap();
        let (good, seen) = fake_server(move |_, _| (200, ack.clone())).await;
        let dead = format!("http://127.0.0.1:{}", deploy_testkit::free_port().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let a = agent(dir.path());
        let sender = HttpSender {
            client: Client::with_servers(&[dead, good.clone()], None).unwrap(),
            bearer: a.creds.bearer(),
        };
        let result = TaskResultRequest {
            protocol: AGENT_PROTOCOL_VERSION,
            log_lines: 0,
            outcome: TaskOutcome::Inspected {
                digest: None,
                published: Vec::new(),
            },
        };
        let entry = a.journal.finish(&key, result, 0, Vec::new(), 1).unwrap();
        a.outbox.restore(&entry);
        // The first server does not answer: the send waits for its backoff, and the
        // client has moved on to the next server.
        a.outbox.flush(&sender, &a.journal, 2).await.unwrap();
        assert!(a.outbox.contains(&key));
        assert_eq!(sender.client.server(), good);
        let started = tokio::time::Instant::now();
        while a.outbox.contains(&key) {
            assert!(started.elapsed() < Duration::from_secs(10), "never re-sent");
            tokio::time::sleep(Duration::from_millis(50)).await;
            a.outbox.flush(&sender, &a.journal, 3).await.unwrap();
        }
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].path.ends_with("/result"), "{seen:?}");
        assert_eq!(seen[0].bearer, a.creds.credential);
    }

    #[test]
    fn poll_wait_fits_three_times_in_the_heartbeat_timeout() {
        assert_eq!(poll_wait_ms(None, 90_000), 25_000);
        assert_eq!(poll_wait_ms(None, 30_000), 10_000);
        assert_eq!(poll_wait_ms(Some(500), 30_000), 500);
        assert_eq!(poll_wait_ms(Some(99_000), 30_000), MAX_POLL_WAIT_MS);
    }
}
