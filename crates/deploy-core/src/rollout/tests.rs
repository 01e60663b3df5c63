//! Table tests of `decide` for each job state, and a simulation property test: random outcomes, crashes and completion orders.

use std::collections::BTreeSet;
use std::num::NonZeroU32;

use proptest::prelude::*;

use super::*;
use crate::job_status::JobEvent;
use crate::strategy::FailurePolicy;
use crate::task::DeploymentTask;
use crate::task_status::TaskEvent;
use crate::testing::*;

fn input<'a>(job: &'a DeploymentJob, live: &'a BTreeSet<TaskId>, now: u64) -> DecideInput<'a> {
    DecideInput {
        job,
        live,
        rollback_attempts: 0,
        now: ts(now),
        backoff: RetryBackoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        },
    }
}

/// A running job of `n` tasks (one per target) in waves of `per_wave`, parallelism `p`.
fn running(n: u64, per_wave: u64, p: u32) -> DeploymentJob {
    let mut j = job(1, n);
    j.parallelism = NonZeroU32::new(p).unwrap();
    for (i, t) in j.tasks.iter_mut().enumerate() {
        t.wave = (i as u64 / per_wave) as u32;
    }
    j.apply(JobEvent::Start, ts(0)).unwrap();
    j.apply(JobEvent::ArtifactsReady, ts(0)).unwrap();
    j
}

fn step(t: &mut DeploymentTask, events: &[TaskEvent]) {
    for e in events {
        t.apply(*e, ts(1_000)).unwrap();
    }
}

/// Queued is only reached through `Enqueue`, which older engines wrote.
const TO_QUEUED: &[TaskEvent] = &[TaskEvent::Enqueue];
const TO_RUNNING: &[TaskEvent] = &[TaskEvent::Dispatch, TaskEvent::Start];
const TO_SUCCEEDED: &[TaskEvent] = &[
    TaskEvent::Dispatch,
    TaskEvent::Start,
    TaskEvent::Verify,
    TaskEvent::Succeed,
];
const TO_FAILED_RETRYABLE: &[TaskEvent] =
    &[TaskEvent::Dispatch, TaskEvent::Fail { retryable: true }];
const TO_FAILED_PERMANENT: &[TaskEvent] =
    &[TaskEvent::Dispatch, TaskEvent::Fail { retryable: false }];

#[test]
fn job_level_states() {
    let none = BTreeSet::new();
    let mut j = job(1, 1);
    assert_eq!(decide(&input(&j, &none, 0)), vec![Action::StartJob]);
    j.apply(JobEvent::Start, ts(0)).unwrap();
    assert_eq!(decide(&input(&j, &none, 0)), vec![Action::PrepareArtifacts]);
    j.status = JobStatus::Completing;
    assert_eq!(decide(&input(&j, &none, 0)), vec![Action::VerifyTargets]);
    // Waits for its rollback job (run by the claim loop like any job).
    for settled in [
        JobStatus::Completed,
        JobStatus::RolledBack,
        JobStatus::RollingBack,
    ] {
        j.status = settled;
        assert_eq!(decide(&input(&j, &none, 0)), vec![]);
    }
    // Failed and wound down: settled.
    j.status = JobStatus::Failed;
    j.winding_down = false;
    assert_eq!(decide(&input(&j, &none, 0)), vec![]);
    for terminal in [JobStatus::Completed, JobStatus::RolledBack] {
        j.status = terminal;
        assert_eq!(decide(&input(&j, &none, 0)), vec![]);
    }
}

#[test]
fn only_the_current_wave_is_dispatched_straight_from_pending() {
    let j = running(5, 2, 10);
    let none = BTreeSet::new();
    assert_eq!(
        decide(&input(&j, &none, 0)),
        vec![
            Action::Dispatch(j.tasks[0].id),
            Action::Dispatch(j.tasks[1].id)
        ]
    );
}

#[test]
fn pending_retrying_and_queued_tasks_share_the_free_slots_in_task_order() {
    let mut j = running(5, 5, 3);
    step(&mut j.tasks[0], TO_RUNNING); // live: one slot taken
    step(&mut j.tasks[1], TO_FAILED_RETRYABLE);
    step(&mut j.tasks[1], &[TaskEvent::Retry]);
    step(&mut j.tasks[2], TO_QUEUED); // written by an older engine
    let live = BTreeSet::from([j.tasks[0].id]);
    assert_eq!(
        decide(&input(&j, &live, 0)),
        vec![
            Action::Dispatch(j.tasks[1].id),
            Action::Dispatch(j.tasks[2].id)
        ],
        "two free slots; pending tasks 3 and 4 wait"
    );
}

#[test]
fn dispatch_respects_parallelism_counting_live_and_orphaned_tasks() {
    let mut j = running(5, 5, 3);
    step(&mut j.tasks[0], TO_RUNNING); // live
    step(&mut j.tasks[1], TO_RUNNING); // orphaned: its worker died with the previous process
    let live = BTreeSet::from([j.tasks[0].id]);
    assert_eq!(
        decide(&input(&j, &live, 0)),
        vec![
            Action::Reconcile(j.tasks[1].id),
            Action::Dispatch(j.tasks[2].id)
        ]
    );
}

#[test]
fn a_live_task_holds_its_slot_while_its_dispatch_is_being_written() {
    // Task 0's worker is writing its dispatch: the job still shows it pending.
    let mut j = running(3, 3, 2);
    let live = BTreeSet::from([j.tasks[0].id]);
    assert_eq!(
        decide(&input(&j, &live, 0)),
        vec![Action::Dispatch(j.tasks[1].id)],
        "one slot left, and task 0 is not dispatched twice"
    );
    // A failing job does not fail (nor cancel, nor roll back) under a live worker.
    step(&mut j.tasks[1], TO_FAILED_PERMANENT);
    step(&mut j.tasks[2], TO_FAILED_RETRYABLE);
    assert_eq!(
        decide(&input(&j, &live, 0)),
        vec![Action::CancelTask(j.tasks[2].id)]
    );
    step(&mut j.tasks[2], &[TaskEvent::Cancel]);
    assert_eq!(
        decide(&input(&j, &live, 0)),
        vec![],
        "wait for the live worker"
    );
    let none = BTreeSet::new();
    assert_eq!(
        decide(&input(&j, &none, 0)),
        vec![Action::FailJob(
            "2 of 3 targets failed, exceeding the failure policy".into()
        )],
        "its worker reported the task unchanged (never dispatched): it stays pending"
    );
    j.apply(JobEvent::Fail, ts(2)).unwrap();
    j.failure_policy.auto_rollback = true;
    assert_eq!(decide(&input(&j, &live, 0)), vec![]);
    assert_eq!(decide(&input(&j, &none, 0)), vec![Action::StartRollback]);
}

#[test]
fn retries_wait_for_their_backoff() {
    let mut j = running(2, 2, 2);
    step(&mut j.tasks[0], TO_FAILED_RETRYABLE); // failed at ts(1000), attempt 1 -> 100 ms
    step(&mut j.tasks[1], TO_SUCCEEDED);
    let none = BTreeSet::new();
    assert_eq!(
        decide(&input(&j, &none, 1_050)),
        vec![Action::WakeAt(ts(1_100))]
    );
    assert_eq!(
        decide(&input(&j, &none, 1_100)),
        vec![Action::Retry(j.tasks[0].id)]
    );
    assert_eq!(RetryBackoff::default().delay(1), Duration::from_secs(1));
    assert_eq!(RetryBackoff::default().delay(3), Duration::from_secs(4));
    assert_eq!(RetryBackoff::default().delay(40), Duration::from_secs(60));
}

#[test]
fn failures_within_policy_let_the_rollout_go_on_and_then_fail_the_job() {
    let mut j = running(3, 1, 1);
    j.failure_policy = FailurePolicy {
        max_failures: Some(1),
        ..Default::default()
    };
    step(&mut j.tasks[0], TO_SUCCEEDED);
    step(&mut j.tasks[1], TO_FAILED_PERMANENT);
    let none = BTreeSet::new();
    // Wave 2 still to go: one failure is tolerated.
    assert_eq!(
        decide(&input(&j, &none, 0)),
        vec![Action::Dispatch(j.tasks[2].id)]
    );
    step(&mut j.tasks[2], TO_SUCCEEDED);
    // Every wave settled, one target failed: the job fails (not every target runs
    // the release), and, the failure being within the policy, is not rolled back.
    let actions = decide(&input(&j, &none, 0));
    assert!(
        matches!(&actions[..], [Action::FailJob(why)] if why.starts_with("1 of 3 targets failed (within the failure policy")),
        "{actions:?}"
    );
    j.failure_policy.auto_rollback = true;
    j.apply(JobEvent::Fail, ts(1)).unwrap();
    assert_eq!(decide(&input(&j, &none, 0)), vec![Action::EndWindDown]);
}

#[test]
fn an_exceeded_policy_winds_down_then_fails() {
    let mut j = running(4, 4, 4);
    step(&mut j.tasks[0], TO_FAILED_PERMANENT);
    step(&mut j.tasks[1], TO_RUNNING);
    step(&mut j.tasks[2], TO_QUEUED);
    step(&mut j.tasks[3], TO_FAILED_RETRYABLE);
    let live = BTreeSet::from([j.tasks[1].id]);
    assert_eq!(
        decide(&input(&j, &live, 0)),
        vec![
            Action::CancelTask(j.tasks[2].id),
            Action::CancelTask(j.tasks[3].id)
        ]
    );
    step(&mut j.tasks[2], &[TaskEvent::Cancel]);
    step(&mut j.tasks[3], &[TaskEvent::Cancel]);
    assert_eq!(
        decide(&input(&j, &live, 0)),
        vec![],
        "wait for the live task"
    );
    // Its worker reports: it is no longer live.
    step(&mut j.tasks[1], &[TaskEvent::Verify, TaskEvent::Succeed]);
    let none = BTreeSet::new();
    assert_eq!(
        decide(&input(&j, &none, 0)),
        vec![Action::FailJob(
            "3 of 4 targets failed, exceeding the failure policy".into()
        )]
    );
}

#[test]
fn a_failed_job_rolls_back_once_and_only_when_asked() {
    let mut j = running(1, 1, 1);
    step(&mut j.tasks[0], TO_FAILED_PERMANENT);
    j.apply(JobEvent::Fail, ts(2)).unwrap();
    let none = BTreeSet::new();
    assert_eq!(decide(&input(&j, &none, 0)), vec![Action::EndWindDown]);
    j.failure_policy.auto_rollback = true;
    assert_eq!(decide(&input(&j, &none, 0)), vec![Action::StartRollback]);
    let mut again = input(&j, &none, 0);
    again.rollback_attempts = 1;
    assert_eq!(decide(&again), vec![Action::EndWindDown]);
    j.rollback_of = Some(job_id(7));
    assert_eq!(
        decide(&input(&j, &none, 0)),
        vec![Action::EndWindDown],
        "a rollback job is never rolled back"
    );
    j.apply(JobEvent::WoundDown, ts(3)).unwrap();
    assert_eq!(decide(&input(&j, &none, 0)), vec![], "settled");
}

/// What a dispatched attempt does in the simulation.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Success,
    RetryableFailure,
    PermanentFailure,
    /// The engine process dies mid-attempt; `deployed` says whether the target got the new digest.
    Crash {
        deployed: bool,
    },
}

fn any_outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        6 => Just(Outcome::Success),
        2 => Just(Outcome::RetryableFailure),
        1 => Just(Outcome::PermanentFailure),
        1 => any::<bool>().prop_map(|deployed| Outcome::Crash { deployed }),
    ]
}

proptest! {
    /// Drive a job with `decide` through random outcomes, crashes and completion
    /// orders. Invariants: in-flight tasks never exceed the wave's capacity and are
    /// all in the current wave; attempts stay within budget; the loop ends; at the
    /// end the job completed with every target on the new digest, or failed because
    /// the policy was exceeded (and then asks for a rollback when configured).
    #[test]
    fn simulated_rollouts_keep_the_invariants(
        n in 1u64..12,
        per_wave in 1u64..6,
        parallelism in 1u32..5,
        max_failures in prop::option::of(0u32..3),
        outcomes in prop::collection::vec(any_outcome(), 0..60),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 200),
    ) {
        let mut j = running(n, per_wave, parallelism);
        j.failure_policy = FailurePolicy { max_failures, max_failure_ratio: None, auto_rollback: true };
        let mut deployed: BTreeSet<TaskId> = BTreeSet::new(); // targets running the new digest
        let mut live: BTreeSet<TaskId> = BTreeSet::new();
        // Live tasks whose worker has not written the dispatch yet (still pending or retrying).
        let mut unwritten: BTreeSet<TaskId> = BTreeSet::new();
        let mut pending_outcome: BTreeMap<TaskId, Outcome> = BTreeMap::new();
        let mut outcomes = outcomes.into_iter();
        let mut now = 0u64;
        let mut picks = picks.into_iter().cycle();
        let mut finished = false;
        for _round in 0..2_000 {
            let actions = decide(&input(&j, &live, now));
            let find = |j: &DeploymentJob, id: TaskId| j.tasks.iter().position(|t| t.id == id).unwrap();
            if actions.is_empty() {
                if live.is_empty() { finished = true; break; }
                // A live task reports: pick one at random.
                let ids: Vec<TaskId> = live.iter().copied().collect();
                let id = ids[picks.next().unwrap().index(ids.len())];
                live.remove(&id);
                let i = find(&j, id);
                let t = &mut j.tasks[i];
                if unwritten.remove(&id) {
                    for e in [TaskEvent::Dispatch, TaskEvent::Start] { t.apply(e, ts(now)).unwrap(); }
                }
                match pending_outcome.remove(&id).unwrap() {
                    Outcome::Success => {
                        deployed.insert(id);
                        for e in [TaskEvent::Verify, TaskEvent::Succeed] { t.apply(e, ts(now)).unwrap(); }
                    }
                    Outcome::RetryableFailure => { t.apply(TaskEvent::Fail { retryable: true }, ts(now)).unwrap(); }
                    Outcome::PermanentFailure => { t.apply(TaskEvent::Fail { retryable: false }, ts(now)).unwrap(); }
                    Outcome::Crash { .. } => unreachable!("crashed tasks are not live"),
                }
                continue;
            }
            for action in actions {
                match action {
                    Action::Retry(id) => { let i = find(&j, id); j.tasks[i].apply(TaskEvent::Retry, ts(now)).unwrap(); }
                    Action::CancelTask(id) => { let i = find(&j, id); j.tasks[i].apply(TaskEvent::Cancel, ts(now)).unwrap(); }
                    Action::Dispatch(id) => {
                        prop_assert!(!live.contains(&id), "a live task was dispatched again");
                        let i = find(&j, id);
                        // The worker writes the dispatch now, or later (the task stays
                        // pending or retrying, live, meanwhile).
                        let written = picks.next().unwrap().index(2) == 0;
                        if written {
                            j.tasks[i].apply(TaskEvent::Dispatch, ts(now)).unwrap();
                            j.tasks[i].apply(TaskEvent::Start, ts(now)).unwrap();
                        }
                        let outcome = outcomes.next().unwrap_or(Outcome::Success);
                        if let Outcome::Crash { deployed: d } = outcome {
                            // Nothing is deployed before the dispatch is durable.
                            if d && written { deployed.insert(id); }
                        } else {
                            live.insert(id);
                            pending_outcome.insert(id, outcome);
                            if !written { unwritten.insert(id); }
                        }
                    }
                    Action::Reconcile(id) => {
                        // inspect: on the new digest -> verify and succeed; otherwise a retryable failure.
                        let i = find(&j, id);
                        let t = &mut j.tasks[i];
                        if deployed.contains(&id) {
                            for e in [TaskEvent::Verify, TaskEvent::Succeed] { t.apply(e, ts(now)).unwrap(); }
                        } else {
                            t.apply(TaskEvent::Fail { retryable: true }, ts(now)).unwrap();
                        }
                    }
                    Action::WakeAt(at) => { prop_assert!(at.unix_millis() > ts(now).unix_millis()); now = at.duration_since(ts(0)).as_millis() as u64; }
                    Action::CompleteWaves => { j.apply(JobEvent::WavesSucceeded, ts(now)).unwrap(); }
                    Action::VerifyTargets => { j.apply(JobEvent::VerificationPassed, ts(now)).unwrap(); }
                    Action::FailJob(_) => { j.apply(JobEvent::Fail, ts(now)).unwrap(); }
                    Action::StartRollback => { j.apply(JobEvent::RollbackStarted, ts(now)).unwrap(); }
                    Action::EndWindDown => { j.apply(JobEvent::WoundDown, ts(now)).unwrap(); }
                    Action::StartJob | Action::PrepareArtifacts => prop_assert!(false, "job already running"),
                }
            }
            if finished { break; }
            // Invariants after every round.
            let in_flight: Vec<&DeploymentTask> = j.tasks.iter().filter(|t| t.status.is_in_flight() || live.contains(&t.id)).collect();
            if let Some(first) = in_flight.first() {
                prop_assert!(in_flight.iter().all(|t| t.wave == first.wave), "in-flight tasks span waves");
                let wave_size = j.tasks.iter().filter(|t| t.wave == first.wave).count();
                prop_assert!(in_flight.len() <= (parallelism as usize).min(wave_size));
                prop_assert!(j.tasks.iter().filter(|t| t.wave < first.wave).all(|t| t.is_settled()),
                    "a later wave started before an earlier one settled");
            }
            prop_assert!(j.tasks.iter().all(|t| t.attempt_number <= t.max_attempts));
        }
        prop_assert!(finished, "the rollout did not finish in 2000 rounds");
        match j.status {
            JobStatus::Completed => {
                prop_assert!(j.tasks.iter().all(|t| t.status == TaskStatus::Succeeded), "a completed job has no failed task");
                for t in &j.tasks {
                    prop_assert!(deployed.contains(&t.id), "a succeeded task's target is on the new digest");
                }
            }
            JobStatus::Failed => {
                // Failures the policy tolerated: the job failed, and is not rolled back.
                let (failed, total) = failed_targets(&j);
                prop_assert!(failed > 0 && !j.failure_policy.exceeded(failed, total));
                prop_assert!(j.tasks.iter().all(DeploymentTask::is_settled));
                prop_assert!(!j.winding_down, "a failure ends wound down");
            }
            JobStatus::RollingBack => {
                let (failed, total) = failed_targets(&j);
                prop_assert!(j.failure_policy.exceeded(failed, total), "failed only when the policy says so");
                prop_assert!(j.tasks.iter().all(|t| !t.status.is_in_flight()) && live.is_empty(), "nothing left in flight");
            }
            other => prop_assert!(false, "unexpected end state {other:?}"),
        }
    }
}
