//! `plan_rollback`: builds the rollback job (the spec's `initiateRollback`) for exactly the slots a job touched.

use std::num::NonZeroU32;

use deploy_core::{
    DEFAULT_MAX_ATTEMPTS, DeploymentJob, DeploymentTask, FailurePolicy, IdempotencyKey, JobId,
    JobStatus, NewTask, Ratio, Strategy, TaskId, Timestamp,
};

use crate::errors::RollbackError;
use crate::known_good::{KnownGood, LastKnownGood, SlotKey};

/// Tasks in flight at once in a rollback (the spec's fast rollback).
pub const ROLLBACK_PARALLELISM: u32 = 10;

/// What a rollback needs from the engine.
pub struct RollbackRequest<'a> {
    /// The failed job (or, for a manual rollback, the completed job) to undo.
    pub job: &'a DeploymentJob,
    /// Why, for the job's events and the operator.
    pub reason: String,
    /// Last-known-good digests of the environment, excluding `job` itself.
    pub known_good: &'a LastKnownGood,
    /// Which rollback of this job this is (1 for the first); part of the idempotency key,
    /// so a repeated request returns the same rollback job and a deliberate retry gets a new one.
    pub attempt: u32,
    pub now: Timestamp,
    /// Ten random bytes per call, for the new ids (core reads no random source).
    pub random: &'a mut dyn FnMut() -> [u8; 10],
}

/// A slot the rollback cannot restore, and why; reported, never guessed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unrestorable {
    pub slot: SlotKey,
    pub reason: String,
}

/// The planned rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackPlan {
    /// A pending job: all-at-once, parallelism 10, fresh retry budget, one task per restorable slot.
    pub job: DeploymentJob,
    /// Touched slots with no last-known-good digest.
    pub unrestorable: Vec<Unrestorable>,
    pub reason: String,
}

/// Plans the rollback of `request.job`.
///
/// Only slots the job *touched* (a task dispatched at least once) are restored:
/// a target the job never reached still runs its last-known-good version.
/// Canary and soak are skipped (all-at-once), and the policy never stops a
/// rollback early: every restorable slot is attempted.
pub fn plan_rollback(request: RollbackRequest<'_>) -> Result<RollbackPlan, RollbackError> {
    let job = request.job;
    if let Some(original) = job.rollback_of {
        return Err(RollbackError::RollbackOfRollback {
            job: job.id.to_string(),
            original: original.to_string(),
        });
    }
    if !matches!(
        job.status,
        JobStatus::Failed | JobStatus::RollingBack | JobStatus::Completed
    ) {
        return Err(RollbackError::NotRollbackable {
            job: job.id.to_string(),
            status: job.status.as_str(),
        });
    }
    let now = request.now;
    let new_job_id = JobId::from_parts(now, (request.random)());
    let mut tasks = Vec::new();
    let mut unrestorable = Vec::new();
    let mut untouched = 0;
    let mut sources: Vec<&KnownGood> = Vec::new();
    for task in &job.tasks {
        let slot = (task.target_id, task.component_id);
        if task.attempt_number == 0 {
            untouched += 1;
            continue;
        }
        if tasks
            .iter()
            .any(|t: &DeploymentTask| (t.target_id, t.component_id) == slot)
        {
            continue;
        }
        let Some(good) = request.known_good.get(&slot) else {
            unrestorable.push(Unrestorable {
                slot,
                reason: "no completed job of the environment deployed this slot; nothing known to be good".to_owned(),
            });
            continue;
        };
        sources.push(good);
        tasks.push(DeploymentTask::pending(
            NewTask {
                id: TaskId::from_parts(now, (request.random)()),
                job_id: new_job_id,
                target_id: task.target_id,
                component_id: good.component_id,
                digest: good.digest.clone(),
                max_attempts: DEFAULT_MAX_ATTEMPTS,
                wave: 0,
            },
            now,
        ));
    }
    let Some(newest) = sources.iter().max_by_key(|g| (g.completed_at, g.job_id)) else {
        return Err(RollbackError::NoRollbackTarget {
            job: job.id.to_string(),
            untouched,
            unknown: unrestorable.len(),
        });
    };
    let key = IdempotencyKey::parse(&format!("rollback:{}:{}", job.id, request.attempt.max(1)))
        .map_err(|_| RollbackError::NotRollbackable {
            job: job.id.to_string(),
            status: job.status.as_str(),
        })?;
    let rollback = DeploymentJob {
        id: new_job_id,
        promotion_id: job.promotion_id,
        release_id: newest.release_id,
        environment_id: job.environment_id,
        strategy: Strategy::AllAtOnce,
        parallelism: NonZeroU32::new(ROLLBACK_PARALLELISM).unwrap_or(NonZeroU32::MIN),
        failure_policy: FailurePolicy {
            max_failures: None,
            // Never stop a rollback early: restore every slot that can be restored.
            max_failure_ratio: Ratio::new(1.0).ok(),
            auto_rollback: false,
        },
        status: JobStatus::Pending,
        started_at: None,
        completed_at: None,
        artifacts: Vec::new(),
        rollback_of: Some(job.id),
        previous_job_id: Some(newest.job_id),
        queued_behind: None,
        winding_down: false,
        tasks,
        idempotency_key: key,
        failure_reason: None,
        version: 0,
        created_at: now,
        updated_at: now,
    };
    Ok(RollbackPlan {
        job: rollback,
        unrestorable,
        reason: request.reason,
    })
}

#[cfg(test)]
mod tests;
