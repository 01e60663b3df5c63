//! Trace links: the `TraceLink` through which the embedder (deployd, with OpenTelemetry) joins the engine's `tracing` spans to a distributed trace (through the W3C `traceparent` a job carries, `deploy_core::Traceparent`), and the engine's trace spans.
//!
//! The engine knows no tracing backend: its spans are plain `tracing` spans (`job`,
//! `wave`, `task`, `executor`), and a job's span takes the stored trace context as
//! its remote parent through [`TraceLink::adopt`], whichever replica runs it.

use deploy_core::{DeploymentTask, JobId, Target, Traceparent};

/// Joins `tracing` spans to a distributed trace. Implemented by the embedder over
/// its tracing backend; without one the engine stores and adopts nothing.
pub trait TraceLink: Send + Sync {
    /// The trace context of `span`, when it is part of a recorded trace.
    fn traceparent(&self, span: &tracing::Span) -> Option<Traceparent>;
    /// Makes `parent` the remote parent of `span` (before `span` is first entered).
    fn adopt(&self, span: &tracing::Span, parent: &Traceparent);
}

/// The `tracing` target of every trace span and trace event (the request's, the job's,
/// the wave's, the task's, the executor call's, the health verification's). deployd's
/// log output leaves this target out and its trace exporter takes only this target, so
/// with the exporter off nothing is interested in these spans (each macro costs a
/// callsite check) and log lines carry no trace-span prefix either way.
pub const TRACE_TARGET: &str = "deploy_trace";

/// The trace context of the current span (a request's, when a request creates a job;
/// the failed job's run, when it starts its rollback), as stored with a job; `None`
/// without a trace link or outside a recorded trace.
pub(crate) fn current_traceparent(inner: &crate::engine::Inner) -> Option<Traceparent> {
    let link = inner.trace.get()?;
    link.traceparent(&tracing::Span::current())
}

/// The span of one run of job `id` (a run ends when the runner stops: a resumed job
/// has one span per run). A root: its parent is set from the job's stored trace context.
pub(crate) fn job_span(id: JobId) -> tracing::Span {
    tracing::info_span!(
        target: TRACE_TARGET,
        parent: None,
        "job",
        otel.name = "deploy.job",
        otel.status_code = tracing::field::Empty,
        job.id = %id,
        job.status = tracing::field::Empty,
    )
}

/// The span of wave `wave` of job `job`, under the job's span `parent`.
pub(crate) fn wave_span(parent: &tracing::Span, job: JobId, wave: u32) -> tracing::Span {
    tracing::info_span!(
        target: TRACE_TARGET,
        parent: parent,
        "wave",
        otel.name = "deploy.wave",
        job.id = %job,
        wave = wave,
    )
}

/// The span of one attempt of `task` on the target named `target`, under its wave's
/// span `wave`. The attempt number and the status are recorded by the worker.
pub(crate) fn task_span(
    wave: &tracing::Span,
    task: &DeploymentTask,
    target: &str,
) -> tracing::Span {
    tracing::info_span!(
        target: TRACE_TARGET,
        parent: wave,
        "task",
        otel.name = "deploy.task",
        otel.status_code = tracing::field::Empty,
        job.id = %task.job_id,
        task.id = %task.id,
        task.wave = task.wave,
        task.attempt = tracing::field::Empty,
        task.status = tracing::field::Empty,
        target.id = %task.target_id,
        target.name = target,
        component.id = task.component_id.as_ref().map(tracing::field::display),
        digest = %task.digest,
    )
}

/// The span of one health verification of the task running on `target`: one span
/// whatever the number of probes (a soak probes for minutes), with the count, the
/// verdict and the last HTTP status as attributes; each failed probe is an event in it.
pub(crate) fn verify_span(target: &Target) -> tracing::Span {
    tracing::info_span!(
        target: TRACE_TARGET,
        "health",
        otel.name = "health.verify",
        otel.status_code = tracing::field::Empty,
        target.name = %target.name,
        target.id = %target.id,
        health.probes = tracing::field::Empty,
        health.verdict = tracing::field::Empty,
        health.status_code = tracing::field::Empty,
    )
}

/// Records `report` on the health verification span `span` ([`verify_span`]).
pub(crate) fn record_verification(span: &tracing::Span, report: &deploy_health::HealthReport) {
    span.record("health.probes", report.attempts);
    let verdict = match report.verdict {
        deploy_health::HealthVerdict::Healthy => "healthy",
        deploy_health::HealthVerdict::Unhealthy => "unhealthy",
        deploy_health::HealthVerdict::Unreachable => "unreachable",
        deploy_health::HealthVerdict::Cancelled => "cancelled",
    };
    span.record("health.verdict", verdict);
    if let Some(code) = report.status_code {
        span.record("health.status_code", code);
    }
    if !report.healthy() {
        span.record("otel.status_code", "error");
    }
}

/// Marks a failed health-check call (`op` on `target`) as an event of the current span
/// (the health verification's): probes that pass leave nothing, so a long soak cannot
/// fill the export queue. The error text is not recorded (it may quote a response).
pub(crate) fn failed_check_call(op: &'static str, target: &Target) {
    tracing::info!(
        target: TRACE_TARGET,
        op,
        target.name = %target.name,
        outcome = "error",
        "health check call failed"
    );
}

mod executor;
pub(crate) use executor::traced_executor;
