//! Approving a promotion: the caller's approval under the environment's policy, and the job that the approval completing the count creates.

use deploy_core::{
    ApprovalOutcome, Approver, DeploymentJob, Environment, Promotion, PromotionStatus, Release,
    Timestamp,
};
use deploy_store::{Created, StoreError};

use crate::create::JobRequest;
use crate::engine::Engine;
use crate::errors::EngineError;

/// What an approval did.
#[derive(Debug)]
pub enum Approval {
    /// The approval was recorded; `missing` more are needed before the job is created.
    Pending { promotion: Promotion, missing: u32 },
    /// The promotion is approved and this is its job: created by this call, or the one
    /// created before (`created: false`, idempotent by the request's key).
    Job {
        promotion: Promotion,
        job: Box<Created<DeploymentJob>>,
    },
}

impl Engine {
    /// Whether `release` may be promoted to `environment`: it is not archived, and it
    /// completed in every environment `environment` requires (its pipeline). The
    /// refusal names each one missing.
    pub async fn check_promotable(
        &self,
        release: &Release,
        environment: &Environment,
    ) -> Result<(), EngineError> {
        if release.archived_at.is_some() {
            return Err(EngineError::ReleaseArchived {
                release: release.name.to_string(),
            });
        }
        let store = &self.inner.store;
        let mut missing = Vec::new();
        for required in &environment.requires {
            if !store.release_completed_in(release.id, *required).await? {
                let name = match store.get_environment(*required).await {
                    Ok(e) => e.name.as_str().to_owned(),
                    Err(_) => required.to_string(),
                };
                missing.push(format!("`{name}`"));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(EngineError::PipelineIncomplete {
            release: release.name.to_string(),
            missing: missing.join(", "),
            environment: environment.name.to_string(),
        })
    }

    /// Adds `approver`'s approval to the request's promotion under its environment's
    /// policy; the approval that completes the count creates the job (with `request`'s
    /// settings), which [`Engine::serve`] runs. Approving an approved promotion again
    /// returns its job, creating it when it could not be created before (the
    /// environment was taken in between) if the policy in force admits `approver`.
    ///
    /// A request the engine would refuse (bad settings, a template or a service
    /// definition a target cannot apply) is refused before the approval is recorded,
    /// and so is the approval completing the count for a busy environment (unless the
    /// request queues): a promotion is never left approved without a job.
    pub async fn approve_and_create_job(
        &self,
        request: &JobRequest,
        approver: Approver<'_>,
        now: Timestamp,
    ) -> Result<Approval, EngineError> {
        request.check()?;
        let store = &self.inner.store;
        let id = request.promotion_id;
        let mut promotion = store.get_promotion(id).await?;
        let environment = store.get_environment(promotion.environment_id).await?;
        let release = store.get_release(promotion.release_id).await?;
        if promotion.status != PromotionStatus::Rejected {
            self.check_promotable(&release, &environment).await?;
        }
        match promotion.status {
            PromotionStatus::Requested => {
                self.check_job(request).await?;
                let outcome = promotion.approve(approver, environment.approval.as_ref(), now)?;
                if outcome == ApprovalOutcome::Approved
                    && !request.queue
                    && let Some(job) = store.last_in_line(environment.id).await?
                {
                    return Err(StoreError::EnvironmentLocked {
                        environment: environment.id,
                        job,
                    }
                    .into());
                }
                promotion = store
                    .save_promotion(&promotion)
                    .await
                    .map_err(|e| match e {
                        StoreError::Conflict { .. } => {
                            EngineError::PromotionChanged { promotion: id }
                        }
                        other => other.into(),
                    })?;
                if let ApprovalOutcome::Pending { missing } = outcome {
                    return Ok(Approval::Pending { promotion, missing });
                }
            }
            PromotionStatus::Approved => {
                if let Some(policy) = &environment.approval {
                    policy.admits(approver)?;
                }
            }
            PromotionStatus::Rejected => {}
        }
        let job = Box::new(self.create_job(request).await?);
        Ok(Approval::Job { promotion, job })
    }
}
