//! Release routes: list, create (its service definition and runtime needs checked first), read and archive a release; every `{id}` is an id or a name.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use deploy_api::{CreateReleaseRequest, ReleaseList, Role};
use deploy_core::{Component, ComponentId, Release, ReleaseId, ServiceTemplate};
use deploy_engine::random_bytes;

use crate::auth::authorize;
use crate::body::ApiJson;
use crate::errors::ServerError;
use crate::openapi::ProblemResponses;
use crate::params::{self, ListQuery, body_field};
use crate::resolve::{self, Source};
use crate::state::ServerState;

type ApiResult<T> = Result<T, ServerError>;

#[utoipa::path(
    get,
    path = "/releases",
    tag = "releases",
    security(("bearer" = [])),
    params(ListQuery),
    responses((status = 200, description = "a page of releases, newest first", body = ReleaseList), ProblemResponses)
)]
pub(crate) async fn list_releases(
    State(state): State<ServerState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<ReleaseList>> {
    authorize(&state, &headers, Role::Viewer).await?;
    let (before, limit) = params::page(&state, query, "release", ReleaseId::parse)?;
    let releases = state.store().list_releases(before, limit).await?;
    let next_before = params::next_before(&releases, limit, |r| r.id);
    Ok(Json(ReleaseList {
        releases,
        next_before,
    }))
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
    let any_environment = super::runtime_policy::any_environment_policy(&state).await?;
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
    Ok(Json(resolve::release(&state, &id, Source::Path).await?))
}

/// Archives a release: it can no longer be promoted; what ran it stays as it was.
#[utoipa::path(post, path = "/releases/{id}/archive", tag = "releases", security(("bearer" = [])), params(("id" = String, Path, description = "release id or name")), responses((status = 200, description = "archived (deployer); archiving again answers the same", body = deploy_api::schema::Release), ProblemResponses))]
pub(crate) async fn archive_release(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Release>> {
    authorize(&state, &headers, Role::Deployer).await?;
    let release = resolve::release(&state, &id, Source::Path).await?;
    Ok(Json(
        state
            .store()
            .archive_release(release.id, state.now())
            .await?,
    ))
}
