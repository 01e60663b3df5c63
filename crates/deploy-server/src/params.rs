//! Request parameters the routes share: path ids, body field paths, query strings, page sizes, `before` paging and list filters.

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use deploy_core::EnvironmentId;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::errors::ServerError;
use crate::resolve;
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

/// The decoded query string; 400 with the decoder's words when it does not decode.
pub(crate) fn query<T>(query: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ServerError::bad_request(e.body_text(), None))
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

/// The `before` id of a list query: a 400 naming `before` when it is no `what` id.
pub(crate) fn before<T, E: std::fmt::Display>(
    before: Option<&str>,
    what: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> ApiResult<Option<T>> {
    before
        .map(|b| {
            parse(b).map_err(|e| {
                ServerError::bad_request(format!("{what} id `{b}` is invalid: {e}"), Some("before"))
            })
        })
        .transpose()
}

/// The id to pass as `before` for the next page: the last one of a full page.
pub(crate) fn next_before<T, I>(items: &[T], limit: u32, id: impl Fn(&T) -> I) -> Option<I> {
    let full = u32::try_from(items.len()).is_ok_and(|n| n == limit);
    if full { items.last().map(id) } else { None }
}

/// The query of a plain list: newest first, paged by `before`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only entries older than this id (the `next_before` of the previous page).
    before: Option<String>,
    /// Page size, 1 to the server's maximum (default 100).
    limit: Option<u32>,
}

/// Decodes a plain list's query: the `before` id (a `what` id) and the page size.
pub(crate) fn page<T, E: std::fmt::Display>(
    state: &ServerState,
    query: Result<Query<ListQuery>, QueryRejection>,
    what: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> ApiResult<(Option<T>, u32)> {
    let query = self::query(query)?;
    let limit = page_size(state, query.limit)?;
    Ok((before(query.before.as_deref(), what, parse)?, limit))
}

/// The query of a list filtered by environment and status, newest first, paged by `before`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct FilterQuery {
    /// Only entries of this environment (id or name).
    environment: Option<String>,
    /// Only entries in this status.
    status: Option<String>,
    /// Only entries older than this id (the `next_before` of the previous page).
    before: Option<String>,
    /// Page size, 1 to the server's maximum.
    limit: Option<u32>,
}

/// A filtered list's query, decoded.
pub(crate) struct Filter<S, I> {
    pub environment: Option<EnvironmentId>,
    pub status: Option<S>,
    pub before: Option<I>,
    pub limit: u32,
}

/// Decodes a filtered list's query: the page size, the environment (an id or a
/// name), the status (parsed by `status`) and the `before` id (a `what` id).
pub(crate) async fn filter<S, I, E: std::fmt::Display>(
    state: &ServerState,
    query: Result<Query<FilterQuery>, QueryRejection>,
    status: impl FnOnce(&str) -> ApiResult<S>,
    what: &str,
    parse: impl FnOnce(&str) -> Result<I, E>,
) -> ApiResult<Filter<S, I>> {
    let query = self::query(query)?;
    let limit = page_size(state, query.limit)?;
    let environment = resolve::environment_filter(state, query.environment.as_deref()).await?;
    Ok(Filter {
        environment,
        status: query.status.as_deref().map(status).transpose()?,
        before: before(query.before.as_deref(), what, parse)?,
        limit,
    })
}
