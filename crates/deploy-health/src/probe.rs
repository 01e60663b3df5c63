//! One health probe of one target: an HTTP GET, a TCP connect, or a command run through a `CommandRunner`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deploy_core::{CommandSpec, HealthCheck, HttpExpectation, InstanceProbe, Name, Target};
use tokio_util::sync::CancellationToken;

use crate::errors::HealthError;
use crate::instance::InstanceProber;

/// Most bytes of a response body read when looking for `expected_body`.
const BODY_LIMIT: usize = 64 * 1024;

/// What a command run on a target returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    pub exit_code: i32,
    /// The tail of stdout and stderr, for the report.
    pub output: String,
}

/// Runs a command on a target (implemented by the engine over the target's executor).
#[async_trait]
pub trait CommandRunner: Send + Sync {
    /// Runs `command` on `target`. `Err` means it could not be run at all (connection
    /// lost, timeout); a non-zero exit is an `Ok` with that code.
    async fn run(
        &self,
        target: &Target,
        command: &CommandSpec,
        timeout: Duration,
        cancel: CancellationToken,
    ) -> Result<CommandOutput, String>;
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub healthy: bool,
    /// What was checked and what came back, e.g. "GET http://h/health answered 500; expected 200".
    pub message: String,
    /// The HTTP status, for http checks that got an answer.
    pub status_code: Option<u16>,
    /// The check could not run at all (a `command` check whose runner failed: the
    /// connection to the target was refused or lost): this says nothing about the
    /// deployed version.
    pub unreachable: bool,
}

impl Probe {
    fn ok(message: String, status_code: Option<u16>) -> Self {
        Self {
            healthy: true,
            message,
            status_code,
            unreachable: false,
        }
    }

    fn failed(message: String, status_code: Option<u16>) -> Self {
        Self {
            healthy: false,
            message,
            status_code,
            unreachable: false,
        }
    }

    /// The check could not run on the target at all.
    fn unreachable(message: String) -> Self {
        Self {
            unreachable: true,
            ..Self::failed(message, None)
        }
    }
}

/// What a probe needs, resolved once per verification from the target and its check.
pub(crate) enum ProbeSpec {
    Http {
        url: String,
        expected_status: u16,
        expected_body: Option<String>,
    },
    Tcp {
        host: String,
        port: u16,
    },
    Command {
        runner: Arc<dyn CommandRunner>,
        command: CommandSpec,
    },
    /// The instance just deployed, at the address where it publishes the checked port,
    /// probed from the target's side.
    Instance {
        prober: Arc<dyn InstanceProber>,
        probe: InstanceProbe,
    },
}

/// What resolving a check may use besides the target.
pub(crate) struct Means<'a> {
    pub runner: Option<&'a Arc<dyn CommandRunner>>,
    pub prober: Option<&'a Arc<dyn InstanceProber>>,
    /// The instance (container or compose project) an instance check aims at.
    pub slot: Option<&'a Name>,
    pub timeout: Duration,
    pub cancel: &'a CancellationToken,
}

impl ProbeSpec {
    /// Resolves the check against the target, or says why it cannot be performed. An
    /// instance check asks the target once where the instance publishes its ports.
    pub(crate) async fn resolve(
        target: &Target,
        check: &HealthCheck,
        means: &Means<'_>,
    ) -> Result<Self, HealthError> {
        let name = || target.name.to_string();
        let instance = |port: Option<u16>, http: Option<HttpExpectation>| async move {
            let (Some(prober), Some(slot)) = (means.prober, means.slot) else {
                return Err(HealthError::NoEndpoint { target: name() });
            };
            let published = prober
                .published(target, slot, means.timeout, means.cancel.child_token())
                .await
                .map_err(|detail| HealthError::Unreachable {
                    target: name(),
                    detail,
                })?;
            let address = crate::instance::choose_port(&published, port).map_err(|detail| {
                HealthError::NoInstancePort {
                    target: name(),
                    slot: slot.to_string(),
                    detail,
                }
            })?;
            Ok(Self::Instance {
                prober: prober.clone(),
                probe: InstanceProbe {
                    address,
                    http,
                    timeout_ms: u64::try_from(means.timeout.as_millis()).unwrap_or(u64::MAX),
                },
            })
        };
        Ok(match check {
            HealthCheck::Http {
                path,
                expected_status,
                expected_body,
                port,
            } => match &target.health_endpoint {
                Some(endpoint) => Self::Http {
                    url: endpoint.join(path),
                    expected_status: *expected_status,
                    expected_body: expected_body.clone(),
                },
                None => {
                    let http = HttpExpectation {
                        path: path.clone(),
                        expected_status: *expected_status,
                        expected_body: expected_body.clone(),
                    };
                    instance(*port, Some(http)).await?
                }
            },
            HealthCheck::Tcp { port } => match &target.health_endpoint {
                Some(_) => Self::Tcp {
                    host: tcp_host(target).ok_or_else(|| HealthError::NoHost { target: name() })?,
                    port: *port,
                },
                None => instance(Some(*port), None).await?,
            },
            HealthCheck::Command { command, .. } => Self::Command {
                runner: means
                    .runner
                    .cloned()
                    .ok_or_else(|| HealthError::NoCommandRunner { target: name() })?,
                command: command.clone(),
            },
        })
    }

    /// Runs one probe, bounded by `timeout`.
    pub(crate) async fn run(
        &self,
        http: &reqwest::Client,
        target: &Target,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Probe {
        let limit = timeout.as_millis();
        match self {
            Self::Http {
                url,
                expected_status,
                expected_body,
            } => {
                let attempt = http_probe(http, url, *expected_status, expected_body.as_deref());
                tokio::time::timeout(timeout, attempt)
                    .await
                    .unwrap_or_else(|_| {
                        Probe::failed(format!("GET {url} timed out after {limit} ms"), None)
                    })
            }
            Self::Tcp { host, port } => {
                let addr = format!("{host}:{port}");
                match tokio::time::timeout(
                    timeout,
                    tokio::net::TcpStream::connect((host.as_str(), *port)),
                )
                .await
                {
                    Ok(Ok(_)) => Probe::ok(format!("tcp {addr} accepted a connection"), None),
                    Ok(Err(e)) => Probe::failed(format!("tcp {addr} refused: {e}"), None),
                    Err(_) => Probe::failed(format!("tcp {addr} timed out after {limit} ms"), None),
                }
            }
            Self::Instance { prober, probe } => {
                match tokio::time::timeout(
                    timeout,
                    prober.probe(target, probe, cancel.child_token()),
                )
                .await
                {
                    Ok(Ok(outcome)) => Probe {
                        healthy: outcome.healthy,
                        message: outcome.message,
                        status_code: outcome.status_code,
                        unreachable: false,
                    },
                    Ok(Err(e)) => Probe::unreachable(format!(
                        "probe of the instance at {} could not run: {e}",
                        crate::instance::local_address(&probe.address)
                    )),
                    Err(_) => Probe::failed(
                        format!(
                            "probe of the instance at {} timed out after {limit} ms",
                            crate::instance::local_address(&probe.address)
                        ),
                        None,
                    ),
                }
            }
            Self::Command { runner, command } => {
                let shown = command.argv().join(" ");
                match runner
                    .run(target, command, timeout, cancel.child_token())
                    .await
                {
                    Ok(out) if out.exit_code == 0 => {
                        Probe::ok(format!("command `{shown}` exited 0"), None)
                    }
                    Ok(out) => Probe::failed(
                        format!(
                            "command `{shown}` exited {}: {}",
                            out.exit_code,
                            out.output.trim()
                        ),
                        None,
                    ),
                    Err(e) => Probe::unreachable(format!("command `{shown}` could not run: {e}")),
                }
            }
        }
    }
}

async fn http_probe(
    http: &reqwest::Client,
    url: &str,
    expected_status: u16,
    expected_body: Option<&str>,
) -> Probe {
    let mut response = match http.get(url).send().await {
        Ok(r) => r,
        Err(e) => return Probe::failed(format!("GET {url} failed: {}", root_cause(&e)), None),
    };
    let status = response.status().as_u16();
    if status != expected_status {
        return Probe::failed(
            format!("GET {url} answered {status}; expected {expected_status}"),
            Some(status),
        );
    }
    let Some(needle) = expected_body else {
        return Probe::ok(format!("GET {url} answered {status}"), Some(status));
    };
    let mut body = Vec::new();
    while body.len() < BODY_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => {
                return Probe::failed(
                    format!("GET {url} body failed: {}", root_cause(&e)),
                    Some(status),
                );
            }
        }
    }
    if String::from_utf8_lossy(&body).contains(needle) {
        Probe::ok(
            format!("GET {url} answered {status} with `{needle}`"),
            Some(status),
        )
    } else {
        Probe::failed(
            format!("GET {url} answered {status} but the body does not contain `{needle}`"),
            Some(status),
        )
    }
}

/// The innermost cause of an error chain ("Connection refused (os error 111)"), which says more than reqwest's outer message.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// The host a tcp check with a health endpoint connects to: the endpoint's host.
fn tcp_host(target: &Target) -> Option<String> {
    target
        .health_endpoint
        .as_ref()
        .map(|endpoint| endpoint.host().to_owned())
}
