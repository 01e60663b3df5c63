//! The job loop: ask `decide` what is left, perform it (persisting first), wait for workers; until the job settles.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use deploy_core::{
    Action, DecideInput, DeploymentJob, DeploymentTask, JobEvent, JobId, JobStatus, Strategy,
    TaskEvent, TaskId, TaskStatus, decide,
};
use deploy_store::StoreError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::attempt::{Phase, run_attempt};
use crate::context::JobContext;
use crate::engine::{Engine, Inner, RunHandle};
use crate::errors::EngineError;
use crate::trace;
use crate::{bluegreen, rollback, verify};
use tracing::Instrument;

/// The longest a run waits for its job's trace context before running untraced.
const TRACE_CONTEXT_READ: Duration = Duration::from_secs(5);

/// Reload the whole job at least this often, to see writes of other replicas (a cancel).
const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// How long the loop waits before reloading again while the database is unavailable.
const RETRY_UNAVAILABLE: Duration = Duration::from_millis(500);

impl Engine {
    /// Runs job `id` in this task until it needs no runner any more (completed, failed
    /// and wound down, rolling back, rolled back) or the engine stops running it. Safe
    /// to call after a crash: it resumes. A job that starts its automatic rollback
    /// ends here `rolling_back`: its rollback job is a job of its own, run like any
    /// other (by [`Engine::serve`], or by calling this with its id).
    pub async fn run_job(&self, id: JobId) -> Result<DeploymentJob, EngineError> {
        let (cancel, stop, abandon) = (
            CancellationToken::new(),
            CancellationToken::new(),
            CancellationToken::new(),
        );
        if let Ok(mut running) = self.inner.running.lock() {
            running.insert(
                id,
                RunHandle {
                    cancel: cancel.clone(),
                    stop: stop.clone(),
                    abandon: abandon.clone(),
                },
            );
        }
        let span = self.job_span(id).await;
        let result = run(self.inner.clone(), id, cancel, stop, abandon)
            .instrument(span.clone())
            .await;
        match &result {
            Ok(job) => span.record("job.status", job.status.as_str()),
            Err(_) => span
                .record("job.status", "runner_error")
                .record("otel.status_code", "error"),
        };
        if let Ok(mut running) = self.inner.running.lock() {
            running.remove(&id);
        }
        result
    }

    /// The span of one run of job `id`: a root here, whose parent is the trace context
    /// stored with the job (the request that created it), adopted through the trace
    /// link, so a job resumed by another replica or after a restart stays in its trace.
    async fn job_span(&self, id: JobId) -> tracing::Span {
        let span = trace::job_span(id);
        if let Some(link) = self.inner.trace.get() {
            // Bounded: a trace is not worth stalling the job on a slow database.
            let read =
                tokio::time::timeout(TRACE_CONTEXT_READ, self.inner.store.job_trace_context(id))
                    .await;
            match read {
                Ok(Ok(Some(parent))) => link.adopt(&span, &parent),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(job = %id, error = %e, "cannot read the job's trace context")
                }
                Err(_) => {
                    tracing::debug!(job = %id, "the job's trace context was not read in time")
                }
            }
        }
        span
    }

    /// Runs job `id` with [`Engine::run_job`] and, while it is rolling back, its
    /// rollback job the same way; returns job `id` as it ends. For an embedder (or a
    /// test) that runs jobs itself instead of [`Engine::serve`]: each job still runs
    /// through the one runner, one after the other.
    pub async fn run_to_settled(&self, id: JobId) -> Result<DeploymentJob, EngineError> {
        let mut job = self.run_job(id).await?;
        while let Some(rollback) = self.rollback_job_of(&job).await? {
            let ended = self.run_job(rollback.id).await?;
            if ended.needs_runner() {
                // Stopped before its end (shutdown): it resumes later, and so does this.
                return Ok(self.inner.store.get_job(id).await?);
            }
            job = self.inner.store.get_job(id).await?;
        }
        Ok(job)
    }

    /// Stops running job `id` here at once because its lease is lost: another
    /// replica may already run it, so in-flight tasks get no grace (their attempts
    /// are left in flight, unwritten, for the new holder to reconcile).
    pub(crate) fn abandon_job(&self, id: JobId) {
        if let Ok(running) = self.inner.running.lock()
            && let Some(h) = running.get(&id)
        {
            h.abandon.cancel();
            h.stop.cancel();
        }
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

/// A worker's end: its task as last written, or `None` when its last write failed;
/// `Err` when it could not write its dispatch.
type Done = (TaskId, Result<Option<DeploymentTask>, StoreError>);

/// The state of one running job in this engine.
struct Run {
    inner: Arc<Inner>,
    ctx: Arc<JobContext>,
    /// The job as last written by us (or reloaded).
    job: DeploymentJob,
    /// Position of each task in `job.tasks`, to replace it after a write.
    index: HashMap<TaskId, usize>,
    live: BTreeMap<TaskId, CancellationToken>,
    done_tx: mpsc::UnboundedSender<Done>,
    rollbacks: u32,
    cancel: CancellationToken,
    stop: CancellationToken,
    /// Set with `stop` when the lease is lost: [`Run::drain`] gives no grace.
    abandon: CancellationToken,
    /// The workers' stop: a child of `stop`, also cancelled when this run ends
    /// early (an error) with workers still live, so none outlives its runner.
    workers_stop: CancellationToken,
    /// A worker's dispatch write failed other than by a conflict: the run stops with
    /// it, as it does when a write of the loop's own fails.
    failed: Option<StoreError>,
    /// The job's span (the run's), parent of the wave spans.
    span: tracing::Span,
    /// The span of the wave this run dispatches to now; it is dropped when another
    /// wave starts and ends once its last task's span has ended.
    wave: Option<(u32, tracing::Span)>,
}

/// What the loop does after an action.
enum Flow {
    Continue,
    /// The job is as settled as this engine can take it.
    Return,
}

async fn run(
    inner: Arc<Inner>,
    id: JobId,
    cancel: CancellationToken,
    stop: CancellationToken,
    abandon: CancellationToken,
) -> Result<DeploymentJob, EngineError> {
    let job = inner.store.get_job(id).await?;
    let ctx = Arc::new(JobContext::load(inner.store.as_ref(), &job).await?);
    let rollbacks = rollback_attempts(&inner, id).await?;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut run = Run {
        inner,
        ctx,
        index: index_of(&job),
        job,
        live: BTreeMap::new(),
        done_tx,
        rollbacks,
        workers_stop: stop.child_token(),
        cancel,
        stop,
        abandon,
        failed: None,
        span: tracing::Span::current(),
        wave: None,
    };
    let mut reloaded = tokio::time::Instant::now();
    let mut stale = false;
    loop {
        while let Ok(done) = done_rx.try_recv() {
            stale |= run.finish(done);
        }
        if let Some(e) = run.failed.take() {
            return Err(e.into());
        }
        // The job is kept in memory and updated from every write's result. It is
        // reloaded when a write was refused or a worker lost its write, and every
        // few seconds, so that a cancel written by another replica is seen.
        if stale || reloaded.elapsed() >= RELOAD_EVERY {
            match run.reload().await {
                Ok(()) => stale = false,
                // The database is restarting or unreachable: keep the job (the lease
                // keeper decides when it is lost) and let live workers go on; try again
                // shortly. Writes still fail, and end the run, until it is back.
                Err(EngineError::Store(e)) if e.is_unavailable() && !run.stop.is_cancelled() => {
                    tracing::warn!(job = %id, error = %e, "cannot reload the job; the database is unavailable");
                    tokio::select! {
                        () = tokio::time::sleep(RETRY_UNAVAILABLE) => {}
                        () = run.stop.cancelled() => {}
                    }
                }
                Err(e) => return Err(e),
            }
            reloaded = tokio::time::Instant::now();
        }
        if run.stop.is_cancelled() {
            run.drain(&mut done_rx).await;
            return Ok(run.inner.store.get_job(id).await?);
        }
        if run.job.status == JobStatus::Failed || run.cancel.is_cancelled() {
            // The job gave up or was cancelled: stop what is in flight.
            run.live.values().for_each(CancellationToken::cancel);
        }
        let live_ids: BTreeSet<TaskId> = run.live.keys().copied().collect();
        let actions = decide(&DecideInput {
            job: &run.job,
            live: &live_ids,
            rollback_attempts: run.rollbacks,
            now: run.inner.clock.now(),
            backoff: run.inner.config.backoff,
        });
        if actions.is_empty() {
            if run.live.is_empty() {
                if run.job.needs_runner() {
                    return Err(EngineError::Stalled {
                        job: id,
                        status: run.job.status.as_str(),
                    });
                }
                return Ok(run.job.clone());
            }
            tokio::select! {
                Some(done) = done_rx.recv() => stale |= run.finish(done),
                () = run.stop.cancelled() => {}
                () = run.cancel.cancelled() => stale = true,
            }
            continue;
        }
        let mut wake_at = None;
        let mut acted = false;
        for action in actions {
            let result = match action {
                Action::WakeAt(at) => {
                    wake_at = Some(at);
                    continue;
                }
                action => {
                    acted = true;
                    run.perform(action).await
                }
            };
            match result {
                Ok(Flow::Continue) => {}
                Ok(Flow::Return) => return Ok(run.inner.store.get_job(id).await?),
                Err(EngineError::Store(StoreError::Conflict { .. })) => {
                    // Someone else wrote first (a cancel, another replica): reload and decide again.
                    stale = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if !acted && let Some(at) = wake_at {
            let pause = at.duration_since(run.inner.clock.now());
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                Some(done) = done_rx.recv() => stale |= run.finish(done),
                () = run.stop.cancelled() => {}
                () = run.cancel.cancelled() => stale = true,
            }
        }
    }
}

fn index_of(job: &DeploymentJob) -> HashMap<TaskId, usize> {
    job.tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id, i))
        .collect()
}

impl Run {
    async fn reload(&mut self) -> Result<(), EngineError> {
        self.job = self.inner.store.get_job(self.job.id).await?;
        self.index = index_of(&self.job);
        Ok(())
    }

    fn task(&self, id: TaskId) -> Result<&DeploymentTask, StoreError> {
        self.index
            .get(&id)
            .and_then(|i| self.job.tasks.get(*i))
            .ok_or_else(|| StoreError::NotFound {
                entity: "task",
                id: id.to_string(),
            })
    }

    fn put(&mut self, task: DeploymentTask) {
        if let Some(slot) = self
            .index
            .get(&task.id)
            .and_then(|i| self.job.tasks.get_mut(*i))
        {
            *slot = task;
        }
    }

    fn set_job(&mut self, job: DeploymentJob) {
        self.index = index_of(&job);
        self.job = job;
    }

    /// Records a worker's end; true when the job must be reloaded.
    fn finish(&mut self, (id, last): Done) -> bool {
        self.live.remove(&id);
        match last {
            Ok(Some(task)) => {
                self.put(task);
                false
            }
            Ok(None) | Err(StoreError::Conflict { .. }) => true,
            Err(e) => {
                self.failed.get_or_insert(e);
                true
            }
        }
    }

    async fn task_event(
        &mut self,
        id: TaskId,
        event: TaskEvent,
        cause: &str,
    ) -> Result<DeploymentTask, EngineError> {
        let task = self.task(id)?;
        let updated = self.inner.task_event(task, event, cause).await?;
        self.put(updated.clone());
        Ok(updated)
    }

    async fn job_event(&mut self, event: JobEvent, cause: &str) -> Result<(), EngineError> {
        let updated = self.inner.job_event(&self.job, event, cause).await?;
        self.set_job(updated);
        Ok(())
    }

    /// Writes `event`, which settles the job: for a rollback job, through
    /// [`rollback::settle`], which settles the job it rolls back in the same write.
    async fn settle(&mut self, event: JobEvent, cause: &str) -> Result<(), EngineError> {
        if self.job.is_rollback() {
            let updated = rollback::settle(&self.inner, &self.job, event, cause).await?;
            self.set_job(updated);
            Ok(())
        } else {
            self.job_event(event, cause).await
        }
    }

    /// Performs one action, persisting first.
    async fn perform(&mut self, action: Action) -> Result<Flow, EngineError> {
        match action {
            Action::StartJob => {
                self.job_event(JobEvent::Start, "engine picked the job up")
                    .await?
            }
            Action::PrepareArtifacts => match prepare(&self.inner, &self.ctx, &self.job) {
                Ok(()) => {
                    self.job_event(JobEvent::ArtifactsReady, "artifacts verified")
                        .await?
                }
                Err(why) => self.job_event(JobEvent::Fail, &why).await?,
            },
            Action::Dispatch(t) => {
                let task = self.task(t)?.clone();
                self.start_worker(task, Phase::Deploy, true);
            }
            Action::Reconcile(t) => {
                // In a worker: finding the attempt's outcome may wait for an agent
                // still running it, and must not hold the other tasks up.
                let task = self.task(t)?.clone();
                self.spawn(task, Phase::Reconcile);
            }
            Action::Retry(t) => {
                self.task_event(t, TaskEvent::Retry, "backoff elapsed")
                    .await?;
            }
            Action::CancelTask(t) => {
                self.task_event(t, TaskEvent::Cancel, "the job is failing")
                    .await?;
            }
            Action::CompleteWaves => {
                self.job_event(
                    JobEvent::WavesSucceeded,
                    "every wave settled within the policy",
                )
                .await?;
            }
            Action::VerifyTargets => {
                let blue_green = self.ctx.blue_green;
                let verified = if blue_green {
                    // Cut-over, post-deploy hooks, final verification; cut back on failure.
                    bluegreen::cut_over(&self.inner, &self.ctx, &self.job, &self.cancel).await
                } else {
                    verify::verify_targets(&self.inner, &self.ctx, &self.job, &self.cancel).await
                };
                match verified {
                    Ok(()) if blue_green => {
                        self.settle(
                            JobEvent::VerificationPassed,
                            "traffic cut over to green; every target healthy",
                        )
                        .await?;
                        bluegreen::retire_blue(&self.inner, &self.ctx, &self.job).await;
                    }
                    Ok(()) => {
                        self.settle(JobEvent::VerificationPassed, "every target healthy")
                            .await?
                    }
                    Err(why) => self.job_event(JobEvent::Fail, &why).await?,
                }
            }
            Action::FailJob(reason) => self.job_event(JobEvent::Fail, &reason).await?,
            Action::StartRollback => {
                // Rolling back (its rollback job created in the same write), or, when
                // nothing can be restored, wound down saying why: done either way.
                let updated = rollback::start(&self.inner, &self.job, self.rollbacks + 1).await?;
                self.set_job(updated);
                return Ok(Flow::Return);
            }
            Action::EndWindDown => {
                self.settle(
                    JobEvent::WoundDown,
                    "every attempt settled; no automatic rollback",
                )
                .await?
            }
            Action::WakeAt(_) => {}
        }
        Ok(Flow::Continue)
    }

    /// Starts a worker for an in-flight `task` (after a reconcile).
    fn spawn(&mut self, task: DeploymentTask, phase: Phase) {
        self.start_worker(task, phase, false);
    }

    /// Starts a worker for `task`; with `dispatch`, the worker first writes the
    /// task's `Dispatch` and runs the attempt only once that is durable.
    ///
    /// The task is live from now on, so `decide` counts it in its wave's slots and
    /// gives no other action for it until the worker reports. The loop does not wait
    /// for the dispatch write: the dispatches of a turn, and the other workers'
    /// transitions, are written concurrently and group-commit in the store. A worker
    /// whose dispatch is refused (a conflict: a cancel, another replica) makes the
    /// loop reload the job; any other failed dispatch write ends the run with that
    /// error (as a failed write of the loop's own does); one that finds the job
    /// cancelled or the engine stopping before writing reports the task unchanged.
    fn start_worker(&mut self, task: DeploymentTask, phase: Phase, dispatch: bool) {
        let span = self.task_span(&task);
        let token = CancellationToken::new();
        self.live.insert(task.id, token.clone());
        let soak = soak_of(&self.job, task.wave);
        let (inner, ctx, done) = (self.inner.clone(), self.ctx.clone(), self.done_tx.clone());
        let stopping = self.workers_stop.clone();
        tokio::spawn(
            async move {
                let id = task.id;
                let task = if !dispatch {
                    task
                } else if token.is_cancelled() || stopping.is_cancelled() {
                    tracing::Span::current().record("task.status", "not_started");
                    let _ = done.send((id, Ok(Some(task))));
                    return;
                } else {
                    let cause = dispatch_cause(&task);
                    match inner.task_event(&task, TaskEvent::Dispatch, &cause).await {
                        Ok(task) => task,
                        Err(e) => {
                            tracing::Span::current()
                                .record("task.status", "not_started")
                                .record("otel.status_code", "error");
                            tracing::warn!(task = %id, error = %e, "dispatch not written");
                            let _ = done.send((id, Err(e)));
                            return;
                        }
                    }
                };
                let span = tracing::Span::current();
                span.record("task.attempt", task.attempt_number);
                let last = run_attempt(inner, ctx, task, phase, soak, token, stopping).await;
                match &last {
                    Some(task) => span.record("task.status", task.status.as_str()),
                    None => span.record("task.status", "unwritten"),
                };
                if last
                    .as_ref()
                    .is_some_and(|t| matches!(t.status, TaskStatus::Failed | TaskStatus::Retrying))
                {
                    span.record("otel.status_code", "error");
                }
                let _ = done.send((id, Ok(last)));
            }
            .instrument(span),
        );
    }

    /// The span of one attempt of `task` ([`trace::task_span`]), under its wave's.
    fn task_span(&mut self, task: &DeploymentTask) -> tracing::Span {
        let wave = self.wave_span(task.wave);
        let target = self
            .ctx
            .target(task.target_id)
            .map(|t| t.name.as_str())
            .unwrap_or_default();
        trace::task_span(&wave, task, target)
    }

    /// The span of wave `wave` of this run, made when the wave's first task starts; the
    /// spans of earlier waves are let go (each ends with its last task's span).
    fn wave_span(&mut self, wave: u32) -> tracing::Span {
        match &self.wave {
            Some((current, span)) if *current == wave => span.clone(),
            // Whatever order the waves go in (a rollback's may go backwards), the span
            // of the one before is let go; it ends once its tasks' spans have.
            _ => {
                let span = trace::wave_span(&self.span, self.job.id, wave);
                self.wave = Some((wave, span.clone()));
                span
            }
        }
    }

    /// Lets live workers finish within the shutdown grace (none when the lease is
    /// lost), then cancels the rest and waits briefly for them.
    async fn drain(&mut self, done: &mut mpsc::UnboundedReceiver<Done>) {
        let grace = if self.abandon.is_cancelled() {
            Duration::ZERO
        } else {
            self.inner.config.shutdown_grace
        };
        let deadline = tokio::time::Instant::now() + grace;
        while !self.live.is_empty() {
            match tokio::time::timeout_at(deadline, done.recv()).await {
                Ok(Some(d)) => {
                    self.finish(d);
                }
                Ok(None) | Err(_) => break,
            }
        }
        self.live.values().for_each(CancellationToken::cancel);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !self.live.is_empty() {
            match tokio::time::timeout_at(deadline, done.recv()).await {
                Ok(Some(d)) => {
                    self.finish(d);
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
}

impl Drop for Run {
    /// A run that ends with workers still live (a store error ended it) stops them as
    /// an engine stop does: each attempt is left in flight, unwritten, and the next
    /// runner (here after a re-claim, or another replica's) reconciles it. Without
    /// this a worker would go on deploying or verifying beside that next runner.
    fn drop(&mut self) {
        if self.live.is_empty() {
            return;
        }
        tracing::warn!(job = %self.job.id, tasks = self.live.len(), "job runner ended with tasks in flight; stopping them for the next runner to reconcile");
        self.workers_stop.cancel();
        self.live.values().for_each(CancellationToken::cancel);
    }
}

/// The cause written with a dispatch: the attempt it starts, and for a task's first
/// attempt the wave it belongs to (there is no separate enqueue event any more).
fn dispatch_cause(task: &DeploymentTask) -> String {
    let attempt = task.attempt_number + 1;
    if attempt == 1 {
        format!("attempt 1 of {} (wave {})", task.max_attempts, task.wave)
    } else {
        format!("attempt {attempt} of {}", task.max_attempts)
    }
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

/// Checks that the job can run: artifacts still match their digests, and every target has an executor.
fn prepare(inner: &Inner, ctx: &JobContext, job: &DeploymentJob) -> Result<(), String> {
    for artifact in &job.artifacts {
        artifact
            .verify()
            .map_err(|e| format!("artifact check failed: {e}"))?;
        // A lock is the record of what runs: its own `x-generated` digest must hold too.
        if artifact.kind == deploy_core::ArtifactKind::ComposeLock {
            deploy_artifacts::verify_lock(artifact.content.as_bytes())
                .map_err(|e| format!("artifact check failed: `{}`: {e}", artifact.file_name))?;
        }
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
