//! `AgentExecutor`: the `Executor` of agent targets: picks an agent (`findAgentForTarget`), queues the task in the hub, waits for the result by notification.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deploy_api::agent::{
    AgentAction, AgentCapability, ComponentPayload, DeployPayload, RegistryAuth, TaskDelivery,
    TaskKey, TaskOutcome,
};
use deploy_core::{
    AgentConnection, CommandSpec, Connection, Digest, ExecutionModel, Name, Target, TargetType,
    TaskId,
};

use crate::agent::hub::{AgentHub, Completion};
use crate::errors::ExecError;
use crate::executor::{
    CommandOutput, DeployFailure, DeployOutcome, DeployRequest, Deployed, ExecContext, Executor,
};
use crate::secrets::SecretsProvider;

/// Carries out agent targets' tasks through the [`AgentHub`].
pub struct AgentExecutor {
    hub: AgentHub,
    secrets: Arc<dyn SecretsProvider>,
}

impl std::fmt::Debug for AgentExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentExecutor")
            .field("hub", &self.hub)
            .finish_non_exhaustive()
    }
}

fn agent_connection(target: &Target) -> Result<&AgentConnection, ExecError> {
    match &target.connection {
        Connection::Agent(c) => Ok(c),
        _ => Err(ExecError::wrong_connection(target, ExecutionModel::Agent)),
    }
}

fn capability_for(target: &Target) -> Result<AgentCapability, ExecError> {
    match target.target_type {
        TargetType::DockerHost => Ok(AgentCapability::Docker),
        TargetType::ComposeHost => Ok(AgentCapability::Compose),
        other => Err(ExecError::NotSupported {
            what: "an agent task".to_owned(),
            target_type: other.as_str().to_owned(),
            hint: "agents serve docker_host and compose_host targets".to_owned(),
        }),
    }
}

/// A key for a call without a task (inspect, health command): a fresh id, attempt 0.
fn ad_hoc_key() -> Result<TaskKey, ExecError> {
    let now = deploy_core::Timestamp::from_datetime(time::OffsetDateTime::now_utc())
        .map_err(|e| ExecError::invalid("the system clock", e.to_string(), "a time after 1970"))?;
    let random = uuid::Uuid::new_v4();
    let mut bytes = [0u8; 10];
    bytes.copy_from_slice(&random.as_bytes()[..10]);
    Ok(TaskKey {
        task_id: TaskId::from_parts(now, bytes),
        attempt: 0,
    })
}

/// How often a waiter reads its key's stored end when replicas share the relay.
const RELAY_BACKSTOP: Duration = Duration::from_secs(5);

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `user:password` of the connection's registry credentials, if any.
async fn registry_auth(
    secrets: &dyn SecretsProvider,
    connection: &AgentConnection,
    server: String,
) -> Result<Option<RegistryAuth>, ExecError> {
    let Some(reference) = &connection.registry_auth else {
        return Ok(None);
    };
    let secret = secrets.resolve(reference).await?;
    let text = secret.expose().trim_end_matches(['\r', '\n']);
    let (username, password) = text
        .split_once(':')
        .filter(|(u, p)| !u.is_empty() && !p.is_empty())
        .ok_or_else(|| ExecError::Secret {
            reference: reference.to_string(),
            detail: "expected `user:password` registry credentials".to_owned(),
        })?;
    Ok(Some(RegistryAuth {
        server,
        username: username.to_owned(),
        password: password.to_owned(),
    }))
}

/// Puts back the registry credentials of a delivery read from the relay (stored without
/// them): a docker_host deploy or rollback whose agent connection names a secret.
pub async fn resolve_registry_auth(
    secrets: &dyn SecretsProvider,
    delivery: &mut TaskDelivery,
) -> Result<(), ExecError> {
    // Only a docker_host deploy or rollback carries credentials (see `deploy`).
    let Connection::Agent(connection) = &delivery.target.connection else {
        return Ok(());
    };
    if delivery.target.target_type != TargetType::DockerHost {
        return Ok(());
    }
    let connection = connection.clone();
    if let AgentAction::Deploy { deploy } | AgentAction::Rollback { deploy } = &mut delivery.action
    {
        let server = deploy
            .component
            .as_ref()
            .and_then(|c| c.container.image.registry().map(str::to_owned))
            .unwrap_or_else(|| "docker.io".to_owned());
        deploy.registry_auth = registry_auth(secrets, &connection, server).await?;
    }
    Ok(())
}

impl AgentExecutor {
    /// An executor over `hub`, resolving registry credentials with `secrets`.
    pub fn new(hub: AgentHub, secrets: Arc<dyn SecretsProvider>) -> Self {
        Self { hub, secrets }
    }

    /// `user:password` of the connection's registry credentials, if any.
    async fn registry_auth(
        &self,
        connection: &AgentConnection,
        server: String,
    ) -> Result<Option<RegistryAuth>, ExecError> {
        registry_auth(self.secrets.as_ref(), connection, server).await
    }

    /// Selects an agent, queues `action` for it under `key` and waits for the outcome.
    async fn run(
        &self,
        target: &Target,
        key: TaskKey,
        action: AgentAction,
        ctx: &ExecContext,
    ) -> Result<TaskOutcome, ExecError> {
        self.run_on(target, key, action, ctx, &mut None).await
    }

    /// [`Self::run`], telling through `chosen` which agent took the task.
    async fn run_on(
        &self,
        target: &Target,
        key: TaskKey,
        action: AgentAction,
        ctx: &ExecContext,
        chosen: &mut Option<deploy_core::AgentId>,
    ) -> Result<TaskOutcome, ExecError> {
        let connection = agent_connection(target)?;
        let capability = capability_for(target)?;
        let what = action.name();
        // An agent that is registered but not polling yet (deployd just restarted, or it
        // is reconnecting) gets up to a heartbeat timeout to come back before the attempt
        // is failed.
        let max_wait = self.hub.heartbeat_timeout().min(ctx.timeout);
        let selected = self
            .hub
            .select_waiting(
                connection.agent_id,
                &connection.selector,
                capability,
                Some(target.id),
                max_wait,
                &ctx.cancel,
            )
            .await;
        if ctx.cancel.is_cancelled() {
            return Err(ExecError::Cancelled {
                host: format!("target `{}`", target.name),
                what: what.to_owned(),
            });
        }
        let agent = selected.map_err(|e| ExecError::NoAgentAvailable {
            target: target.name.to_string(),
            detail: e.0,
        })?;
        *chosen = Some(agent);
        if connection.agent_id.is_none()
            && matches!(
                action,
                AgentAction::Deploy { .. } | AgentAction::Rollback { .. }
            )
        {
            self.hub.pin(target.id, agent);
        }
        let host = self.hub.agent(agent).map_or_else(
            || format!("agent {agent}"),
            |a| format!("agent `{}`", a.name),
        );
        let delivery = TaskDelivery {
            key,
            target: target.clone(),
            action,
            timeout_ms: duration_ms(ctx.timeout),
        };
        ctx.log.line(&format!(
            "dispatching {what} (task {} attempt {}) to {host}",
            key.task_id, key.attempt
        ));
        let rx = self
            .hub
            .dispatch(agent, delivery, ctx.log.clone())
            .await
            .map_err(|e| ExecError::NoAgentAvailable {
                target: target.name.to_string(),
                detail: e.to_string(),
            })?;
        self.wait(key, rx, host, what, ctx).await
    }

    /// Waits for a dispatched (or resumed) key: its completion, the timeout or a cancel.
    /// With replicas sharing the relay, the key's stored end is also read every
    /// [`RELAY_BACKSTOP`]: a lost announcement delays a result and never loses it.
    async fn wait(
        &self,
        key: TaskKey,
        mut rx: tokio::sync::oneshot::Receiver<Completion>,
        host: String,
        what: &str,
        ctx: &ExecContext,
    ) -> Result<TaskOutcome, ExecError> {
        let deadline = tokio::time::Instant::now() + ctx.timeout;
        let mut backstop = tokio::time::interval(RELAY_BACKSTOP);
        backstop.reset();
        let completion = loop {
            tokio::select! {
                done = &mut rx => break done,
                () = tokio::time::sleep_until(deadline) => {
                    self.hub.abandon(key);
                    return Err(ExecError::Timeout { host, what: what.to_owned(), seconds: ctx.timeout.as_secs() });
                }
                () = ctx.cancel.cancelled() => {
                    self.hub.abandon(key);
                    return Err(ExecError::Cancelled { host, what: what.to_owned() });
                }
                _ = backstop.tick(), if self.hub.shared() => self.hub.check_key(key).await,
            }
        };
        match completion {
            Ok(Completion::Result(result)) => match result.outcome {
                TaskOutcome::Failed { error, .. } => Err(ExecError::Agent {
                    agent: host,
                    code: error.code,
                    message: error.message,
                }),
                outcome => Ok(outcome),
            },
            Ok(Completion::Lost { reason }) => Err(ExecError::AgentLost {
                agent: host,
                task: key.task_id.to_string(),
                attempt: key.attempt,
                reason,
            }),
            // The hub dropped the waiter: the key was replaced by a newer dispatch.
            Err(_) => Err(ExecError::Cancelled {
                host,
                what: what.to_owned(),
            }),
        }
    }
}

/// The files the agent gets: the lock as stored when the engine rewrote it for secrets
/// env files (the agent checks a lock against its digest, then rewrites it the same
/// way on its host), the rest as they are.
fn agent_artifacts(request: &DeployRequest) -> Vec<deploy_core::GeneratedArtifact> {
    let mut artifacts = request.artifacts.clone();
    if let Some(stored) = &request.stored_lock {
        for a in &mut artifacts {
            if a.kind == deploy_core::ArtifactKind::ComposeLock {
                *a = stored.clone();
            }
        }
    }
    artifacts
}

/// A deploy's outcome as the engine's result.
#[expect(
    clippy::result_large_err,
    reason = "a deploy's outcome, built once per task; the executor contract returns it unboxed"
)]
fn deploy_result(
    target: &Target,
    outcome: Result<TaskOutcome, ExecError>,
    previous: Option<Digest>,
) -> DeployOutcome {
    match outcome {
        Ok(TaskOutcome::Deployed {
            deployed_digest,
            previous_digest,
            changed,
            running,
            published,
        }) => Ok(Deployed {
            deployed_digest,
            previous_digest: previous_digest.or(previous),
            changed,
            running,
            published,
            agent: None,
        }),
        Ok(other) => Err(DeployFailure::new(
            unexpected(target, "deploy", &other),
            previous,
        )),
        Err(e) => Err(DeployFailure::new(e, previous)),
    }
}

fn unexpected(target: &Target, what: &str, outcome: &TaskOutcome) -> ExecError {
    let got = match outcome {
        TaskOutcome::Deployed { .. } => "deployed",
        TaskOutcome::Inspected { .. } => "inspected",
        TaskOutcome::CommandRan { .. } => "command_ran",
        TaskOutcome::Probed { .. } => "probed",
        TaskOutcome::Failed { .. } => "failed",
    };
    ExecError::Protocol {
        endpoint: format!("the agent of target `{}`", target.name),
        operation: what.to_owned(),
        detail: format!("the agent answered with outcome `{got}`"),
    }
}

#[async_trait]
impl Executor for AgentExecutor {
    /// Sends a `rollback` action for a rollback job (`request.rollback`, set by the engine)
    /// and a `deploy` action otherwise; both carry the same payload (a rollback deploys the
    /// last-known-good digest).
    async fn deploy(&self, request: &DeployRequest, ctx: &ExecContext) -> DeployOutcome {
        let task = &request.task;
        let previous = task.previous_digest.clone();
        let connection = match agent_connection(&request.target) {
            Ok(c) => c,
            Err(e) => return Err(DeployFailure::new(e, previous)),
        };
        let server = request
            .component
            .as_ref()
            .and_then(|c| c.container.image.registry().map(str::to_owned))
            .unwrap_or_else(|| "docker.io".to_owned());
        // Only a docker_host target pulls with these credentials: a compose project's
        // images are pulled by compose on the host, so the secret is neither resolved nor
        // sent for compose_host targets.
        let auth = if request.target.target_type == TargetType::DockerHost {
            match self.registry_auth(connection, server).await {
                Ok(a) => a,
                Err(e) => return Err(DeployFailure::new(e, previous)),
            }
        } else {
            None
        };
        // The application secrets the engine resolved into this request are what its log
        // redacts so far (the registry password is added below, and never stored): the
        // agent redacts them from its lines and results too.
        let secret_values = ctx.log.secrets().to_vec();
        let mut ctx = ctx.clone();
        if let Some(a) = &auth {
            ctx.log = ctx
                .log
                .with_secret(&a.password)
                .with_secret(&format!("{}:{}", a.username, a.password));
        }
        let payload = DeployPayload {
            digest: task.digest.clone(),
            component: request.component.as_ref().map(|c| ComponentPayload {
                name: c.name.clone(),
                container: c.container.clone(),
                keep_previous_running: c.keep_previous_running,
                stop_first: connection.stop_first,
            }),
            project: request.project.clone(),
            artifacts: agent_artifacts(request),
            registry_auth: auth,
            secret_values,
        };
        let key = TaskKey {
            task_id: task.id,
            attempt: task.attempt_number,
        };
        let action = if request.rollback {
            AgentAction::Rollback { deploy: payload }
        } else {
            AgentAction::Deploy { deploy: payload }
        };
        let mut agent = None;
        let outcome = self
            .run_on(&request.target, key, action, &ctx, &mut agent)
            .await;
        let mut result = deploy_result(&request.target, outcome, previous);
        match &mut result {
            Ok(d) => d.agent = agent,
            Err(f) => f.agent = agent,
        }
        result
    }

    /// The stored delivery of the task's current attempt, if an earlier process or
    /// replica dispatched it: its result when it ended, else waits for it (the agent
    /// still runs it, or its journal answers). The engine inspects the target only when
    /// no delivery was stored, so a fail-over never starts a second attempt beside one
    /// still running.
    async fn resume(
        &self,
        target: &Target,
        task: &deploy_core::DeploymentTask,
        ctx: &ExecContext,
    ) -> Option<DeployOutcome> {
        let key = TaskKey {
            task_id: task.id,
            attempt: task.attempt_number,
        };
        let rx = match self.hub.resume(key, ctx.log.clone()).await {
            Ok(Some(rx)) => rx,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(task = %task.id, error = %e, "cannot read the stored delivery of an attempt in flight; inspecting the target instead");
                return None;
            }
        };
        let host = format!("the agent of target `{}`", target.name);
        ctx.log.line(&format!(
            "resuming the wait for task {} attempt {} (dispatched before a restart or fail-over)",
            key.task_id, key.attempt
        ));
        let outcome = self.wait(key, rx, host, "deploy", ctx).await;
        Some(deploy_result(target, outcome, task.previous_digest.clone()))
    }

    async fn inspect(
        &self,
        target: &Target,
        component: &Name,
        ctx: &ExecContext,
    ) -> Result<Option<Digest>, ExecError> {
        let action = AgentAction::Inspect {
            component: component.clone(),
        };
        match self.run(target, ad_hoc_key()?, action, ctx).await? {
            TaskOutcome::Inspected { digest, .. } => Ok(digest),
            other => Err(unexpected(target, "inspect", &other)),
        }
    }

    async fn instance(
        &self,
        target: &Target,
        slot: &Name,
        ctx: &ExecContext,
    ) -> Result<Vec<deploy_core::PublishedPort>, ExecError> {
        let action = AgentAction::Inspect {
            component: slot.clone(),
        };
        match self.run(target, ad_hoc_key()?, action, ctx).await? {
            TaskOutcome::Inspected { published, .. } => Ok(published),
            other => Err(unexpected(target, "inspect", &other)),
        }
    }

    /// The agent probes on its own host: the instance's loopback is its loopback.
    async fn probe(
        &self,
        target: &Target,
        probe: &deploy_core::InstanceProbe,
        ctx: &ExecContext,
    ) -> Result<deploy_core::ProbeOutcome, ExecError> {
        let action = AgentAction::Probe {
            probe: probe.clone(),
        };
        match self.run(target, ad_hoc_key()?, action, ctx).await? {
            TaskOutcome::Probed { verdict } => Ok(verdict),
            other => Err(unexpected(target, "probe", &other)),
        }
    }

    async fn run_command(
        &self,
        target: &Target,
        command: &CommandSpec,
        ctx: &ExecContext,
    ) -> Result<CommandOutput, ExecError> {
        let action = AgentAction::HealthCommand {
            command: command.clone(),
        };
        match self.run(target, ad_hoc_key()?, action, ctx).await? {
            TaskOutcome::CommandRan {
                exit_status,
                stdout,
            } => Ok(CommandOutput {
                exit_status,
                stdout: ctx.log.redact(&stdout),
            }),
            other => Err(unexpected(target, "health_command", &other)),
        }
    }
}
