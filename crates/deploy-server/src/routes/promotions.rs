//! Promotion routes: request (the pipeline is checked), list, read, approve (`Engine::approve_and_create_job`: the approval that completes the environment's policy creates the job), reject with a reason.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use deploy_api::{
    ApprovePromotionRequest, ApprovePromotionResponse, CreatePromotionRequest, PromotionList,
    RejectPromotionRequest, Role,
};
use deploy_core::{IdempotencyKey, Promotion, PromotionId, PromotionStatus};
use deploy_engine::{Approval, JobRequest, random_bytes};
use deploy_store::StoreError;

use crate::auth::{Caller, authorize};
use crate::body::{ApiJson, OptionalJson};
use crate::errors::ServerError;
use crate::openapi::ProblemResponses;
use crate::params::{self, FilterQuery, parse_id};
use crate::resolve::{self, Source};
use crate::state::ServerState;

type ApiResult<T> = Result<T, ServerError>;

/// Longest rejection reason kept.
const MAX_REASON_CHARS: usize = 1_000;

#[utoipa::path(post, path = "/promotions", tag = "promotions", security(("bearer" = [])), request_body = CreatePromotionRequest, responses((status = 201, description = "requested (deployer); refused with 409 when the environment's pipeline requires environments the release has not completed in", body = deploy_api::schema::Promotion), ProblemResponses))]
pub(crate) async fn create_promotion(
    State(state): State<ServerState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreatePromotionRequest>,
) -> ApiResult<(StatusCode, Json<Promotion>)> {
    let caller = authorize(&state, &headers, Role::Deployer).await?;
    let release = resolve::release(&state, &req.release, Source::Field("release")).await?;
    let environment =
        resolve::environment(&state, &req.environment, Source::Field("environment")).await?;
    state
        .engine()
        .check_promotable(&release, &environment)
        .await?;
    deploy_engine::check_release_for_environment(&release, &environment)
        .map_err(ServerError::template)?;
    let now = state.now();
    let promotion = Promotion {
        id: PromotionId::from_parts(now, random_bytes()),
        release_id: release.id,
        environment_id: environment.id,
        status: PromotionStatus::Requested,
        requested_by: caller.name.clone(),
        requested_by_token: Some(caller.token_id),
        decided_by: None,
        requested_at: now,
        decided_at: None,
        approvals: Vec::new(),
        rejection_reason: None,
        version: 0,
    };
    // `approval.requested` is raised only for a request that waits for someone else:
    // one its requester may approve alone (`deployctl deploy` does at once) pings nobody.
    let mut alone = promotion.clone();
    let requester_suffices = matches!(
        alone.approve(caller.approver(), environment.approval.as_ref(), now),
        Ok(deploy_core::ApprovalOutcome::Approved)
    );
    if requester_suffices {
        state.store().put_promotion(&promotion).await?;
    } else {
        state
            .store()
            .put_promotion_awaiting_approval(&promotion)
            .await?;
    }
    Ok((StatusCode::CREATED, Json(promotion)))
}

#[utoipa::path(get, path = "/promotions/{id}", tag = "promotions", security(("bearer" = [])), params(("id" = String, Path, description = "promotion id")), responses((status = 200, description = "the promotion", body = deploy_api::schema::Promotion), ProblemResponses))]
pub(crate) async fn get_promotion(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Promotion>> {
    authorize(&state, &headers, Role::Viewer).await?;
    let id = parse_id("promotion", &id, PromotionId::parse)?;
    Ok(Json(state.store().get_promotion(id).await?))
}

/// A promotion status of a query.
fn promotion_status(s: &str) -> ApiResult<PromotionStatus> {
    [
        PromotionStatus::Requested,
        PromotionStatus::Approved,
        PromotionStatus::Rejected,
    ]
    .into_iter()
    .find(|k| k.as_str() == s)
    .ok_or_else(|| {
        ServerError::bad_request(
            format!("promotion status `{s}` is unknown; expected requested, approved or rejected"),
            Some("status"),
        )
    })
}

/// Promotions newest first, by environment and status (`requested`, `approved` or
/// `rejected`): the approval queue is `?status=requested`.
#[utoipa::path(get, path = "/promotions", tag = "promotions", security(("bearer" = [])), params(FilterQuery), responses((status = 200, description = "a page of promotions, newest first", body = PromotionList), ProblemResponses))]
pub(crate) async fn list_promotions(
    State(state): State<ServerState>,
    headers: HeaderMap,
    query: Result<Query<FilterQuery>, QueryRejection>,
) -> ApiResult<Json<PromotionList>> {
    authorize(&state, &headers, Role::Viewer).await?;
    let f = params::filter(
        &state,
        query,
        promotion_status,
        "promotion",
        PromotionId::parse,
    )
    .await?;
    let promotions = state
        .store()
        .list_promotions(f.environment, f.status, f.before, f.limit)
        .await?;
    let next_before = params::next_before(&promotions, f.limit, |p| p.id);
    Ok(Json(PromotionList {
        promotions,
        next_before,
    }))
}

/// The job request of an approval: the body's settings over the engine's defaults.
fn job_request(id: PromotionId, req: ApprovePromotionRequest) -> ApiResult<JobRequest> {
    let key = IdempotencyKey::parse(&format!("promotion-{id}"))
        .map_err(|e| ServerError::unprocessable(e.to_string(), None))?;
    let mut request = JobRequest::new(id, key);
    if let Some(n) = req.max_attempts {
        request.max_attempts = n;
    }
    if let Some(s) = req.strategy {
        request.strategy = s;
    }
    if let Some(p) = req.parallelism {
        request.parallelism = p;
    }
    if let Some(f) = req.failure_policy {
        request.failure_policy = f;
    }
    request.template = req.template;
    request.queue = req.queue;
    Ok(request)
}

/// Adds the caller's approval under the environment's policy. The approval that
/// completes the count creates the job (with this request's settings), which
/// `Engine::serve` runs; before it, the answer is 202 with the approvals missing.
/// Approving an approved promotion again returns its job (idempotent by key).
#[utoipa::path(post, path = "/promotions/{id}/approve", tag = "promotions", security(("bearer" = [])), params(("id" = String, Path, description = "promotion id")), request_body(content = Option<ApprovePromotionRequest>, description = "optional job settings, used by the approval that completes the count"), responses((status = 201, description = "approved; the job was created (deployer, under the environment's policy)", body = ApprovePromotionResponse), (status = 202, description = "approval recorded; more are needed", body = ApprovePromotionResponse), (status = 200, description = "already approved; its job", body = ApprovePromotionResponse), ProblemResponses))]
pub(crate) async fn approve_promotion(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<ApprovePromotionRequest>,
) -> ApiResult<(StatusCode, Json<ApprovePromotionResponse>)> {
    let caller = authorize(&state, &headers, Role::Deployer).await?;
    let id = parse_id("promotion", &id, PromotionId::parse)?;
    let (status, response) = approve(&state, &caller, id, req).await?;
    Ok((status, Json(response)))
}

/// Adds `caller`'s approval to promotion `id` (the engine applies the environment's
/// policy); the answer's status and body. Shared by the API and the console.
pub(crate) async fn approve(
    state: &ServerState,
    caller: &Caller,
    id: PromotionId,
    req: ApprovePromotionRequest,
) -> ApiResult<(StatusCode, ApprovePromotionResponse)> {
    let request = job_request(id, req)?;
    let approval = state
        .engine()
        .approve_and_create_job(&request, caller.approver(), state.now())
        .await?;
    Ok(match approval {
        Approval::Pending { promotion, missing } => {
            tracing::info!(promotion = %id, by = caller.name, missing, "approval recorded");
            (
                StatusCode::ACCEPTED,
                ApprovePromotionResponse {
                    promotion,
                    job: None,
                    missing_approvals: missing,
                },
            )
        }
        Approval::Job { promotion, job } => {
            tracing::info!(promotion = %id, job = %job.value.id, by = caller.name, "promotion approved");
            let status = if job.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (
                status,
                ApprovePromotionResponse {
                    promotion,
                    job: Some(job.value),
                    missing_approvals: 0,
                },
            )
        }
    })
}

#[utoipa::path(post, path = "/promotions/{id}/reject", tag = "promotions", security(("bearer" = [])), params(("id" = String, Path, description = "promotion id")), request_body(content = Option<RejectPromotionRequest>, description = "optional reason"), responses((status = 200, description = "rejected (deployer)", body = deploy_api::schema::Promotion), ProblemResponses))]
pub(crate) async fn reject_promotion(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<RejectPromotionRequest>,
) -> ApiResult<Json<Promotion>> {
    let caller = authorize(&state, &headers, Role::Deployer).await?;
    let id = parse_id("promotion", &id, PromotionId::parse)?;
    Ok(Json(reject(&state, &caller, id, req.reason).await?))
}

/// Rejects promotion `id` as `caller`, with `reason` (trimmed; empty is none).
/// Shared by the API and the console.
pub(crate) async fn reject(
    state: &ServerState,
    caller: &Caller,
    id: PromotionId,
    reason: Option<String>,
) -> ApiResult<Promotion> {
    let reason = reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    if let Some(r) = &reason
        && (r.chars().count() > MAX_REASON_CHARS || r.chars().any(|c| c.is_control() && c != '\n'))
    {
        return Err(ServerError::unprocessable(
            format!(
                "the reason is {} characters or holds control characters; expected at most {MAX_REASON_CHARS} printable characters",
                r.chars().count()
            ),
            Some("reason"),
        ));
    }
    let mut promotion = state.store().get_promotion(id).await?;
    promotion
        .reject(&caller.name, reason, state.now())
        .map_err(StoreError::from)?;
    let promotion = state.store().save_promotion(&promotion).await.map_err(|e| match e {
        StoreError::Conflict { .. } => ServerError::Conflict(format!(
            "promotion `{id}` changed while it was rejected (an approval or a decision landed); read it and decide again"
        )),
        other => other.into(),
    })?;
    Ok(promotion)
}
