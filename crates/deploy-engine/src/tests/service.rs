//! The engine as a service: claiming jobs with leases, two engines on one database, and hand-over on shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use deploy_core::testing::digest;
use deploy_core::*;
use tokio_util::sync::CancellationToken;

use super::fake::{Behaviour, FakeWorld, Fixture, release_with};

/// An engine serving (claiming and running jobs) until [`Serving::stop`].
struct Serving {
    shutdown: CancellationToken,
    service: tokio::task::JoinHandle<()>,
}

impl Serving {
    fn start(engine: &crate::Engine) -> Self {
        let shutdown = CancellationToken::new();
        let (engine, token) = (engine.clone(), shutdown.clone());
        let service = tokio::spawn(async move { engine.serve(token).await });
        Self { shutdown, service }
    }

    /// Shuts the service down and waits (bounded) until it has.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.service)
            .await
            .unwrap()
            .unwrap();
    }
}

/// Waits (bounded) until job `id` is settled in the store.
async fn settled(f: &Fixture, id: JobId, within: Duration) -> DeploymentJob {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let job = f.store.get_job(id).await.unwrap();
        if job.is_settled() {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} still {} after {within:?}",
            job.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn serve_claims_and_completes_created_jobs() {
    let f = Fixture::new(3).await;
    let serving = Serving::start(&f.engine);
    let job = f.job(1, &release_with(1, digest(1)), |_| {}).await;
    let done = settled(&f, job.id, Duration::from_secs(20)).await;
    assert_eq!(done.status, JobStatus::Completed);
    serving.stop().await;
}

#[tokio::test]
async fn a_stopped_engine_hands_its_job_to_another_on_the_same_database() {
    let dir = deploy_testkit::temp_dir("engine-serve-").unwrap();
    let path = dir.path().to_path_buf();
    let world = Arc::new(FakeWorld::default());
    let a = Fixture::open(2, dir, world.clone(), true).await;
    // Target 2 hangs on engine A: A is shut down with the task in flight.
    world.on(a.target(1), &digest(1), Behaviour::Hang, 1);
    let job = a.job(1, &release_with(1, digest(1)), |_| {}).await;
    let serving_a = Serving::start(&a.engine);
    for _ in 0..500 {
        if world.in_flight.load(Ordering::SeqCst) == 1 && world.deploys.lock().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        world.in_flight.load(Ordering::SeqCst),
        1,
        "the hanging deploy is in flight on A"
    );
    // A shuts down: its grace is zero, so the hanging task is cancelled, and the lease released.
    serving_a.stop().await;
    let after_a = a.store.get_job(job.id).await.unwrap();
    assert!(
        after_a.status.is_active(),
        "A only stopped running the job: {}",
        after_a.status
    );

    // Engine B on the same database claims it at once and finishes it.
    let b = Fixture::open_at(2, &path, world.clone()).await;
    let serving_b = Serving::start(&b.engine);
    let done = settled(&b, job.id, Duration::from_secs(30)).await;
    assert_eq!(
        done.status,
        JobStatus::Completed,
        "{:?}",
        done.failure_reason
    );
    assert_eq!(world.digest_on(b.target(1), "web"), Some(digest(1)));
    // The interrupted attempt was cancelled (a retryable failure) and retried once; nothing ran twice.
    let t1 = done
        .tasks
        .iter()
        .find(|t| t.target_id == b.target(1))
        .unwrap();
    assert_eq!(t1.attempt_number, 2);
    let deploys = world.deploys.lock().unwrap().clone();
    let mut pairs: Vec<_> = deploys.iter().map(|d| (d.0, d.1)).collect();
    pairs.sort();
    pairs.dedup();
    assert_eq!(
        pairs.len(),
        deploys.len(),
        "no (task, attempt) deployed twice"
    );
    serving_b.stop().await;
    drop(a);
}

/// Stands in for a replica killed while holding job `id`: its lease, taken now for `lease`, is never released.
async fn leased_by_dead_replica(f: &Fixture, id: JobId, owner: &str, lease: Duration) -> Timestamp {
    let now = crate::Clock::now(&crate::SystemClock);
    let claimed = f.store.claim_jobs(owner, now, lease, 10).await.unwrap();
    assert_eq!(claimed, [id]);
    now.saturating_add(lease)
}

#[tokio::test]
async fn a_restart_under_the_same_owner_resumes_its_jobs_at_once() {
    let f = Fixture::new(1).await;
    let job = f.job(1, &release_with(1, digest(1)), |_| {}).await;
    // The fixture's engine runs as `test-engine`; its dead predecessor held the job for an hour.
    leased_by_dead_replica(&f, job.id, "test-engine", Duration::from_secs(3600)).await;
    let serving = Serving::start(&f.engine);
    let done = settled(&f, job.id, Duration::from_secs(20)).await;
    assert_eq!(
        done.status,
        JobStatus::Completed,
        "{:?}",
        done.failure_reason
    );
    serving.stop().await;
}

#[tokio::test]
async fn a_job_held_by_another_owner_waits_for_its_lease_to_end() {
    let f = Fixture::new(1).await;
    let job = f.job(1, &release_with(1, digest(1)), |_| {}).await;
    let lease_end =
        leased_by_dead_replica(&f, job.id, "another-replica", Duration::from_secs(3)).await;
    let serving = Serving::start(&f.engine);
    // Well inside the lease: untouched.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(
        f.store.get_job(job.id).await.unwrap().status,
        JobStatus::Pending
    );
    assert!(f.world.deploys.lock().unwrap().is_empty());
    let done = settled(&f, job.id, Duration::from_secs(30)).await;
    assert_eq!(
        done.status,
        JobStatus::Completed,
        "{:?}",
        done.failure_reason
    );
    let started = done.started_at.expect("the job started");
    assert!(
        started >= lease_end,
        "started at {started}, before the other owner's lease ended at {lease_end}"
    );
    serving.stop().await;
}

/// Writes, as a runner would have, that `job` (one task) started, that its task went
/// through `task_events`, and that the job failed with `cause`: the job as failed.
async fn fail_by_hand(
    f: &Fixture,
    job: &DeploymentJob,
    task_events: &[TaskEvent],
    cause: &str,
) -> DeploymentJob {
    let now = crate::Clock::now(&crate::SystemClock);
    let mut written = job.clone();
    for e in [JobEvent::Start, JobEvent::ArtifactsReady] {
        written = f
            .store
            .apply_job_event(job.id, written.version, e, now, "test")
            .await
            .unwrap();
    }
    let task = &written.tasks[0];
    let mut version = task.version;
    for e in task_events {
        version = f
            .store
            .apply_task_event(task.id, version, *e, now, "test")
            .await
            .unwrap()
            .version;
    }
    let current = f.store.get_job(job.id).await.unwrap();
    f.store
        .apply_job_event(job.id, current.version, JobEvent::Fail, now, cause)
        .await
        .unwrap();
    f.store.get_job(job.id).await.unwrap()
}

#[tokio::test]
async fn a_job_failed_just_before_a_kill_is_rolled_back_after_the_restart() {
    // Found by tests/scenarios/faults/kill_deployd.rs: SIGKILL between a job's `fail` and
    // its `rollback_started` left it failed, its broken release running, for good.
    let f = Fixture::new(1).await;
    let v1 = f.job(1, &release_with(1, digest(1)), |_| {}).await;
    assert_eq!(
        f.engine.run_to_settled(v1.id).await.unwrap().status,
        JobStatus::Completed
    );
    let v3 = f
        .job(2, &release_with(3, digest(3)), |r| {
            r.failure_policy.auto_rollback = true;
        })
        .await;
    // The killed predecessor (same owner) held v3, deployed it, saw its health check fail
    // and wrote the job's `fail`; nothing after.
    leased_by_dead_replica(&f, v3.id, "test-engine", Duration::from_secs(3600)).await;
    fail_by_hand(
        &f,
        &v3,
        &[
            TaskEvent::Dispatch,
            TaskEvent::Start,
            TaskEvent::Verify,
            TaskEvent::Fail { retryable: false },
        ],
        "test: killed after this",
    )
    .await;
    let serving = Serving::start(&f.engine);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let job = f.store.get_job(v3.id).await.unwrap();
        if job.status == JobStatus::RolledBack {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {} still {} 20 s after the restart",
            v3.id,
            job.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(f.world.digest_on(f.target(0), "web"), Some(digest(1)));
    serving.stop().await;
}

#[tokio::test]
async fn a_manual_rollback_of_a_failed_job_is_run_once_by_the_claim_loop() {
    // The manual path end to end under the service: the rollback job is claimed and
    // run like any job, once (one deploy per task), and its end settles the original.
    let f = Fixture::new(2).await;
    let serving = Serving::start(&f.engine);
    let v1 = f.job(1, &release_with(1, digest(1)), |_| {}).await;
    assert_eq!(
        settled(&f, v1.id, Duration::from_secs(20)).await.status,
        JobStatus::Completed
    );
    for i in 0..2 {
        f.world
            .on(f.target(i), &digest(3), Behaviour::FailPermanent, 1);
    }
    let v3 = f
        .job(2, &release_with(3, digest(3)), |r| {
            r.failure_policy.auto_rollback = false;
        })
        .await;
    let failed = settled(&f, v3.id, Duration::from_secs(20)).await;
    assert_eq!(failed.status, JobStatus::Failed);
    // Let the claim loop come round with the failed job settled and released.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let rollback = f.engine.rollback(v3.id, "operator asked").await.unwrap();
    assert_eq!(rollback.rollback_of, Some(v3.id));
    let original = f.store.get_job(v3.id).await.unwrap();
    assert_eq!(
        original.status,
        JobStatus::RollingBack,
        "moved with the rollback job's creation"
    );
    let done = settled(&f, v3.id, Duration::from_secs(20)).await;
    assert_eq!(
        done.status,
        JobStatus::RolledBack,
        "{:?}",
        done.failure_reason
    );
    let rollback = f.store.get_job(rollback.id).await.unwrap();
    assert_eq!(rollback.status, JobStatus::Completed);
    for i in 0..2 {
        assert_eq!(f.world.digest_on(f.target(i), "web"), Some(digest(1)));
    }
    // Each rollback task was deployed once, in attempt 1, and its dispatch written once.
    let deploys = f.world.deploys.lock().unwrap().clone();
    for task in &rollback.tasks {
        let runs: Vec<u32> = deploys
            .iter()
            .filter(|(t, ..)| *t == task.id)
            .map(|(_, attempt, ..)| *attempt)
            .collect();
        assert_eq!(runs, [1], "task {} deployed in attempts {runs:?}", task.id);
    }
    let events = f.store.job_events(rollback.id, 0, 1_000).await.unwrap();
    assert_eq!(
        events.iter().filter(|e| e.event == "dispatch").count(),
        rollback.tasks.len(),
        "{events:#?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event == "start" && e.task_id.is_none())
            .count(),
        1,
        "one runner started the rollback job: {events:#?}"
    );
    serving.stop().await;
}

#[tokio::test]
async fn a_manual_rollback_waits_for_the_wind_down_and_is_refused_while_rolling_back() {
    let f = Fixture::new(1).await;
    let v1 = f.job(1, &release_with(1, digest(1)), |_| {}).await;
    assert_eq!(
        f.engine.run_to_settled(v1.id).await.unwrap().status,
        JobStatus::Completed
    );
    // v2 failed (cancelled, say) while its task's attempt was still out on the target.
    let v2 = f.job(2, &release_with(2, digest(2)), |_| {}).await;
    let failed = fail_by_hand(
        &f,
        &v2,
        &[TaskEvent::Dispatch, TaskEvent::Start],
        "test: cancelled",
    )
    .await;
    let task = &failed.tasks[0];
    let now = crate::Clock::now(&crate::SystemClock);
    let err = f
        .engine
        .rollback(v2.id, "operator asked")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "job `{}` is still winding down (1 task(s) in flight or queued; its automatic rollback, if the failure policy asks for one, comes next); roll it back once it has settled",
            v2.id
        )
    );
    assert_eq!(
        f.store.get_job(v2.id).await.unwrap().version,
        failed.version,
        "nothing written"
    );
    // The attempt settles (the runner reconciled it): still winding down until the
    // runner ends the wind-down; then it may be rolled back, once.
    f.store
        .apply_task_event(
            task.id,
            task.version,
            TaskEvent::Fail { retryable: false },
            now,
            "test",
        )
        .await
        .unwrap();
    let err = f.engine.rollback(v2.id, "too soon").await.unwrap_err();
    assert!(
        err.to_string().contains("is still winding down (0 task(s)"),
        "{err}"
    );
    f.store
        .apply_job_event(v2.id, failed.version, JobEvent::WoundDown, now, "test")
        .await
        .unwrap();
    let rollback = f.engine.rollback(v2.id, "operator asked").await.unwrap();
    assert_eq!(rollback.rollback_of, Some(v2.id));
    let err = f.engine.rollback(v2.id, "asked twice").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "job `{}` is `rolling_back`; expected a failed job, or a completed job for a manual rollback",
            v2.id
        )
    );
}

#[tokio::test]
async fn cancelling_a_rolling_back_job_cancels_its_rollback_job_and_settles_it_failed() {
    let f = Fixture::new(1).await;
    let serving = Serving::start(&f.engine);
    let v1 = f.job(1, &release_with(1, digest(1)), |_| {}).await;
    assert_eq!(
        settled(&f, v1.id, Duration::from_secs(20)).await.status,
        JobStatus::Completed
    );
    // v2 fails for good; its automatic rollback to v1 hangs on the target.
    f.world
        .on(f.target(0), &digest(2), Behaviour::FailPermanent, 1);
    f.world.on(f.target(0), &digest(1), Behaviour::Hang, 1);
    let v2 = f
        .job(2, &release_with(2, digest(2)), |r| {
            r.failure_policy.auto_rollback = true;
        })
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while f.world.in_flight.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rollback never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let original = f.store.get_job(v2.id).await.unwrap();
    assert_eq!(original.status, JobStatus::RollingBack);
    let shown = f.engine.cancel_job(v2.id, "operator").await.unwrap();
    assert_eq!(shown.id, v2.id);
    // The rollback job winds down (its hanging attempt cancelled); its end settles v2.
    let done = settled(&f, v2.id, Duration::from_secs(20)).await;
    assert_eq!(done.status, JobStatus::Failed);
    let reason = done.failure_reason.unwrap_or_default();
    assert!(
        reason.starts_with("rollback job `") && reason.contains("failed: cancelled by operator"),
        "{reason}"
    );
    let events = f.store.job_events(v2.id, 0, 1_000).await.unwrap();
    let job_events: Vec<&str> = events
        .iter()
        .filter(|e| e.task_id.is_none())
        .map(|e| e.event.as_str())
        .collect();
    assert_eq!(
        job_events,
        [
            "create",
            "start",
            "artifacts_ready",
            "fail",
            "rollback_started",
            "rollback_failed"
        ]
    );
    serving.stop().await;
}

#[tokio::test]
async fn a_rollback_job_cancelled_before_it_started_still_settles_the_original() {
    let f = Fixture::new(1).await;
    let v1 = f.job(1, &release_with(1, digest(1)), |_| {}).await;
    assert_eq!(
        f.engine.run_job(v1.id).await.unwrap().status,
        JobStatus::Completed
    );
    f.world
        .on(f.target(0), &digest(2), Behaviour::FailPermanent, 1);
    let v2 = f
        .job(2, &release_with(2, digest(2)), |r| {
            r.failure_policy.auto_rollback = true;
        })
        .await;
    // The runner ends with the rollback job created, not run (nobody serves here).
    let original = f.engine.run_job(v2.id).await.unwrap();
    assert_eq!(original.status, JobStatus::RollingBack);
    let shown = f.engine.cancel_job(v2.id, "operator").await.unwrap();
    assert_eq!(
        shown.status,
        JobStatus::RollingBack,
        "settled by its rollback job's end"
    );
    // The cancelled rollback job still winds down, and its end settles the original.
    let done = f.engine.run_to_settled(v2.id).await.unwrap();
    assert!(done.is_settled(), "{done:?}");
    assert_eq!(done.status, JobStatus::Failed);
    assert!(
        done.failure_reason
            .as_deref()
            .is_some_and(|r| r.ends_with("failed: cancelled by operator")),
        "{:?}",
        done.failure_reason
    );
    // Nothing was deployed by the cancelled rollback job: v2's failure left v1 running.
    assert_eq!(f.world.digest_on(f.target(0), "web"), Some(digest(1)));
}
