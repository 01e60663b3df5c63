//! compose_host through the real docker-compose and Docker Engine: v1 then v2, per-service digests, inspect, no-op redeploy, failed pull, tampered artifact.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a panic there is a failing test"
)]

mod common;

use std::sync::Arc;

use deploy_agent::compose::{ComposeHost, ComposeTool};
use deploy_agent::docker::{DockerConfig, DockerHost};
use deploy_agent::redact::Redactor;
use deploy_agent::runtime::Runtime;
use deploy_agent::tasklog::TaskLog;
use deploy_api::agent::{
    AgentAction, AgentErrorCode, DeployPayload, TaskDelivery, TaskKey, TaskOutcome,
};
use deploy_artifacts::{
    Colour, ContainerRuntime, LOCK_FILE_NAME, RenderInput, Traffic, parse_template, render,
};
use deploy_core::testing::{
    artifact_id, component_id, job_id, name, promotion_id, release_id, target_id, task_id, ts,
};
use deploy_core::{
    Component, Digest, GeneratedArtifact, ImageRef, Release, Target, TargetType, UnixPath,
};
use deploy_testkit::{ContainerCleanup, IMAGE_HTTP_PORT, Registry, TestImages, run_checked};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::common::fixtures::{agent_target, version_at};

fn digest_of(image: &str) -> Digest {
    Digest::parse(image.rsplit_once('@').unwrap().1).unwrap()
}

/// The artifacts deployd renders for a compose_host target from this template (a real
/// lock, checked by its `x-generated` digest before `up`), and the lock's sha256.
/// `extra` lines are added to the service.
fn rendered_with(
    project: &str,
    image: &str,
    n: u64,
    extra: &str,
) -> (Vec<GeneratedArtifact>, Digest) {
    let release = Release::new(
        release_id(n),
        name(&format!("r{n}")),
        vec![Component {
            id: component_id(n),
            name: name("web"),
            image: ImageRef::parse(image).unwrap(),
        }],
        ts(n),
    )
    .unwrap();
    let template = parse_template(
        format!(
            "services:\n  web:\n    componentName: web\n    ports:\n      - \"127.0.0.1::{IMAGE_HTTP_PORT}\"\n    environment:\n      GREETING: hello\n{extra}"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut t = target("/tmp");
    t.target_type = TargetType::ComposeHost;
    let bundle = render(&RenderInput {
        release: &release,
        target: &t,
        environment: &name(project),
        promotion_id: promotion_id(n),
        job_id: job_id(n),
        timestamp: ts(n),
        template: &template,
        traffic: Traffic::all_to(Colour::Blue),
        runtime: ContainerRuntime::Docker,
        work_dir: &UnixPath::parse("/tmp").unwrap(),
        variables: &std::collections::BTreeMap::new(),
    })
    .unwrap();
    let artifacts: Vec<GeneratedArtifact> = bundle
        .artifacts
        .iter()
        .map(|a| a.to_generated(artifact_id(n), job_id(n), Some(target_id(1))))
        .collect();
    let lock = bundle.get(LOCK_FILE_NAME).unwrap().sha256.clone();
    (artifacts, lock)
}

fn target(work_dir: &str) -> Target {
    agent_target("compose-host", TargetType::ComposeHost, work_dir)
}

fn delivery(work_dir: &str, project: &str, image: &str, n: u64) -> (TaskDelivery, Digest) {
    delivery_with(work_dir, project, image, n, "")
}

fn delivery_with(
    work_dir: &str,
    project: &str,
    image: &str,
    n: u64,
    extra: &str,
) -> (TaskDelivery, Digest) {
    let (artifacts, lock_digest) = rendered_with(project, image, n, extra);
    let d = TaskDelivery {
        key: TaskKey {
            task_id: task_id(n),
            attempt: 1,
        },
        target: target(work_dir),
        action: AgentAction::Deploy {
            deploy: DeployPayload {
                digest: lock_digest.clone(),
                component: None,
                project: name(project),
                artifacts,
                registry_auth: None,
                secret_values: Vec::new(),
            },
        },
        timeout_ms: 120_000,
    };
    (d, lock_digest)
}

/// The id of the project's running container.
fn container_of(project: &str) -> String {
    let filter = format!("label=com.docker.compose.project={project}");
    let ids = run_checked("docker", &["ps", "-q", "--filter", &filter]).unwrap();
    ids.split_whitespace().next().unwrap().to_owned()
}

fn web_version(project: &str) -> String {
    let id = container_of(project);
    let addr = deploy_testkit::published_addr(&id, IMAGE_HTTP_PORT).unwrap();
    version_at(&addr, &format!("project {project}"))
}

async fn run(rt: &Runtime, d: &TaskDelivery) -> TaskOutcome {
    let log = TaskLog::new("t", Redactor::new(), Arc::new(Notify::new()));
    rt.execute(d, &log, &CancellationToken::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_v1_then_v2_noop_failed_pull_tampered_artifact_and_failed_up() {
    let prefix = format!("agtcompose{}", std::process::id());
    let _cleanup = ContainerCleanup::new(&prefix);
    let registry = Registry::start().unwrap();
    let images = TestImages::build(&registry, &format!("{prefix}/app")).unwrap();
    let tool = ComposeTool::detect()
        .await
        .expect("`docker-compose` or the `docker compose` plugin (apt-get install docker-compose)");
    let docker = DockerHost::connect("/var/run/docker.sock".as_ref(), DockerConfig::default())
        .await
        .unwrap();
    let compose = ComposeHost::new(tool, docker.client().clone());
    let rt = Runtime::new(Some(docker), Some(compose));
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let work_dir = work.display().to_string();
    let project = prefix.as_str();

    let inspect = |d: &TaskDelivery| TaskDelivery {
        action: AgentAction::Inspect {
            component: name(project),
        },
        ..d.clone()
    };

    let (d1, lock1) = delivery(&work_dir, project, &images.v1, 1);
    assert_eq!(
        run(&rt, &inspect(&d1)).await,
        TaskOutcome::Inspected {
            digest: None,
            published: Vec::new()
        }
    );
    match run(&rt, &d1).await {
        TaskOutcome::Deployed {
            deployed_digest,
            previous_digest: None,
            changed: true,
            running,
            published,
        } => {
            assert_eq!(deployed_digest, lock1);
            assert_eq!(running.get("web"), Some(&digest_of(&images.v1)));
            assert!(
                published
                    .iter()
                    .any(|p| p.container_port == IMAGE_HTTP_PORT && p.host_ip.is_loopback()),
                "{published:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(web_version(project), "v1");
    let mut files: Vec<String> = std::fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            format!(".stella-{project}.lock.sha256"),
            "docker-compose.lock.yml".to_owned(),
            "docker-compose.yml".to_owned(),
            "manifest.json".to_owned(),
            "nginx.conf".to_owned(),
            "stella-web.service".to_owned(),
            "web.env".to_owned(),
        ]
    );
    // Private to the agent's user: the dir 0700, every file 0600.
    let mode = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    };
    assert_eq!(mode(&work), 0o700);
    for f in &files {
        assert_eq!(mode(&work.join(f)), 0o600, "{f}");
    }
    // The environment reaches the container from the lock itself (no env-file).
    let env = run_checked(
        "docker",
        &[
            "inspect",
            "--format",
            "{{json .Config.Env}}",
            &container_of(project),
        ],
    )
    .unwrap();
    assert!(env.contains("\"GREETING=hello\""), "{env}");

    let (d2, lock2) = delivery(&work_dir, project, &images.v2, 2);
    match run(&rt, &d2).await {
        TaskOutcome::Deployed {
            previous_digest,
            changed: true,
            running,
            ..
        } => {
            assert_eq!(previous_digest, Some(lock1.clone()));
            assert_eq!(running.get("web"), Some(&digest_of(&images.v2)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(web_version(project), "v2");
    match run(&rt, &inspect(&d2)).await {
        TaskOutcome::Inspected { digest, published } => {
            assert_eq!(digest, Some(lock2.clone()));
            assert_eq!(published.len(), 1, "{published:?}");
        }
        other => panic!("{other:?}"),
    }
    // The same lock again (another attempt of the same job): nothing to do.
    let mut again = d2.clone();
    again.key.task_id = task_id(3);
    match run(&rt, &again).await {
        TaskOutcome::Deployed { changed: false, .. } => {}
        other => panic!("{other:?}"),
    }

    // A lock whose image the registry lacks: the pull fails, v2 stays, the lock on disk too.
    let missing = format!("{}@sha256:{}", images.repository, "0".repeat(64));
    match run(&rt, &delivery(&work_dir, project, &missing, 4).0).await {
        TaskOutcome::Failed {
            error,
            previous_digest,
        } => {
            assert_eq!(error.code, AgentErrorCode::PullFailed, "{error:?}");
            assert_eq!(previous_digest, Some(lock2.clone()));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(web_version(project), "v2");
    assert!(
        std::fs::read_to_string(work.join("docker-compose.lock.yml"))
            .unwrap()
            .contains(&digest_of(&images.v2).to_string())
    );

    // An artifact whose content does not match its sha256 is refused before anything.
    let (mut bad, _) = delivery(&work_dir, project, &images.v1, 5);
    let env_before = std::fs::read_to_string(work.join("web.env")).unwrap();
    if let AgentAction::Deploy { deploy } = &mut bad.action {
        let env = deploy
            .artifacts
            .iter_mut()
            .find(|a| a.file_name.as_str() == "web.env")
            .unwrap();
        env.content = "GREETING=tampered\n".to_owned();
    }
    match run(&rt, &bad).await {
        TaskOutcome::Failed { error, .. } => {
            assert_eq!(error.code, AgentErrorCode::InvalidPayload, "{error:?}");
            assert!(error.message.contains("web.env"), "{error:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        std::fs::read_to_string(work.join("web.env")).unwrap(),
        env_before
    );
    // A lock edited after rendering (its sha256 recomputed, its own digest not) is
    // refused before `up`: the lock is the record of what runs.
    let (mut forged, _) = delivery(&work_dir, project, &images.v1, 6);
    if let AgentAction::Deploy { deploy } = &mut forged.action {
        let lock = deploy
            .artifacts
            .iter_mut()
            .find(|a| a.file_name.as_str() == LOCK_FILE_NAME)
            .unwrap();
        *lock = GeneratedArtifact::new(
            lock.id,
            lock.job_id,
            lock.target_id,
            lock.kind,
            lock.file_name.clone(),
            lock.content
                .replace("GREETING: \"hello\"", "GREETING: \"forged\""),
        );
        deploy.digest = lock.sha256.clone();
    }
    match run(&rt, &forged).await {
        TaskOutcome::Failed { error, .. } => {
            assert_eq!(error.code, AgentErrorCode::InvalidPayload, "{error:?}");
            assert!(error.message.contains("digest"), "{error:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(web_version(project), "v2");

    // An `up` that fails halfway (the new container cannot start) forgets the recorded
    // lock: the project is no longer what any lock says, so the lock that ran before
    // is deployed again (not "already running") and serves again.
    let recorded = work.join(format!(".stella-{project}.lock.sha256"));
    assert!(recorded.exists());
    let (broken, _) = delivery_with(
        &work_dir,
        project,
        &images.v1,
        7,
        "    command: [\"/no/such/program\"]\n",
    );
    match run(&rt, &broken).await {
        TaskOutcome::Failed { error, .. } => {
            assert_eq!(error.code, AgentErrorCode::StartFailed, "{error:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!recorded.exists(), "the recorded lock outlived a failed up");
    let mut again = d2.clone();
    again.key.task_id = task_id(8);
    match run(&rt, &again).await {
        TaskOutcome::Deployed {
            changed: true,
            deployed_digest,
            ..
        } => {
            assert_eq!(deployed_digest, lock2);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(web_version(project), "v2");
    run_checked(
        "docker-compose",
        &[
            "--project-name",
            project,
            "--file",
            &work.join("docker-compose.lock.yml").display().to_string(),
            "down",
        ],
    )
    .unwrap();
}
