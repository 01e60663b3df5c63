//! Tests of rollback planning: the right digests, exactly the touched slots, the spec's fast-track settings, and the errors.

use deploy_core::testing::*;
use deploy_core::{JobEvent, TaskEvent, TaskStatus};

use super::*;
use crate::known_good::KnownGood;

fn good(d: u64, job: u64, at: u64) -> KnownGood {
    KnownGood {
        digest: digest(d),
        component_id: Some(component_id(1)),
        job_id: job_id(job),
        release_id: release_id(job),
        completed_at: ts(at),
    }
}

fn slot(t: u64) -> SlotKey {
    (target_id(t), Some(component_id(1)))
}

/// Job 9 over `targets` targets, failed; tasks on targets in `touched` were dispatched.
fn failed_job(targets: u64, touched: &[u64]) -> DeploymentJob {
    let mut j = job(9, targets);
    for t in &mut j.tasks {
        t.digest = digest(99);
        if touched.iter().any(|n| target_id(*n) == t.target_id) {
            for e in [
                TaskEvent::Enqueue,
                TaskEvent::Dispatch,
                TaskEvent::Fail { retryable: false },
            ] {
                t.apply(e, ts(5)).unwrap();
            }
        }
    }
    for e in [JobEvent::Start, JobEvent::ArtifactsReady, JobEvent::Fail] {
        j.apply(e, ts(5)).unwrap();
    }
    j
}

fn counter() -> impl FnMut() -> [u8; 10] {
    let mut n = 0u8;
    move || {
        n += 1;
        [n; 10]
    }
}

fn plan(job: &DeploymentJob, lkg: &LastKnownGood) -> Result<RollbackPlan, RollbackError> {
    let mut random = counter();
    plan_rollback(RollbackRequest {
        job,
        reason: "health check failed".into(),
        known_good: lkg,
        attempt: 1,
        now: ts(10),
        random: &mut random,
    })
}

#[test]
fn restores_the_last_known_good_of_exactly_the_touched_slots() {
    let failed = failed_job(4, &[1, 2, 3]);
    let lkg = LastKnownGood::from_entries([
        (slot(1), good(10, 1, 1)),
        (slot(2), good(20, 2, 2)),
        (slot(4), good(10, 1, 1)),
    ]);
    let p = plan(&failed, &lkg).unwrap();
    let restored: Vec<_> = p
        .job
        .tasks
        .iter()
        .map(|t| (t.target_id, t.digest.clone()))
        .collect();
    assert_eq!(
        restored,
        vec![(target_id(1), digest(10)), (target_id(2), digest(20))]
    );
    assert_eq!(
        p.unrestorable,
        vec![Unrestorable {
            slot: slot(3),
            reason:
                "no completed job of the environment deployed this slot; nothing known to be good"
                    .into()
        }]
    );
    // Target 4 was never touched: it is not rolled back even though it has a last-known-good.
    assert!(p.job.tasks.iter().all(|t| t.target_id != target_id(4)));
}

#[test]
fn the_rollback_job_follows_the_spec() {
    let failed = failed_job(2, &[1, 2]);
    let lkg = LastKnownGood::from_entries([(slot(1), good(10, 1, 1)), (slot(2), good(20, 2, 2))]);
    let p = plan(&failed, &lkg).unwrap();
    let j = &p.job;
    assert_eq!(j.rollback_of, Some(failed.id));
    assert_eq!(j.previous_job_id, Some(job_id(2)), "the newest source job");
    assert_eq!(j.release_id, release_id(2));
    assert_eq!(
        (j.promotion_id, j.environment_id),
        (failed.promotion_id, failed.environment_id)
    );
    assert_eq!(j.strategy, Strategy::AllAtOnce);
    assert_eq!(j.parallelism.get(), 10);
    assert_eq!(j.status, JobStatus::Pending);
    assert_eq!(
        j.idempotency_key.as_str(),
        format!("rollback:{}:1", failed.id)
    );
    assert!(
        !j.failure_policy.exceeded(2, 2),
        "a rollback is never stopped early"
    );
    for t in &j.tasks {
        assert_eq!(
            (t.status, t.attempt_number, t.max_attempts, t.wave),
            (TaskStatus::Pending, 0, 3, 0)
        );
        assert_eq!(t.job_id, j.id);
    }
    assert_ne!(j.tasks[0].id, j.tasks[1].id);
}

#[test]
fn nothing_to_restore_is_an_error_that_says_why() {
    let failed = failed_job(3, &[1]);
    let err = plan(&failed, &LastKnownGood::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "no target of job `{}` has a last-known-good digest to restore (2 never touched, 1 without a completed deployment); expected a completed job before it in the environment",
            failed.id
        )
    );
}

#[test]
fn only_failed_or_completed_jobs_and_never_a_rollback() {
    let lkg = LastKnownGood::from_entries([(slot(1), good(10, 1, 1))]);
    let running = job(3, 1);
    assert!(matches!(
        plan(&running, &lkg),
        Err(RollbackError::NotRollbackable {
            status: "pending",
            ..
        })
    ));
    let mut rb = failed_job(1, &[1]);
    rb.rollback_of = Some(job_id(1));
    assert!(matches!(
        plan(&rb, &lkg),
        Err(RollbackError::RollbackOfRollback { .. })
    ));
}

#[test]
fn a_manual_rollback_of_a_completed_job_restores_the_job_before_it() {
    let previous = crate::known_good::tests::completed_job(1, 10, 2, 100);
    let current = crate::known_good::tests::completed_job(2, 20, 2, 200);
    let lkg = LastKnownGood::from_jobs([&previous, &current], &[current.id]);
    let p = plan(&current, &lkg).unwrap();
    assert!(p.job.tasks.iter().all(|t| t.digest == digest(10)));
    assert_eq!(p.job.previous_job_id, Some(previous.id));
}
