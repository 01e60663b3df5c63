//! Fixtures the in-process engine scenarios share: an engine over the real SSH executor, sshd-hosted targets and promoted releases.

use std::sync::Arc;
use std::time::Duration;

use deploy_core::testing::{approved_promotion, component_id, release_id, ssh_target, ts};
use deploy_core::{
    CommandSpec, Component, Connection, CredentialRef, ExecutionModel, HealthCheck,
    HealthCheckConfig, Host, HostKeyPolicy, ImageRef, Name, PromotionId, Release, RetryBackoff,
    SshConnection, Target, TargetType, UnixPath, Username,
};
use deploy_engine::{Engine, EngineConfig, SystemClock};
use deploy_exec::ExecutorRegistry;
use deploy_exec::ssh::{SshExecutor, SshExecutorConfig};
use deploy_store::Store;
use deploy_testkit::{IMAGE_HTTP_PORT, SSH_TEST_USER, SshdHosts};

/// An engine named `<prefix>-engine` on `store`, dispatching to `hosts` over SSH, with
/// short retries and no shutdown grace, as the scenario worlds want.
pub(crate) fn ssh_engine(store: Arc<dyn Store>, hosts: &SshdHosts, prefix: &str) -> Engine {
    let mut exec_config = SshExecutorConfig::new(hosts.known_hosts());
    // busybox httpd as PID 1 ignores SIGTERM: a short stop grace.
    exec_config.stop_timeout = Duration::from_secs(1);
    let executor = Arc::new(SshExecutor::new(
        exec_config,
        Arc::new(deploy_exec::DefaultSecrets),
    ));
    let mut executors = ExecutorRegistry::new();
    executors.register(ExecutionModel::Ssh, executor);
    let mut config = EngineConfig::new(format!("{prefix}-engine"));
    config.task_timeout = Duration::from_secs(60);
    config.backoff = RetryBackoff {
        base: Duration::from_millis(100),
        max: Duration::from_millis(500),
    };
    config.shutdown_grace = Duration::ZERO;
    Engine::new(store, executors, config, Arc::new(SystemClock)).unwrap()
}

/// Stores release `n` (`r<n>`, one `web` component running `image`) and its approved
/// promotion; the promotion's id.
pub(crate) async fn promoted_release(store: &dyn Store, n: u64, image: &str) -> PromotionId {
    let release = Release::new(
        release_id(n),
        Name::parse(&format!("r{n}")).unwrap(),
        vec![Component {
            // The same component keeps its id across releases: rollback slots
            // are (target, component id).
            id: component_id(1),
            name: Name::parse("web").unwrap(),
            image: ImageRef::parse(image).unwrap(),
        }],
        ts(n),
    )
    .unwrap();
    store.put_release(&release).await.unwrap();
    let p = approved_promotion(n, release.id);
    store.put_promotion(&p).await.unwrap();
    p.id
}

/// Docker host target `host-<i>` on sshd host `i` of `hosts` (work dir `/tmp/<prefix>-work`),
/// `container` checked by `docker exec <container> /bin/busybox wget .../health`: `retries`
/// probes, `interval_ms` apart, 5 s each at most. No labels.
pub(crate) fn sshd_docker_target(
    hosts: &SshdHosts,
    i: u8,
    prefix: &str,
    container: &str,
    retries: u32,
    interval_ms: u64,
) -> Target {
    let mut t = ssh_target(i);
    t.name = Name::parse(&format!("host-{i}")).unwrap();
    t.target_type = TargetType::DockerHost;
    t.connection = Connection::Ssh(SshConnection {
        host: Host::parse(&hosts.host(i)).unwrap(),
        port: hosts.port(),
        user: Username::parse(SSH_TEST_USER).unwrap(),
        credential_ref: CredentialRef::parse(&format!("file:{}", hosts.client_key().display()))
            .unwrap(),
        work_dir: Some(UnixPath::parse(&format!("/tmp/{prefix}-work")).unwrap()),
        host_key: HostKeyPolicy::KnownHosts,
    });
    let url = format!("http://127.0.0.1:{IMAGE_HTTP_PORT}/health");
    let argv = [
        "docker",
        "exec",
        container,
        "/bin/busybox",
        "wget",
        "-q",
        "-O-",
        &url,
    ];
    let mut health = HealthCheckConfig::new(HealthCheck::Command {
        in_container: false,
        command: CommandSpec::new(argv.iter().map(|s| (*s).to_owned()).collect()).unwrap(),
    });
    health.retries = retries;
    health.interval_ms = interval_ms;
    health.timeout_ms = 5_000;
    t.health_check = Some(health);
    t
}
