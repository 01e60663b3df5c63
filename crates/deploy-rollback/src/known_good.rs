//! `LastKnownGood`: per (target, component) slot, the digest that the newest completed job actually deployed there.
//!
//! The spec's sketch restores `previousTask.previousDigest || task.previousDigest`.
//! Both are wrong sources: `previousDigest` is what *inspect saw before* a task
//! ran, so taken from the previous job it is the version *two* deployments back,
//! and taken from the failed task it may be a half-deployed state left by an
//! earlier attempt. The right source is what a *completed* job deployed: its
//! tasks all succeeded and passed health verification, so that digest is known
//! to have served.

use std::collections::BTreeMap;

use deploy_core::{
    ComponentId, DeploymentJob, Digest, JobId, JobStatus, ReleaseId, TargetId, TaskStatus,
    Timestamp,
};

/// A deployable slot: a component on a target, or a target's whole compose project (`None`).
pub type SlotKey = (TargetId, Option<ComponentId>);

/// What a completed job deployed on one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownGood {
    pub digest: Digest,
    /// The component's id in the source job's release (`None` for a compose project).
    /// Releases may give the same component a new id; the slot key is the id in the
    /// job being rolled back, and this is the id the rollback task deploys.
    pub component_id: Option<ComponentId>,
    pub job_id: JobId,
    pub release_id: ReleaseId,
    pub completed_at: Timestamp,
}

/// The last-known-good digest of every slot of an environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastKnownGood(BTreeMap<SlotKey, KnownGood>);

impl LastKnownGood {
    /// Derives the map from an environment's jobs: for each slot, the succeeded task of
    /// the completed job with the latest `completed_at` (ties broken by the later job id).
    /// Jobs listed in `exclude` are ignored (a manual rollback of a completed job
    /// excludes that job itself).
    pub fn from_jobs<'a>(
        jobs: impl IntoIterator<Item = &'a DeploymentJob>,
        exclude: &[JobId],
    ) -> Self {
        let mut map: BTreeMap<SlotKey, KnownGood> = BTreeMap::new();
        for job in jobs {
            if job.status != JobStatus::Completed || exclude.contains(&job.id) {
                continue;
            }
            let Some(completed_at) = job.completed_at else {
                continue;
            };
            for task in job
                .tasks
                .iter()
                .filter(|t| t.status == TaskStatus::Succeeded)
            {
                let candidate = KnownGood {
                    digest: task.digest.clone(),
                    component_id: task.component_id,
                    job_id: job.id,
                    release_id: job.release_id,
                    completed_at,
                };
                map.entry((task.target_id, task.component_id))
                    .and_modify(|current| {
                        if (candidate.completed_at, candidate.job_id)
                            > (current.completed_at, current.job_id)
                        {
                            *current = candidate.clone();
                        }
                    })
                    .or_insert(candidate);
            }
        }
        Self(map)
    }

    /// Builds the map from rows the store computed itself.
    pub fn from_entries(entries: impl IntoIterator<Item = (SlotKey, KnownGood)>) -> Self {
        Self(entries.into_iter().collect())
    }

    /// The last-known-good of one slot.
    pub fn get(&self, slot: &SlotKey) -> Option<&KnownGood> {
        self.0.get(slot)
    }

    /// Every slot with its last-known-good, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&SlotKey, &KnownGood)> {
        self.0.iter()
    }

    /// Number of slots known.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no slot has a last-known-good.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use deploy_core::testing::*;
    use deploy_core::{JobEvent, TaskEvent};

    use super::*;

    /// Job `n` deploying `digest(d)` on targets 1..=targets, completed at `ts(at)`.
    pub(crate) fn completed_job(n: u64, d: u64, targets: u64, at: u64) -> DeploymentJob {
        let mut j = job(n, targets);
        for t in &mut j.tasks {
            t.job_id = j.id;
            t.digest = digest(d);
            for e in [
                TaskEvent::Enqueue,
                TaskEvent::Dispatch,
                TaskEvent::Start,
                TaskEvent::Verify,
                TaskEvent::Succeed,
            ] {
                t.apply(e, ts(at)).unwrap();
            }
        }
        for e in [
            JobEvent::Start,
            JobEvent::ArtifactsReady,
            JobEvent::WavesSucceeded,
            JobEvent::VerificationPassed,
        ] {
            j.apply(e, ts(at)).unwrap();
        }
        j
    }

    #[test]
    fn newest_completed_job_wins_per_slot() {
        let old = completed_job(1, 10, 3, 100);
        let new = completed_job(2, 20, 2, 200); // touched targets 1 and 2 only
        let lkg = LastKnownGood::from_jobs([&new, &old], &[]);
        let slot = |t| (target_id(t), Some(component_id(1)));
        assert_eq!(lkg.get(&slot(1)).unwrap().digest, digest(20));
        assert_eq!(lkg.get(&slot(2)).unwrap().job_id, new.id);
        assert_eq!(
            lkg.get(&slot(3)).unwrap().digest,
            digest(10),
            "target 3 keeps the older job's digest"
        );
        assert_eq!(lkg.len(), 3);
    }

    #[test]
    fn failed_jobs_failed_tasks_and_excluded_jobs_do_not_count() {
        let good = completed_job(1, 10, 1, 100);
        let mut failed = completed_job(2, 20, 1, 200);
        failed.status = JobStatus::Failed;
        let mut partial = completed_job(3, 30, 1, 300);
        partial.tasks[0].status = TaskStatus::Failed;
        let excluded = completed_job(4, 40, 1, 400);
        let lkg = LastKnownGood::from_jobs([&good, &failed, &partial, &excluded], &[excluded.id]);
        assert_eq!(
            lkg.get(&(target_id(1), Some(component_id(1))))
                .unwrap()
                .digest,
            digest(10)
        );
        assert!(LastKnownGood::from_jobs([&failed], &[]).is_empty());
    }
}
