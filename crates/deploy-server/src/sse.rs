//! Job events as Server-Sent Events: the store's event log after `Last-Event-ID`, then live, woken by the engine's broadcast.
//!
//! The store is the source of truth: a broadcast event (or a one-second tick,
//! for changes made by another replica) only wakes the stream, which then reads
//! the log after the last sent `seq`. Every SSE `id` is a log `seq`, so a client
//! that reconnects with `Last-Event-ID` misses nothing and sees nothing twice.
//! The stream ends with an `end` event once the job is settled, or without one
//! when the server shuts down (`ServerState::shutdown_token`): the client reconnects.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use deploy_api::{JobEventDto, Role, SSE_EVENT_END, SSE_EVENT_TRANSITION};
use deploy_core::{JobId, JobStatus};
use deploy_engine::EngineEvent;
use deploy_store::JobEventRecord;
use futures_util::Stream;
use futures_util::stream;
use serde::Deserialize;
use tokio::sync::broadcast;
use utoipa::IntoParams;

use crate::auth::authorize;
use crate::errors::ServerError;
use crate::handlers::parse_id;
use crate::openapi::ProblemResponses;
use crate::state::ServerState;

/// Events read from the log per query.
const PAGE: u32 = 500;
/// How often an idle stream re-reads the log without a wake-up.
pub(crate) const TICK: Duration = Duration::from_secs(1);
/// A failed job with auto rollback is reported settled only after this many quiet ticks
/// (the engine moves it to `rolling_back` right after `failed`); another failed job
/// after one (late task events of the failing wave land after the job's own `fail`);
/// a completed or rolled-back job at once (every task settled before its last event).
/// The job log stream (`job_log_sse.rs`) ends by the same rule.
pub(crate) const FAILED_QUIET_TICKS: u32 = 3;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// Same as the `Last-Event-ID` header (which wins).
    after: Option<u64>,
}

struct Follow {
    state: ServerState,
    job: JobId,
    after: u64,
    events: broadcast::Receiver<EngineEvent>,
    queue: VecDeque<Event>,
    quiet_settled: u32,
    done: bool,
    /// The job's status was active as of the last job-level event read (or the
    /// start). While it is, reading the job to see whether it settled is skipped:
    /// the job cannot settle without a transition, which is read as an event first.
    /// (Loading a job reads every task: with 1,000 tasks and a steady stream of
    /// events, doing it per wake-up cost more CPU than the deploys themselves.)
    active_hint: bool,
}

/// Where a stream resumes: after the `Last-Event-ID` header's position (a reconnect)
/// or else the `after` query parameter (0: from the start). A header that is not a
/// number is a 400 saying what it should be (`what`).
pub(crate) fn resume_after(
    headers: &HeaderMap,
    after: Option<u64>,
    what: &str,
) -> Result<u64, ServerError> {
    match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                ServerError::bad_request(
                    format!("Last-Event-ID is not {what}"),
                    Some("Last-Event-ID"),
                )
            }),
        None => Ok(after.unwrap_or(0)),
    }
}

#[utoipa::path(
    get,
    path = "/jobs/{id}/events",
    tag = "jobs",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "job id"),
        ("Last-Event-ID" = Option<u64>, Header, description = "resume after this event (wins over `after`)"),
        EventsQuery
    ),
    responses(
        (status = 200, description = "Server-Sent Events: `transition` events (data: JobEventDto, id: its seq), then one `end` event once the job settled", body = JobEventDto, content_type = "text/event-stream"),
        ProblemResponses
    )
)]
pub(crate) async fn job_events(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ServerError> {
    authorize(&state, &headers, Role::Viewer).await?;
    let Query(query) = query.map_err(|e| ServerError::bad_request(e.body_text(), None))?;
    let job = parse_id("job", &id, JobId::parse)?;
    let after = resume_after(&headers, query.after, "an event sequence number")?;
    // Subscribe before reading the log so no event falls between the two.
    let events = state.engine().subscribe();
    let active_hint = state.store().get_job(job).await?.status.is_active();
    let follow = Follow {
        state,
        job,
        after,
        events,
        queue: VecDeque::new(),
        quiet_settled: 0,
        done: false,
        active_hint,
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
    /// Queues the next events, an `end` event, or waits for a wake-up.
    async fn fill(&mut self) {
        let store = self.state.store();
        match store.job_events(self.job, self.after, PAGE).await {
            Ok(records) if !records.is_empty() => {
                self.quiet_settled = 0;
                for r in records {
                    self.after = r.seq;
                    if r.task_id.is_none() {
                        self.active_hint =
                            JobStatus::parse(&r.to_status).is_none_or(JobStatus::is_active);
                    }
                    self.queue.push_back(event(&r));
                }
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(job = %self.job, error = %e, "cannot read job events; ending the stream");
                self.done = true;
                return;
            }
        }
        let settled_check = if self.active_hint {
            None
        } else {
            Some(store.get_job(self.job).await)
        };
        match settled_check {
            None => {}
            Some(Ok(job)) => {
                // Settled jobs end the stream: at once when every task settled before the
                // job's last event, after quiet ticks when late events may still come.
                let settled = match job.status {
                    JobStatus::Completed | JobStatus::RolledBack => true,
                    JobStatus::Failed if job.failure_policy.auto_rollback => {
                        self.quiet_settled += 1;
                        self.quiet_settled > FAILED_QUIET_TICKS
                    }
                    s if !s.is_active() => {
                        self.quiet_settled += 1;
                        self.quiet_settled > 1
                    }
                    _ => false,
                };
                if settled {
                    let data =
                        serde_json::json!({ "job_id": job.id, "status": job.status.as_str() });
                    self.queue
                        .push_back(Event::default().event(SSE_EVENT_END).data(data.to_string()));
                    self.done = true;
                    return;
                }
            }
            Some(Err(e)) => {
                tracing::warn!(job = %self.job, error = %e, "cannot read the job; ending the stream");
                self.done = true;
                return;
            }
        }
        // Wait for a transition of this job, or a tick.
        let deadline = tokio::time::sleep(TICK);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => return,
                received = self.events.recv() => match received {
                    Ok(e) if e.job_id != self.job => continue,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => {
                        (&mut deadline).await;
                        return;
                    }
                },
            }
        }
    }
}

fn event(r: &JobEventRecord) -> Event {
    let dto = JobEventDto {
        seq: r.seq,
        job_id: r.job_id,
        task_id: r.task_id,
        event: r.event.clone(),
        from_status: Some(r.from_status.clone()),
        to_status: r.to_status.clone(),
        cause: r.cause.clone(),
        at: r.at,
    };
    Event::default()
        .event(SSE_EVENT_TRANSITION)
        .id(r.seq.to_string())
        .data(serde_json::to_string(&dto).unwrap_or_default())
}
