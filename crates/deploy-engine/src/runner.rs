//! The job loop: reload the job, ask `decide` what is left, perform it (persisting first), wait for workers; until the job settles.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use deploy_core::{
    Action, DecideInput, DeploymentJob, JobEvent, JobId, JobStatus, Strategy, TaskEvent, TaskId,
    TaskStatus, decide,
};
use deploy_exec::ExecContext;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::attempt::{Phase, run_attempt};
use crate::context::JobContext;
use crate::engine::{Engine, Inner, RunHandle};
use crate::errors::EngineError;
use crate::{rollback, verify};

impl Engine {
    /// Runs job `id` in this task until it settles (completed, failed, rolled back)
    /// or the engine stops running it. Safe to call after a crash: it resumes.
    pub async fn run_job(&self, id: JobId) -> Result<DeploymentJob, EngineError> {
        let (cancel, stop) = (CancellationToken::new(), CancellationToken::new());
        if let Ok(mut running) = self.inner.running.lock() {
            running.insert(
                id,
                RunHandle {
                    cancel: cancel.clone(),
                    stop: stop.clone(),
                },
            );
        }
        let result = run(self.inner.clone(), id, cancel, stop).await;
        if let Ok(mut running) = self.inner.running.lock() {
            running.remove(&id);
        }
        result
    }

    /// Stops running job `id` here without changing it (another engine, or this
    /// one after a restart, resumes it). In-flight tasks get the shutdown grace.
    pub fn stop_job(&self, id: JobId) {
        if let Ok(running) = self.inner.running.lock()
            && let Some(h) = running.get(&id)
        {
            h.stop.cancel();
        }
    }
}

/// How many rollbacks of `job` have started (from its persisted events).
pub(crate) async fn rollback_attempts(inner: &Inner, job: JobId) -> Result<u32, EngineError> {
    let events = inner.store.job_events(job, 0, u32::MAX).await?;
    let started = events
        .iter()
        .filter(|e| e.task_id.is_none() && e.event == JobEvent::RollbackStarted.as_str())
        .count();
    Ok(u32::try_from(started).unwrap_or(u32::MAX))
}

/// The soak of the canary wave, if the strategy has one.
fn soak_of(job: &DeploymentJob, wave: u32) -> Option<Duration> {
    match job.strategy {
        Strategy::Canary {
            min_healthy_time_ms,
            ..
        } if wave == 0 && min_healthy_time_ms > 0 => {
            Some(Duration::from_millis(min_healthy_time_ms))
        }
        _ => None,
    }
}

pub(crate) async fn run(
    inner: Arc<Inner>,
    id: JobId,
    cancel: CancellationToken,
    stop: CancellationToken,
) -> Result<DeploymentJob, EngineError> {
    let mut job = inner.store.get_job(id).await?;
    let ctx = Arc::new(JobContext::load(inner.store.as_ref(), &job).await?);
    let mut rollbacks = rollback_attempts(&inner, id).await?;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<TaskId>();
    let mut live: BTreeMap<TaskId, CancellationToken> = BTreeMap::new();
    loop {
        while let Ok(t) = done_rx.try_recv() {
            live.remove(&t);
        }
        job = inner.store.get_job(id).await?;
        if stop.is_cancelled() {
            drain(&inner, &mut live, &mut done_rx).await;
            return Ok(inner.store.get_job(id).await?);
        }
        if job.status == JobStatus::Failed || cancel.is_cancelled() {
            // The job gave up or was cancelled: stop what is in flight.
            live.values().for_each(CancellationToken::cancel);
        }
        let live_ids: BTreeSet<TaskId> = live.keys().copied().collect();
        let actions = decide(&DecideInput {
            job: &job,
            live: &live_ids,
            rollback_attempts: rollbacks,
            now: inner.clock.now(),
            backoff: inner.config.backoff,
        });
        if actions.is_empty() {
            if live.is_empty() {
                if job.status.is_active() {
                    return Err(EngineError::Stalled {
                        job: id,
                        status: job.status.as_str(),
                    });
                }
                return Ok(job);
            }
            tokio::select! {
                Some(t) = done_rx.recv() => { live.remove(&t); }
                () = stop.cancelled() => {}
                () = cancel.cancelled() => {}
            }
            continue;
        }
        let mut wake_at = None;
        let mut acted = false;
        for action in actions {
            if let Action::WakeAt(at) = action {
                wake_at = Some(at);
                continue;
            }
            acted = true;
            match action {
                Action::StartJob => {
                    job = inner
                        .job_event(&job, JobEvent::Start, "engine picked the job up")
                        .await?
                }
                Action::PrepareArtifacts => {
                    job = match prepare(&inner, &ctx, &job) {
                        Ok(()) => {
                            inner
                                .job_event(&job, JobEvent::ArtifactsReady, "artifacts verified")
                                .await?
                        }
                        Err(why) => inner.job_event(&job, JobEvent::Fail, &why).await?,
                    };
                }
                Action::Enqueue(t) => {
                    let task = Inner::task_of(&job, t)?;
                    let cause = if task.status == TaskStatus::Retrying {
                        "retry due"
                    } else {
                        "wave started"
                    };
                    inner
                        .task_event(
                            task,
                            TaskEvent::Enqueue,
                            &format!("{cause} (wave {})", task.wave),
                        )
                        .await?;
                }
                Action::Dispatch(t) => {
                    let task = Inner::task_of(&job, t)?;
                    let attempt = task.attempt_number + 1;
                    let task = inner
                        .task_event(
                            task,
                            TaskEvent::Dispatch,
                            &format!("attempt {attempt} of {}", task.max_attempts),
                        )
                        .await?;
                    spawn(&inner, &ctx, &job, task, Phase::Deploy, &mut live, &done_tx);
                }
                Action::Reconcile(t) => {
                    let task = Inner::task_of(&job, t)?.clone();
                    if let Some(task) = reconcile(&inner, &ctx, task).await? {
                        spawn(&inner, &ctx, &job, task, Phase::Verify, &mut live, &done_tx);
                    }
                }
                Action::Retry(t) => {
                    let task = Inner::task_of(&job, t)?;
                    inner
                        .task_event(task, TaskEvent::Retry, "backoff elapsed")
                        .await?;
                }
                Action::CancelTask(t) => {
                    let task = Inner::task_of(&job, t)?;
                    inner
                        .task_event(task, TaskEvent::Cancel, "the job is failing")
                        .await?;
                }
                Action::CompleteWaves => {
                    job = inner
                        .job_event(
                            &job,
                            JobEvent::WavesSucceeded,
                            "every wave settled within the policy",
                        )
                        .await?;
                }
                Action::VerifyTargets => {
                    job = match verify::verify_targets(&inner, &ctx, &job, &cancel).await {
                        Ok(()) => {
                            inner
                                .job_event(
                                    &job,
                                    JobEvent::VerificationPassed,
                                    "every target healthy",
                                )
                                .await?
                        }
                        Err(why) => inner.job_event(&job, JobEvent::Fail, &why).await?,
                    };
                }
                Action::FailJob(reason) => {
                    job = inner.job_event(&job, JobEvent::Fail, &reason).await?
                }
                Action::StartRollback => {
                    if rollback::start(&inner, &job, rollbacks + 1).await? {
                        rollbacks += 1;
                    } else {
                        return Ok(inner.store.get_job(id).await?);
                    }
                }
                Action::AwaitRollback => {
                    job = rollback::follow(
                        inner.clone(),
                        &job,
                        rollbacks,
                        cancel.clone(),
                        stop.clone(),
                    )
                    .await?;
                    if stop.is_cancelled() {
                        return Ok(job);
                    }
                }
                Action::WakeAt(_) => {}
            }
        }
        if !acted && let Some(at) = wake_at {
            let pause = at.duration_since(inner.clock.now());
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                Some(t) = done_rx.recv() => { live.remove(&t); }
                () = stop.cancelled() => {}
                () = cancel.cancelled() => {}
            }
        }
    }
}

/// Starts a worker for `task`.
fn spawn(
    inner: &Arc<Inner>,
    ctx: &Arc<JobContext>,
    job: &DeploymentJob,
    task: deploy_core::DeploymentTask,
    phase: Phase,
    live: &mut BTreeMap<TaskId, CancellationToken>,
    done: &mpsc::UnboundedSender<TaskId>,
) {
    let token = CancellationToken::new();
    live.insert(task.id, token.clone());
    let soak = soak_of(job, task.wave);
    let (inner, ctx, done) = (inner.clone(), ctx.clone(), done.clone());
    tokio::spawn(async move {
        let id = task.id;
        run_attempt(inner, ctx, task, phase, soak, token).await;
        let _ = done.send(id);
    });
}

/// Checks that the job can run: artifacts still match their digests, and every target has an executor.
fn prepare(inner: &Inner, ctx: &JobContext, job: &DeploymentJob) -> Result<(), String> {
    for artifact in &job.artifacts {
        artifact
            .verify()
            .map_err(|e| format!("artifact check failed: {e}"))?;
    }
    for target_id in job.target_ids() {
        let target = ctx.target(target_id).map_err(|e| e.to_string())?;
        inner
            .executors
            .for_target(target)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A task was in flight when its worker died: ask the target what runs.
/// `Some(task)` when it is on the task's digest (verify it); otherwise the attempt fails.
async fn reconcile(
    inner: &Inner,
    ctx: &JobContext,
    task: deploy_core::DeploymentTask,
) -> Result<Option<deploy_core::DeploymentTask>, EngineError> {
    let target = ctx.target(task.target_id)?;
    let found = match inner.executors.for_target(target) {
        Ok(executor) => {
            let name = ctx.slot_name(task.component_id)?;
            let exec_ctx = ExecContext::quiet(inner.config.task_timeout);
            executor.inspect(target, &name, &exec_ctx).await
        }
        Err(e) => Err(e),
    };
    match found {
        Ok(Some(digest)) if digest == task.digest => Ok(Some(task)),
        Ok(other) => {
            let running = other.map_or_else(|| "nothing".to_owned(), |d| d.to_string());
            let cause =
                format!("interrupted before the deploy finished; the target runs {running}");
            inner
                .task_event(&task, TaskEvent::Fail { retryable: true }, &cause)
                .await?;
            Ok(None)
        }
        Err(e) => {
            let cause = format!("interrupted, and the target cannot be inspected: {e}");
            inner
                .task_event(
                    &task,
                    TaskEvent::Fail {
                        retryable: e.is_retryable(),
                    },
                    &cause,
                )
                .await?;
            Ok(None)
        }
    }
}

/// Lets live workers finish within the shutdown grace, then cancels the rest and waits briefly for them.
async fn drain(
    inner: &Inner,
    live: &mut BTreeMap<TaskId, CancellationToken>,
    done: &mut mpsc::UnboundedReceiver<TaskId>,
) {
    let deadline = tokio::time::Instant::now() + inner.config.shutdown_grace;
    while !live.is_empty() {
        match tokio::time::timeout_at(deadline, done.recv()).await {
            Ok(Some(t)) => {
                live.remove(&t);
            }
            Ok(None) | Err(_) => break,
        }
    }
    live.values().for_each(CancellationToken::cancel);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while !live.is_empty() {
            match done.recv().await {
                Some(t) => {
                    live.remove(&t);
                }
                None => break,
            }
        }
    })
    .await;
}
