//! `TracedExecutor`: the decorator that gives every executor call the engine makes (deploy, resume, inspect, hooks, blue-green's published/switch/retire) a span of its own, applied once where the engine resolves a target's executor.

use std::sync::Arc;

use async_trait::async_trait;
use deploy_core::{CommandSpec, DeploymentTask, Digest, InstanceProbe, Name, ProbeOutcome};
use deploy_core::{PublishedPort, Target};
use deploy_exec::{
    CommandOutput, DeployOutcome, DeployRequest, ExecContext, ExecError, Executor, Published,
    TrafficSwitch,
};
use tracing::Instrument as _;

use super::TRACE_TARGET;

/// `executor` wrapped in a [`TracedExecutor`] when trace spans are wanted (deployd's
/// exporter is on); otherwise `executor` itself, so with tracing off an executor call
/// costs nothing more than before.
pub(crate) fn traced_executor(executor: Arc<dyn Executor>) -> Arc<dyn Executor> {
    if tracing::enabled!(target: TRACE_TARGET, tracing::Level::INFO) {
        Arc::new(TracedExecutor { inner: executor })
    } else {
        executor
    }
}

/// Runs each call of the executor it wraps in an `executor` span named after the
/// operation (`executor.deploy`, ...), with the outcome recorded. Every method of
/// [`Executor`] is forwarded: one left out would silently fall back to the trait's
/// default (a `published` refused as unsupported, say).
pub(crate) struct TracedExecutor {
    inner: Arc<dyn Executor>,
}

/// The span of one executor call on `target`. Its attributes name the target, never a
/// request's contents (which may hold secrets).
pub(crate) fn executor_span(op: &'static str, target: &Target) -> tracing::Span {
    tracing::info_span!(
        target: TRACE_TARGET,
        "executor",
        otel.name = op,
        otel.status_code = tracing::field::Empty,
        target.name = %target.name,
        target.id = %target.id,
        outcome = tracing::field::Empty,
    )
}

/// Runs `call` in `op`'s span on `target` and records its outcome: `ok` or `error`
/// (the error itself is in the task log).
async fn traced<T, E>(
    op: &'static str,
    target: &Target,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let span = executor_span(op, target);
    let result = call.instrument(span.clone()).await;
    record(&span, result.is_ok());
    result
}

fn record(span: &tracing::Span, ok: bool) {
    if ok {
        span.record("outcome", "ok");
    } else {
        span.record("outcome", "error")
            .record("otel.status_code", "error");
    }
}

#[async_trait]
impl Executor for TracedExecutor {
    async fn deploy(&self, request: &DeployRequest, ctx: &ExecContext) -> DeployOutcome {
        traced(
            "executor.deploy",
            &request.target,
            self.inner.deploy(request, ctx),
        )
        .await
    }

    async fn resume(
        &self,
        target: &Target,
        task: &DeploymentTask,
        ctx: &ExecContext,
    ) -> Option<DeployOutcome> {
        let span = executor_span("executor.resume", target);
        let found = self
            .inner
            .resume(target, task, ctx)
            .instrument(span.clone())
            .await;
        match &found {
            Some(outcome) => record(&span, outcome.is_ok()),
            None => {
                span.record("outcome", "unknown");
            }
        }
        found
    }

    async fn inspect(
        &self,
        target: &Target,
        component: &Name,
        ctx: &ExecContext,
    ) -> Result<Option<Digest>, ExecError> {
        traced(
            "executor.inspect",
            target,
            self.inner.inspect(target, component, ctx),
        )
        .await
    }

    async fn run_command(
        &self,
        target: &Target,
        command: &CommandSpec,
        ctx: &ExecContext,
    ) -> Result<CommandOutput, ExecError> {
        traced(
            "executor.run_command",
            target,
            self.inner.run_command(target, command, ctx),
        )
        .await
    }

    async fn published(
        &self,
        target: &Target,
        component: &Name,
        port: u16,
        ctx: &ExecContext,
    ) -> Result<Published, ExecError> {
        traced(
            "executor.published",
            target,
            self.inner.published(target, component, port, ctx),
        )
        .await
    }

    async fn switch_traffic(
        &self,
        target: &Target,
        switch: &TrafficSwitch,
        ctx: &ExecContext,
    ) -> Result<(), ExecError> {
        traced(
            "executor.switch_traffic",
            target,
            self.inner.switch_traffic(target, switch, ctx),
        )
        .await
    }

    async fn instance(
        &self,
        target: &Target,
        slot: &Name,
        ctx: &ExecContext,
    ) -> Result<Vec<PublishedPort>, ExecError> {
        traced(
            "executor.instance",
            target,
            self.inner.instance(target, slot, ctx),
        )
        .await
    }

    async fn probe(
        &self,
        target: &Target,
        probe: &InstanceProbe,
        ctx: &ExecContext,
    ) -> Result<ProbeOutcome, ExecError> {
        traced(
            "executor.probe",
            target,
            self.inner.probe(target, probe, ctx),
        )
        .await
    }

    async fn retire_previous(
        &self,
        target: &Target,
        component: &Name,
        ctx: &ExecContext,
    ) -> Result<(), ExecError> {
        traced(
            "executor.retire_previous",
            target,
            self.inner.retire_previous(target, component, ctx),
        )
        .await
    }
}
