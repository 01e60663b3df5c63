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
    let r1 = r1.unwrap_or_else(|e| panic!("{e:?}\n{:#?}", logs.lines()));
    assert!(r1.changed);
    assert_eq!(r1.previous_digest, None);
    assert_eq!(r1.deployed_digest, digest_of(&peers.images.v1));
    assert_eq!(version_of(web.as_str()), "v1");
    assert_eq!(
        label(web.as_str(), "stella.digest"),
        digest_of(&peers.images.v1).as_str()
    );

    let r2 = exec
        .deploy(&docker_request(target, web, &peers.images.v2, 2), &c)
        .await;
    let r2 = r2.unwrap_or_else(|e| panic!("{e:?}\n{:#?}", logs.lines()));
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
    assert!(again.as_ref().is_ok_and(|d| !d.changed), "{again:?}");
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
    let r2 = exec.deploy(&bad, &c).await.unwrap_err();
    assert!(
        matches!(r2.error, deploy_exec::ExecError::NotRunning { .. }),
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

/// `docker args…` on the test host's engine, as the SSH user over the executor.
async fn docker_as_ssh_user(s: &Scene, args: &[&str]) -> deploy_exec::CommandOutput {
    let mut argv = vec!["docker".to_owned()];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    let (_, c) = ctx(60);
    s.exec
        .run_command(&s.target, &CommandSpec::new(argv).unwrap(), &c)
        .await
        .unwrap()
}

/// A private registry: the engine pulls without credentials and is refused, so the SSH
/// user's own `docker login` is used (as a `docker pull` on the host did before the
/// Engine API); logged out, the deploy fails naming the refusal and changes nothing.
#[tokio::test]
async fn a_private_registry_is_pulled_with_the_ssh_users_docker_login() {
    let s = Scene::start("login", TargetType::DockerHost);
    let (exec, target, web) = (&s.exec, &s.target, &s.web);
    let (user, password) = ("deployer", "not-a-real-secret");
    let private = deploy_testkit::Registry::start_with_login(user, password).unwrap();
    // v1 pushed to it with a client config of its own (root's logins stay untouched).
    let config = tempfile::tempdir().unwrap();
    let config = config.path().to_str().unwrap();
    let addr = private.address();
    let tag = format!("{addr}/{}/private:v1", s.p);
    let docker = |args: &[&str]| deploy_testkit::run_checked("docker", args).unwrap();
    docker(&[
        "--config", config, "login", "-u", user, "-p", password, &addr,
    ]);
    docker(&["pull", "--quiet", &s.peers.images.v1]);
    docker(&["tag", &s.peers.images.v1, &tag]);
    let pushed = docker(&["--config", config, "push", &tag]);
    let digest = pushed
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in {pushed}"));
    let image = format!("{addr}/{}/private@{digest}", s.p);
    // The engine must not have it under that name: the deploy has to pull.
    docker(&["rmi", &tag]);
    let _ = deploy_testkit::run_checked("docker", &["rmi", &image]);

    let (logs, c) = ctx(60);
    let refused = exec
        .deploy(&docker_request(target, web, &image, 1), &c)
        .await;
    let why = refused.unwrap_err().to_string();
    assert!(
        why.contains("no basic auth credentials") || why.contains("unauthorized"),
        "{why}\n{:#?}",
        logs.lines()
    );
    assert_eq!(exec.inspect(target, web, &c).await.unwrap(), None);

    let login = docker_as_ssh_user(&s, &["login", "-u", user, "-p", password, &addr]).await;
    assert_eq!(login.exit_status, 0, "{login:?}");
    let (logs, c) = ctx(60);
    let r = exec
        .deploy(&docker_request(target, web, &image, 2), &c)
        .await;
    let _ = docker_as_ssh_user(&s, &["logout", &addr]).await;
    assert!(r.is_ok(), "{r:?}\n{:#?}", logs.lines());
    assert!(
        logs.lines()
            .iter()
            .any(|l| l.contains("pulling with the host's docker login")),
        "{:#?}",
        logs.lines()
    );
    assert_eq!(version_of(web.as_str()), "v1");
    assert_eq!(label(web.as_str(), "stella.digest"), digest);
}
