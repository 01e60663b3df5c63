//! A task's log as Server-Sent Events: the stored chunks after `Last-Event-ID` (a chunk `seq`), then new ones as they are written, then `end`.
//!
//! Like the job events stream, the store is the source: the stream re-reads the
//! task's log chunks after the last sent `seq` every [`TICK`], so a client that
//! reconnects with `Last-Event-ID` misses nothing and sees nothing twice. It ends
//! with an `end` event (data: task id and status) once the task is settled (no
//! event will change it) or its job is, and no chunk is left to send; on server
//! shutdown (`ServerState::shutdown_token`) it ends without `end`, and the client reconnects.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use deploy_api::{LogChunkDto, Role, SSE_EVENT_END, SSE_EVENT_LOG};
use deploy_core::TaskId;
use futures_util::Stream;
use futures_util::stream;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::authorize;
use crate::errors::ServerError;
use crate::handlers::parse_id;
use crate::openapi::ProblemResponses;
use crate::state::ServerState;

/// Chunks read from the store per query.
const PAGE: u32 = 500;
/// How often a stream with nothing to send re-reads the log.
const TICK: Duration = Duration::from_millis(500);

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogEventsQuery {
    /// Same as the `Last-Event-ID` header (which wins): send chunks after this `seq`.
    after: Option<u64>,
}

struct Follow {
    state: ServerState,
    task: TaskId,
    after: u64,
    queue: VecDeque<Event>,
    /// The task (or its job) was settled at the last read: one more empty read ends the stream.
    settled: bool,
    done: bool,
}

#[utoipa::path(
    get,
    path = "/tasks/{id}/logs/events",
    tag = "tasks",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "task id"),
        ("Last-Event-ID" = Option<u64>, Header, description = "resume after this chunk `seq` (wins over `after`)"),
        LogEventsQuery
    ),
    responses(
        (status = 200, description = "Server-Sent Events: `log` events (data: LogChunkDto, id: its seq) as chunks are written, then one `end` event once the task (or its job) settled", body = LogChunkDto, content_type = "text/event-stream"),
        ProblemResponses
    )
)]
pub(crate) async fn task_log_events(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<LogEventsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ServerError> {
    authorize(&state, &headers, Role::Viewer).await?;
    let Query(query) = query.map_err(|e| ServerError::bad_request(e.body_text(), None))?;
    let task = parse_id("task", &id, TaskId::parse)?;
    let after = crate::sse::resume_after(&headers, query.after, "a log chunk sequence number")?;
    state.store().get_task(task).await?;
    let follow = Follow {
        state,
        task,
        after,
        queue: VecDeque::new(),
        settled: false,
        done: false,
    };
    let stream = stream::unfold(follow, |mut f| async move {
        let shutdown = f.state.shutdown_token();
        loop {
            // On shutdown the stream ends without `end`: the follower reconnects
            // with `Last-Event-ID` to the next server.
            if shutdown.is_cancelled() {
                return None;
            }
            if let Some(event) = f.queue.pop_front() {
                return Some((Ok(event), f));
            }
            if f.done {
                return None;
            }
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = f.fill() => {}
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

impl Follow {
    /// Queues the next chunks, the `end` event, or waits a tick.
    async fn fill(&mut self) {
        let store = self.state.store();
        match store.read_log(self.task, self.after, PAGE).await {
            Ok(chunks) if !chunks.is_empty() => {
                for c in chunks {
                    self.after = c.seq;
                    let dto = LogChunkDto {
                        seq: c.seq,
                        at: c.at,
                        content: c.content,
                    };
                    self.queue.push_back(
                        Event::default()
                            .event(SSE_EVENT_LOG)
                            .id(c.seq.to_string())
                            .data(serde_json::to_string(&dto).unwrap_or_default()),
                    );
                }
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(task = %self.task, error = %e, "cannot read the task log; ending the stream");
                self.done = true;
                return;
            }
        }
        // Nothing new. Settled at the previous read and still nothing: the log is complete.
        let task = match store.get_task(self.task).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(task = %self.task, error = %e, "cannot read the task; ending the stream");
                self.done = true;
                return;
            }
        };
        if self.settled {
            let data = serde_json::json!({ "task_id": task.id, "status": task.status });
            self.queue
                .push_back(Event::default().event(SSE_EVENT_END).data(data.to_string()));
            self.done = true;
            return;
        }
        self.settled = task.is_settled()
            || store
                .get_job(task.job_id)
                .await
                .is_ok_and(|job| !job.status.is_active());
        if !self.settled {
            tokio::time::sleep(TICK).await;
        }
    }
}
