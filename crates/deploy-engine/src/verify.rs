//! Final verification of a completing job, and the bridge that lets health checks (commands, probes of deployed instances) run through executors.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deploy_core::{
    CommandSpec, DeploymentJob, HealthCheck, HealthCheckConfig, InstanceProbe, Name, ProbeOutcome,
    PublishedPort, Target,
};
use deploy_exec::{ExecContext, Executor, ExecutorRegistry, NullSink, TaskLog};
use deploy_health::{CommandOutput, CommandRunner, HealthVerdict, InstanceProber};
use tokio_util::sync::CancellationToken;

use crate::context::JobContext;
use crate::engine::Inner;
use crate::trace::failed_check_call;

/// Runs health-check commands, and probes deployed instances, on targets through their executors.
/// Its executors are not traced call by call ([`crate::trace::traced_executor`]): a
/// soak probes for minutes, so only failed calls are marked, as events of the
/// verification's span ([`crate::trace::verify_span`]).
#[derive(Clone)]
pub(crate) struct ExecCommandRunner {
    pub executors: ExecutorRegistry,
}

impl ExecCommandRunner {
    /// `target`'s executor and a context that logs nothing (a health check's calls are
    /// not task output), bounded by `timeout` and `cancel`.
    fn silent(
        &self,
        target: &Target,
        cancel: CancellationToken,
        timeout: Duration,
    ) -> Result<(Arc<dyn Executor>, ExecContext), String> {
        let executor = self
            .executors
            .for_target(target)
            .map_err(|e| e.to_string())?;
        let ctx = ExecContext {
            log: TaskLog::new(Arc::new(NullSink), 0),
            cancel,
            timeout,
        };
        Ok((executor, ctx))
    }
}

#[async_trait]
impl InstanceProber for ExecCommandRunner {
    async fn published(
        &self,
        target: &Target,
        slot: &Name,
        timeout: Duration,
        cancel: CancellationToken,
    ) -> Result<Vec<PublishedPort>, String> {
        let (executor, ctx) = self.silent(target, cancel, timeout)?;
        let found = executor.instance(target, slot, &ctx).await;
        if found.is_err() {
            failed_check_call("executor.instance", target);
        }
        found.map_err(|e| e.to_string())
    }

    async fn probe(
        &self,
        target: &Target,
        probe: &InstanceProbe,
        cancel: CancellationToken,
    ) -> Result<ProbeOutcome, String> {
        let (executor, ctx) =
            self.silent(target, cancel, Duration::from_millis(probe.timeout_ms))?;
        let probed = executor.probe(target, probe, &ctx).await;
        if !probed.as_ref().is_ok_and(|outcome| outcome.healthy) {
            failed_check_call("executor.probe", target);
        }
        probed.map_err(|e| e.to_string())
    }
}

/// The check as it runs on `target`: a command `in_container` becomes `docker exec
/// <container> …` on the target, run through its executor like any command.
pub(crate) fn runnable_check(
    config: &HealthCheckConfig,
    container: Option<&Name>,
) -> HealthCheckConfig {
    let mut config = config.clone();
    if let HealthCheck::Command {
        command,
        in_container: true,
    } = &config.check
        && let Some(container) = container
    {
        let mut argv = vec![
            "docker".to_owned(),
            "exec".to_owned(),
            container.to_string(),
        ];
        argv.extend(command.argv().iter().cloned());
        if let Ok(command) = CommandSpec::new(argv) {
            config.check = HealthCheck::Command {
                command,
                in_container: false,
            };
        }
    }
    config
}

#[async_trait]
impl CommandRunner for ExecCommandRunner {
    async fn run(
        &self,
        target: &Target,
        command: &CommandSpec,
        timeout: Duration,
        cancel: CancellationToken,
    ) -> Result<CommandOutput, String> {
        let (executor, ctx) = self.silent(target, cancel, timeout)?;
        let out = executor.run_command(target, command, &ctx).await;
        if !out.as_ref().is_ok_and(|out| out.exit_status == 0) {
            failed_check_call("executor.run_command", target);
        }
        let out = out.map_err(|e| e.to_string())?;
        Ok(CommandOutput {
            exit_code: i32::try_from(out.exit_status).unwrap_or(i32::MAX),
            output: out.stdout,
        })
    }
}

/// Verifies every instance the job deployed (each task's container, or compose
/// project, on its target); `Err` carries the reason the job fails.
pub(crate) async fn verify_targets(
    inner: &Inner,
    ctx: &JobContext,
    job: &DeploymentJob,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for task in &job.tasks {
        if !seen.insert((task.target_id, task.component_id)) {
            continue;
        }
        let Ok(target) = ctx.target(task.target_id) else {
            continue;
        };
        let Some(config) = &target.health_check else {
            continue;
        };
        let slot = ctx.slot_name(target, task.component_id).ok();
        let mut config = runnable_check(config, slot.as_ref());
        // The soak already happened per task; the final check is a point-in-time check.
        config.min_healthy_time_ms = 0;
        let shown = match &slot {
            Some(s) => format!("target `{}` ({s})", target.name),
            None => format!("target `{}`", target.name),
        };
        let problem = match inner
            .health
            .verify(target, &config, slot.as_ref(), cancel)
            .await
        {
            Ok(r) if r.verdict == HealthVerdict::Healthy => continue,
            Ok(r) => format!("{shown}: {}", r.message),
            Err(e) => format!("{shown}: {e}"),
        };
        // A check's output may print the task's secrets: the reason (a job event, the
        // cut-back's log line) is redacted like the task's log.
        let redacting = crate::app_secrets::attempt_log(
            inner.app_secrets.get(),
            ctx,
            target,
            task,
            TaskLog::new(Arc::new(NullSink), 0),
        )
        .await;
        problems.push(redacting.redact(&problem));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "final verification failed: {}",
            problems.join("; ")
        ))
    }
}
