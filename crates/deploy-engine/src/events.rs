//! `EngineEvent`: every job and task transition, published to in-process subscribers after it is persisted.

use deploy_core::{JobId, TaskId, Timestamp};

/// A persisted transition, as subscribers (SSE streams, the CLI) see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineEvent {
    pub job_id: JobId,
    /// Set for task transitions.
    pub task_id: Option<TaskId>,
    /// The event name (`dispatch`, `fail_retryable`, `waves_succeeded`, …).
    pub event: &'static str,
    /// The status after the event.
    pub status: &'static str,
    /// Why, in words.
    pub cause: String,
    pub at: Timestamp,
}
