//! `Runtime`: executes one `TaskDelivery` on this host (deploy, rollback, inspect, health_command) under its timeout, cancellable, serialized per slot.

use std::path::PathBuf;
use std::time::Duration;

use deploy_api::agent::{
    AgentAction, AgentCapability, AgentErrorCode, DeployPayload, TaskDelivery, TaskOutcome,
};
use deploy_core::{ArtifactKind, Connection, Name, Target, TargetType};
use tokio_util::sync::CancellationToken;

use crate::command;
use crate::compose::{ComposeHost, verify_artifacts};
use crate::docker::{DeploySpec, DockerConfig, DockerHost, parse_env_file};
use crate::errors::TaskError;
use crate::locks::KeyedLocks;
use crate::tasklog::TaskLog;

/// How the runtime drives the host.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    pub docker: DockerConfig,
}

/// The executors of this host: the Docker Engine and the Compose CLI, when present.
#[derive(Debug, Default)]
pub struct Runtime {
    docker: Option<DockerHost>,
    compose: Option<ComposeHost>,
    locks: KeyedLocks,
}

fn failed(error: TaskError, previous: Option<deploy_core::Digest>) -> TaskOutcome {
    TaskOutcome::Failed {
        error: error.to_wire(),
        previous_digest: previous,
    }
}

/// The agent connection of `target` (work dir, stop-first).
fn agent_connection(target: &Target) -> Result<&deploy_core::AgentConnection, TaskError> {
    match &target.connection {
        Connection::Agent(a) => Ok(a),
        other => Err(TaskError::invalid(format!(
            "use target `{}`: its connection model is `{}`, not agent",
            target.name,
            other.model().as_str()
        ))),
    }
}

impl Runtime {
    /// A runtime with the given executors (`None`: that capability is missing here).
    pub fn new(docker: Option<DockerHost>, compose: Option<ComposeHost>) -> Self {
        Self {
            docker,
            compose,
            locks: KeyedLocks::default(),
        }
    }

    /// The capabilities this runtime can serve.
    pub fn capabilities(&self) -> Vec<AgentCapability> {
        let mut caps = Vec::new();
        if self.docker.is_some() {
            caps.push(AgentCapability::Docker);
        }
        if self.compose.is_some() {
            caps.push(AgentCapability::Compose);
        }
        caps
    }

    fn docker(&self) -> Result<&DockerHost, TaskError> {
        self.docker.as_ref().ok_or_else(|| {
            TaskError::invalid("run a docker_host task: this agent has no docker capability")
        })
    }

    fn compose(&self) -> Result<&ComposeHost, TaskError> {
        self.compose.as_ref().ok_or_else(|| {
            TaskError::invalid("run a compose_host task: this agent has no compose capability (docker-compose not on PATH)")
        })
    }

    /// The slot a deploy, rollback or inspect works on: `<target>/<component or project>`.
    fn slot(target: &Target, name: &Name) -> String {
        format!("{}/{name}", target.name)
    }

    /// Executes `delivery` with its timeout; `cancel` stops it (reported `cancelled`).
    /// A docker_host deploy cut halfway is recovered (no `-next` left, the old one serving).
    pub async fn execute(
        &self,
        delivery: &TaskDelivery,
        log: &TaskLog,
        cancel: &CancellationToken,
    ) -> TaskOutcome {
        let timeout = Duration::from_millis(delivery.timeout_ms);
        let target = &delivery.target;
        // The slot lock is taken inside the timed part: waiting for it counts.
        let cut = tokio::select! {
            outcome = self.run(delivery, log) => return outcome,
            () = tokio::time::sleep(timeout) => TaskError::new(
                AgentErrorCode::Timeout,
                format!("finish {} within {} ms", delivery.action.name(), delivery.timeout_ms),
            ),
            () = cancel.cancelled() => TaskError::new(
                AgentErrorCode::Cancelled,
                format!("finish {}: the server cancelled it", delivery.action.name()),
            ),
        };
        log.agent(&cut.message);
        if let AgentAction::Deploy { deploy } | AgentAction::Rollback { deploy } = &delivery.action
            && target.target_type == TargetType::DockerHost
            && let (Some(c), Ok(docker)) = (&deploy.component, self.docker())
        {
            let _slot = self.locks.lock(&Self::slot(target, &c.name)).await;
            docker.recover(&c.name, log).await;
        }
        failed(cut, None)
    }

    async fn run(&self, delivery: &TaskDelivery, log: &TaskLog) -> TaskOutcome {
        let target = &delivery.target;
        match &delivery.action {
            AgentAction::Deploy { deploy } | AgentAction::Rollback { deploy } => {
                log.agent(&format!(
                    "{} {} on target {}",
                    delivery.action.name(),
                    deploy.digest,
                    target.name
                ));
                self.deploy(target, deploy, &delivery.key.task_id.to_string(), log)
                    .await
            }
            AgentAction::Inspect { component } => match self.inspect(target, component).await {
                Ok(digest) => TaskOutcome::Inspected { digest },
                Err(e) => failed(e, None),
            },
            AgentAction::HealthCommand { command } => match command::run(command, log).await {
                Ok((exit_status, stdout)) => TaskOutcome::CommandRan {
                    exit_status,
                    stdout,
                },
                Err(e) => failed(e, None),
            },
        }
    }

    /// The digest running for `component` (docker_host: the container; compose_host: the project).
    pub async fn inspect(
        &self,
        target: &Target,
        component: &Name,
    ) -> Result<Option<deploy_core::Digest>, TaskError> {
        let conn = agent_connection(target)?;
        let _slot = self.locks.lock(&Self::slot(target, component)).await;
        match target.target_type {
            TargetType::DockerHost => self.docker()?.running_digest(component.as_str()).await,
            TargetType::ComposeHost => Ok(self
                .compose()?
                .status(&PathBuf::from(conn.work_dir.as_str()), component)
                .await?
                .healthy_lock()),
            other => Err(TaskError::invalid(format!(
                "inspect a `{}` target: the agent serves docker_host and compose_host",
                other.as_str()
            ))),
        }
    }

    async fn deploy(
        &self,
        target: &Target,
        deploy: &DeployPayload,
        task: &str,
        log: &TaskLog,
    ) -> TaskOutcome {
        let conn = match agent_connection(target) {
            Ok(c) => c,
            Err(e) => return failed(e, None),
        };
        match target.target_type {
            TargetType::DockerHost => {
                let Some(component) = &deploy.component else {
                    return failed(
                        TaskError::invalid("deploy to a docker_host target without a component"),
                        None,
                    );
                };
                // Like the SSH executor, the image's own digest is what must run; the
                // payload's `digest` is the task's (the same for docker_host tasks).
                if let Err(e) = verify_artifacts(&deploy.artifacts) {
                    return failed(e, None);
                }
                let docker = match self.docker() {
                    Ok(d) => d,
                    Err(e) => return failed(e, None),
                };
                let env = deploy
                    .artifacts
                    .iter()
                    .find(|a| a.kind == ArtifactKind::EnvFile)
                    .map(|a| parse_env_file(&a.content))
                    .unwrap_or_default();
                let spec = DeploySpec {
                    target: &target.name,
                    task: task.to_owned(),
                    component,
                    env,
                    registry_auth: deploy.registry_auth.as_ref(),
                    stop_first: component.stop_first || conn.stop_first,
                };
                let _slot = self.locks.lock(&Self::slot(target, &component.name)).await;
                match docker.deploy(&spec, log).await {
                    Ok(d) => TaskOutcome::Deployed {
                        deployed_digest: d.deployed,
                        previous_digest: d.previous,
                        changed: d.changed,
                        running: d.running,
                    },
                    Err(f) => {
                        log.agent(&format!("deploy failed: {}", f.error.message));
                        failed(f.error, f.previous)
                    }
                }
            }
            TargetType::ComposeHost => {
                let compose = match self.compose() {
                    Ok(c) => c,
                    Err(e) => return failed(e, None),
                };
                let _slot = self.locks.lock(&Self::slot(target, &deploy.project)).await;
                let dir = PathBuf::from(conn.work_dir.as_str());
                match compose
                    .deploy(&dir, &deploy.project, &deploy.artifacts, log)
                    .await
                {
                    Ok(d) => TaskOutcome::Deployed {
                        deployed_digest: d.lock,
                        previous_digest: d.previous,
                        changed: d.changed,
                        running: d.running,
                    },
                    Err((e, previous)) => {
                        log.agent(&format!("deploy failed: {}", e.message));
                        failed(e, previous)
                    }
                }
            }
            other => failed(
                TaskError::invalid(format!(
                    "deploy to a `{}` target: the agent serves docker_host and compose_host",
                    other.as_str()
                )),
                None,
            ),
        }
    }
}
