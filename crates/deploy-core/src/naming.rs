//! The names deploy puts on Docker objects, defined once: the `stella.*` container labels, the Compose labels read back, and the `-next` / `-previous` names of a docker_host swap.
//!
//! The renderer (deploy-artifacts), the docker_host sequence (deploy-docker), the
//! executors (deploy-exec) and the agent all read and write these; a second spelling
//! anywhere would make one side miss what the other wrote.

use crate::Name;

/// The labels on containers and compose services.
pub mod labels {
    /// Every label deploy writes starts with this; a user's label may not, and a
    /// container's identity leaves these out (they name the job, not what runs).
    pub const PREFIX: &str = "stella.";

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

    /// The release a rendered compose service belongs to.
    pub const RELEASE_ID: &str = "stella.release.id";
    /// The release component a rendered compose service runs.
    pub const COMPONENT_NAME: &str = "stella.component.name";
    /// The job's timestamp on a rendered compose service.
    pub const DEPLOYED_AT: &str = "stella.deployed.at";

    /// The Compose CLI's project label, read by `inspect` on compose_host targets.
    pub const COMPOSE_PROJECT: &str = "com.docker.compose.project";
    /// The service a Compose container belongs to.
    pub const COMPOSE_SERVICE: &str = "com.docker.compose.service";

    /// True for a label deploy owns (see [`PREFIX`]).
    pub fn is_ours(key: &str) -> bool {
        key.starts_with(PREFIX)
    }
}

/// The kept previous container of `name` (the old one after a swap, blue in blue-green).
pub fn previous_name(name: &Name) -> String {
    format!("{name}-previous")
}

/// The container being started for `name`, before the swap.
pub fn next_name(name: &Name) -> String {
    format!("{name}-next")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_names_and_our_labels() {
        let web = Name::parse("web").unwrap();
        assert_eq!(next_name(&web), "web-next");
        assert_eq!(previous_name(&web), "web-previous");
        for key in [
            labels::COMPONENT,
            labels::DIGEST,
            labels::TARGET,
            labels::TASK,
            labels::CONFIG,
            labels::RELEASE_ID,
            labels::COMPONENT_NAME,
            labels::DEPLOYED_AT,
        ] {
            assert!(labels::is_ours(key), "{key}");
        }
        assert!(!labels::is_ours(labels::COMPOSE_PROJECT));
        assert!(!labels::is_ours("app.stella.x"));
    }
}
