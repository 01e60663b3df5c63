//! Errors of deploy-rollback.

use thiserror::Error;

/// A rollback that cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RollbackError {
    #[error(
        "no target of job `{job}` has a last-known-good digest to restore ({untouched} never touched, {unknown} without a completed deployment); expected a completed job before it in the environment"
    )]
    NoRollbackTarget {
        job: String,
        untouched: usize,
        unknown: usize,
    },
    #[error(
        "job `{job}` is `{status}`; expected a failed job, or a completed job for a manual rollback"
    )]
    NotRollbackable { job: String, status: &'static str },
    #[error("job `{job}` is itself a rollback; roll back the original job `{original}` instead")]
    RollbackOfRollback { job: String, original: String },
    #[error(
        "job `{job}` is still winding down ({tasks} task(s) in flight or queued; its automatic rollback, if the failure policy asks for one, comes next); roll it back once it has settled"
    )]
    StillWindingDown { job: String, tasks: usize },
}
