//! OpenAPI schemas of the deploy-core entities the API returns as they are (`Environment`, `Target`, `Release`, `Promotion`, `DeploymentJob`, `DeploymentTask`).
//!
//! deploy-core is pure and knows nothing of OpenAPI, so these are schema-only
//! mirrors: never built, only described. A test serializes the real deploy-core
//! values and checks that their JSON keys are exactly these properties, so a
//! field added to or removed from deploy-core fails the build's tests, not a client.
//! Nested configuration (hooks, connection, health check, strategy, failure
//! policy) is described as a free-form object: its shape is deploy-core's serde
//! model, documented in docs/ARCHITECTURE.md.

use utoipa::ToSchema;

/// An environment (`GET /api/v1/environments/{id}`).
#[derive(ToSchema)]
pub struct Environment {
    /// UUID v7.
    pub id: String,
    pub name: String,
    /// Pre/post deploy hooks.
    #[schema(value_type = Object)]
    pub hooks: (),
    /// The environment's values: each replaces the value of a service's variable of
    /// the same name, and gives one to a variable declared without a value.
    #[schema(value_type = Object)]
    pub variables: (),
    /// Who must approve promotions here (`None`: one approval by any deployer).
    #[schema(value_type = Option<Object>)]
    pub approval: (),
    /// Ids of the environments in which a release must have completed first.
    pub requires: Vec<String>,
    /// What this environment's containers may get from their hosts; set by an admin
    /// with `PUT /api/v1/environments/{id}/runtime-policy`.
    pub runtime_policy: RuntimePolicy,
    /// Bumped by every update; an update names the version it replaces.
    pub version: u64,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// An environment's runtime policy: what its containers may get from their hosts.
/// Every field defaults to refusing; unknown fields are refused.
#[derive(ToSchema)]
pub struct RuntimePolicy {
    /// Allow `privileged: true`.
    #[schema(default = false)]
    pub privileged: bool,
    /// Host namespaces a service may join: `network`, `pid`, `ipc`, `uts`, `userns`, `cgroup`.
    pub host_namespaces: Vec<String>,
    /// Capabilities `cap_add` may add (Linux names such as `NET_ADMIN`; `ALL` only if listed).
    pub capabilities: Vec<String>,
    /// Allow `devices`, `device_cgroup_rules`, `gpus` and device reservations, and
    /// volumes mounting anything of the host but a tmpfs, an NFS/CIFS share or a
    /// checked bind (other `local` driver options, volume plugins).
    #[schema(default = false)]
    pub devices: bool,
    /// Allow `security_opt` entries other than `no-new-privileges`.
    #[schema(default = false)]
    pub unconfined: bool,
    /// Absolute host directories bind mounts may come from (no `.` or `..`).
    pub bind_prefixes: Vec<String>,
    /// Allow a bind of a container engine's socket or state directory (or of a
    /// directory holding one).
    #[schema(default = false)]
    pub docker_socket: bool,
    /// Allow `volumes_from: container:…` and `network_mode` / `pid` / `ipc: container:…`
    /// (containers outside the deployment).
    #[schema(default = false)]
    pub other_containers: bool,
}

/// A deployment target of an environment.
#[derive(ToSchema)]
pub struct Target {
    pub id: String,
    pub environment_id: String,
    pub name: String,
    /// `docker_host`, `compose_host`, `ecs_service`, `nomad_job`, `k8s_deployment`, `windows_service`.
    pub target_type: String,
    /// How the target is reached, tagged by `model` (`ssh`, `agent`, `winrm`, `api`).
    #[schema(value_type = Object)]
    pub connection: (),
    pub health_endpoint: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub health_check: (),
    #[schema(value_type = Object)]
    pub labels: (),
    /// A disabled target gets no task in new jobs.
    pub disabled: bool,
    /// Bumped by every update; an update names the version it replaces.
    pub version: u64,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// One component of a release: a name and an image pinned by digest.
#[derive(ToSchema)]
pub struct Component {
    pub id: String,
    pub name: String,
    /// `registry/path@sha256:<64 hex>`.
    pub image: String,
}

/// A release's service definition: a compose template and its sha256.
#[derive(ToSchema)]
pub struct ServiceTemplate {
    /// The compose template (YAML), as given when the release was created.
    pub content: String,
    /// `sha256:<64 hex>` of `content`.
    pub sha256: String,
}

/// An immutable set of component images and the service definition they run with.
#[derive(ToSchema)]
pub struct Release {
    pub id: String,
    pub name: String,
    pub components: Vec<Component>,
    /// `None`: every component runs its image's own command, nothing declared.
    pub template: Option<ServiceTemplate>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Set once archived: it can no longer be promoted.
    #[schema(format = DateTime)]
    pub archived_at: Option<String>,
}

/// A request to deploy a release to an environment, and its decision.
#[derive(ToSchema)]
pub struct Promotion {
    pub id: String,
    pub release_id: String,
    pub environment_id: String,
    /// `requested`, `approved` or `rejected`.
    pub status: String,
    /// The requesting token's name.
    pub requested_by: String,
    /// The requesting token's id.
    pub requested_by_token: Option<String>,
    /// The token whose approval or rejection decided it.
    pub decided_by: Option<String>,
    #[schema(format = DateTime)]
    pub requested_at: String,
    #[schema(format = DateTime)]
    pub decided_at: Option<String>,
    /// Approvals so far: `{by, token_id, at}`, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub approvals: (),
    pub rejection_reason: Option<String>,
    /// Bumped by every change.
    pub version: u64,
}

/// A rendered file of a job (compose file, lock, env file, unit, nginx config, manifest).
#[derive(ToSchema)]
pub struct GeneratedArtifact {
    pub id: String,
    pub job_id: String,
    pub target_id: Option<String>,
    pub kind: String,
    pub file_name: String,
    pub content: String,
    pub size: u64,
    /// `sha256:<64 hex>` of `content`.
    pub sha256: String,
}

/// One (target, component) deployment of a job.
#[derive(ToSchema)]
pub struct DeploymentTask {
    pub id: String,
    pub job_id: String,
    pub target_id: String,
    pub component_id: Option<String>,
    pub digest: String,
    /// `pending`, `queued`, `dispatched`, `running`, `verifying`, `succeeded`, `failed`, `retrying`.
    pub status: String,
    pub agent_id: Option<String>,
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    #[schema(format = DateTime)]
    pub completed_at: Option<String>,
    pub logs: String,
    pub previous_digest: Option<String>,
    pub error: Option<String>,
    pub attempt_number: u32,
    pub max_attempts: u32,
    pub last_failure_retryable: bool,
    pub wave: u32,
    pub version: u64,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// A deployment job: a release rolled out to an environment in waves.
#[derive(ToSchema)]
pub struct DeploymentJob {
    pub id: String,
    pub promotion_id: String,
    pub release_id: String,
    pub environment_id: String,
    /// Tagged by `type`: `all-at-once`, `rolling`, `canary`, `blue-green`.
    #[schema(value_type = Object)]
    pub strategy: (),
    #[schema(minimum = 1)]
    pub parallelism: u32,
    #[schema(value_type = Object)]
    pub failure_policy: (),
    /// `pending`, `preparing`, `running`, `completing`, `completed`, `failed`, `rolling_back`, `rolled_back`.
    pub status: String,
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    #[schema(format = DateTime)]
    pub completed_at: Option<String>,
    pub artifacts: Vec<GeneratedArtifact>,
    pub rollback_of: Option<String>,
    pub previous_job_id: Option<String>,
    /// Set while the job waits in line for its busy environment: the job ahead of it.
    pub queued_behind: Option<String>,
    /// A `failed` job still winding down (its automatic rollback, if any, starts
    /// next); `failed` is settled once this is false.
    pub winding_down: bool,
    pub tasks: Vec<DeploymentTask>,
    pub idempotency_key: String,
    pub failure_reason: Option<String>,
    pub version: u64,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}
