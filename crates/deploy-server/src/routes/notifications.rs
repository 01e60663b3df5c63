//! Webhook subscriptions (`/notifications`, admin: deployd POSTs wherever they point) and the delivery log (`/notifications/deliveries`, deployer: no URL in it).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use deploy_api::{
    CreateSubscriptionRequest, Delivery, DeliveryAttempt, DeliveryDetail, DeliveryList, Role,
    Subscription, SubscriptionList,
};
use deploy_core::{EnvironmentId, HttpUrl, JobId, NotificationEvent, Secret, SubscriptionId};
use deploy_engine::random_bytes;
use deploy_store::{
    DeliveryFilter, NotificationAttempt, NotificationDelivery, NotificationStatus,
    NotificationSubscription, StoreError,
};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::authorize;
use crate::body::ApiJson;
use crate::errors::ServerError;
use crate::openapi::ProblemResponses;
use crate::params::{self, parse_id};
use crate::resolve::{self, Source};
use crate::state::ServerState;

type ApiResult<T> = Result<T, ServerError>;

/// Most subscriptions of one environment (each one is a write per event in the job's
/// transaction).
const MAX_SUBSCRIPTIONS_PER_ENVIRONMENT: u32 = 20;

/// The environment's name, or its id when it is gone.
async fn environment_name(state: &ServerState, id: EnvironmentId) -> ApiResult<String> {
    match state.store().get_environment(id).await {
        Ok(e) => Ok(e.name.to_string()),
        Err(StoreError::NotFound { .. }) => Ok(id.to_string()),
        Err(e) => Err(e.into()),
    }
}

async fn view(state: &ServerState, s: NotificationSubscription) -> ApiResult<Subscription> {
    let name = environment_name(state, s.environment_id).await?;
    view_named(s, name)
}

/// A subscription as shown, in the environment named `environment`.
fn view_named(s: NotificationSubscription, environment: String) -> ApiResult<Subscription> {
    let url = HttpUrl::parse(&s.url).map_err(|e| {
        ServerError::Store(StoreError::Corrupt {
            column: "notification_subscriptions.url",
            value: s.url.clone(),
            reason: e.to_string(),
        })
    })?;
    Ok(Subscription {
        id: s.id,
        environment_id: s.environment_id,
        environment,
        url,
        events: s.events,
        created_at: s.created_at,
        created_by: s.created_by,
        signing_secret: None,
    })
}

/// A fresh signing key and its sealed form for subscription `id`.
fn new_key(state: &ServerState, id: SubscriptionId) -> ApiResult<(Secret, String, String)> {
    let keys = state.secret_keys().ok_or_else(|| {
        ServerError::Unavailable(
            "webhook signing keys are sealed with the application secrets key, which this \
             server was started without"
                .to_owned(),
        )
    })?;
    let internal = |e: crate::app_secrets::SecretKeyError| ServerError::Unavailable(e.to_string());
    let key = crate::notify::keys::generate().map_err(internal)?;
    let (key_id, sealed) = crate::notify::keys::seal(keys, id, &key).map_err(internal)?;
    Ok((key, key_id, sealed))
}

/// The events of a request: at least one, each once, in the documented order.
fn events(requested: &[NotificationEvent]) -> ApiResult<Vec<NotificationEvent>> {
    if requested.is_empty() {
        return Err(ServerError::unprocessable(
            format!(
                "events is empty; expected at least one of {}",
                NotificationEvent::known()
            ),
            Some("events"),
        ));
    }
    Ok(NotificationEvent::ALL
        .into_iter()
        .filter(|e| requested.contains(e))
        .collect())
}

#[utoipa::path(post, path = "/notifications", tag = "notifications", security(("bearer" = [])), request_body = CreateSubscriptionRequest, responses((status = 201, description = "subscribed (admin); `signing_secret` is shown in this answer only", body = Subscription), ProblemResponses))]
pub(crate) async fn create_subscription(
    State(state): State<ServerState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateSubscriptionRequest>,
) -> ApiResult<(StatusCode, Json<Subscription>)> {
    let caller = authorize(&state, &headers, Role::Admin).await?;
    let environment =
        resolve::environment(&state, &req.environment, Source::Field("environment")).await?;
    let events = events(&req.events)?;
    let now = state.now();
    let id = SubscriptionId::from_parts(now, random_bytes());
    let (key, key_id, sealed_key) = new_key(&state, id)?;
    let subscription = NotificationSubscription {
        id,
        environment_id: environment.id,
        url: req.url.as_str().to_owned(),
        events,
        key_id,
        sealed_key,
        created_at: now,
        created_by: caller.name,
        deleted_at: None,
    };
    if !state
        .store()
        .put_notification_subscription(&subscription, MAX_SUBSCRIPTIONS_PER_ENVIRONMENT)
        .await?
    {
        return Err(ServerError::unprocessable(
            format!(
                "environment `{}` has {MAX_SUBSCRIPTIONS_PER_ENVIRONMENT} subscriptions; expected \
                 at most {MAX_SUBSCRIPTIONS_PER_ENVIRONMENT} (remove one first)",
                environment.name
            ),
            Some("environment"),
        ));
    }
    let mut shown = view_named(subscription, environment.name.to_string())?;
    shown.signing_secret = Some(key.expose().to_owned());
    Ok((StatusCode::CREATED, Json(shown)))
}

#[utoipa::path(post, path = "/notifications/{id}/rotate-key", tag = "notifications", security(("bearer" = [])), params(("id" = String, Path, description = "subscription id")), responses((status = 200, description = "a new signing key replaced the old one at once (admin); `signing_secret` is shown in this answer only", body = Subscription), ProblemResponses))]
pub(crate) async fn rotate_key(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Subscription>> {
    authorize(&state, &headers, Role::Admin).await?;
    let id = parse_id("subscription", &id, SubscriptionId::parse)?;
    let gone = || ServerError::NotFound(format!("notification subscription `{id}` does not exist"));
    let current = state
        .store()
        .get_notification_subscription(id)
        .await?
        .filter(|s| s.deleted_at.is_none())
        .ok_or_else(gone)?;
    let (key, key_id, sealed_key) = new_key(&state, id)?;
    if !state
        .store()
        .replace_notification_key(id, None, &key_id, &sealed_key)
        .await?
    {
        return Err(gone());
    }
    let mut shown = view(
        &state,
        NotificationSubscription {
            key_id,
            sealed_key,
            ..current
        },
    )
    .await?;
    shown.signing_secret = Some(key.expose().to_owned());
    Ok(Json(shown))
}

/// The query of `GET /notifications`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct SubscriptionQuery {
    /// Only the subscriptions of this environment (id or name).
    environment: Option<String>,
}

#[utoipa::path(get, path = "/notifications", tag = "notifications", security(("bearer" = [])), params(SubscriptionQuery), responses((status = 200, description = "the live subscriptions, oldest first (admin: URLs may carry a receiver's token)", body = SubscriptionList), ProblemResponses))]
pub(crate) async fn list_subscriptions(
    State(state): State<ServerState>,
    headers: HeaderMap,
    query: Result<Query<SubscriptionQuery>, QueryRejection>,
) -> ApiResult<Json<SubscriptionList>> {
    authorize(&state, &headers, Role::Admin).await?;
    let query = params::query(query)?;
    let environment = resolve::environment_filter(&state, query.environment.as_deref()).await?;
    // Each environment's name is read once, however many subscriptions it has.
    let mut names = std::collections::HashMap::new();
    let mut subscriptions = Vec::new();
    for s in state
        .store()
        .list_notification_subscriptions(environment)
        .await?
    {
        let name = match names.get(&s.environment_id) {
            Some(n) => String::clone(n),
            None => {
                let n = environment_name(&state, s.environment_id).await?;
                names.insert(s.environment_id, n.clone());
                n
            }
        };
        subscriptions.push(view_named(s, name)?);
    }
    Ok(Json(SubscriptionList { subscriptions }))
}

#[utoipa::path(delete, path = "/notifications/{id}", tag = "notifications", security(("bearer" = [])), params(("id" = String, Path, description = "subscription id")), responses((status = 204, description = "removed (admin); its pending deliveries are given up, its log stays"), ProblemResponses))]
pub(crate) async fn remove_subscription(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    authorize(&state, &headers, Role::Admin).await?;
    let id = parse_id("subscription", &id, SubscriptionId::parse)?;
    if state
        .store()
        .remove_notification_subscription(id, state.now())
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ServerError::NotFound(format!(
            "notification subscription `{id}` does not exist"
        )))
    }
}

fn delivery(d: NotificationDelivery) -> Delivery {
    Delivery {
        id: d.id,
        seq: d.seq,
        subscription_id: d.subscription_id,
        environment_id: d.environment_id,
        event: d.event,
        job_id: d.job_id,
        promotion_id: d.promotion_id,
        status: d.status.as_str().to_owned(),
        attempts: d.attempts,
        occurred_at: d.occurred_at,
        next_attempt_at: (d.status == NotificationStatus::Pending).then_some(d.next_attempt_at),
        finished_at: d.finished_at,
        last_error: d.last_error,
    }
}

fn attempt(a: NotificationAttempt) -> DeliveryAttempt {
    DeliveryAttempt {
        n: a.n,
        at: a.at,
        duration_ms: a.duration_ms,
        http_status: a.http_status,
        error: a.error,
    }
}

/// The query of `GET /notifications/deliveries`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeliveryQuery {
    /// Only the deliveries of this subscription (id).
    subscription: Option<String>,
    /// Only the deliveries of this environment (id or name).
    environment: Option<String>,
    /// Only the deliveries about this job (id).
    job: Option<String>,
    /// Only deliveries older than this `seq` (the `next_before` of the previous page).
    before: Option<u64>,
    /// Page size, 1 to the server's maximum.
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/notifications/deliveries", tag = "notifications", security(("bearer" = [])), params(DeliveryQuery), responses((status = 200, description = "the delivery log, newest first (deployer)", body = DeliveryList), ProblemResponses))]
pub(crate) async fn list_deliveries(
    State(state): State<ServerState>,
    headers: HeaderMap,
    query: Result<Query<DeliveryQuery>, QueryRejection>,
) -> ApiResult<Json<DeliveryList>> {
    authorize(&state, &headers, Role::Deployer).await?;
    let query = params::query(query)?;
    let limit = params::page_size(&state, query.limit)?;
    let filter = DeliveryFilter {
        subscription: query
            .subscription
            .as_deref()
            .map(|s| parse_id("subscription", s, SubscriptionId::parse))
            .transpose()?,
        environment: resolve::environment_filter(&state, query.environment.as_deref()).await?,
        job: query
            .job
            .as_deref()
            .map(|j| parse_id("job", j, JobId::parse))
            .transpose()?,
        before: query.before,
    };
    let found = state
        .store()
        .list_notification_deliveries(&filter, limit)
        .await?;
    let next_before = params::next_before(&found, limit, |d| d.seq);
    Ok(Json(DeliveryList {
        deliveries: found.into_iter().map(delivery).collect(),
        next_before,
    }))
}

#[utoipa::path(get, path = "/notifications/deliveries/{id}", tag = "notifications", security(("bearer" = [])), params(("id" = String, Path, description = "delivery id (the X-Deploy-Delivery header)")), responses((status = 200, description = "a delivery and every attempt: HTTP status or error, time (deployer)", body = DeliveryDetail), ProblemResponses))]
pub(crate) async fn get_delivery(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<DeliveryDetail>> {
    authorize(&state, &headers, Role::Deployer).await?;
    let id = parse_id("delivery", &id, uuid::Uuid::try_parse)?;
    let found = state
        .store()
        .get_notification_delivery(id)
        .await?
        .ok_or_else(|| ServerError::NotFound(format!("delivery `{id}` does not exist")))?;
    let attempts = state.store().notification_attempts(id).await?;
    Ok(Json(DeliveryDetail {
        delivery: delivery(found),
        attempts: attempts.into_iter().map(attempt).collect(),
    }))
}
