//! `Engine`: the handle services embed; owns the store, the executors, the health verifier and the event channel.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use deploy_core::{
    DeploymentJob, DeploymentTask, JobEvent, JobId, JobStatus, TaskEvent, Timestamp,
};
use deploy_exec::ExecutorRegistry;
use deploy_health::HealthVerifier;
use deploy_store::{Store, StoreError};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::EngineConfig;
use crate::errors::EngineError;
use crate::events::EngineEvent;

/// Capacity of the event channel; a subscriber that lags further behind skips
/// events (and can catch up from the store's event log).
const EVENT_CAPACITY: usize = 4096;

/// The deployment job manager. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

/// Tokens of a job run by this engine.
pub(crate) struct RunHandle {
    /// The operator cancelled the job.
    pub cancel: CancellationToken,
    /// This engine stops running the job (shutdown, lease lost); the job itself goes on.
    pub stop: CancellationToken,
    /// The job's lease is lost (another replica may run it from now): stop with no
    /// grace for in-flight tasks. Cancelled together with `stop`.
    pub abandon: CancellationToken,
}

pub(crate) struct Inner {
    pub store: Arc<dyn Store>,
    pub executors: ExecutorRegistry,
    pub health: HealthVerifier,
    pub config: EngineConfig,
    pub clock: Arc<dyn Clock>,
    pub events: broadcast::Sender<EngineEvent>,
    pub running: Mutex<BTreeMap<JobId, RunHandle>>,
    /// Wakes this engine's claim loop when it creates a job (other replicas hear of it
    /// through the store: `Store::wait_for_new_jobs`).
    pub job_created: tokio::sync::Notify,
    /// Application secrets (`secret:NAME` env values), set once by the embedder; without
    /// them a job referencing a secret is refused.
    pub app_secrets: std::sync::OnceLock<Arc<dyn crate::app_secrets::AppSecrets>>,
    /// Joins the engine's spans to distributed traces, set once by the embedder; without
    /// it no trace context is stored or adopted.
    pub trace: std::sync::OnceLock<Arc<dyn crate::trace::TraceLink>>,
}

impl Engine {
    /// An engine over `store`, dispatching through `executors`.
    /// Health `command` checks run through the same executors.
    pub fn new(
        store: Arc<dyn Store>,
        executors: ExecutorRegistry,
        config: EngineConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, EngineError> {
        let runner = crate::verify::ExecCommandRunner {
            executors: executors.clone(),
        };
        let health = HealthVerifier::new()?
            .with_command_runner(Arc::new(runner.clone()))
            .with_instance_prober(Arc::new(runner));
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                executors,
                health,
                config,
                clock,
                events,
                running: Mutex::new(BTreeMap::new()),
                job_created: tokio::sync::Notify::new(),
                app_secrets: std::sync::OnceLock::new(),
                trace: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Where `secret:NAME` env values are read (once; a second call is ignored).
    pub fn set_app_secrets(&self, secrets: Arc<dyn crate::app_secrets::AppSecrets>) {
        if self.inner.app_secrets.set(secrets).is_err() {
            tracing::warn!("application secrets were already set; the second set is ignored");
        }
    }

    /// How the engine's spans join distributed traces (once; a second call is ignored).
    pub fn set_trace_link(&self, link: Arc<dyn crate::trace::TraceLink>) {
        if self.inner.trace.set(link).is_err() {
            tracing::warn!("the trace link was already set; the second is ignored");
        }
    }

    /// The trace link set by the embedder, if any.
    pub fn trace_link(&self) -> Option<&Arc<dyn crate::trace::TraceLink>> {
        self.inner.trace.get()
    }

    /// Every transition from now on, as it is persisted.
    pub fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.inner.events.subscribe()
    }

    /// The store the engine writes to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Cancels a job. When this engine runs it, in-flight tasks are cancelled
    /// through their tokens; otherwise the cancel is written to the store and the
    /// engine running it stops at its next step. A `rolling_back` job is cancelled
    /// through its rollback job, whose end (failed) settles it as `failed`; it is
    /// returned as it is now.
    pub async fn cancel_job(&self, job: JobId, by: &str) -> Result<DeploymentJob, EngineError> {
        let current = self.inner.store.get_job(job).await?;
        if let Some(rollback) = self.rollback_job_of(&current).await? {
            // Already failed and winding down (cancelled before, or failing): its end
            // settles the original; there is nothing more to cancel.
            if rollback.status.holds_environment() {
                self.cancel_one(rollback.id, by).await?;
            }
            return Ok(self.inner.store.get_job(job).await?);
        }
        self.cancel_one(job, by).await
    }

    /// The rollback job under way for `job` when it is `rolling_back`: the one that
    /// still needs a runner (its end settles `job`).
    pub(crate) async fn rollback_job_of(
        &self,
        job: &DeploymentJob,
    ) -> Result<Option<DeploymentJob>, EngineError> {
        if job.status != JobStatus::RollingBack {
            return Ok(None);
        }
        Ok(self.inner.store.rollback_job_of(job.id).await?)
    }

    async fn cancel_one(&self, job: JobId, by: &str) -> Result<DeploymentJob, EngineError> {
        let here = self
            .inner
            .running
            .lock()
            .ok()
            .and_then(|r| r.get(&job).map(|h| h.cancel.clone()));
        let current = self.inner.store.get_job(job).await?;
        let cancelled = self
            .inner
            .job_event(&current, JobEvent::Cancel, &format!("cancelled by {by}"))
            .await?;
        if let Some(token) = here {
            token.cancel();
        }
        Ok(cancelled)
    }
}

impl Inner {
    /// Applies and persists a job event, then publishes it.
    pub(crate) async fn job_event(
        &self,
        job: &DeploymentJob,
        event: JobEvent,
        cause: &str,
    ) -> Result<DeploymentJob, StoreError> {
        let now = self.clock.now();
        let updated = self
            .store
            .apply_job_event(job.id, job.version, event, now, cause)
            .await?;
        self.publish_job_event(&updated, event, cause, now);
        Ok(updated)
    }

    /// Logs and publishes a job transition that was just written.
    pub(crate) fn publish_job_event(
        &self,
        updated: &DeploymentJob,
        event: JobEvent,
        cause: &str,
        at: Timestamp,
    ) {
        tracing::info!(job = %updated.id, event = event.as_str(), status = updated.status.as_str(), cause, "job transition");
        let _ = self.events.send(EngineEvent {
            job_id: updated.id,
            task_id: None,
            event: event.as_str(),
            status: updated.status.as_str(),
            cause: cause.to_owned(),
            at,
        });
    }

    /// The executor of `target`, every call of it traced when trace spans are wanted
    /// ([`crate::trace::traced_executor`]).
    pub(crate) fn executor_for(
        &self,
        target: &deploy_core::Target,
    ) -> Result<Arc<dyn deploy_exec::Executor>, deploy_exec::ExecError> {
        self.executors
            .for_target(target)
            .map(crate::trace::traced_executor)
    }

    /// Starts a rollback of the failed `job` with `rollback`'s job, atomically
    /// ([`deploy_store::Store::start_rollback`]), then publishes the transition.
    pub(crate) async fn start_rollback(
        &self,
        job: &DeploymentJob,
        rollback: &DeploymentJob,
        cause: &str,
    ) -> Result<(DeploymentJob, DeploymentJob), StoreError> {
        let now = self.clock.now();
        // The rollback joins the trace it was started in: the failed job's run (an
        // automatic rollback) or the request asking for it (a manual one).
        let traceparent = crate::trace::current_traceparent(self);
        let (updated, created) = self
            .store
            .start_rollback_traced(job.id, job.version, rollback, now, cause, traceparent)
            .await?;
        // The rollback job is claimed and run like any new job: at once, here.
        self.job_created.notify_one();
        self.publish_job_event(&updated, JobEvent::RollbackStarted, cause, now);
        Ok((updated, created))
    }

    /// Applies and persists a task event, then publishes it.
    pub(crate) async fn task_event(
        &self,
        task: &DeploymentTask,
        event: TaskEvent,
        cause: &str,
    ) -> Result<DeploymentTask, StoreError> {
        self.task_event_with(task, event, cause, None).await
    }

    /// `task_event`, and for the transition that ends an attempt, what it leaves on
    /// the task (its log tail, its agent) in the same write.
    pub(crate) async fn task_event_with(
        &self,
        task: &DeploymentTask,
        event: TaskEvent,
        cause: &str,
        record: Option<&deploy_store::AttemptRecord>,
    ) -> Result<DeploymentTask, StoreError> {
        let now = self.clock.now();
        let updated = match record {
            Some(record) => {
                self.store
                    .finish_attempt(task.id, task.version, event, now, cause, record)
                    .await?
            }
            None => {
                self.store
                    .apply_task_event(task.id, task.version, event, now, cause)
                    .await?
            }
        };
        tracing::debug!(task = %task.id, event = event.as_str(), status = updated.status.as_str(), cause, "task transition");
        let _ = self.events.send(EngineEvent {
            job_id: task.job_id,
            task_id: Some(task.id),
            event: event.as_str(),
            status: updated.status.as_str(),
            cause: cause.to_owned(),
            at: now,
        });
        Ok(updated)
    }
}
