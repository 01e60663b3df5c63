//! Environment routes: list, create, read, update (with its version) and delete an environment, with its approval policy and pipeline; every `{id}` is an id or a name.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use deploy_api::{CreateEnvironmentRequest, EnvironmentList, Role, UpdateEnvironmentRequest};
use deploy_core::{Environment, EnvironmentId};
use deploy_engine::random_bytes;
use serde::Serialize;

use crate::auth::authorize;
use crate::body::ApiJson;
use crate::errors::ServerError;
use crate::openapi::ProblemResponses;
use crate::params::{self, ListQuery, body_field};
use crate::resolve::{self, Source};
use crate::state::ServerState;

type ApiResult<T> = Result<T, ServerError>;

/// `body` with `version` (an environment's) as its entity tag (`"3"`), so a client can send it back.
pub(crate) fn with_etag(body: &impl Serialize, version: u64, status: StatusCode) -> Response {
    let mut response = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

/// The environment a path names (an id or a name), for a caller with `role`.
pub(crate) async fn by_path(
    state: &ServerState,
    headers: &HeaderMap,
    id: &str,
    role: Role,
) -> ApiResult<Environment> {
    authorize(state, headers, role).await?;
    resolve::environment(state, id, Source::Path).await
}

#[utoipa::path(
    get,
    path = "/environments",
    tag = "environments",
    security(("bearer" = [])),
    params(ListQuery),
    responses((status = 200, description = "a page of environments, newest first", body = EnvironmentList), ProblemResponses)
)]
pub(crate) async fn list_environments(
    State(state): State<ServerState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<EnvironmentList>> {
    authorize(&state, &headers, Role::Viewer).await?;
    let (before, limit) = params::page(&state, query, "environment", EnvironmentId::parse)?;
    let environments = state.store().list_environments(before, limit).await?;
    let next_before = params::next_before(&environments, limit, |e| e.id);
    Ok(Json(EnvironmentList {
        environments,
        next_before,
    }))
}

/// The pipeline's environments (names or ids) as ids; each must exist.
async fn required_environments(
    state: &ServerState,
    requires: &[String],
) -> ApiResult<Vec<EnvironmentId>> {
    let mut ids = Vec::with_capacity(requires.len());
    for (i, reference) in requires.iter().enumerate() {
        let field = format!("requires[{i}]");
        ids.push(
            resolve::environment(state, reference, Source::Field(&field))
                .await?
                .id,
        );
    }
    Ok(ids)
}

/// How many environments a pipeline walk visits at most (a bound, not a design limit).
const PIPELINE_WALK_LIMIT: usize = 1_000;

/// Refuses a pipeline that would come back to `environment`: `prod` requiring `staging`
/// while `staging` requires `prod` could never be promoted to. Names the loop.
async fn check_no_cycle(state: &ServerState, environment: &Environment) -> ApiResult<()> {
    // Depth-first from each required environment, with the path that led there.
    let mut stack: Vec<(EnvironmentId, Vec<String>)> = environment
        .requires
        .iter()
        .map(|id| (*id, vec![environment.name.to_string()]))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    while let Some((id, path)) = stack.pop() {
        if !seen.insert(id) || seen.len() > PIPELINE_WALK_LIMIT {
            continue;
        }
        let Ok(next) = state.store().get_environment(id).await else {
            continue;
        };
        let mut path = path;
        path.push(next.name.to_string());
        for required in &next.requires {
            if *required == environment.id {
                path.push(environment.name.to_string());
                return Err(ServerError::unprocessable(
                    format!(
                        "requires: the pipeline {} is a loop; no release could ever be promoted along it",
                        path.join(" -> ")
                    ),
                    Some("requires"),
                ));
            }
            stack.push((*required, path.clone()));
        }
    }
    Ok(())
}

/// The version an update was made from: the body's `version`, or `If-Match: "<n>"`
/// (the ETag of the read; `W/"<n>"` and a bare `<n>` are accepted too). Both given
/// must agree; neither is a 400.
pub(crate) fn expected_version(headers: &HeaderMap, body: Option<u64>) -> ApiResult<u64> {
    let if_match = headers
        .get(header::IF_MATCH)
        .map(|v| {
            let text = v.to_str().unwrap_or("");
            text.trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .parse::<u64>()
                .map_err(|_| {
                    ServerError::bad_request(
                        format!(
                            "If-Match `{}` is not a version; expected the ETag of the read, such as \"3\"",
                            text.escape_debug()
                        ),
                        Some("If-Match"),
                    )
                })
        })
        .transpose()?;
    match (if_match, body) {
        (Some(a), Some(b)) if a != b => Err(ServerError::bad_request(
            format!(
                "If-Match says version {a} and the body's `version` says {b}; send one, or the same"
            ),
            Some("version"),
        )),
        (Some(v), _) | (None, Some(v)) => Ok(v),
        (None, None) => Err(ServerError::bad_request(
            "the version this update was made from is missing: send `version` in the body or `If-Match: \"<version>\"` (the ETag of the read), so that a change made meanwhile is not overwritten",
            Some("version"),
        )),
    }
}

fn check(environment: &Environment) -> ApiResult<()> {
    environment
        .validate()
        .map_err(|e| ServerError::unprocessable(e.to_string(), Some(body_field(&e.field, ""))))
}

#[utoipa::path(post, path = "/environments", tag = "environments", security(("bearer" = [])), request_body = CreateEnvironmentRequest, responses((status = 201, description = "created (admin); its version in the ETag", body = deploy_api::schema::Environment), ProblemResponses))]
pub(crate) async fn create_environment(
    State(state): State<ServerState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateEnvironmentRequest>,
) -> ApiResult<Response> {
    authorize(&state, &headers, Role::Admin).await?;
    let now = state.now();
    let environment = Environment {
        id: EnvironmentId::from_parts(now, random_bytes()),
        name: req.name,
        hooks: req.hooks,
        variables: req.variables,
        approval: req.approval,
        requires: required_environments(&state, &req.requires).await?,
        // The default refuses; an admin widens it with its own route.
        runtime_policy: Default::default(),
        version: 0,
        created_at: now,
    };
    check(&environment)?;
    state.store().put_environment(&environment).await?;
    Ok(with_etag(
        &environment,
        environment.version,
        StatusCode::CREATED,
    ))
}

#[utoipa::path(get, path = "/environments/{id}", tag = "environments", security(("bearer" = [])), params(("id" = String, Path, description = "environment id or name")), responses((status = 200, description = "the environment; its version in the ETag", body = deploy_api::schema::Environment), ProblemResponses))]
pub(crate) async fn get_environment(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let environment = by_path(&state, &headers, &id, Role::Viewer).await?;
    Ok(with_etag(&environment, environment.version, StatusCode::OK))
}

/// Replaces an environment's definition (name, hooks, variables, approval policy,
/// pipeline) if it is still at `version`: a stale version is 409 and changes nothing.
#[utoipa::path(put, path = "/environments/{id}", tag = "environments", security(("bearer" = [])), params(("id" = String, Path, description = "environment id or name")), request_body = UpdateEnvironmentRequest, responses((status = 200, description = "updated (admin); the new version in the body and the ETag", body = deploy_api::schema::Environment), ProblemResponses))]
pub(crate) async fn update_environment(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateEnvironmentRequest>,
) -> ApiResult<Response> {
    let current = by_path(&state, &headers, &id, Role::Admin).await?;
    let before = current.clone();
    let updated = Environment {
        name: req.name,
        hooks: req.hooks,
        variables: req.variables,
        approval: req.approval,
        requires: required_environments(&state, &req.requires).await?,
        ..current
    };
    check(&updated)?;
    check_no_cycle(&state, &updated).await?;
    let stored = state
        .store()
        .update_environment(&updated, expected_version(&headers, req.version)?)
        .await?;
    tracing::info!(environment = %stored.id, version = stored.version, "environment updated");
    Ok(crate::audit::with_before(
        with_etag(&stored, stored.version, StatusCode::OK),
        &before,
    ))
}

/// Retires an environment and its targets when no job is active in it (409 names the
/// job): its jobs stay readable, and its name is free again.
#[utoipa::path(delete, path = "/environments/{id}", tag = "environments", security(("bearer" = [])), params(("id" = String, Path, description = "environment id or name")), responses((status = 204, description = "deleted (admin)"), ProblemResponses))]
pub(crate) async fn delete_environment(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let current = by_path(&state, &headers, &id, Role::Admin).await?;
    // Environments whose pipeline requires this one would never be promoted to again.
    let dependents: Vec<String> = state
        .store()
        .list_environments(None, PIPELINE_WALK_LIMIT as u32)
        .await?
        .into_iter()
        .filter(|e| e.requires.contains(&current.id))
        .map(|e| format!("`{}`", e.name))
        .collect();
    if !dependents.is_empty() {
        return Err(ServerError::Conflict(format!(
            "environment `{}` is required first by {}; remove it from their `requires` before deleting it",
            current.name,
            dependents.join(", ")
        )));
    }
    state
        .store()
        .delete_environment(current.id, state.now())
        .await?;
    tracing::info!(environment = %current.id, name = %current.name, "environment deleted");
    Ok(crate::audit::with_before(
        StatusCode::NO_CONTENT.into_response(),
        &current,
    ))
}
