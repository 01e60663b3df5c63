//! Bearer-token authentication and role checks.

use axum::http::{HeaderMap, header};
use deploy_api::Role;
use deploy_core::Timestamp;
use deploy_store::ApiTokenRecord;

use crate::errors::ServerError;
use crate::state::ServerState;
use crate::tokens::hash_token;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub name: String,
    pub token_id: uuid::Uuid,
    pub role: Role,
}

impl Caller {
    /// The caller as an approver of promotions.
    pub(crate) fn approver(&self) -> deploy_core::Approver<'_> {
        deploy_core::Approver {
            name: &self.name,
            token_id: Some(self.token_id),
            role: match self.role {
                Role::Viewer => None,
                Role::Deployer => Some(deploy_core::ApproverRole::Deployer),
                Role::Admin => Some(deploy_core::ApproverRole::Admin),
            },
        }
    }
}

/// Authenticates the request's bearer token and checks that its role allows `required`.
pub(crate) async fn authorize(
    state: &ServerState,
    headers: &HeaderMap,
    required: Role,
) -> Result<Caller, ServerError> {
    let token = bearer(headers)?;
    let now = state.now();
    let record = state
        .store()
        .find_api_token(&hash_token(token))
        .await?
        .ok_or(ServerError::Unauthenticated("unknown or revoked API token"))?;
    usable_at(&record, now)?;
    // Agent bootstrap tokens have no role: they only register an agent.
    let role = role_of(&record).ok_or(ServerError::Unauthenticated("the API token has no role"))?;
    touch(state, &record, now).await;
    if !role.allows(required) {
        return Err(ServerError::Forbidden { role, required });
    }
    Ok(Caller {
        name: record.name,
        token_id: record.id,
        role,
    })
}

/// Whether `record` may authenticate at `now`: not revoked, not expired. Every
/// request looks the token up again (there is no auth cache), so a revocation or an
/// expiry takes effect from the next request on; an SSE stream opened before it
/// runs until it ends or reconnects.
pub(crate) fn usable_at(record: &ApiTokenRecord, now: Timestamp) -> Result<(), ServerError> {
    if record.revoked_at.is_some() {
        // Same answer as an unknown token: a revoked one is no longer anyone's business.
        return Err(ServerError::Unauthenticated("unknown or revoked API token"));
    }
    match record.expires_at {
        Some(at) if at <= now => Err(ServerError::Expired {
            what: "API token",
            at,
        }),
        _ => Ok(()),
    }
}

/// The request's bearer token (never logged).
pub(crate) fn bearer(headers: &HeaderMap) -> Result<&str, ServerError> {
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
    Ok(token)
}

/// Records that `record` was used at `now` (at most once per [`LAST_USED_RESOLUTION`]),
/// through the API or the web console. Best effort: a failed write must not fail the request.
pub(crate) async fn touch(state: &ServerState, record: &ApiTokenRecord, now: Timestamp) {
    if state.should_touch(record.id, record.last_used_at, now, LAST_USED_RESOLUTION)
        && let Err(e) = state.store().touch_api_token(record.id, now).await
    {
        tracing::warn!(token = %record.id, error = %e, "cannot record the use of an api token");
    }
}

/// `last_used_at` is written at most this often per token (reads stay reads).
const LAST_USED_RESOLUTION: std::time::Duration = std::time::Duration::from_secs(60);

/// The token's role: the highest role among its scopes.
pub(crate) fn role_of(record: &ApiTokenRecord) -> Option<Role> {
    record
        .scopes
        .iter()
        .filter_map(|s| s.parse::<Role>().ok())
        .max()
}
