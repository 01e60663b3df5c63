//! Probes of the instance just deployed: where it publishes its ports (`InstanceProber::published`), one probe from the target's side (`InstanceProber::probe`), and the probe itself over any byte stream (`probe_stream`), shared by the executors and the agent.

use std::time::Duration;

use async_trait::async_trait;
use deploy_core::{HttpExpectation, InstanceProbe, Name, ProbeOutcome, PublishedPort, Target};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

/// Most bytes of a response body read when looking for `expected_body`.
const BODY_LIMIT: usize = 64 * 1024;

/// Reaches deployed instances (implemented by the engine over the target's executor).
#[async_trait]
pub trait InstanceProber: Send + Sync {
    /// Where instance `slot` (a docker_host container, a compose project) on `target`
    /// publishes its ports now. `Err`: the target could not be asked.
    async fn published(
        &self,
        target: &Target,
        slot: &Name,
        timeout: Duration,
        cancel: CancellationToken,
    ) -> Result<Vec<PublishedPort>, String>;

    /// One probe from the target's side. `Err`: it could not be carried out at all
    /// (the target unreachable), which says nothing about the instance.
    async fn probe(
        &self,
        target: &Target,
        probe: &InstanceProbe,
        cancel: CancellationToken,
    ) -> Result<ProbeOutcome, String>;
}

/// Why an instance check finds no container port to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoProbePort {
    /// The check names this port and it is not published (over TCP).
    NotPublished(u16),
    /// No TCP port is published.
    None,
    /// Several are (sorted) and the check names none.
    Several(Vec<u16>),
}

/// The container port an instance check probes among the TCP container ports `tcp`
/// (any order, repeats allowed): `wanted` when given, else the only one. The rule
/// behind [`choose_port`], and behind the engine's refusal at job creation of a
/// service that does not publish it.
pub fn probe_container_port(tcp: &[u16], wanted: Option<u16>) -> Result<u16, NoProbePort> {
    let mut distinct = tcp.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    match (wanted, distinct.as_slice()) {
        (Some(port), ports) if ports.contains(&port) => Ok(port),
        (Some(port), _) => Err(NoProbePort::NotPublished(port)),
        (None, [port]) => Ok(*port),
        (None, []) => Err(NoProbePort::None),
        (None, _) => Err(NoProbePort::Several(distinct)),
    }
}

/// The published port a check aims at: `port` (a container port, TCP) when given,
/// else the instance's only published TCP port.
pub fn choose_port(
    published: &[PublishedPort],
    port: Option<u16>,
) -> Result<PublishedPort, String> {
    let tcp: Vec<&PublishedPort> = published
        .iter()
        .filter(|p| p.protocol == deploy_core::Protocol::Tcp)
        .collect();
    let ports: Vec<u16> = tcp.iter().map(|p| p.container_port).collect();
    let shown = |ports: &[u16]| {
        let mut ports = ports.to_vec();
        ports.sort_unstable();
        ports.dedup();
        if ports.is_empty() {
            "none".to_owned()
        } else {
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let explain = |why: NoProbePort| {
        match why {
        NoProbePort::NotPublished(port) => format!(
            "the instance does not publish container port {port}/tcp (it publishes: {}); publish it in the service definition",
            shown(&ports)
        ),
        NoProbePort::None => "the instance publishes no TCP port to probe; publish one in the service definition, or give the target a health_endpoint"
            .to_owned(),
        NoProbePort::Several(several) => format!(
            "the instance publishes several TCP ports ({}); name the one to probe with `port` in the health check",
            shown(&several)
        ),
    }
    };
    let chosen = probe_container_port(&ports, port).map_err(explain)?;
    tcp.iter()
        .find(|p| p.container_port == chosen)
        .map(|p| **p)
        .ok_or_else(|| explain(NoProbePort::NotPublished(chosen)))
}

/// A probe over a connection opened from this process to `host`:`port` (`authority`
/// names it in messages and is the `Host` header): refused and timed-out connects are
/// unhealthy verdicts, like a failing answer.
pub async fn probe_tcp(
    host: &str,
    port: u16,
    authority: &str,
    probe: &InstanceProbe,
) -> ProbeOutcome {
    let connect = tokio::net::TcpStream::connect((host, port));
    let timeout = std::time::Duration::from_millis(probe.timeout_ms);
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(stream)) => probe_stream(stream, authority, probe).await,
        Ok(Err(e)) => ProbeOutcome {
            healthy: false,
            message: format!("tcp {authority} refused: {e}"),
            status_code: None,
        },
        Err(_) => ProbeOutcome {
            healthy: false,
            message: format!("tcp {authority} timed out after {} ms", probe.timeout_ms),
            status_code: None,
        },
    }
}

/// A connect succeeded (`probe.http` is `None`), or an HTTP GET over `stream` answered
/// as expected. `authority` is the `Host` header (`host:port` as dialled).
pub async fn probe_stream<S>(stream: S, authority: &str, probe: &InstanceProbe) -> ProbeOutcome
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeout = Duration::from_millis(probe.timeout_ms);
    let Some(http) = &probe.http else {
        return ProbeOutcome {
            healthy: true,
            message: format!("tcp {authority} accepted a connection"),
            status_code: None,
        };
    };
    let url = format!("http://{authority}{}", http.path);
    match tokio::time::timeout(timeout, get(stream, authority, http)).await {
        Ok(Ok((status, body))) => judge(&url, http, status, &body),
        Ok(Err(e)) => ProbeOutcome {
            healthy: false,
            message: format!("GET {url} failed: {e}"),
            status_code: None,
        },
        Err(_) => ProbeOutcome {
            healthy: false,
            message: format!("GET {url} timed out after {} ms", probe.timeout_ms),
            status_code: None,
        },
    }
}

async fn get<S>(
    stream: S,
    authority: &str,
    http: &HttpExpectation,
) -> Result<(u16, Vec<u8>), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = hyper::Request::get(http.path.as_str())
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "deployd-health")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    let mut incoming = response.into_body();
    while body.len() < BODY_LIMIT {
        match incoming.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    body.extend_from_slice(data);
                }
            }
            Some(Err(e)) => return Err(e.to_string()),
            None => break,
        }
    }
    driver.abort();
    Ok((status, body))
}

fn judge(url: &str, http: &HttpExpectation, status: u16, body: &[u8]) -> ProbeOutcome {
    let outcome = |healthy, message| ProbeOutcome {
        healthy,
        message,
        status_code: Some(status),
    };
    if status != http.expected_status {
        return outcome(
            false,
            format!(
                "GET {url} answered {status}; expected {}",
                http.expected_status
            ),
        );
    }
    match &http.expected_body {
        None => outcome(true, format!("GET {url} answered {status}")),
        Some(needle) if String::from_utf8_lossy(body).contains(needle.as_str()) => {
            outcome(true, format!("GET {url} answered {status} with `{needle}`"))
        }
        Some(needle) => outcome(
            false,
            format!("GET {url} answered {status} but the body does not contain `{needle}`"),
        ),
    }
}

/// The address to dial from the target's own side: a port published on every address
/// (`0.0.0.0`, `::`) is reached on loopback.
pub fn local_socket(p: &PublishedPort) -> std::net::SocketAddr {
    let ip = if p.host_ip.is_unspecified() {
        match p.host_ip {
            std::net::IpAddr::V4(_) => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            std::net::IpAddr::V6(_) => std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        }
    } else {
        p.host_ip
    };
    std::net::SocketAddr::new(ip, p.host_port)
}

/// [`local_socket`] as text (`127.0.0.1:49153`, `[::1]:49153`).
pub fn local_address(p: &PublishedPort) -> String {
    local_socket(p).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use deploy_core::Protocol;

    fn port(container_port: u16, host_port: u16) -> PublishedPort {
        PublishedPort {
            container_port,
            protocol: Protocol::Tcp,
            host_ip: "0.0.0.0".parse().unwrap(),
            host_port,
        }
    }

    #[test]
    fn the_port_is_the_named_one_or_the_only_one() {
        let one = [port(8080, 49153)];
        assert_eq!(choose_port(&one, None).unwrap().host_port, 49153);
        assert_eq!(local_address(&one[0]), "127.0.0.1:49153");
        let two = [port(8080, 49153), port(9090, 49154)];
        assert!(
            choose_port(&two, None)
                .unwrap_err()
                .contains("several TCP ports (8080, 9090)")
        );
        assert_eq!(choose_port(&two, Some(9090)).unwrap().host_port, 49154);
        assert!(
            choose_port(&two, Some(7000))
                .unwrap_err()
                .contains("does not publish container port 7000/tcp")
        );
        assert!(
            choose_port(&[], None)
                .unwrap_err()
                .contains("publishes no TCP port")
        );
    }

    #[tokio::test]
    async fn http_over_a_stream_is_judged_by_status_and_body() {
        let server = crate::test_server::serve(vec![crate::test_server::reply(200, "ok v2")]).await;
        let addr = server.base_url.trim_start_matches("http://").to_owned();
        let probe = |body: Option<&str>, status| InstanceProbe {
            address: port(80, 1),
            http: Some(HttpExpectation {
                path: "/health".into(),
                expected_status: status,
                expected_body: body.map(str::to_owned),
            }),
            timeout_ms: 2_000,
        };
        let dial = || async { tokio::net::TcpStream::connect(addr.as_str()).await.unwrap() };
        let authority = addr.clone();
        let ok = probe_stream(dial().await, &authority, &probe(Some("v2"), 200)).await;
        assert!(ok.healthy, "{ok:?}");
        assert_eq!(ok.status_code, Some(200));
        let wrong_body = probe_stream(dial().await, &authority, &probe(Some("v3"), 200)).await;
        assert!(!wrong_body.healthy && wrong_body.message.contains("does not contain `v3`"));
        let wrong_status = probe_stream(dial().await, &authority, &probe(None, 204)).await;
        assert!(
            !wrong_status.healthy && wrong_status.message.contains("answered 200; expected 204")
        );
    }
}
