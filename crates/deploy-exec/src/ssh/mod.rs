//! The SSH executor: russh sessions, host key policy, SFTP uploads, docker_host and compose_host deploys.

mod compose_host;
mod config;
pub(crate) mod docker_host;
mod executor;
mod host_key;
mod session;

pub use config::SshExecutorConfig;
pub use executor::SshExecutor;
pub use host_key::{HostKeyCheck, fingerprint_of};
pub use session::{RemoteOutput, SshAuth, SshSession};
