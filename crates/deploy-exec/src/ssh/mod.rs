//! The SSH executor: russh sessions, host key policy, SFTP uploads, the Docker Engine API forwarded over the connection, docker_host and compose_host deploys.

mod compose_host;
mod config;
mod docker_api;
mod executor;
mod files;
mod host_key;
mod session;

pub use config::SshExecutorConfig;
pub use docker_api::{DOCKER_SOCKET, docker_over_ssh};
pub use executor::SshExecutor;
pub use files::{CheckedDir, FILE_MODE, RemoteFiles, WORK_DIR_MODE, first_temp_name};
pub use host_key::{HostKeyCheck, fingerprint_of};
pub use session::{ChannelStream, RemoteOutput, SshAuth, SshSession};
