//! deploy-api: the wire types of the HTTP API, versioned under `/api/v1`.
//!
//! Only these types cross the process boundary between `deployd` and its
//! clients. Request bodies reject unknown fields so typos are errors; values
//! are deploy-core types, so a bad name, digest or id fails while decoding,
//! with the field path in the problem document. No untagged or flattened enums.
//! [`agent`] is the agent protocol (versioned, [`AGENT_PROTOCOL_VERSION`]).

pub mod agent;
mod errors;
mod notifications;
mod problem;
mod resources;
mod role;
pub mod schema;
mod secrets;

pub use agent::AGENT_PROTOCOL_VERSION;
pub use errors::ApiTypeError;
pub use notifications::{
    CreateSubscriptionRequest, DELIVERY_HEADER, Delivery, DeliveryAttempt, DeliveryDetail,
    DeliveryList, EVENT_HEADER, SIGNATURE_HEADER, Subscription, SubscriptionList,
    WebhookEnvironment, WebhookJob, WebhookPayload, WebhookPromotion,
};
pub use problem::{PROBLEM_MEDIA_TYPE, Problem, ProblemType};
pub use resources::{
    ApprovePromotionRequest, ApprovePromotionResponse, ArtifactSummary, AuditEntry, AuditList,
    ComponentRequest, CreateEnvironmentRequest, CreatePromotionRequest, CreateReleaseRequest,
    CreateTargetRequest, CreateTokenRequest, CreatedToken, EnvironmentList, HealthResponse,
    JobEventDto, JobList, JobListItem, JobLogChunkDto, LogChunkDto, LogPage, PlanChange, PlanEntry,
    PlanRequest, PlanResponse, PlanWave, PromotionList, RejectPromotionRequest, ReleaseList,
    RollbackRequest, SkippedTarget, TokenSummary, UpdateEnvironmentRequest, UpdateTargetRequest,
    VersionResponse,
};
pub use role::Role;
pub use secrets::{MAX_SECRET_BYTES, PutSecretRequest, SecretSummary};

/// Every route of the API lives under this prefix.
pub const API_PREFIX: &str = "/api/v1";
/// The SSE event name of a job or task transition.
pub const SSE_EVENT_TRANSITION: &str = "transition";
/// The SSE event name sent once the job reached a terminal state (or, on a log stream,
/// once the task or job settled and every chunk was sent).
pub const SSE_EVENT_END: &str = "end";
/// The SSE event name of a log chunk (`GET /api/v1/tasks/{id}/logs/events`,
/// `GET /api/v1/jobs/{id}/logs/events`).
pub const SSE_EVENT_LOG: &str = "log";

#[cfg(test)]
mod tests;
