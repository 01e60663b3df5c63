//! One attempt of one task, run by a worker: hooks, the executor's deploy, health verification, and the task's transitions.

use std::sync::Arc;
use std::time::Duration;

use deploy_core::{CommandSpec, DeploymentTask, TaskEvent, TaskStatus};
use deploy_exec::{ComponentSpec, DeployOutcome, DeployRequest, ExecContext, Executor, TaskLog};
use deploy_health::HealthVerdict;
use deploy_store::StoreError;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::context::JobContext;
use crate::engine::Inner;
use crate::logs::StoreLog;

/// Where an attempt starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// A dispatched task: run hooks and the executor's deploy, then verify.
    Deploy,
    /// A reconciled task already on its digest: only verify (and the post-deploy hook).
    Verify,
    /// A task left in flight by an earlier runner (a restart, another replica's death):
    /// its attempt's outcome when the executor finds it again (an agent's stored
    /// delivery, waited for if still running), else what the target runs (inspect).
    Reconcile,
}

/// Runs the attempt to a task transition and returns the task as last written;
/// `None` after a store error (logged; the runner reloads, and reconciles a task left in flight).
pub(crate) async fn run_attempt(
    inner: Arc<Inner>,
    ctx: Arc<JobContext>,
    task: DeploymentTask,
    phase: Phase,
    soak: Option<Duration>,
    cancel: CancellationToken,
    stopping: CancellationToken,
) -> Option<DeploymentTask> {
    let id = task.id;
    let (sink, writer) = StoreLog::start(inner.store.clone(), inner.clock.clone(), id);
    let log = TaskLog::new(sink.clone(), inner.config.log_cap);
    let outcome = {
        // Holds the sink too: dropped before the writer is waited for, which ends when
        // every handle to the sink is gone.
        let record = Recorder {
            log: sink,
            agent: std::sync::Mutex::new(None),
        };
        let tokens = Tokens {
            cancel: &cancel,
            stopping: &stopping,
            record: &record,
            redact: None,
        };
        attempt(&inner, &ctx, task, phase, soak, tokens, &log).await
    };
    drop(log);
    writer.finish().await;
    outcome
        .map_err(|e| tracing::warn!(task = %id, error = %e, "task attempt stopped on a store error; it will be reconciled"))
        .ok()
}

async fn attempt(
    inner: &Inner,
    ctx: &JobContext,
    mut task: DeploymentTask,
    phase: Phase,
    soak: Option<Duration>,
    tokens: Tokens<'_>,
    log: &TaskLog,
) -> Result<DeploymentTask, StoreError> {
    let cancel = tokens.cancel;
    let target = ctx.target(task.target_id)?.clone();
    let executor = match inner.executor_for(&target) {
        Ok(e) => e,
        Err(e) => return fail(inner, tokens, &task, e.is_retryable(), &e.to_string()).await,
    };
    // Every line of the attempt, whatever its phase, and its failure's reason, are
    // redacted with the task's secret values (a health check printing one included).
    let redacting =
        crate::app_secrets::attempt_log(inner.app_secrets.get(), ctx, &target, &task, log.clone())
            .await;
    let log = &redacting;
    let tokens = Tokens {
        redact: Some(log),
        ..tokens
    };
    let exec_ctx = ExecContext {
        log: log.clone(),
        cancel: cancel.clone(),
        timeout: inner.config.task_timeout,
    };
    if task.status == TaskStatus::Dispatched {
        task = inner
            .task_event(&task, TaskEvent::Start, "executor started")
            .await?;
    }
    let mut phase = phase;
    if phase == Phase::Reconcile {
        if let Some(outcome) = executor.resume(&target, &task, &exec_ctx).await {
            tokens.record.ran_on(&outcome);
            let failed = match outcome {
                Ok(d) if d.deployed_digest == task.digest => None,
                Ok(_) => Some((
                    true,
                    "the attempt in flight deployed another digest".to_owned(),
                )),
                Err(f) => Some((f.retryable(), format!("the attempt in flight failed: {f}"))),
            };
            if let Some((retryable, why)) = failed {
                return fail(inner, tokens, &task, retryable, &why).await;
            }
            log.line("the attempt in flight finished on its digest");
            phase = Phase::Verify;
        } else {
            match reconcile_by_inspect(executor.as_ref(), ctx, &target, &task, inner).await {
                Ok(()) => phase = Phase::Verify,
                Err((retryable, why)) => return fail(inner, tokens, &task, retryable, &why).await,
            }
        }
    }
    if phase == Phase::Deploy {
        if let Some(hook) = &ctx.environment.hooks.pre_deploy
            && let Err(why) =
                run_hook(executor.as_ref(), &target, hook, &exec_ctx, "pre-deploy").await
        {
            return fail(inner, tokens, &task, false, &why).await;
        }
        let component = match task.component_id {
            Some(id) => {
                let c = ctx.component(id)?;
                // What the container runs, read back from the job's stored lock for this
                // target (a rollback job carries the lock of the job it restores).
                let mut container = match ctx.container_spec(&target, c, &task.digest) {
                    Ok(spec) => spec,
                    Err(why) => return fail(inner, tokens, &task, false, &why).await,
                };
                // Blue-green: green starts beside blue, which keeps running (and
                // serving) until the cut-over; the proxy's upstream port is published.
                let blue_green = ctx.blue_green;
                if blue_green {
                    for port in crate::bluegreen::publish_for(&target) {
                        if !container.ports.iter().any(|p| p.container_port == port) {
                            container.ports.push(deploy_core::PortMapping {
                                host_ip: Some(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
                                host_port: None,
                                container_port: port,
                                protocol: deploy_core::Protocol::Tcp,
                            });
                        }
                    }
                }
                Some(ComponentSpec {
                    name: crate::context::container_name(&target, &c.name)?,
                    container,
                    keep_previous_running: blue_green,
                })
            }
            None => None,
        };
        // Application secrets are read now, per task: the stored artifacts keep the
        // references, and the values live only in this request and the executor's log
        // redaction.
        let mut component = component;
        let deploy_ctx = match component.as_mut() {
            Some(c) => match crate::app_secrets::resolve_env(
                inner.app_secrets.get(),
                &ctx.environment,
                &mut c.container.env,
                exec_ctx.log.clone(),
            )
            .await
            {
                Ok(log) => ExecContext {
                    log,
                    ..exec_ctx.clone()
                },
                Err((retryable, why)) => return fail(inner, tokens, &task, retryable, &why).await,
            },
            None => exec_ctx.clone(),
        };
        let mut artifacts = ctx.artifacts_for(target.id);
        let (deploy_ctx, stored_lock) = if component.is_none() {
            match crate::app_secrets::resolve_compose(
                inner.app_secrets.get(),
                &ctx.environment,
                ctx.project(),
                &mut artifacts,
                deploy_ctx.log.clone(),
                inner.clock.now(),
            )
            .await
            {
                Ok((log, stored_lock)) => (ExecContext { log, ..deploy_ctx }, stored_lock),
                Err((retryable, why)) => return fail(inner, tokens, &task, retryable, &why).await,
            }
        } else {
            (deploy_ctx, None)
        };
        let request = DeployRequest {
            target: target.clone(),
            task: task.clone(),
            component,
            project: ctx.project().clone(),
            artifacts,
            stored_lock,
            rollback: ctx.rollback,
        };
        let outcome = executor.deploy(&request, &deploy_ctx).await;
        tokens.record.ran_on(&outcome);
        let result = match outcome {
            Ok(deployed) => deployed,
            Err(_) if cancel.is_cancelled() => {
                return fail(inner, tokens, &task, false, "cancelled").await;
            }
            Err(f) => return fail(inner, tokens, &task, f.retryable(), &f.to_string()).await,
        };
        if result.previous_digest.is_some() && result.previous_digest != task.previous_digest {
            task.previous_digest = result.previous_digest.clone();
            task = inner.store.save_task(&task, inner.clock.now()).await?;
        }
        let how = if result.changed {
            "deployed"
        } else {
            "already running"
        };
        task = inner
            .task_event(&task, TaskEvent::Verify, &format!("{how} {}", task.digest))
            .await?;
    } else if task.status == TaskStatus::Running {
        task = inner
            .task_event(
                &task,
                TaskEvent::Verify,
                "found on its digest after a restart",
            )
            .await?;
    }
    if let Some(config) = &target.health_check {
        // The instance an http or tcp check probes (without a health endpoint), and the
        // container an `in_container` command runs in.
        let slot = ctx.slot_name(&target, task.component_id)?;
        let mut config = crate::verify::runnable_check(config, Some(&slot));
        if let Some(soak) = soak {
            let soak_ms = u64::try_from(soak.as_millis()).unwrap_or(u64::MAX);
            config.min_healthy_time_ms = config.min_healthy_time_ms.max(soak_ms);
        }
        let span = crate::trace::verify_span(&target);
        let verified = inner
            .health
            .verify(&target, &config, Some(&slot), cancel)
            .instrument(span.clone())
            .await;
        if let Ok(report) = &verified {
            crate::trace::record_verification(&span, report);
        }
        match verified {
            Ok(report) if report.verdict == HealthVerdict::Healthy => {
                log.line(&format!(
                    "healthy after {} probe(s): {}",
                    report.attempts, report.message
                ));
            }
            Ok(report) if report.verdict == HealthVerdict::Cancelled => {
                return fail(
                    inner,
                    tokens,
                    &task,
                    false,
                    "cancelled during health verification",
                )
                .await;
            }
            Ok(report) if report.verdict == HealthVerdict::Unreachable => {
                // The check could not run on the target (connection refused or lost):
                // nothing is known about the new version, so the attempt is retryable
                // like any other unreachable target.
                let why = format!(
                    "health check could not reach the target after {} probe(s): {}",
                    report.attempts, report.message
                );
                log.line(&why);
                return fail(inner, tokens, &task, true, &why).await;
            }
            Ok(report) => {
                let why = format!(
                    "health check failed after {} probe(s): {}",
                    report.attempts, report.message
                );
                log.line(&why);
                return fail(inner, tokens, &task, false, &why).await;
            }
            Err(e) => return fail(inner, tokens, &task, false, &e.to_string()).await,
        }
    } else if let Some(soak) = soak {
        // A canary without a health check still soaks: the wait before the remaining
        // waves is the point of the canary, and other signals (alerts, hooks, an
        // operator's cancel) act inside it.
        log.line(&format!(
            "no health check: soaking {} ms without probes",
            soak.as_millis()
        ));
        tokio::select! {
            () = tokio::time::sleep(soak) => {}
            () = cancel.cancelled() => {
                return fail(inner, tokens, &task, false, "cancelled during the canary soak").await;
            }
        }
    }
    // Blue-green runs the post-deploy hook after the cut-over instead (bluegreen::cut_over).
    if let Some(hook) = &ctx.environment.hooks.post_deploy
        && !ctx.blue_green
        && let Err(why) = run_hook(executor.as_ref(), &target, hook, &exec_ctx, "post-deploy").await
    {
        return fail(inner, tokens, &task, false, &why).await;
    }
    inner
        .task_event_with(
            &task,
            TaskEvent::Succeed,
            "healthy",
            Some(&tokens.record.take()),
        )
        .await
}

/// Asks the target what runs for a task left in flight without a resumable attempt:
/// `Ok` when its digest runs (verify it), else why the attempt failed and whether it
/// may be retried.
async fn reconcile_by_inspect(
    executor: &dyn Executor,
    ctx: &JobContext,
    target: &deploy_core::Target,
    task: &DeploymentTask,
    inner: &Inner,
) -> Result<(), (bool, String)> {
    let name = ctx
        .slot_name(target, task.component_id)
        .map_err(|e| (false, e.to_string()))?;
    let exec_ctx = ExecContext::quiet(inner.config.task_timeout);
    match executor.inspect(target, &name, &exec_ctx).await {
        Ok(Some(digest)) if digest == task.digest => Ok(()),
        Ok(other) => {
            let running = other.map_or_else(|| "nothing".to_owned(), |d| d.to_string());
            Err((
                true,
                format!("interrupted before the deploy finished; the target runs {running}"),
            ))
        }
        Err(e) => Err((
            e.is_retryable(),
            format!("interrupted, and the target cannot be inspected: {e}"),
        )),
    }
}

/// What an attempt leaves on its task: the tail of its log, and the agent that ran it.
struct Recorder {
    log: Arc<StoreLog>,
    agent: std::sync::Mutex<Option<deploy_core::AgentId>>,
}

impl Recorder {
    /// Keeps the agent that ran the deploy, whatever its outcome.
    fn ran_on(&self, outcome: &DeployOutcome) {
        let agent = match outcome {
            Ok(d) => d.agent,
            Err(f) => f.agent,
        };
        if let Some(agent) = agent
            && let Ok(mut a) = self.agent.lock()
        {
            *a = Some(agent);
        }
    }

    fn take(&self) -> deploy_store::AttemptRecord {
        deploy_store::AttemptRecord {
            logs: self.log.tail(),
            agent_id: self.agent.lock().ok().and_then(|a| *a),
        }
    }
}

/// The worker's two reasons to stop early, and what its attempt leaves on the task.
#[derive(Clone, Copy)]
struct Tokens<'a> {
    /// The job was cancelled (or gave up): the attempt ends failed.
    cancel: &'a CancellationToken,
    /// This engine stops running the job (shutdown, lease lost): the attempt is left
    /// in flight, unwritten, for the next engine to reconcile with `inspect`.
    stopping: &'a CancellationToken,
    record: &'a Recorder,
    /// The attempt's redaction of secret values, applied to the failure's reason.
    redact: Option<&'a TaskLog>,
}

async fn fail(
    inner: &Inner,
    tokens: Tokens<'_>,
    task: &DeploymentTask,
    retryable: bool,
    why: &str,
) -> Result<DeploymentTask, StoreError> {
    let why = &tokens
        .redact
        .map_or_else(|| why.to_owned(), |log| log.redact(why));
    if tokens.stopping.is_cancelled() {
        tracing::info!(task = %task.id, why, "engine stopping: the attempt is left for the next engine to reconcile");
        return Ok(task.clone());
    }
    inner
        .task_event_with(
            task,
            TaskEvent::Fail { retryable },
            why,
            Some(&tokens.record.take()),
        )
        .await
}

/// Runs a hook on `target` through its executor; its output goes to `ctx`'s log.
pub(crate) async fn run_hook_on(
    inner: &Inner,
    target: &deploy_core::Target,
    hook: &CommandSpec,
    ctx: &ExecContext,
    which: &str,
) -> Result<(), String> {
    let executor = inner
        .executor_for(target)
        .map_err(|e| format!("{which} hook could not run: {e}"))?;
    run_hook(executor.as_ref(), target, hook, ctx, which).await
}

/// Runs a hook on the target; its output goes to the task log.
async fn run_hook(
    executor: &dyn Executor,
    target: &deploy_core::Target,
    hook: &CommandSpec,
    ctx: &ExecContext,
    which: &str,
) -> Result<(), String> {
    ctx.log
        .line(&format!("{which} hook: {}", hook.argv().join(" ")));
    match executor.run_command(target, hook, ctx).await {
        Ok(out) => {
            for line in out.stdout.lines() {
                ctx.log.line(line);
            }
            if out.exit_status == 0 {
                Ok(())
            } else {
                Err(format!("{which} hook exited {}", out.exit_status))
            }
        }
        Err(e) => Err(format!("{which} hook could not run: {e}")),
    }
}
