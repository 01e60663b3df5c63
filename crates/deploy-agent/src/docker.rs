//! docker_host on this host: the shared sequence (deploy-docker) over the Docker Engine API on the local socket, its errors as the agent protocol's codes.
//!
//! The sequence itself (no-op, instant revert, stop-first or start-first swap,
//! recovery) lives in deploy-docker, where the SSH executor runs the same code over
//! a socket forwarded through its connection; only the transport and the error
//! codes are the agent's.

use std::path::Path;
use std::time::Duration;

use bollard::Docker;
use deploy_api::agent::{AgentErrorCode, ComponentPayload, LogStream, RegistryAuth};
use deploy_core::{Digest, Name, PublishedPort};
use deploy_docker::{
    BollardApi, DeploySpec as SequenceSpec, Deployed, DockerError, DockerErrorKind,
    DockerHost as Sequence, PullAuth, StepLog,
};

use crate::errors::TaskError;
use crate::tasklog::TaskLog;

pub use deploy_docker::SequenceConfig as DockerConfig;

/// bollard's per-request timeout for everything but a pull: an engine that stops
/// answering fails the call in a minute instead of holding the slot lock (and, during a
/// recovery, nothing else bounds it).
pub const ENGINE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest connect (version negotiation and ping) at start-up: a hung engine must not
/// stall the agent before it even registers.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// What one docker_host deploy is asked to do.
#[derive(Debug, Clone)]
pub struct DeploySpec<'a> {
    pub target: &'a Name,
    pub task: String,
    pub component: &'a ComponentPayload,
    pub registry_auth: Option<&'a RegistryAuth>,
    /// The component's or the target's `stop_first`.
    pub stop_first: bool,
}

/// A failed deploy and what ran before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployFailure {
    pub error: TaskError,
    pub previous: Option<Digest>,
}

/// The agent protocol's code for a failed step.
pub fn task_error(e: DockerError) -> TaskError {
    let code = match e.kind {
        DockerErrorKind::Unavailable => AgentErrorCode::DockerUnavailable,
        DockerErrorKind::PullRefused => AgentErrorCode::PullRefused,
        DockerErrorKind::PullFailed => AgentErrorCode::PullFailed,
        DockerErrorKind::NotRunning => AgentErrorCode::StartFailed,
        DockerErrorKind::Invalid => AgentErrorCode::InvalidPayload,
    };
    TaskError::new(code, e.message)
}

impl StepLog for TaskLog {
    fn step(&self, text: &str) {
        self.agent(text);
    }

    fn output(&self, text: &str) {
        self.line(LogStream::Stderr, text);
    }
}

/// The local Docker Engine.
#[derive(Debug, Clone)]
pub struct DockerHost {
    api: BollardApi,
    config: DockerConfig,
}

impl DockerHost {
    /// Connects to the engine on `socket` and negotiates the API version (the engine may be
    /// older than bollard's default API version). Bounded by [`CONNECT_TIMEOUT`].
    pub async fn connect(socket: &Path, config: DockerConfig) -> Result<Self, TaskError> {
        let path = socket.display().to_string();
        let connect = async {
            let docker = Docker::connect_with_unix(
                &path,
                ENGINE_TIMEOUT.as_secs(),
                bollard::API_DEFAULT_VERSION,
            )
            .map_err(|e| TaskError::docker(&format!("connect to the Docker socket {path}"), e))?
            .negotiate_version()
            .await
            .map_err(|e| TaskError::docker(&format!("reach the Docker Engine on {path}"), e))?;
            docker
                .ping()
                .await
                .map_err(|e| TaskError::docker(&format!("ping the Docker Engine on {path}"), e))?;
            Ok::<_, TaskError>(docker)
        };
        let docker = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| {
                TaskError::docker(
                    &format!("reach the Docker Engine on {path}"),
                    format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                )
            })??;
        Ok(Self {
            api: BollardApi::new(docker),
            config,
        })
    }

    /// The bollard client (for tests and the compose status).
    pub fn client(&self) -> &Docker {
        self.api.client()
    }

    fn sequence(&self) -> Sequence<'_> {
        Sequence {
            api: &self.api,
            config: self.config,
        }
    }

    /// What container `name` runs (if it runs) and where it publishes its ports;
    /// refused when `name` belongs to another target than `target`.
    pub async fn instance(
        &self,
        name: &str,
        target: &Name,
    ) -> Result<(Option<Digest>, Vec<PublishedPort>), TaskError> {
        let c = self
            .sequence()
            .inspect_owned(name, target)
            .await
            .map_err(task_error)?;
        Ok(match c {
            Some(c) => (
                deploy_docker::running_of(&c).map(|r| r.digest),
                if c.running { c.published } else { Vec::new() },
            ),
            None => (None, Vec::new()),
        })
    }

    /// Deploys `spec` through the shared sequence.
    pub async fn deploy(
        &self,
        spec: &DeploySpec<'_>,
        log: &TaskLog,
    ) -> Result<Deployed, DeployFailure> {
        let c = spec.component;
        let auth = spec.registry_auth.map(|a| PullAuth {
            server: a.server.clone(),
            username: a.username.clone(),
            password: a.password.clone(),
        });
        let d = SequenceSpec {
            target: spec.target,
            task: &spec.task,
            name: &c.name,
            spec: &c.container,
            keep_previous_running: c.keep_previous_running,
            stop_first: spec.stop_first,
            auth: auth.as_ref(),
        };
        self.sequence()
            .deploy(&d, log)
            .await
            .map_err(|f| DeployFailure {
                error: task_error(f.error),
                previous: f.previous,
            })
    }

    /// After a deploy was cancelled, timed out or was cut by an agent crash halfway:
    /// no `<name>-next` left, and the old version serving. Returns what it did.
    pub async fn recover(&self, name: &Name, target: &Name, log: &TaskLog) -> Vec<String> {
        self.sequence().recover(name, target, log).await
    }
}
