//! Shared setup of the SSH integration tests: real sshd hosts, a registry, test images, targets and requests.

use std::sync::Arc;
use std::time::Duration;

use deploy_core::testing::{task, ts};
use deploy_core::{
    ArtifactKind, Connection, ContainerSpec, CredentialRef, Digest, GeneratedArtifact, Host,
    HostKeyPolicy, ImageRef, Name, PortMapping, Protocol, SshConnection, Target, TargetType,
    UnixPath, Username,
};
use deploy_exec::ssh::{SshExecutor, SshExecutorConfig};
use deploy_exec::{ComponentSpec, DefaultSecrets, DeployRequest, ExecContext, MemorySink};
use deploy_testkit::{IMAGE_HTTP_PORT, Registry, SSH_TEST_USER, SshdHosts, TestImages};

/// A test-unique prefix for container names, project names and files.
pub fn prefix(test: &str) -> String {
    format!("dx{}{}", test, std::process::id())
}

pub fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

/// The executor under test; the test image (busybox httpd as PID 1) ignores SIGTERM, so a short stop grace.
pub fn executor(hosts: &SshdHosts) -> SshExecutor {
    let mut config = SshExecutorConfig::new(hosts.known_hosts());
    config.stop_timeout = std::time::Duration::from_secs(1);
    SshExecutor::new(config, Arc::new(DefaultSecrets))
}

pub fn file_ref(path: &std::path::Path) -> CredentialRef {
    CredentialRef::parse(&format!("file:{}", path.display())).unwrap()
}

/// A target on host `i` of `hosts`, logging in with the authorised ed25519 key and strict known_hosts.
pub fn target(hosts: &SshdHosts, i: u8, target_type: TargetType, work_dir: &str) -> Target {
    let mut t = deploy_core::testing::ssh_target(i);
    t.name = name(&format!("host-{i}"));
    t.target_type = target_type;
    t.connection = Connection::Ssh(SshConnection {
        host: Host::parse(&hosts.host(i)).unwrap(),
        port: hosts.port(),
        user: Username::parse(SSH_TEST_USER).unwrap(),
        credential_ref: file_ref(&hosts.client_key()),
        work_dir: Some(UnixPath::parse(work_dir).unwrap()),
        host_key: HostKeyPolicy::KnownHosts,
    });
    t
}

pub fn ssh_mut(t: &mut Target) -> &mut SshConnection {
    match &mut t.connection {
        Connection::Ssh(s) => s,
        _ => unreachable!(),
    }
}

pub fn ctx(timeout_secs: u64) -> (MemorySink, ExecContext) {
    let sink = MemorySink::new();
    let ctx = ExecContext::new(Arc::new(sink.clone()), Duration::from_secs(timeout_secs));
    (sink, ctx)
}

pub fn docker_request(target: &Target, container: &Name, image: &str, n: u64) -> DeployRequest {
    let image = ImageRef::parse(image).unwrap();
    let mut t = task(n, 3);
    t.digest = image.digest().clone();
    DeployRequest {
        target: target.clone(),
        task: t,
        component: Some(ComponentSpec {
            name: container.clone(),
            container: ContainerSpec {
                ports: vec![loopback_port(IMAGE_HTTP_PORT)],
                // busybox httpd ignores SIGTERM: a short grace keeps background stops quick.
                stop_grace_secs: 1,
                ..ContainerSpec::from_image(image)
            },
            keep_previous_running: false,
        }),
        project: container.clone(),
        artifacts: Vec::new(),
        stored_lock: None,
        rollback: false,
    }
}

/// Container `port` published on an ephemeral 127.0.0.1 port.
pub fn loopback_port(port: u16) -> PortMapping {
    PortMapping {
        host_ip: Some(std::net::Ipv4Addr::LOCALHOST.into()),
        host_port: None,
        container_port: port,
        protocol: Protocol::Tcp,
    }
}

pub fn artifact(kind: ArtifactKind, file: &str, content: String) -> GeneratedArtifact {
    use deploy_core::testing::{artifact_id, job_id};
    GeneratedArtifact::new(artifact_id(1), job_id(1), None, kind, name(file), content)
}

/// A hand-written compose lock: one `web` service pinned by digest, labelled like deploy-artifacts does.
pub fn compose_lock(image: &str) -> String {
    let digest = image.rsplit_once('@').unwrap().1;
    format!(
        "version: \"2.4\"\nservices:\n  web:\n    image: {image}\n    ports:\n      - \"127.0.0.1::8080\"\n    env_file:\n      - app.env\n    labels:\n      stella.component: web\n      stella.digest: \"{digest}\"\n"
    )
}

pub fn compose_request(target: &Target, project: &Name, image: &str, n: u64) -> DeployRequest {
    let lock = artifact(
        ArtifactKind::ComposeLock,
        "docker-compose.lock.yml",
        compose_lock(image),
    );
    let env = artifact(
        ArtifactKind::EnvFile,
        "app.env",
        "GREETING=hello\n".to_owned(),
    );
    let mut t = task(n, 3);
    t.digest = lock.sha256.clone();
    t.created_at = ts(n);
    DeployRequest {
        target: target.clone(),
        task: t,
        component: None,
        project: project.clone(),
        artifacts: vec![lock, env],
        stored_lock: None,
        rollback: false,
    }
}

pub fn digest_of(image: &str) -> Digest {
    Digest::parse(image.rsplit_once('@').unwrap().1).unwrap()
}

/// GET /version from a container's published port.
pub fn version_of(container: &str) -> String {
    let addr = deploy_testkit::published_addr(container, IMAGE_HTTP_PORT).unwrap();
    let (status, body) = deploy_testkit::http_get(&addr, "/version").unwrap();
    assert_eq!(status, 200, "{container} at {addr}");
    body.trim().to_owned()
}

/// The label of a container, via the local engine.
pub fn label(container: &str, key: &str) -> String {
    deploy_testkit::run_checked(
        "docker",
        &[
            "inspect",
            "--format",
            &format!("{{{{index .Config.Labels {key:?}}}}}"),
            container,
        ],
    )
    .unwrap()
    .trim()
    .to_owned()
}

/// A work dir under /tmp writable by the test user, removed on drop.
pub struct WorkDir(pub String);

impl WorkDir {
    pub fn new(prefix: &str) -> Self {
        let path = format!("/tmp/{prefix}-work");
        let _ = std::fs::remove_dir_all(&path);
        Self(path)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Everything a deploy test needs.
pub struct Peers {
    pub hosts: SshdHosts,
    /// Kept alive for the test's duration.
    pub _registry: Registry,
    pub images: TestImages,
}

impl Peers {
    pub fn start(hosts: u8, repo: &str) -> Self {
        let hosts = SshdHosts::start(hosts).unwrap();
        let registry = Registry::start().unwrap();
        let images = TestImages::build(&registry, repo).unwrap();
        Self {
            hosts,
            _registry: registry,
            images,
        }
    }
}

/// One deploy test's world: peers, a work dir, the executor, a target on host 1 and a
/// test-unique container/project name; containers with that prefix are removed on drop.
pub struct Scene {
    /// First field: dropped first, so containers go before the registry removes its images.
    _cleanup: deploy_testkit::ContainerCleanup,
    pub p: String,
    pub peers: Peers,
    pub exec: SshExecutor,
    pub target: Target,
    /// `<prefix>-web` (docker_host container) — for compose_host the project is `p`.
    pub web: Name,
    _work: WorkDir,
}

impl Scene {
    pub fn start(test: &str, target_type: TargetType) -> Self {
        let p = prefix(test);
        let cleanup = deploy_testkit::ContainerCleanup::new(&p);
        let peers = Peers::start(1, &format!("{p}/app"));
        let work = WorkDir::new(&p);
        let exec = executor(&peers.hosts);
        let target = target(&peers.hosts, 1, target_type, &work.0);
        let web = name(&format!("{p}-web"));
        Self {
            _cleanup: cleanup,
            p,
            peers,
            exec,
            target,
            web,
            _work: work,
        }
    }

    pub fn work_dir(&self) -> &str {
        &self._work.0
    }

    /// Deploys `image` as the `web` container and asserts success.
    pub async fn deploy_web(&self, image: &str, n: u64, c: &ExecContext, logs: &MemorySink) {
        use deploy_exec::Executor;
        let r = self
            .exec
            .deploy(&docker_request(&self.target, &self.web, image, n), c)
            .await;
        assert!(r.is_ok(), "{r:?}\n{:#?}", logs.lines());
    }
}
