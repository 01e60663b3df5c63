//! Pre- and post-deploy hooks end to end (real sshd, SSH executor, Docker): a failing pre-deploy hook fails the task without touching the running container; hook output lands in the task log.

use deploy_core::{CommandSpec, Hooks, JobStatus, Strategy, TaskStatus};

use crate::blue_green::World;

fn sh(script: String) -> CommandSpec {
    CommandSpec::new(vec!["/bin/sh".to_owned(), "-c".to_owned(), script]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pre_deploy_hook_fails_the_task_without_touching_the_running_container() {
    // The pre-deploy hook refuses while a "maintenance" file exists on the host.
    let block = format!("/tmp/hooks-block-{}", std::process::id());
    let _ = std::fs::remove_file(&block);
    let check = block.clone();
    let w = World::start("hooks", move |_| Hooks {
        pre_deploy: Some(sh(format!(
            "echo pre-deploy: checking {check}; if [ -e {check} ]; then echo pre-deploy: maintenance in progress; exit 7; fi"
        ))),
        post_deploy: Some(sh("echo post-deploy: smoke test passed".to_owned())),
    })
    .await;
    let v1 = w
        .run_with(1, &w.images.v1, Strategy::AllAtOnce, false)
        .await;
    assert_eq!(v1.status, JobStatus::Completed, "{:?}", v1.failure_reason);
    let log = w.store.read_log(v1.tasks[0].id, 0, 100).await.unwrap();
    let text: String = log.iter().map(|c| c.content.clone() + "\n").collect();
    for line in [
        "pre-deploy hook: /bin/sh -c echo pre-deploy: checking",
        "pre-deploy: checking /tmp/hooks-block-",
        "post-deploy: smoke test passed",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
    let id = World::inspect(&w.container, "{{.Id}}");
    let started = World::inspect(&w.container, "{{.State.StartedAt}}");

    std::fs::write(&block, "maintenance").unwrap();
    let v2 = w
        .run_with(2, &w.images.v2, Strategy::AllAtOnce, false)
        .await;
    let _ = std::fs::remove_file(&block);
    assert_eq!(v2.status, JobStatus::Failed);
    let task = &v2.tasks[0];
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.attempt_number, 1, "a failed hook is not retried");
    assert!(
        task.error
            .as_deref()
            .unwrap_or_default()
            .contains("pre-deploy hook exited 7"),
        "{:?}",
        task.error
    );
    let log = w.store.read_log(task.id, 0, 100).await.unwrap();
    let text: String = log.iter().map(|c| c.content.clone() + "\n").collect();
    assert!(
        text.contains("pre-deploy: maintenance in progress"),
        "{text}"
    );
    assert!(
        !text.contains("pulling"),
        "the executor was reached: {text}"
    );
    // The running container was not touched: same container, never restarted, still v1,
    // and no v2 container was started beside it.
    assert_eq!(World::inspect(&w.container, "{{.Id}}"), id);
    assert_eq!(
        World::inspect(&w.container, "{{.State.StartedAt}}"),
        started
    );
    let v1_digest = deploy_core::ImageRef::parse(&w.images.v1)
        .unwrap()
        .digest()
        .to_string();
    assert_eq!(
        World::inspect(&w.container, "{{index .Config.Labels \"stella.digest\"}}"),
        v1_digest
    );
    let ps =
        deploy_testkit::run_checked("docker", &["ps", "-a", "--format", "{{.Names}}"]).unwrap();
    assert!(
        !ps.lines()
            .any(|n| n.starts_with(&w.prefix) && n.ends_with("-next")),
        "{ps}"
    );
}
