//! The `Executor` contract: deploy, inspect and run_command, each with a log, a cancellation token and a timeout.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deploy_core::{
    CommandSpec, ContainerSpec, DeploymentTask, Digest, GeneratedArtifact, InstanceProbe, Name,
    ProbeOutcome, PublishedPort, Target, UnixPath,
};
use tokio_util::sync::CancellationToken;

use crate::errors::ExecError;
use crate::logs::{DEFAULT_LOG_CAP, LogSink, NullSink, TaskLog};

/// What one call may use: where logs go, how to stop it, how long it may take.
#[derive(Debug, Clone)]
pub struct ExecContext {
    pub log: TaskLog,
    pub cancel: CancellationToken,
    /// Upper bound for the whole call (connect included).
    pub timeout: Duration,
}

impl ExecContext {
    /// A context logging to `sink` with the default cap, a fresh token and `timeout`.
    pub fn new(sink: Arc<dyn LogSink>, timeout: Duration) -> Self {
        Self {
            log: TaskLog::new(sink, DEFAULT_LOG_CAP),
            cancel: CancellationToken::new(),
            timeout,
        }
    }

    /// A context whose logs are dropped.
    pub fn quiet(timeout: Duration) -> Self {
        Self::new(Arc::new(NullSink), timeout)
    }
}

/// Everything one deploy task needs.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    pub target: Target,
    pub task: DeploymentTask,
    /// docker_host: the component's container name and image. compose_host: `None`.
    pub component: Option<ComponentSpec>,
    /// compose_host: the compose project name (docker_host ignores it).
    pub project: Name,
    /// Files to upload into the target's work dir (compose lock, env file).
    pub artifacts: Vec<GeneratedArtifact>,
    /// compose_host with application secrets: the lock as stored (`KEY: secret:NAME`
    /// kept), when the lock in `artifacts` is the copy rewritten to read the secrets
    /// env files (same sha256 field, other text). The agent's host checks a lock's
    /// digest, so the agent executor sends this one and the agent rewrites it there.
    pub stored_lock: Option<GeneratedArtifact>,
    /// The task belongs to a rollback job (the digest is the last known good one).
    /// Executors deploy it the same way; the agent protocol says `rollback`.
    pub rollback: bool,
}

/// A docker_host component: its container name and what the container runs.
#[derive(Debug, Clone)]
pub struct ComponentSpec {
    /// The container name (the previous one is kept as `<name>-previous`).
    pub name: Name,
    /// The complete definition (image, command, environment, ports, mounts, …).
    pub container: ContainerSpec,
    /// Leave the old container running as `<name>-previous` after the swap (blue-green:
    /// blue stays up until the job completes, so a cut back needs no redeploy). When
    /// false the old container is stopped once the new one carries the name.
    pub keep_previous_running: bool,
}

impl ComponentSpec {
    /// deploy-docker's request to run this component for `target` by task `task`
    /// (the SSH and WinRM executors; the agent builds its own from the payload).
    pub(crate) fn deploy_spec<'a>(
        &'a self,
        target: &'a Name,
        task: &'a str,
    ) -> deploy_docker::DeploySpec<'a> {
        deploy_docker::DeploySpec {
            target,
            task,
            name: &self.name,
            spec: &self.container,
            keep_previous_running: self.keep_previous_running,
            stop_first: false,
            auth: None,
        }
    }
}

/// The outcome of a deploy: what runs now, or why not.
pub type DeployOutcome = Result<Deployed, DeployFailure>;

/// A deploy that left the request's digest running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// What runs after the deploy: the task's digest.
    pub deployed_digest: Digest,
    /// What ran before, as `inspect` found it.
    pub previous_digest: Option<Digest>,
    /// False when the digest was already running and nothing was done.
    pub changed: bool,
    /// Per container (docker_host) or compose service: the digest actually running.
    pub running: BTreeMap<String, Digest>,
    /// Where the new instance publishes its ports (health checks aim at them).
    pub published: Vec<PublishedPort>,
    /// The agent that ran the deploy (agent targets).
    pub agent: Option<deploy_core::AgentId>,
}

impl Deployed {
    /// A docker_host sequence that left `name` running `done.digest`.
    pub(crate) fn container(name: &Name, done: deploy_docker::Deployed) -> Self {
        Self {
            deployed_digest: done.digest.clone(),
            previous_digest: done.previous,
            changed: done.changed,
            running: [(name.to_string(), done.digest)].into(),
            published: done.published,
            agent: None,
        }
    }
}

/// A failed deploy: why, and what the executor learned before it failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct DeployFailure {
    pub error: ExecError,
    /// What ran before, when the executor found out before failing.
    pub previous_digest: Option<Digest>,
    /// The agent that ran the deploy (agent targets).
    pub agent: Option<deploy_core::AgentId>,
}

impl DeployFailure {
    /// `error`, after `inspect` found `previous_digest` running.
    pub fn new(error: ExecError, previous_digest: Option<Digest>) -> Self {
        Self {
            error,
            previous_digest,
            agent: None,
        }
    }

    /// True when the failure may be retried.
    pub fn retryable(&self) -> bool {
        self.error.is_retryable()
    }
}

impl From<ExecError> for DeployFailure {
    fn from(error: ExecError) -> Self {
        Self::new(error, None)
    }
}

/// Output of a command run on a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    pub exit_status: u32,
    /// Standard output, bounded (its head) and redacted.
    pub stdout: String,
}

/// Where a docker_host component's containers are published on the target: `host:port`
/// of one container port on `<name>` and on a running `<name>-previous`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    pub current: Option<String>,
    pub previous: Option<String>,
}

/// A switch of the target's proxy config (the blue-green cut-over and cut back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficSwitch {
    /// The include file the target's nginx loads; replaced atomically (a rename).
    pub path: UnixPath,
    /// The new content of that file.
    pub content: String,
    /// Checks the whole config with the new file in place (`nginx -t`, argv).
    pub test: CommandSpec,
    /// Makes the running proxy load it (`nginx -s reload`, argv).
    pub reload: CommandSpec,
}

/// The host deployd reaches a target on (for probes from deployd).
fn target_host(target: &Target) -> Option<String> {
    match &target.connection {
        deploy_core::Connection::Ssh(ssh) => Some(ssh.host.to_string()),
        deploy_core::Connection::Winrm(w) => Some(w.endpoint.host().to_owned()),
        deploy_core::Connection::Agent(_) | deploy_core::Connection::Api(_) => None,
    }
}

/// A probe from deployd to where the instance publishes its port.
pub async fn direct_probe(
    target: &Target,
    probe: &InstanceProbe,
) -> Result<ProbeOutcome, ExecError> {
    let address = &probe.address;
    let host = if address.host_ip.is_unspecified() {
        target_host(target).ok_or_else(|| {
            unsupported(
                "probe from deployd (no host to reach the target on)",
                target,
            )
        })?
    } else if address.host_ip.is_loopback() {
        return Err(ExecError::NotSupported {
            what: format!("probe port {} published on the target's loopback", address.host_port),
            target_type: target.target_type.as_str().to_owned(),
            hint: "deployd cannot reach a target's loopback over this connection: publish the port on an address deployd reaches, or give the target a health_endpoint".to_owned(),
        });
    } else {
        address.host_ip.to_string()
    };
    let authority = if host.contains(':') {
        format!("[{host}]:{}", address.host_port)
    } else {
        format!("{host}:{}", address.host_port)
    };
    Ok(deploy_health::probe_tcp(&host, address.host_port, &authority, probe).await)
}

fn unsupported(operation: &str, target: &Target) -> ExecError {
    ExecError::invalid(
        format!("operation on target `{}`", target.name),
        operation,
        "an executor that supports it (the ssh executor on docker_host targets)",
    )
}

/// Carries out tasks on targets of one execution model.
#[async_trait]
pub trait Executor: Send + Sync {
    /// Deploys the request's digest; never leaves the target without the previous version on failure.
    async fn deploy(&self, request: &DeployRequest, ctx: &ExecContext) -> DeployOutcome;

    /// The outcome of the task's current attempt when an earlier process or replica
    /// dispatched it and this executor can find it again (agent targets: the stored
    /// delivery), waiting for it if it is still running. `None` (the default): not
    /// known; the engine reconciles by inspecting the target.
    async fn resume(
        &self,
        _target: &Target,
        _task: &deploy_core::DeploymentTask,
        _ctx: &ExecContext,
    ) -> Option<DeployOutcome> {
        None
    }

    /// The digest running for `component` (docker_host) or the project's (compose_host), if any.
    async fn inspect(
        &self,
        target: &Target,
        component: &Name,
        ctx: &ExecContext,
    ) -> Result<Option<Digest>, ExecError>;

    /// Runs `command` on the target (no shell interpretation of its arguments).
    async fn run_command(
        &self,
        target: &Target,
        command: &CommandSpec,
        ctx: &ExecContext,
    ) -> Result<CommandOutput, ExecError>;

    /// Where `component`'s current and kept previous containers publish container `port`.
    async fn published(
        &self,
        target: &Target,
        component: &Name,
        port: u16,
        ctx: &ExecContext,
    ) -> Result<Published, ExecError> {
        let _ = (component, port, ctx);
        Err(unsupported("published", target))
    }

    /// Installs `switch.content` at `switch.path`, runs `switch.test` and `switch.reload`;
    /// on any failure puts the previous file back (and reloads it) and fails.
    async fn switch_traffic(
        &self,
        target: &Target,
        switch: &TrafficSwitch,
        ctx: &ExecContext,
    ) -> Result<(), ExecError> {
        let _ = (switch, ctx);
        Err(unsupported("switch_traffic", target))
    }

    /// Where instance `slot` (a docker_host container, a compose project) publishes its
    /// ports on the target now.
    async fn instance(
        &self,
        target: &Target,
        slot: &Name,
        ctx: &ExecContext,
    ) -> Result<Vec<PublishedPort>, ExecError> {
        let _ = (slot, ctx);
        Err(unsupported("instance", target))
    }

    /// One probe of a deployed instance at its published address. By default it runs
    /// from deployd: a port published on every address is reached on the target's host;
    /// one published on the target's loopback cannot be reached from here (executors
    /// with a way onto the target, SSH and the agent, probe from there instead).
    async fn probe(
        &self,
        target: &Target,
        probe: &InstanceProbe,
        ctx: &ExecContext,
    ) -> Result<ProbeOutcome, ExecError> {
        let _ = ctx;
        direct_probe(target, probe).await
    }

    /// Stops `component`'s kept `<name>-previous` container if it runs (blue retired
    /// after a blue-green job); it is kept, stopped, for an instant revert.
    async fn retire_previous(
        &self,
        target: &Target,
        component: &Name,
        ctx: &ExecContext,
    ) -> Result<(), ExecError> {
        let _ = (component, ctx);
        Err(unsupported("retire_previous", target))
    }
}
