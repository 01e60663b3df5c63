//! Creating a job from an approved promotion: plan the waves and one task per (target, component), or per target for compose hosts.

use std::num::NonZeroU32;

use deploy_core::{
    DEFAULT_MAX_ATTEMPTS, DeploymentJob, DeploymentTask, FailurePolicy, IdempotencyKey, JobId,
    JobStatus, PromotionId, PromotionStatus, Strategy, TargetType, TaskId, TaskStatus, plan,
    sha256_of,
};
use deploy_store::Created;

use crate::clock::random_bytes;
use crate::engine::Engine;
use crate::errors::EngineError;

/// What a caller asks for when a promotion is approved.
#[derive(Debug, Clone)]
pub struct JobRequest {
    pub promotion_id: PromotionId,
    pub strategy: Strategy,
    pub parallelism: NonZeroU32,
    pub failure_policy: FailurePolicy,
    /// The same key returns the job created the first time.
    pub idempotency_key: IdempotencyKey,
    /// Attempts per task (at least 1).
    pub max_attempts: u32,
}

impl JobRequest {
    /// A request with the defaults: all-at-once, parallelism 10, any failure fails, 3 attempts.
    pub fn new(promotion_id: PromotionId, idempotency_key: IdempotencyKey) -> Self {
        Self {
            promotion_id,
            strategy: Strategy::AllAtOnce,
            parallelism: NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN),
            failure_policy: FailurePolicy::default(),
            idempotency_key,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }
}

impl Engine {
    /// Creates the job of an approved promotion (idempotent by key). A second
    /// active job for the environment is refused by the store with
    /// `EnvironmentLocked`, naming the running job.
    pub async fn create_job(
        &self,
        request: &JobRequest,
    ) -> Result<Created<DeploymentJob>, EngineError> {
        if !(1..=100).contains(&request.max_attempts) {
            return Err(EngineError::InvalidRequest(format!(
                "max_attempts is {}; expected 1 to 100",
                request.max_attempts
            )));
        }
        let store = &self.inner.store;
        let promotion = store.get_promotion(request.promotion_id).await?;
        if promotion.status != PromotionStatus::Approved {
            return Err(EngineError::PromotionNotApproved {
                promotion: promotion.id,
                status: promotion.status.as_str(),
            });
        }
        let release = store.get_release(promotion.release_id).await?;
        let targets = store.list_targets(promotion.environment_id).await?;
        let target_ids: Vec<_> = targets.iter().map(|t| t.id).collect();
        let rollout = plan(&request.strategy, &target_ids, request.parallelism)?;
        let previous = store
            .previous_successful_job(promotion.environment_id, release.id)
            .await?;
        let now = self.inner.clock.now();
        let job_id = JobId::from_parts(now, random_bytes());
        let mut tasks = Vec::new();
        for target in &targets {
            // Blue-green phases reuse the same task: it deploys green and verifies it;
            // the task's wave is the target's first appearance.
            let wave = rollout
                .waves
                .iter()
                .find(|w| w.targets.contains(&target.id))
                .map_or(0, |w| w.index);
            let mut push = |component_id, digest| {
                tasks.push(DeploymentTask {
                    id: TaskId::from_parts(now, random_bytes()),
                    job_id,
                    target_id: target.id,
                    component_id,
                    digest,
                    status: TaskStatus::Pending,
                    agent_id: None,
                    started_at: None,
                    completed_at: None,
                    logs: String::new(),
                    previous_digest: None,
                    error: None,
                    attempt_number: 0,
                    max_attempts: request.max_attempts,
                    last_failure_retryable: false,
                    wave,
                    version: 0,
                    created_at: now,
                    updated_at: now,
                });
            };
            if target.target_type == TargetType::ComposeHost {
                // One task deploys the whole project; its digest identifies the set of
                // images (the compose lock's digest once artifacts are rendered).
                let listing: String = release
                    .components
                    .iter()
                    .map(|c| format!("{}={}\n", c.name, c.image))
                    .collect();
                push(None, sha256_of(listing.as_bytes()));
            } else {
                for component in &release.components {
                    push(Some(component.id), component.digest().clone());
                }
            }
        }
        let job = DeploymentJob {
            id: job_id,
            promotion_id: promotion.id,
            release_id: release.id,
            environment_id: promotion.environment_id,
            strategy: request.strategy.clone(),
            parallelism: request.parallelism,
            failure_policy: request.failure_policy,
            status: JobStatus::Pending,
            started_at: None,
            completed_at: None,
            artifacts: Vec::new(),
            rollback_of: None,
            previous_job_id: previous.map(|j| j.id),
            tasks,
            idempotency_key: request.idempotency_key.clone(),
            failure_reason: None,
            version: 0,
            created_at: now,
            updated_at: now,
        };
        Ok(store.create_job(&job).await?)
    }
}
