//! A task's page: its facts, its error, and its log so far (the last MiB at most), which the page then follows live from where it stopped.

use std::collections::VecDeque;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use deploy_core::TaskId;
use deploy_store::LogChunk;

use super::{AfterQuery, resume_after, short};
use crate::console::page::{
    self, Chrome, PageError, Section, UiQuery, human_duration, time_or_dash,
};
use crate::console::session::{ConsoleUser, PageResult};
use crate::routes::tasks::Log;
use crate::state::ServerState;

/// Most log bytes a task page holds; a longer log shows its end.
const MAX_SHOWN_BYTES: usize = 1024 * 1024;
/// Log chunks read per store query, backwards from the log's end.
const TAIL_PAGE: u32 = 64;

/// The task page.
#[derive(askama::Template)]
#[template(path = "console/task.html")]
struct TaskPage {
    chrome: Chrome,
    id: TaskId,
    short_id: String,
    status: &'static str,
    job_id: String,
    target: String,
    wave: u32,
    attempt: String,
    digest: String,
    started: String,
    completed: String,
    duration: String,
    error: Option<String>,
    log: String,
    truncated: bool,
    shown_kib: usize,
    /// The position of the last chunk shown: the live log follows after it.
    after: u64,
}

fn task_id(id: &str) -> Result<TaskId, PageError> {
    Ok(crate::params::parse_id("task", id, TaskId::parse)?)
}

/// `GET /ui/tasks/{id}`.
pub(super) async fn show(
    State(state): State<ServerState>,
    user: ConsoleUser,
    Path(id): Path<String>,
) -> PageResult {
    let task = state.store().get_task(task_id(&id)?).await?;
    // Only the job's environment is needed: its row, not its tasks.
    let job = state.store().get_job_summary(task.job_id).await?;
    // No point read of a target exists; the environment's targets are few.
    let target = state
        .store()
        .list_targets(job.environment_id)
        .await?
        .into_iter()
        .find(|t| t.id == task.target_id)
        .map_or_else(|| task.target_id.to_string(), |t| t.name.to_string());
    let (log, truncated, after) = log_so_far(&state, task.id).await?;
    page::render(&TaskPage {
        chrome: Chrome::new(&user, Section::Jobs),
        id: task.id,
        short_id: short(task.id),
        status: task.status.as_str(),
        job_id: task.job_id.to_string(),
        target,
        wave: task.wave,
        attempt: format!("{} of {}", task.attempt_number, task.max_attempts),
        started: time_or_dash(task.started_at),
        completed: time_or_dash(task.completed_at),
        duration: match (task.started_at, task.completed_at) {
            (Some(start), Some(end)) => human_duration(end.duration_since(start)),
            _ => "—".to_owned(),
        },
        error: task.error,
        shown_kib: log.len().div_ceil(1024),
        log,
        truncated,
        after,
        digest: task.digest.to_string(),
    })
}

/// The task's log as stored now: its last [`MAX_SHOWN_BYTES`] at most (whole chunks,
/// the newest one always), whether earlier chunks were left out, and the `seq` of the
/// last chunk read. Read backwards from the end, so a long log costs what is shown.
async fn log_so_far(state: &ServerState, task: TaskId) -> Result<(String, bool, u64), PageError> {
    let mut kept: VecDeque<LogChunk> = VecDeque::new();
    let mut bytes = 0;
    let mut truncated = false;
    let mut before = None;
    'pages: loop {
        let chunks = state.store().read_log_tail(task, before, TAIL_PAGE).await?;
        let full = chunks.len() == TAIL_PAGE as usize;
        before = chunks.first().map(|c| c.seq);
        // Newest first; whole chunks only: a chunk is valid UTF-8, a cut one might not be.
        for c in chunks.into_iter().rev() {
            if !kept.is_empty() && bytes + c.content.len() > MAX_SHOWN_BYTES {
                truncated = true;
                break 'pages;
            }
            bytes += c.content.len();
            kept.push_front(c);
        }
        if !full {
            break;
        }
    }
    let after = kept.back().map_or(0, |c| c.seq);
    let mut log = String::with_capacity(bytes);
    for c in &kept {
        // The engine writes a chunk as a line without its newline; others end theirs.
        log.push_str(&c.content);
        if !c.content.ends_with('\n') {
            log.push('\n');
        }
    }
    Ok((log, truncated, after))
}

/// `GET /ui/tasks/{id}/log/events?after=N`: the task's log as the API streams it
/// (`GET /api/v1/tasks/{id}/logs/events`), after what the page already shows.
pub(super) async fn log_events(
    State(state): State<ServerState>,
    _user: ConsoleUser,
    headers: HeaderMap,
    Path(id): Path<String>,
    UiQuery(query): UiQuery<AfterQuery>,
) -> Result<Response, PageError> {
    let id = task_id(&id)?;
    let after = resume_after(&headers, query.after)?;
    state.store().get_task(id).await?;
    Ok(crate::sse::follow(state, after, Log::new(id)))
}
