//! Races on both backends: the environment lock, compare-and-swap writers, and two stores claiming the same jobs.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use deploy_core::testing::*;
use deploy_core::{TaskEvent, TaskStatus};

use super::harness::{
    LIFECYCLE, TestStore, both_backends, new_job, one_job, seed_env, seed_release,
};
use crate::StoreError;

both_backends!(
    racing_creators_one_environment_one_winner,
    compare_and_swap_writers_lose_no_update,
    racing_transitions_of_one_task_one_winner,
    concurrent_lifecycles_write_each_transition_and_its_event,
    two_stores_claim_each_job_once,
);

async fn racing_creators_one_environment_one_winner(t: TestStore) {
    let (env, targets) = seed_env(&*t.store, 1, 1).await;
    let rel = seed_release(&*t.store, 1).await;
    let mut jobs = Vec::new();
    for n in 1..=20 {
        jobs.push(new_job(&*t.store, n, env, rel, &targets, 1).await);
    }
    let handles: Vec<_> = jobs
        .into_iter()
        .map(|j| {
            let store = Arc::clone(&t.store);
            tokio::spawn(async move { store.create_job(&j).await })
        })
        .collect();
    let mut winners = Vec::new();
    let mut locked = Vec::new();
    for h in handles {
        match h.await.unwrap() {
            Ok(c) => {
                assert!(c.created);
                winners.push(c.value.id);
            }
            Err(StoreError::EnvironmentLocked { job, .. }) => locked.push(job),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one creator wins");
    assert_eq!(locked.len(), 19);
    assert!(
        locked.iter().all(|j| *j == winners[0]),
        "losers are told the winner"
    );
}

async fn compare_and_swap_writers_lose_no_update(t: TestStore) {
    let j = one_job(&*t.store).await;
    let task = j.tasks[0].id;
    let handles: Vec<_> = (0..20)
        .map(|w| {
            let store = Arc::clone(&t.store);
            tokio::spawn(async move {
                // Read, modify, compare-and-swap; on conflict re-read. Bounded.
                for _ in 0..500 {
                    let mut current = store.get_task(task).await.unwrap();
                    current.logs.push_str(&format!("w{w};"));
                    match store.save_task(&current, ts(1)).await {
                        Ok(_) => return true,
                        Err(StoreError::Conflict { .. }) => tokio::task::yield_now().await,
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
                false
            })
        })
        .collect();
    for h in handles {
        assert!(h.await.unwrap(), "a writer gave up after 500 conflicts");
    }
    let done = t.store.get_task(task).await.unwrap();
    assert_eq!(done.version, 20);
    for w in 0..20 {
        assert_eq!(
            done.logs.matches(&format!("w{w};")).count(),
            1,
            "update of writer {w}: {}",
            done.logs
        );
    }
}

/// Twenty transitions of one task from the same version at once (they share a group
/// commit, or follow each other): one is written with its event, the others are
/// conflicts naming the version they found.
async fn racing_transitions_of_one_task_one_winner(t: TestStore) {
    let j = one_job(&*t.store).await;
    let task = j.tasks[0].id;
    let handles: Vec<_> = (0..20)
        .map(|w| {
            let store = Arc::clone(&t.store);
            tokio::spawn(async move {
                store
                    .apply_task_event(task, 0, TaskEvent::Enqueue, ts(1), &format!("w{w}"))
                    .await
            })
        })
        .collect();
    let mut won = Vec::new();
    for h in handles {
        match h.await.unwrap() {
            Ok(task) => won.push(task),
            Err(StoreError::Conflict {
                expected: 0,
                found: Some(1),
                ..
            }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one transition is written");
    assert_eq!(t.store.get_task(task).await.unwrap(), won[0]);
    let events = t.store.job_events(j.id, 0, 100).await.unwrap();
    let of_task: Vec<_> = events.iter().filter(|e| e.task_id == Some(task)).collect();
    assert_eq!(of_task.len(), 1, "one event row: {of_task:?}");
}

/// 200 tasks walked through their lifecycle concurrently (batched by the group
/// committers): every transition is written once, with its event row, and each
/// task's events chain in order (each starts where the previous one ended).
async fn concurrent_lifecycles_write_each_transition_and_its_event(t: TestStore) {
    const TASKS: u64 = 200;
    let s = &*t.store;
    let (env, targets) = seed_env(s, 1, TASKS).await;
    let rel = seed_release(s, 1).await;
    let j = s
        .create_job(&new_job(s, 1, env, rel, &targets, 1).await)
        .await
        .unwrap()
        .value;
    let handles: Vec<_> = j
        .tasks
        .iter()
        .map(|task| {
            let (store, id, mut version) = (Arc::clone(&t.store), task.id, task.version);
            tokio::spawn(async move {
                for event in LIFECYCLE {
                    version = store
                        .apply_task_event(id, version, event, ts(1), "test")
                        .await
                        .unwrap()
                        .version;
                }
                version
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.await.unwrap(), LIFECYCLE.len() as u64);
    }
    let events = s.job_events(j.id, 0, 10_000).await.unwrap();
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    for task in &s.get_job(j.id).await.unwrap().tasks {
        assert_eq!(task.status, TaskStatus::Succeeded);
        assert_eq!(task.version, LIFECYCLE.len() as u64);
        let of_task: Vec<_> = events
            .iter()
            .filter(|e| e.task_id == Some(task.id))
            .collect();
        let names: Vec<&str> = of_task.iter().map(|e| e.event.as_str()).collect();
        let expected: Vec<&str> = LIFECYCLE.iter().map(|e| e.as_str()).collect();
        assert_eq!(names, expected, "task {}", task.id);
        assert!(
            of_task
                .windows(2)
                .all(|w| w[0].to_status == w[1].from_status),
            "task {}: {of_task:?}",
            task.id
        );
    }
}

async fn two_stores_claim_each_job_once(t: TestStore) {
    const JOBS: u64 = 1_000;
    let s = &*t.store;
    let rel = seed_release(s, 1).await;
    for n in 1..=JOBS {
        let (env, targets) = seed_env(s, n, 1).await;
        s.create_job(&new_job(s, n, env, rel, &targets, 1).await)
            .await
            .unwrap();
    }
    let second = t.reopen().await;
    let claimers: Vec<_> = [("a", Arc::clone(&t.store)), ("b", second)]
        .into_iter()
        .map(|(owner, store)| {
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for _ in 0..1_000 {
                    let got = store
                        .claim_jobs(owner, ts(1), Duration::from_secs(60), 7)
                        .await
                        .unwrap();
                    if got.is_empty() {
                        break;
                    }
                    mine.extend(got);
                }
                mine
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut per_owner = Vec::new();
    for c in claimers {
        let mine = c.await.unwrap();
        per_owner.push(mine.len());
        all.extend(mine);
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(
        all.len() as u64,
        JOBS,
        "every job claimed, none twice (per owner: {per_owner:?})"
    );
    assert_eq!(unique.len() as u64, JOBS);
}

/// A replica waiting for work hears of a job another replica created at once
/// (PostgreSQL `LISTEN/NOTIFY`), not at the end of its wait; on SQLite the wait is
/// a plain wait (one process per database: the engine wakes itself).
#[tokio::test]
async fn a_new_job_wakes_the_other_replicas_on_postgres() {
    let t = super::harness::postgres().await;
    let waiter = t.reopen().await;
    let s = &*t.store;
    let rel = seed_release(s, 1).await;
    let (env, targets) = seed_env(s, 1, 1).await;
    let job = new_job(s, 1, env, rel, &targets, 1).await;
    // The first wait sets the listener up; a quiet wait lasts its whole time.
    let started = std::time::Instant::now();
    waiter.wait_for_new_jobs(Duration::from_millis(300)).await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    let listening = tokio::spawn(async move {
        let started = std::time::Instant::now();
        waiter.wait_for_new_jobs(Duration::from_secs(20)).await;
        started.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.create_job(&job).await.unwrap();
    let waited = listening.await.unwrap();
    assert!(
        waited < Duration::from_secs(5),
        "the waiting replica woke {waited:?} after it started waiting"
    );
}
