//! The Docker Engine API over the SSH connection: bollard with a transport that sends each request on its own channel to the target's Docker socket, so SSH and the agent run the same docker_host sequence (deploy-docker) and no `docker` CLI process is started per step.

use std::sync::Arc;
use std::time::Duration;

use bollard::{BollardRequest, Docker};
use hyper::Uri;
use hyper_util::rt::TokioIo;

use crate::errors::ExecError;
use crate::ssh::session::SshSession;

/// The Docker socket on the target (the engine's default).
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// Every request of one step must answer within this (bollard's per-request timeout;
/// the task's own timeout bounds the whole call anyway).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The request on its own channel: HTTP/1.1 over the forwarded stream, origin-form
/// target (`/v1.41/containers/…`), `Host: docker`.
async fn send(
    session: Arc<SshSession>,
    request: BollardRequest,
) -> Result<hyper::Response<hyper::body::Incoming>, bollard::errors::Error> {
    let stream = session.docker_stream(DOCKER_SOCKET).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| bollard::errors::Error::HyperResponseError { err })?;
    // Drives the connection until the response body is read; ends with the channel.
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("docker api connection over ssh: {e}");
        }
    });
    let (mut parts, body) = request.into_parts();
    if let Some(path) = parts.uri.path_and_query() {
        parts.uri = Uri::try_from(path.as_str()).map_err(|e| bollard::errors::Error::IOError {
            err: std::io::Error::other(e.to_string()),
        })?;
    }
    parts.headers.insert(
        hyper::header::HOST,
        hyper::header::HeaderValue::from_static("docker"),
    );
    sender
        .send_request(BollardRequest::from_parts(parts, body))
        .await
        .map_err(|err| bollard::errors::Error::HyperResponseError { err })
}

/// A bollard client whose requests travel through `session`, with the API version
/// negotiated with the target's engine (which may be older than bollard's default).
pub async fn docker_over_ssh(session: Arc<SshSession>) -> Result<Docker, ExecError> {
    let host = session.host().to_owned();
    let transport = move |request: BollardRequest| {
        let session = session.clone();
        async move { send(session, request).await }
    };
    let unavailable = |e: bollard::errors::Error| ExecError::CommandFailed {
        host: host.clone(),
        what: "reach the Docker Engine over ssh".to_owned(),
        status: 0,
        stderr_tail: deploy_docker::detail(&e),
    };
    let docker = Docker::connect_with_custom_transport(
        transport,
        Some("http://docker"),
        REQUEST_TIMEOUT.as_secs(),
        bollard::API_DEFAULT_VERSION,
    )
    .map_err(unavailable)?;
    docker.negotiate_version().await.map_err(unavailable)
}

/// The Engine API over SSH, with one addition to `pull`: when the engine refuses a pull
/// for want of credentials, the host's `docker pull` is tried, since the engine does
/// not read the SSH user's registry logins (`~/.docker/config.json`, credential
/// helpers) and the CLI does; a private registry the host is logged in to keeps
/// working. The API pull comes first because an abandoned API request (timeout,
/// cancel) also stops the engine's pull, which a killed CLI does not.
pub(crate) struct SshDockerApi<'a> {
    pub api: deploy_docker::BollardApi,
    pub session: &'a SshSession,
    pub ctx: &'a crate::executor::ExecContext,
    pub deadline: tokio::time::Instant,
}

#[async_trait::async_trait]
impl deploy_docker::DockerApi for SshDockerApi<'_> {
    async fn inspect(
        &self,
        name: &str,
    ) -> Result<Option<deploy_docker::Container>, deploy_docker::DockerError> {
        self.api.inspect(name).await
    }

    async fn image_present(
        &self,
        image: &deploy_core::ImageRef,
    ) -> Result<bool, deploy_docker::DockerError> {
        self.api.image_present(image).await
    }

    async fn pull(
        &self,
        image: &deploy_core::ImageRef,
        auth: Option<&deploy_docker::PullAuth>,
        log: &dyn deploy_docker::StepLog,
    ) -> Result<(), deploy_docker::DockerError> {
        let refused = match self.api.pull(image, auth, log).await {
            Err(e) if auth.is_none() && needs_credentials(&e) => e,
            other => return other,
        };
        let shown = image.to_string();
        log.step(&format!(
            "the engine has no credentials for {shown}; pulling with the host's docker login"
        ));
        let script = crate::quote::sh_join(&["docker", "pull", "--quiet", &shown]);
        let out = self
            .session
            .exec(&script, "docker pull", self.ctx, self.deadline)
            .await
            .map_err(|e| {
                let kind = if e.is_retryable() {
                    deploy_docker::DockerErrorKind::Unavailable
                } else {
                    deploy_docker::DockerErrorKind::Invalid
                };
                deploy_docker::DockerError::new(kind, format!("pull {shown}: {e}"))
            })?;
        match out.exit_status {
            0 => Ok(()),
            // No CLI on the host: the engine's answer stands.
            127 => Err(refused),
            _ => Err(deploy_docker::pull_error(&shown, out.stderr_tail.trim())),
        }
    }

    async fn ensure_network(
        &self,
        net: &deploy_core::NetworkAttachment,
    ) -> Result<(), deploy_docker::DockerError> {
        self.api.ensure_network(net).await
    }

    async fn ensure_volume(
        &self,
        name: &str,
        driver: Option<&str>,
        driver_opts: &std::collections::BTreeMap<String, String>,
        external: bool,
    ) -> Result<(), deploy_docker::DockerError> {
        self.api
            .ensure_volume(name, driver, driver_opts, external)
            .await
    }

    async fn create(
        &self,
        name: &str,
        spec: &deploy_core::ContainerSpec,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), deploy_docker::DockerError> {
        self.api.create(name, spec, labels).await
    }

    async fn start(&self, name: &str) -> Result<(), deploy_docker::DockerError> {
        self.api.start(name).await
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), deploy_docker::DockerError> {
        self.api.rename(from, to).await
    }

    async fn remove(&self, name: &str) -> Result<(), deploy_docker::DockerError> {
        self.api.remove(name).await
    }

    async fn stop(&self, name: &str, grace: Duration) -> Result<(), deploy_docker::DockerError> {
        self.api.stop(name, grace).await
    }

    async fn stop_in_background(&self, id: &str, grace: Duration) {
        self.api.stop_in_background(id, grace).await;
    }

    async fn kill(&self, name: &str) -> Result<(), deploy_docker::DockerError> {
        self.api.kill(name).await
    }

    async fn logs_tail(
        &self,
        name: &str,
        lines: usize,
    ) -> Result<String, deploy_docker::DockerError> {
        self.api.logs_tail(name, lines).await
    }
}

/// Whether the engine refused a pull for want of registry credentials (Docker's
/// wordings: "no basic auth credentials", "unauthorized: authentication required",
/// "pull access denied … may require 'docker login'").
fn needs_credentials(e: &deploy_docker::DockerError) -> bool {
    let text = e.message.to_ascii_lowercase();
    [
        "no basic auth credentials",
        "unauthorized",
        "authentication required",
        "docker login",
        "denied",
    ]
    .iter()
    .any(|w| text.contains(w))
}
