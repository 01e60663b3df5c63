//! `BollardApi`: `DockerApi` over the Docker Engine API with bollard, on whatever transport the `Docker` client was built with (the agent's local socket, the SSH executor's forwarded one).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerInspectResponse, EndpointSettings, HealthStatusEnum, NetworkConnectRequest,
    NetworkCreateRequest, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, KillContainerOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RenameContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use deploy_core::{ContainerSpec, ImageRef, NetworkAttachment, Protocol, PublishedPort};
use futures_util::StreamExt;

use crate::api::{Container, DockerApi, DockerError, DockerErrorKind, Health, PullAuth, StepLog};
use crate::create::{create_body, extra_networks};

/// `DockerApi` over a bollard client.
#[derive(Clone)]
pub struct BollardApi {
    docker: Docker,
    /// The same engine with a long timeout, for pulls only.
    puller: Docker,
}

impl std::fmt::Debug for BollardApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BollardApi").finish_non_exhaustive()
    }
}

/// A pull of a big image is one request; every task is bounded by its own timeout anyway.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(3600);

fn status(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's own words for an error, without the transport's wrapping.
pub fn detail(e: &BollardError) -> String {
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => format!("HTTP {status_code}: {message}"),
        BollardError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

/// A failed request: a 4xx is the request's fault (it stays refused), anything else
/// (5xx, no answer, a cut connection) may pass on a retry.
fn engine_error(what: &str, e: &BollardError) -> DockerError {
    let kind = match status(e) {
        Some(400..=499) => DockerErrorKind::Invalid,
        _ => DockerErrorKind::Unavailable,
    };
    DockerError::new(kind, format!("{what}: {}", detail(e)))
}

/// Classifies a pull error: refused (credentials, missing image) is not retryable.
pub fn pull_error(image: &str, detail: &str) -> DockerError {
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
    let kind = if refused {
        DockerErrorKind::PullRefused
    } else {
        DockerErrorKind::PullFailed
    };
    DockerError::new(kind, format!("pull {image}: {detail}"))
}

/// Our view of an inspected container (the Engine API's answer, which is also what
/// `docker inspect` prints, so the CLI transport reads it with the same type).
pub fn container_of(c: ContainerInspectResponse) -> Container {
    let state = c.state.unwrap_or_default();
    let health = state
        .health
        .as_ref()
        .and_then(|h| h.status)
        .and_then(|s| match s {
            HealthStatusEnum::STARTING => Some(Health::Starting),
            HealthStatusEnum::HEALTHY => Some(Health::Healthy),
            HealthStatusEnum::UNHEALTHY => Some(Health::Unhealthy),
            _ => None,
        });
    let mut published = Vec::new();
    for (key, bindings) in c.network_settings.and_then(|n| n.ports).unwrap_or_default() {
        let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let Ok(container_port) = port.parse() else {
            continue;
        };
        for b in bindings.into_iter().flatten() {
            let host_ip = b
                .host_ip
                .as_deref()
                .filter(|s| !s.is_empty())
                .and_then(|s| s.parse::<IpAddr>().ok())
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
            if let Some(host_port) = b.host_port.and_then(|p| p.parse().ok()) {
                published.push(PublishedPort {
                    container_port,
                    protocol: Protocol::parse(proto).unwrap_or_default(),
                    host_ip,
                    host_port,
                });
            }
        }
    }
    published.sort_by_key(|b| (b.container_port, b.host_port, b.host_ip));
    let mut declared_ports: Vec<String> = c
        .host_config
        .and_then(|h| h.port_bindings)
        .map(|b| b.into_keys().collect())
        .unwrap_or_default();
    declared_ports.sort();
    Container {
        id: c.id.unwrap_or_default(),
        running: state.running == Some(true),
        restarting: state.restarting == Some(true),
        restart_count: c
            .restart_count
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0),
        health,
        status: state
            .status
            .map_or_else(|| "unknown".to_owned(), |s| s.to_string()),
        exit_code: state.exit_code.unwrap_or_default(),
        labels: c
            .config
            .and_then(|cfg| cfg.labels)
            .map(|l| l.into_iter().collect())
            .unwrap_or_default(),
        published,
        declared_ports,
    }
}

impl BollardApi {
    /// Steps over `docker`.
    pub fn new(docker: Docker) -> Self {
        Self {
            puller: docker.clone().with_timeout(PULL_TIMEOUT),
            docker,
        }
    }

    /// The client (for reads the sequence does not cover, such as compose status).
    pub fn client(&self) -> &Docker {
        &self.docker
    }
}

#[async_trait]
impl DockerApi for BollardApi {
    async fn inspect(&self, name: &str) -> Result<Option<Container>, DockerError> {
        match self.docker.inspect_container(name, None).await {
            Ok(c) => Ok(Some(container_of(c))),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(engine_error(&format!("inspect container {name}"), &e)),
        }
    }

    async fn image_present(&self, image: &ImageRef) -> Result<bool, DockerError> {
        match self.docker.inspect_image(&image.to_string()).await {
            Ok(_) => Ok(true),
            Err(e) if status(&e) == Some(404) => Ok(false),
            Err(e) => Err(engine_error(&format!("inspect image {image}"), &e)),
        }
    }

    async fn pull(
        &self,
        image: &ImageRef,
        auth: Option<&PullAuth>,
        log: &dyn StepLog,
    ) -> Result<(), DockerError> {
        let shown = image.to_string();
        let opts = CreateImageOptionsBuilder::default()
            .from_image(&image.repository())
            .tag(image.digest().as_str())
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
                        log.step(&status);
                    }
                }
                Err(e) => return Err(pull_error(&shown, &detail(&e))),
            }
        }
        Ok(())
    }

    async fn ensure_network(&self, net: &NetworkAttachment) -> Result<(), DockerError> {
        match self.docker.inspect_network(&net.name, None).await {
            Ok(_) => return Ok(()),
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(engine_error(&format!("inspect network {}", net.name), &e)),
        }
        if net.external {
            return Err(DockerError::invalid(format!(
                "find external network {}: it does not exist on this host (an external network is never created)",
                net.name
            )));
        }
        let request = NetworkCreateRequest {
            name: net.name.clone(),
            driver: net.driver.clone(),
            options: Some(
                net.driver_opts
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            labels: Some(HashMap::from([(
                deploy_core::naming::labels::COMPONENT.to_owned(),
                net.name.clone(),
            )])),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => Ok(()),
            // Created meanwhile by another deploy on this host.
            Err(e) if status(&e) == Some(409) => Ok(()),
            Err(e) => Err(engine_error(&format!("create network {}", net.name), &e)),
        }
    }

    async fn ensure_volume(
        &self,
        name: &str,
        driver: Option<&str>,
        driver_opts: &BTreeMap<String, String>,
        external: bool,
    ) -> Result<(), DockerError> {
        match self.docker.inspect_volume(name).await {
            Ok(_) => return Ok(()),
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(engine_error(&format!("inspect volume {name}"), &e)),
        }
        if external {
            return Err(DockerError::invalid(format!(
                "find external volume {name}: it does not exist on this host (an external volume is never created)"
            )));
        }
        let request = VolumeCreateRequest {
            name: Some(name.to_owned()),
            driver: driver.map(str::to_owned),
            driver_opts: Some(
                driver_opts
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            ..Default::default()
        };
        self.docker
            .create_volume(request)
            .await
            .map(|_| ())
            .map_err(|e| engine_error(&format!("create volume {name}"), &e))
    }

    async fn create(
        &self,
        name: &str,
        spec: &ContainerSpec,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), DockerError> {
        let opts = CreateContainerOptionsBuilder::default().name(name).build();
        self.docker
            .create_container(Some(opts), create_body(spec, labels))
            .await
            .map_err(|e| engine_error(&format!("create container {name}"), &e))?;
        for (network, aliases) in extra_networks(spec) {
            let request = NetworkConnectRequest {
                container: name.to_owned(),
                endpoint_config: Some(EndpointSettings {
                    aliases: Some(aliases),
                    ..Default::default()
                }),
            };
            self.docker
                .connect_network(&network, request)
                .await
                .map_err(|e| engine_error(&format!("connect {name} to network {network}"), &e))?;
        }
        Ok(())
    }

    async fn start(&self, name: &str) -> Result<(), DockerError> {
        match self.docker.start_container(name, None).await {
            // 304: already running.
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(304) => Ok(()),
            Err(e) => Err(DockerError::not_running(format!(
                "start container {name}: {}",
                detail(&e)
            ))),
        }
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), DockerError> {
        let opts = RenameContainerOptionsBuilder::default().name(to).build();
        self.docker
            .rename_container(from, opts)
            .await
            .map_err(|e| engine_error(&format!("rename container {from} to {to}"), &e))
    }

    async fn remove(&self, name: &str) -> Result<(), DockerError> {
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(name, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(404) => Ok(()),
            Err(e) => Err(engine_error(&format!("remove container {name}"), &e)),
        }
    }

    async fn stop(&self, name: &str, grace: Duration) -> Result<(), DockerError> {
        let secs = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let opts = StopContainerOptionsBuilder::default().t(secs).build();
        match self.docker.stop_container(name, Some(opts)).await {
            Ok(()) => Ok(()),
            // 304: already stopped; 404: gone.
            Err(e) if matches!(status(&e), Some(304 | 404)) => Ok(()),
            Err(e) => Err(engine_error(&format!("stop container {name}"), &e)),
        }
    }

    async fn stop_in_background(&self, id: &str, grace: Duration) {
        let api = self.clone();
        let id = id.to_owned();
        // The engine carries the stop through whether or not this request is waited for.
        tokio::spawn(async move {
            if let Err(e) = api.stop(&id, grace).await {
                tracing::warn!(container = %id, "background stop of the previous container: {e}");
            }
        });
    }

    async fn kill(&self, name: &str) -> Result<(), DockerError> {
        let opts = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        match self.docker.kill_container(name, Some(opts)).await {
            Ok(()) => Ok(()),
            // 404: gone; 409: not running.
            Err(e) if matches!(status(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(engine_error(&format!("kill container {name}"), &e)),
        }
    }

    async fn logs_tail(&self, name: &str, lines: usize) -> Result<String, DockerError> {
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let mut stream = self.docker.logs(name, Some(opts));
        let mut out = String::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => out.push_str(&chunk.to_string()),
                Err(e) => return Err(engine_error(&format!("read the logs of {name}"), &e)),
            }
        }
        Ok(out)
    }
}
