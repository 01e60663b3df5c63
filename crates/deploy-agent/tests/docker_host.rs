//! The runtime against the real Docker Engine, a loopback registry and the testkit images: deploy, swap, serve, inspect, revert, no-op, broken image, cancel, health_command.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] fns: a panic there is a failing test"
)]

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use deploy_agent::agent::redactor_for;
use deploy_agent::docker::{DockerConfig, DockerHost};
use deploy_agent::redact::Redactor;
use deploy_agent::runtime::Runtime;
use deploy_agent::tasklog::TaskLog;
use deploy_api::agent::{
    AgentAction, AgentErrorCode, ComponentPayload, DeployPayload, RegistryAuth, TaskDelivery,
    TaskKey, TaskOutcome,
};
use deploy_core::testing::{name, task_id};
use deploy_core::{
    CommandSpec, Connection, ContainerSpec, Digest, ImageRef, PortMapping, Protocol, Target,
    TargetType,
};
use deploy_testkit::{ContainerCleanup, IMAGE_HTTP_PORT, Registry, TestImages, published_addr};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::common::fixtures::{agent_target, version_at};

const SOCKET: &str = "/var/run/docker.sock";

fn target(work_dir: &str) -> Target {
    agent_target("agent-host", TargetType::DockerHost, work_dir)
}

fn deploy(n: u64, container: &str, image: &str, args: &[&str]) -> TaskDelivery {
    let image = ImageRef::parse(image).unwrap();
    TaskDelivery {
        key: TaskKey {
            task_id: task_id(n),
            attempt: 1,
        },
        target: target("/tmp"),
        action: AgentAction::Deploy {
            deploy: DeployPayload {
                digest: image.digest().clone(),
                component: Some(ComponentPayload {
                    name: name(container),
                    container: ContainerSpec {
                        ports: vec![PortMapping {
                            host_ip: Some(std::net::Ipv4Addr::LOCALHOST.into()),
                            host_port: None,
                            container_port: IMAGE_HTTP_PORT,
                            protocol: Protocol::Tcp,
                        }],
                        command: (!args.is_empty())
                            .then(|| args.iter().map(|s| (*s).to_owned()).collect()),
                        // busybox httpd ignores SIGTERM: a short grace keeps stops quick.
                        stop_grace_secs: 1,
                        ..ContainerSpec::from_image(image)
                    },
                    keep_previous_running: false,
                    stop_first: false,
                }),
                project: name(container),
                artifacts: Vec::new(),
                registry_auth: None,
                secret_values: Vec::new(),
            },
        },
        timeout_ms: 60_000,
    }
}

fn as_rollback(mut d: TaskDelivery) -> TaskDelivery {
    if let AgentAction::Deploy { deploy } = d.action {
        d.action = AgentAction::Rollback { deploy };
    }
    d
}

fn log() -> TaskLog {
    TaskLog::new("test", Redactor::new(), Arc::new(Notify::new()))
}

fn digest_of(image: &str) -> Digest {
    ImageRef::parse(image).unwrap().digest().clone()
}

async fn runtime() -> Runtime {
    runtime_with(DockerConfig::default()).await
}

async fn runtime_with(config: DockerConfig) -> Runtime {
    let docker = DockerHost::connect(SOCKET.as_ref(), config)
        .await
        .expect("the Docker Engine on /var/run/docker.sock (this test needs it)");
    Runtime::new(Some(docker), None)
}

/// `/version` of the container, retried while it starts.
fn version(container: &str) -> String {
    let addr = published_addr(container, IMAGE_HTTP_PORT).unwrap();
    version_at(&addr, container)
}

/// Where `container` publishes the image's HTTP port, as the agent reports it.
fn published_port(container: &str) -> deploy_core::PublishedPort {
    let addr = published_addr(container, IMAGE_HTTP_PORT).unwrap();
    let (ip, port) = addr.rsplit_once(':').unwrap();
    deploy_core::PublishedPort {
        container_port: IMAGE_HTTP_PORT,
        protocol: Protocol::Tcp,
        host_ip: ip.trim_matches(['[', ']']).parse().unwrap(),
        host_port: port.parse().unwrap(),
    }
}

fn container_id(container: &str) -> String {
    deploy_testkit::run_checked(
        "docker",
        &[
            "inspect",
            "--type",
            "container",
            "--format",
            "{{.Id}}",
            container,
        ],
    )
    .unwrap()
    .trim()
    .to_owned()
}

fn containers(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = deploy_testkit::run_checked(
        "docker",
        &[
            "ps",
            "-a",
            "--format",
            "{{.Names}}",
            "--filter",
            &format!("name=^{prefix}"),
        ],
    )
    .unwrap()
    .split_whitespace()
    .map(str::to_owned)
    .collect();
    names.sort();
    names
}

async fn run(rt: &Runtime, d: &TaskDelivery) -> TaskOutcome {
    rt.execute(d, &log(), &CancellationToken::new()).await
}

fn deployed(outcome: &TaskOutcome) -> (Digest, Option<Digest>, bool) {
    match outcome {
        TaskOutcome::Deployed {
            deployed_digest,
            previous_digest,
            changed,
            ..
        } => (deployed_digest.clone(), previous_digest.clone(), *changed),
        other => panic!("expected deployed, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_swap_inspect_revert_noop_and_broken() {
    let prefix = format!("agtlife{}", std::process::id());
    let _cleanup = ContainerCleanup::new(&prefix);
    let registry = Registry::start().unwrap();
    let images = TestImages::build(&registry, &format!("{prefix}/app")).unwrap();
    let rt = runtime().await;
    let web = format!("{prefix}-web");
    let (v1, v2) = (digest_of(&images.v1), digest_of(&images.v2));

    // v1: a first deploy, nothing before it, pulled with registry credentials (the
    // loopback registry ignores them) that never reach the task log.
    let password = "pw-registry-s3cret";
    let mut first = deploy(1, &web, &images.v1, &[]);
    if let AgentAction::Deploy { deploy } = &mut first.action {
        deploy.registry_auth = Some(RegistryAuth {
            server: registry.address(),
            username: "agent".to_owned(),
            password: password.to_owned(),
        });
    }
    let log = TaskLog::new(
        "t",
        redactor_for(&first, "dpa_credential"),
        Arc::new(Notify::new()),
    );
    log.agent(&format!("a line that would leak {password}"));
    let out = rt.execute(&first, &log, &CancellationToken::new()).await;
    let (_, lines) = log.unacknowledged();
    assert!(
        lines.iter().any(|l| l.text.starts_with("pulling ")),
        "{lines:?}"
    );
    assert!(
        lines.iter().all(|l| !l.text.contains(password)),
        "{lines:?}"
    );
    assert_eq!(deployed(&out), (v1.clone(), None, true));
    assert_eq!(version(&web), "v1");

    // v2: v1 kept as -previous, v2 serves.
    let v1_id = container_id(&web);
    let out = run(&rt, &deploy(2, &web, &images.v2, &[])).await;
    assert_eq!(deployed(&out), (v2.clone(), Some(v1.clone()), true));
    assert_eq!(version(&web), "v2");
    assert_eq!(container_id(&format!("{web}-previous")), v1_id);
    assert_eq!(
        containers(&prefix),
        [web.clone(), format!("{web}-previous")]
    );

    // inspect reports v2 from the labels.
    let inspect = TaskDelivery {
        action: AgentAction::Inspect {
            component: name(&web),
        },
        ..deploy(3, &web, &images.v2, &[])
    };
    match run(&rt, &inspect).await {
        TaskOutcome::Inspected { digest, published } => {
            assert_eq!(digest, Some(v2.clone()));
            // The instance's published port: what health checks probe.
            let addr = published_addr(&web, IMAGE_HTTP_PORT).unwrap();
            assert!(
                published.iter().any(|p| p.container_port == IMAGE_HTTP_PORT
                    && addr.ends_with(&format!(":{}", p.host_port))),
                "{published:?} vs {addr}"
            );
        }
        other => panic!("{other:?}"),
    }
    // The agent probes the instance from the host.
    let port = published_port(&web);
    let probe = |path: &str| TaskDelivery {
        action: AgentAction::Probe {
            probe: deploy_core::InstanceProbe {
                address: port,
                http: Some(deploy_core::HttpExpectation {
                    path: path.to_owned(),
                    expected_status: 200,
                    expected_body: Some("v2".to_owned()),
                }),
                timeout_ms: 2_000,
            },
        },
        ..deploy(31, &web, &images.v2, &[])
    };
    match run(&rt, &probe("/version")).await {
        TaskOutcome::Probed { verdict } => assert!(verdict.healthy, "{verdict:?}"),
        other => panic!("{other:?}"),
    }
    match run(&rt, &probe("/missing")).await {
        TaskOutcome::Probed { verdict } => {
            assert!(
                !verdict.healthy && verdict.status_code == Some(404),
                "{verdict:?}"
            );
        }
        other => panic!("{other:?}"),
    }

    // A no-op redeploy of v2.
    let out = run(&rt, &deploy(4, &web, &images.v2, &[])).await;
    assert_eq!(deployed(&out), (v2.clone(), Some(v2.clone()), false));

    // Rollback to v1 revives the kept container itself (same id, no new container).
    let out = run(&rt, &as_rollback(deploy(5, &web, &images.v1, &[]))).await;
    assert_eq!(deployed(&out), (v1.clone(), Some(v2.clone()), true));
    assert_eq!(container_id(&web), v1_id, "the kept -previous was revived");
    assert_eq!(version(&web), "v1");

    // A broken image (exits at once) fails; v1 still serves, nothing left over.
    let out = run(
        &rt,
        &deploy(6, &web, &images.v3_broken, &["/bin/sh", "-c", "exit 3"]),
    )
    .await;
    match &out {
        TaskOutcome::Failed {
            error,
            previous_digest,
        } => {
            assert_eq!(error.code, AgentErrorCode::StartFailed, "{error:?}");
            assert_eq!(previous_digest.as_ref(), Some(&v1));
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(version(&web), "v1");
    assert_eq!(container_id(&web), v1_id);
    assert_eq!(
        containers(&prefix),
        [web.clone(), format!("{web}-previous")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_deploy_leaves_no_duplicate_and_the_old_one_serving() {
    let prefix = format!("agtcancel{}", std::process::id());
    let _cleanup = ContainerCleanup::new(&prefix);
    let registry = Registry::start().unwrap();
    let images = TestImages::build(&registry, &format!("{prefix}/app")).unwrap();
    let rt = Arc::new(runtime().await);
    let web = format!("{prefix}-web");
    let out = run(&rt, &deploy(1, &web, &images.v1, &[])).await;
    deployed(&out);

    // Cancel v2 while it settles (after `-next` was created, before the swap).
    let cancel = CancellationToken::new();
    let task = {
        let (rt, cancel) = (rt.clone(), cancel.clone());
        let d = deploy(2, &web, &images.v2, &[]);
        tokio::spawn(async move { rt.execute(&d, &log(), &cancel).await })
    };
    let next = format!("{web}-next");
    for _ in 0..200 {
        if containers(&prefix).contains(&next) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cancel.cancel();
    let out = task.await.unwrap();
    match out {
        TaskOutcome::Failed { error, .. } => assert_eq!(error.code, AgentErrorCode::Cancelled),
        other => panic!("expected cancelled, got {other:?}"),
    }
    assert_eq!(
        containers(&prefix),
        vec![web.clone()],
        "no -next left behind"
    );
    assert_eq!(version(&web), "v1");

    // A timeout is the same cut; the next deploy then works.
    let mut d = deploy(3, &web, &images.v2, &[]);
    d.timeout_ms = 1;
    match run(&rt, &d).await {
        TaskOutcome::Failed { error, .. } => assert_eq!(error.code, AgentErrorCode::Timeout),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(!containers(&prefix).contains(&next));
    let out = run(&rt, &deploy(4, &web, &images.v2, &[])).await;
    assert!(deployed(&out).2);
    assert_eq!(version(&web), "v2");
}

#[tokio::test]
async fn health_command_reports_status_and_redacted_stdout() {
    let rt = Runtime::new(None, None);
    let command = |argv: &[&str]| TaskDelivery {
        key: TaskKey {
            task_id: task_id(9),
            attempt: 1,
        },
        target: target("/tmp"),
        action: AgentAction::HealthCommand {
            command: CommandSpec::new(argv.iter().map(|s| (*s).to_owned()).collect()).unwrap(),
        },
        timeout_ms: 10_000,
    };
    let log = TaskLog::new("t", Redactor::new().with("s3cret"), Arc::new(Notify::new()));
    let out = rt
        .execute(
            &command(&["sh", "-c", "echo ok s3cret; echo oops >&2; exit 4"]),
            &log,
            &CancellationToken::new(),
        )
        .await;
    assert_eq!(
        out,
        TaskOutcome::CommandRan {
            exit_status: 4,
            stdout: "ok [REDACTED]\n".to_owned()
        }
    );
    let (_, lines) = log.unacknowledged();
    assert!(lines.iter().any(|l| l.text == "oops"), "{lines:?}");
    // The head only: 64 KiB of a larger output.
    let out = run(
        &rt,
        &command(&["sh", "-c", "head -c 200000 /dev/zero | tr '\\0' a"]),
    )
    .await;
    match out {
        TaskOutcome::CommandRan {
            exit_status: 0,
            stdout,
        } => assert_eq!(stdout.len(), 64 * 1024),
        other => panic!("{other:?}"),
    }
    // A missing program is a host error, a slow one times out.
    let out = run(&rt, &command(&["/nonexistent/x"])).await;
    assert!(
        matches!(&out, TaskOutcome::Failed { error, .. } if error.code == AgentErrorCode::HostError),
        "{out:?}"
    );
    // It runs in the target's work_dir, which must exist.
    let work = tempfile::tempdir().unwrap();
    let mut pwd = command(&["pwd"]);
    pwd.target = target(work.path().to_str().unwrap());
    match run(&rt, &pwd).await {
        TaskOutcome::CommandRan {
            exit_status: 0,
            stdout,
        } => assert_eq!(
            std::fs::canonicalize(stdout.trim()).unwrap(),
            std::fs::canonicalize(work.path()).unwrap()
        ),
        other => panic!("{other:?}"),
    }
    let mut nowhere = command(&["true"]);
    nowhere.target = target("/nonexistent/work");
    match run(&rt, &nowhere).await {
        TaskOutcome::Failed { error, .. } => {
            assert_eq!(error.code, AgentErrorCode::HostError);
            assert!(
                error.message.contains("/nonexistent/work"),
                "{}",
                error.message
            );
        }
        other => panic!("{other:?}"),
    }
    let mut slow = command(&["sleep", "5"]);
    slow.timeout_ms = 100;
    let out = run(&rt, &slow).await;
    assert!(
        matches!(&out, TaskOutcome::Failed { error, .. } if error.code == AgentErrorCode::Timeout),
        "{out:?}"
    );
}

fn running(container: &str) -> bool {
    deploy_testkit::run_checked(
        "docker",
        &[
            "inspect",
            "--type",
            "container",
            "--format",
            "{{.State.Running}}",
            container,
        ],
    )
    .unwrap()
    .trim()
        == "true"
}

fn with_component(mut d: TaskDelivery, f: impl FnOnce(&mut ComponentPayload)) -> TaskDelivery {
    if let AgentAction::Deploy { deploy } = &mut d.action
        && let Some(c) = deploy.component.as_mut()
    {
        f(c);
    }
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_previous_running_and_stop_first() {
    let prefix = format!("agtmodes{}", std::process::id());
    let _cleanup = ContainerCleanup::new(&prefix);
    let registry = Registry::start().unwrap();
    let images = TestImages::build(&registry, &format!("{prefix}/app")).unwrap();
    let rt = runtime().await;

    // Blue-green: the old container keeps serving as -previous.
    let bg = format!("{prefix}-bg");
    deployed(&run(&rt, &deploy(1, &bg, &images.v1, &[])).await);
    let d = with_component(deploy(2, &bg, &images.v2, &[]), |c| {
        c.keep_previous_running = true;
    });
    assert!(deployed(&run(&rt, &d).await).2);
    assert_eq!(version(&bg), "v2");
    assert!(running(&format!("{bg}-previous")));
    assert_eq!(version(&format!("{bg}-previous")), "v1");

    // Stop-first: the old one is stopped before the new one starts, and started again
    // when the new one fails.
    let sf = format!("{prefix}-sf");
    deployed(&run(&rt, &deploy(3, &sf, &images.v1, &[])).await);
    let d = with_component(deploy(4, &sf, &images.v2, &[]), |c| c.stop_first = true);
    let log = log();
    let out = rt.execute(&d, &log, &CancellationToken::new()).await;
    assert!(deployed(&out).2);
    let (_, lines) = log.unacknowledged();
    assert!(
        lines.iter().any(|l| l
            .text
            .starts_with(&format!("stopping {sf} before the new container starts"))),
        "{lines:?}"
    );
    assert_eq!(version(&sf), "v2");
    assert!(!running(&format!("{sf}-previous")));
    let d = with_component(
        deploy(5, &sf, &images.v3_broken, &["/bin/sh", "-c", "exit 3"]),
        |c| c.stop_first = true,
    );
    match run(&rt, &d).await {
        TaskOutcome::Failed { error, .. } => assert_eq!(error.code, AgentErrorCode::StartFailed),
        other => panic!("{other:?}"),
    }
    assert!(running(&sf));
    assert_eq!(version(&sf), "v2");
}

/// `base` with a HEALTHCHECK on `/health`, pushed to the registry; its digest reference.
fn with_healthcheck(base: &str, repository: &str, tag: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM {base}\nHEALTHCHECK --interval=300ms --timeout=2s --retries=2 CMD [\"/bin/busybox\", \"wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1:{IMAGE_HTTP_PORT}/health\"]\n"
        ),
    )
    .unwrap();
    let name = format!("{repository}:{tag}");
    let out = Command::new("docker")
        .args(["build", "--quiet", "-t", &name])
        .arg(dir.path())
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    deploy_testkit::run_checked("docker", &["push", "--quiet", &name]).unwrap();
    let digests = deploy_testkit::run_checked(
        "docker",
        &[
            "inspect",
            "--format",
            "{{range .RepoDigests}}{{println .}}{{end}}",
            &name,
        ],
    )
    .unwrap();
    let reference = digests
        .lines()
        .find(|l| l.starts_with(&format!("{repository}@")))
        .unwrap()
        .to_owned();
    deploy_testkit::run_checked("docker", &["rmi", &name]).unwrap();
    reference
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_healthcheck_must_pass_before_the_swap() {
    let prefix = format!("agthealth{}", std::process::id());
    let _cleanup = ContainerCleanup::new(&prefix);
    let registry = Registry::start().unwrap();
    let images = TestImages::build(&registry, &format!("{prefix}/app")).unwrap();
    let healthy = with_healthcheck(&images.v2, &images.repository, "v2-hc");
    let unhealthy = with_healthcheck(&images.v3_broken, &images.repository, "v3-hc");
    let rt = runtime().await;
    let web = format!("{prefix}-web");
    deployed(&run(&rt, &deploy(1, &web, &images.v1, &[])).await);

    // The HEALTHCHECK never passes (/health is missing): refused, v1 keeps serving.
    match run(&rt, &deploy(2, &web, &unhealthy, &[])).await {
        TaskOutcome::Failed { error, .. } => {
            assert_eq!(error.code, AgentErrorCode::StartFailed);
            assert!(error.message.contains("unhealthy"), "{error:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(version(&web), "v1");
    assert_eq!(containers(&prefix), vec![web.clone()]);

    // A passing HEALTHCHECK is waited for, then swapped in.
    assert!(deployed(&run(&rt, &deploy(3, &web, &healthy, &[])).await).2);
    assert_eq!(version(&web), "v2");
    let health = deploy_testkit::run_checked(
        "docker",
        &["inspect", "--format", "{{.State.Health.Status}}", &web],
    )
    .unwrap();
    assert_eq!(health.trim(), "healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_targets_container_of_the_same_name_is_refused_not_touched() {
    let prefix = format!("agtowner{}", std::process::id());
    let _cleanup = ContainerCleanup::new(&prefix);
    let registry = Registry::start().unwrap();
    let images = TestImages::build(&registry, &format!("{prefix}/app")).unwrap();
    let rt = runtime().await;
    let web = format!("{prefix}-web");
    deployed(&run(&rt, &deploy(1, &web, &images.v1, &[])).await);
    let id = container_id(&web);

    // The same component name from a second target on this host.
    let mut other = deploy(2, &web, &images.v2, &[]);
    other.target.name = name("other-host");
    match run(&rt, &other).await {
        TaskOutcome::Failed { error, .. } => {
            assert_eq!(error.code, AgentErrorCode::InvalidPayload);
            assert!(
                error.message.contains("agent-host") && error.message.contains("other-host"),
                "{}",
                error.message
            );
        }
        out => panic!("expected invalid_payload, got {out:?}"),
    }
    let inspect = TaskDelivery {
        action: AgentAction::Inspect {
            component: name(&web),
        },
        ..other.clone()
    };
    assert!(
        matches!(run(&rt, &inspect).await, TaskOutcome::Failed { error, .. } if error.code == AgentErrorCode::InvalidPayload)
    );
    // Untouched: the same container, still serving v1, nothing else created.
    assert_eq!(container_id(&web), id);
    assert_eq!(version(&web), "v1");
    assert_eq!(containers(&prefix), vec![web]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_message_quoting_the_registry_password_is_redacted() {
    let rt = runtime().await;
    // Nothing listens on port 9: the pull fails and its message quotes the image, which
    // here carries the password.
    let image = format!("127.0.0.1:9/pw-hunter2/app@sha256:{}", "a".repeat(64));
    let mut d = deploy(1, "agtredact-web", &image, &[]);
    if let AgentAction::Deploy { deploy } = &mut d.action {
        deploy.registry_auth = Some(RegistryAuth {
            server: "127.0.0.1:9".to_owned(),
            username: "u".to_owned(),
            password: "pw-hunter2".to_owned(),
        });
    }
    let log = TaskLog::new(
        "t",
        redactor_for(&d, "dpa_credential"),
        Arc::new(Notify::new()),
    );
    match rt.execute(&d, &log, &CancellationToken::new()).await {
        TaskOutcome::Failed { error, .. } => {
            assert!(
                matches!(
                    error.code,
                    AgentErrorCode::PullFailed | AgentErrorCode::PullRefused
                ),
                "{error:?}"
            );
            assert!(!error.message.contains("pw-hunter2"), "{}", error.message);
            assert!(error.message.contains("[REDACTED]"), "{}", error.message);
        }
        out => panic!("expected a failed pull, got {out:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_cut_by_a_crash_between_the_renames_is_repaired_at_start() {
    let prefix = format!("agtrepair{}", std::process::id());
    let _cleanup = ContainerCleanup::new(&prefix);
    let registry = Registry::start().unwrap();
    let images = TestImages::build(&registry, &format!("{prefix}/app")).unwrap();
    let rt = runtime().await;
    let web = format!("{prefix}-web");
    deployed(&run(&rt, &deploy(1, &web, &images.v1, &[])).await);
    // The state a SIGKILL leaves after the first rename of a swap: `<name>` is gone,
    // the old one is `-previous`.
    let previous = format!("{web}-previous");
    deploy_testkit::run_checked("docker", &["rename", &web, &previous]).unwrap();
    assert_eq!(containers(&prefix), vec![previous.clone()]);

    // Another target's view of the slot is not acted upon.
    let did = rt.repair(&name(&web), &name("other-host")).await;
    assert!(did.iter().any(|d| d.contains("other-host")), "{did:?}");
    assert_eq!(containers(&prefix), vec![previous.clone()]);

    let did = rt.repair(&name(&web), &name("agent-host")).await;
    assert!(did.iter().any(|d| d.contains("became")), "{did:?}");
    assert_eq!(containers(&prefix), vec![web.clone()]);
    assert_eq!(version(&web), "v1");
}

#[tokio::test]
async fn health_command_without_a_work_dir_runs_in_the_default_one_made_0700() {
    use std::os::unix::fs::PermissionsExt;
    let state = tempfile::tempdir().unwrap();
    let root = state.path().join(deploy_core::DEFAULT_AGENT_WORK_SUBDIR);
    let rt = Runtime::new(None, None).with_default_work_root(root.clone());
    let mut t = target("/unused");
    if let Connection::Agent(a) = &mut t.connection {
        a.work_dir = None;
    }
    let pwd = TaskDelivery {
        key: TaskKey {
            task_id: task_id(9),
            attempt: 1,
        },
        target: t,
        action: AgentAction::HealthCommand {
            command: CommandSpec::new(vec!["pwd".to_owned()]).unwrap(),
        },
        timeout_ms: 10_000,
    };
    let expected = root.join("agent-host");
    match run(&Runtime::new(None, None), &pwd).await {
        TaskOutcome::Failed { error, .. } => assert!(
            error.message.contains("sets no work_dir"),
            "{}",
            error.message
        ),
        other => panic!("a runtime without a state dir has no default: {other:?}"),
    }
    match run(&rt, &pwd).await {
        TaskOutcome::CommandRan {
            exit_status: 0,
            stdout,
        } => assert_eq!(
            std::fs::canonicalize(stdout.trim()).unwrap(),
            std::fs::canonicalize(&expected).unwrap()
        ),
        other => panic!("{other:?}"),
    }
    for dir in [&root, &expected] {
        let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700, "{}", dir.display());
    }
}
