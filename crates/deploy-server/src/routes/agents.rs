//! Agent routes for operators (`/agents…`): bootstrap tokens (create, list, revoke), and the registered agents (list, show, revoke, set labels).
//!
//! An agent's identity is the server's: a bootstrap token is bound to one agent name,
//! its labels and the capabilities it may claim ([`BootstrapBinding`]); a registration
//! claiming anything else is refused (403, `agent.rs`), the agent gets the token's
//! labels, and only an admin changes them afterwards (`PUT /agents/{id}/labels`). No
//! token or credential is ever logged.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use deploy_api::Role;
use deploy_api::agent::{
    AgentCapability, AgentSummary, BootstrapTokenSummary, CreateBootstrapTokenRequest,
    CreatedBootstrapToken, SetAgentLabelsRequest,
};
use deploy_core::AgentId;
use deploy_store::{AGENT_BOOTSTRAP_SCOPE, ApiTokenRecord, BootstrapBinding, StoreError};
use uuid::Uuid;

use crate::agent_records::{agent_info, capabilities_of, capability_names, stored_name};
use crate::auth::authorize;
use crate::body::ApiJson;
use crate::errors::ServerError;
use crate::openapi::ProblemResponses;
use crate::params::parse_id;
use crate::state::ServerState;
use crate::tokens::hash_token;

/// Prefix of bootstrap tokens.
const BOOTSTRAP_PREFIX: &str = "dpb_";
/// Default and longest life of an unspent bootstrap token.
const DEFAULT_BOOTSTRAP_SECS: u64 = 3_600;
const MAX_BOOTSTRAP_SECS: u64 = 7 * 24 * 3_600;

/// A fresh secret: `prefix` and 256 random bits.
pub(super) fn secret(prefix: &str) -> String {
    format!(
        "{prefix}{}{}",
        Uuid::new_v4().simple(),
        Uuid::new_v4().simple()
    )
}

/// Every capability an agent can have: what a bootstrap token allows when it names none.
const ALL_CAPABILITIES: [AgentCapability; 2] = [AgentCapability::Docker, AgentCapability::Compose];

/// The agent a path names: its id, or the registered agent of that name.
async fn agent_ref(state: &ServerState, reference: &str) -> Result<AgentId, ServerError> {
    if let Ok(id) = AgentId::parse(reference) {
        return Ok(id);
    }
    let agents = state.store().list_agents().await?;
    crate::resolve::by_name_or_id("agent", reference, agents, |a| a.id.into(), |a| &a.name)
        .map(|a| a.id)
}

#[utoipa::path(
    post,
    path = "/agents/bootstrap-tokens",
    tag = "agents",
    security(("bearer" = [])),
    request_body = CreateBootstrapTokenRequest,
    responses((status = 201, description = "created (admin); the one-time token is in this response only", body = CreatedBootstrapToken), ProblemResponses)
)]
pub(crate) async fn create_bootstrap_token(
    State(state): State<ServerState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateBootstrapTokenRequest>,
) -> Result<(StatusCode, Json<CreatedBootstrapToken>), ServerError> {
    let caller = authorize(&state, &headers, Role::Admin).await?;
    let secs = req.expires_in_secs.unwrap_or(DEFAULT_BOOTSTRAP_SECS);
    if secs == 0 || secs > MAX_BOOTSTRAP_SECS {
        return Err(ServerError::bad_request(
            format!(
                "expires_in_secs {secs} is out of range; expected 1 to {MAX_BOOTSTRAP_SECS} (7 days)"
            ),
            Some("expires_in_secs"),
        ));
    }
    let mut capabilities = req
        .capabilities
        .unwrap_or_else(|| ALL_CAPABILITIES.to_vec());
    capabilities.sort();
    capabilities.dedup();
    if capabilities.is_empty() {
        return Err(ServerError::bad_request(
            "capabilities is empty; expected at least one of docker, compose (or no `capabilities` for both)",
            Some("capabilities"),
        ));
    }
    // Caught here rather than at registration: the operator is told now, not the agent.
    if state.agent_hub().name_taken(&req.name) {
        return Err(ServerError::Conflict(format!(
            "agent name `{}` is already taken by a registered agent (revoked agents keep their names); choose another name",
            req.name
        )));
    }
    let now = state.now();
    let expires_at = now.saturating_add(std::time::Duration::from_secs(secs));
    let token = secret(BOOTSTRAP_PREFIX);
    let id = Uuid::new_v4();
    let record = ApiTokenRecord {
        id,
        // `api_tokens.name` is unique and several tokens may be made for one agent name
        // (an expired one is replaced): the id makes it unique; the audit log shows it.
        name: format!("{} (bootstrap token {id})", req.name),
        token_hash: hash_token(&token),
        scopes: vec![AGENT_BOOTSTRAP_SCOPE.to_owned()],
        created_at: now,
        revoked_at: None,
        last_used_at: None,
        expires_at: Some(expires_at),
    };
    let binding = BootstrapBinding {
        token_id: id,
        agent_name: req.name.to_string(),
        labels: req.labels.clone(),
        capabilities: capability_names(&capabilities),
    };
    state.store().put_bootstrap_token(&record, &binding).await?;
    tracing::info!(token = %id, agent = %req.name, labels = %req.labels, by = caller.name, %expires_at, "agent bootstrap token created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedBootstrapToken {
            id,
            name: req.name,
            labels: req.labels,
            capabilities,
            token,
            expires_at,
        }),
    ))
}

/// The listed view of a bootstrap token: never the secret, never its hash.
fn bootstrap_summary(
    record: ApiTokenRecord,
    binding: &BootstrapBinding,
) -> Result<BootstrapTokenSummary, ServerError> {
    Ok(BootstrapTokenSummary {
        id: record.id,
        name: stored_name("agent_bootstrap_bindings.agent_name", &binding.agent_name)?,
        labels: binding.labels.clone(),
        capabilities: capabilities_of(&binding.capabilities, &record.id),
        created_at: record.created_at,
        expires_at: record.expires_at,
        revoked_at: record.revoked_at,
    })
}

fn is_bootstrap(record: &ApiTokenRecord) -> bool {
    record.scopes == [AGENT_BOOTSTRAP_SCOPE]
}

#[utoipa::path(
    get,
    path = "/agents/bootstrap-tokens",
    tag = "agents",
    security(("bearer" = [])),
    responses((status = 200, description = "every agent bootstrap token, oldest first, without secrets (admin)", body = Vec<BootstrapTokenSummary>), ProblemResponses)
)]
pub(crate) async fn list_bootstrap_tokens(
    State(state): State<ServerState>,
    headers: HeaderMap,
) -> Result<Json<Vec<BootstrapTokenSummary>>, ServerError> {
    authorize(&state, &headers, Role::Admin).await?;
    let tokens = state.store().list_api_tokens().await?;
    let bindings: std::collections::HashMap<Uuid, BootstrapBinding> = state
        .store()
        .list_bootstrap_bindings()
        .await?
        .into_iter()
        .map(|b| (b.token_id, b))
        .collect();
    // A bootstrap token without a binding (made before bindings existed) registers
    // nothing and is not listed.
    tokens
        .into_iter()
        .filter(is_bootstrap)
        .filter_map(|t| bindings.get(&t.id).map(|b| bootstrap_summary(t, b)))
        .collect::<Result<Vec<_>, _>>()
        .map(Json)
}

#[utoipa::path(
    post,
    path = "/agents/bootstrap-tokens/{id}/revoke",
    tag = "agents",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "bootstrap token id")),
    responses((status = 200, description = "revoked (admin): it registers no agent from now on; revoking a spent or revoked token answers it again", body = BootstrapTokenSummary), ProblemResponses)
)]
pub(crate) async fn revoke_bootstrap_token(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<BootstrapTokenSummary>, ServerError> {
    let caller = authorize(&state, &headers, Role::Admin).await?;
    let id = parse_id("bootstrap token", &id, Uuid::parse_str)?;
    let not_found =
        || ServerError::NotFound(format!("agent bootstrap token `{id}` does not exist"));
    // Look before writing: an API token's id must not be revoked through this route.
    let tokens = state.store().list_api_tokens().await?;
    if !tokens.iter().any(|t| t.id == id && is_bootstrap(t)) {
        return Err(not_found());
    }
    let binding = state
        .store()
        .bootstrap_binding(id)
        .await?
        .ok_or_else(not_found)?;
    let record = match state.store().revoke_api_token(id, state.now()).await {
        Err(StoreError::NotFound { .. }) => return Err(not_found()),
        other => other?,
    };
    tracing::info!(token = %id, agent = binding.agent_name, by = caller.name, "agent bootstrap token revoked");
    bootstrap_summary(record, &binding).map(Json)
}

#[utoipa::path(
    get,
    path = "/agents",
    tag = "agents",
    security(("bearer" = [])),
    responses((status = 200, description = "every registered agent, oldest first, without credentials", body = Vec<AgentSummary>), ProblemResponses)
)]
pub(crate) async fn list_agents(
    State(state): State<ServerState>,
    headers: HeaderMap,
) -> Result<Json<Vec<AgentSummary>>, ServerError> {
    authorize(&state, &headers, Role::Viewer).await?;
    Ok(Json(state.agent_hub().summaries()))
}

#[utoipa::path(
    get,
    path = "/agents/{id}",
    tag = "agents",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "agent id or name")),
    responses((status = 200, description = "the agent", body = AgentSummary), ProblemResponses)
)]
pub(crate) async fn get_agent(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<AgentSummary>, ServerError> {
    authorize(&state, &headers, Role::Viewer).await?;
    let id = agent_ref(&state, &id).await?;
    state
        .agent_hub()
        .summary(id)
        .map(Json)
        .ok_or_else(|| ServerError::NotFound(format!("agent `{id}` does not exist")))
}

#[utoipa::path(
    post,
    path = "/agents/{id}/revoke",
    tag = "agents",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "agent id or name")),
    responses((status = 200, description = "revoked (admin): its credential is refused at once and its in-flight tasks fail as retryable", body = AgentSummary), ProblemResponses)
)]
pub(crate) async fn revoke_agent(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<AgentSummary>, ServerError> {
    let caller = authorize(&state, &headers, Role::Admin).await?;
    let id = agent_ref(&state, &id).await?;
    crate::agent_records::revoke(&state, id, &caller.name)
        .await
        .map(Json)
}

#[utoipa::path(
    put,
    path = "/agents/{id}/labels",
    tag = "agents",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "agent id or name")),
    request_body = SetAgentLabelsRequest,
    responses((status = 200, description = "changed (admin): targets select the agent by these labels from now on, on every replica; `version` other than the agent's `labels_version` answers 409", body = AgentSummary), ProblemResponses)
)]
pub(crate) async fn set_agent_labels(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SetAgentLabelsRequest>,
) -> Result<Json<AgentSummary>, ServerError> {
    let caller = authorize(&state, &headers, Role::Admin).await?;
    let id = agent_ref(&state, &id).await?;
    let not_found = || ServerError::NotFound(format!("agent `{id}` does not exist"));
    let record = match state
        .store()
        .set_agent_labels(id, &req.labels, req.version)
        .await
    {
        Err(StoreError::NotFound { .. }) => return Err(not_found()),
        other => other?,
    };
    let hub = state.agent_hub();
    hub.upsert_agent(agent_info(&record)?);
    // Other replicas reload the record now (as for a registration), so that no replica
    // keeps selecting the agent by its old labels.
    hub.announce_agent(id);
    tracing::info!(agent = %id, name = record.name, labels = %record.labels, version = record.labels_version, by = caller.name, "agent labels changed");
    hub.summary(id).map(Json).ok_or_else(not_found)
}
