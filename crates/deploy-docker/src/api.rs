//! `DockerApi`: the steps of a docker_host deploy, one method each, that a transport carries out (the Engine API over a socket, or the Docker CLI); `Container`: what the sequence needs to know of a container.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use deploy_core::{ContainerSpec, ImageRef, NetworkAttachment, PublishedPort};

/// Credentials for a registry that needs them, passed to a pull.
#[derive(Clone, PartialEq, Eq)]
pub struct PullAuth {
    pub server: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for PullAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullAuth")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .finish()
    }
}

/// The health of a container whose image or definition has a healthcheck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}

/// What the sequence reads of one container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Container {
    pub id: String,
    pub running: bool,
    pub restarting: bool,
    pub restart_count: u64,
    /// `None`: no healthcheck.
    pub health: Option<Health>,
    /// `running`, `exited`, … as the engine says it.
    pub status: String,
    pub exit_code: i64,
    pub labels: BTreeMap<String, String>,
    /// Ports published now (a running container).
    pub published: Vec<PublishedPort>,
    /// Container ports that its definition publishes (`8080/tcp`), running or not.
    pub declared_ports: Vec<String>,
}

impl Container {
    /// Runs, is not restarting and has not restarted.
    pub fn steady(&self) -> bool {
        self.running && !self.restarting && self.restart_count == 0
    }

    /// A short account of its state, for errors.
    pub fn describe_state(&self) -> String {
        format!("status {}, exit code {}", self.status, self.exit_code)
    }
}

/// How a failed step can be told apart, for the caller's retry decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerErrorKind {
    /// The engine (or the way to it) did not answer or answered 5xx: a retry may help.
    Unavailable,
    /// The registry refused the pull (credentials, a missing image): it stays refused.
    PullRefused,
    /// The pull failed on the way (network): a retry may help.
    PullFailed,
    /// The new container did not start or did not stay up: the release is broken here.
    NotRunning,
    /// The request does not fit this host (a name held by another target, a conflict).
    Invalid,
}

impl DockerErrorKind {
    /// True when trying the same step again may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Unavailable | Self::PullFailed)
    }
}

/// A step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DockerError {
    pub kind: DockerErrorKind,
    /// Reads well after "failed to …"; never holds a secret.
    pub message: String,
}

impl DockerError {
    pub fn new(kind: DockerErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The engine did not answer (or answered with a server error) for `what`.
    pub fn unavailable(what: &str, e: impl std::fmt::Display) -> Self {
        Self::new(DockerErrorKind::Unavailable, format!("{what}: {e}"))
    }

    /// The request does not fit this host.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(DockerErrorKind::Invalid, message)
    }

    /// The container did not start or did not stay up.
    pub fn not_running(message: impl Into<String>) -> Self {
        Self::new(DockerErrorKind::NotRunning, message)
    }
}

/// Where log lines of a step go (the task log of the executor or of the agent).
pub trait StepLog: Send + Sync {
    /// A line about what the sequence does.
    fn step(&self, text: &str);
    /// Output of a container (why it did not start).
    fn output(&self, text: &str);
}

/// The Docker operations the sequence is made of. Each is one request to the engine
/// (or one CLI command); names are container names or ids.
#[async_trait]
pub trait DockerApi: Send + Sync {
    /// The container called `name`, if it exists.
    async fn inspect(&self, name: &str) -> Result<Option<Container>, DockerError>;
    /// True when the engine has `image`.
    async fn image_present(&self, image: &ImageRef) -> Result<bool, DockerError>;
    /// Pulls `image` (by digest), progress summaries to `log`.
    async fn pull(
        &self,
        image: &ImageRef,
        auth: Option<&PullAuth>,
        log: &dyn StepLog,
    ) -> Result<(), DockerError>;
    /// Creates network `net` unless it exists (an external one must exist).
    async fn ensure_network(&self, net: &NetworkAttachment) -> Result<(), DockerError>;
    /// Creates volume `name` unless it exists (an external one must exist).
    async fn ensure_volume(
        &self,
        name: &str,
        driver: Option<&str>,
        driver_opts: &BTreeMap<String, String>,
        external: bool,
    ) -> Result<(), DockerError>;
    /// Creates container `name` from `spec` with `labels` added to its own, joined to
    /// every network of the spec; not started.
    async fn create(
        &self,
        name: &str,
        spec: &ContainerSpec,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), DockerError>;
    /// Starts `name` (already running is fine).
    async fn start(&self, name: &str) -> Result<(), DockerError>;
    async fn rename(&self, from: &str, to: &str) -> Result<(), DockerError>;
    /// Removes `name` by force (missing is fine).
    async fn remove(&self, name: &str) -> Result<(), DockerError>;
    /// Stops `name`, waiting up to `grace` before the kill (stopped or missing is fine).
    async fn stop(&self, name: &str, grace: Duration) -> Result<(), DockerError>;
    /// Stops container `id` without waiting: its grace period is on nobody's path.
    /// The stop goes on in the engine if this process goes away.
    async fn stop_in_background(&self, id: &str, grace: Duration);
    /// Kills `name` at once (not running or missing is fine).
    async fn kill(&self, name: &str) -> Result<(), DockerError>;
    /// The last `lines` lines of `name`'s output.
    async fn logs_tail(&self, name: &str, lines: usize) -> Result<String, DockerError>;
}
