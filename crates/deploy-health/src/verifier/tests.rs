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
        .verify(target, config, &CancellationToken::new())
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
        .verify(&target_at(&server.base_url), &c, &cancel)
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

#[tokio::test]
async fn tcp_without_endpoint_uses_the_ssh_host() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let target = ssh_target(1); // 127.0.0.1 over ssh, no health endpoint
    assert!(
        verify(&target, &HealthCheckConfig::new(HealthCheck::Tcp { port }))
            .await
            .healthy()
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
            command: CommandSpec::new(argv.iter().map(|s| s.to_string()).collect()).unwrap(),
        });
        c.retries = 1;
        c
    };
    let cancel = CancellationToken::new();
    assert!(
        verifier
            .verify(&target, &cmd(&["true"]), &cancel)
            .await
            .unwrap()
            .healthy()
    );
    let r = verifier
        .verify(
            &target,
            &cmd(&["sh", "-c", "echo broken >&2; exit 3"]),
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
        command: CommandSpec::new(vec!["/nonexistent/deploy-health-probe".into()]).unwrap(),
    });
    config.retries = 2;
    config.interval_ms = 10;
    let cancel = CancellationToken::new();
    let r = verifier
        .verify(&ssh_target(1), &config, &cancel)
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
        .verify(&no_endpoint, &http_check("/h", None), &cancel)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "target `host-2` has no health_endpoint; expected one for an http health check"
    );
    let command = HealthCheckConfig::new(HealthCheck::Command {
        command: CommandSpec::new(vec!["true".into()]).unwrap(),
    });
    assert!(matches!(
        verifier.verify(&no_endpoint, &command, &cancel).await,
        Err(HealthError::NoCommandRunner { .. })
    ));
    let mut bad = http_check("/h", None);
    bad.retries = 0;
    assert!(matches!(
        verifier
            .verify(&target_at("http://127.0.0.1:1"), &bad, &cancel)
            .await,
        Err(HealthError::InvalidConfig { .. })
    ));
}
