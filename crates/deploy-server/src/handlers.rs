//! The route handlers: each authorizes, validates, calls the store or the engine, and answers JSON.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use deploy_api::{
    ArtifactSummary, CreateReleaseRequest, CreateTokenRequest, HealthResponse, JobList,
    JobListItem, LogChunkDto, LogPage, Role, RollbackRequest,
};
use deploy_core::{
    ArtifactKind, Component, ComponentId, DeploymentJob, DeploymentTask, JobId, JobStatus, Release,
    ReleaseId, ServiceTemplate, TargetId, TaskId,
};
use deploy_engine::random_bytes;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::authorize;
use crate::body::ApiJson;
use crate::errors::ServerError;
use crate::openapi::ProblemResponses;
use crate::state::ServerState;

type ApiResult<T> = Result<T, ServerError>;

/// Parses a path id, naming it on error.
pub(crate) fn parse_id<T, E: std::fmt::Display>(
    what: &str,
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> ApiResult<T> {
    parse(value).map_err(|e| {
        ServerError::bad_request(format!("{what} id `{value}` is invalid: {e}"), Some("id"))
    })
}

/// A model field path as a path in the request body (`release.components.name` -> `components.name`).
pub(crate) fn body_field<'a>(field: &'a str, entity: &str) -> &'a str {
    field.strip_prefix(entity).unwrap_or(field)
}

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "the process is up", body = HealthResponse)))]
pub(crate) async fn healthz() -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".to_owned(),
    })
}

#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, description = "the database answers", body = HealthResponse), (status = 503, description = "the database does not answer", body = HealthResponse)))]
pub(crate) async fn readyz(State(state): State<ServerState>) -> Response {
    // A read that touches the database; migrations ran when the store was opened.
    match state
        .store()
        .find_api_token(&crate::tokens::hash_token("readiness probe"))
        .await
    {
        Ok(_) => Json(HealthResponse {
            status: "ready".to_owned(),
        })
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(HealthResponse {
                    status: "database unreachable".to_owned(),
                }),
            )
                .into_response()
        }
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain; version=0.0.4")))]
pub(crate) async fn metrics(State(state): State<ServerState>) -> Response {
    let mut text = state.metrics().render();
    // One aggregate query: no job is loaded, however many there are.
    match state.store().count_jobs_by_status().await {
        Ok(counts) => {
            text.push_str("# HELP deployd_active_jobs Jobs in each active status.\n");
            text.push_str("# TYPE deployd_active_jobs gauge\n");
            for status in JobStatus::ALL.into_iter().filter(|s| s.is_active()) {
                let n = counts
                    .iter()
                    .find(|(s, _)| *s == status)
                    .map_or(0, |(_, n)| *n);
                text.push_str(&format!(
                    "deployd_active_jobs{{status=\"{}\"}} {n}\n",
                    status.as_str()
                ));
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot count active jobs for /metrics"),
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        text,
    )
        .into_response()
}

pub(crate) async fn not_found() -> ServerError {
    ServerError::NotFound("no such route".to_owned())
}

/// A known path with a method it does not serve.
pub(crate) async fn method_not_allowed(method: axum::http::Method) -> ServerError {
    ServerError::MethodNotAllowed(format!("method {method} is not allowed on this route"))
}

#[utoipa::path(post, path = "/releases", tag = "releases", security(("bearer" = [])), request_body = CreateReleaseRequest, responses((status = 201, description = "created (deployer)", body = deploy_api::schema::Release), ProblemResponses))]
pub(crate) async fn create_release(
    State(state): State<ServerState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateReleaseRequest>,
) -> ApiResult<(StatusCode, Json<Release>)> {
    authorize(&state, &headers, Role::Deployer).await?;
    let now = state.now();
    let components = req
        .components
        .into_iter()
        .map(|c| Component {
            id: ComponentId::from_parts(now, random_bytes()),
            name: c.name,
            image: c.image,
        })
        .collect();
    let release = Release::new(
        ReleaseId::from_parts(now, random_bytes()),
        req.name,
        components,
        now,
    )
    .map_err(|e| ServerError::unprocessable(e.to_string(), Some(body_field(&e.field, "release."))))?
    .with_template(req.template.map(ServiceTemplate::new));
    // Every key of the service definition is checked before anything is written.
    // The runtime policy too, against what any environment allows: a release that could
    // run nowhere is refused now (each job checks its own environment's policy again).
    let any_environment = crate::runtime_policy::any_environment_policy(&state).await?;
    deploy_engine::check_release_template(&release, &any_environment)
        .map_err(ServerError::template)?;
    state.store().put_release(&release).await?;
    Ok((StatusCode::CREATED, Json(release)))
}

#[utoipa::path(get, path = "/releases/{id}", tag = "releases", security(("bearer" = [])), params(("id" = String, Path, description = "release id or name")), responses((status = 200, description = "the release", body = deploy_api::schema::Release), ProblemResponses))]
pub(crate) async fn get_release(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Release>> {
    authorize(&state, &headers, Role::Viewer).await?;
    Ok(Json(
        crate::resolve::release(&state, &id, crate::resolve::Source::Path).await?,
    ))
}

/// Archives a release: it can no longer be promoted; what ran it stays as it was.
#[utoipa::path(post, path = "/releases/{id}/archive", tag = "releases", security(("bearer" = [])), params(("id" = String, Path, description = "release id or name")), responses((status = 200, description = "archived (deployer); archiving again answers the same", body = deploy_api::schema::Release), ProblemResponses))]
pub(crate) async fn archive_release(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Release>> {
    authorize(&state, &headers, Role::Deployer).await?;
    let release = crate::resolve::release(&state, &id, crate::resolve::Source::Path).await?;
    Ok(Json(
        state
            .store()
            .archive_release(release.id, state.now())
            .await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct JobsQuery {
    environment: Option<String>,
    status: Option<String>,
    before: Option<String>,
    limit: Option<u32>,
}

/// Jobs newest first, filtered by environment and status, paged by `before` (a job id).
#[utoipa::path(get, path = "/jobs", tag = "jobs", security(("bearer" = [])), params(JobsQuery), responses((status = 200, description = "a page of jobs, newest first", body = JobList), ProblemResponses))]
pub(crate) async fn list_jobs(
    State(state): State<ServerState>,
    headers: HeaderMap,
    query: Result<Query<JobsQuery>, QueryRejection>,
) -> ApiResult<Json<JobList>> {
    authorize(&state, &headers, Role::Viewer).await?;
    let Query(query) = query.map_err(|e| ServerError::bad_request(e.body_text(), None))?;
    let limit = page_size(&state, query.limit)?;
    let environment = match query.environment.as_deref() {
        Some(e) => Some(
            crate::resolve::environment(&state, e, crate::resolve::Source::Field("environment"))
                .await?
                .id,
        ),
        None => None,
    };
    let status = query
        .status
        .as_deref()
        .map(|s| {
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
        })
        .transpose()?;
    let before = query
        .before
        .as_deref()
        .map(|b| {
            JobId::parse(b).map_err(|err| {
                ServerError::bad_request(format!("job id `{b}` is invalid: {err}"), Some("before"))
            })
        })
        .transpose()?;
    let jobs = state
        .store()
        .list_jobs(environment, status, before, limit)
        .await?;
    let full = u32::try_from(jobs.len()).is_ok_and(|n| n == limit);
    let next_before = if full {
        jobs.last().map(|j| j.id)
    } else {
        None
    };
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
    Path(id): Path<String>,
) -> ApiResult<Json<DeploymentJob>> {
    let caller = authorize(&state, &headers, Role::Deployer).await?;
    let id = parse_id("job", &id, JobId::parse)?;
    Ok(Json(state.engine().cancel_job(id, &caller.name).await?))
}

#[utoipa::path(post, path = "/jobs/{id}/rollback", tag = "jobs", security(("bearer" = [])), params(("id" = String, Path, description = "job id")), request_body = RollbackRequest, responses((status = 200, description = "rolling back (deployer)", body = deploy_api::schema::DeploymentJob), ProblemResponses))]
pub(crate) async fn rollback_job(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<RollbackRequest>,
) -> ApiResult<Json<DeploymentJob>> {
    let caller = authorize(&state, &headers, Role::Deployer).await?;
    let id = parse_id("job", &id, JobId::parse)?;
    state.store().get_job(id).await?;
    let reason = format!("{} (by {})", req.reason.trim(), caller.name);
    Ok(Json(state.engine().rollback(id, &reason).await?))
}

#[utoipa::path(get, path = "/jobs/{id}/artifacts", tag = "jobs", security(("bearer" = [])), params(("id" = String, Path, description = "job id")), responses((status = 200, description = "the job's artifacts, without content", body = Vec<ArtifactSummary>), ProblemResponses))]
pub(crate) async fn list_artifacts(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<ArtifactSummary>>> {
    authorize(&state, &headers, Role::Viewer).await?;
    let id = parse_id("job", &id, JobId::parse)?;
    let job = state.store().get_job(id).await?;
    Ok(Json(
        job.artifacts
            .into_iter()
            .map(ArtifactSummary::from)
            .collect(),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ArtifactQuery {
    /// The target the artifact was rendered for (when the job has several targets).
    target: Option<String>,
    /// The file name (when a target has several artifacts of the kind, e.g. one env
    /// file per service: `web.env`).
    file: Option<String>,
}

/// The artifact's content, with its sha256 in `X-Content-Sha256` and the `ETag`.
#[utoipa::path(get, path = "/jobs/{id}/artifacts/{kind}", tag = "jobs", security(("bearer" = [])), params(("id" = String, Path, description = "job id"), ("kind" = String, Path, description = "artifact kind, e.g. `manifest`"), ArtifactQuery), responses((status = 200, description = "the content; its sha256 in `X-Content-Sha256` and the ETag", body = String, content_type = "application/octet-stream"), ProblemResponses))]
pub(crate) async fn get_artifact(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path((id, kind)): Path<(String, String)>,
    query: Result<Query<ArtifactQuery>, QueryRejection>,
) -> ApiResult<Response> {
    authorize(&state, &headers, Role::Viewer).await?;
    let Query(query) = query.map_err(|e| ServerError::bad_request(e.body_text(), None))?;
    let id = parse_id("job", &id, JobId::parse)?;
    let kind = ArtifactKind::ALL
        .into_iter()
        .find(|k| k.as_str() == kind)
        .ok_or_else(|| {
            let known: Vec<&str> = ArtifactKind::ALL.iter().map(|k| k.as_str()).collect();
            ServerError::bad_request(
                format!(
                    "artifact kind `{kind}` is unknown; expected one of {}",
                    known.join(", ")
                ),
                Some("kind"),
            )
        })?;
    let target = query
        .target
        .as_deref()
        .map(|t| {
            TargetId::parse(t).map_err(|e| {
                ServerError::bad_request(format!("target id `{t}` is invalid: {e}"), Some("target"))
            })
        })
        .transpose()?;
    let job = state.store().get_job(id).await?;
    let file = query.file.as_deref();
    let mut matching: Vec<_> = job
        .artifacts
        .into_iter()
        .filter(|a| {
            a.kind == kind
                && (target.is_none() || a.target_id == target)
                && file.is_none_or(|f| a.file_name.as_str() == f)
        })
        .collect();
    if matching.len() > 1 {
        let targets: std::collections::BTreeSet<_> = matching.iter().map(|a| a.target_id).collect();
        let (hint, field) = if target.is_none() && targets.len() > 1 {
            ("one per target; pass ?target=<target id>", "target")
        } else {
            let files: Vec<&str> = matching.iter().map(|a| a.file_name.as_str()).collect();
            return Err(ServerError::bad_request(
                format!(
                    "job `{id}` has several `{}` artifacts for this target ({}); pass ?file=<file name>",
                    kind.as_str(),
                    files.join(", ")
                ),
                Some("file"),
            ));
        };
        return Err(ServerError::bad_request(
            format!(
                "job `{id}` has several `{}` artifacts ({hint})",
                kind.as_str()
            ),
            Some(field),
        ));
    }
    let artifact = matching.pop().ok_or_else(|| {
        let what = match file {
            Some(f) => format!("`{}` artifact `{f}`", kind.as_str()),
            None => format!("`{}` artifact", kind.as_str()),
        };
        ServerError::NotFound(format!("job `{id}` has no {what}"))
    })?;
    let sha = artifact.sha256.to_string();
    let mut response = artifact.content.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(kind.media_type()),
    );
    if let Ok(v) = HeaderValue::from_str(&sha) {
        h.insert("x-content-sha256", v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{sha}\"")) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) =
        HeaderValue::from_str(&format!("attachment; filename=\"{}\"", artifact.file_name))
    {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

#[utoipa::path(get, path = "/tasks/{id}", tag = "tasks", security(("bearer" = [])), params(("id" = String, Path, description = "task id")), responses((status = 200, description = "the task", body = deploy_api::schema::DeploymentTask), ProblemResponses))]
pub(crate) async fn get_task(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<DeploymentTask>> {
    authorize(&state, &headers, Role::Viewer).await?;
    let id = parse_id("task", &id, TaskId::parse)?;
    Ok(Json(state.store().get_task(id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    after: Option<u64>,
    limit: Option<u32>,
}

/// Checks a page size against the limits.
pub(crate) fn page_size(state: &ServerState, limit: Option<u32>) -> ApiResult<u32> {
    let max = state.config().max_page_size;
    match limit {
        None => Ok(state.config().default_page_size.min(max)),
        Some(n) if n == 0 || n > max => Err(ServerError::bad_request(
            format!("limit {n} is out of range; expected 1 to {max}"),
            Some("limit"),
        )),
        Some(n) => Ok(n),
    }
}

#[utoipa::path(get, path = "/tasks/{id}/logs", tag = "tasks", security(("bearer" = [])), params(("id" = String, Path, description = "task id"), PageQuery), responses((status = 200, description = "a page of the task's log", body = LogPage), ProblemResponses))]
pub(crate) async fn task_logs(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult<Json<LogPage>> {
    authorize(&state, &headers, Role::Viewer).await?;
    let Query(query) = query.map_err(|e| ServerError::bad_request(e.body_text(), None))?;
    let id = parse_id("task", &id, TaskId::parse)?;
    let limit = page_size(&state, query.limit)?;
    state.store().get_task(id).await?;
    let chunks = state
        .store()
        .read_log(id, query.after.unwrap_or(0), limit)
        .await?;
    let full = u32::try_from(chunks.len()).is_ok_and(|n| n == limit);
    let next_after = if full {
        chunks.last().map(|c| c.seq)
    } else {
        None
    };
    Ok(Json(LogPage {
        task_id: id,
        chunks: chunks
            .into_iter()
            .map(|c| LogChunkDto {
                seq: c.seq,
                at: c.at,
                content: c.content,
            })
            .collect(),
        next_after,
    }))
}

#[utoipa::path(post, path = "/tokens", tag = "tokens", security(("bearer" = [])), request_body = CreateTokenRequest, responses((status = 201, description = "created (admin); the secret is in this response only", body = deploy_api::CreatedToken), ProblemResponses))]
pub(crate) async fn create_token(
    State(state): State<ServerState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> ApiResult<(StatusCode, Json<deploy_api::CreatedToken>)> {
    let caller = authorize(&state, &headers, Role::Admin).await?;
    let now = state.now();
    let expires_at = req
        .expires_in_secs
        .map(|secs| crate::tokens::expiry_in(now, secs))
        .transpose()?;
    let created = crate::tokens::create_token_expiring(
        state.store().as_ref(),
        &req.name,
        req.role,
        expires_at,
        now,
    )
    .await?;
    tracing::info!(token = %created.id, name = created.name, role = %created.role, by = caller.name, "api token created");
    Ok((StatusCode::CREATED, Json(created)))
}
