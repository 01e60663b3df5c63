//! Job routes: list (by environment and status, paged), read, cancel and roll back a job.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use deploy_api::{JobList, JobListItem, Role, RollbackRequest};
use deploy_core::{DeploymentJob, JobId, JobStatus};

use crate::auth::authorize;
use crate::body::ApiJson;
use crate::errors::ServerError;
use crate::openapi::ProblemResponses;
use crate::params::{self, FilterQuery, parse_id};
use crate::request_id::RequestId;
use crate::state::ServerState;

type ApiResult<T> = Result<T, ServerError>;

/// A job status of a query.
pub(crate) fn job_status(s: &str) -> ApiResult<JobStatus> {
    JobStatus::parse(s).ok_or_else(|| {
        let known: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
        ServerError::bad_request(
            format!(
                "job status `{s}` is unknown; expected one of {}",
                known.join(", ")
            ),
            Some("status"),
        )
    })
}

/// Jobs newest first, filtered by environment and status, paged by `before` (a job id).
#[utoipa::path(get, path = "/jobs", tag = "jobs", security(("bearer" = [])), params(FilterQuery), responses((status = 200, description = "a page of jobs, newest first", body = JobList), ProblemResponses))]
pub(crate) async fn list_jobs(
    State(state): State<ServerState>,
    headers: HeaderMap,
    query: Result<Query<FilterQuery>, QueryRejection>,
) -> ApiResult<Json<JobList>> {
    authorize(&state, &headers, Role::Viewer).await?;
    let f = params::filter(&state, query, job_status, "job", JobId::parse).await?;
    let jobs = state
        .store()
        .list_jobs(f.environment, f.status, f.before, f.limit)
        .await?;
    let next_before = params::next_before(&jobs, f.limit, |j| j.id);
    let jobs = jobs.into_iter().map(JobListItem::from).collect();
    Ok(Json(JobList { jobs, next_before }))
}

#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs", security(("bearer" = [])), params(("id" = String, Path, description = "job id")), responses((status = 200, description = "the job with its tasks and artifacts", body = deploy_api::schema::DeploymentJob), ProblemResponses))]
pub(crate) async fn get_job(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<DeploymentJob>> {
    authorize(&state, &headers, Role::Viewer).await?;
    let id = parse_id("job", &id, JobId::parse)?;
    Ok(Json(state.store().get_job(id).await?))
}

#[utoipa::path(post, path = "/jobs/{id}/cancel", tag = "jobs", security(("bearer" = [])), params(("id" = String, Path, description = "job id")), responses((status = 200, description = "cancelled (deployer)", body = deploy_api::schema::DeploymentJob), ProblemResponses))]
pub(crate) async fn cancel_job(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Extension(request): Extension<RequestId>,
    Path(id): Path<String>,
) -> ApiResult<Json<DeploymentJob>> {
    let caller = authorize(&state, &headers, Role::Deployer).await?;
    let id = parse_id("job", &id, JobId::parse)?;
    let by = request.attribute(&caller.name);
    Ok(Json(state.engine().cancel_job(id, &by).await?))
}

#[utoipa::path(post, path = "/jobs/{id}/rollback", tag = "jobs", security(("bearer" = [])), params(("id" = String, Path, description = "job id")), request_body = RollbackRequest, responses((status = 200, description = "rolling back (deployer)", body = deploy_api::schema::DeploymentJob), ProblemResponses))]
pub(crate) async fn rollback_job(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Extension(request): Extension<RequestId>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<RollbackRequest>,
) -> ApiResult<Json<DeploymentJob>> {
    let caller = authorize(&state, &headers, Role::Deployer).await?;
    let id = parse_id("job", &id, JobId::parse)?;
    Ok(Json(
        rollback(&state, id, &req.reason, &caller.name, &request).await?,
    ))
}

/// Longest rollback reason (it is written into a job event's cause).
const MAX_REASON_CHARS: usize = 1_000;

/// Rolls job `id` back by hand for `by` in `request` (the API's and the console's
/// rollback): the rollback job, whose end settles the original.
pub(crate) async fn rollback(
    state: &ServerState,
    id: JobId,
    reason: &str,
    by: &str,
    request: &RequestId,
) -> ApiResult<DeploymentJob> {
    let reason = reason.trim();
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(ServerError::unprocessable(
            format!(
                "the rollback reason is {} characters long; at most {MAX_REASON_CHARS} are kept in the job's events",
                reason.chars().count()
            ),
            Some("reason"),
        ));
    }
    state.store().get_job(id).await?;
    let reason = request.attribute(&format!("{reason} (by {by})"));
    Ok(state.engine().rollback(id, &reason).await?)
}
