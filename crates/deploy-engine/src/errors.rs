//! `EngineError`: why the engine could not create, run or change a job.

use deploy_core::{JobId, PlanError, PromotionId};
use deploy_rollback::RollbackError;
use deploy_store::StoreError;
use thiserror::Error;

/// An engine operation failed.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("promotion `{promotion}` is `{status}`; expected an approved promotion")]
    PromotionNotApproved {
        promotion: PromotionId,
        status: &'static str,
    },
    /// An archived release is no longer promoted, whenever it was requested.
    #[error("release `{release}` is archived; it can no longer be promoted")]
    ReleaseArchived { release: String },
    /// The environment's pipeline: the release must have completed in every
    /// environment it requires (`missing` names each one, quoted).
    #[error(
        "release `{release}` has not completed in {missing} yet; environment `{environment}` requires it first (its pipeline)"
    )]
    PipelineIncomplete {
        release: String,
        missing: String,
        environment: String,
    },
    /// The environment's approval policy refused this approval.
    #[error(transparent)]
    ApprovalRefused(#[from] deploy_core::ApprovalRefused),
    /// The promotion changed between its read and the approval's write.
    #[error(
        "promotion `{promotion}` changed while this approval was recorded (another approval or a decision); read it and approve again"
    )]
    PromotionChanged { promotion: PromotionId },
    #[error("cannot plan the rollout: {0}")]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Rollback(#[from] RollbackError),
    #[error("cannot render the job's artifacts: {0}")]
    Artifacts(#[from] deploy_artifacts::ArtifactError),
    #[error(transparent)]
    Health(#[from] deploy_health::HealthError),
    #[error("invalid job request: {0}")]
    InvalidRequest(String),
    #[error("job `{job}` is not being run by this engine")]
    NotRunningHere { job: JobId },
    #[error("job `{job}` stalled in state `{status}` with nothing to do; this is a bug")]
    Stalled { job: JobId, status: &'static str },
}
