//! A job's Server-Sent Event streams (`sse.rs`): its events, and the log of all its tasks in one stream; both end once the job is settled.
//!
//! The events stream is woken by the engine's broadcast for the job (or a one-second
//! tick, for changes made by another replica); every SSE `id` is an event `seq`. The
//! log stream re-reads the job's log every half second (a log append wakes nothing; a
//! transition of the job itself does, so that `end` follows it at once); every SSE
//! `id` is a job log position, committed in order (`Store::read_job_log`). One stream
//! for the whole log, so a follower of a 1,000-task job makes one request instead of
//! one per task.
//!
//! Both end by the same rule: once the job is settled
//! ([`DeploymentJob::is_settled`]: completed, rolled back, or failed and wound down;
//! every task settled before that last transition), after a read made once it was
//! seen settled that found nothing more to send. A failed job still winding down (its
//! late task events, then `wound_down` or `rollback_started`) keeps them open.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use deploy_api::{JobEventDto, JobLogChunkDto, SSE_EVENT_LOG, SSE_EVENT_TRANSITION};
use deploy_core::{DeploymentJob, JobId, JobStatus};
use deploy_engine::EngineEvent;
use deploy_store::{JobEventRecord, LogChunk, Store, StoreError};
use tokio::sync::broadcast;

use crate::errors::ServerError;
use crate::openapi::ProblemResponses;
use crate::sse::{self, Follow, PAGE, ResumeHeader, ResumeQuery};
use crate::state::ServerState;

/// How often an idle events stream re-reads the log without a wake-up.
const EVENTS_TICK: Duration = Duration::from_secs(1);
/// How often a log stream with nothing to send re-reads the log (as the task log stream).
const LOG_TICK: Duration = Duration::from_millis(500);

/// The start of a job stream request (`sse::start`): the job, where the stream resumes
/// (a `position`), and the engine's broadcast, subscribed before the job is read so
/// that no transition falls between the two.
async fn request(
    state: &ServerState,
    headers: &HeaderMap,
    query: Result<Query<ResumeQuery>, QueryRejection>,
    id: &str,
    position: &str,
) -> Result<(DeploymentJob, u64, broadcast::Receiver<EngineEvent>), ServerError> {
    let (job, after) = sse::start(state, headers, query, "job", id, JobId::parse, position).await?;
    let events = state.engine().subscribe();
    Ok((state.store().get_job(job).await?, after, events))
}

/// The job's events, woken by its transitions.
pub(crate) struct Events {
    job: JobId,
    events: broadcast::Receiver<EngineEvent>,
    /// The job was seen settled at the last idle read: one more empty read ends the stream.
    settled: bool,
    /// The job is unsettled as of the last job-level event read (or the start). While
    /// it is, reading the job to see whether it settled is skipped: the job cannot
    /// settle without a transition, which is read as an event first. (Loading a job
    /// reads every task: with 1,000 tasks and a steady stream of events, doing it per
    /// wake-up cost more CPU than the deploys themselves.)
    unsettled_hint: bool,
}

/// Whether the job is surely unsettled after job-level event `r`: an active status,
/// or the `fail`/`cancel` of a started job, which winds down before it settles.
fn unsettled_after(r: &JobEventRecord) -> bool {
    JobStatus::parse(&r.to_status).is_none_or(JobStatus::is_active)
        || (matches!(r.event.as_str(), "fail" | "cancel") && r.from_status != "pending")
}

#[utoipa::path(get, path = "/jobs/{id}/events", tag = "jobs", security(("bearer" = [])), params(("id" = String, Path, description = "job id"), ResumeHeader, ResumeQuery), responses((status = 200, description = "Server-Sent Events: `transition` events (data: JobEventDto, id: its seq), then one `end` event once the job settled", body = JobEventDto, content_type = "text/event-stream"), ProblemResponses))]
pub(crate) async fn job_events(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<ResumeQuery>, QueryRejection>,
) -> Result<Response, ServerError> {
    let (job, after, events) =
        request(&state, &headers, query, &id, "an event sequence number").await?;
    Ok(sse::follow(state, after, Events::new(&job, events)))
}

impl Events {
    /// The events of `job`, woken by `events` (subscribed before `job` was read, so
    /// that no transition falls between the two).
    pub(crate) fn new(job: &DeploymentJob, events: broadcast::Receiver<EngineEvent>) -> Self {
        Self::of(job.id, job.is_settled(), events)
    }

    /// The events of job `job`, settled or not when read (without loading its tasks).
    pub(crate) fn of(job: JobId, settled: bool, events: broadcast::Receiver<EngineEvent>) -> Self {
        Self {
            job,
            events,
            settled: false,
            unsettled_hint: !settled,
        }
    }
}

impl Follow for Events {
    type Item = JobEventRecord;
    type Dto = JobEventDto;
    const EVENT: &'static str = SSE_EVENT_TRANSITION;

    fn subject(&self) -> String {
        format!("the events of job {}", self.job)
    }

    async fn read(&mut self, store: &dyn Store, after: u64) -> Result<Vec<Self::Item>, StoreError> {
        store.job_events(self.job, after, PAGE).await
    }

    fn entry(&mut self, r: JobEventRecord) -> (u64, JobEventDto) {
        self.settled = false;
        if r.task_id.is_none() {
            self.unsettled_hint = unsettled_after(&r);
        }
        let dto = JobEventDto {
            seq: r.seq,
            job_id: r.job_id,
            task_id: r.task_id,
            event: r.event,
            from_status: Some(r.from_status),
            to_status: r.to_status,
            cause: r.cause,
            at: r.at,
        };
        (dto.seq, dto)
    }

    async fn idle(&mut self, store: &dyn Store) -> Result<Option<serde_json::Value>, StoreError> {
        if self.settled {
            // Seen settled before the read that found nothing: every event was sent.
            let (status, _) = store.job_status(self.job).await?;
            return Ok(Some(end(self.job, status)));
        }
        if !self.unsettled_hint {
            let job = store.get_job(self.job).await?;
            if job.is_settled() {
                // Read once more at once: events written before it settled are sent first.
                self.settled = true;
                return Ok(None);
            }
        }
        // Wait for a transition of this job (or a lag: one may have been missed), or a tick.
        let job = self.job;
        sse::tick_or_wake(&mut self.events, EVENTS_TICK, |e| {
            e.is_none_or(|e| e.job_id == job)
        })
        .await;
        Ok(None)
    }
}

/// The `end` event's data of a job stream.
fn end(job: JobId, status: JobStatus) -> serde_json::Value {
    serde_json::json!({ "job_id": job, "status": status.as_str() })
}

/// The log of every task of the job, read in job log positions.
struct Log {
    job: JobId,
    events: broadcast::Receiver<EngineEvent>,
    /// The job was seen settled at the last idle read: one more empty read ends the stream.
    settled: bool,
}

#[utoipa::path(get, path = "/jobs/{id}/logs/events", tag = "jobs", security(("bearer" = [])), params(("id" = String, Path, description = "job id"), ResumeHeader, ResumeQuery), responses((status = 200, description = "Server-Sent Events: `log` events (data: JobLogChunkDto, id: the chunk's position in the job's log) for every task of the job as chunks are written, then one `end` event (data: job id and status) once the job settled and every chunk was sent", body = JobLogChunkDto, content_type = "text/event-stream"), ProblemResponses))]
pub(crate) async fn job_log_events(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<ResumeQuery>, QueryRejection>,
) -> Result<Response, ServerError> {
    let (job, after, events) = request(&state, &headers, query, &id, "a job log position").await?;
    let source = Log {
        job: job.id,
        events,
        settled: false,
    };
    Ok(sse::follow(state, after, source))
}

/// Whether job `id` is settled ([`DeploymentJob::is_settled`]), reading one row.
async fn is_settled(store: &dyn Store, id: JobId) -> Result<(JobStatus, bool), StoreError> {
    let (status, winding_down) = store.job_status(id).await?;
    Ok((status, !status.is_active() && !winding_down))
}

impl Follow for Log {
    type Item = (u64, LogChunk);
    type Dto = JobLogChunkDto;
    const EVENT: &'static str = SSE_EVENT_LOG;

    fn subject(&self) -> String {
        format!("the log of job {}", self.job)
    }

    async fn read(&mut self, store: &dyn Store, after: u64) -> Result<Vec<Self::Item>, StoreError> {
        store.read_job_log(self.job, after, PAGE).await
    }

    fn entry(&mut self, (position, c): (u64, LogChunk)) -> (u64, JobLogChunkDto) {
        self.settled = false;
        let dto = JobLogChunkDto {
            task_id: c.task_id,
            seq: c.seq,
            at: c.at,
            content: c.content,
        };
        (position, dto)
    }

    async fn idle(&mut self, store: &dyn Store) -> Result<Option<serde_json::Value>, StoreError> {
        let (status, settled) = is_settled(store, self.job).await?;
        if settled && self.settled {
            // Seen settled before the read that found nothing: every chunk written
            // before it settled was sent.
            return Ok(Some(end(self.job, status)));
        }
        self.settled = settled;
        if settled {
            // Read once more at once, now that it is settled.
            return Ok(None);
        }
        // Wait a tick, or less when the job itself moves (its end is read at once).
        let job = self.job;
        sse::tick_or_wake(&mut self.events, LOG_TICK, |e| {
            e.is_some_and(|e| e.job_id == job && e.task_id.is_none())
        })
        .await;
        Ok(None)
    }
}
