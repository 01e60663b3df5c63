//! Final verification of a completing job, and the bridge that lets health `command` checks run through executors.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deploy_core::{CommandSpec, DeploymentJob, Target};
use deploy_exec::{ExecContext, ExecutorRegistry, NullSink, TaskLog};
use deploy_health::{CommandOutput, CommandRunner, HealthVerdict};
use tokio_util::sync::CancellationToken;

use crate::context::JobContext;
use crate::engine::Inner;

/// Runs health-check commands on targets through their executors.
pub(crate) struct ExecCommandRunner {
    pub executors: ExecutorRegistry,
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
        let executor = self
            .executors
            .for_target(target)
            .map_err(|e| e.to_string())?;
        let ctx = ExecContext {
            log: TaskLog::new(Arc::new(NullSink), 0),
            cancel,
            timeout,
        };
        let out = executor
            .run_command(target, command, &ctx)
            .await
            .map_err(|e| e.to_string())?;
        Ok(CommandOutput {
            exit_code: i32::try_from(out.exit_status).unwrap_or(i32::MAX),
            output: out.stdout,
        })
    }
}

/// Verifies every target the job touched; `Err` carries the reason the job fails.
pub(crate) async fn verify_targets(
    inner: &Inner,
    ctx: &JobContext,
    job: &DeploymentJob,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let mut problems = Vec::new();
    for target_id in job.target_ids() {
        let Ok(target) = ctx.target(target_id) else {
            continue;
        };
        let Some(config) = &target.health_check else {
            continue;
        };
        let mut config = config.clone();
        // The soak already happened per task; the final check is a point-in-time check.
        config.min_healthy_time_ms = 0;
        match inner.health.verify(target, &config, cancel).await {
            Ok(r) if r.verdict == HealthVerdict::Healthy => {}
            Ok(r) => problems.push(format!("target `{}`: {}", target.name, r.message)),
            Err(e) => problems.push(format!("target `{}`: {e}", target.name)),
        }
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
