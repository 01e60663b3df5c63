//! `GET /api/v1/audit` (admin): the audit log of writes, newest first, filtered by actor and entity (`audit.rs` records it).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use deploy_api::{AuditEntry, AuditList, Role};
use deploy_store::AuditFilter;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::authorize;
use crate::errors::ServerError;
use crate::openapi::ProblemResponses;
use crate::params;
use crate::state::ServerState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Only writes by this token or agent name.
    actor: Option<String>,
    /// Only writes to this entity id.
    entity: Option<String>,
    /// Only rows older than this sequence number (the `next_before` of the previous page).
    before: Option<u64>,
    /// Page size, 1 to the server's maximum.
    limit: Option<u32>,
}

/// The audit log, newest first (admin).
#[utoipa::path(get, path = "/audit", tag = "audit", security(("bearer" = [])), params(AuditQuery), responses((status = 200, description = "a page of the audit log, newest first (admin)", body = AuditList), ProblemResponses))]
pub(crate) async fn list_audit(
    State(state): State<ServerState>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditList>, ServerError> {
    authorize(&state, &headers, Role::Admin).await?;
    let query = params::query(query)?;
    let limit = params::page_size(&state, query.limit)?;
    let filter = AuditFilter {
        actor: query.actor,
        entity: query.entity,
        before: query.before,
    };
    let rows = state.store().list_audit(&filter, limit).await?;
    let next_before = params::next_before(&rows, limit, |r| r.seq);
    let parse = |text: Option<String>| text.and_then(|t| serde_json::from_str(&t).ok());
    let entries = rows
        .into_iter()
        .map(|r| AuditEntry {
            seq: r.seq,
            at: r.at,
            actor_kind: r.actor_kind.as_str().to_owned(),
            actor_id: r.actor_id,
            actor_name: r.actor_name,
            method: r.method,
            route: r.route,
            path: r.path,
            entity_id: r.entity_id,
            status: r.status,
            remote: r.remote,
            before: parse(r.before),
            after: parse(r.after),
        })
        .collect();
    Ok(Json(AuditList {
        entries,
        next_before,
    }))
}
