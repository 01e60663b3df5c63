//! The console's jobs pages: the list, a job (its waves and tasks, live), its cancel and rollback, a task and its log.
//!
//! Writes go through the same engine calls as the API's (`routes/jobs.rs`), live
//! updates through the same event streams (`routes/job_streams.rs`,
//! `routes/tasks.rs`), authenticated by the session cookie instead of a bearer token.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use deploy_api::Role;
use deploy_core::{EnvironmentId, JobId, JobStatus, PromotionId, ReleaseId};
use deploy_store::{JobQuery, TaskCounts};
use serde::Deserialize;

use super::page::{self, Chrome, PageError, Section, Time, UiQuery, time_or_dash};
use super::session::{ConsoleUser, CsrfForm, Empty, PageResult};
use crate::request_id::RequestId;
use crate::routes::job_streams::Events;
use crate::state::ServerState;

pub(crate) mod job;
mod task;

/// Jobs per page of the list.
const PAGE_SIZE: u32 = 50;

/// The jobs routes.
pub(super) fn routes() -> Router<ServerState> {
    Router::new()
        .route("/ui/jobs", get(list))
        .route("/ui/jobs/{id}", get(job::show))
        .route("/ui/jobs/{id}/live", get(job::live))
        .route("/ui/jobs/{id}/events", get(events))
        .route("/ui/jobs/{id}/cancel", post(cancel))
        .route("/ui/jobs/{id}/rollback", post(rollback))
        .route("/ui/tasks/{id}", get(task::show))
        .route("/ui/tasks/{id}/log/events", get(task::log_events))
}

/// A job id of a path: 400 when it is none, 404 when no job has it (by the caller).
fn job_id(id: &str) -> Result<JobId, PageError> {
    Ok(crate::params::parse_id("job", id, JobId::parse)?)
}

/// The first 8 characters of an id, for headings and links (UUID v7: the time part).
fn short(id: impl std::fmt::Display) -> String {
    id.to_string().chars().take(8).collect()
}

/// Where a console stream resumes: as the API's streams (`Last-Event-ID` wins over
/// the `after` of the query, the position the page holds).
fn resume_after(headers: &HeaderMap, after: Option<u64>) -> Result<u64, PageError> {
    Ok(crate::sse::resume_position(
        headers,
        after,
        "a stream position",
    )?)
}

/// The query of a stream: where to resume.
#[derive(Debug, Deserialize)]
struct AfterQuery {
    after: Option<u64>,
}

/// Names of the entities a page of jobs refers to, each read once.
#[derive(Default)]
struct Names {
    environments: HashMap<EnvironmentId, String>,
    releases: HashMap<ReleaseId, String>,
    initiators: HashMap<PromotionId, String>,
}

impl Names {
    /// The environment's name (its id when it cannot be read).
    async fn environment(&mut self, state: &ServerState, id: EnvironmentId) -> String {
        if let Some(n) = self.environments.get(&id) {
            return n.clone();
        }
        let name = state
            .store()
            .get_environment(id)
            .await
            .map_or_else(|_| id.to_string(), |e| e.name.to_string());
        self.environments.insert(id, name.clone());
        name
    }

    /// The release's name (its id when it cannot be read).
    async fn release(&mut self, state: &ServerState, id: ReleaseId) -> String {
        if let Some(n) = self.releases.get(&id) {
            return n.clone();
        }
        let name = state
            .store()
            .get_release(id)
            .await
            .map_or_else(|_| id.to_string(), |r| r.name.to_string());
        self.releases.insert(id, name.clone());
        name
    }

    /// Who asked for the job: the token that requested its promotion.
    async fn initiator(&mut self, state: &ServerState, id: PromotionId) -> String {
        if let Some(n) = self.initiators.get(&id) {
            return n.clone();
        }
        let name = state
            .store()
            .get_promotion(id)
            .await
            .map_or_else(|_| "—".to_owned(), |p| p.requested_by);
        self.initiators.insert(id, name.clone());
        name
    }
}

/// The list's query; empty values (the selects' "all") mean no filter.
#[derive(Debug, Deserialize)]
struct ListQuery {
    environment: Option<String>,
    status: Option<String>,
    before: Option<String>,
}

/// An option of a filter select.
struct Choice {
    id: String,
    name: String,
    selected: bool,
}

/// A status option of the filter.
struct StatusChoice {
    name: &'static str,
    selected: bool,
}

/// A row of the list.
struct JobRow {
    id: JobId,
    short_id: String,
    is_rollback: bool,
    environment: String,
    release: String,
    status: &'static str,
    winding_down: bool,
    created: Time,
    completed: String,
    initiator: String,
    tasks: TaskCounts,
}

/// The jobs list.
#[derive(askama::Template)]
#[template(path = "console/jobs.html")]
struct JobsPage {
    chrome: Chrome,
    environments: Vec<Choice>,
    statuses: Vec<StatusChoice>,
    jobs: Vec<JobRow>,
    newest_href: Option<String>,
    older_href: Option<String>,
}

/// A query value, or `None` when empty.
fn given(v: Option<&String>) -> Option<&str> {
    v.map(|s| s.trim()).filter(|s| !s.is_empty())
}

/// `GET /ui/jobs`: jobs newest first, by environment and status, 50 a page.
async fn list(
    State(state): State<ServerState>,
    user: ConsoleUser,
    UiQuery(query): UiQuery<ListQuery>,
) -> PageResult {
    let environment =
        crate::resolve::environment_filter(&state, given(query.environment.as_ref())).await?;
    let status = given(query.status.as_ref())
        .map(crate::routes::jobs::job_status)
        .transpose()?;
    let before = crate::params::before(given(query.before.as_ref()), "job", JobId::parse)?;
    // Summaries: the job rows and their tasks counted by state, not every task of
    // every listed job, so a page costs the same however large its jobs are.
    let jobs = state
        .store()
        .list_job_summaries(&JobQuery {
            environment,
            status,
            before,
            limit: PAGE_SIZE,
            ..JobQuery::default()
        })
        .await?;
    let mut names = Names::default();
    let all_environments = state
        .store()
        .list_environments(None, state.config().max_page_size)
        .await?;
    for e in &all_environments {
        names.environments.insert(e.id, e.name.to_string());
    }
    let mut rows = Vec::with_capacity(jobs.len());
    for j in &jobs {
        rows.push(JobRow {
            id: j.id,
            short_id: short(j.id),
            is_rollback: j.rollback_of.is_some(),
            environment: names.environment(&state, j.environment_id).await,
            // Read with the summary: no read per release or promotion.
            release: j
                .release_name
                .clone()
                .unwrap_or_else(|| j.release_id.to_string()),
            status: j.status.as_str(),
            winding_down: j.winding_down,
            created: Time(j.created_at),
            completed: time_or_dash(j.completed_at),
            initiator: j.requested_by.clone().unwrap_or_else(|| "—".to_owned()),
            tasks: j.tasks,
        });
    }
    let filter = |before: Option<JobId>| {
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(e) = environment {
            q.push(("environment", e.to_string()));
        }
        if let Some(s) = status {
            q.push(("status", s.as_str().to_owned()));
        }
        if let Some(b) = before {
            q.push(("before", b.to_string()));
        }
        let q = serde_urlencoded::to_string(&q).unwrap_or_default();
        if q.is_empty() {
            "/ui/jobs".to_owned()
        } else {
            format!("/ui/jobs?{q}")
        }
    };
    let older = crate::params::next_before(&jobs, PAGE_SIZE, |j| j.id);
    let mut environments: Vec<Choice> = all_environments
        .iter()
        .map(|e| Choice {
            id: e.id.to_string(),
            name: e.name.to_string(),
            selected: Some(e.id) == environment,
        })
        .collect();
    environments.sort_by(|a, b| a.name.cmp(&b.name));
    page::render(&JobsPage {
        chrome: Chrome::new(&user, Section::Jobs),
        environments,
        statuses: JobStatus::ALL
            .iter()
            .map(|s| StatusChoice {
                name: s.as_str(),
                selected: Some(*s) == status,
            })
            .collect(),
        jobs: rows,
        newest_href: before.map(|_| filter(None)),
        older_href: older.map(|b| filter(Some(b))),
    })
}

/// `GET /ui/jobs/{id}/events`: the job's events as the API streams them
/// (`GET /api/v1/jobs/{id}/events`), for the page's live region.
async fn events(
    State(state): State<ServerState>,
    _user: ConsoleUser,
    headers: HeaderMap,
    Path(id): Path<String>,
    UiQuery(query): UiQuery<AfterQuery>,
) -> Result<Response, PageError> {
    let id = job_id(&id)?;
    let after = resume_after(&headers, query.after)?;
    // Subscribed before the job is read: no transition falls between the two.
    let wake = state.engine().subscribe();
    // The status row only: a job's tasks (thousands) are not needed to follow it.
    let (status, winding_down) = state.store().job_status(id).await?;
    let settled = !status.is_active() && !winding_down;
    Ok(crate::sse::follow(
        state,
        after,
        Events::of(id, settled, wake),
    ))
}

/// `POST /ui/jobs/{id}/cancel` (deployer): as `POST /api/v1/jobs/{id}/cancel`.
async fn cancel(
    State(state): State<ServerState>,
    user: ConsoleUser,
    Extension(request): Extension<RequestId>,
    Path(id): Path<String>,
    CsrfForm(Empty {}): CsrfForm<Empty>,
) -> Result<Response, PageError> {
    user.require(Role::Deployer)?;
    let id = job_id(&id)?;
    state
        .engine()
        .cancel_job(id, &request.attribute(&user.name))
        .await?;
    Ok(Redirect::to(&format!("/ui/jobs/{id}")).into_response())
}

/// The rollback form.
#[derive(Debug, Deserialize)]
struct RollbackForm {
    reason: Option<String>,
}

/// `POST /ui/jobs/{id}/rollback` (deployer): as `POST /api/v1/jobs/{id}/rollback`;
/// back to the job rolled back, whose status follows its rollback job's.
async fn rollback(
    State(state): State<ServerState>,
    user: ConsoleUser,
    Extension(request): Extension<RequestId>,
    Path(id): Path<String>,
    CsrfForm(form): CsrfForm<RollbackForm>,
) -> Result<Response, PageError> {
    user.require(Role::Deployer)?;
    let id = job_id(&id)?;
    let reason = given(form.reason.as_ref()).unwrap_or("rolled back from the console");
    crate::routes::jobs::rollback(&state, id, reason, &user.name, &request).await?;
    Ok(Redirect::to(&format!("/ui/jobs/{id}")).into_response())
}
