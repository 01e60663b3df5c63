//! `Target`: one deployable place (a Docker host, a Compose host, an ECS service, …) with its type, connection and health check.

use serde::{Deserialize, Serialize};

use crate::connection::{ApiConnection, Connection, ExecutionModel};
use crate::errors::ValidationError;
use crate::health::HealthCheckConfig;
use crate::ids::{EnvironmentId, TargetId};
use crate::name::Name;
use crate::net::HttpUrl;
use crate::timestamp::Timestamp;
use crate::values::Labels;

/// What runs on the target, which decides how a deploy is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetType {
    /// Plain Docker Engine: one container per component.
    DockerHost,
    /// Docker Compose: one project per target, driven by the compose lock.
    ComposeHost,
    /// An AWS ECS service.
    EcsService,
    /// A HashiCorp Nomad job.
    NomadJob,
    /// A Kubernetes Deployment.
    K8sDeployment,
    /// A Windows service on a Windows server.
    WindowsService,
}

impl TargetType {
    /// Every target type, for tables and tests.
    pub const ALL: [TargetType; 6] = [
        Self::DockerHost,
        Self::ComposeHost,
        Self::EcsService,
        Self::NomadJob,
        Self::K8sDeployment,
        Self::WindowsService,
    ];

    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DockerHost => "docker_host",
            Self::ComposeHost => "compose_host",
            Self::EcsService => "ecs_service",
            Self::NomadJob => "nomad_job",
            Self::K8sDeployment => "k8s_deployment",
            Self::WindowsService => "windows_service",
        }
    }

    /// True when a deploy of this type gets one task per target instead of one per component.
    pub fn deploys_as_one_bundle(self) -> bool {
        matches!(self, Self::ComposeHost)
    }

    /// The execution models that can carry out this target type.
    pub fn supported_models(self) -> &'static [ExecutionModel] {
        match self {
            Self::DockerHost => &[
                ExecutionModel::Agent,
                ExecutionModel::Ssh,
                ExecutionModel::Winrm,
            ],
            Self::ComposeHost => &[ExecutionModel::Agent, ExecutionModel::Ssh],
            Self::WindowsService => &[ExecutionModel::Winrm],
            Self::EcsService | Self::NomadJob | Self::K8sDeployment => &[ExecutionModel::Api],
        }
    }
}

/// A place that receives deployments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub id: TargetId,
    pub environment_id: EnvironmentId,
    pub name: Name,
    pub target_type: TargetType,
    pub connection: Connection,
    /// Base URL for `http` health checks, e.g. `http://10.0.0.5:8080`.
    #[serde(default)]
    pub health_endpoint: Option<HttpUrl>,
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    #[serde(default)]
    pub labels: Labels,
    /// A disabled target is skipped by new jobs (their plan lists it as skipped); jobs
    /// already running keep it.
    #[serde(default)]
    pub disabled: bool,
    /// Bumped by every update: a write names the version it read (stale: 409).
    #[serde(default)]
    pub version: u64,
    pub created_at: Timestamp,
}

impl Target {
    /// The execution model, read off the connection config.
    pub fn execution_model(&self) -> ExecutionModel {
        self.connection.model()
    }

    /// Checks that type, connection and health check fit together.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let model = self.execution_model();
        if !self.target_type.supported_models().contains(&model) {
            let supported: Vec<_> = self
                .target_type
                .supported_models()
                .iter()
                .map(|m| m.as_str())
                .collect();
            return Err(ValidationError::new(
                format!("target `{}`.connection.model", self.name),
                model.as_str(),
                format!(
                    "one of {} for a {}",
                    supported.join(", "),
                    self.target_type.as_str()
                ),
            ));
        }
        if let Connection::Ssh(ssh) = &self.connection
            && ssh.port == 0
        {
            return Err(ValidationError::new(
                format!("target `{}`.connection.port", self.name),
                ssh.port,
                "a TCP port from 1 to 65535",
            ));
        }
        if let Connection::Api(api) = &self.connection {
            let platform_type = match api {
                ApiConnection::Ecs { .. } => TargetType::EcsService,
                ApiConnection::Nomad { .. } => TargetType::NomadJob,
                ApiConnection::Kubernetes { .. } => TargetType::K8sDeployment,
            };
            if platform_type != self.target_type {
                return Err(ValidationError::new(
                    format!("target `{}`.target_type", self.name),
                    self.target_type.as_str(),
                    format!("{} for this API platform", platform_type.as_str()),
                ));
            }
        }
        self.connection.validate()?;
        if self.target_type == TargetType::WindowsService {
            return Err(ValidationError::new(
                format!("target `{}`.target_type", self.name),
                self.target_type.as_str(),
                "a target type that can be deployed: windows_service deploys are not implemented yet (a Windows host running Docker is a docker_host over winrm)",
            ));
        }
        if let Some(check) = &self.health_check {
            check.validate()?;
            self.check_health_fits(&check.check)?;
        }
        Ok(())
    }

    /// Refuses a health check that cannot work on this kind of target, naming why.
    fn check_health_fits(&self, check: &crate::health::HealthCheck) -> Result<(), ValidationError> {
        use crate::health::HealthCheck;
        let api = self.execution_model() == ExecutionModel::Api;
        let field = format!("target `{}`.health_check.check.type", self.name);
        match check {
            HealthCheck::Command { .. } if api => Err(ValidationError::new(
                field,
                "command",
                format!(
                    "http or tcp on a {} (deployd has no shell on an orchestrator's instances)",
                    self.target_type.as_str()
                ),
            )),
            HealthCheck::Command {
                in_container: true, ..
            } if self.target_type != TargetType::DockerHost => Err(ValidationError::new(
                format!("target `{}`.health_check.check.in_container", self.name),
                "true",
                "false on a target that is not a docker_host (a command runs inside the container only there)",
            )),
            HealthCheck::Http { .. } | HealthCheck::Tcp { .. }
                if api && self.health_endpoint.is_none() =>
            {
                Err(ValidationError::new(
                    format!("target `{}`.health_endpoint", self.name),
                    "(none)",
                    format!(
                        "a base URL (the service's load balancer) for an http or tcp check on a {}: deployd does not see its instances' addresses",
                        self.target_type.as_str()
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{HealthCheck, HealthCheckConfig};
    use crate::testing::*;

    #[test]
    fn every_type_accepts_exactly_its_models() {
        for t in TargetType::ALL {
            for (model, connection) in sample_connections() {
                let mut target = ssh_target(1);
                target.target_type = t;
                target.connection = connection;
                let accepted = target.validate().is_ok();
                let api_matches = match &target.connection {
                    Connection::Api(ApiConnection::Kubernetes { .. }) => {
                        t == TargetType::K8sDeployment
                    }
                    _ => true,
                };
                // windows_service is refused whatever its connection: it cannot deploy yet.
                assert_eq!(
                    accepted,
                    t.supported_models().contains(&model)
                        && api_matches
                        && t != TargetType::WindowsService,
                    "{t:?} with {model:?}"
                );
            }
        }
    }

    #[test]
    fn mismatch_error_names_target_and_choices() {
        let mut t = ssh_target(1);
        t.target_type = TargetType::WindowsService;
        assert_eq!(
            t.validate().unwrap_err().to_string(),
            "target `host-1`.connection.model is `ssh`; expected one of winrm for a windows_service"
        );
    }

    #[test]
    fn health_checks_that_cannot_work_on_the_target_are_refused() {
        let http = HealthCheckConfig::new(HealthCheck::Http {
            path: "/health".into(),
            expected_status: 200,
            expected_body: None,
            port: None,
        });
        // A docker host: the check aims at the new instance, no endpoint needed.
        let mut t = ssh_target(1);
        t.health_check = Some(http.clone());
        t.health_endpoint = None;
        assert!(t.validate().is_ok());
        // An orchestrator's instances have no address deployd sees: an endpoint is needed.
        let mut k8s = t.clone();
        k8s.target_type = TargetType::K8sDeployment;
        k8s.connection = sample_connections()
            .into_iter()
            .find(|(m, c)| {
                *m == ExecutionModel::Api
                    && matches!(c, Connection::Api(ApiConnection::Kubernetes { .. }))
            })
            .unwrap()
            .1;
        assert_eq!(
            k8s.validate().unwrap_err().field,
            "target `host-1`.health_endpoint"
        );
        k8s.health_endpoint = Some(HttpUrl::parse("http://lb:8080").unwrap());
        assert!(k8s.validate().is_ok());
        let command = HealthCheck::Command {
            command: crate::CommandSpec::new(vec!["true".into()]).unwrap(),
            in_container: false,
        };
        k8s.health_check = Some(HealthCheckConfig::new(command.clone()));
        assert_eq!(
            k8s.validate().unwrap_err().to_string(),
            "target `host-1`.health_check.check.type is `command`; expected http or tcp on a k8s_deployment (deployd has no shell on an orchestrator's instances)"
        );
        let mut compose = t.clone();
        compose.target_type = TargetType::ComposeHost;
        compose.health_check = Some(HealthCheckConfig::new(HealthCheck::Command {
            command: crate::CommandSpec::new(vec!["true".into()]).unwrap(),
            in_container: true,
        }));
        assert!(compose.validate().is_err());
        let mut windows = t;
        windows.target_type = TargetType::WindowsService;
        windows.connection = sample_connections()
            .into_iter()
            .find(|(m, _)| *m == ExecutionModel::Winrm)
            .unwrap()
            .1;
        assert!(
            windows
                .validate()
                .unwrap_err()
                .to_string()
                .contains("windows_service deploys are not implemented yet")
        );
    }

    #[test]
    fn target_round_trips_through_json() {
        let t = ssh_target(3);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Target>(&json).unwrap(), t);
    }
}
