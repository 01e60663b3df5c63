//! Task routes: read a task, page through its log, and follow the log as Server-Sent Events (`sse.rs`) until the task or its job is settled.
//!
//! The log stream re-reads the task's chunks after the last sent `seq` every
//! [`TICK`]; every SSE `id` is a chunk `seq`. It ends with an `end` event (data: task
//! id and status) once the task is settled (no event will change it) or its job is,
//! and a read made after that found no chunk left to send.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use deploy_api::{LogChunkDto, LogPage, Role, SSE_EVENT_LOG};
use deploy_core::{DeploymentTask, TaskId};
use deploy_store::{LogChunk, Store, StoreError};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::authorize;
use crate::errors::ServerError;
use crate::openapi::ProblemResponses;
use crate::params::{self, parse_id};
use crate::sse::{self, Follow, PAGE, ResumeHeader, ResumeQuery};
use crate::state::ServerState;

type ApiResult<T> = Result<T, ServerError>;

/// How often a log stream with nothing to send re-reads the log.
const TICK: Duration = Duration::from_millis(500);

#[utoipa::path(get, path = "/tasks/{id}", tag = "tasks", security(("bearer" = [])), params(("id" = String, Path, description = "task id")), responses((status = 200, description = "the task", body = deploy_api::schema::DeploymentTask), ProblemResponses))]
pub(crate) async fn get_task(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<DeploymentTask>> {
    authorize(&state, &headers, Role::Viewer).await?;
    let id = parse_id("task", &id, TaskId::parse)?;
    Ok(Json(state.store().get_task(id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    after: Option<u64>,
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/tasks/{id}/logs", tag = "tasks", security(("bearer" = [])), params(("id" = String, Path, description = "task id"), PageQuery), responses((status = 200, description = "a page of the task's log", body = LogPage), ProblemResponses))]
pub(crate) async fn task_logs(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult<Json<LogPage>> {
    authorize(&state, &headers, Role::Viewer).await?;
    let query = params::query(query)?;
    let id = parse_id("task", &id, TaskId::parse)?;
    let limit = params::page_size(&state, query.limit)?;
    state.store().get_task(id).await?;
    let chunks = state
        .store()
        .read_log(id, query.after.unwrap_or(0), limit)
        .await?;
    let next_after = params::next_before(&chunks, limit, |c| c.seq);
    Ok(Json(LogPage {
        task_id: id,
        chunks: chunks.into_iter().map(dto).collect(),
        next_after,
    }))
}

/// A stored chunk as sent.
fn dto(c: LogChunk) -> LogChunkDto {
    LogChunkDto {
        seq: c.seq,
        at: c.at,
        content: c.content,
    }
}

/// The task's log, read in chunk `seq`s.
pub(crate) struct Log {
    task: TaskId,
    /// The task (or its job) was settled at the last read: one more empty read ends the stream.
    settled: bool,
}

#[utoipa::path(get, path = "/tasks/{id}/logs/events", tag = "tasks", security(("bearer" = [])), params(("id" = String, Path, description = "task id"), ResumeHeader, ResumeQuery), responses((status = 200, description = "Server-Sent Events: `log` events (data: LogChunkDto, id: its seq) as chunks are written, then one `end` event once the task (or its job) settled", body = LogChunkDto, content_type = "text/event-stream"), ProblemResponses))]
pub(crate) async fn task_log_events(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<ResumeQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let (task, after) = sse::start(
        &state,
        &headers,
        query,
        "task",
        &id,
        TaskId::parse,
        "a log chunk sequence number",
    )
    .await?;
    state.store().get_task(task).await?;
    Ok(sse::follow(state, after, Log::new(task)))
}

impl Log {
    /// The log of `task` (which exists).
    pub(crate) fn new(task: TaskId) -> Self {
        Self {
            task,
            settled: false,
        }
    }
}

impl Follow for Log {
    type Item = LogChunk;
    type Dto = LogChunkDto;
    const EVENT: &'static str = SSE_EVENT_LOG;

    fn subject(&self) -> String {
        format!("the log of task {}", self.task)
    }

    async fn read(&mut self, store: &dyn Store, after: u64) -> Result<Vec<LogChunk>, StoreError> {
        store.read_log(self.task, after, PAGE).await
    }

    fn entry(&mut self, c: LogChunk) -> (u64, LogChunkDto) {
        (c.seq, dto(c))
    }

    async fn idle(&mut self, store: &dyn Store) -> Result<Option<serde_json::Value>, StoreError> {
        // Settled at the previous read and still nothing: the log is complete.
        let task = store.get_task(self.task).await?;
        if self.settled {
            return Ok(Some(
                serde_json::json!({ "task_id": task.id, "status": task.status }),
            ));
        }
        self.settled = task.is_settled()
            || store
                .get_job(task.job_id)
                .await
                .is_ok_and(|job| job.is_settled());
        if !self.settled {
            tokio::time::sleep(TICK).await;
        }
        Ok(None)
    }
}
