//! Bearer-token authentication and role checks.

use axum::http::{HeaderMap, header};
use deploy_api::Role;

use crate::errors::ServerError;
use crate::state::ServerState;
use crate::tokens::hash_token;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub name: String,
}

/// Authenticates the request's bearer token and checks that its role allows `required`.
pub(crate) async fn authorize(
    state: &ServerState,
    headers: &HeaderMap,
    required: Role,
) -> Result<Caller, ServerError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(ServerError::Unauthenticated(
            "missing `Authorization: Bearer <token>` header",
        ))?
        .to_str()
        .map_err(|_| ServerError::Unauthenticated("the Authorization header is not text"))?;
    let token = value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(ServerError::Unauthenticated(
            "the Authorization header is not `Bearer <token>`",
        ))?;
    let record = state
        .store()
        .find_api_token(&hash_token(token))
        .await?
        .filter(|r| r.revoked_at.is_none())
        .ok_or(ServerError::Unauthenticated("unknown or revoked API token"))?;
    let role = record
        .scopes
        .iter()
        .filter_map(|s| s.parse::<Role>().ok())
        .max()
        .ok_or(ServerError::Unauthenticated("the API token has no role"))?;
    if !role.allows(required) {
        return Err(ServerError::Forbidden { role, required });
    }
    Ok(Caller { name: record.name })
}
