//! The console's agents page: every registered agent with its labels, last poll, version, connection and in-flight work; admins revoke one.

use std::collections::HashMap;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use deploy_api::Role;
use deploy_core::AgentId;
use serde::Deserialize;

use super::page::{self, Chrome, PageError, Section};
use super::session::{ConsoleUser, CsrfForm, Empty, PageResult};
use crate::state::ServerState;

/// Agents per page.
const PAGE_SIZE: usize = 50;

/// The agents routes.
pub(super) fn routes() -> Router<ServerState> {
    Router::new()
        .route("/ui/agents", get(list))
        .route("/ui/agents/{id}/revoke", post(revoke))
}

/// The list's query: agents older than `before` (an agent id; ids are time-ordered).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentsQuery {
    before: Option<String>,
}

/// The agents page.
#[derive(askama::Template)]
#[template(path = "console/agents.html")]
struct AgentsPage {
    chrome: Chrome,
    agents: Vec<AgentRow>,
    older: Option<String>,
}

/// One agent.
struct AgentRow {
    id: String,
    name: String,
    labels: Vec<(String, String)>,
    capabilities: String,
    last_seen: String,
    version: String,
    /// `connected`, `disconnected` or `revoked`.
    status: &'static str,
    in_flight: u32,
}

/// `GET /ui/agents`: the hub's view of every agent (as the API's `GET /agents`),
/// newest first, 50 per page, with each agent's version from one store query.
async fn list(
    State(state): State<ServerState>,
    user: ConsoleUser,
    query: Result<Query<AgentsQuery>, QueryRejection>,
) -> PageResult {
    let Query(query) = query.map_err(|e| PageError::bad_request(e.body_text()))?;
    let before = query
        .before
        .as_deref()
        .map(AgentId::parse)
        .transpose()
        .map_err(|e| PageError::bad_request(format!("`before` is not an agent id: {e}")))?;
    let mut summaries = state.agent_hub().summaries();
    summaries.sort_by_key(|s| std::cmp::Reverse(s.id));
    let page: Vec<_> = summaries
        .into_iter()
        .filter(|s| before.is_none_or(|b| s.id < b))
        .take(PAGE_SIZE + 1)
        .collect();
    let versions: HashMap<AgentId, String> = state
        .store()
        .list_agents()
        .await?
        .into_iter()
        .map(|a| (a.id, a.agent_version))
        .collect();
    let older = (page.len() > PAGE_SIZE).then(|| page[PAGE_SIZE - 1].id.to_string());
    let agents = page
        .into_iter()
        .take(PAGE_SIZE)
        .map(|s| AgentRow {
            id: s.id.to_string(),
            name: s.name.as_str().to_owned(),
            labels: s
                .labels
                .as_map()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            capabilities: crate::agent_records::capability_names(&s.capabilities).join(", "),
            last_seen: page::time_or_dash(s.last_seen_at),
            version: versions.get(&s.id).cloned().unwrap_or_default(),
            status: if s.revoked_at.is_some() {
                "revoked"
            } else if s.active {
                "connected"
            } else {
                "disconnected"
            },
            in_flight: s.in_flight,
        })
        .collect();
    page::render(&AgentsPage {
        chrome: Chrome::new(&user, Section::Agents),
        agents,
        older,
    })
}

/// `POST /ui/agents/{id}/revoke` (admin, as the API's): revokes the agent, back to the list.
async fn revoke(
    State(state): State<ServerState>,
    user: ConsoleUser,
    Path(id): Path<String>,
    CsrfForm(Empty {}): CsrfForm<Empty>,
) -> Result<Response, PageError> {
    user.require(Role::Admin)?;
    let id = AgentId::parse(&id)
        .map_err(|_| PageError::not_found(format!("agent `{id}` does not exist")))?;
    crate::agent_records::revoke(&state, id, &user.name).await?;
    Ok(Redirect::to("/ui/agents").into_response())
}
