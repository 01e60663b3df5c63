//! deploy-core: the domain model, state machines and rollout planner shared by every part of the deployment system.
//!
//! Pure by design: no I/O, no clock, no randomness, no async runtime. Time and
//! random bytes are arguments, so the engine, the server, the agent and any
//! service embedding these crates agree on one exact meaning of "job", "task",
//! "status" and "wave", and every rule here is testable as a plain function.

mod approval;
mod artifact;
mod compose_status;
mod connection;
mod container;
mod digest;
mod environment;
mod errors;
mod health;
pub mod hex;
mod ids;
mod image_ref;
mod job;
mod job_status;
mod name;
pub mod naming;
mod net;
mod notification;
mod planner;
mod promotion;
mod release;
mod rollout;
mod runtime_policy;
mod secret;
mod secret_ref;
mod strategy;
mod target;
mod task;
mod task_status;
mod timestamp;
mod traceparent;
mod values;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use approval::{
    Approval, ApprovalOutcome, ApprovalPolicy, ApprovalRefused, Approver, ApproverRole,
    MAX_REQUIRED_APPROVALS,
};
pub use artifact::{ArtifactKind, GeneratedArtifact, sha256_of};
pub use compose_status::ComposeStatus;
pub use connection::{
    AgentConnection, ApiConnection, Connection, DEFAULT_AGENT_WORK_SUBDIR, DEFAULT_SSH_WORK_SUBDIR,
    ExecutionModel, HostKeyFingerprint, HostKeyPolicy, KubeAuth, KubeContext, ResourceName,
    SshConnection, WinrmAuth, WinrmConnection,
};
pub use container::{
    ContainerHealthcheck, ContainerSpec, DEFAULT_STOP_GRACE_SECS, ExposedPort, ExtraHost, Logging,
    Mount, NetworkAttachment, PortMapping, Protocol, PublishedPort, RestartPolicy, UpdateOrder,
    valid_env_key,
};
pub use digest::Digest;
pub use environment::{Environment, Hooks};
pub use errors::{
    CoreError, DigestError, IdError, ImageRefError, InvalidTransition, NameError, PlanError,
    TimestampError, UnknownComponent, ValidationError,
};
pub use health::{HealthCheck, HealthCheckConfig, HttpExpectation, InstanceProbe, ProbeOutcome};
pub use ids::{
    AgentId, ArtifactId, ComponentId, EnvironmentId, JobId, PromotionId, ReleaseId, SubscriptionId,
    TargetId, TaskId,
};
pub use image_ref::ImageRef;
pub use job::DeploymentJob;
pub use job_status::{JobEvent, JobStatus};
pub use name::{NAME_MAX_LEN, Name};
pub use net::{Host, HttpUrl, is_loopback_host};
pub use notification::{NotificationEvent, delivery_id};
pub use planner::{BlueGreenPhase, RolloutPlan, Wave, WaveGate, WaveKind, plan};
pub use promotion::{Promotion, PromotionDecision, PromotionStatus};
pub use release::{Component, Release, ServiceTemplate};
pub use rollout::{Action, DecideInput, RetryBackoff, decide, failed_targets};
pub use runtime_policy::{
    BindRefusal, CAPABILITY_NAMES, Capability, ENGINE_SOCKETS, HostNamespace, HostPrefix,
    RuntimePolicy,
};
pub use secret::Secret;
pub use secret_ref::{SECRET_REF_PREFIX, SecretRef, secret_refs};
pub use strategy::{BatchSize, FailurePolicy, Percent, Ratio, Strategy};
pub use target::{Target, TargetType};
pub use task::{DEFAULT_MAX_ATTEMPTS, DeploymentTask, NewTask};
pub use task_status::{TaskEvent, TaskStatus};
pub use timestamp::Timestamp;
pub use traceparent::{Traceparent, TraceparentError};
pub use values::{
    COMMAND_MAX_BYTES, CommandSpec, CredentialRef, IdempotencyKey, Labels, UnixPath, Username,
};
