//! compose_host deploys through sshd with the machine's Compose tool: v1 then v2, digests read back by label, idempotent redeploy.

use deploy_core::TargetType;
use deploy_exec::{DeployFailure, Executor};
use deploy_testkit::run_checked;

use crate::common::*;

fn web_container(project: &str) -> String {
    let filter = format!("label=com.docker.compose.project={project}");
    let ids = run_checked("docker", &["ps", "-q", "--filter", &filter]).unwrap();
    let id = ids.split_whitespace().next().expect("a running container");
    run_checked("docker", &["inspect", "--format", "{{.Name}}", id])
        .unwrap()
        .trim()
        .trim_start_matches('/')
        .to_owned()
}

#[tokio::test]
async fn deploys_v1_then_v2_redeploy_is_a_no_op_and_a_failed_pull_changes_nothing() {
    let s = Scene::start("compose", TargetType::ComposeHost);
    let (exec, target, peers, p) = (&s.exec, &s.target, &s.peers, s.p.as_str());
    let project = name(p);
    let (logs, c) = ctx(120);

    assert_eq!(exec.inspect(target, &project, &c).await.unwrap(), None);

    let req1 = compose_request(target, &project, &peers.images.v1, 1);
    let r1 = exec.deploy(&req1, &c).await;
    let r1 = r1.unwrap_or_else(|e| panic!("{e:?}\n{:#?}", logs.lines()));
    assert_eq!(r1.deployed_digest, req1.task.digest);
    assert_eq!(r1.running.get("web"), Some(&digest_of(&peers.images.v1)));
    assert_eq!(version_of(&web_container(p)), "v1");
    // Files are in place under their final names, no temp file left.
    let files: Vec<String> = std::fs::read_dir(s.work_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.contains(&"docker-compose.lock.yml".to_owned()),
        "{files:?}"
    );
    assert!(files.contains(&"app.env".to_owned()), "{files:?}");
    assert!(!files.iter().any(|f| f.contains("uploading")), "{files:?}");

    let req2 = compose_request(target, &project, &peers.images.v2, 2);
    let r2 = exec.deploy(&req2, &c).await;
    let r2 = r2.unwrap_or_else(|e| panic!("{e:?}\n{:#?}", logs.lines()));
    assert_eq!(r2.previous_digest.as_ref(), Some(&req1.task.digest));
    assert_eq!(r2.running.get("web"), Some(&digest_of(&peers.images.v2)));
    assert_eq!(version_of(&web_container(p)), "v2");
    assert_eq!(
        exec.inspect(target, &project, &c).await.unwrap(),
        Some(req2.task.digest.clone())
    );

    let again = exec
        .deploy(&compose_request(target, &project, &peers.images.v2, 3), &c)
        .await;
    assert!(again.as_ref().is_ok_and(|d| !d.changed), "{again:?}");

    // A lock whose image the registry does not have: the pull fails, nothing changes.
    let missing = format!("{}@sha256:{}", peers.images.repository, "0".repeat(64));
    let bad = exec
        .deploy(&compose_request(target, &project, &missing, 4), &c)
        .await;
    assert!(
        matches!(
            bad.as_ref().err().map(|f| &f.error),
            Some(deploy_exec::ExecError::CommandFailed { .. })
        ) && bad.as_ref().is_err_and(DeployFailure::retryable),
        "{bad:?}"
    );
    assert_eq!(version_of(&web_container(p)), "v2");
    assert_eq!(
        exec.inspect(target, &project, &c).await.unwrap(),
        Some(req2.task.digest.clone())
    );
    let lock_on_disk =
        std::fs::read_to_string(format!("{}/docker-compose.lock.yml", s.work_dir())).unwrap();
    assert_eq!(lock_on_disk, compose_lock(&peers.images.v2));
    let leftovers: Vec<String> = std::fs::read_dir(s.work_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.contains("uploading"))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new());
}
