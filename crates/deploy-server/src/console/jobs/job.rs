//! A job's page: its facts, and the live part (status, actions, waves and one page of tasks) that `/ui/jobs/{id}/live` serves alone for the page to swap in.
//!
//! A job may have thousands of tasks: every wave gets its counts, but only
//! [`TASKS_PER_PAGE`] task rows are rendered, so the page costs one job read (as the
//! API's `GET /api/v1/jobs/{id}`), one target list and a few point reads.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, State};
use deploy_core::{DeploymentJob, JobId, JobStatus, TargetId, TaskStatus};
use serde::Deserialize;

use super::{Names, job_id, short};
use crate::console::page::{
    self, Chrome, PageError, Section, Time, UiQuery, human_duration, short_digest, time_or_dash,
};
use crate::console::session::{ConsoleUser, PageResult};
use crate::state::ServerState;

/// Task rows per page of a job.
pub(crate) const TASKS_PER_PAGE: usize = 100;

/// The query of a job page: the page of its tasks (from 1).
#[derive(Debug, Deserialize)]
pub(super) struct PageQuery {
    page: Option<usize>,
}

/// The facts of a job that do not change while it runs.
struct Header {
    id: JobId,
    short_id: String,
    environment: String,
    release: String,
    strategy: String,
    initiator: String,
    cause: String,
    created: Time,
    rollback_of: Option<JobId>,
}

/// A task row.
struct TaskRow {
    id: String,
    status: &'static str,
    attempt: String,
    target: String,
    digest: String,
    short_digest: String,
    duration: String,
}

/// A wave: its counts over all its tasks, and its rows on this page.
struct Wave {
    index: u32,
    total: usize,
    succeeded: usize,
    failed: usize,
    running: usize,
    pending: usize,
    rows: Vec<TaskRow>,
}

/// What changes while the job runs: the fragment `/ui/jobs/{id}/live` serves.
pub(crate) struct Live {
    id: JobId,
    short_id: String,
    status: &'static str,
    settled: bool,
    winding_down: bool,
    auto_rollback: bool,
    queued_behind: Option<JobId>,
    started: String,
    completed: String,
    failure_reason: Option<String>,
    rollback_job: Option<JobId>,
    can_cancel: bool,
    can_rollback: bool,
    csrf: String,
    task_count: usize,
    waves: Vec<Wave>,
    page: usize,
    pages: usize,
}

/// The whole page.
#[derive(askama::Template)]
#[template(path = "console/job.html")]
struct JobPage {
    chrome: Chrome,
    header: Header,
    live: Live,
    /// The job's last event when the page was read: its live region follows after it
    /// instead of replaying every transition.
    events_after: u64,
}

/// The live fragment alone.
#[derive(askama::Template)]
#[template(path = "console/job_live.html")]
struct LiveFragment {
    live: Live,
}

/// `GET /ui/jobs/{id}?page=N`.
pub(super) async fn show(
    State(state): State<ServerState>,
    user: ConsoleUser,
    Path(id): Path<String>,
    UiQuery(query): UiQuery<PageQuery>,
) -> PageResult {
    job_page(&state, &user, job_id(&id)?, query.page.unwrap_or(1)).await
}

/// `GET /ui/jobs/{id}/live?page=N`: the live part of the page, without the layout.
pub(super) async fn live(
    State(state): State<ServerState>,
    user: ConsoleUser,
    Path(id): Path<String>,
    UiQuery(query): UiQuery<PageQuery>,
) -> PageResult {
    let job = state.store().get_job(job_id(&id)?).await?;
    let targets = target_names(&state, &job).await?;
    let live = live_of(&state, &user, &job, &targets, query.page.unwrap_or(1)).await?;
    page::render(&LiveFragment { live })
}

/// The page of job `id` with its tasks' page `page` (from 1), as `user` sees it.
pub(crate) async fn job_page(
    state: &ServerState,
    user: &ConsoleUser,
    id: JobId,
    page: usize,
) -> PageResult {
    // Read before the job: a transition in between is followed (and re-fetches the
    // region), never missed.
    let events_after = state.store().last_job_event_seq(id).await?;
    let job = state.store().get_job(id).await?;
    let mut names = Names::default();
    // The creation event says how the job came to be (its first event).
    let cause = state
        .store()
        .job_events(id, 0, 1)
        .await?
        .into_iter()
        .next()
        .map_or_else(String::new, |e| e.cause);
    let header = Header {
        id,
        short_id: short(id),
        environment: names.environment(state, job.environment_id).await,
        release: names.release(state, job.release_id).await,
        strategy: strategy_text(&job),
        initiator: names.initiator(state, job.promotion_id).await,
        cause,
        created: Time(job.created_at),
        rollback_of: job.rollback_of,
    };
    let targets = target_names(state, &job).await?;
    let live = live_of(state, user, &job, &targets, page).await?;
    page::render(&JobPage {
        chrome: Chrome::new(user, Section::Jobs),
        header,
        live,
        events_after,
    })
}

/// The strategy as a word (`all_at_once`, `rolling`, …).
fn strategy_text(job: &DeploymentJob) -> String {
    serde_json::to_value(&job.strategy)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "—".to_owned())
}

/// The names of the job's environment's targets (read once for every row).
async fn target_names(
    state: &ServerState,
    job: &DeploymentJob,
) -> Result<HashMap<TargetId, String>, PageError> {
    Ok(state
        .store()
        .list_targets(job.environment_id)
        .await?
        .into_iter()
        .map(|t| (t.id, t.name.to_string()))
        .collect())
}

/// The live part of `job` with its tasks' page `page`.
async fn live_of(
    state: &ServerState,
    user: &ConsoleUser,
    job: &DeploymentJob,
    targets: &HashMap<TargetId, String>,
    page: usize,
) -> Result<Live, PageError> {
    let can_deploy = user.role.allows(deploy_api::Role::Deployer);
    // A rolling-back job is settled by its rollback job: link it (and cancel through it).
    let running_rollback = if job.status == JobStatus::RollingBack {
        state.store().rollback_job_of(job.id).await?.map(|j| j.id)
    } else {
        None
    };
    // A job that was rolled back (or whose rollback failed) links its newest rollback job.
    let rollback_job = match (running_rollback, job.status) {
        (Some(id), _) => Some(id),
        (None, JobStatus::RolledBack | JobStatus::Failed | JobStatus::Completed) => state
            .store()
            .list_job_summaries(&deploy_store::JobQuery {
                rollback_of: Some(job.id),
                limit: 1,
                ..deploy_store::JobQuery::default()
            })
            .await?
            .first()
            .map(|j| j.id),
        (None, _) => None,
    };
    let pages = job.tasks.len().div_ceil(TASKS_PER_PAGE).max(1);
    let page = page.clamp(1, pages);
    let mut waves: BTreeMap<u32, Wave> = BTreeMap::new();
    // Tasks in wave order (stable: the plan's order within a wave), paged.
    let mut order: Vec<usize> = (0..job.tasks.len()).collect();
    order.sort_by_key(|&i| job.tasks[i].wave);
    let shown = (page - 1) * TASKS_PER_PAGE..page * TASKS_PER_PAGE;
    for (n, &i) in order.iter().enumerate() {
        let t = &job.tasks[i];
        let wave = waves.entry(t.wave).or_insert_with(|| Wave {
            index: t.wave,
            total: 0,
            succeeded: 0,
            failed: 0,
            running: 0,
            pending: 0,
            rows: Vec::new(),
        });
        wave.total += 1;
        match t.status {
            TaskStatus::Succeeded => wave.succeeded += 1,
            TaskStatus::Failed => wave.failed += 1,
            TaskStatus::Pending => wave.pending += 1,
            _ => wave.running += 1,
        }
        if shown.contains(&n) {
            wave.rows.push(TaskRow {
                id: t.id.to_string(),
                status: t.status.as_str(),
                attempt: format!("{} of {}", t.attempt_number, t.max_attempts),
                target: targets
                    .get(&t.target_id)
                    .cloned()
                    .unwrap_or_else(|| t.target_id.to_string()),
                digest: t.digest.to_string(),
                short_digest: short_digest(t.digest.as_str()),
                duration: match (t.started_at, t.completed_at) {
                    (Some(start), Some(end)) => human_duration(end.duration_since(start)),
                    (Some(_), None) => "running".to_owned(),
                    _ => "—".to_owned(),
                },
            });
        }
    }
    // What went wrong stays shown after the rollback put things back.
    let failed = matches!(job.status, JobStatus::Failed | JobStatus::RolledBack);
    let failure_reason = failed.then(|| {
        job.failure_reason.clone().or_else(|| {
            job.tasks
                .iter()
                .rev()
                .find(|t| t.status == TaskStatus::Failed)
                .and_then(|t| t.error.clone())
        })
    });
    Ok(Live {
        id: job.id,
        short_id: short(job.id),
        status: job.status.as_str(),
        settled: job.is_settled(),
        winding_down: job.winding_down,
        auto_rollback: job.failure_policy.auto_rollback,
        queued_behind: job.queued_behind,
        started: time_or_dash(job.started_at),
        completed: time_or_dash(job.completed_at),
        failure_reason: failure_reason.flatten(),
        rollback_job,
        // As the engine: a job holding its environment is cancelled, a rolling-back
        // one through its rollback job.
        can_cancel: can_deploy && (job.status.holds_environment() || running_rollback.is_some()),
        // As the engine: a completed job, or a failed one wound down; never a rollback job.
        can_rollback: can_deploy
            && !job.is_rollback()
            && (job.status == JobStatus::Completed
                || (job.status == JobStatus::Failed && !job.winding_down)),
        csrf: user.csrf.clone(),
        task_count: job.tasks.len(),
        waves: waves.into_values().collect(),
        page,
        pages,
    })
}
