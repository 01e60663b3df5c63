//! A job's log as Server-Sent Events: the chunks of all its tasks after `Last-Event-ID` (a job log position), then new ones as they are written, then `end`.
//!
//! One stream for the whole job, so a follower of a 1,000-task job makes one request
//! instead of one per task. As with the task log stream (`log_sse.rs`), the store is
//! the source: the stream re-reads the job's log after the last sent position every
//! [`TICK`] (a log append wakes nothing; a transition of the job itself, from the
//! engine's broadcast, does, so that `end` follows it at once). Positions are
//! committed in order (`Store::read_job_log`), so a client that reconnects with
//! `Last-Event-ID` misses nothing and sees nothing twice. The stream ends with an `end` event (data: job id
//! and status) when the job is settled by the job events stream's rule (`sse.rs`:
//! `completed` and `rolled_back` at once, another `failed` job after a quiet tick, a
//! `failed` job with auto rollback after three, as it may go on to `rolling_back`),
//! counted as time without a new chunk, and a read made after the job was seen settled
//! found nothing more to send. On server shutdown (`ServerState::shutdown_token`) it
//! ends without `end`, and the client reconnects.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use deploy_api::{JobLogChunkDto, Role, SSE_EVENT_END, SSE_EVENT_LOG};
use deploy_core::{JobId, JobStatus};
use deploy_engine::EngineEvent;
use futures_util::Stream;
use futures_util::stream;
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio::time::Instant;
use utoipa::IntoParams;

use crate::auth::authorize;
use crate::errors::ServerError;
use crate::handlers::parse_id;
use crate::openapi::ProblemResponses;
use crate::sse;
use crate::state::ServerState;

/// Chunks read from the store per query.
const PAGE: u32 = 500;
/// How often a stream with nothing to send re-reads the log (as the task log stream).
const TICK: Duration = Duration::from_millis(500);

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct JobLogEventsQuery {
    /// Same as the `Last-Event-ID` header (which wins): send chunks after this job log position.
    after: Option<u64>,
}

struct Follow {
    state: ServerState,
    job: JobId,
    after: u64,
    auto_rollback: bool,
    events: broadcast::Receiver<EngineEvent>,
    queue: VecDeque<Event>,
    /// When the job was first seen settled with nothing left to send; a new chunk or an
    /// active status clears it.
    quiet_since: Option<Instant>,
    done: bool,
}

#[utoipa::path(
    get,
    path = "/jobs/{id}/logs/events",
    tag = "jobs",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "job id"),
        ("Last-Event-ID" = Option<u64>, Header, description = "resume after this job log position (wins over `after`)"),
        JobLogEventsQuery
    ),
    responses(
        (status = 200, description = "Server-Sent Events: `log` events (data: JobLogChunkDto, id: the chunk's position in the job's log) for every task of the job as chunks are written, then one `end` event (data: job id and status) once the job settled and every chunk was sent", body = JobLogChunkDto, content_type = "text/event-stream"),
        ProblemResponses
    )
)]
pub(crate) async fn job_log_events(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<JobLogEventsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ServerError> {
    authorize(&state, &headers, Role::Viewer).await?;
    let Query(query) = query.map_err(|e| ServerError::bad_request(e.body_text(), None))?;
    let job = parse_id("job", &id, JobId::parse)?;
    let after = crate::sse::resume_after(&headers, query.after, "a job log position")?;
    // Subscribe before reading the job so that no transition falls between the two.
    let events = state.engine().subscribe();
    // Once per connection: the job's failure policy does not change.
    let auto_rollback = state
        .store()
        .get_job(job)
        .await?
        .failure_policy
        .auto_rollback;
    let follow = Follow {
        state,
        job,
        after,
        auto_rollback,
        events,
        queue: VecDeque::new(),
        quiet_since: None,
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

/// How long a job in `status` must stay without a new chunk before its stream ends;
/// `None` while it is active. The job events stream's rule (`sse.rs`), in time.
fn quiet_needed(status: JobStatus, auto_rollback: bool) -> Option<Duration> {
    match status {
        JobStatus::Completed | JobStatus::RolledBack => Some(Duration::ZERO),
        JobStatus::Failed if auto_rollback => Some(sse::TICK * sse::FAILED_QUIET_TICKS),
        s if !s.is_active() => Some(sse::TICK),
        _ => None,
    }
}

impl Follow {
    /// Queues the next chunks, the `end` event, or waits a tick.
    async fn fill(&mut self) {
        let store = self.state.store();
        match store.read_job_log(self.job, self.after, PAGE).await {
            Ok(chunks) if !chunks.is_empty() => {
                self.quiet_since = None;
                for (position, c) in chunks {
                    self.after = position;
                    let dto = JobLogChunkDto {
                        task_id: c.task_id,
                        seq: c.seq,
                        at: c.at,
                        content: c.content,
                    };
                    self.queue.push_back(
                        Event::default()
                            .event(SSE_EVENT_LOG)
                            .id(position.to_string())
                            .data(serde_json::to_string(&dto).unwrap_or_default()),
                    );
                }
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(job = %self.job, error = %e, "cannot read the job log; ending the stream");
                self.done = true;
                return;
            }
        }
        // Nothing new: read the status (one row; the job itself would read every task).
        let status = match store.job_status(self.job).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(job = %self.job, error = %e, "cannot read the job; ending the stream");
                self.done = true;
                return;
            }
        };
        match (quiet_needed(status, self.auto_rollback), self.quiet_since) {
            (None, _) => self.quiet_since = None,
            // Seen settled before the read above, which found nothing: every chunk
            // written before it settled was sent.
            (Some(needed), Some(since)) if since.elapsed() >= needed => {
                let data = serde_json::json!({ "job_id": self.job, "status": status.as_str() });
                self.queue
                    .push_back(Event::default().event(SSE_EVENT_END).data(data.to_string()));
                self.done = true;
                return;
            }
            (Some(_), Some(_)) => {}
            (Some(needed), None) => {
                self.quiet_since = Some(Instant::now());
                if needed.is_zero() {
                    // Read once more at once, now that it is settled.
                    return;
                }
            }
        }
        // Wait a tick, or less when the job itself moves (its end is read at once).
        let tick = tokio::time::sleep(TICK);
        tokio::pin!(tick);
        loop {
            tokio::select! {
                () = &mut tick => return,
                received = self.events.recv() => match received {
                    Ok(e) if e.job_id == self.job && e.task_id.is_none() => return,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        (&mut tick).await;
                        return;
                    }
                },
            }
        }
    }
}
