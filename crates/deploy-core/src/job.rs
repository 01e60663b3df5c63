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
    /// Set when the job settles (completed, rolled back, or failed and wound down);
    /// cleared while it rolls back.
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
    /// A `failed` job whose runner is not done with it yet: attempts still in flight
    /// are being cancelled or reconciled, and the automatic rollback (when the failure
    /// policy asks for one) is still to start. Such a job is still claimed and run;
    /// `wound_down` (or `rollback_started`) clears it, and only then is `failed` settled.
    #[serde(default)]
    pub winding_down: bool,
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
        // `wound_down` ends a wind-down; a settled failure has none to end.
        if event == JobEvent::WoundDown && !self.winding_down {
            return Err(InvalidTransition {
                entity: "job",
                from: self.status.as_str(),
                event: event.as_str(),
                reason: Some("the failure is already wound down".to_owned()),
            });
        }
        let next = self.status.apply(event)?;
        // A job cancelled before it started has nothing to wind down; a rollback job
        // still winds down, as its end is what settles the job it rolls back.
        self.winding_down = matches!(event, JobEvent::Fail | JobEvent::Cancel)
            && (self.status != JobStatus::Pending || self.is_rollback());
        if event == JobEvent::Start {
            self.started_at = Some(now);
        }
        if next == JobStatus::RollingBack {
            // The job is active again; it settles anew when the rollback ends.
            self.completed_at = None;
        } else if !next.is_active() && !self.winding_down {
            self.completed_at.get_or_insert(now);
        }
        self.status = next;
        self.updated_at = now;
        Ok(next)
    }

    /// The job has reached a state it leaves only by an operator's act (a manual
    /// rollback): completed, rolled back, or failed and wound down.
    pub fn is_settled(&self) -> bool {
        !self.status.is_active() && !self.winding_down
    }

    /// An engine must claim and run the job: it is pending to completing, or failed
    /// and still winding down. A `rolling_back` job is not run: it waits for its
    /// rollback job, whose end settles it in the same transaction.
    pub fn needs_runner(&self) -> bool {
        self.status.holds_environment() || self.winding_down
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
        assert_eq!(j.completed_at, None, "not settled while it winds down");
        assert!(j.winding_down && j.needs_runner() && !j.is_settled());
        j.apply(JobEvent::RollbackStarted, ts(13)).unwrap();
        assert_eq!(j.completed_at, None, "rolling back is active again");
        assert!(!j.winding_down && !j.needs_runner() && !j.is_settled());
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
    fn a_failed_job_winds_down_once_then_is_settled() {
        let mut j = job(1, 2);
        for event in [JobEvent::Start, JobEvent::ArtifactsReady, JobEvent::Fail] {
            j.apply(event, ts(1)).unwrap();
        }
        assert!(j.winding_down);
        j.apply(JobEvent::WoundDown, ts(2)).unwrap();
        assert_eq!((j.status, j.completed_at), (JobStatus::Failed, Some(ts(2))));
        assert!(j.is_settled() && !j.needs_runner());
        let before = j.clone();
        let err = j.apply(JobEvent::WoundDown, ts(3)).unwrap_err();
        assert_eq!((err.from, err.event), ("failed", "wound_down"));
        assert_eq!(j, before, "a settled failure has no wind-down to end");
        // A manual rollback that fails leaves it settled again.
        j.apply(JobEvent::RollbackStarted, ts(4)).unwrap();
        assert!(
            j.apply(JobEvent::Cancel, ts(5)).is_err(),
            "cancelled through its rollback job"
        );
        j.apply(JobEvent::RollbackFailed, ts(5)).unwrap();
        assert!(j.is_settled());
    }

    #[test]
    fn a_job_cancelled_before_it_started_is_settled_at_once() {
        let mut j = job(1, 2);
        j.apply(JobEvent::Cancel, ts(1)).unwrap();
        assert_eq!(j.status, JobStatus::Failed);
        assert!(j.is_settled());
        let mut rollback = job(2, 1);
        rollback.rollback_of = Some(job_id(1));
        rollback.apply(JobEvent::Cancel, ts(1)).unwrap();
        assert!(
            rollback.winding_down,
            "its end settles the job it rolls back"
        );
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
