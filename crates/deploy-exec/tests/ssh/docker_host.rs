//! docker_host deploys through sshd: v1 then v2 start-first with a kept `-previous`, idempotent redeploy, connection reuse.

use deploy_core::{CommandSpec, TargetType};
use deploy_exec::Executor;

use crate::common::*;

#[tokio::test]
async fn deploys_v1_then_v2_start_first_keeps_previous_and_redeploy_is_a_no_op() {
    let s = Scene::start("swap", TargetType::DockerHost);
    let (exec, target, web, peers) = (&s.exec, &s.target, &s.web, &s.peers);
    let (logs, c) = ctx(60);

    assert_eq!(exec.inspect(target, web, &c).await.unwrap(), None);

    let r1 = exec
        .deploy(&docker_request(target, web, &peers.images.v1, 1), &c)
        .await;
    assert!(r1.success, "{r1:?}\n{:#?}", logs.lines());
    assert!(r1.changed);
    assert_eq!(r1.previous_digest, None);
    assert_eq!(r1.deployed_digest, Some(digest_of(&peers.images.v1)));
    assert_eq!(version_of(web.as_str()), "v1");
    assert_eq!(
        label(web.as_str(), "stella.digest"),
        digest_of(&peers.images.v1).as_str()
    );

    let r2 = exec
        .deploy(&docker_request(target, web, &peers.images.v2, 2), &c)
        .await;
    assert!(r2.success, "{r2:?}\n{:#?}", logs.lines());
    assert_eq!(r2.previous_digest, Some(digest_of(&peers.images.v1)));
    assert_eq!(version_of(web.as_str()), "v2");
    let previous = format!("{web}-previous");
    assert_eq!(
        label(&previous, "stella.digest"),
        digest_of(&peers.images.v1).as_str()
    );
    assert_eq!(
        exec.inspect(target, web, &c).await.unwrap(),
        Some(digest_of(&peers.images.v2))
    );

    let again = exec
        .deploy(&docker_request(target, web, &peers.images.v2, 3), &c)
        .await;
    assert!(again.success && !again.changed, "{again:?}");
    assert_eq!(version_of(web.as_str()), "v2");

    // One connection served every call; each channel reports the same client endpoint.
    let env = CommandSpec::new(vec!["printenv".into(), "SSH_CONNECTION".into()]).unwrap();
    let a = exec.run_command(target, &env, &c).await.unwrap();
    let b = exec.run_command(target, &env, &c).await.unwrap();
    assert_eq!(a.stdout, b.stdout);
    assert_eq!(exec.pooled(), 1);
    assert!(
        logs.lines().iter().any(|l| l.contains("previous kept as")),
        "{:#?}",
        logs.lines()
    );
    // The first deploy had nothing to keep and says so.
    assert_eq!(
        logs.lines()
            .iter()
            .filter(|l| l.contains("(no previous container)"))
            .count(),
        1,
        "{:#?}",
        logs.lines()
    );
    exec.close_all().await;
}

#[tokio::test]
async fn a_container_that_exits_at_once_is_not_swapped_in() {
    let s = Scene::start("exit", TargetType::DockerHost);
    let (exec, target, web, peers) = (&s.exec, &s.target, &s.web, &s.peers);
    let (logs, c) = ctx(60);
    s.deploy_web(&peers.images.v1, 1, &c, &logs).await;

    // v2 started with a command that exits at once: never swapped in.
    let mut bad = docker_request(target, web, &peers.images.v2, 2);
    if let Some(c) = bad.component.as_mut() {
        c.container.command = Some(vec!["/bin/busybox".into(), "false".into()]);
    }
    let r2 = exec.deploy(&bad, &c).await;
    assert!(
        matches!(r2.error, Some(deploy_exec::ExecError::NotRunning { .. })),
        "{r2:?}"
    );
    let ps =
        deploy_testkit::run_checked("docker", &["ps", "-a", "--format", "{{.Names}}"]).unwrap();
    assert!(!ps.contains(&format!("{web}-next")), "{ps}");
    assert_eq!(r2.previous_digest, Some(digest_of(&peers.images.v1)));
    assert_eq!(version_of(web.as_str()), "v1");
    assert_eq!(
        exec.inspect(target, web, &c).await.unwrap(),
        Some(digest_of(&peers.images.v1))
    );
}
