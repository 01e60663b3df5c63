//! Blue-green cut-over: a target's proxy (its `deploy.nginx.*` labels), the nginx include rendered with blue and green, the switch and the cut back through the executor, and blue's retirement.
//!
//! Green is started beside blue by the tasks (`keep_previous_running`: blue keeps
//! running as `<name>-previous`, and keeps serving, since the proxy still points at
//! its published address). Once every green is verified, [`cut_over`] renders each
//! target's include with green live from the addresses the executor reports
//! (`Executor::published`), installs it with `Executor::switch_traffic` (upload,
//! `nginx -t`, reload; the old file back on failure), runs the post-deploy hooks and
//! the final verification. A failure after a switch cuts every switched target back
//! to blue (the same render with blue live): blue never stopped, so nothing is
//! redeployed. [`retire_blue`] stops blue after the job completed.

use std::sync::Arc;

use deploy_artifacts::{Colour, HttpRouting, Route, Traffic, render_routing};
use deploy_core::{
    CommandSpec, DeploymentJob, Strategy, Target, TargetId, TargetType, TaskId, TaskStatus,
    UnixPath,
};
use deploy_exec::{ExecContext, TaskLog, TrafficSwitch};
use tokio_util::sync::CancellationToken;

use crate::context::{JobContext, container_name};
use crate::engine::Inner;
use crate::logs::StoreLog;

/// Target label: the nginx include file the cut-over replaces (an absolute path the
/// SSH user may write, loaded by the target's nginx in its `http` context). Required
/// on every target of a blue-green job.
pub const NGINX_INCLUDE_LABEL: &str = "deploy.nginx.include";
/// Target label: the container port the proxy forwards to (published on an ephemeral
/// 127.0.0.1 port by each colour). Required on every target of a blue-green job.
pub const NGINX_UPSTREAM_PORT_LABEL: &str = "deploy.nginx.upstream-port";
/// Target label: the port the include's `server` listens on (default 80).
pub const NGINX_LISTEN_LABEL: &str = "deploy.nginx.listen";
/// Target label: the nginx command, words separated by spaces (default `nginx`); the
/// switch runs it with `-t`, then with `-s reload`, every word quoted (argv).
pub const NGINX_COMMAND_LABEL: &str = "deploy.nginx.command";

/// True for blue-green jobs.
pub(crate) fn is_blue_green(strategy: &Strategy) -> bool {
    matches!(strategy, Strategy::BlueGreen)
}

/// A target's proxy, read from its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Proxy {
    pub include: UnixPath,
    pub upstream_port: u16,
    pub listen: u16,
    pub command: Vec<String>,
}

impl Proxy {
    /// The proxy of `target`; `Err` names the label and what was expected.
    pub(crate) fn of(target: &Target) -> Result<Self, String> {
        let labels = target.labels.as_map();
        let label = |key: &str| labels.get(key).map(String::as_str);
        let bad = |key: &str, value: &str, expected: &str| {
            format!(
                "label `{key}` of target `{}` is `{value}`; expected {expected}",
                target.name
            )
        };
        if target.target_type != TargetType::DockerHost {
            return Err(format!(
                "target `{}` is a {}; blue-green cut-over is implemented for docker_host targets",
                target.name,
                target.target_type.as_str()
            ));
        }
        if target.execution_model() != deploy_core::ExecutionModel::Ssh {
            return Err(format!(
                "target `{}` is reached over {}; blue-green cut-over switches the proxy over ssh only (expected an ssh docker_host)",
                target.name,
                target.execution_model().as_str()
            ));
        }
        let include = match label(NGINX_INCLUDE_LABEL) {
            None => {
                return Err(format!(
                    "target `{}` has no label `{NGINX_INCLUDE_LABEL}`; expected the path of the nginx include file that blue-green cuts over",
                    target.name
                ));
            }
            Some(v) => UnixPath::parse(v).map_err(|_| {
                bad(
                    NGINX_INCLUDE_LABEL,
                    v,
                    "an absolute path of inert characters",
                )
            })?,
        };
        let port = |key: &str, default: Option<u16>| -> Result<u16, String> {
            match (label(key), default) {
                (Some(v), _) => v
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad(key, v, "a port from 1 to 65535")),
                (None, Some(d)) => Ok(d),
                (None, None) => Err(format!(
                    "target `{}` has no label `{key}`; expected the container port the proxy forwards to",
                    target.name
                )),
            }
        };
        let upstream_port = port(NGINX_UPSTREAM_PORT_LABEL, None)?;
        let listen = port(NGINX_LISTEN_LABEL, Some(80))?;
        let command: Vec<String> = label(NGINX_COMMAND_LABEL)
            .unwrap_or("nginx")
            .split(' ')
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect();
        CommandSpec::new(command.clone()).map_err(|e| {
            bad(
                NGINX_COMMAND_LABEL,
                label(NGINX_COMMAND_LABEL).unwrap_or_default(),
                &format!("a command (argv): {e}"),
            )
        })?;
        Ok(Self {
            include,
            upstream_port,
            listen,
            command,
        })
    }

    fn argv(&self, extra: &[&str]) -> Result<CommandSpec, String> {
        let mut argv = self.command.clone();
        argv.extend(extra.iter().map(|s| (*s).to_owned()));
        CommandSpec::new(argv).map_err(|e| e.to_string())
    }
}

/// The targets of `job` whose every task succeeded (those that have a verified green), in job order.
fn green_targets(job: &DeploymentJob) -> Vec<TargetId> {
    job.target_ids()
        .into_iter()
        .filter(|t| {
            let mut tasks = job
                .tasks
                .iter()
                .filter(|task| task.target_id == *t)
                .peekable();
            tasks.peek().is_some() && tasks.all(|task| task.status == TaskStatus::Succeeded)
        })
        .collect()
}

/// The first task of `target` in `job`: its log gets the target's cut-over lines.
fn log_task(job: &DeploymentJob, target: TargetId) -> Option<TaskId> {
    job.tasks
        .iter()
        .find(|t| t.target_id == target)
        .map(|t| t.id)
}

/// A log into the task's stored log (or nowhere), and what waits for it to be written.
fn task_log(inner: &Inner, task: Option<TaskId>) -> (TaskLog, Option<crate::logs::StoreLogWriter>) {
    match task {
        Some(id) => {
            let (sink, writer) = StoreLog::start(inner.store.clone(), inner.clock.clone(), id);
            (TaskLog::new(sink, inner.config.log_cap), Some(writer))
        }
        None => (TaskLog::new(Arc::new(deploy_exec::NullSink), 0), None),
    }
}

/// Renders `target`'s include with `live` and installs it through the executor.
/// Returns `Ok(false)` when `live` is blue and no blue runs (nothing to cut back to).
async fn switch(
    inner: &Inner,
    ctx: &JobContext,
    job: &DeploymentJob,
    target: &Target,
    live: Colour,
    exec_ctx: &ExecContext,
) -> Result<bool, String> {
    let proxy = Proxy::of(target)?;
    let executor = inner.executor_for(target).map_err(|e| e.to_string())?;
    let components: Vec<_> = job
        .tasks
        .iter()
        .filter(|t| t.target_id == target.id)
        .filter_map(|t| t.component_id)
        .map(|id| ctx.component(id).map(|c| c.name.clone()))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let mut routes = Vec::with_capacity(components.len());
    for component in &components {
        let container = container_name(target, component).map_err(|e| e.to_string())?;
        let found = executor
            .published(target, &container, proxy.upstream_port, exec_ctx)
            .await
            .map_err(|e| format!("target `{}`: {e}", target.name))?;
        let Some(green) = found.current else {
            return Err(format!(
                "target `{}`: container `{container}` does not run or publishes no port {}",
                target.name, proxy.upstream_port
            ));
        };
        let blue = match (found.previous, live) {
            (Some(blue), _) => blue,
            (None, Colour::Blue) => return Ok(false),
            // No blue (a first deploy): green alone; blue's weight is 0 and not rendered.
            (None, Colour::Green) => green.clone(),
        };
        let path = if components.len() == 1 {
            "/".to_owned()
        } else {
            format!("/{component}/")
        };
        routes.push(Route {
            path,
            service: component.clone(),
            blue,
            green,
        });
    }
    let routing = HttpRouting {
        listen: proxy.listen,
        server_name: "_".to_owned(),
        routes,
    };
    let header = format!(
        "generated by deploy for job {} on target {}: {live} live",
        job.id, target.name
    );
    let content = render_routing(&header, &routing, Traffic::all_to(live)).map_err(|e| {
        format!(
            "target `{}`: cannot render the nginx include: {e}",
            target.name
        )
    })?;
    let request = TrafficSwitch {
        path: proxy.include.clone(),
        content,
        test: proxy.argv(&["-t"])?,
        reload: proxy.argv(&["-s", "reload"])?,
    };
    exec_ctx.log.line(&format!(
        "switching traffic on {} to {live}: {}",
        target.name,
        routing
            .routes
            .iter()
            .map(|r| format!(
                "{} -> {}",
                r.path,
                if live == Colour::Green {
                    &r.green
                } else {
                    &r.blue
                }
            ))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    executor
        .switch_traffic(target, &request, exec_ctx)
        .await
        .map_err(|e| {
            format!(
                "target `{}`: traffic switch to {live} failed: {e}",
                target.name
            )
        })?;
    Ok(true)
}

/// Cuts every verified green over, runs the post-deploy hooks and the final
/// verification; on any failure cuts the switched targets back to blue. `Err` is the
/// reason the job fails.
pub(crate) async fn cut_over(
    inner: &Inner,
    ctx: &JobContext,
    job: &DeploymentJob,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let mut switched: Vec<&Target> = Vec::new();
    let mut outcome = Ok(());
    for target_id in green_targets(job) {
        let target = match ctx.target(target_id) {
            Ok(t) => t,
            Err(e) => {
                outcome = Err(e.to_string());
                break;
            }
        };
        let (log, writer) = task_log(inner, log_task(job, target_id));
        let exec_ctx = exec_context(inner, &log, cancel);
        let result = switch(inner, ctx, job, target, Colour::Green, &exec_ctx).await;
        // Counted as switched even on failure: the executor put the old file back, and a
        // cut back renders blue live, which is what that file (normally) says anyway.
        switched.push(target);
        if let Err(why) = result {
            log.line(&why);
            outcome = Err(why);
        } else {
            log.line(&format!("cut over: {} serves green", target.name));
        }
        drop((log, exec_ctx));
        if let Some(w) = writer {
            w.finish().await;
        }
        if outcome.is_err() {
            break;
        }
    }
    if outcome.is_ok()
        && let Some(hook) = &ctx.environment.hooks.post_deploy
    {
        for target in &switched {
            let (log, writer) = task_log(inner, log_task(job, target.id));
            let exec_ctx = exec_context(inner, &log, cancel);
            let result =
                crate::attempt::run_hook_on(inner, target, hook, &exec_ctx, "post-deploy").await;
            drop((log, exec_ctx));
            if let Some(w) = writer {
                w.finish().await;
            }
            if let Err(why) = result {
                outcome = Err(format!(
                    "target `{}`: {why} after the cut-over",
                    target.name
                ));
                break;
            }
        }
    }
    if outcome.is_ok() {
        outcome = crate::verify::verify_targets(inner, ctx, job, cancel).await;
    }
    if let Err(why) = &outcome {
        cut_back(inner, ctx, job, &switched, why).await;
    }
    outcome
}

/// Puts traffic back on blue on `targets` (best effort, each logged to the target's task log).
async fn cut_back(
    inner: &Inner,
    ctx: &JobContext,
    job: &DeploymentJob,
    targets: &[&Target],
    why: &str,
) {
    for target in targets {
        let (log, writer) = task_log(inner, log_task(job, target.id));
        // Not the job's token: a cancelled job must still get its traffic back.
        let exec_ctx = exec_context(inner, &log, &CancellationToken::new());
        log.line(&format!("cutting back to blue: {why}"));
        match switch(inner, ctx, job, target, Colour::Blue, &exec_ctx).await {
            Ok(true) => log.line(&format!("cut back: {} serves blue", target.name)),
            Ok(false) => log.line(&format!(
                "no blue runs on {}: nothing to cut back to",
                target.name
            )),
            Err(e) => {
                tracing::error!(job = %job.id, target = %target.name, error = %e, "cut back to blue failed");
                log.line(&format!("cut back failed: {e}"));
            }
        }
        drop((log, exec_ctx));
        if let Some(w) = writer {
            w.finish().await;
        }
    }
}

/// Stops blue (the kept `-previous` containers) on every target after the job completed.
pub(crate) async fn retire_blue(inner: &Inner, ctx: &JobContext, job: &DeploymentJob) {
    for target_id in green_targets(job) {
        let Ok(target) = ctx.target(target_id) else {
            continue;
        };
        let Ok(executor) = inner.executor_for(target) else {
            continue;
        };
        let (log, writer) = task_log(inner, log_task(job, target_id));
        let exec_ctx = exec_context(inner, &log, &CancellationToken::new());
        for task in job.tasks.iter().filter(|t| t.target_id == target_id) {
            let Ok(container) = ctx.slot_name(target, task.component_id) else {
                continue;
            };
            match executor
                .retire_previous(target, &container, &exec_ctx)
                .await
            {
                Ok(()) => log.line(&format!(
                    "job completed: blue ({container}-previous) stopped, kept for a fast rollback"
                )),
                Err(e) => {
                    tracing::warn!(job = %job.id, target = %target.name, error = %e, "cannot stop blue");
                    log.line(&format!("cannot stop blue ({container}-previous): {e}"));
                }
            }
        }
        drop((log, exec_ctx));
        if let Some(w) = writer {
            w.finish().await;
        }
    }
}

fn exec_context(inner: &Inner, log: &TaskLog, cancel: &CancellationToken) -> ExecContext {
    ExecContext {
        log: log.clone(),
        cancel: cancel.clone(),
        timeout: inner.config.task_timeout,
    }
}

/// Checks before a blue-green job is created that every target can be cut over.
pub(crate) fn check_targets(targets: &[Target]) -> Result<(), String> {
    for target in targets {
        Proxy::of(target)?;
    }
    Ok(())
}

/// What the deploy of a task of a blue-green job asks of the executor: keep blue
/// running and publish the proxy's upstream port.
pub(crate) fn publish_for(target: &Target) -> Vec<u16> {
    Proxy::of(target)
        .map(|p| vec![p.upstream_port])
        .unwrap_or_default()
}
