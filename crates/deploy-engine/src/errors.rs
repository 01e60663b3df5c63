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
