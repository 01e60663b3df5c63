//! compose_host through the real docker-compose and Docker Engine: v1 then v2, per-service digests, inspect, no-op redeploy, failed pull, tampered artifact.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a panic there is a failing test"
)]

use std::sync::Arc;

use deploy_agent::compose::{COMPOSE_PROGRAM, ComposeHost, find_on_path};
use deploy_agent::docker::{DockerConfig, DockerHost};
use deploy_agent::redact::Redactor;
use deploy_agent::runtime::Runtime;
use deploy_agent::tasklog::TaskLog;
use deploy_api::agent::{
    AgentAction, AgentErrorCode, DeployPayload, TaskDelivery, TaskKey, TaskOutcome,
};
use deploy_core::testing::{artifact_id, environment_id, job_id, name, target_id, task_id, ts};
use deploy_core::{
    AgentConnection, ArtifactKind, Connection, Digest, GeneratedArtifact, Labels, Target,
    TargetType, UnixPath,
};
use deploy_testkit::{ContainerCleanup, IMAGE_HTTP_PORT, Registry, TestImages, run_checked};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

fn digest_of(image: &str) -> Digest {
    Digest::parse(image.rsplit_once('@').unwrap().1).unwrap()
}

fn artifact(kind: ArtifactKind, file: &str, content: String) -> GeneratedArtifact {
    GeneratedArtifact::new(
        artifact_id(1),
        job_id(1),
        Some(target_id(1)),
        kind,
        name(file),
        content,
    )
}

fn delivery(work_dir: &str, project: &str, image: &str, n: u64) -> (TaskDelivery, Digest) {
    let digest = image.rsplit_once('@').unwrap().1;
    let lock = artifact(
        ArtifactKind::ComposeLock,
        "docker-compose.lock.yml",
        format!(
            "version: \"2.4\"\nservices:\n  web:\n    image: {image}\n    ports:\n      - \"127.0.0.1::{IMAGE_HTTP_PORT}\"\n    env_file:\n      - app.env\n    labels:\n      stella.component: web\n      stella.digest: \"{digest}\"\n"
        ),
    );
    let env = artifact(
        ArtifactKind::EnvFile,
        "app.env",
        "GREETING=hello\n".to_owned(),
    );
    let lock_digest = lock.sha256.clone();
    let d = TaskDelivery {
        key: TaskKey {
            task_id: task_id(n),
            attempt: 1,
        },
        target: Target {
            id: target_id(1),
            environment_id: environment_id(1),
            name: name("compose-host"),
            target_type: TargetType::ComposeHost,
            connection: Connection::Agent(AgentConnection {
                agent_id: None,
                selector: Labels::default(),
                work_dir: UnixPath::parse(work_dir).unwrap(),
                stop_first: false,
                registry_auth: None,
            }),
            health_endpoint: None,
            health_check: None,
            labels: Labels::default(),
            created_at: ts(0),
        },
        action: AgentAction::Deploy {
            deploy: DeployPayload {
                digest: lock_digest.clone(),
                component: None,
                project: name(project),
                artifacts: vec![lock, env],
                registry_auth: None,
            },
        },
        timeout_ms: 120_000,
    };
    (d, lock_digest)
}

fn web_version(project: &str) -> String {
    let filter = format!("label=com.docker.compose.project={project}");
    let ids = run_checked("docker", &["ps", "-q", "--filter", &filter]).unwrap();
    let id = ids.split_whitespace().next().unwrap().to_owned();
    let addr = deploy_testkit::published_addr(&id, IMAGE_HTTP_PORT).unwrap();
    for _ in 0..50 {
        if let Ok((200, body)) = deploy_testkit::http_get(&addr, "/version") {
            return body.trim().to_owned();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("project {project} does not serve /version on {addr}");
}

async fn run(rt: &Runtime, d: &TaskDelivery) -> TaskOutcome {
    let log = TaskLog::new("t", Redactor::new(), Arc::new(Notify::new()));
    rt.execute(d, &log, &CancellationToken::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_v1_then_v2_noop_failed_pull_and_tampered_artifact() {
    let prefix = format!("agtcompose{}", std::process::id());
    let _cleanup = ContainerCleanup::new(&prefix);
    let registry = Registry::start().unwrap();
    let images = TestImages::build(&registry, &format!("{prefix}/app")).unwrap();
    let program = find_on_path(COMPOSE_PROGRAM)
        .unwrap_or_else(|| panic!("`{COMPOSE_PROGRAM}` on PATH (apt-get install docker-compose)"));
    let docker = DockerHost::connect("/var/run/docker.sock".as_ref(), DockerConfig::default())
        .await
        .unwrap();
    let compose = ComposeHost::new(program, docker.client().clone());
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
        TaskOutcome::Inspected { digest: None }
    );
    match run(&rt, &d1).await {
        TaskOutcome::Deployed {
            deployed_digest,
            previous_digest: None,
            changed: true,
            running,
        } => {
            assert_eq!(deployed_digest, lock1);
            assert_eq!(running.get("web"), Some(&digest_of(&images.v1)));
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
            "app.env".to_owned(),
            "docker-compose.lock.yml".to_owned()
        ]
    );

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
    assert_eq!(
        run(&rt, &inspect(&d2)).await,
        TaskOutcome::Inspected {
            digest: Some(lock2.clone())
        }
    );
    match run(&rt, &delivery(&work_dir, project, &images.v2, 3).0).await {
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
    if let AgentAction::Deploy { deploy } = &mut bad.action {
        deploy.artifacts[1].content = "GREETING=tampered\n".to_owned();
    }
    match run(&rt, &bad).await {
        TaskOutcome::Failed { error, .. } => {
            assert_eq!(error.code, AgentErrorCode::InvalidPayload, "{error:?}");
            assert!(error.message.contains("app.env"), "{error:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        std::fs::read_to_string(work.join("app.env")).unwrap(),
        "GREETING=hello\n"
    );
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
