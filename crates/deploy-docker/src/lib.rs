//! deploy-docker: the docker_host deploy sequence, written once and carried out by every transport.
//!
//! [`DockerApi`] is the list of steps (inspect, pull, create, start, rename, stop,
//! …), one request each; [`DockerHost`] is the sequence over them (no-op, instant
//! revert, stop-first or start-first swap, recovery). Transports implement the steps:
//! [`BollardApi`] over the Docker Engine API, used by the agent on its local socket
//! and by the SSH executor on the socket it forwards over the SSH connection; the
//! WinRM executor runs them as Docker CLI commands ([`create_argv`]). A container is
//! the same whichever way it was started: [`create_body`] and [`create_argv`] come
//! from one `ContainerSpec`.

mod api;
mod bollard_api;
mod create;
mod identity;
mod sequence;

pub use api::{Container, DockerApi, DockerError, DockerErrorKind, Health, PullAuth, StepLog};
pub use bollard_api::{BollardApi, PULL_TIMEOUT, container_of, detail, pull_error};
pub use create::{create_argv, create_body, env_file, extra_networks};
pub use identity::config_digest;
pub use sequence::{
    DeploySpec, Deployed, DockerHost, Failed, RECOVER_TIMEOUT, Running, SequenceConfig, running_of,
};
