//! docker_host through the Docker Engine API (bollard): inspect, pull by digest, start-first swap keeping `<name>-previous`, instant revert.
//!
//! The sequence mirrors the SSH executor's scripts (deploy-exec `ssh/docker_host.rs`):
//! the new container starts as `<name>-next`, must run (and stay running for a short
//! settle, and be healthy when its image has a HEALTHCHECK), and only then is the running
//! `<name>` renamed to `<name>-previous` and `-next` to `<name>`. The old container is
//! stopped in the background or kept running (blue-green). A deploy of the digest the
//! kept `-previous` runs starts that container again instead of creating a new one.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, HealthStatusEnum, HostConfig, PortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, KillContainerOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RenameContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use deploy_api::agent::{AgentErrorCode, ComponentPayload, LogStream, RegistryAuth};
use deploy_core::{Digest, Name};
use futures_util::StreamExt;
use tokio::task::JoinHandle;

use crate::errors::TaskError;
use crate::labels;
use crate::tasklog::TaskLog;

/// Timings of the docker_host sequence (the SSH executor's defaults).
#[derive(Debug, Clone, Copy)]
pub struct DockerConfig {
    /// How long a new container must keep running before it is swapped in.
    pub settle: Duration,
    /// The settle of the instant revert: the kept `-previous` served before.
    pub settle_known: Duration,
    /// Grace period of `docker stop` for the old container.
    pub stop_timeout: Duration,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            settle: Duration::from_millis(300),
            settle_known: Duration::from_millis(100),
            stop_timeout: Duration::from_secs(10),
        }
    }
}

/// bollard's per-request timeout for everything but a pull: an engine that stops
/// answering fails the call in a minute instead of holding the slot lock (and, during a
/// recovery, nothing else bounds it).
pub const ENGINE_TIMEOUT: Duration = Duration::from_secs(60);
/// The pull's timeout. Large on purpose: a pull of a big image is one request, and every
/// task is already bounded by its own `timeout_ms`.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(3600);
/// Longest connect (version negotiation and ping) at start-up: a hung engine must not
/// stall the agent before it even registers.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// The kept previous container of `name`.
pub fn previous_name(name: &Name) -> String {
    format!("{name}-previous")
}

/// The container being started for `name`, before the swap.
pub fn next_name(name: &Name) -> String {
    format!("{name}-next")
}

/// What one docker_host deploy is asked to do.
#[derive(Debug, Clone)]
pub struct DeploySpec<'a> {
    pub target: &'a Name,
    pub task: String,
    pub component: &'a ComponentPayload,
    /// `KEY=VALUE` pairs (from an env-file artifact, when the payload has one).
    pub env: Vec<String>,
    pub registry_auth: Option<&'a RegistryAuth>,
    /// The component's or the target's `stop_first`.
    pub stop_first: bool,
}

/// A successful deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    pub deployed: Digest,
    pub previous: Option<Digest>,
    pub changed: bool,
    pub running: BTreeMap<String, Digest>,
}

/// A failed deploy and what ran before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployFailure {
    pub error: TaskError,
    pub previous: Option<Digest>,
}

/// The local Docker Engine.
#[derive(Debug, Clone)]
pub struct DockerHost {
    docker: Docker,
    /// The same engine with [`PULL_TIMEOUT`], used only for pulls.
    puller: Docker,
    config: DockerConfig,
    /// Background stops of retired containers, by container id: a revert to one of them
    /// must finish (kill) its stop before starting it again.
    stopping: Arc<Mutex<HashMap<String, JoinHandle<()>>>>,
}

fn not_found(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Whether a container runs, is not restarting and has not restarted.
fn steady(c: &ContainerInspectResponse) -> bool {
    let state = c.state.as_ref();
    state.and_then(|s| s.running) == Some(true)
        && state.and_then(|s| s.restarting) != Some(true)
        && c.restart_count.unwrap_or(0) == 0
}

fn digest_label(c: &ContainerInspectResponse) -> Option<Digest> {
    c.config
        .as_ref()
        .and_then(|cfg| cfg.labels.as_ref())
        .and_then(|l| l.get(labels::DIGEST))
        .and_then(|d| Digest::parse(d).ok())
}

/// The `stella.target` label of a container, if it has one.
fn target_label(c: &ContainerInspectResponse) -> Option<String> {
    c.config
        .as_ref()
        .and_then(|cfg| cfg.labels.as_ref())
        .and_then(|l| l.get(labels::TARGET))
        .cloned()
}

fn port_key(port: u16) -> String {
    format!("{port}/tcp")
}

/// Parses an env file (`KEY=VALUE` lines, `#` comments, blank lines) into Docker's `Env`.
pub fn parse_env_file(content: &str) -> Vec<String> {
    content
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && l.contains('='))
        .map(str::to_owned)
        .collect()
}

/// Classifies a pull error: refused (credentials, missing image) is not retryable.
fn pull_error(image: &str, detail: &str) -> TaskError {
    let lower = detail.to_ascii_lowercase();
    let refused = [
        "unauthorized",
        "denied",
        "authentication required",
        "not found",
        "manifest unknown",
        "no such image",
    ]
    .iter()
    .any(|w| lower.contains(w));
    let code = if refused {
        AgentErrorCode::PullRefused
    } else {
        AgentErrorCode::PullFailed
    };
    TaskError::new(code, format!("pull {image}: {detail}"))
}

fn bollard_detail(e: &BollardError) -> String {
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => format!("HTTP {status_code}: {message}"),
        BollardError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

impl DockerHost {
    /// Connects to the engine on `socket` and negotiates the API version (the engine may be
    /// older than bollard's default API version).
    /// Bounded by [`CONNECT_TIMEOUT`].
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
            puller: docker.clone().with_timeout(PULL_TIMEOUT),
            docker,
            config,
            stopping: Arc::default(),
        })
    }

    /// The bollard client (for tests and the compose status).
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    async fn inspect(&self, name: &str) -> Result<Option<ContainerInspectResponse>, TaskError> {
        match self.docker.inspect_container(name, None).await {
            Ok(c) => Ok(Some(c)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(TaskError::docker(&format!("inspect container {name}"), e)),
        }
    }

    /// Container `name`, refused when its `stella.target` label names another target:
    /// container names are per host, not per target, and another target's container must
    /// never be swapped or reverted. A container without the label (not made by stella)
    /// is accepted, as before.
    async fn inspect_owned(
        &self,
        name: &str,
        target: &Name,
    ) -> Result<Option<ContainerInspectResponse>, TaskError> {
        let c = self.inspect(name).await?;
        if let Some(owner) = c.as_ref().and_then(target_label)
            && owner != target.as_str()
        {
            return Err(TaskError::invalid(format!(
                "use container {name} for target `{target}`: it belongs to target `{owner}` on this host; give the component another name in one of the two targets"
            )));
        }
        Ok(c)
    }

    /// The digest container `name` runs (from its `stella.digest` label), if it runs;
    /// refused when `name` belongs to another target than `target`.
    pub async fn running_digest(
        &self,
        name: &str,
        target: &Name,
    ) -> Result<Option<Digest>, TaskError> {
        Ok(self.inspect_owned(name, target).await?.and_then(|c| {
            let running = c.state.as_ref().and_then(|s| s.running) == Some(true);
            if running { digest_label(&c) } else { None }
        }))
    }

    async fn remove(&self, name: &str) -> Result<(), TaskError> {
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(name, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(TaskError::docker(&format!("remove container {name}"), e)),
        }
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), BollardError> {
        let opts = RenameContainerOptionsBuilder::default().name(to).build();
        self.docker.rename_container(from, opts).await
    }

    async fn stop(&self, name: &str) -> Result<(), TaskError> {
        let secs = i32::try_from(self.config.stop_timeout.as_secs()).unwrap_or(i32::MAX);
        let opts = StopContainerOptionsBuilder::default().t(secs).build();
        match self.docker.stop_container(name, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            // 304: already stopped.
            Err(BollardError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(TaskError::docker(&format!("stop container {name}"), e)),
        }
    }

    /// Stops container `id` in the background (its grace period is not on the deploy's path).
    fn stop_in_background(&self, id: String) {
        let docker = self.docker.clone();
        let secs = i32::try_from(self.config.stop_timeout.as_secs()).unwrap_or(i32::MAX);
        let stopping = self.stopping.clone();
        let key = id.clone();
        let handle = tokio::spawn(async move {
            let opts = StopContainerOptionsBuilder::default().t(secs).build();
            if let Err(e) = docker.stop_container(&id, Some(opts)).await
                && !not_found(&e)
            {
                tracing::warn!(container = %id, "background stop of the previous container: {e}");
            }
            if let Ok(mut m) = stopping.lock() {
                m.remove(&id);
            }
        });
        if let Ok(mut m) = self.stopping.lock() {
            m.insert(key, handle);
        }
    }

    /// Finishes a pending background stop of container `id` by killing it (it was being
    /// stopped anyway), so that starting it again is not undone by that stop.
    async fn finish_pending_stop(&self, id: &str) {
        let handle = self.stopping.lock().ok().and_then(|mut m| m.remove(id));
        if let Some(handle) = handle {
            let opts = KillContainerOptionsBuilder::default()
                .signal("SIGKILL")
                .build();
            let _ = self.docker.kill_container(id, Some(opts)).await;
            let _ = handle.await;
        }
    }

    /// The last lines of a container's output, into the task log (why it did not start).
    async fn log_tail(&self, name: &str, log: &TaskLog) {
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail("20")
            .build();
        let mut stream = self.docker.logs(name, Some(opts));
        while let Some(Ok(out)) = stream.next().await {
            log.line(LogStream::Stderr, &out.to_string());
        }
    }

    /// Waits until `name` runs steadily for `settle`, and is healthy when its image has a
    /// HEALTHCHECK. The error says what was seen.
    async fn verify_started(&self, name: &str, settle: Duration) -> Result<(), String> {
        let check =
            |c: Option<ContainerInspectResponse>| -> Result<ContainerInspectResponse, String> {
                match c {
                    Some(c) if steady(&c) => Ok(c),
                    Some(c) => {
                        let s = c.state.as_ref();
                        Err(format!(
                            "{name} is not running (status {}, exit code {})",
                            s.and_then(|s| s.status)
                                .map_or_else(|| "unknown".to_owned(), |s| s.to_string()),
                            s.and_then(|s| s.exit_code).unwrap_or_default()
                        ))
                    }
                    None => Err(format!("{name} disappeared")),
                }
            };
        let inspect = |name: &str| {
            let name = name.to_owned();
            async move { self.inspect(&name).await.map_err(|e| e.message) }
        };
        check(inspect(name).await?)?;
        tokio::time::sleep(settle).await;
        let mut c = check(inspect(name).await?)?;
        // Only an image with a HEALTHCHECK has a health status; wait for its verdict.
        loop {
            let health = c
                .state
                .as_ref()
                .and_then(|s| s.health.as_ref())
                .and_then(|h| h.status);
            match health {
                None | Some(HealthStatusEnum::NONE | HealthStatusEnum::EMPTY) => return Ok(()),
                Some(HealthStatusEnum::HEALTHY) => return Ok(()),
                Some(HealthStatusEnum::UNHEALTHY) => {
                    return Err(format!("{name} is unhealthy (its image's HEALTHCHECK)"));
                }
                Some(HealthStatusEnum::STARTING) => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    c = check(inspect(name).await?)?;
                }
            }
        }
    }

    /// Pulls `image` (by digest) unless the engine has it.
    async fn pull(
        &self,
        component: &ComponentPayload,
        auth: Option<&RegistryAuth>,
        log: &TaskLog,
    ) -> Result<(), TaskError> {
        let image = component.image.to_string();
        if self.docker.inspect_image(&image).await.is_ok() {
            log.agent(&format!("{image} is present: no pull"));
            return Ok(());
        }
        log.agent(&format!("pulling {image}"));
        let opts = CreateImageOptionsBuilder::default()
            .from_image(&component.image.repository())
            .tag(component.image.digest().as_str())
            .build();
        let credentials = auth.map(|a| DockerCredentials {
            username: Some(a.username.clone()),
            password: Some(a.password.clone()),
            serveraddress: Some(a.server.clone()),
            ..Default::default()
        });
        let mut stream = self.puller.create_image(Some(opts), None, credentials);
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    // Summary lines only (no layer id): progress bars would flood the log.
                    if info.id.is_none()
                        && let Some(status) = info.status
                    {
                        log.agent(&status);
                    }
                }
                Err(e) => return Err(pull_error(&image, &bollard_detail(&e))),
            }
        }
        Ok(())
    }

    /// Creates and starts `<name>-next` from the spec.
    async fn start_next(&self, spec: &DeploySpec<'_>) -> Result<(), TaskError> {
        let c = spec.component;
        let next = next_name(&c.name);
        self.remove(&next).await?;
        let labels: HashMap<String, String> = [
            (labels::COMPONENT, c.name.to_string()),
            (labels::DIGEST, c.image.digest().to_string()),
            (labels::TARGET, spec.target.to_string()),
            (labels::TASK, spec.task.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let bindings: HashMap<String, Option<Vec<PortBinding>>> = c
            .publish
            .iter()
            .map(|p| {
                (
                    port_key(*p),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".to_owned()),
                        host_port: Some(String::new()),
                    }]),
                )
            })
            .collect();
        let body = ContainerCreateBody {
            image: Some(c.image.to_string()),
            cmd: (!c.args.is_empty()).then(|| c.args.clone()),
            labels: Some(labels),
            env: (!spec.env.is_empty()).then(|| spec.env.clone()),
            exposed_ports: Some(c.publish.iter().map(|p| port_key(*p)).collect()),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default().name(&next).build();
        self.docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| {
                TaskError::docker(&format!("create container {next}"), bollard_detail(&e))
            })?;
        self.docker.start_container(&next, None).await.map_err(|e| {
            TaskError::new(
                AgentErrorCode::StartFailed,
                format!("start container {next}: {}", bollard_detail(&e)),
            )
        })
    }

    /// The swap once `<name>-next` runs: `<name>` -> `<name>-previous`, `-next` -> `<name>`,
    /// then the old one is stopped in the background or kept running. On a failed rename
    /// the old container is put back and `-next` removed.
    async fn swap(&self, name: &Name, keep_running: bool) -> Result<(), TaskError> {
        let (current, next, prev) = (name.to_string(), next_name(name), previous_name(name));
        let swap_failed =
            |what: String, e: BollardError| TaskError::host(&what, bollard_detail(&e));
        let had_current = self.inspect(&current).await?.is_some();
        if had_current {
            self.remove(&prev).await?;
            if let Err(e) = self.rename(&current, &prev).await {
                let _ = self.remove(&next).await;
                return Err(swap_failed(format!("rename {current} to {prev}"), e));
            }
        }
        if let Err(e) = self.rename(&next, &current).await {
            if had_current {
                let _ = self.rename(&prev, &current).await;
                let _ = self.docker.start_container(&current, None).await;
            }
            let _ = self.remove(&next).await;
            return Err(swap_failed(format!("rename {next} to {current}"), e));
        }
        if had_current && !keep_running {
            match self.inspect(&prev).await? {
                Some(c) if c.state.as_ref().and_then(|s| s.running) == Some(true) => {
                    if let Some(id) = c.id {
                        self.stop_in_background(id);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Stop-first: stops `<name>` before the new container starts; returns whether it ran.
    async fn stop_current_first(&self, name: &Name, log: &TaskLog) -> Result<bool, TaskError> {
        let running = self
            .inspect(name.as_str())
            .await?
            .is_some_and(|c| c.state.as_ref().and_then(|s| s.running) == Some(true));
        if running {
            log.agent(&format!(
                "stop-first: stopping {name} before starting the new container"
            ));
            self.stop(name.as_str()).await?;
        }
        Ok(running)
    }

    /// After a failed start under stop-first: the old container serves again.
    async fn restart_current(&self, name: &Name, log: &TaskLog) {
        log.agent(&format!("starting {name} again"));
        if let Err(e) = self.docker.start_container(name.as_str(), None).await {
            log.agent(&format!(
                "could not start {name} again: {}",
                bollard_detail(&e)
            ));
        }
    }

    /// The instant revert: `<name>-previous` runs `wanted` and publishes every asked port,
    /// so it is started again as `-next` and swapped in. `Ok(false)`: not possible, a new
    /// container is needed (the previous is left as it was, or removed when it could not run).
    async fn try_revert(
        &self,
        spec: &DeploySpec<'_>,
        wanted: &Digest,
        log: &TaskLog,
    ) -> Result<bool, TaskError> {
        let c = spec.component;
        let (prev, next) = (previous_name(&c.name), next_name(&c.name));
        let Some(kept) = self.inspect_owned(&prev, spec.target).await? else {
            return Ok(false);
        };
        if digest_label(&kept).as_ref() != Some(wanted) {
            return Ok(false);
        }
        let bindings = kept
            .host_config
            .as_ref()
            .and_then(|h| h.port_bindings.as_ref());
        if !c
            .publish
            .iter()
            .all(|p| bindings.is_some_and(|b| b.contains_key(&port_key(*p))))
        {
            return Ok(false);
        }
        self.remove(&next).await?;
        if self.rename(&prev, &next).await.is_err() {
            return Ok(false);
        }
        if let Some(id) = kept.id.as_deref() {
            self.finish_pending_stop(id).await;
        }
        let stopped_current = if spec.stop_first {
            self.stop_current_first(&c.name, log).await?
        } else {
            false
        };
        let started = match self.docker.start_container(&next, None).await {
            Ok(()) => self.verify_started(&next, self.config.settle_known).await,
            Err(BollardError::DockerResponseServerError {
                status_code: 304, ..
            }) => self.verify_started(&next, self.config.settle_known).await,
            Err(e) => Err(bollard_detail(&e)),
        };
        if let Err(why) = started {
            log.agent(&format!(
                "{prev} could not be started again, starting a new container: {why}"
            ));
            self.log_tail(&next, log).await;
            self.remove(&next).await?;
            if stopped_current {
                self.restart_current(&c.name, log).await;
            }
            return Ok(false);
        }
        self.swap(&c.name, c.keep_previous_running).await?;
        Ok(true)
    }

    /// Deploys `spec`: no-op when the digest runs, else instant revert or pull + start + swap.
    pub async fn deploy(
        &self,
        spec: &DeploySpec<'_>,
        log: &TaskLog,
    ) -> Result<Deployed, DeployFailure> {
        let c = spec.component;
        let wanted = c.image.digest().clone();
        let previous = self
            .running_digest(c.name.as_str(), spec.target)
            .await
            .map_err(|error| DeployFailure {
                error,
                previous: None,
            })?;
        let fail = |error: TaskError| DeployFailure {
            error,
            previous: previous.clone(),
        };
        let mut done = Deployed {
            deployed: wanted.clone(),
            previous: previous.clone(),
            changed: false,
            running: [(c.name.to_string(), wanted.clone())].into(),
        };
        if previous.as_ref() == Some(&wanted) {
            log.agent(&format!("{} already runs {wanted}: nothing to do", c.name));
            return Ok(done);
        }
        if self.try_revert(spec, &wanted, log).await.map_err(fail)? {
            log.agent(&format!(
                "{} was on {wanted}: started again and swapped in (no new container)",
                previous_name(&c.name)
            ));
        } else {
            self.pull(c, spec.registry_auth, log).await.map_err(fail)?;
            let stopped_current = if spec.stop_first {
                self.stop_current_first(&c.name, log).await.map_err(fail)?
            } else {
                false
            };
            log.agent(&format!(
                "starting {}, then swapping it in for {}",
                next_name(&c.name),
                c.name
            ));
            let started = match self.start_next(spec).await {
                Ok(()) => self
                    .verify_started(&next_name(&c.name), self.config.settle)
                    .await
                    .map_err(|why| TaskError::new(AgentErrorCode::StartFailed, why)),
                Err(e) => Err(e),
            };
            if let Err(e) = started {
                log.agent(&format!("the new container did not start: {}", e.message));
                self.log_tail(&next_name(&c.name), log).await;
                let _ = self.remove(&next_name(&c.name)).await;
                if stopped_current {
                    self.restart_current(&c.name, log).await;
                }
                return Err(fail(e));
            }
            self.swap(&c.name, c.keep_previous_running)
                .await
                .map_err(fail)?;
        }
        match self
            .running_digest(c.name.as_str(), spec.target)
            .await
            .map_err(fail)?
        {
            Some(d) if d == wanted => {}
            found => {
                return Err(fail(TaskError::new(
                    AgentErrorCode::StartFailed,
                    format!(
                        "after the swap {} runs {}, expected {wanted}",
                        c.name,
                        found.map_or_else(|| "nothing".to_owned(), |d| d.to_string())
                    ),
                )));
            }
        }
        if previous.is_none() {
            log.agent(&format!("{} runs {wanted} (no previous container)", c.name));
        } else {
            let kept = if c.keep_previous_running {
                "still running"
            } else {
                "stopping in the background"
            };
            log.agent(&format!(
                "{} runs {wanted}; previous kept as {} ({kept})",
                c.name,
                previous_name(&c.name)
            ));
        }
        done.changed = true;
        Ok(done)
    }

    /// After a deploy was cancelled, timed out or was cut by an agent crash halfway:
    /// removes `<name>-next` and, when `<name>` is missing (cut between the two renames),
    /// puts `-previous` back as `<name>` and starts it, so no duplicate container is left
    /// and the old version serves. Containers of another target are left alone. Returns
    /// what it did, for the agent's log.
    pub async fn recover(&self, name: &Name, target: &Name, log: &TaskLog) -> Vec<String> {
        let mut done = Vec::new();
        let mut note = |text: String| {
            log.agent(&format!("recovery: {text}"));
            done.push(text);
        };
        let next = next_name(name);
        match self.inspect_owned(&next, target).await {
            Ok(found) => {
                // Removed even when not seen: a create the cut dropped may still be
                // finishing in the engine; checked again briefly for the same reason.
                for _ in 0..3 {
                    if let Err(e) = self.remove(&next).await {
                        note(e.message);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if !matches!(self.inspect(&next).await, Ok(Some(_))) {
                        break;
                    }
                }
                if found.is_some() {
                    note(format!("removed {next}"));
                }
            }
            Err(e) => note(e.message),
        }
        match self.inspect_owned(name.as_str(), target).await {
            Ok(None) => {
                let prev = previous_name(name);
                match self.inspect_owned(&prev, target).await {
                    Ok(Some(_)) => {
                        if let Err(e) = self.rename(&prev, name.as_str()).await {
                            note(format!(
                                "could not rename {prev} to {name}: {}",
                                bollard_detail(&e)
                            ));
                        } else {
                            let _ = self.docker.start_container(name.as_str(), None).await;
                            note(format!("{prev} became {name} again and was started"));
                        }
                    }
                    Ok(None) => {}
                    Err(e) => note(e.message),
                }
            }
            Ok(Some(c)) if c.state.as_ref().and_then(|s| s.running) != Some(true) => {
                // Stop-first stopped it before the cut.
                let _ = self.docker.start_container(name.as_str(), None).await;
                note(format!("started {name} again (stopped before the cut)"));
            }
            Ok(Some(_)) => {}
            Err(e) => note(e.message),
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_and_pull_errors() {
        assert_eq!(
            parse_env_file("# c\nA=1\n\n B=x=y \nnoequals\n"),
            ["A=1", "B=x=y"]
        );
        assert_eq!(
            pull_error("r/a@sha256:x", "manifest unknown").code,
            AgentErrorCode::PullRefused
        );
        assert_eq!(
            pull_error(
                "r/a",
                "Get https://r/v2/: unauthorized: authentication required"
            )
            .code,
            AgentErrorCode::PullRefused
        );
        assert_eq!(
            pull_error("r/a", "connection refused").code,
            AgentErrorCode::PullFailed
        );
    }
}
