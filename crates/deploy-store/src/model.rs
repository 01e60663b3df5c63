//! Records the store returns besides deploy-core's entities, and the conversions between domain values and columns.

use std::num::NonZeroU32;

use deploy_core::{
    AgentId, ComponentId, Digest, EnvironmentId, JobId, JobStatus, Labels, PromotionId, ReleaseId,
    TargetId, TaskId, TaskStatus, Timestamp,
};
use serde::{Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::errors::StoreError;

/// Most log chunks kept per task; appending more drops the oldest.
pub const MAX_LOG_CHUNKS_PER_TASK: u64 = 1_000;
/// Largest log chunk accepted, in bytes.
pub const MAX_LOG_CHUNK_BYTES: usize = 64 * 1024;

/// What an attempt leaves on its task besides the transition that ends it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttemptRecord {
    /// The tail of the attempt's log (the complete log is in the log chunks).
    pub logs: String,
    /// The agent that ran the attempt (agent targets).
    pub agent_id: Option<deploy_core::AgentId>,
}

/// The outcome of an idempotent create: the stored job, and whether this call created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created<T> {
    pub value: T,
    /// False when the idempotency key already existed and `value` is the earlier job.
    pub created: bool,
}

/// One row of the append-only job event log: a state change of the job or of one of its tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEventRecord {
    /// Position in the store-wide event log; strictly increasing in commit order per job.
    pub seq: u64,
    pub job_id: JobId,
    /// Set when the event changed a task rather than the job.
    pub task_id: Option<TaskId>,
    pub event: String,
    pub from_status: String,
    pub to_status: String,
    /// Who or what caused it ("engine: wave 2 healthy", "user alice: cancel").
    pub cause: String,
    pub at: Timestamp,
}

/// One chunk of a task's log, in append order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub task_id: TaskId,
    pub seq: u64,
    pub at: Timestamp,
    pub content: String,
}

/// What the newest completed job of an environment deployed on one target (and component).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastKnownGood {
    pub target_id: TargetId,
    /// `None` for a compose_host task (the digest is then the compose lock's).
    pub component_id: Option<ComponentId>,
    pub digest: Digest,
    pub job_id: JobId,
    pub completed_at: Timestamp,
}

/// How the tasks of one job on one target stand: a row of
/// [`Store::recent_target_tasks`](crate::Store::recent_target_tasks), what a target's
/// health is derived from without loading the job's tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetTaskState {
    pub job_id: JobId,
    pub job_status: JobStatus,
    /// A `failed` job whose runner is not done with it yet (see `DeploymentJob`).
    pub winding_down: bool,
    pub target_id: TargetId,
    /// The job's tasks on the target (one per component; one on a compose host).
    pub tasks: u32,
    pub succeeded: u32,
    pub failed: u32,
    /// Tasks dispatched at least once (neither pending nor queued).
    pub started: u32,
}

impl TargetTaskState {
    /// Whether the job is settled (as [`deploy_core::DeploymentJob::is_settled`]).
    pub fn job_settled(&self) -> bool {
        !self.job_status.is_active() && !self.winding_down
    }
}

/// Which jobs a [`Store::list_job_summaries`](crate::Store::list_job_summaries) lists: newest
/// first (ids are UUID v7), every given filter must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobQuery {
    pub environment: Option<EnvironmentId>,
    pub status: Option<JobStatus>,
    pub release: Option<ReleaseId>,
    /// Only the rollback jobs of this job.
    pub rollback_of: Option<JobId>,
    /// Only jobs older than this one (the last id of the previous page).
    pub before: Option<JobId>,
    /// At most this many jobs.
    pub limit: u32,
}

/// A job without its tasks and artifacts, with how many of its tasks are in each state:
/// what a list of jobs shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSummary {
    pub id: JobId,
    pub environment_id: EnvironmentId,
    pub release_id: ReleaseId,
    pub promotion_id: PromotionId,
    pub status: JobStatus,
    /// A `failed` job whose runner is not done with it yet (see `DeploymentJob`).
    pub winding_down: bool,
    /// For a rollback job: the job it rolls back.
    pub rollback_of: Option<JobId>,
    /// Set while the job waits in line for its busy environment: the job ahead of it.
    pub queued_behind: Option<JobId>,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub failure_reason: Option<String>,
    pub tasks: TaskCounts,
    /// The name of the job's release (read with the row: a list names it without a
    /// read per release).
    pub release_name: Option<String>,
    /// Who requested the job's promotion (read with the row, as `release_name`).
    pub requested_by: Option<String>,
}

/// How many of a job's tasks are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskCounts {
    pub total: u32,
    pub succeeded: u32,
    pub failed: u32,
    /// Dispatched, running, verifying or retrying.
    pub running: u32,
    /// Pending or queued.
    pub waiting: u32,
}

/// The scope of an agent bootstrap token (an `api_tokens` row that is no API role:
/// it only registers one agent, and is spent doing so).
pub const AGENT_BOOTSTRAP_SCOPE: &str = "agent_bootstrap";

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    pub id: AgentId,
    pub name: String,
    pub labels: Labels,
    /// What it can drive (the agent protocol's capability names: `docker`, `compose`).
    pub capabilities: Vec<String>,
    /// The agent's own version string (informational).
    pub agent_version: String,
    /// The sha256 of its bearer credential; the credential itself is never stored.
    pub credential_hash: Option<Digest>,
    pub last_seen_at: Option<Timestamp>,
    pub created_at: Timestamp,
    /// Set once revoked: its credential is refused from then on.
    pub revoked_at: Option<Timestamp>,
    /// The bootstrap token that registered it (`None` for agents registered before this
    /// was recorded): a registration retried with the spent token is recognised by it.
    pub bootstrap_token_id: Option<Uuid>,
    /// Bumped by every label change (an admin call naming the version it read).
    pub labels_version: u64,
}

/// What an agent bootstrap token registers: one agent name, exactly these labels, and
/// at most these capabilities. Every bootstrap token has one; the agent claims no others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapBinding {
    pub token_id: Uuid,
    pub agent_name: String,
    pub labels: Labels,
    /// The capability names (`docker`, `compose`) the agent may claim.
    pub capabilities: Vec<String>,
}

/// An API token; only the sha256 of the token is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenRecord {
    pub id: Uuid,
    pub name: String,
    pub token_hash: Digest,
    pub scopes: Vec<String>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    /// When it last authenticated a request (written at most once a minute per token).
    pub last_used_at: Option<Timestamp>,
    /// When it stops being accepted unspent (agent bootstrap tokens); `None`: never.
    pub expires_at: Option<Timestamp>,
}

/// A web-console sign-in: the browser holds a random secret in a cookie, the store only its
/// SHA-256 (`id_hash`), tied to the API token that signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    pub id_hash: deploy_core::Digest,
    pub token_id: uuid::Uuid,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// Who made an audited write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditActorKind {
    /// An API token (or an agent bootstrap token).
    Token,
    /// An agent, by its credential.
    Agent,
}

impl AuditActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Agent => "agent",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Token, Self::Agent]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// One row of the append-only audit log: a write through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the log (0 for a record not yet appended).
    pub seq: u64,
    pub at: Timestamp,
    pub actor_kind: AuditActorKind,
    /// The token's or agent's id.
    pub actor_id: String,
    /// The token's or agent's name.
    pub actor_name: String,
    pub method: String,
    /// The route template (`/api/v1/environments/{id}`).
    pub route: String,
    /// The path as requested.
    pub path: String,
    /// The entity written: the path's id, or the id of what was created.
    pub entity_id: Option<String>,
    /// The HTTP status of the answer (refusals are recorded too).
    pub status: u16,
    /// Where the request came from: the peer address, and `X-Forwarded-For` when given.
    pub remote: Option<String>,
    /// Redacted JSON of the entity before the write (updates).
    pub before: Option<String>,
    /// Redacted JSON of the answer.
    pub after: Option<String>,
}

/// Which audit rows to list (every given field must match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub entity: Option<String>,
    /// Rows older than this sequence number (the previous page's last).
    pub before: Option<u64>,
}

/// A `u64` as a database integer.
pub(crate) fn int(field: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange { field, value })
}

/// A non-negative database integer as a `u64`.
pub(crate) fn uint(column: &'static str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt {
        column,
        value: value.to_string(),
        reason: "negative".to_owned(),
    })
}

/// A non-negative database integer as a `u32`.
pub(crate) fn uint32(column: &'static str, value: i64) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt {
        column,
        value: value.to_string(),
        reason: "not a 32-bit unsigned integer".to_owned(),
    })
}

pub(crate) fn millis(t: Timestamp) -> Result<i64, StoreError> {
    int("timestamp", t.unix_millis())
}

pub(crate) fn opt_millis(t: Option<Timestamp>) -> Result<Option<i64>, StoreError> {
    t.map(millis).transpose()
}

pub(crate) fn timestamp(column: &'static str, value: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_unix_millis(uint(column, value)?)
        .map_err(|e| StoreError::corrupt(column, value.to_string())(e.to_string()))
}

pub(crate) fn opt_timestamp(
    column: &'static str,
    value: Option<i64>,
) -> Result<Option<Timestamp>, StoreError> {
    value.map(|v| timestamp(column, v)).transpose()
}

pub(crate) fn to_json<T: Serialize>(field: &'static str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt {
        column: field,
        value: String::new(),
        reason: e.to_string(),
    })
}

pub(crate) fn from_json<T: DeserializeOwned>(
    column: &'static str,
    value: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(value).map_err(|e| StoreError::corrupt(column, value)(e.to_string()))
}

/// Parses a stored text column with a domain parser.
pub(crate) fn parse<T, E: std::fmt::Display>(
    column: &'static str,
    value: &str,
    parser: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, StoreError> {
    parser(value).map_err(|e| StoreError::corrupt(column, value)(e.to_string()))
}

/// Converts a stored UUID into a typed id.
pub(crate) fn typed<T: TryFrom<Uuid, Error = E>, E: std::fmt::Display>(
    column: &'static str,
    value: Uuid,
) -> Result<T, StoreError> {
    T::try_from(value).map_err(|e| StoreError::corrupt(column, value.to_string())(e.to_string()))
}

pub(crate) fn opt_typed<T: TryFrom<Uuid, Error = E>, E: std::fmt::Display>(
    column: &'static str,
    value: Option<Uuid>,
) -> Result<Option<T>, StoreError> {
    value.map(|v| typed(column, v)).transpose()
}

pub(crate) fn job_status(value: &str) -> Result<JobStatus, StoreError> {
    JobStatus::parse(value)
        .ok_or_else(|| StoreError::corrupt("jobs.status", value)("unknown status".to_owned()))
}

pub(crate) fn task_status(value: &str) -> Result<TaskStatus, StoreError> {
    TaskStatus::parse(value)
        .ok_or_else(|| StoreError::corrupt("tasks.status", value)("unknown status".to_owned()))
}

pub(crate) fn parallelism(value: i64) -> Result<NonZeroU32, StoreError> {
    NonZeroU32::new(uint32("jobs.parallelism", value)?)
        .ok_or_else(|| StoreError::corrupt("jobs.parallelism", "0")("must be positive".to_owned()))
}

/// The SQL list of active job statuses, spelled out in the queries (`sql/`) and the migrations.
#[cfg(test)]
const ACTIVE_STATUSES: &str = "('pending', 'preparing', 'running', 'completing', 'rolling_back')";

/// The SQL list of statuses that hold the environment lock.
#[cfg(test)]
const LOCK_STATUSES: &str = "('pending', 'preparing', 'running', 'completing')";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_statuses_match_core() {
        let listed: Vec<JobStatus> = JobStatus::ALL
            .into_iter()
            .filter(|s| ACTIVE_STATUSES.contains(&format!("'{}'", s.as_str())))
            .collect();
        let active: Vec<JobStatus> = JobStatus::ALL
            .into_iter()
            .filter(|s| s.is_active())
            .collect();
        assert_eq!(listed, active);
        let holding: Vec<JobStatus> = JobStatus::ALL
            .into_iter()
            .filter(|s| LOCK_STATUSES.contains(&format!("'{}'", s.as_str())))
            .collect();
        let holds: Vec<JobStatus> = JobStatus::ALL
            .into_iter()
            .filter(|s| s.holds_environment())
            .collect();
        assert_eq!(
            holding, holds,
            "the environment lock follows JobStatus::holds_environment"
        );
        for (file, source) in [
            (
                "sql/",
                concat!(
                    include_str!("sql/catalog.rs"),
                    include_str!("sql/jobs.rs"),
                    include_str!("sql/leases.rs"),
                ),
            ),
            (
                "sqlite migration",
                include_str!("../migrations/sqlite/0001_initial.sql"),
            ),
            (
                "postgres migration",
                include_str!("../migrations/postgres/0001_initial.sql"),
            ),
        ] {
            let spelled = source.replace("\n", " ");
            let spelled: String = spelled.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(
                spelled.contains(&format!("status IN {ACTIVE_STATUSES}")),
                "{file} spells the active statuses differently"
            );
            assert!(
                spelled.contains(&format!("status IN {LOCK_STATUSES}")),
                "{file} spells the lock statuses differently"
            );
        }
    }

    #[test]
    fn out_of_range_values_are_named() {
        assert_eq!(
            int("version", u64::MAX).unwrap_err().to_string(),
            "version 18446744073709551615 does not fit in a signed 64-bit database integer"
        );
        assert!(uint("tasks.version", -1).is_err());
    }
}
