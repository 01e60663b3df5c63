//! The agent protocol, version 1: registration, long-poll task delivery, log chunks and results (JSON over HTTP(S), agent connects out).
//!
//! Every message carries `protocol`; a peer refuses a version it does not speak
//! with a problem document naming both versions. The flow:
//!
//! 1. An admin creates a one-time bootstrap token (`POST /api/v1/agents/bootstrap-tokens`)
//!    for one agent name, its labels and the capabilities it may claim.
//! 2. The agent registers with it (`POST /api/v1/agent/register`, bearer = the bootstrap
//!    token) under that name, claiming no other label or capability, and receives its
//!    agent id, its labels (the server's, which it adopts) and a long-lived credential
//!    (stored by the server only as a sha256). The bootstrap token is spent. Its labels
//!    change afterwards only by an admin call (`PUT /api/v1/agents/{id}/labels`).
//! 3. The agent long-polls `POST /api/v1/agent/poll` (bearer = its credential). A poll is
//!    its heartbeat: the server marks an agent inactive when none arrived for the
//!    heartbeat timeout, and fails its in-flight tasks as retryable.
//! 4. Each [`TaskDelivery`] is keyed by ([`TaskKey`]: task id, attempt). The server
//!    redelivers a key on every poll until its result arrives, unless the poll lists it in
//!    `running`; the agent keeps a journal so a redelivered key is never executed twice
//!    (a finished key's result is sent again; a key interrupted by an agent crash is
//!    answered with a retryable `interrupted` failure).
//! 5. Log chunks (`…/logs`) and the result (`…/result`) are re-sent until acknowledged;
//!    the server keeps chunks idempotent by sequence number and results by key.
//!
//! An agent may only poll, log and report for its own tasks: any other key is answered
//! 404 (the same answer as an unknown task, so keys of other agents cannot be probed).

use std::collections::BTreeMap;

use deploy_core::{
    AgentId, CommandSpec, ContainerSpec, Digest, GeneratedArtifact, InstanceProbe, Labels, Name,
    ProbeOutcome, PublishedPort, Target, TaskId, Timestamp,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// The protocol version this build speaks.
pub const AGENT_PROTOCOL_VERSION: u32 = 1;
/// Longest long-poll the server honours; an agent asking for more gets this.
pub const MAX_POLL_WAIT_MS: u64 = 30_000;
/// Most log lines in one chunk message.
pub const MAX_LOG_LINES_PER_CHUNK: usize = 1_000;

/// What an agent can drive on its host.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AgentCapability {
    /// The Docker Engine API (docker_host targets).
    Docker,
    /// The Compose CLI (compose_host targets).
    Compose,
}

/// `POST /api/v1/agents/bootstrap-tokens` (admin): a one-time registration token for one
/// agent: the name it registers as, its labels, and the capabilities it may claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBootstrapTokenRequest {
    /// The agent's name: registering under another one is refused.
    #[schema(value_type = String)]
    pub name: Name,
    /// The agent's labels (targets select agents by them): the agent gets exactly these,
    /// and may claim none other.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub labels: Labels,
    /// The capabilities the agent may claim; absent: every capability.
    #[serde(default)]
    pub capabilities: Option<Vec<AgentCapability>>,
    /// Seconds until the token expires unspent (default 3600, at most 7 days).
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
}

/// The created bootstrap token: the secret is shown this once. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatedBootstrapToken {
    pub id: Uuid,
    /// The agent name it registers.
    #[schema(value_type = String)]
    pub name: Name,
    #[schema(value_type = Object)]
    pub labels: Labels,
    pub capabilities: Vec<AgentCapability>,
    /// The secret (`dpb_…`); hand it to exactly one agent.
    pub token: String,
    #[schema(value_type = String)]
    pub expires_at: Timestamp,
}

/// An agent bootstrap token as listed to admins (`GET /api/v1/agents/bootstrap-tokens`):
/// never the secret nor its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BootstrapTokenSummary {
    pub id: Uuid,
    /// The agent name it registers.
    #[schema(value_type = String)]
    pub name: Name,
    #[schema(value_type = Object)]
    pub labels: Labels,
    pub capabilities: Vec<AgentCapability>,
    #[schema(value_type = String)]
    pub created_at: Timestamp,
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<Timestamp>,
    /// When it was spent by a registration or revoked (the store keeps one mark for
    /// both); `None`: it can still register an agent until `expires_at`.
    #[schema(value_type = Option<String>)]
    pub revoked_at: Option<Timestamp>,
}

/// `POST /api/v1/agent/register` (bearer = a bootstrap token). `Debug` never shows the
/// proposed credential.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterAgentRequest {
    pub protocol: u32,
    /// The name the bootstrap token is for (another answers 403); unique among agents, a
    /// name already taken answers 409.
    #[schema(value_type = String)]
    pub name: Name,
    /// What the agent can drive: each must be among the token's capabilities (else 403).
    pub capabilities: Vec<AgentCapability>,
    /// The labels the agent expects, if any: each must be among the token's labels (else
    /// 403, so a misconfigured agent is noticed). The agent gets the token's labels
    /// whatever it sends, and adopts them from the answer.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub labels: Labels,
    /// The agent's own version string (informational), at most 64 characters.
    #[serde(default)]
    pub agent_version: String,
    /// The credential the agent proposes for itself ([`AGENT_CREDENTIAL_SHAPE`]); the
    /// server generates one when absent. With it a registration is idempotent: a retry
    /// with the spent token, the same name and the same credential is answered as the
    /// first time (the agent stored the credential before sending, so a lost answer or a
    /// crash costs nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// `POST /api/v1/agent/credential/rotate` (bearer = the current credential), optional
/// body: the credential the agent proposes as its next one. A retry whose bearer already
/// is the proposed credential (the rotation happened, its answer was lost) is answered
/// again without a change. `Debug` never shows the credential.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateCredentialRequest {
    pub protocol: u32,
    /// The next credential ([`AGENT_CREDENTIAL_SHAPE`]).
    pub credential: String,
}

/// Prefix of agent credentials.
pub const AGENT_CREDENTIAL_PREFIX: &str = "dpa_";
/// What an agent credential looks like, for error messages.
pub const AGENT_CREDENTIAL_SHAPE: &str = "`dpa_` followed by 64 lowercase hex characters";

/// Whether `credential` has the shape of an agent credential: `dpa_` and 64 lowercase hex
/// characters (256 bits when random), the shape the server generates too.
pub fn is_agent_credential(credential: &str) -> bool {
    credential
        .strip_prefix(AGENT_CREDENTIAL_PREFIX)
        .is_some_and(|hex| {
            hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
}

impl std::fmt::Debug for RegisterAgentRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterAgentRequest")
            .field("protocol", &self.protocol)
            .field("name", &self.name)
            .field("capabilities", &self.capabilities)
            .field("labels", &self.labels)
            .field("agent_version", &self.agent_version)
            .field(
                "credential",
                &self.credential.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl std::fmt::Debug for RotateCredentialRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotateCredentialRequest")
            .field("protocol", &self.protocol)
            .field("credential", &"<redacted>")
            .finish()
    }
}

/// The answer to a registration or a credential rotation. The credential is shown this
/// once; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentCredentials {
    pub protocol: u32,
    #[schema(value_type = String)]
    pub agent_id: AgentId,
    /// The agent's name, as the server records it.
    #[schema(value_type = String)]
    pub name: Name,
    /// The agent's labels, as the server records them (set by the bootstrap token, then
    /// by admins): the agent adopts them.
    #[schema(value_type = Object)]
    pub labels: Labels,
    /// The agent's bearer credential (`dpa_…`); the server stores only its sha256.
    pub credential: String,
    /// Poll at least this often (milliseconds) or be marked inactive.
    pub heartbeat_timeout_ms: u64,
}

impl std::fmt::Debug for CreatedBootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedBootstrapToken")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("capabilities", &self.capabilities)
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl std::fmt::Debug for AgentCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCredentials")
            .field("protocol", &self.protocol)
            .field("agent_id", &self.agent_id)
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("credential", &"<redacted>")
            .field("heartbeat_timeout_ms", &self.heartbeat_timeout_ms)
            .finish()
    }
}

/// An agent as listed to operators (`GET /api/v1/agents`): never its credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSummary {
    #[schema(value_type = String)]
    pub id: AgentId,
    #[schema(value_type = String)]
    pub name: Name,
    pub capabilities: Vec<AgentCapability>,
    #[schema(value_type = Object)]
    pub labels: Labels,
    /// The version of `labels`: a label change names the one it was made from.
    pub labels_version: u64,
    /// Connected: polled within the heartbeat timeout (as seen by this server).
    pub active: bool,
    /// Tasks delivered to it whose result has not arrived.
    pub in_flight: u32,
    #[schema(value_type = Option<String>)]
    pub last_seen_at: Option<Timestamp>,
    #[schema(value_type = String)]
    pub created_at: Timestamp,
    #[schema(value_type = Option<String>)]
    pub revoked_at: Option<Timestamp>,
}

/// `PUT /api/v1/agents/{id}/labels` (admin): replaces an agent's labels. Targets select
/// agents by labels, so this decides which deploys (and their registry credentials and
/// env files) the agent receives from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAgentLabelsRequest {
    /// The agent's labels from now on (all of them).
    #[schema(value_type = Object)]
    pub labels: Labels,
    /// The `labels_version` this change was made from; another change since answers 409.
    pub version: u64,
}

/// One attempt of one task: the unit of delivery and of deduplication.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct TaskKey {
    #[schema(value_type = String)]
    pub task_id: TaskId,
    pub attempt: u32,
}

/// `POST /api/v1/agent/poll` (bearer = the agent credential): heartbeat and task fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PollRequest {
    pub protocol: u32,
    /// Keys the agent is executing now: the server does not redeliver them.
    #[serde(default)]
    pub running: Vec<TaskKey>,
    /// How long to hold the request open when nothing is to be delivered
    /// (milliseconds, at most [`MAX_POLL_WAIT_MS`]; 0 answers at once).
    #[serde(default)]
    pub wait_ms: u64,
    /// The agent is stopping: it keeps polling (heartbeats) while its running tasks
    /// finish, and the server delivers nothing new to it.
    #[serde(default)]
    pub draining: bool,
}

/// The answer to a poll: tasks to run and keys to cancel (both may be empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PollResponse {
    pub protocol: u32,
    pub deliveries: Vec<TaskDelivery>,
    /// Keys the server no longer wants (the task was cancelled or timed out): stop them.
    #[serde(default)]
    pub cancel: Vec<TaskKey>,
}

/// One task for the agent: the spec's `AgentTaskPayload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskDelivery {
    pub key: TaskKey,
    /// The target as stored (its connection is an agent connection: `work_dir`, selector).
    #[schema(value_type = Object)]
    pub target: Target,
    pub action: AgentAction,
    /// The agent must give up (and report a timeout) after this long, milliseconds.
    pub timeout_ms: u64,
}

/// What to do. Deploy and rollback carry the same payload: a rollback is a deploy of
/// the last-known-good digest (reviving `<name>-previous` at once when it matches).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum AgentAction {
    Deploy {
        #[schema(inline)]
        deploy: DeployPayload,
    },
    Rollback {
        #[schema(inline)]
        deploy: DeployPayload,
    },
    /// Report the digest running for `component` (docker_host: the container name;
    /// compose_host: the project name).
    Inspect {
        #[schema(value_type = String)]
        component: Name,
    },
    /// Run a command on the host (no shell) and report its exit status and output.
    HealthCommand {
        #[schema(value_type = Vec<String>)]
        command: CommandSpec,
    },
    /// Probe a deployed instance where it publishes a port (a TCP connect, or an HTTP
    /// GET), from the host itself.
    Probe {
        #[schema(value_type = Object)]
        probe: InstanceProbe,
    },
}

impl AgentAction {
    /// The action's wire name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Deploy { .. } => "deploy",
            Self::Rollback { .. } => "rollback",
            Self::Inspect { .. } => "inspect",
            Self::HealthCommand { .. } => "health_command",
            Self::Probe { .. } => "probe",
        }
    }
}

/// Everything a deploy or rollback needs on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployPayload {
    /// The digest every container of the task must run afterwards.
    #[schema(value_type = String)]
    pub digest: Digest,
    /// docker_host: the one container to run. compose_host: absent.
    #[serde(default)]
    pub component: Option<ComponentPayload>,
    /// compose_host: the Compose project name (docker_host: the component's name).
    #[schema(value_type = String)]
    pub project: Name,
    /// Files to write into the target's work dir first (compose lock, env file); the
    /// agent checks each one's sha256 before using it.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub artifacts: Vec<GeneratedArtifact>,
    /// Credentials for pulling the image, when the registry needs them.
    #[serde(default)]
    pub registry_auth: Option<RegistryAuth>,
    /// The values of the application secrets (`secret:NAME` env values, resolved by the
    /// server) this payload carries in the container's environment or in a secrets
    /// override file: the agent hides each one from its log lines and results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_values: Vec<String>,
}

/// A docker_host container: mirrors deploy-exec's `ComponentSpec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ComponentPayload {
    /// The container name (the previous one is kept as `<name>-previous`).
    #[schema(value_type = String)]
    pub name: Name,
    /// What the container runs: image, command, environment, ports, mounts, networks,
    /// limits, healthcheck, … (the release's service definition, resolved for the target).
    #[schema(value_type = Object)]
    pub container: ContainerSpec,
    /// Leave the old container running as `<name>-previous` (blue-green).
    #[serde(default)]
    pub keep_previous_running: bool,
    /// Stop the old container before starting the new one even without fixed host
    /// ports (a container with fixed host ports is always replaced stop-first).
    #[serde(default)]
    pub stop_first: bool,
}

/// Registry credentials. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryAuth {
    /// `host[:port]` of the registry these credentials are for.
    pub server: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// `POST /api/v1/agent/tasks/{task_id}/attempts/{attempt}/logs`: lines of one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogChunkRequest {
    pub protocol: u32,
    /// Sequence number of the first line (0-based, per key); lines the server already
    /// has are skipped, so a re-sent chunk is harmless.
    pub first_seq: u64,
    /// At most [`MAX_LOG_LINES_PER_CHUNK`] lines, already redacted by the agent.
    pub lines: Vec<AgentLogLine>,
}

/// One line of an agent's task log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentLogLine {
    pub stream: LogStream,
    pub text: String,
}

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// The agent's own progress lines.
    Agent,
}

/// The answer to a log chunk: every line before `next_seq` is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogAck {
    pub protocol: u32,
    pub next_seq: u64,
}

/// `POST /api/v1/agent/tasks/{task_id}/attempts/{attempt}/result`: the outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskResultRequest {
    pub protocol: u32,
    /// Lines the agent sent for this key in all (the server waits for none it lacks).
    pub log_lines: u64,
    pub outcome: TaskOutcome,
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub enum TaskOutcome {
    /// Deploy or rollback done: the digest runs (and passed the container's own checks).
    Deployed {
        #[schema(value_type = String)]
        deployed_digest: Digest,
        #[schema(value_type = Option<String>)]
        previous_digest: Option<Digest>,
        /// False when the digest was already running and nothing was done.
        changed: bool,
        /// Per container (docker_host) or compose service: the digest actually running.
        #[schema(value_type = Object)]
        running: BTreeMap<String, Digest>,
        /// Where the new instance's ports are published on the host (health checks
        /// aim at them).
        #[serde(default)]
        #[schema(value_type = Vec<Object>)]
        published: Vec<PublishedPort>,
    },
    Inspected {
        #[schema(value_type = Option<String>)]
        digest: Option<Digest>,
        /// Where the instance publishes its ports now (a running container or project).
        #[serde(default)]
        #[schema(value_type = Vec<Object>)]
        published: Vec<PublishedPort>,
    },
    /// The probe's verdict.
    Probed {
        #[schema(value_type = Object)]
        verdict: ProbeOutcome,
    },
    CommandRan {
        exit_status: u32,
        /// Standard output, bounded (head, at most 64 KiB) and redacted.
        stdout: String,
    },
    Failed {
        #[schema(inline)]
        error: AgentError,
        /// What ran before, when the agent knows.
        #[serde(default)]
        #[schema(value_type = Option<String>)]
        previous_digest: Option<Digest>,
    },
}

/// A failure on the agent, typed so the server can classify it without parsing text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentError {
    pub code: AgentErrorCode,
    /// A message that reads well after "failed to …", without secrets.
    pub message: String,
}

/// Failure codes; [`AgentErrorCode::is_retryable`] is the retry class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentErrorCode {
    /// The Docker Engine or the Compose CLI is unreachable or failed transiently.
    DockerUnavailable,
    /// Pulling the image failed (registry down, network).
    PullFailed,
    /// The registry refused the credentials, or the image does not exist.
    PullRefused,
    /// The new container did not start or exited; the previous one is back.
    StartFailed,
    /// The attempt ran past its timeout.
    Timeout,
    /// The server cancelled the attempt.
    Cancelled,
    /// The agent died while executing this key; it was not run again.
    Interrupted,
    /// The payload is invalid for this host (bad artifact digest, unsupported target type,
    /// missing capability).
    InvalidPayload,
    /// Anything else on the host (a file that cannot be written, …).
    HostError,
}

impl AgentErrorCode {
    /// True when retrying the task may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::DockerUnavailable
                | Self::PullFailed
                | Self::StartFailed
                | Self::Timeout
                | Self::Interrupted
                | Self::HostError
        )
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DockerUnavailable => "docker_unavailable",
            Self::PullFailed => "pull_failed",
            Self::PullRefused => "pull_refused",
            Self::StartFailed => "start_failed",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
            Self::Interrupted => "interrupted",
            Self::InvalidPayload => "invalid_payload",
            Self::HostError => "host_error",
        }
    }
}

/// The answer to a result: stored (or already stored: a re-sent result is acknowledged again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResultAck {
    pub protocol: u32,
    pub key: TaskKey,
}
