//! Agent authentication, server side: which agent a credential belongs to, the bearer of an agent route, and what a rotation changes.
//!
//! The hub routes work to agents and keeps their records current on every replica
//! (the relay reloads a record changed elsewhere); it checks no credential. A
//! credential authenticates when its sha256 is the credential hash of an unrevoked
//! agent's record as this replica's hub holds it now, so a rotation or a revocation on
//! any replica refuses the old credential as soon as the record here changes. The
//! hash-to-agent memory ([`AgentKeys`]) spares the lookup; a hash it does not hold is
//! looked up in the store once (an agent that registered or rotated on another replica
//! a moment ago, or the first request after a restart): no poll of a known agent reads
//! the database.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use axum::http::HeaderMap;
use deploy_core::{AgentId, Digest};
use deploy_exec::agent::{AgentHub, AgentInfo};
use deploy_store::StoreError;

use crate::agent_records::agent_info;
use crate::auth::bearer;
use crate::errors::ServerError;
use crate::state::ServerState;
use crate::tokens::hash_token;

/// How many credential hashes a replica remembers; past it the memory starts afresh
/// (a miss costs one store read).
const MAX_KEYS: usize = 100_000;

/// The answer to an agent credential that does not authenticate.
pub(crate) fn refused() -> ServerError {
    ServerError::Unauthenticated("unknown or revoked agent credential")
}

/// Credential hash -> agent, as last seen to authenticate on this replica; each hit is
/// checked against the hub's current record.
#[derive(Debug, Default)]
pub(crate) struct AgentKeys {
    by_hash: Mutex<HashMap<Digest, AgentId>>,
}

impl AgentKeys {
    fn map(&self) -> MutexGuard<'_, HashMap<Digest, AgentId>> {
        // Every update is one insert, remove or clear: a poisoned map is still whole.
        self.by_hash.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The agent `hash` authenticates now, from memory only (no store read).
    pub(crate) fn known(&self, hub: &AgentHub, hash: &Digest) -> Option<AgentId> {
        let id = *self.map().get(hash)?;
        if holds(hub.agent(id).as_ref(), hash) {
            return Some(id);
        }
        // Rotated away or revoked (here or on another replica): forget it.
        self.map().remove(hash);
        None
    }

    fn remember(&self, hash: Digest, id: AgentId) {
        let mut map = self.map();
        if map.len() >= MAX_KEYS {
            map.clear();
        }
        map.insert(hash, id);
    }
}

/// True when `info` is an unrevoked agent whose credential hashes to `hash`.
fn holds(info: Option<&AgentInfo>, hash: &Digest) -> bool {
    info.is_some_and(|a| a.revoked_at.is_none() && a.credential_hash.as_ref() == Some(hash))
}

/// The agent whose credential hashes to `hash`: from memory, else from the store (the
/// hub learns the record then, unless it knows the agent already: its copy is at least
/// as new, and a revocation it knows is never undone).
pub(crate) async fn authenticate(
    state: &ServerState,
    hash: &Digest,
) -> Result<Option<AgentId>, ServerError> {
    let (keys, hub) = (state.agent_keys(), state.agent_hub());
    if let Some(id) = keys.known(hub, hash) {
        return Ok(Some(id));
    }
    let Some(record) = state.store().find_agent_by_credential(hash).await? else {
        return Ok(None);
    };
    if record.revoked_at.is_some() {
        return Ok(None);
    }
    if hub.agent(record.id).is_none() {
        hub.upsert_agent(agent_info(&record)?);
    }
    let mut info = hub.agent(record.id);
    if !holds(info.as_ref(), hash) && info.as_ref().is_some_and(|a| a.revoked_at.is_none()) {
        // This replica has not heard of the rotation yet: the store's record is newer.
        hub.upsert_agent(agent_info(&record)?);
        info = hub.agent(record.id);
    }
    if !holds(info.as_ref(), hash) {
        return Ok(None);
    }
    keys.remember(hash.clone(), record.id);
    Ok(Some(record.id))
}

/// The calling agent of an agent route, from its bearer credential (401 otherwise).
pub(crate) async fn authenticate_agent(
    state: &ServerState,
    headers: &HeaderMap,
) -> Result<AgentId, ServerError> {
    let hash = hash_token(bearer(headers)?);
    authenticate(state, &hash).await?.ok_or_else(refused)
}

/// After the store made `hash` agent `id`'s credential: the hub takes the stored record
/// (announced, so every replica refuses the old credential once it reloads it). A
/// revoked or unknown agent is refused (401): the store's update is conditional on the
/// agent being unrevoked, and a revocation that reached the hub meanwhile is kept by
/// it, so a rotation racing a revocation cannot re-admit the agent.
pub(crate) async fn rotated(
    state: &ServerState,
    id: AgentId,
    hash: &Digest,
) -> Result<(), ServerError> {
    let record = match state.store().get_agent(id).await {
        Err(StoreError::NotFound { .. }) => return Err(refused()),
        other => other?,
    };
    let hub = state.agent_hub();
    hub.upsert_agent(agent_info(&record)?);
    hub.announce_agent(id);
    if !holds(hub.agent(id).as_ref(), hash) {
        return Err(refused());
    }
    state.agent_keys().remember(hash.clone(), id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use deploy_core::testing::{agent_id, digest, ts};

    use super::*;

    fn agent(n: u64, hash: u64) -> AgentInfo {
        AgentInfo {
            id: agent_id(n),
            name: deploy_core::Name::parse(&format!("agent-{n}")).unwrap(),
            labels: deploy_core::Labels::default(),
            labels_version: 1,
            capabilities: Vec::new(),
            credential_hash: Some(digest(hash)),
            created_at: ts(1),
            last_seen_at: None,
            revoked_at: None,
        }
    }

    #[test]
    fn a_remembered_credential_authenticates_while_the_hub_record_holds_it() {
        let hub = AgentHub::new(Duration::from_secs(15));
        let keys = AgentKeys::default();
        hub.upsert_agent(agent(1, 1));
        hub.upsert_agent(agent(2, 2));
        keys.remember(digest(1), agent_id(1));
        keys.remember(digest(2), agent_id(2));
        assert_eq!(keys.known(&hub, &digest(1)), Some(agent_id(1)));
        assert_eq!(keys.known(&hub, &digest(3)), None, "never seen");

        // Rotated (on any replica: the hub's record changed): the old one is refused.
        let mut rotated = agent(1, 11);
        rotated.labels_version = 2;
        hub.upsert_agent(rotated);
        assert_eq!(keys.known(&hub, &digest(1)), None);
        assert!(!keys.map().contains_key(&digest(1)), "forgotten");

        // Revoked: refused at once, and a stale record cannot bring it back.
        assert!(hub.revoke_agent(agent_id(2), ts(9)));
        assert_eq!(keys.known(&hub, &digest(2)), None);
        hub.upsert_agent(agent(2, 2));
        keys.remember(digest(2), agent_id(2));
        assert_eq!(keys.known(&hub, &digest(2)), None);
    }
}
