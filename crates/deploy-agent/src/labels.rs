//! Container labels written and read by the agent.
//!
//! These MUST match `deploy_exec::labels` (crates/deploy-exec/src/executor.rs): the server
//! and the other executors read the same labels. They are repeated here rather than
//! imported because depending on deploy-exec would pull russh and the API executors
//! into the agent binary.

/// The component (docker_host) or project (compose_host) name.
pub const COMPONENT: &str = "stella.component";
/// The image digest the container was started from.
pub const DIGEST: &str = "stella.digest";
/// The target the container belongs to.
pub const TARGET: &str = "stella.target";
/// The task that started it.
pub const TASK: &str = "stella.task";

/// The Compose CLI's own labels, read by `inspect` on compose_host targets.
pub const COMPOSE_PROJECT: &str = "com.docker.compose.project";
/// The service a Compose container belongs to.
pub const COMPOSE_SERVICE: &str = "com.docker.compose.service";
