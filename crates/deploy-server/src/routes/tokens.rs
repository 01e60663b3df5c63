//! API token routes (admin): create (the secret in the answer only), list without their secret or its hash, revoke.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use deploy_api::{CreateTokenRequest, Role, TokenSummary};
use deploy_store::ApiTokenRecord;

use crate::auth::{authorize, role_of};
use crate::body::ApiJson;
use crate::errors::ServerError;
use crate::openapi::ProblemResponses;
use crate::state::ServerState;
use crate::tokens::is_bootstrap_marker;

/// The listed view of a token: never the secret, never its hash.
fn summary(record: ApiTokenRecord) -> Option<TokenSummary> {
    Some(TokenSummary {
        role: role_of(&record)?,
        id: record.id,
        name: record.name,
        created_at: record.created_at,
        last_used_at: record.last_used_at,
        revoked_at: record.revoked_at,
        expires_at: record.expires_at,
    })
}

#[utoipa::path(post, path = "/tokens", tag = "tokens", security(("bearer" = [])), request_body = CreateTokenRequest, responses((status = 201, description = "created (admin); the secret is in this response only", body = deploy_api::CreatedToken), ProblemResponses))]
pub(crate) async fn create_token(
    State(state): State<ServerState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> Result<(StatusCode, Json<deploy_api::CreatedToken>), ServerError> {
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

#[utoipa::path(
    get,
    path = "/tokens",
    tag = "tokens",
    security(("bearer" = [])),
    responses((status = 200, description = "every token, oldest first, without secrets (admin)", body = Vec<TokenSummary>), ProblemResponses)
)]
pub(crate) async fn list_tokens(
    State(state): State<ServerState>,
    headers: HeaderMap,
) -> Result<Json<Vec<TokenSummary>>, ServerError> {
    authorize(&state, &headers, Role::Admin).await?;
    let tokens = state.store().list_api_tokens().await?;
    Ok(Json(
        tokens
            .into_iter()
            .filter(|t| !is_bootstrap_marker(t))
            .filter_map(summary)
            .collect(),
    ))
}

#[utoipa::path(
    post,
    path = "/tokens/{id}/revoke",
    tag = "tokens",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "token id or name")),
    responses((status = 200, description = "revoked (admin); it is refused from now on", body = TokenSummary), ProblemResponses)
)]
pub(crate) async fn revoke_token(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<TokenSummary>, ServerError> {
    let caller = authorize(&state, &headers, Role::Admin).await?;
    // Look before writing: a row without a role (an agent bootstrap token, the
    // bootstrap marker) is no API token and must not be revoked through this route
    // (bootstrap tokens have `/agents/bootstrap-tokens/{id}/revoke`).
    let tokens: Vec<ApiTokenRecord> = state
        .store()
        .list_api_tokens()
        .await?
        .into_iter()
        .filter(|t| !is_bootstrap_marker(t) && role_of(t).is_some())
        .collect();
    let id = crate::resolve::by_name_or_id("api token", &id, tokens, |t| t.id, |t| &t.name)?.id;
    let not_found = || ServerError::NotFound(format!("api token `{id}` does not exist"));
    let record = match state.store().revoke_api_token(id, state.now()).await {
        Err(deploy_store::StoreError::NotFound { .. }) => return Err(not_found()),
        other => other?,
    };
    tracing::info!(token = %id, name = record.name, by = caller.name, "api token revoked");
    summary(record).map(Json).ok_or_else(not_found)
}
