//! `DeploymentJob`: a promotion being carried out in one environment, with its strategy, policy, tasks and artifacts.

use std::collections::BTreeSet;
use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

use crate::artifact::GeneratedArtifact;
use crate::errors::InvalidTransition;
use crate::ids::{EnvironmentId, JobId, PromotionId, ReleaseId, TargetId};
use crate::job_status::{JobEvent, JobStatus};
use crate::strategy::{FailurePolicy, Strategy};
use crate::task::DeploymentTask;
use crate::task_status::TaskStatus;
use crate::timestamp::Timestamp;
use crate::values::IdempotencyKey;

/// A deployment job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentJob {
    pub id: JobId,
    pub promotion_id: PromotionId,
    pub release_id: ReleaseId,
    pub environment_id: EnvironmentId,
    pub strategy: Strategy,
    /// Most tasks in flight at once across the job.
    pub parallelism: NonZeroU32,
    pub failure_policy: FailurePolicy,
    pub status: JobStatus,
    /// Set on `start`.
    pub started_at: Option<Timestamp>,
    /// Set when the job first settles (completed, failed or rolled back).
    pub completed_at: Option<Timestamp>,
    pub artifacts: Vec<GeneratedArtifact>,
    /// For a rollback job: the job it rolls back.
    pub rollback_of: Option<JobId>,
    /// The previous successful job of the environment, whose digests a rollback restores.
    pub previous_job_id: Option<JobId>,
    /// Set while the job waits in line for its busy environment: the job ahead of it.
    /// A queued job is `pending`, holds no lock and is not run until the engine lets it in.
    #[serde(default)]
    pub queued_behind: Option<JobId>,
    pub tasks: Vec<DeploymentTask>,
    /// Creating a job twice with the same key returns the first job.
    pub idempotency_key: IdempotencyKey,
    /// Why the job failed, when it did.
    pub failure_reason: Option<String>,
    /// Optimistic-concurrency counter, bumped by the store on every write.
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl DeploymentJob {
    /// Applies `event` at `now`, stamping `started_at`, `completed_at` and `updated_at`.
    /// On error the job is unchanged.
    pub fn apply(
        &mut self,
        event: JobEvent,
        now: Timestamp,
    ) -> Result<JobStatus, InvalidTransition> {
        let next = self.status.apply(event)?;
        if event == JobEvent::Start {
            self.started_at = Some(now);
        }
        if next == JobStatus::RollingBack {
            // The job is active again; it settles anew when the rollback ends.
            self.completed_at = None;
        } else if !next.is_active() {
            self.completed_at.get_or_insert(now);
        }
        self.status = next;
        self.updated_at = now;
        Ok(next)
    }

    /// True for a job created to roll another back.
    pub fn is_rollback(&self) -> bool {
        self.rollback_of.is_some()
    }

    /// The distinct targets this job touches, in task order (linear in the tasks:
    /// a job may have tens of thousands).
    pub fn target_ids(&self) -> Vec<TargetId> {
        let mut seen = BTreeSet::new();
        self.tasks
            .iter()
            .map(|t| t.target_id)
            .filter(|id| seen.insert(*id))
            .collect()
    }

    /// Counts of tasks by status, in [`TaskStatus::ALL`] order.
    pub fn task_counts(&self) -> [(TaskStatus, usize); 8] {
        TaskStatus::ALL.map(|s| (s, self.tasks.iter().filter(|t| t.status == s).count()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn apply_stamps_times_and_leaves_the_job_unchanged_on_error() {
        let mut j = job(1, 2);
        j.apply(JobEvent::Start, ts(10)).unwrap();
        assert_eq!(j.started_at, Some(ts(10)));
        j.apply(JobEvent::ArtifactsReady, ts(11)).unwrap();
        j.apply(JobEvent::Fail, ts(12)).unwrap();
        assert_eq!(j.completed_at, Some(ts(12)));
        j.apply(JobEvent::RollbackStarted, ts(13)).unwrap();
        assert_eq!(j.completed_at, None, "rolling back is active again");
        j.apply(JobEvent::RollbackSucceeded, ts(14)).unwrap();
        assert_eq!(
            (j.status, j.completed_at),
            (JobStatus::RolledBack, Some(ts(14)))
        );
        let before = j.clone();
        assert!(j.apply(JobEvent::Start, ts(15)).is_err());
        assert_eq!(j, before);
    }

    #[test]
    fn targets_and_counts() {
        let j = job(1, 3);
        assert_eq!(j.target_ids().len(), 3);
        let mut k = job(1, 5);
        for (t, n) in k.tasks.iter_mut().zip([3, 1, 3, 2, 1]) {
            t.target_id = target_id(n);
        }
        assert_eq!(
            k.target_ids(),
            [target_id(3), target_id(1), target_id(2)],
            "distinct, in task order"
        );
        assert_eq!(j.task_counts()[0], (TaskStatus::Pending, 3));
        assert!(!j.is_rollback());
    }

    #[test]
    fn job_round_trips_through_json() {
        let j = job(4, 2);
        let json = serde_json::to_string(&j).unwrap();
        assert_eq!(serde_json::from_str::<DeploymentJob>(&json).unwrap(), j);
    }
}
