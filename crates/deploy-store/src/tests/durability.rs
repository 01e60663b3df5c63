//! SIGKILL durability: a child process streams committed transitions, printing each id after its commit; after a kill every printed one is in the store.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use deploy_core::TaskId;
use deploy_core::testing::*;

use super::harness::{LIFECYCLE, TestStore, new_job, open_locator, seed_env, seed_release};

/// Set in the child: the locator of the database to write to.
const CHILD_ENV: &str = "DEPLOY_STORE_DURABILITY_CHILD";
const TASKS: u64 = 1_000;
/// Committed transitions the parent waits for before it kills the child.
const KILL_AFTER: usize = 150;

/// The child: walks every task through its lifecycle, printing `committed <task> <version>` after each commit.
async fn child(locator: &str) {
    let store = open_locator(locator).await;
    let job = store.get_job(job_id(1)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = std::io::stdout().lock();
    for task in &job.tasks {
        let mut version = task.version;
        for event in LIFECYCLE {
            if Instant::now() > deadline {
                return;
            }
            version = store
                .apply_task_event(task.id, version, event, ts(1), "durability")
                .await
                .unwrap()
                .version;
            writeln!(out, "committed {} {version}", task.id).unwrap();
            out.flush().unwrap();
        }
    }
}

async fn sigkill_loses_no_committed_transition(t: TestStore, test_name: &str) {
    let s = &*t.store;
    let (env, targets) = seed_env(s, 1, TASKS).await;
    let rel = seed_release(s, 1).await;
    s.create_job(&new_job(s, 1, env, rel, &targets, 1).await)
        .await
        .unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, t.locator())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("committed ") {
                let (task, version) = rest.split_once(' ').unwrap();
                let _ = tx.send((
                    TaskId::parse(task).unwrap(),
                    version.parse::<u64>().unwrap(),
                ));
            }
        }
    });
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while printed.len() < KILL_AFTER && Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(p) => printed.push(p),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    printed.extend(rx.try_iter());
    assert!(
        printed.len() >= KILL_AFTER,
        "the child committed only {} transitions",
        printed.len()
    );
    assert!(
        printed.len() < (TASKS as usize) * LIFECYCLE.len(),
        "the child was killed mid-stream"
    );

    let reopened = t.reopen().await;
    let events = reopened.job_events(job_id(1), 0, 10_000).await.unwrap();
    for (task, version) in &printed {
        let stored = reopened.get_task(*task).await.unwrap();
        assert!(
            stored.version >= *version,
            "task {task}: printed version {version}, stored {}",
            stored.version
        );
        let logged = events.iter().filter(|e| e.task_id == Some(*task)).count() as u64;
        assert!(
            logged >= *version,
            "task {task}: {logged} events for version {version}"
        );
    }
}

mod sigkill_loses_no_committed_transition {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        if let Ok(locator) = std::env::var(super::CHILD_ENV) {
            return super::child(&locator).await;
        }
        super::sigkill_loses_no_committed_transition(
            crate::tests::harness::sqlite().await,
            "tests::durability::sigkill_loses_no_committed_transition::sqlite",
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if let Ok(locator) = std::env::var(super::CHILD_ENV) {
            return super::child(&locator).await;
        }
        super::sigkill_loses_no_committed_transition(
            crate::tests::harness::postgres().await,
            "tests::durability::sigkill_loses_no_committed_transition::postgres",
        )
        .await;
    }
}
