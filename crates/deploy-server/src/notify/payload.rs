//! The body of a delivery: the event, its environment, and the job or promotion it is about, as `deploy_api::WebhookPayload`.

use deploy_api::{WebhookEnvironment, WebhookJob, WebhookPayload, WebhookPromotion};
use deploy_store::{NotificationDelivery, Store, StoreError};

/// The JSON body of `delivery`, read from the store. Built once, at the first attempt:
/// the store keeps it, and every retry sends the same bytes (a rename in between does
/// not change what a receiver that dedups by delivery id saw).
pub(super) async fn body(
    store: &dyn Store,
    delivery: &NotificationDelivery,
) -> Result<String, StoreError> {
    let environment = match store.get_environment(delivery.environment_id).await {
        Ok(e) => e.name.to_string(),
        Err(StoreError::NotFound { .. }) => delivery.environment_id.to_string(),
        Err(e) => return Err(e),
    };
    let job = match delivery.job_id {
        Some(id) => {
            let summary = store.get_job_summary(id).await?;
            Some(WebhookJob {
                id,
                release_id: summary.release_id,
                release: summary.release_name.unwrap_or_default(),
                rollback_of: summary.rollback_of,
            })
        }
        None => None,
    };
    let promotion = match delivery.promotion_id {
        Some(id) => {
            let p = store.get_promotion(id).await?;
            let release = store.get_release(p.release_id).await?;
            Some(WebhookPromotion {
                id,
                release_id: p.release_id,
                release: release.name.to_string(),
                requested_by: p.requested_by,
            })
        }
        None => None,
    };
    let payload = WebhookPayload {
        id: delivery.id,
        event: delivery.event,
        occurred_at: delivery.occurred_at,
        environment: WebhookEnvironment {
            id: delivery.environment_id,
            name: environment,
        },
        job,
        promotion,
        detail: delivery.detail.clone(),
    };
    serde_json::to_string(&payload).map_err(|e| StoreError::Corrupt {
        column: "notification_deliveries",
        value: delivery.id.to_string(),
        reason: format!("cannot encode the webhook body: {e}"),
    })
}
