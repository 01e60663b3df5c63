//! Request and response bodies of the resources: environments, targets, releases, promotions, jobs, tasks, logs, artifacts, tokens.
//!
//! Responses for stored entities are deploy-core's own serde types
//! (`Environment`, `Target`, `Release`, `Promotion`, `DeploymentJob`,
//! `DeploymentTask`); the types here are the ones the API adds.

use std::num::NonZeroU32;

use deploy_core::{
    ApprovalPolicy, ArtifactKind, Connection, DeploymentJob, DeploymentTask, Digest, Environment,
    EnvironmentId, FailurePolicy, GeneratedArtifact, HealthCheckConfig, Hooks, HttpUrl,
    IdempotencyKey, ImageRef, JobId, JobStatus, Labels, Name, Promotion, PromotionId, Release,
    ReleaseId, Strategy, TargetId, TargetType, TaskId, Timestamp,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::role::Role;

/// `POST /api/v1/environments`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnvironmentRequest {
    #[schema(value_type = String)]
    pub name: Name,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub hooks: Hooks,
    /// Values of this environment (`DATABASE_URL` and the like): each replaces the value
    /// of a service's variable of the same name, and gives one to a variable the
    /// service declares without a value. Names `[A-Za-z_][A-Za-z0-9_]*`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: std::collections::BTreeMap<String, String>,
    /// Who must approve promotions here (absent: one approval by any deployer, the
    /// requester included): `{"required_approvals": 2, "approver_role": "deployer" |
    /// "admin", "approvers": ["token name", …], "allow_self_approval": false}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub approval: Option<ApprovalPolicy>,
    /// Environments (names or ids) in which a release must have completed before it may
    /// be promoted here: the pipeline (`["staging"]` for prod).
    #[serde(default)]
    pub requires: Vec<String>,
}

/// `PUT /api/v1/environments/{id}`: the whole new definition, and the version it replaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEnvironmentRequest {
    #[schema(value_type = String)]
    pub name: Name,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub hooks: Hooks,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub approval: Option<ApprovalPolicy>,
    #[serde(default)]
    pub requires: Vec<String>,
    /// The `version` of the environment this update was made from (or send it as
    /// `If-Match: "<version>"`, the ETag of the read); another write since then makes
    /// it 409.
    #[serde(default)]
    pub version: Option<u64>,
}

/// `POST /api/v1/environments/{id}/targets`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTargetRequest {
    #[schema(value_type = String)]
    pub name: Name,
    #[schema(value_type = String)]
    pub target_type: TargetType,
    #[schema(value_type = Object)]
    pub connection: Connection,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub health_endpoint: Option<HttpUrl>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub health_check: Option<HealthCheckConfig>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub labels: Labels,
}

/// One component of a new release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ComponentRequest {
    #[schema(value_type = String)]
    pub name: Name,
    /// `registry/path@sha256:…`; a digest is required.
    #[schema(value_type = String)]
    pub image: ImageRef,
}

/// `POST /api/v1/releases`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReleaseRequest {
    #[schema(value_type = String)]
    pub name: Name,
    pub components: Vec<ComponentRequest>,
    /// The service definition: a compose template (YAML) whose services each name the
    /// component they run (`componentName`). Checked now (every key with its path, e.g.
    /// `template.services.web.ports[0]`) and stored with the release, unchangeable;
    /// every deploy and rollback of the release renders from it. Absent: each component
    /// runs its image's own command.
    #[serde(default)]
    pub template: Option<String>,
}

/// `POST /api/v1/promotions`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePromotionRequest {
    /// The release's name or id (`release_id` is accepted too).
    #[serde(alias = "release_id")]
    pub release: String,
    /// The environment's name or id (`environment_id` is accepted too).
    #[serde(alias = "environment_id")]
    pub environment: String,
}

/// `POST /api/v1/promotions/{id}/reject`: why (optional body).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectPromotionRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

/// A page of promotions (`GET /api/v1/promotions?environment=&status=&before=&limit=`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromotionList {
    /// Newest first.
    #[schema(value_type = Vec<crate::schema::Promotion>)]
    pub promotions: Vec<Promotion>,
    /// Pass as `before` to read the next page; `None` when this page was not full.
    #[schema(value_type = Option<String>)]
    pub next_before: Option<PromotionId>,
}

/// `POST /api/v1/promotions/{id}/approve`: optional settings of the job it creates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovePromotionRequest {
    /// Attempts per task, 1 to 100 (default 3).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Rollout strategy (default all-at-once).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub strategy: Option<Strategy>,
    /// Tasks in flight at once (default 10).
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1)]
    pub parallelism: Option<NonZeroU32>,
    /// When the job fails and whether it rolls back (default: any failure fails, no auto rollback).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub failure_policy: Option<FailurePolicy>,
    /// A compose template (YAML) that replaces the release's service definition for
    /// this job only (the job's artifacts record what was rendered; a rollback
    /// re-deploys those and never needs the template again).
    #[serde(default)]
    pub template: Option<String>,
    /// When the environment is busy: wait in line (the job is created `pending` with
    /// `queued_behind` naming the job ahead, and runs when its turn comes) instead of
    /// the 409 `environment-busy` answer.
    #[serde(default)]
    pub queue: bool,
}

/// The promotion after an approval, and the job once it is approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovePromotionResponse {
    #[schema(value_type = crate::schema::Promotion)]
    pub promotion: Promotion,
    /// The job the approval created (or had created); absent while more approvals are needed.
    #[serde(default)]
    #[schema(value_type = Option<crate::schema::DeploymentJob>)]
    pub job: Option<DeploymentJob>,
    /// Approvals still needed before the job is created (0 once approved).
    #[serde(default)]
    pub missing_approvals: u32,
}

/// `POST /api/v1/jobs/{id}/rollback`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    pub reason: String,
}

/// A page of jobs (`GET /api/v1/jobs?environment=&status=&before=&limit=`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobList {
    /// Newest first.
    pub jobs: Vec<JobListItem>,
    /// Pass as `before` to read the next page; `None` when this page was not full.
    #[schema(value_type = Option<String>)]
    pub next_before: Option<JobId>,
}

/// A job as listed: `DeploymentJob`'s fields, but its artifacts as
/// [`ArtifactSummary`] (kind, target, file name, size, sha256; no content: a list
/// page stays small, and `GET /api/v1/jobs/{id}/artifacts/{kind}` serves contents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobListItem {
    #[schema(value_type = String)]
    pub id: JobId,
    #[schema(value_type = String)]
    pub promotion_id: PromotionId,
    #[schema(value_type = String)]
    pub release_id: ReleaseId,
    #[schema(value_type = String)]
    pub environment_id: EnvironmentId,
    #[schema(value_type = Object)]
    pub strategy: Strategy,
    #[schema(value_type = u32, minimum = 1)]
    pub parallelism: NonZeroU32,
    #[schema(value_type = Object)]
    pub failure_policy: FailurePolicy,
    #[schema(value_type = String)]
    pub status: JobStatus,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub completed_at: Option<Timestamp>,
    pub artifacts: Vec<ArtifactSummary>,
    #[schema(value_type = Option<String>)]
    pub rollback_of: Option<JobId>,
    #[schema(value_type = Option<String>)]
    pub previous_job_id: Option<JobId>,
    /// Set while the job waits in line for its busy environment: the job ahead of it.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub queued_behind: Option<JobId>,
    /// A `failed` job whose runner is still cancelling or reconciling its attempts
    /// (its automatic rollback, if any, starts next): `failed` is settled only once
    /// this is false.
    #[serde(default)]
    pub winding_down: bool,
    #[schema(value_type = Vec<crate::schema::DeploymentTask>)]
    pub tasks: Vec<DeploymentTask>,
    #[schema(value_type = String)]
    pub idempotency_key: IdempotencyKey,
    pub failure_reason: Option<String>,
    pub version: u64,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

impl From<DeploymentJob> for JobListItem {
    fn from(job: DeploymentJob) -> Self {
        Self {
            id: job.id,
            promotion_id: job.promotion_id,
            release_id: job.release_id,
            environment_id: job.environment_id,
            strategy: job.strategy,
            parallelism: job.parallelism,
            failure_policy: job.failure_policy,
            status: job.status,
            started_at: job.started_at,
            completed_at: job.completed_at,
            artifacts: job
                .artifacts
                .into_iter()
                .map(ArtifactSummary::from)
                .collect(),
            rollback_of: job.rollback_of,
            previous_job_id: job.previous_job_id,
            queued_behind: job.queued_behind,
            winding_down: job.winding_down,
            tasks: job.tasks,
            idempotency_key: job.idempotency_key,
            failure_reason: job.failure_reason,
            version: job.version,
            created_at: job.created_at,
            updated_at: job.updated_at,
        }
    }
}

impl From<GeneratedArtifact> for ArtifactSummary {
    fn from(a: GeneratedArtifact) -> Self {
        Self {
            kind: a.kind,
            target_id: a.target_id,
            file_name: a.file_name,
            size: a.size,
            sha256: a.sha256,
        }
    }
}

/// One entry of a job's event log, as listed and as sent over SSE (the SSE `id` is `seq`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobEventDto {
    /// Position in the event log; 0 for a live event not read back from the log.
    pub seq: u64,
    #[schema(value_type = String)]
    pub job_id: JobId,
    #[schema(value_type = Option<String>)]
    pub task_id: Option<TaskId>,
    pub event: String,
    pub from_status: Option<String>,
    pub to_status: String,
    pub cause: String,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
}

/// One chunk of a task's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogChunkDto {
    pub seq: u64,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    pub content: String,
}

/// One chunk of a job's log (`GET /api/v1/jobs/{id}/logs/events`): a chunk of one of its
/// tasks' logs. The SSE event's `id` is the chunk's position in the job's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobLogChunkDto {
    #[schema(value_type = String)]
    pub task_id: TaskId,
    /// The chunk's `seq` in its task's log.
    pub seq: u64,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    pub content: String,
}

/// `GET /api/v1/tasks/{id}/logs?after=N&limit=M`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogPage {
    #[schema(value_type = String)]
    pub task_id: TaskId,
    pub chunks: Vec<LogChunkDto>,
    /// Pass as `after` to read the next page; `None` when this page was not full.
    pub next_after: Option<u64>,
}

/// An artifact of a job, without its content (`GET /api/v1/jobs/{id}/artifacts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArtifactSummary {
    #[schema(value_type = String)]
    pub kind: ArtifactKind,
    #[schema(value_type = Option<String>)]
    pub target_id: Option<TargetId>,
    #[schema(value_type = String)]
    pub file_name: Name,
    pub size: u64,
    #[schema(value_type = String)]
    pub sha256: Digest,
}

/// `POST /api/v1/tokens`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    pub name: String,
    pub role: Role,
    /// Seconds until the token stops being accepted (absent: it never expires).
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
}

/// A new token: the secret is shown in this response only; the server keeps its sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatedToken {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    pub token: String,
    /// When it stops being accepted (`None`: never).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
}

/// One row of the audit log (`GET /api/v1/audit`): a write through the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    pub seq: u64,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// `token` or `agent`.
    pub actor_kind: String,
    pub actor_id: String,
    pub actor_name: String,
    pub method: String,
    /// The route template, e.g. `/api/v1/environments/{id}`.
    pub route: String,
    pub path: String,
    pub entity_id: Option<String>,
    /// The answer's HTTP status (refused writes are recorded too).
    pub status: u16,
    /// The peer address, and `X-Forwarded-For` when the request carried one.
    pub remote: Option<String>,
    /// The entity before the write (updates), secrets redacted.
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    /// The answer, secrets redacted.
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
}

/// A page of the audit log, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditList {
    pub entries: Vec<AuditEntry>,
    /// Pass as `before` to read the next page; `None` when this page was not full.
    pub next_before: Option<u64>,
}

/// A page of environments (`GET /api/v1/environments?before=&limit=`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentList {
    /// Newest first.
    #[schema(value_type = Vec<crate::schema::Environment>)]
    pub environments: Vec<Environment>,
    /// Pass as `before` to read the next page; `None` when this page was not full.
    #[schema(value_type = Option<String>)]
    pub next_before: Option<EnvironmentId>,
}

/// A page of releases (`GET /api/v1/releases?before=&limit=`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseList {
    /// Newest first.
    #[schema(value_type = Vec<crate::schema::Release>)]
    pub releases: Vec<Release>,
    /// Pass as `before` to read the next page; `None` when this page was not full.
    #[schema(value_type = Option<String>)]
    pub next_before: Option<ReleaseId>,
}

/// An API token as listed (`GET /api/v1/tokens`): never its secret nor the secret's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenSummary {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// Last authenticated request, to the minute (`None`: never used).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<Timestamp>,
    /// Set once the token is revoked; a revoked token is refused at once.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<Timestamp>,
    /// When it stops being accepted (`None`: never).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
}

/// `POST /api/v1/plan`: what deploying `release_id` to `environment_id` would do, without doing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    /// The release's name or id (`release_id` is accepted too).
    #[serde(alias = "release_id")]
    pub release: String,
    /// The environment's name or id (`environment_id` is accepted too).
    #[serde(alias = "environment_id")]
    pub environment: String,
    /// Rollout strategy (default all-at-once).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub strategy: Option<Strategy>,
    /// Tasks in flight at once (default 10).
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1)]
    pub parallelism: Option<NonZeroU32>,
}

/// The dry run of a deploy: the waves, and per target and component the digest it would get and what it runs now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanResponse {
    #[schema(value_type = String)]
    pub release_id: ReleaseId,
    #[schema(value_type = String)]
    pub release_name: Name,
    #[schema(value_type = String)]
    pub environment_id: EnvironmentId,
    #[schema(value_type = String)]
    pub environment_name: Name,
    /// `all-at-once`, `rolling`, `canary` or `blue-green`.
    pub strategy: String,
    pub waves: Vec<PlanWave>,
    /// Targets of the environment the job would leave out (disabled ones).
    #[serde(default)]
    pub skipped: Vec<SkippedTarget>,
}

/// A target a plan leaves out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SkippedTarget {
    #[schema(value_type = String)]
    pub target_id: TargetId,
    #[schema(value_type = String)]
    pub target_name: Name,
    /// `disabled`.
    pub reason: String,
}

/// `PUT /api/v1/environments/{id}/targets/{target}`: the target's new definition (its
/// type is fixed) and the version it replaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTargetRequest {
    #[schema(value_type = String)]
    pub name: Name,
    #[schema(value_type = Object)]
    pub connection: Connection,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub health_endpoint: Option<HttpUrl>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub health_check: Option<HealthCheckConfig>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub labels: Labels,
    /// A disabled target gets no task in new jobs.
    #[serde(default)]
    pub disabled: bool,
    /// The `version` of the target this update was made from (or `If-Match:
    /// "<version>"`); another write since then makes it 409.
    #[serde(default)]
    pub version: Option<u64>,
}

/// One wave of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanWave {
    /// From 0.
    pub index: u32,
    /// `all`, `batch`, `canary`, or the blue-green phase (`deploy_green`, `verify_green`, `cut_over`).
    pub kind: String,
    pub entries: Vec<PlanEntry>,
}

/// What one target (and component) of a wave would get, and what it runs now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanEntry {
    #[schema(value_type = String)]
    pub target_id: TargetId,
    #[schema(value_type = String)]
    pub target_name: Name,
    /// The component; `None` for a compose_host target, deployed as one project.
    #[schema(value_type = Option<String>)]
    pub component: Option<Name>,
    /// The digest it would get; `None` for a compose_host target (its compose lock's sha256 is rendered with the job).
    #[schema(value_type = Option<String>)]
    pub digest: Option<Digest>,
    /// What `inspect` found running (`None`: nothing, or inspect failed).
    #[schema(value_type = Option<String>)]
    pub running: Option<Digest>,
    pub change: PlanChange,
    /// Why `inspect` failed, when it did.
    pub error: Option<String>,
}

/// How a planned entry compares with what runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanChange {
    /// Nothing runs there yet.
    Install,
    /// Another digest runs; it would be replaced.
    Update,
    /// The digest already runs; the deploy would change nothing.
    Unchanged,
    /// `inspect` failed, or the target deploys a rendered project: unknown.
    Unknown,
}

/// `/healthz` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthResponse {
    pub status: String,
}

/// `GET /api/v1/version`: what the server was built from. No `deny_unknown_fields`:
/// an older client keeps reading the answer of a newer server that tells more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VersionResponse {
    /// The server binary, `deployd`.
    pub name: String,
    /// Its version, e.g. `0.1.0`.
    pub version: String,
    /// The git commit it was built from (short), or `unknown`.
    pub commit: String,
}
