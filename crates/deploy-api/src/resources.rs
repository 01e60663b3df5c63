//! Request and response bodies of the resources: environments, targets, releases, promotions, jobs, tasks, logs, artifacts, tokens.
//!
//! Responses for stored entities are deploy-core's own serde types
//! (`Environment`, `Target`, `Release`, `Promotion`, `DeploymentJob`,
//! `DeploymentTask`); the types here are the ones the API adds.

use std::num::NonZeroU32;

use deploy_core::{
    ArtifactKind, Connection, DeploymentJob, Digest, EnvironmentId, FailurePolicy,
    HealthCheckConfig, Hooks, HttpUrl, ImageRef, JobId, Labels, Name, Promotion, ReleaseId,
    Strategy, TargetId, TargetType, TaskId, Timestamp,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::role::Role;

/// `POST /api/v1/environments`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEnvironmentRequest {
    pub name: Name,
    #[serde(default)]
    pub hooks: Hooks,
}

/// `POST /api/v1/environments/{id}/targets`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTargetRequest {
    pub name: Name,
    pub target_type: TargetType,
    pub connection: Connection,
    #[serde(default)]
    pub health_endpoint: Option<HttpUrl>,
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    #[serde(default)]
    pub labels: Labels,
}

/// One component of a new release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentRequest {
    pub name: Name,
    /// `registry/path@sha256:…`; a digest is required.
    pub image: ImageRef,
}

/// `POST /api/v1/releases`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateReleaseRequest {
    pub name: Name,
    pub components: Vec<ComponentRequest>,
}

/// `POST /api/v1/promotions`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePromotionRequest {
    pub release_id: ReleaseId,
    pub environment_id: EnvironmentId,
}

/// `POST /api/v1/promotions/{id}/approve`: optional settings of the job it creates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovePromotionRequest {
    /// Attempts per task, 1 to 100 (default 3).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Rollout strategy (default all-at-once).
    #[serde(default)]
    pub strategy: Option<Strategy>,
    /// Tasks in flight at once (default 10).
    #[serde(default)]
    pub parallelism: Option<NonZeroU32>,
    /// When the job fails and whether it rolls back (default: any failure fails, no auto rollback).
    #[serde(default)]
    pub failure_policy: Option<FailurePolicy>,
    /// Compose template (YAML), required for compose_host targets.
    #[serde(default)]
    pub template: Option<String>,
}

/// The approved promotion and the job its approval created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovePromotionResponse {
    pub promotion: Promotion,
    pub job: DeploymentJob,
}

/// `POST /api/v1/jobs/{id}/rollback`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    pub reason: String,
}

/// A page of jobs (`GET /api/v1/jobs?environment=&status=&before=&limit=`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobList {
    /// Newest first.
    pub jobs: Vec<DeploymentJob>,
    /// Pass as `before` to read the next page; `None` when this page was not full.
    pub next_before: Option<JobId>,
}

/// One entry of a job's event log, as listed and as sent over SSE (the SSE `id` is `seq`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobEventDto {
    /// Position in the event log; 0 for a live event not read back from the log.
    pub seq: u64,
    pub job_id: JobId,
    pub task_id: Option<TaskId>,
    pub event: String,
    pub from_status: Option<String>,
    pub to_status: String,
    pub cause: String,
    pub at: Timestamp,
}

/// One chunk of a task's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogChunkDto {
    pub seq: u64,
    pub at: Timestamp,
    pub content: String,
}

/// `GET /api/v1/tasks/{id}/logs?after=N&limit=M`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogPage {
    pub task_id: TaskId,
    pub chunks: Vec<LogChunkDto>,
    /// Pass as `after` to read the next page; `None` when this page was not full.
    pub next_after: Option<u64>,
}

/// An artifact of a job, without its content (`GET /api/v1/jobs/{id}/artifacts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactSummary {
    pub kind: ArtifactKind,
    pub target_id: Option<TargetId>,
    pub file_name: Name,
    pub size: u64,
    pub sha256: Digest,
}

/// `POST /api/v1/tokens`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    pub name: String,
    pub role: Role,
}

/// A new token: the secret is shown in this response only; the server keeps its sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatedToken {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    pub token: String,
}

/// `/healthz` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthResponse {
    pub status: String,
}
