//! `GET /api/v1/environments` and `GET /api/v1/releases`: newest first, paged by `before` like `/jobs`.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use deploy_api::{EnvironmentList, ReleaseList, Role};
use deploy_core::{EnvironmentId, ReleaseId};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::authorize;
use crate::errors::ServerError;
use crate::handlers::page_size;
use crate::openapi::ProblemResponses;
use crate::state::ServerState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only entries older than this id (the `next_before` of the previous page).
    before: Option<String>,
    /// Page size, 1 to the server's maximum (default 100).
    limit: Option<u32>,
}

/// Decodes the query: the `before` id and the page size.
fn page<T, E: std::fmt::Display>(
    state: &ServerState,
    query: Result<Query<ListQuery>, QueryRejection>,
    what: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<(Option<T>, u32), ServerError> {
    let Query(query) = query.map_err(|e| ServerError::bad_request(e.body_text(), None))?;
    let limit = page_size(state, query.limit)?;
    let before = query
        .before
        .as_deref()
        .map(|b| {
            parse(b).map_err(|e| {
                ServerError::bad_request(format!("{what} id `{b}` is invalid: {e}"), Some("before"))
            })
        })
        .transpose()?;
    Ok((before, limit))
}

/// The id to pass as `before` for the next page: the last one of a full page.
fn next<T, I: Copy>(items: &[T], limit: u32, id: impl Fn(&T) -> I) -> Option<I> {
    let full = u32::try_from(items.len()).is_ok_and(|n| n == limit);
    if full { items.last().map(id) } else { None }
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
) -> Result<Json<EnvironmentList>, ServerError> {
    authorize(&state, &headers, Role::Viewer).await?;
    let (before, limit) = page(&state, query, "environment", EnvironmentId::parse)?;
    let environments = state.store().list_environments(before, limit).await?;
    let next_before = next(&environments, limit, |e| e.id);
    Ok(Json(EnvironmentList {
        environments,
        next_before,
    }))
}

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
) -> Result<Json<ReleaseList>, ServerError> {
    authorize(&state, &headers, Role::Viewer).await?;
    let (before, limit) = page(&state, query, "release", ReleaseId::parse)?;
    let releases = state.store().list_releases(before, limit).await?;
    let next_before = next(&releases, limit, |r| r.id);
    Ok(Json(ReleaseList {
        releases,
        next_before,
    }))
}
