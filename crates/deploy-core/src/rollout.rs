//! The rollout decider: from a job's persisted state, the next actions the engine must perform (the core decides, the engine performs).
//!
//! `decide` is level-triggered: it looks only at the job as stored (statuses,
//! attempts, waves) plus which tasks have a live worker in this process, never
//! at history in memory. An engine that restarts after a crash reloads the job
//! and calls `decide` again, and gets exactly the work that is left, including
//! `Reconcile` for tasks that were in flight when the previous process died.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::ids::{TargetId, TaskId};
use crate::job::DeploymentJob;
use crate::job_status::JobStatus;
use crate::task::DeploymentTask;
use crate::task_status::TaskStatus;
use crate::timestamp::Timestamp;

/// Delay before retry `n` (1-based): `base * 2^(n-1)`, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBackoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetryBackoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl RetryBackoff {
    /// The delay after the `attempt`-th attempt failed.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// What the decider sees besides the job.
#[derive(Debug, Clone)]
pub struct DecideInput<'a> {
    pub job: &'a DeploymentJob,
    /// Tasks with a worker in this process right now. A live task that is not settled
    /// occupies a slot whatever its status as the job shows it (its worker may still
    /// be writing the dispatch), and gets no action: only its worker writes it until
    /// it reports.
    pub live: &'a BTreeSet<TaskId>,
    /// Rollback jobs already created for this job (an automatic rollback is started once).
    pub rollback_attempts: u32,
    pub now: Timestamp,
    pub backoff: RetryBackoff,
}

/// One thing the engine must do; it persists the resulting transition before acting on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// pending job: apply `JobEvent::Start`.
    StartJob,
    /// preparing job: render and store artifacts, then apply `ArtifactsReady` (or `Fail`).
    PrepareArtifacts,
    /// A task of the current wave that awaits dispatch (pending, retrying, or queued
    /// by an older engine) gets a free slot: dispatch it and run its executor. There
    /// is no separate enqueue: the dispatch is the task's one durable step out of the queue.
    Dispatch(TaskId),
    /// A task was in flight with no live worker (the process that ran it died):
    /// `inspect` the target; on the task's digest it proceeds to verification,
    /// otherwise the attempt is failed as retryable.
    Reconcile(TaskId),
    /// A retryable failure whose backoff elapsed: apply `TaskEvent::Retry`.
    Retry(TaskId),
    /// The job is failing or failed: this task will not run again (`TaskEvent::Cancel`).
    CancelTask(TaskId),
    /// Every task of every wave succeeded: apply `WavesSucceeded`.
    CompleteWaves,
    /// completing job: verify every target's health, then `VerificationPassed` or `Fail`.
    VerifyTargets,
    /// The failure policy is exceeded and nothing is in flight, or every wave settled
    /// with failed targets the policy tolerated: apply `Fail` with this reason.
    FailJob(String),
    /// A failed job wound down with `auto_rollback`: plan the rollback job, then create
    /// it and apply `RollbackStarted` in one transaction. The claim loop runs the
    /// rollback job like any other; this job's runner is done.
    StartRollback,
    /// A failed job wound down with no automatic rollback to start: apply `WoundDown`.
    EndWindDown,
    /// Nothing to do before this instant (a retry backoff), unless a live task reports first.
    WakeAt(Timestamp),
}

/// Failed targets and the total, as the failure policy counts them (targets, not tasks:
/// three failed components on one host are one failed host).
pub fn failed_targets(job: &DeploymentJob) -> (usize, usize) {
    let mut by_target: BTreeMap<TargetId, bool> = BTreeMap::new();
    for t in &job.tasks {
        let failed = t.status == TaskStatus::Failed && !t.can_retry();
        *by_target.entry(t.target_id).or_default() |= failed;
    }
    (by_target.values().filter(|f| **f).count(), by_target.len())
}

/// The next actions for `input.job`, in the order they should be performed.
/// An empty list means: wait for a live task to report.
pub fn decide(input: &DecideInput<'_>) -> Vec<Action> {
    let job = input.job;
    match job.status {
        JobStatus::Pending => vec![Action::StartJob],
        JobStatus::Preparing => vec![Action::PrepareArtifacts],
        JobStatus::Running => decide_running(input),
        JobStatus::Completing => vec![Action::VerifyTargets],
        // Settled: only an operator's rollback moves it on.
        JobStatus::Failed if !job.winding_down => Vec::new(),
        JobStatus::Failed => {
            let actions = wind_down(input);
            if !actions.is_empty() || any_in_flight(input) {
                return actions;
            }
            let rolls_back = job.failure_policy.auto_rollback
                && !job.is_rollback()
                && input.rollback_attempts == 0
                && !failed_within_policy(job);
            vec![if rolls_back {
                Action::StartRollback
            } else {
                Action::EndWindDown
            }]
        }
        // Waits for its rollback job, which the claim loop runs; its end settles this job.
        JobStatus::RollingBack | JobStatus::Completed | JobStatus::RolledBack => Vec::new(),
    }
}

fn decide_running(input: &DecideInput<'_>) -> Vec<Action> {
    let job = input.job;
    // One pass: the current wave (the lowest one with an unsettled task; later waves
    // wait) and whether any task failed for good. This runs on every turn of the
    // engine's loop, so it avoids the per-target map unless a task has failed.
    let mut wave: Option<u32> = None;
    let mut any_failed = false;
    for t in &job.tasks {
        if t.is_settled() {
            any_failed |= t.status == TaskStatus::Failed;
        } else {
            wave = Some(wave.map_or(t.wave, |w| w.min(t.wave)));
        }
    }
    if any_failed {
        let (failed, total) = failed_targets(job);
        if job.failure_policy.exceeded(failed, total) {
            let mut actions = wind_down(input);
            let in_flight = any_in_flight(input);
            if actions.is_empty() && !in_flight {
                actions.push(Action::FailJob(format!(
                    "{failed} of {total} targets failed, exceeding the failure policy"
                )));
            }
            return actions;
        }
    }
    let Some(wave) = wave else {
        if any_failed {
            // The policy let the rollout go on past these failures, but a job completes
            // only when every target runs its release.
            let (failed, total) = failed_targets(job);
            return vec![Action::FailJob(format!(
                "{failed} of {total} targets failed (within the failure policy, which let the rollout go on); a job completes only when every target runs its release"
            ))];
        }
        return vec![Action::CompleteWaves];
    };
    // One pass over the current wave. Live tasks are looked up only among tasks
    // that are in flight or await dispatch, and only until every live task has been
    // seen; dispatch candidates are kept only up to the parallelism. This runs on
    // every turn of the engine's loop, over jobs of tens of thousands of tasks.
    let parallelism = job.parallelism.get() as usize;
    let mut live_left = input.live.len();
    let is_live = |id: &TaskId, live_left: &mut usize| {
        let live = *live_left > 0 && input.live.contains(id);
        *live_left -= usize::from(live);
        live
    };
    let mut wave_size = 0;
    let mut actions = Vec::new();
    let mut candidates = Vec::new();
    let mut occupied = 0;
    let mut wake: Option<Timestamp> = None;
    for t in job.tasks.iter().filter(|t| t.wave == wave) {
        wave_size += 1;
        match t.status {
            TaskStatus::Succeeded => {}
            s if s.is_in_flight() => {
                occupied += 1;
                if !is_live(&t.id, &mut live_left) {
                    actions.push(Action::Reconcile(t.id));
                }
            }
            s if s.awaits_dispatch() => {
                if is_live(&t.id, &mut live_left) {
                    occupied += 1;
                } else if candidates.len() < parallelism {
                    candidates.push(t.id);
                }
            }
            TaskStatus::Failed if t.can_retry() => {
                if is_live(&t.id, &mut live_left) {
                    occupied += 1;
                    continue;
                }
                let due = t
                    .updated_at
                    .saturating_add(input.backoff.delay(t.attempt_number));
                if input.now >= due {
                    actions.push(Action::Retry(t.id));
                } else {
                    wake = Some(wake.map_or(due, |w| w.min(due)));
                }
            }
            _ => {}
        }
    }
    let free = parallelism.min(wave_size).saturating_sub(occupied);
    actions.extend(candidates.into_iter().take(free).map(Action::Dispatch));
    if actions.is_empty()
        && let Some(at) = wake
    {
        actions.push(Action::WakeAt(at));
    }
    actions
}

/// Every task settled and some targets failed, within what the failure policy
/// tolerates: the job failed (not every target runs its release), but the policy
/// accepted those failures, so it is not rolled back automatically.
fn failed_within_policy(job: &DeploymentJob) -> bool {
    let (failed, total) = failed_targets(job);
    failed > 0
        && !job.failure_policy.exceeded(failed, total)
        && job.tasks.iter().all(DeploymentTask::is_settled)
}

/// A task is in flight (by its status) or has a live worker.
fn any_in_flight(input: &DecideInput<'_>) -> bool {
    !input.live.is_empty() || input.job.tasks.iter().any(|t| t.status.is_in_flight())
}

/// For a job that is giving up: reconcile orphaned in-flight tasks (their outcome
/// decides what a rollback must restore) and cancel everything that could still start.
/// Pending tasks stay pending: they were never attempted. Live tasks are left to
/// their workers.
fn wind_down(input: &DecideInput<'_>) -> Vec<Action> {
    input
        .job
        .tasks
        .iter()
        .filter(|t| !input.live.contains(&t.id))
        .filter_map(|t| match t.status {
            s if s.is_in_flight() => Some(Action::Reconcile(t.id)),
            TaskStatus::Queued | TaskStatus::Retrying => Some(Action::CancelTask(t.id)),
            TaskStatus::Failed if t.can_retry() => Some(Action::CancelTask(t.id)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests;
