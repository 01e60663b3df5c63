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
