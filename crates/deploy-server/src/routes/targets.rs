//! Target routes: add, list, read, update (with its version) and retire the targets of an environment; every `{id}` and `{target}` is an id or a name.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use deploy_api::{CreateTargetRequest, Role, UpdateTargetRequest};
use deploy_core::{Target, TargetId};
use deploy_engine::random_bytes;

use crate::body::ApiJson;
use crate::errors::ServerError;
use crate::openapi::ProblemResponses;
use crate::params::body_field;
use crate::resolve;
use crate::routes::environments::{self, expected_version};
use crate::state::ServerState;

type ApiResult<T> = Result<T, ServerError>;

/// The target `target` (an id or a name) of environment `environment` (an id or a name),
/// for a caller with `role`.
async fn find(
    state: &ServerState,
    headers: &HeaderMap,
    role: Role,
    environment: &str,
    target: &str,
) -> ApiResult<Target> {
    let environment = environments::by_path(state, headers, environment, role).await?;
    let targets = state.store().list_targets(environment.id).await?;
    resolve::target(targets, &environment, target)
}

/// Checks a target's definition; a field path is given as in the request body.
fn check(target: &Target) -> ApiResult<()> {
    target.validate().map_err(|e| {
        ServerError::unprocessable(e.to_string(), Some(body_field(&e.field, "target.")))
    })
}

#[utoipa::path(post, path = "/environments/{id}/targets", tag = "environments", security(("bearer" = [])), params(("id" = String, Path, description = "environment id or name")), request_body = CreateTargetRequest, responses((status = 201, description = "created (admin)", body = deploy_api::schema::Target), ProblemResponses))]
pub(crate) async fn create_target(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CreateTargetRequest>,
) -> ApiResult<(StatusCode, Json<Target>)> {
    let environment = environments::by_path(&state, &headers, &id, Role::Admin).await?;
    let now = state.now();
    let target = Target {
        id: TargetId::from_parts(now, random_bytes()),
        environment_id: environment.id,
        name: req.name,
        target_type: req.target_type,
        connection: req.connection,
        health_endpoint: req.health_endpoint,
        health_check: req.health_check,
        labels: req.labels,
        disabled: false,
        version: 0,
        created_at: now,
    };
    check(&target)?;
    state.store().put_target(&target).await?;
    Ok((StatusCode::CREATED, Json(target)))
}

#[utoipa::path(get, path = "/environments/{id}/targets", tag = "environments", security(("bearer" = [])), params(("id" = String, Path, description = "environment id or name")), responses((status = 200, description = "the targets, by name", body = Vec<deploy_api::schema::Target>), ProblemResponses))]
pub(crate) async fn list_targets(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<Target>>> {
    let environment = environments::by_path(&state, &headers, &id, Role::Viewer).await?;
    Ok(Json(state.store().list_targets(environment.id).await?))
}

#[utoipa::path(get, path = "/environments/{id}/targets/{target}", tag = "environments", security(("bearer" = [])), params(("id" = String, Path, description = "environment id or name"), ("target" = String, Path, description = "target id or name (within the environment)")), responses((status = 200, description = "the target", body = deploy_api::schema::Target), ProblemResponses))]
pub(crate) async fn get_target(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path((id, target)): Path<(String, String)>,
) -> ApiResult<Json<Target>> {
    Ok(Json(
        find(&state, &headers, Role::Viewer, &id, &target).await?,
    ))
}

/// Replaces a target's definition (name, connection, health check, labels, disabled) if it
/// is still at `version`; its type is fixed. A disabled target gets no task in new jobs.
#[utoipa::path(put, path = "/environments/{id}/targets/{target}", tag = "environments", security(("bearer" = [])), params(("id" = String, Path, description = "environment id or name"), ("target" = String, Path, description = "target id or name")), request_body = UpdateTargetRequest, responses((status = 200, description = "updated (admin); the new version in the body", body = deploy_api::schema::Target), ProblemResponses))]
pub(crate) async fn update_target(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path((id, target)): Path<(String, String)>,
    ApiJson(req): ApiJson<UpdateTargetRequest>,
) -> ApiResult<Response> {
    let current = find(&state, &headers, Role::Admin, &id, &target).await?;
    let updated = Target {
        name: req.name,
        connection: req.connection,
        health_endpoint: req.health_endpoint,
        health_check: req.health_check,
        labels: req.labels,
        disabled: req.disabled,
        ..current.clone()
    };
    check(&updated)?;
    let expected = expected_version(&headers, req.version)?;
    let stored = state.store().update_target(&updated, expected).await?;
    tracing::info!(target = %stored.id, version = stored.version, disabled = stored.disabled, "target updated");
    Ok(crate::audit::with_before(
        (StatusCode::OK, Json(&stored)).into_response(),
        &current,
    ))
}

/// Retires a target no active job uses (409 names the job): new jobs no longer see it,
/// past jobs keep showing it, and its name is free again.
#[utoipa::path(delete, path = "/environments/{id}/targets/{target}", tag = "environments", security(("bearer" = [])), params(("id" = String, Path, description = "environment id or name"), ("target" = String, Path, description = "target id or name")), responses((status = 204, description = "deleted (admin)"), ProblemResponses))]
pub(crate) async fn delete_target(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path((id, target)): Path<(String, String)>,
) -> ApiResult<Response> {
    let current = find(&state, &headers, Role::Admin, &id, &target).await?;
    state.store().delete_target(current.id, state.now()).await?;
    tracing::info!(target = %current.id, name = %current.name, "target deleted");
    Ok(crate::audit::with_before(
        StatusCode::NO_CONTENT.into_response(),
        &current,
    ))
}
