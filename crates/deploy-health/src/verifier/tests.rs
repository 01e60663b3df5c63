//! Health verification against real loopback servers: 200 then 500, closed ports, slow answers, soak, cancel, command checks.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use deploy_core::testing::ssh_target;
use deploy_core::{CommandSpec, HealthCheck, HealthCheckConfig, HttpUrl, Target};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::probe::CommandOutput;
use crate::test_server::{Reply, reply, serve};

fn http_check(path: &str, body: Option<&str>) -> HealthCheckConfig {
    HealthCheckConfig {
        check: HealthCheck::Http {
            port: None,
            path: path.into(),
            expected_status: 200,
            expected_body: body.map(str::to_owned),
        },
        timeout_ms: 500,
        retries: 3,
        interval_ms: 20,
        min_healthy_time_ms: 0,
    }
}

fn target_at(base_url: &str) -> Target {
    let mut t = ssh_target(1);
    t.health_endpoint = Some(HttpUrl::parse(base_url).unwrap());
    t
}

async fn verify(target: &Target, config: &HealthCheckConfig) -> HealthReport {
    HealthVerifier::new()
        .unwrap()
        .verify(target, config, None, &CancellationToken::new())
        .await
        .unwrap()
}

/// A port nothing listens on (bound, read, released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn healthy_on_first_200() {
    let server = serve(vec![reply(200, "ok")]).await;
    let r = verify(&target_at(&server.base_url), &http_check("/health", None)).await;
    assert_eq!(
        (r.verdict, r.attempts, r.status_code),
        (HealthVerdict::Healthy, 1, Some(200))
    );
    assert!(r.message.ends_with("/health answered 200"), "{}", r.message);
}

#[tokio::test]
async fn retries_until_healthy_within_the_budget() {
    let server = serve(vec![reply(500, ""), reply(503, ""), reply(200, "")]).await;
    let r = verify(&target_at(&server.base_url), &http_check("/health", None)).await;
    assert_eq!((r.verdict, r.attempts), (HealthVerdict::Healthy, 3));
    assert_eq!(server.requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn unhealthy_when_the_budget_is_spent() {
    let server = serve(vec![reply(500, "")]).await;
    let r = verify(&target_at(&server.base_url), &http_check("/health", None)).await;
    assert_eq!(
        (r.verdict, r.attempts, r.status_code),
        (HealthVerdict::Unhealthy, 3, Some(500))
    );
    assert!(
        r.message.ends_with("/health answered 500; expected 200"),
        "{}",
        r.message
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let server = serve(vec![reply(301, "")]).await;
    let mut c = http_check("/", None);
    c.retries = 1;
    let r = verify(&target_at(&server.base_url), &c).await;
    assert_eq!(
        (r.verdict, r.status_code),
        (HealthVerdict::Unhealthy, Some(301))
    );
}

#[tokio::test]
async fn expected_body_must_be_present() {
    let server = serve(vec![reply(200, "version=v1")]).await;
    let target = target_at(&server.base_url);
    let mut c = http_check("/version", Some("version=v2"));
    c.retries = 1;
    let r = verify(&target, &c).await;
    assert_eq!(r.verdict, HealthVerdict::Unhealthy);
    assert!(
        r.message.contains("does not contain `version=v2`"),
        "{}",
        r.message
    );
    let ok = verify(&target, &http_check("/version", Some("v1"))).await;
    assert!(ok.healthy());
}

#[tokio::test]
async fn a_closed_port_is_unhealthy_with_the_cause() {
    let target = target_at(&format!("http://127.0.0.1:{}", closed_port()));
    let r = verify(&target, &http_check("/health", None)).await;
    assert_eq!(
        (r.verdict, r.attempts, r.status_code),
        (HealthVerdict::Unhealthy, 3, None)
    );
    assert!(
        r.message.to_lowercase().contains("refused"),
        "{}",
        r.message
    );
}

#[tokio::test]
async fn a_slow_server_exceeds_the_timeout() {
    let slow = Reply {
        status: 200,
        body: "",
        delay: Duration::from_secs(5),
    };
    let server = serve(vec![slow]).await;
    let mut c = http_check("/health", None);
    c.timeout_ms = 100;
    c.retries = 2;
    let started = tokio::time::Instant::now();
    let r = verify(&target_at(&server.base_url), &c).await;
    assert_eq!((r.verdict, r.attempts), (HealthVerdict::Unhealthy, 2));
    assert!(
        r.message.ends_with("timed out after 100 ms"),
        "{}",
        r.message
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the timeout bounds each attempt"
    );
}

#[tokio::test]
async fn soak_passes_when_the_target_stays_healthy() {
    let server = serve(vec![reply(200, "")]).await;
    let mut c = http_check("/health", None);
    c.min_healthy_time_ms = 200;
    c.interval_ms = 50;
    let r = verify(&target_at(&server.base_url), &c).await;
    assert_eq!(r.verdict, HealthVerdict::Healthy);
    assert!(
        r.healthy_for >= Duration::from_millis(200),
        "{:?}",
        r.healthy_for
    );
    assert!(
        r.attempts >= 4,
        "probed through the soak, got {}",
        r.attempts
    );
}

#[tokio::test]
async fn soak_fails_when_200_turns_into_500() {
    let server = serve(vec![reply(200, ""), reply(200, ""), reply(500, "")]).await;
    let mut c = http_check("/health", None);
    c.min_healthy_time_ms = 1_000;
    c.interval_ms = 30;
    let r = verify(&target_at(&server.base_url), &c).await;
    assert_eq!(
        (r.verdict, r.attempts, r.status_code),
        (HealthVerdict::Unhealthy, 3, Some(500))
    );
    assert!(
        r.message.starts_with("became unhealthy after "),
        "{}",
        r.message
    );
    assert!(
        r.message.contains("of the required 1000 ms"),
        "{}",
        r.message
    );
}

#[tokio::test]
async fn cancel_stops_a_long_soak_promptly() {
    let server = serve(vec![reply(200, "")]).await;
    let mut c = http_check("/health", None);
    c.min_healthy_time_ms = 60_000;
    c.interval_ms = 100;
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        trigger.cancel();
    });
    let started = tokio::time::Instant::now();
    let r = HealthVerifier::new()
        .unwrap()
        .verify(&target_at(&server.base_url), &c, None, &cancel)
        .await
        .unwrap();
    assert_eq!(r.verdict, HealthVerdict::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn tcp_checks_connect_to_the_endpoint_host() {
    let server = serve(vec![reply(200, "")]).await;
    let port: u16 = server.base_url.rsplit(':').next().unwrap().parse().unwrap();
    let target = target_at(&server.base_url);
    let mut c = HealthCheckConfig::new(HealthCheck::Tcp { port });
    c.interval_ms = 10;
    assert!(verify(&target, &c).await.healthy());
    c.check = HealthCheck::Tcp {
        port: closed_port(),
    };
    let r = verify(&target, &c).await;
    assert_eq!(r.verdict, HealthVerdict::Unhealthy);
    assert!(r.message.contains("refused"), "{}", r.message);
}

/// Instances on this machine: published where `ports` say, probed with a local connect
/// (the executors' probes go through the target's connection instead; they run the
/// same `probe_stream`).
struct LocalInstances {
    ports: Vec<deploy_core::PublishedPort>,
}

#[async_trait]
impl crate::InstanceProber for LocalInstances {
    async fn published(
        &self,
        _target: &Target,
        _slot: &deploy_core::Name,
        _timeout: Duration,
        _cancel: CancellationToken,
    ) -> Result<Vec<deploy_core::PublishedPort>, String> {
        Ok(self.ports.clone())
    }

    async fn probe(
        &self,
        _target: &Target,
        probe: &deploy_core::InstanceProbe,
        _cancel: CancellationToken,
    ) -> Result<deploy_core::ProbeOutcome, String> {
        let local = crate::local_socket(&probe.address);
        Ok(crate::probe_tcp(
            &local.ip().to_string(),
            local.port(),
            &local.to_string(),
            probe,
        )
        .await)
    }
}

#[tokio::test]
async fn without_an_endpoint_http_and_tcp_probe_the_deployed_instance() {
    let server = serve(vec![reply(200, "v2")]).await;
    let host_port: u16 = server.base_url.rsplit(':').next().unwrap().parse().unwrap();
    let published = |container_port, host_port| deploy_core::PublishedPort {
        container_port,
        protocol: deploy_core::Protocol::Tcp,
        host_ip: "0.0.0.0".parse().unwrap(),
        host_port,
    };
    let verifier = HealthVerifier::new()
        .unwrap()
        .with_instance_prober(Arc::new(LocalInstances {
            ports: vec![published(8080, host_port), published(9090, closed_port())],
        }));
    let target = ssh_target(1); // no health endpoint
    let web = deploy_core::testing::name("web");
    let cancel = CancellationToken::new();
    let mut http = http_check("/health", Some("v2"));
    // Two ports published: the check must name one.
    let err = verifier
        .verify(&target, &http, Some(&web), &cancel)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("several TCP ports (8080, 9090)"),
        "{err}"
    );
    if let HealthCheck::Http { port, .. } = &mut http.check {
        *port = Some(8080);
    }
    let r = verifier
        .verify(&target, &http, Some(&web), &cancel)
        .await
        .unwrap();
    assert_eq!(
        (r.verdict, r.status_code),
        (HealthVerdict::Healthy, Some(200)),
        "{r:?}"
    );
    assert!(
        r.message.contains(&format!("127.0.0.1:{host_port}/health")),
        "{r:?}"
    );
    let tcp = |port| HealthCheckConfig {
        retries: 1,
        ..HealthCheckConfig::new(HealthCheck::Tcp { port })
    };
    assert!(
        verifier
            .verify(&target, &tcp(8080), Some(&web), &cancel)
            .await
            .unwrap()
            .healthy()
    );
    let closed = verifier
        .verify(&target, &tcp(9090), Some(&web), &cancel)
        .await
        .unwrap();
    assert_eq!(closed.verdict, HealthVerdict::Unhealthy, "{closed:?}");
    let unpublished = verifier
        .verify(&target, &tcp(7000), Some(&web), &cancel)
        .await
        .unwrap_err();
    assert!(
        unpublished
            .to_string()
            .contains("does not publish container port 7000/tcp"),
        "{unpublished}"
    );
}

/// Runs commands as local processes: the real thing for a target that is this machine.
struct LocalRunner;

#[async_trait]
impl CommandRunner for LocalRunner {
    async fn run(
        &self,
        _target: &Target,
        command: &CommandSpec,
        timeout: Duration,
        _cancel: CancellationToken,
    ) -> Result<CommandOutput, String> {
        let argv = command.argv();
        let run = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        Ok(CommandOutput {
            exit_code: out.status.code().unwrap_or(-1),
            output: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

#[tokio::test]
async fn command_checks_use_the_exit_code() {
    let verifier = HealthVerifier::new()
        .unwrap()
        .with_command_runner(Arc::new(LocalRunner));
    let target = ssh_target(1);
    let cmd = |argv: &[&str]| {
        let mut c = HealthCheckConfig::new(HealthCheck::Command {
            in_container: false,
            command: CommandSpec::new(argv.iter().map(|s| s.to_string()).collect()).unwrap(),
        });
        c.retries = 1;
        c
    };
    let cancel = CancellationToken::new();
    assert!(
        verifier
            .verify(&target, &cmd(&["true"]), None, &cancel)
            .await
            .unwrap()
            .healthy()
    );
    let r = verifier
        .verify(
            &target,
            &cmd(&["sh", "-c", "echo broken >&2; exit 3"]),
            None,
            &cancel,
        )
        .await
        .unwrap();
    assert_eq!(r.verdict, HealthVerdict::Unhealthy);
    assert_eq!(
        r.message,
        "command `sh -c echo broken >&2; exit 3` exited 3: broken"
    );
}

/// A command check that cannot run at all (the runner fails, as an SSH runner does when
/// the host refuses the connection) is `Unreachable`, not a verdict on the version.
#[tokio::test]
async fn a_command_check_that_cannot_run_is_unreachable_not_unhealthy() {
    let verifier = HealthVerifier::new()
        .unwrap()
        .with_command_runner(Arc::new(LocalRunner));
    let mut config = HealthCheckConfig::new(HealthCheck::Command {
        in_container: false,
        command: CommandSpec::new(vec!["/nonexistent/deploy-health-probe".into()]).unwrap(),
    });
    config.retries = 2;
    config.interval_ms = 10;
    let cancel = CancellationToken::new();
    let r = verifier
        .verify(&ssh_target(1), &config, None, &cancel)
        .await
        .unwrap();
    assert_eq!(r.verdict, HealthVerdict::Unreachable, "{r:?}");
    assert_eq!(r.attempts, 2);
    assert!(
        r.message
            .starts_with("command `/nonexistent/deploy-health-probe` could not run: "),
        "{}",
        r.message
    );
    assert!(!r.healthy());
}

#[tokio::test]
async fn misconfiguration_is_an_error_not_a_verdict() {
    let verifier = HealthVerifier::new().unwrap();
    let cancel = CancellationToken::new();
    let no_endpoint = ssh_target(2);
    let err = verifier
        .verify(&no_endpoint, &http_check("/h", None), None, &cancel)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "target `host-2` has no health_endpoint and no deployed instance to probe; expected one of the two for an http or tcp health check"
    );
    let command = HealthCheckConfig::new(HealthCheck::Command {
        in_container: false,
        command: CommandSpec::new(vec!["true".into()]).unwrap(),
    });
    assert!(matches!(
        verifier.verify(&no_endpoint, &command, None, &cancel).await,
        Err(HealthError::NoCommandRunner { .. })
    ));
    let mut bad = http_check("/h", None);
    bad.retries = 0;
    assert!(matches!(
        verifier
            .verify(&target_at("http://127.0.0.1:1"), &bad, None, &cancel)
            .await,
        Err(HealthError::InvalidConfig { .. })
    ));
}

/// A target that cannot say where its instance publishes (its connection is down).
struct UnreachableInstances;

#[async_trait]
impl crate::InstanceProber for UnreachableInstances {
    async fn published(
        &self,
        _target: &Target,
        _slot: &deploy_core::Name,
        _timeout: Duration,
        _cancel: CancellationToken,
    ) -> Result<Vec<deploy_core::PublishedPort>, String> {
        Err("ssh 127.0.0.1:22: connection refused".to_owned())
    }

    async fn probe(
        &self,
        _target: &Target,
        _probe: &deploy_core::InstanceProbe,
        _cancel: CancellationToken,
    ) -> Result<deploy_core::ProbeOutcome, String> {
        unreachable!("no address to probe")
    }
}

#[tokio::test]
async fn an_instance_the_target_cannot_locate_is_unreachable_not_an_error() {
    let verifier = HealthVerifier::new()
        .unwrap()
        .with_instance_prober(Arc::new(UnreachableInstances));
    let web = deploy_core::testing::name("web");
    let r = verifier
        .verify(
            &ssh_target(1),
            &http_check("/health", None),
            Some(&web),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(r.verdict, HealthVerdict::Unreachable, "{r:?}");
    assert!(r.message.contains("connection refused"), "{r:?}");
}
