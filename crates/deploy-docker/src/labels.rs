//! Labels the docker_host sequence writes on the containers it starts, and Compose's own that compose_host reads: one definition for every transport and the agent.

/// The component (docker_host) or project (compose_host) name.
pub const COMPONENT: &str = "stella.component";
/// The image digest the container was started from.
pub const DIGEST: &str = "stella.digest";
/// The target the container belongs to.
pub const TARGET: &str = "stella.target";
/// The task that started it.
pub const TASK: &str = "stella.task";
/// The sha256 of the container's definition (`ContainerSpec` without our labels):
/// the same digest with another definition is another deployment.
pub const CONFIG: &str = "stella.config";

/// The Compose CLI's project label, read by `inspect` on compose_host targets.
pub const COMPOSE_PROJECT: &str = "com.docker.compose.project";
/// The service a Compose container belongs to.
pub const COMPOSE_SERVICE: &str = "com.docker.compose.service";
