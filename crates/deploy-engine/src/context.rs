//! `JobContext`: what a running job reads once (environment, targets, release, artifacts) and its tasks look up.

use std::collections::BTreeMap;

use deploy_core::{
    ArtifactKind, Component, ComponentId, ContainerSpec, DeploymentJob, Environment,
    GeneratedArtifact, Name, Release, Target, TargetId,
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

    /// The container `component` runs on docker_host `target` at `digest`: the service of
    /// that component in one of the target's stored compose locks (the job's own, or,
    /// for a rollback, the restored job's), else, when the job rendered no lock for the
    /// target (a release without a service definition), the image with nothing declared.
    pub(crate) fn container_spec(
        &self,
        target: &Target,
        component: &Component,
        digest: &deploy_core::Digest,
    ) -> Result<ContainerSpec, String> {
        let locks: Vec<&GeneratedArtifact> = self
            .artifacts
            .iter()
            .filter(|a| a.target_id == Some(target.id) && a.kind == ArtifactKind::ComposeLock)
            .collect();
        if locks.is_empty() {
            return Ok(ContainerSpec::from_image(component.image.clone()));
        }
        let project = docker_project(target, &self.environment.name).map_err(|e| e.to_string())?;
        for lock in locks {
            let services =
                deploy_artifacts::container_specs(lock.content.as_bytes(), project.as_str())
                    .map_err(|e| {
                        format!("read the service definition in `{}`: {e}", lock.file_name)
                    })?;
            if let Some(svc) = services
                .into_iter()
                .find(|s| s.component == component.name && s.spec.image.digest() == digest)
            {
                return Ok(svc.spec);
            }
        }
        Err(format!(
            "find the service definition of component `{}` at {digest} for target `{}`: no stored compose lock of the job has it",
            component.name, target.name
        ))
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

/// The project of a docker_host target: the prefix of the volumes and networks its
/// template does not name itself (`<project>_<key>`, as Compose names them), so that a
/// service keeps its volumes whether it runs on a docker_host or a compose_host
/// target. The environment's name, after the container prefix when the target has one.
pub(crate) fn docker_project(target: &Target, environment: &Name) -> Result<Name, StoreError> {
    container_name(target, environment)
}

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
