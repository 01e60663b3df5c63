//! The console's promotions pages: the approval queue (pending first, any status on request) with approve and reject, through the same engine path as the API.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use askama::Template;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Redirect;
use axum::routing::{get, post};
use deploy_api::{ApprovePromotionRequest, Role};
use deploy_core::{Environment, EnvironmentId, PromotionId, PromotionStatus, ReleaseId};
use deploy_store::StoreError;
use serde::Deserialize;

use super::page::{self, Chrome, PageError, Section, Time};
use super::session::{ConsoleUser, CsrfForm, Empty, PageResult};
use crate::params::parse_id;
use crate::routes::promotions as api;
use crate::state::ServerState;

/// Promotions per page.
const PAGE: u32 = 50;

/// The promotions routes.
pub(super) fn routes() -> Router<ServerState> {
    Router::new()
        .route("/ui/promotions", get(list))
        .route("/ui/promotions/{id}/approve", post(approve))
        .route("/ui/promotions/{id}/reject", post(reject))
}

/// The queue's query: `?status=requested|approved|rejected|all` (default
/// `requested`, the pending ones) and `?before=<promotion id>`.
#[derive(Debug, Deserialize)]
pub(super) struct QueueQuery {
    status: Option<String>,
    before: Option<String>,
}

/// Which promotions the page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filter {
    Only(PromotionStatus),
    All,
}

impl Filter {
    fn parse(value: Option<&str>) -> Result<Self, PageError> {
        match value.unwrap_or("") {
            "" | "requested" | "pending" => Ok(Self::Only(PromotionStatus::Requested)),
            "approved" => Ok(Self::Only(PromotionStatus::Approved)),
            "rejected" => Ok(Self::Only(PromotionStatus::Rejected)),
            "all" => Ok(Self::All),
            other => Err(PageError::bad_request(format!(
                "promotion status `{other}` is unknown; expected requested, approved, rejected or all"
            ))),
        }
    }

    /// The query value naming this filter.
    fn query(self) -> &'static str {
        match self {
            Self::Only(s) => s.as_str(),
            Self::All => "all",
        }
    }
}

/// A link of the status filter.
struct FilterLink {
    query: &'static str,
    label: &'static str,
    current: bool,
}

/// One promotion of the queue.
struct PromotionRow {
    id: String,
    release_id: String,
    release: String,
    environment: String,
    requested_by: String,
    approvals: usize,
    required: u32,
    approvers: String,
    requested: Time,
    status: &'static str,
    pending: bool,
    decided_by: Option<String>,
    reason: Option<String>,
}

#[derive(Template)]
#[template(path = "console/promotions.html")]
struct PromotionsPage {
    chrome: Chrome,
    filters: Vec<FilterLink>,
    filter: &'static str,
    rows: Vec<PromotionRow>,
    older: Option<String>,
    paged: bool,
}

/// `GET /ui/promotions`.
async fn list(
    State(state): State<ServerState>,
    user: ConsoleUser,
    query: Result<Query<QueueQuery>, QueryRejection>,
) -> PageResult {
    let Query(query) = query.map_err(|e| PageError::bad_request(e.body_text()))?;
    let filter = Filter::parse(query.status.as_deref())?;
    let before = query
        .before
        .as_deref()
        .filter(|b| !b.is_empty())
        .map(|b| {
            PromotionId::parse(b)
                .map_err(|e| PageError::bad_request(format!("promotion id `{b}` is invalid: {e}")))
        })
        .transpose()?;
    let status = match filter {
        Filter::Only(s) => Some(s),
        Filter::All => None,
    };
    let store = state.store();
    let promotions = store.list_promotions(None, status, before, PAGE).await?;
    let older = crate::params::next_before(&promotions, PAGE, |p| p.id.to_string());

    // A page names few distinct releases and environments: look each up once.
    let mut releases: HashMap<ReleaseId, String> = HashMap::new();
    let mut environments: HashMap<EnvironmentId, Option<Environment>> = HashMap::new();
    let mut rows = Vec::with_capacity(promotions.len());
    for p in &promotions {
        if let Entry::Vacant(slot) = releases.entry(p.release_id) {
            let name = match store.get_release(p.release_id).await {
                Ok(r) => r.name.to_string(),
                Err(StoreError::NotFound { .. }) => p.release_id.to_string(),
                Err(e) => return Err(e.into()),
            };
            slot.insert(name);
        }
        if let Entry::Vacant(slot) = environments.entry(p.environment_id) {
            let environment = match store.get_environment(p.environment_id).await {
                Ok(e) => Some(e),
                Err(StoreError::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            };
            slot.insert(environment);
        }
        let environment = environments.get(&p.environment_id).and_then(Option::as_ref);
        rows.push(PromotionRow {
            id: p.id.to_string(),
            release_id: p.release_id.to_string(),
            release: releases
                .get(&p.release_id)
                .cloned()
                .unwrap_or_else(|| p.release_id.to_string()),
            environment: environment
                .map_or_else(|| p.environment_id.to_string(), |e| e.name.to_string()),
            requested_by: p.requested_by.clone(),
            approvals: p.approvals.len(),
            // Without a policy one approval by a deployer decides (the engine's rule).
            required: environment
                .and_then(|e| e.approval.as_ref())
                .map_or(1, |policy| policy.required_approvals),
            approvers: p
                .approvals
                .iter()
                .map(|a| a.by.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            requested: Time(p.requested_at),
            status: p.status.as_str(),
            pending: p.status == PromotionStatus::Requested,
            decided_by: p.decided_by.clone(),
            reason: p.rejection_reason.clone(),
        });
    }
    let filters = [
        (Filter::Only(PromotionStatus::Requested), "Pending"),
        (Filter::Only(PromotionStatus::Approved), "Approved"),
        (Filter::Only(PromotionStatus::Rejected), "Rejected"),
        (Filter::All, "All"),
    ]
    .into_iter()
    .map(|(f, label)| FilterLink {
        query: f.query(),
        label,
        current: f == filter,
    })
    .collect();
    page::render(&PromotionsPage {
        chrome: Chrome::new(&user, Section::Promotions),
        filters,
        filter: filter.query(),
        rows,
        older,
        paged: before.is_some(),
    })
}

/// `POST /ui/promotions/{id}/approve`: the API's approval (the environment's
/// policy applies; the approval completing the count creates the job with the
/// default settings). Goes to the job's page when there is a job, else back to
/// the queue.
async fn approve(
    State(state): State<ServerState>,
    user: ConsoleUser,
    Path(id): Path<String>,
    CsrfForm(Empty {}): CsrfForm<Empty>,
) -> Result<Redirect, PageError> {
    user.require(Role::Deployer)?;
    let id = parse_id("promotion", &id, PromotionId::parse)?;
    let (_, response) = api::approve(
        &state,
        &user.caller(),
        id,
        ApprovePromotionRequest::default(),
    )
    .await?;
    Ok(match response.job {
        Some(job) => Redirect::to(&format!("/ui/jobs/{}", job.id)),
        None => Redirect::to("/ui/promotions"),
    })
}

/// The reject form.
#[derive(Debug, Deserialize)]
pub(super) struct RejectForm {
    #[serde(default)]
    reason: String,
}

/// `POST /ui/promotions/{id}/reject`: the API's rejection; the console asks for a reason.
async fn reject(
    State(state): State<ServerState>,
    user: ConsoleUser,
    Path(id): Path<String>,
    CsrfForm(form): CsrfForm<RejectForm>,
) -> Result<Redirect, PageError> {
    user.require(Role::Deployer)?;
    let id = parse_id("promotion", &id, PromotionId::parse)?;
    if form.reason.trim().is_empty() {
        return Err(PageError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "give a reason for the rejection",
        ));
    }
    api::reject(&state, &user.caller(), id, Some(form.reason)).await?;
    Ok(Redirect::to("/ui/promotions"))
}
