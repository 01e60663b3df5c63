//! Stored agents as the agent hub sees them, and their capabilities as stored (wire names).

use deploy_api::agent::{AgentCapability, AgentSummary};
use deploy_core::{AgentId, Name};
use deploy_exec::agent::{AgentHub, AgentInfo, capability_name};
use deploy_store::{AgentRecord, Store, StoreError};

use crate::errors::ServerError;
use crate::state::ServerState;

/// The capabilities' wire names, as stored.
pub(crate) fn capability_names(capabilities: &[AgentCapability]) -> Vec<String> {
    capabilities
        .iter()
        .map(|c| capability_name(*c).to_owned())
        .collect()
}

/// The capabilities of stored names; unknown names are skipped (with a warning naming
/// `owner`).
pub(crate) fn capabilities_of(
    names: &[String],
    owner: &dyn std::fmt::Display,
) -> Vec<AgentCapability> {
    names
        .iter()
        .filter_map(|c| match c.as_str() {
            "docker" => Some(AgentCapability::Docker),
            "compose" => Some(AgentCapability::Compose),
            other => {
                tracing::warn!(owner = %owner, capability = other, "unknown agent capability skipped");
                None
            }
        })
        .collect()
}

pub(crate) fn stored_name(column: &'static str, value: &str) -> Result<Name, ServerError> {
    Name::parse(value).map_err(|e| {
        ServerError::Store(StoreError::Corrupt {
            column,
            value: value.to_owned(),
            reason: e.to_string(),
        })
    })
}

/// The hub's view of a stored agent; unknown capability names are skipped (with a warning).
pub fn agent_info(record: &AgentRecord) -> Result<AgentInfo, ServerError> {
    let name = stored_name("agents.name", &record.name)?;
    let capabilities = capabilities_of(&record.capabilities, &record.id);
    Ok(AgentInfo {
        id: record.id,
        name,
        labels: record.labels.clone(),
        labels_version: record.labels_version,
        capabilities,
        credential_hash: record.credential_hash.clone(),
        created_at: record.created_at,
        last_seen_at: record.last_seen_at,
        revoked_at: record.revoked_at,
    })
}

/// Loads every stored agent into `hub` (deployd calls it once at start); returns how many.
pub async fn load_agents(store: &dyn Store, hub: &AgentHub) -> Result<usize, ServerError> {
    let records = store.list_agents().await?;
    for record in &records {
        hub.upsert_agent(agent_info(record)?);
    }
    Ok(records.len())
}

/// Revokes agent `id` in the store and the hub (its credential is refused at once,
/// its in-flight tasks fail as retryable), for `by`; the API and the console call it.
pub(crate) async fn revoke(
    state: &ServerState,
    id: AgentId,
    by: &str,
) -> Result<AgentSummary, ServerError> {
    let record = match state.store().revoke_agent(id, state.now()).await {
        Err(StoreError::NotFound { .. }) => {
            return Err(ServerError::NotFound(format!(
                "agent `{id}` does not exist"
            )));
        }
        other => other?,
    };
    let hub = state.agent_hub();
    hub.upsert_agent(agent_info(&record)?);
    hub.revoke_agent(id, record.revoked_at.unwrap_or_else(|| state.now()));
    tracing::info!(agent = %id, name = record.name, by, "agent revoked");
    hub.summary(id)
        .ok_or_else(|| ServerError::NotFound(format!("agent `{id}` does not exist")))
}
