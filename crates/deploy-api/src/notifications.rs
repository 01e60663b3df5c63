//! Webhook notifications on the wire: subscriptions (admin-managed), the delivery log, and the body POSTed to a receiver.

use deploy_core::{
    EnvironmentId, HttpUrl, JobId, NotificationEvent, PromotionId, ReleaseId, SubscriptionId,
    Timestamp,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The header carrying `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<id>.<event>.<body>">`
/// (`id` and `event`: the two headers below), keyed with the subscription's signing key.
pub const SIGNATURE_HEADER: &str = "X-Deploy-Signature";
/// The header carrying the delivery id: the same on every retry, the receiver's dedup key
/// (signed).
pub const DELIVERY_HEADER: &str = "X-Deploy-Delivery";
/// The header carrying the event name (`job.completed`, ...; signed).
pub const EVENT_HEADER: &str = "X-Deploy-Event";

/// The body of `POST /api/v1/notifications`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscriptionRequest {
    /// The environment (name or id) whose events are sent.
    pub environment: String,
    /// Where to POST: an http(s) URL without user or password, at most 2048 bytes.
    #[schema(value_type = String)]
    pub url: HttpUrl,
    /// At least one of `job.started`, `job.completed`, `job.failed`,
    /// `job.rolled_back`, `approval.requested`.
    #[schema(value_type = Vec<String>)]
    pub events: Vec<NotificationEvent>,
}

/// A subscription as listed: never its signing key, which only the answers of its
/// creation and of a key rotation carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    #[schema(value_type = String)]
    pub id: SubscriptionId,
    #[schema(value_type = String)]
    pub environment_id: EnvironmentId,
    /// The environment's name (its id when it was deleted since).
    pub environment: String,
    #[schema(value_type = String)]
    pub url: HttpUrl,
    #[schema(value_type = Vec<String>)]
    pub events: Vec<NotificationEvent>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    pub created_by: String,
    /// The signing key (64 hex characters; the HMAC key is this text's bytes), generated
    /// by deployd: in the answer of `POST /notifications` and of
    /// `POST /notifications/{id}/rotate-key` only, never again. Give it to the receiver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
}

/// `GET /api/v1/notifications`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionList {
    pub subscriptions: Vec<Subscription>,
}

/// One delivery of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// The `X-Deploy-Delivery` header's value.
    pub id: uuid::Uuid,
    /// The position in the log (for `before=` paging).
    pub seq: u64,
    #[schema(value_type = String)]
    pub subscription_id: SubscriptionId,
    #[schema(value_type = String)]
    pub environment_id: EnvironmentId,
    #[schema(value_type = String)]
    pub event: NotificationEvent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub job_id: Option<JobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub promotion_id: Option<PromotionId>,
    /// `pending` (to be sent, again after a failed attempt), `delivered` or `failed`
    /// (given up).
    pub status: String,
    pub attempts: u32,
    #[schema(value_type = String, format = DateTime)]
    pub occurred_at: Timestamp,
    /// When the next attempt is due (pending only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveryAttempt {
    /// 1 for the first attempt.
    pub n: u32,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    pub duration_ms: u64,
    /// The receiver's status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Why the attempt did not deliver (a non-2xx status, a timeout, a refused connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /api/v1/notifications/deliveries`: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveryList {
    pub deliveries: Vec<Delivery>,
    /// Pass as `before` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<u64>,
}

/// `GET /api/v1/notifications/deliveries/{id}`: a delivery and its attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveryDetail {
    pub delivery: Delivery,
    pub attempts: Vec<DeliveryAttempt>,
}

/// The body POSTed to a receiver (`Content-Type: application/json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WebhookPayload {
    /// The delivery id (also `X-Deploy-Delivery`): dedup by it, deliveries come at least once.
    pub id: uuid::Uuid,
    #[schema(value_type = String)]
    pub event: NotificationEvent,
    /// When the change happened (not when it was sent).
    #[schema(value_type = String, format = DateTime)]
    pub occurred_at: Timestamp,
    pub environment: WebhookEnvironment,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<WebhookJob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<WebhookPromotion>,
    /// The cause of the change ("engine: wave 2 unhealthy", "requested by alice").
    pub detail: String,
}

/// The environment of a [`WebhookPayload`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WebhookEnvironment {
    #[schema(value_type = String)]
    pub id: EnvironmentId,
    pub name: String,
}

/// The job of a `job.*` [`WebhookPayload`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WebhookJob {
    #[schema(value_type = String)]
    pub id: JobId,
    #[schema(value_type = String)]
    pub release_id: ReleaseId,
    /// The release's name.
    pub release: String,
    /// The job this one rolls back, for a rollback job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub rollback_of: Option<JobId>,
}

/// The promotion of an `approval.requested` [`WebhookPayload`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WebhookPromotion {
    #[schema(value_type = String)]
    pub id: PromotionId,
    #[schema(value_type = String)]
    pub release_id: ReleaseId,
    pub release: String,
    pub requested_by: String,
}
