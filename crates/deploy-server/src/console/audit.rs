//! The console's audit page (admin): the audit log of writes, newest first, filtered by actor and entity, paged by sequence number.

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use deploy_api::Role;
use deploy_store::AuditFilter;
use serde::Deserialize;

use super::page::{self, Chrome, PageError, Section, Time};
use super::session::{ConsoleUser, PageResult};
use crate::state::ServerState;

/// Rows per page.
const PAGE_SIZE: u32 = 50;

/// The audit routes.
pub(super) fn routes() -> Router<ServerState> {
    Router::new().route("/ui/audit", get(list))
}

/// The page's query (the filter form's fields; empty ones mean no filter).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    actor: Option<String>,
    entity: Option<String>,
    before: Option<u64>,
}

/// The audit page.
#[derive(askama::Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    chrome: Chrome,
    actor: String,
    entity: String,
    rows: Vec<AuditRow>,
    /// The query of the next (older) page, filters kept.
    older: Option<String>,
    filtered: bool,
}

/// One audit row.
struct AuditRow {
    seq: u64,
    at: Time,
    actor_kind: &'static str,
    actor_name: String,
    actor_id: String,
    method: String,
    route: String,
    path: String,
    entity: String,
    status: u16,
    remote: String,
    before: Option<String>,
    after: Option<String>,
}

impl AuditRow {
    /// A colour class for the answer's status.
    fn status_class(&self) -> &'static str {
        match self.status {
            200..=399 => "status-succeeded",
            _ => "status-failed",
        }
    }
}

/// `GET /ui/audit` (admin, as the API's `GET /audit`): 50 rows a page, newest first.
async fn list(
    State(state): State<ServerState>,
    user: ConsoleUser,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> PageResult {
    user.require(Role::Admin)?;
    let Query(query) = query.map_err(|e| PageError::bad_request(e.body_text()))?;
    let non_empty = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let filter = AuditFilter {
        actor: non_empty(query.actor),
        entity: non_empty(query.entity),
        before: query.before,
    };
    // One more than a page: whether an older page exists.
    let mut rows = state.store().list_audit(&filter, PAGE_SIZE + 1).await?;
    let more = rows.len() > PAGE_SIZE as usize;
    rows.truncate(PAGE_SIZE as usize);
    let older = match rows.last() {
        Some(last) if more => {
            let mut fields: Vec<(&str, String)> = Vec::new();
            if let Some(a) = &filter.actor {
                fields.push(("actor", a.clone()));
            }
            if let Some(e) = &filter.entity {
                fields.push(("entity", e.clone()));
            }
            fields.push(("before", last.seq.to_string()));
            Some(serde_urlencoded::to_string(&fields).unwrap_or_default())
        }
        _ => None,
    };
    let rows = rows
        .into_iter()
        .map(|r| AuditRow {
            seq: r.seq,
            at: Time(r.at),
            actor_kind: r.actor_kind.as_str(),
            actor_name: r.actor_name,
            actor_id: r.actor_id,
            method: r.method,
            route: r.route,
            path: r.path,
            entity: r.entity_id.unwrap_or_default(),
            status: r.status,
            remote: r.remote.unwrap_or_default(),
            // Stored redacted; shown only when the row is opened.
            before: r.before,
            after: r.after,
        })
        .collect();
    page::render(&AuditPage {
        chrome: Chrome::new(&user, Section::Audit),
        filtered: filter.actor.is_some() || filter.entity.is_some(),
        actor: filter.actor.unwrap_or_default(),
        entity: filter.entity.unwrap_or_default(),
        rows,
        older,
    })
}
