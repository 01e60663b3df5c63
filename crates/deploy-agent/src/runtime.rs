//! `Runtime`: executes one `TaskDelivery` on this host (deploy, rollback, inspect, health_command, probe) under its timeout, cancellable, serialized per slot.

use std::path::PathBuf;
use std::time::Duration;

use deploy_api::agent::{
    AgentAction, AgentCapability, AgentErrorCode, DeployPayload, TaskDelivery, TaskOutcome,
};
use deploy_core::{Connection, Name, Target, TargetType};
use tokio_util::sync::CancellationToken;

use crate::command;
use crate::compose::{ComposeHost, verify_artifacts};
use crate::docker::{DeploySpec, DockerConfig, DockerHost};
use crate::errors::TaskError;
use crate::locks::KeyedLocks;
use crate::tasklog::TaskLog;

/// Longest recovery of a cut docker_host deploy (the engine may be what hangs).
pub const RECOVER_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// Where targets without an explicit `work_dir` keep their files (one directory per
    /// target): `<state dir>/work`, set by [`crate::Agent::connect`].
    work_root: Option<PathBuf>,
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
            work_root: None,
        }
    }

    /// This runtime with `root` as the parent of default work dirs, unless one is set.
    pub fn with_default_work_root(mut self, root: PathBuf) -> Self {
        self.work_root.get_or_insert(root);
        self
    }

    /// The work dir of `conn`'s target: its explicit `work_dir`, else `<work root>/<target>`.
    /// The bool is true for the default (created on use).
    fn work_dir(
        &self,
        target: &Target,
        conn: &deploy_core::AgentConnection,
    ) -> Result<(PathBuf, bool), TaskError> {
        if let Some(dir) = &conn.work_dir {
            return Ok((PathBuf::from(dir.as_str()), false));
        }
        match &self.work_root {
            Some(root) => Ok((root.join(target.name.as_str()), true)),
            None => Err(TaskError::invalid(format!(
                "find the work dir of target `{}`: it sets no work_dir and this agent has no state dir for the default; expected an explicit work_dir",
                target.name
            ))),
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

    /// The slot a deploy, rollback or inspect works on: what the host names after it,
    /// `docker:<container>` or `compose:<project>`. Not per target: two targets on one host
    /// with the same component share the container names (`<name>`, `-next`, `-previous`),
    /// so their swaps must not interleave (the second then finds the first's container
    /// and refuses it by its `stella.target` label).
    fn slot(target: &Target, name: &Name) -> String {
        match target.target_type {
            TargetType::ComposeHost => format!("compose:{name}"),
            _ => Self::docker_slot(name),
        }
    }

    fn docker_slot(container: &Name) -> String {
        format!("docker:{container}")
    }

    /// Executes `delivery` with its timeout; `cancel` stops it (reported `cancelled`).
    /// A docker_host deploy cut halfway is recovered (no `-next` left, the old one serving).
    /// A failure's message goes through the task's redactor: engine and registry errors
    /// may quote what they were given (a registry password among it).
    pub async fn execute(
        &self,
        delivery: &TaskDelivery,
        log: &TaskLog,
        cancel: &CancellationToken,
    ) -> TaskOutcome {
        match self.execute_unredacted(delivery, log, cancel).await {
            TaskOutcome::Failed {
                mut error,
                previous_digest,
            } => {
                error.message = log.redactor().apply(&error.message);
                TaskOutcome::Failed {
                    error,
                    previous_digest,
                }
            }
            other => other,
        }
    }

    async fn execute_unredacted(
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
            // Bounded: the engine that made the task time out may not answer the recovery
            // either, and the slot lock must not be held forever.
            let recovered = tokio::time::timeout(RECOVER_TIMEOUT, async {
                let _slot = self.locks.lock(&Self::slot(target, &c.name)).await;
                docker.recover(&c.name, &target.name, log).await;
            })
            .await;
            if recovered.is_err() {
                log.agent(&format!(
                    "recovery of {} gave up after {} s (the Docker Engine does not answer)",
                    c.name,
                    RECOVER_TIMEOUT.as_secs()
                ));
            }
        }
        failed(cut, None)
    }

    /// At start, for a docker_host deploy or rollback an agent crash cut: the same
    /// recovery as after a cancel (no `-next` left, `<container>` back and running),
    /// under the slot lock and bounded by [`RECOVER_TIMEOUT`]. Returns what it did.
    pub async fn repair(&self, container: &Name, target: &Name) -> Vec<String> {
        let Ok(docker) = self.docker() else {
            return vec!["no docker capability: nothing repaired".to_owned()];
        };
        let log = TaskLog::new(
            "repair",
            crate::redact::Redactor::new(),
            std::sync::Arc::new(tokio::sync::Notify::new()),
        );
        let slot = Self::docker_slot(container);
        tokio::time::timeout(RECOVER_TIMEOUT, async {
            let _slot = self.locks.lock(&slot).await;
            docker.recover(container, target, &log).await
        })
        .await
        .unwrap_or_else(|_| {
            vec![format!(
                "gave up after {} s: the Docker Engine does not answer",
                RECOVER_TIMEOUT.as_secs()
            )]
        })
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
                Ok((digest, published)) => TaskOutcome::Inspected { digest, published },
                Err(e) => failed(e, None),
            },
            AgentAction::Probe { probe } => TaskOutcome::Probed {
                verdict: Self::probe(probe).await,
            },
            AgentAction::HealthCommand { command } => {
                match self.health_command(target, command, log).await {
                    Ok((exit_status, stdout)) => TaskOutcome::CommandRan {
                        exit_status,
                        stdout,
                    },
                    Err(e) => failed(e, None),
                }
            }
        }
    }

    async fn health_command(
        &self,
        target: &Target,
        command: &deploy_core::CommandSpec,
        log: &TaskLog,
    ) -> Result<(u32, String), TaskError> {
        let conn = agent_connection(target)?;
        let (dir, default) = self.work_dir(target, conn)?;
        // The default work dir may not exist yet (a docker_host target never writes to it):
        // made like a deploy would. An explicit one must exist.
        let dir = if default {
            tokio::task::spawn_blocking(move || crate::files::prepare_work_dir(&dir))
                .await
                .map_err(|e| TaskError::host("prepare the work dir", e))??
        } else {
            dir
        };
        command::run(command, &dir, log).await
    }

    /// A probe of an instance on this host: its loopback is ours.
    async fn probe(probe: &deploy_core::InstanceProbe) -> deploy_core::ProbeOutcome {
        let local = deploy_health::local_socket(&probe.address);
        deploy_health::probe_tcp(
            &local.ip().to_string(),
            local.port(),
            &local.to_string(),
            probe,
        )
        .await
    }

    /// The digest running for `component` (docker_host: the container; compose_host: the
    /// project) and where it publishes its ports.
    pub async fn inspect(
        &self,
        target: &Target,
        component: &Name,
    ) -> Result<(Option<deploy_core::Digest>, Vec<deploy_core::PublishedPort>), TaskError> {
        let conn = agent_connection(target)?;
        let _slot = self.locks.lock(&Self::slot(target, component)).await;
        match target.target_type {
            TargetType::DockerHost => {
                self.docker()?
                    .instance(component.as_str(), &target.name)
                    .await
            }
            TargetType::ComposeHost => {
                let (dir, _) = self.work_dir(target, conn)?;
                let status = self.compose()?.status(&dir, component).await?;
                Ok((status.healthy_lock(), status.published))
            }
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
                let spec = DeploySpec {
                    target: &target.name,
                    task: task.to_owned(),
                    component,
                    registry_auth: deploy.registry_auth.as_ref(),
                    stop_first: component.stop_first || conn.stop_first,
                };
                let _slot = self.locks.lock(&Self::slot(target, &component.name)).await;
                match docker.deploy(&spec, log).await {
                    Ok(d) => TaskOutcome::Deployed {
                        running: [(component.name.to_string(), d.digest.clone())].into(),
                        deployed_digest: d.digest,
                        previous_digest: d.previous,
                        changed: d.changed,
                        published: d.published,
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
                let dir = match self.work_dir(target, conn) {
                    Ok((dir, _)) => dir,
                    Err(e) => return failed(e, None),
                };
                match compose
                    .deploy(&dir, &deploy.project, &deploy.artifacts, log)
                    .await
                {
                    Ok(d) => TaskOutcome::Deployed {
                        deployed_digest: d.lock,
                        previous_digest: d.previous,
                        changed: d.changed,
                        running: d.running,
                        published: d.published,
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

#[cfg(test)]
mod tests {
    use super::*;
    use deploy_core::testing::{name, ssh_target};

    #[test]
    fn the_slot_is_the_host_name_not_the_target() {
        let (mut a, mut b) = (ssh_target(1), ssh_target(2));
        a.target_type = TargetType::DockerHost;
        b.target_type = TargetType::DockerHost;
        b.name = name("other");
        let web = name("web");
        assert_eq!(Runtime::slot(&a, &web), Runtime::slot(&b, &web));
        b.target_type = TargetType::ComposeHost;
        assert_ne!(Runtime::slot(&a, &web), Runtime::slot(&b, &web));
    }
}
