//! An environment's runtime policy: read it (viewer), replace it (admin, its own route, so that the ordinary environment update cannot change it), and the union of every environment's policy that a new release is checked against.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use deploy_api::Role;
use deploy_core::{Environment, RuntimePolicy};

use crate::body::ApiJson;
use crate::errors::ServerError;
use crate::openapi::ProblemResponses;
use crate::routes::environments::{self, expected_version};
use crate::state::ServerState;

type ApiResult<T> = Result<T, ServerError>;

/// Environments read per page while the union is computed.
const PAGE: u32 = 500;

/// The policy with its environment's version as the entity tag.
fn with_etag(environment: &Environment, status: StatusCode) -> Response {
    environments::with_etag(&environment.runtime_policy, environment.version, status)
}

#[utoipa::path(get, path = "/environments/{id}/runtime-policy", tag = "environments", security(("bearer" = [])), params(("id" = String, Path, description = "environment id or name")), responses((status = 200, description = "what the environment's containers may get from their hosts; the environment's version in the ETag", body = deploy_api::schema::RuntimePolicy), ProblemResponses))]
pub(crate) async fn get_runtime_policy(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let environment = environments::by_path(&state, &headers, &id, Role::Viewer).await?;
    Ok(with_etag(&environment, StatusCode::OK))
}

/// Replaces an environment's runtime policy (admin). `If-Match` (the environment's
/// version) is optional: the policy is replaced whole, and a change made to the
/// environment between the read and the write is still a 409, not overwritten.
#[utoipa::path(put, path = "/environments/{id}/runtime-policy", tag = "environments", security(("bearer" = [])), params(("id" = String, Path, description = "environment id or name")), request_body = deploy_api::schema::RuntimePolicy, responses((status = 200, description = "replaced (admin); the environment's new version in the ETag", body = deploy_api::schema::RuntimePolicy), ProblemResponses))]
pub(crate) async fn put_runtime_policy(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(policy): ApiJson<RuntimePolicy>,
) -> ApiResult<Response> {
    let current = environments::by_path(&state, &headers, &id, Role::Admin).await?;
    let expected = if headers.contains_key(header::IF_MATCH) {
        expected_version(&headers, None)?
    } else {
        current.version
    };
    let before = current.runtime_policy.clone();
    let updated = Environment {
        runtime_policy: policy,
        ..current
    };
    let stored = state.store().update_environment(&updated, expected).await?;
    tracing::info!(environment = %stored.id, version = stored.version, policy = ?stored.runtime_policy, "runtime policy replaced");
    Ok(crate::audit::with_before(
        with_etag(&stored, StatusCode::OK),
        &before,
    ))
}

/// Everything some environment's policy allows: a release asking for more could run
/// nowhere, so it is refused when it is created (each job checks its own
/// environment's policy again).
pub(crate) async fn any_environment_policy(state: &ServerState) -> ApiResult<RuntimePolicy> {
    let mut union = RuntimePolicy::default();
    let mut before = None;
    loop {
        let page = state.store().list_environments(before, PAGE).await?;
        for environment in &page {
            union = union.union(&environment.runtime_policy);
        }
        match page.last() {
            Some(last) if page.len() == PAGE as usize => before = Some(last.id),
            _ => return Ok(union),
        }
    }
}
