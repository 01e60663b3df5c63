//! The console's releases pages: the releases newest first, and one release's components, digests, service definition and the jobs that deployed it.

use std::collections::HashMap;

use askama::Template;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use deploy_core::{EnvironmentId, JobId, Release, ReleaseId};
use deploy_store::{JobQuery, StoreError};
use serde::Deserialize;

use super::page::{self, Chrome, PageError, Section, Time};
use super::session::{ConsoleUser, PageResult};
use crate::resolve::{self, Source};
use crate::state::ServerState;

/// Releases per page of the list.
const PAGE: u32 = 50;

/// Environments whose names one query reads for the page (more than any real pipeline
/// has); an environment beyond them that the release completed in is read by id.
const ENVIRONMENT_SCAN: u32 = 100;

/// The release's jobs per page of "where it has run" (summaries, without tasks).
const RUNS_PAGE: u32 = 50;

/// The releases routes.
pub(super) fn routes() -> Router<ServerState> {
    Router::new()
        .route("/ui/releases", get(list))
        .route("/ui/releases/{id}", get(show))
}

/// The list's query: `?before=<release id>` (the last id of the previous page).
#[derive(Debug, Deserialize)]
pub(super) struct Paging {
    before: Option<String>,
}

/// One row of the releases list.
struct ReleaseRow {
    id: String,
    name: String,
    components: usize,
    created: Time,
    archived: Option<Time>,
}

#[derive(Template)]
#[template(path = "console/releases.html")]
struct ReleasesPage {
    chrome: Chrome,
    rows: Vec<ReleaseRow>,
    /// The `before` of the next (older) page, when this one is full.
    older: Option<String>,
    /// Whether this is a later page (a link back to the newest).
    paged: bool,
}

/// `GET /ui/releases`.
async fn list(
    State(state): State<ServerState>,
    user: ConsoleUser,
    query: Result<Query<Paging>, QueryRejection>,
) -> PageResult {
    let Query(query) = query.map_err(|e| PageError::bad_request(e.body_text()))?;
    let before = query
        .before
        .as_deref()
        .filter(|b| !b.is_empty())
        .map(|b| {
            ReleaseId::parse(b)
                .map_err(|e| PageError::bad_request(format!("release id `{b}` is invalid: {e}")))
        })
        .transpose()?;
    let releases = state.store().list_releases(before, PAGE).await?;
    let older = crate::params::next_before(&releases, PAGE, |r| r.id.to_string());
    let rows = releases
        .iter()
        .map(|r| ReleaseRow {
            id: r.id.to_string(),
            name: r.name.to_string(),
            components: r.components.len(),
            created: Time(r.created_at),
            archived: r.archived_at.map(Time),
        })
        .collect();
    page::render(&ReleasesPage {
        chrome: Chrome::new(&user, Section::Releases),
        rows,
        older,
        paged: before.is_some(),
    })
}

/// One component of a release.
struct ComponentRow {
    name: String,
    repository: String,
    digest: String,
}

/// A job that deployed the release.
struct RunRow {
    id: String,
    environment: String,
    status: &'static str,
    created: Time,
    rollback: bool,
}

#[derive(Template)]
#[template(path = "console/release.html")]
struct ReleasePage {
    chrome: Chrome,
    id: String,
    name: String,
    created: Time,
    archived: Option<Time>,
    components: Vec<ComponentRow>,
    /// The service definition's text and its digest.
    template: Option<(String, String)>,
    /// Environments the release completed in (exact).
    completed_in: Vec<String>,
    runs: Vec<RunRow>,
    /// The `before` of the next (older) page of its jobs, when this one is full.
    older: Option<String>,
    /// Whether this shows a later page of its jobs (a link back to the newest).
    paged: bool,
}

/// `GET /ui/releases/{id}?before=<job id>`: `{id}` is an id or a name, as in the
/// API; `before` pages its jobs.
async fn show(
    State(state): State<ServerState>,
    user: ConsoleUser,
    Path(id): Path<String>,
    query: Result<Query<Paging>, QueryRejection>,
) -> PageResult {
    let Query(query) = query.map_err(|e| PageError::bad_request(e.body_text()))?;
    let before = crate::params::before(
        query.before.as_deref().filter(|b| !b.is_empty()),
        "job",
        JobId::parse,
    )?;
    let release = resolve::release(&state, &id, Source::Path).await?;
    let (completed_in, runs, older) = where_it_ran(&state, &release, before).await?;
    page::render(&ReleasePage {
        chrome: Chrome::new(&user, Section::Releases),
        id: release.id.to_string(),
        name: release.name.to_string(),
        created: Time(release.created_at),
        archived: release.archived_at.map(Time),
        components: release
            .components
            .iter()
            .map(|c| ComponentRow {
                name: c.name.to_string(),
                repository: c.image.repository(),
                digest: c.digest().as_str().to_owned(),
            })
            .collect(),
        template: release
            .template
            .as_ref()
            .map(|t| (t.content.clone(), t.sha256.as_str().to_owned())),
        completed_in,
        runs,
        older: older.map(|b| b.to_string()),
        paged: before.is_some(),
    })
}

/// The environments `release` completed in, and a page of its jobs (newest first,
/// older than `before`, every one reachable by paging) with the `before` of the
/// next page when this one is full.
async fn where_it_ran(
    state: &ServerState,
    release: &Release,
    before: Option<JobId>,
) -> Result<(Vec<String>, Vec<RunRow>, Option<JobId>), PageError> {
    let store = state.store();
    let mut names: HashMap<EnvironmentId, String> = store
        .list_environments(None, ENVIRONMENT_SCAN)
        .await?
        .iter()
        .map(|e| (e.id, e.name.to_string()))
        .collect();
    // One query on the release's jobs, however many environments there are.
    let mut completed_in = Vec::new();
    for id in store
        .environments_where_release_completed(release.id)
        .await?
    {
        let name = match names.get(&id) {
            Some(name) => name.clone(),
            None => match store.get_environment(id).await {
                Ok(environment) => {
                    let name = environment.name.to_string();
                    names.insert(id, name.clone());
                    name
                }
                // Deleted since: no longer part of the pipeline.
                Err(StoreError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            },
        };
        completed_in.push(name);
    }
    completed_in.sort();
    // One bounded query for the page, filtered by release in the store: no job is
    // missed however many jobs other releases have, and no task is loaded.
    let jobs = store
        .list_job_summaries(&JobQuery {
            release: Some(release.id),
            before,
            limit: RUNS_PAGE,
            ..JobQuery::default()
        })
        .await?;
    let older = crate::params::next_before(&jobs, RUNS_PAGE, |j| j.id);
    let runs = jobs
        .iter()
        .map(|j| RunRow {
            id: j.id.to_string(),
            environment: names
                .get(&j.environment_id)
                .cloned()
                .unwrap_or_else(|| j.environment_id.to_string()),
            status: j.status.as_str(),
            created: Time(j.created_at),
            rollback: j.rollback_of.is_some(),
        })
        .collect();
    Ok((completed_in, runs, older))
}
