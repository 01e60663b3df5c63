//! `JobContext`: what a running job reads once (environment, targets, release, artifacts) and its tasks look up.

use std::collections::BTreeMap;

use deploy_core::{
    Component, ComponentId, DeploymentJob, Environment, GeneratedArtifact, Name, Release, Target,
    TargetId,
};
use deploy_store::{Store, StoreError};

/// The static facts of one job.
pub(crate) struct JobContext {
    pub environment: Environment,
    pub release: Release,
    pub targets: BTreeMap<TargetId, Target>,
    pub artifacts: Vec<GeneratedArtifact>,
    /// The job goes through the blue-green cut-over: a blue-green job, or the rollback
    /// of one (whose targets' traffic is switched by the proxy too).
    pub blue_green: bool,
    /// The job rolls another back (its deploys go out as rollbacks).
    pub rollback: bool,
}

impl JobContext {
    pub(crate) async fn load(store: &dyn Store, job: &DeploymentJob) -> Result<Self, StoreError> {
        let environment = store.get_environment(job.environment_id).await?;
        let release = store.get_release(job.release_id).await?;
        let blue_green = match job.rollback_of {
            Some(original) => {
                crate::bluegreen::is_blue_green(&store.get_job(original).await?.strategy)
            }
            None => crate::bluegreen::is_blue_green(&job.strategy),
        };
        let targets = store
            .list_targets(job.environment_id)
            .await?
            .into_iter()
            .map(|t| (t.id, t))
            .collect();
        Ok(Self {
            environment,
            release,
            targets,
            artifacts: job.artifacts.clone(),
            blue_green,
            rollback: job.is_rollback(),
        })
    }

    pub(crate) fn target(&self, id: TargetId) -> Result<&Target, StoreError> {
        self.targets.get(&id).ok_or_else(|| StoreError::NotFound {
            entity: "target",
            id: id.to_string(),
        })
    }

    pub(crate) fn component(&self, id: ComponentId) -> Result<&Component, StoreError> {
        self.release
            .component_by_id(id)
            .ok_or_else(|| StoreError::NotFound {
                entity: "component",
                id: id.to_string(),
            })
    }

    /// The artifacts rendered for `target` (and the job-wide ones).
    pub(crate) fn artifacts_for(&self, target: TargetId) -> Vec<GeneratedArtifact> {
        self.artifacts
            .iter()
            .filter(|a| a.target_id.is_none_or(|t| t == target))
            .cloned()
            .collect()
    }

    /// The compose project name on compose hosts: the environment's name.
    pub(crate) fn project(&self) -> &Name {
        &self.environment.name
    }

    /// What `inspect` asks about for a task: the component's container, or the compose project.
    pub(crate) fn slot_name(
        &self,
        target: &Target,
        component: Option<ComponentId>,
    ) -> Result<Name, StoreError> {
        match component {
            Some(id) => container_name(target, &self.component(id)?.name),
            None => Ok(self.project().clone()),
        }
    }
}

/// The target label whose value prefixes the container names of a docker_host
/// target (`<prefix><component>`): several targets that share one Docker Engine
/// (the end-to-end tests' sshd "hosts") keep apart containers; without it the
/// container is named after the component.
pub const CONTAINER_PREFIX_LABEL: &str = "deploy.container-prefix";

/// The container that runs `component` on `target`.
pub(crate) fn container_name(target: &Target, component: &Name) -> Result<Name, StoreError> {
    match target.labels.as_map().get(CONTAINER_PREFIX_LABEL) {
        None => Ok(component.clone()),
        Some(prefix) => {
            let full = format!("{prefix}{component}");
            Name::parse(&full).map_err(|e| StoreError::Corrupt {
                column: "targets.spec",
                value: format!(
                    "label `{CONTAINER_PREFIX_LABEL}` of target `{}`",
                    target.name
                ),
                reason: format!("container name `{full}`: {e}"),
            })
        }
    }
}
