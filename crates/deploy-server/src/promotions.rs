//! Promotion routes: request (the pipeline is checked), list, read, approve under the environment's policy (the approval that completes it creates the job), reject with a reason.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use deploy_api::{
    ApprovePromotionRequest, ApprovePromotionResponse, CreatePromotionRequest, PromotionList,
    RejectPromotionRequest, Role,
};
use deploy_core::{
    ApprovalOutcome, ApprovalRefused, Environment, IdempotencyKey, Promotion, PromotionId,
    PromotionStatus, Release,
};
use deploy_engine::{JobRequest, random_bytes};
use deploy_store::StoreError;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::authorize;
use crate::body::{ApiJson, OptionalJson};
use crate::errors::ServerError;
use crate::handlers::{page_size, parse_id};
use crate::openapi::ProblemResponses;
use crate::resolve::{self, Source};
use crate::state::ServerState;

type ApiResult<T> = Result<T, ServerError>;

/// Longest rejection reason kept.
const MAX_REASON_CHARS: usize = 1_000;

/// An archived release is no longer promoted, whenever it was requested.
fn refuse_archived(release: &Release) -> ApiResult<()> {
    match release.archived_at {
        Some(_) => Err(ServerError::Conflict(format!(
            "release `{}` is archived; it can no longer be promoted",
            release.name
        ))),
        None => Ok(()),
    }
}

/// The pipeline rule: `release` must have completed in every environment `environment`
/// requires. The refusal names each one missing.
async fn check_pipeline(
    state: &ServerState,
    release: &Release,
    environment: &Environment,
) -> ApiResult<()> {
    let mut missing = Vec::new();
    for required in &environment.requires {
        if !state
            .store()
            .release_completed_in(release.id, *required)
            .await?
        {
            let name = match state.store().get_environment(*required).await {
                Ok(e) => e.name.as_str().to_owned(),
                Err(_) => required.to_string(),
            };
            missing.push(format!("`{name}`"));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(ServerError::Conflict(format!(
        "release `{}` has not completed in {} yet; environment `{}` requires it first (its pipeline)",
        release.name,
        missing.join(", "),
        environment.name
    )))
}

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
    refuse_archived(&release)?;
    check_pipeline(&state, &release, &environment).await?;
    deploy_engine::check_release_for_environment(&release, &environment)
        .map_err(ServerError::template)?;
    let now = state.now();
    let promotion = Promotion {
        id: PromotionId::from_parts(now, random_bytes()),
        release_id: release.id,
        environment_id: environment.id,
        status: PromotionStatus::Requested,
        requested_by: caller.name,
        requested_by_token: Some(caller.token_id),
        decided_by: None,
        requested_at: now,
        decided_at: None,
        approvals: Vec::new(),
        rejection_reason: None,
        version: 0,
    };
    state.store().put_promotion(&promotion).await?;
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PromotionsQuery {
    /// Only promotions to this environment (id or name).
    environment: Option<String>,
    /// `requested`, `approved` or `rejected`.
    status: Option<String>,
    /// Only promotions older than this id (the `next_before` of the previous page).
    before: Option<String>,
    /// Page size, 1 to the server's maximum.
    limit: Option<u32>,
}

/// Promotions newest first: the approval queue is `?status=requested`.
#[utoipa::path(get, path = "/promotions", tag = "promotions", security(("bearer" = [])), params(PromotionsQuery), responses((status = 200, description = "a page of promotions, newest first", body = PromotionList), ProblemResponses))]
pub(crate) async fn list_promotions(
    State(state): State<ServerState>,
    headers: HeaderMap,
    query: Result<Query<PromotionsQuery>, QueryRejection>,
) -> ApiResult<Json<PromotionList>> {
    authorize(&state, &headers, Role::Viewer).await?;
    let Query(query) = query.map_err(|e| ServerError::bad_request(e.body_text(), None))?;
    let limit = page_size(&state, query.limit)?;
    let environment = match query.environment.as_deref() {
        Some(e) => Some(
            resolve::environment(&state, e, Source::Field("environment"))
                .await?
                .id,
        ),
        None => None,
    };
    let status = query
        .status
        .as_deref()
        .map(|s| {
            [
                PromotionStatus::Requested,
                PromotionStatus::Approved,
                PromotionStatus::Rejected,
            ]
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                ServerError::bad_request(
                    format!(
                        "promotion status `{s}` is unknown; expected requested, approved or rejected"
                    ),
                    Some("status"),
                )
            })
        })
        .transpose()?;
    let before = query
        .before
        .as_deref()
        .map(|b| {
            PromotionId::parse(b).map_err(|e| {
                ServerError::bad_request(
                    format!("promotion id `{b}` is invalid: {e}"),
                    Some("before"),
                )
            })
        })
        .transpose()?;
    let promotions = state
        .store()
        .list_promotions(environment, status, before, limit)
        .await?;
    let full = u32::try_from(promotions.len()).is_ok_and(|n| n == limit);
    let next_before = if full {
        promotions.last().map(|p| p.id)
    } else {
        None
    };
    Ok(Json(PromotionList {
        promotions,
        next_before,
    }))
}

fn refused(e: ApprovalRefused) -> ServerError {
    match e {
        ApprovalRefused::AlreadyDecided { .. } | ApprovalRefused::AlreadyApprovedBy { .. } => {
            ServerError::Conflict(e.to_string())
        }
        ApprovalRefused::SelfApproval { .. } | ApprovalRefused::NotAnApprover { .. } => {
            ServerError::ApprovalForbidden(e.to_string())
        }
    }
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
    let request = job_request(id, req)?;
    // A request the engine would refuse (bad max_attempts, a template or a service
    // definition a target cannot apply, a strategy the targets cannot carry) is refused
    // before the approval is recorded, so the promotion stays as it was.
    request.check()?;
    let mut promotion = state.store().get_promotion(id).await?;
    let environment = state
        .store()
        .get_environment(promotion.environment_id)
        .await?;
    let release = state.store().get_release(promotion.release_id).await?;
    if promotion.status != PromotionStatus::Rejected {
        refuse_archived(&release)?;
        check_pipeline(&state, &release, &environment).await?;
    }
    match promotion.status {
        PromotionStatus::Requested => {
            state.engine().check_job(&request).await?;
            let outcome = promotion
                .approve(
                    caller.approver(),
                    environment.approval.as_ref(),
                    state.now(),
                )
                .map_err(refused)?;
            // The approval that completes the count must be able to create its job:
            // for a busy environment (without `queue`) it is refused, not recorded, so
            // a promotion is never left approved without a job.
            if outcome == ApprovalOutcome::Approved
                && !request.queue
                && let Some(job) = state.store().last_in_line(environment.id).await?
            {
                return Err(StoreError::EnvironmentLocked {
                    environment: environment.id,
                    job,
                }
                .into());
            }
            promotion = state.store().save_promotion(&promotion).await.map_err(|e| match e {
                StoreError::Conflict { .. } => ServerError::Conflict(format!(
                    "promotion `{id}` changed while this approval was recorded (another approval or a decision); read it and approve again"
                )),
                other => other.into(),
            })?;
            if let ApprovalOutcome::Pending { missing } = outcome {
                tracing::info!(promotion = %id, by = caller.name, missing, "approval recorded");
                return Ok((
                    StatusCode::ACCEPTED,
                    Json(ApprovePromotionResponse {
                        promotion,
                        job: None,
                        missing_approvals: missing,
                    }),
                ));
            }
        }
        // Approved already: the answer is its job. When that job could not be created
        // (the environment was taken in between), creating it now, with this request's
        // settings, is for someone the policy in force admits as an approver.
        PromotionStatus::Approved => {
            if let Some(policy) = &environment.approval {
                policy.admits(caller.approver()).map_err(refused)?;
            }
        }
        PromotionStatus::Rejected => {}
    }
    let created = state.engine().create_job(&request).await?;
    tracing::info!(promotion = %id, job = %created.value.id, by = caller.name, "promotion approved");
    let status = if created.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(ApprovePromotionResponse {
            promotion,
            job: Some(created.value),
            missing_approvals: 0,
        }),
    ))
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
    let reason = req
        .reason
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
    Ok(Json(promotion))
}
