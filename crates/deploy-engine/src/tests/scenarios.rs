//! Engine scenarios: every strategy's order and concurrency, retries, the failure policy, automatic and manual rollback, cancel, crash and resume.

use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::time::Duration;

use deploy_core::testing::digest;
use deploy_core::*;

use super::fake::{Behaviour, FakeWorld, Fixture, release_with};
use crate::EngineError;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

#[tokio::test]
async fn all_at_once_deploys_every_target_and_completes() {
    let f = Fixture::new(3).await;
    let mut events = f.engine.subscribe();
    let job = f.job(1, &release_with(1, digest(1)), |_| {}).await;
    let done = f.engine.run_to_settled(job.id).await.unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    assert!(
        done.tasks
            .iter()
            .all(|t| t.status == TaskStatus::Succeeded && t.attempt_number == 1)
    );
    for i in 0..3 {
        assert_eq!(f.world.digest_on(f.target(i), "web"), Some(digest(1)));
    }
    // Every transition was published: 3 tasks x 4 events (dispatched straight
    // from pending: dispatch, start, verify, succeed) + 4 job events.
    let mut seen = 0;
    let mut task_events = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen += 1;
        if e.task_id == Some(done.tasks[0].id) {
            task_events.push(e.event);
        }
    }
    assert_eq!(seen, 3 * 4 + 4);
    assert_eq!(task_events, ["dispatch", "start", "verify", "succeed"]);
    // And persisted, with the task log.
    let stored = f.store.job_events(job.id, 0, 1000).await.unwrap();
    assert_eq!(
        stored[0].event, "create",
        "the store records the creation itself"
    );
    assert_eq!(stored.len(), seen + 1);
    let log = f.store.read_log(done.tasks[0].id, 0, 10).await.unwrap();
    assert!(
        log.iter()
            .any(|c| c.content.contains(&format!("deployed {}", digest(1)))),
        "{log:?}"
    );
}

#[tokio::test]
async fn rolling_respects_batches_order_and_concurrency() {
    let f = Fixture::new(5).await;
    let job = f
        .job(1, &release_with(1, digest(1)), |r| {
            r.strategy = Strategy::Rolling {
                batch: BatchSize::Count(nz(2)),
            };
        })
        .await;
    let done = f.engine.run_to_settled(job.id).await.unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    assert!(f.world.max_in_flight.load(Ordering::SeqCst) <= 2);
    // Deploy order: every task of wave w before any task of wave w+1.
    let deploys = f.world.deploys.lock().unwrap().clone();
    let wave_of = |t: TaskId| done.tasks.iter().find(|x| x.id == t).unwrap().wave;
    let waves: Vec<u32> = deploys.iter().map(|d| wave_of(d.0)).collect();
    assert!(
        waves.windows(2).all(|w| w[0] <= w[1]),
        "waves out of order: {waves:?}"
    );
    assert_eq!(
        waves.iter().max(),
        Some(&2),
        "5 targets in batches of 2 make 3 waves"
    );
}

#[tokio::test]
async fn parallelism_caps_an_all_at_once_wave() {
    let f = Fixture::new(6).await;
    let job = f
        .job(1, &release_with(1, digest(1)), |r| r.parallelism = nz(2))
        .await;
    assert_eq!(
        f.engine.run_to_settled(job.id).await.unwrap().status,
        JobStatus::Completed
    );
    let max = f.world.max_in_flight.load(Ordering::SeqCst);
    assert!((1..=2).contains(&max), "max in flight {max}");
}

#[tokio::test]
async fn retryable_failures_retry_and_permanent_ones_do_not() {
    let f = Fixture::new(2).await;
    f.world
        .on(f.target(0), &digest(1), Behaviour::FailRetryable, 2);
    let job = f.job(1, &release_with(1, digest(1)), |_| {}).await;
    let done = f.engine.run_to_settled(job.id).await.unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    let t0 = done
        .tasks
        .iter()
        .find(|t| t.target_id == f.target(0))
        .unwrap();
    assert_eq!(t0.attempt_number, 3, "two retryable failures, then success");

    let g = Fixture::new(2).await;
    g.world
        .on(g.target(0), &digest(1), Behaviour::FailPermanent, 1);
    let job = g.job(1, &release_with(1, digest(1)), |_| {}).await;
    let done = g.engine.run_to_settled(job.id).await.unwrap();
    assert_eq!(done.status, JobStatus::Failed);
    let t0 = done
        .tasks
        .iter()
        .find(|t| t.target_id == g.target(0))
        .unwrap();
    assert_eq!((t0.status, t0.attempt_number), (TaskStatus::Failed, 1));
    assert!(
        t0.error
            .as_deref()
            .unwrap_or_default()
            .contains("authenticate"),
        "{:?}",
        t0.error
    );
    assert_eq!(
        done.failure_reason.as_deref(),
        Some("1 of 2 targets failed, exceeding the failure policy")
    );
}

/// The policy lets the rollout go on past a tolerated failure, reaching every target;
/// the job then fails (not every target runs the release) and, the failure being
/// within the policy, is not rolled back.
#[tokio::test]
async fn the_failure_policy_lets_the_rollout_go_on_but_the_job_fails() {
    let f = Fixture::new(4).await;
    f.world
        .on(f.target(1), &digest(1), Behaviour::FailPermanent, 1);
    let job = f
        .job(1, &release_with(1, digest(1)), |r| {
            r.failure_policy = FailurePolicy {
                max_failures: Some(1),
                auto_rollback: true,
                ..Default::default()
            };
        })
        .await;
    let done = f.engine.run_to_settled(job.id).await.unwrap();
    assert_eq!(done.status, JobStatus::Failed);
    assert_eq!(
        done.failure_reason.as_deref(),
        Some(
            "1 of 4 targets failed (within the failure policy, which let the rollout go on); a job completes only when every target runs its release"
        )
    );
    assert_eq!(
        done.tasks
            .iter()
            .filter(|t| t.status == TaskStatus::Succeeded)
            .count(),
        3,
        "every other target was reached"
    );
    assert_eq!(
        done.tasks
            .iter()
            .filter(|t| t.status == TaskStatus::Failed)
            .count(),
        1
    );
}

#[tokio::test]
async fn a_broken_release_is_rolled_back_to_the_last_known_good() {
    let f = Fixture::new(3).await;
    let v1 = f.job(1, &release_with(1, digest(1)), |_| {}).await;
    assert_eq!(
        f.engine.run_to_settled(v1.id).await.unwrap().status,
        JobStatus::Completed
    );
    // v3 is broken: deploys fine, fails its health check.
    f.world.broken.lock().unwrap().insert(digest(3));
    let v3 = f
        .job(2, &release_with(3, digest(3)), |r| {
            r.failure_policy.auto_rollback = true;
        })
        .await;
    assert_eq!(v3.previous_job_id, Some(v1.id));
    let done = f.engine.run_to_settled(v3.id).await.unwrap();
    assert_eq!(
        done.status,
        JobStatus::RolledBack,
        "{:?}",
        done.failure_reason
    );
    for i in 0..3 {
        assert_eq!(
            f.world.digest_on(f.target(i), "web"),
            Some(digest(1)),
            "target {i} back on v1"
        );
    }
    let errors: Vec<String> = done.tasks.iter().filter_map(|t| t.error.clone()).collect();
    assert!(
        errors.iter().all(|e| e.contains("health check failed")) && errors.len() == 3,
        "{errors:?}"
    );
}

#[tokio::test]
async fn a_rolling_failure_stops_new_waves_and_rolls_back_only_touched_targets() {
    let f = Fixture::new(5).await;
    let v1 = f.job(1, &release_with(1, digest(1)), |_| {}).await;
    f.engine.run_to_settled(v1.id).await.unwrap();
    f.world
        .on(f.target(1), &digest(2), Behaviour::FailPermanent, 1);
    let v2 = f
        .job(2, &release_with(2, digest(2)), |r| {
            r.strategy = Strategy::Rolling {
                batch: BatchSize::Count(nz(2)),
            };
            r.failure_policy.auto_rollback = true;
        })
        .await;
    let done = f.engine.run_to_settled(v2.id).await.unwrap();
    assert_eq!(done.status, JobStatus::RolledBack);
    let untouched: Vec<_> = done
        .tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Pending)
        .collect();
    assert_eq!(untouched.len(), 3, "waves 2 and 3 never started");
    for i in 0..5 {
        assert_eq!(
            f.world.digest_on(f.target(i), "web"),
            Some(digest(1)),
            "target {i}"
        );
    }
    let deployed_v2 = f
        .world
        .deploys
        .lock()
        .unwrap()
        .iter()
        .filter(|d| d.3 == digest(2))
        .count();
    assert_eq!(deployed_v2, 2, "only the first wave saw v2");
}

#[tokio::test]
async fn without_history_there_is_nothing_to_roll_back_and_the_job_says_failed() {
    let f = Fixture::new(1).await;
    f.world.broken.lock().unwrap().insert(digest(3));
    let job = f
        .job(1, &release_with(3, digest(3)), |r| {
            r.failure_policy.auto_rollback = true
        })
        .await;
    let done = f.engine.run_to_settled(job.id).await.unwrap();
    assert_eq!(done.status, JobStatus::Failed);
    // The touched slot's log says why nothing was restored.
    let log = f.store.read_log(done.tasks[0].id, 0, 100).await.unwrap();
    assert!(
        log.iter().any(|c| c
            .content
            .starts_with("automatic rollback impossible: no target of job")),
        "{log:?}"
    );
}

#[tokio::test]
async fn a_partial_rollback_names_the_slots_it_could_not_restore() {
    let f = Fixture::new(1).await;
    let v1 = f.job(1, &release_with(1, digest(1)), |_| {}).await;
    f.engine.run_to_settled(v1.id).await.unwrap();
    // v2 brings a second component, `api`, that no completed job ever deployed;
    // v2's `web` is broken, so the job fails and only `web` can be put back.
    let mut v2 = super::fake::release_with_component(2, digest(2), 2);
    let mut api = v2.components[0].clone();
    api.id = deploy_core::testing::component_id(3);
    api.name = Name::parse("api").unwrap();
    api.image = ImageRef::from_parts("127.0.0.1:5000/api", &digest(3)).unwrap();
    v2.components.push(api);
    f.world.broken.lock().unwrap().insert(digest(2));
    let job = f
        .job(2, &v2, |r| r.failure_policy.auto_rollback = true)
        .await;
    let done = f.engine.run_to_settled(job.id).await.unwrap();
    let events = f.store.job_events(job.id, 0, 1_000).await.unwrap();
    assert_eq!(done.status, JobStatus::RolledBack, "{events:#?}");
    assert_eq!(f.world.digest_on(f.target(0), "web"), Some(digest(1)));
    let cause = |event: &str| {
        events
            .iter()
            .find(|e| e.event == event && e.task_id.is_none())
            .map(|e| e.cause.clone())
            .unwrap_or_else(|| panic!("no {event} in {events:#?}"))
    };
    let started = cause("rollback_started");
    assert!(started.contains("restores 1 slot(s)"), "{started}");
    assert!(started.contains("/api`"), "{started}");
    assert!(!started.contains("/web`"), "{started}");
    let succeeded = cause("rollback_succeeded");
    assert!(
        succeeded.contains("not restored (no last-known-good digest):")
            && succeeded.contains("/api`"),
        "{succeeded}"
    );
}

#[tokio::test]
async fn manual_rollback_of_a_completed_job_restores_the_previous_release() {
    let f = Fixture::new(2).await;
    let v1 = f.job(1, &release_with(1, digest(1)), |_| {}).await;
    f.engine.run_to_settled(v1.id).await.unwrap();
    let v2 = f.job(2, &release_with(2, digest(2)), |_| {}).await;
    f.engine.run_to_settled(v2.id).await.unwrap();
    let rollback = f.engine.rollback(v2.id, "operator asked").await.unwrap();
    assert_eq!(rollback.rollback_of, Some(v2.id));
    assert_eq!(rollback.previous_job_id, Some(v1.id));
    let done = f.engine.run_to_settled(rollback.id).await.unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!(f.world.digest_on(f.target(0), "web"), Some(digest(1)));
    assert_eq!(
        f.store.get_job(v2.id).await.unwrap().status,
        JobStatus::Completed,
        "the original stays completed"
    );
}

#[tokio::test]
async fn cancelling_a_running_job_cancels_in_flight_tasks() {
    let f = Fixture::new(2).await;
    f.world.on(f.target(0), &digest(1), Behaviour::Hang, 1);
    let job = f.job(1, &release_with(1, digest(1)), |_| {}).await;
    let engine = f.engine.clone();
    let runner = tokio::spawn(async move { engine.run_to_settled(job.id).await });
    // Wait until the hanging task is in flight.
    for _ in 0..200 {
        if f.world.in_flight.load(Ordering::SeqCst) == 1
            && f.world.deploys.lock().unwrap().len() == 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f.engine.cancel_job(job.id, "alice").await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(10), runner)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(done.status, JobStatus::Failed);
    assert_eq!(done.failure_reason.as_deref(), Some("cancelled by alice"));
    assert!(
        done.tasks.iter().all(|t| t.is_settled()),
        "{:?}",
        done.tasks.iter().map(|t| t.status).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_second_job_in_a_busy_environment_is_refused_and_keys_are_idempotent() {
    let f = Fixture::new(1).await;
    let first = f.job(1, &release_with(1, digest(1)), |_| {}).await;
    // Same key: the same job.
    let again = f
        .engine
        .create_job(&crate::JobRequest::new(
            first.promotion_id,
            first.idempotency_key.clone(),
        ))
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.value.id, first.id);
    // Another promotion while the first is active: refused, naming the job.
    f.store
        .put_release(&release_with(2, digest(2)))
        .await
        .unwrap();
    let mut p = deploy_core::testing::promotion(2);
    p.release_id = release_with(2, digest(2)).id;
    p.decide(PromotionDecision::Approve, "t", deploy_core::testing::ts(2))
        .unwrap();
    f.store.put_promotion(&p).await.unwrap();
    let err = f
        .engine
        .create_job(&crate::JobRequest::new(
            p.id,
            IdempotencyKey::parse("other").unwrap(),
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&first.id.to_string()), "{err}");
    // An unapproved promotion is refused.
    let mut q = deploy_core::testing::promotion(3);
    q.release_id = p.release_id;
    f.store.put_promotion(&q).await.unwrap();
    let err = f
        .engine
        .create_job(&crate::JobRequest::new(
            q.id,
            IdempotencyKey::parse("q").unwrap(),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::PromotionNotApproved { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_crashed_engine_is_resumed_without_deploying_twice() {
    let dir = deploy_testkit::temp_dir("engine-crash-").unwrap();
    let path = dir.path().to_path_buf();
    let world = std::sync::Arc::new(FakeWorld::default());
    let f = Fixture::open(3, dir, world.clone(), true).await;
    // Target 2 hangs: the engine is killed while its task is in flight.
    world.on(f.target(2), &digest(1), Behaviour::Hang, 1);
    let job = f.job(1, &release_with(1, digest(1)), |_| {}).await;
    let engine = f.engine.clone();
    let runner = tokio::spawn(async move { engine.run_to_settled(job.id).await });
    for _ in 0..300 {
        if world.deploys.lock().unwrap().len() == 3 && world.in_flight.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Crash: the runner and its workers vanish mid-flight (nothing is cleaned up).
    runner.abort();
    let _ = runner.await;
    let stuck = f.store.get_job(job.id).await.unwrap();
    assert_eq!(stuck.status, JobStatus::Running);
    let in_flight: Vec<_> = stuck
        .tasks
        .iter()
        .filter(|t| t.status.is_in_flight())
        .collect();
    assert!(!in_flight.is_empty(), "a task was in flight at the crash");
    let deploys_before = world.deploys.lock().unwrap().len();

    // A new engine on the same database resumes the job.
    let g = Fixture::open_at(3, &path, world.clone()).await;
    let done = g.engine.run_to_settled(job.id).await.unwrap();
    assert_eq!(
        done.status,
        JobStatus::Completed,
        "{:?}",
        done.failure_reason
    );
    let deploys = world.deploys.lock().unwrap().clone();
    // Tasks that finished before the crash were not deployed again.
    let redeployed: Vec<_> = deploys[deploys_before..].iter().map(|d| d.2).collect();
    assert_eq!(
        redeployed,
        vec![f.target(2)],
        "only the interrupted target is deployed again"
    );
    // No (task, attempt) pair ran twice.
    let mut pairs: Vec<_> = deploys.iter().map(|d| (d.0, d.1)).collect();
    pairs.sort();
    pairs.dedup();
    assert_eq!(pairs.len(), deploys.len());
    drop(f);
}

#[tokio::test]
async fn compose_hosts_get_rendered_artifacts_and_a_lock_digest_task() {
    let f = Fixture::new(2).await;
    // Make target 2 a compose host.
    let mut compose = f.targets[1].clone();
    compose.id = deploy_core::testing::target_id(50);
    compose.name = deploy_core::testing::name("compose-1");
    compose.target_type = TargetType::ComposeHost;
    f.store.put_target(&compose).await.unwrap();
    let release = release_with(1, digest(1));
    f.store.put_release(&release).await.unwrap();
    let mut p = deploy_core::testing::promotion(1);
    p.decide(PromotionDecision::Approve, "t", deploy_core::testing::ts(1))
        .unwrap();
    f.store.put_promotion(&p).await.unwrap();
    let mut request = crate::JobRequest::new(p.id, IdempotencyKey::parse("with-template").unwrap());
    // Without a template a compose host cannot be deployed.
    let err = f.engine.create_job(&request).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("compose_host; expected a release with a service definition"),
        "{err}"
    );
    request.template =
        Some("services:\n  web:\n    componentName: web\n    ports: [\"8080\"]\n".to_owned());
    let job = f.engine.create_job(&request).await.unwrap().value;
    let compose_task = job
        .tasks
        .iter()
        .find(|t| t.target_id == compose.id)
        .unwrap();
    assert_eq!(compose_task.component_id, None);
    let lock = job
        .artifacts
        .iter()
        .find(|a| a.target_id == Some(compose.id) && a.kind == ArtifactKind::ComposeLock)
        .unwrap();
    assert_eq!(
        compose_task.digest, lock.sha256,
        "the task deploys exactly this lock"
    );
    assert!(
        lock.content
            .contains(&format!("127.0.0.1:5000/web@{}", digest(1)))
    );
    // Stored and reloaded byte for byte.
    let stored = f.store.get_job(job.id).await.unwrap();
    assert_eq!(stored.artifacts.len(), job.artifacts.len());
    assert!(stored.artifacts.iter().all(|a| a.verify().is_ok()));
    // And the job runs: the compose task deploys the project named after the environment.
    let done = f.engine.run_to_settled(job.id).await.unwrap();
    assert_eq!(
        done.status,
        JobStatus::Completed,
        "{:?}",
        done.failure_reason
    );
    assert_eq!(
        f.world.digest_on(compose.id, "prod"),
        Some(lock.sha256.clone())
    );
}

#[tokio::test]
async fn rollback_matches_components_by_name_across_releases_with_new_ids() {
    use super::fake::release_with_component;
    let f = Fixture::new(2).await;
    // Every release gives `web` a new component id, as the API does.
    let v1 = f
        .job(1, &release_with_component(1, digest(1), 11), |_| {})
        .await;
    assert_eq!(
        f.engine.run_to_settled(v1.id).await.unwrap().status,
        JobStatus::Completed
    );
    f.world.broken.lock().unwrap().insert(digest(3));
    let v3 = f
        .job(2, &release_with_component(3, digest(3), 33), |r| {
            r.failure_policy.auto_rollback = true
        })
        .await;
    let done = f.engine.run_to_settled(v3.id).await.unwrap();
    assert_eq!(
        done.status,
        JobStatus::RolledBack,
        "{:?}",
        done.failure_reason
    );
    for i in 0..2 {
        assert_eq!(
            f.world.digest_on(f.target(i), "web"),
            Some(digest(1)),
            "target {i} back on v1"
        );
    }
    // Manual rollback of a completed job, across new ids too.
    let v4 = f
        .job(3, &release_with_component(4, digest(4), 44), |_| {})
        .await;
    assert_eq!(
        f.engine.run_to_settled(v4.id).await.unwrap().status,
        JobStatus::Completed
    );
    let rollback = f.engine.rollback(v4.id, "operator asked").await.unwrap();
    assert_eq!(rollback.tasks.len(), 2);
    assert!(
        rollback.tasks.iter().all(|t| t.digest == digest(1)
            && t.component_id == Some(deploy_core::testing::component_id(11)))
    );
    assert_eq!(
        f.engine.run_to_settled(rollback.id).await.unwrap().status,
        JobStatus::Completed
    );
    assert_eq!(f.world.digest_on(f.target(0), "web"), Some(digest(1)));
}

#[tokio::test]
async fn a_canary_without_health_checks_still_soaks_before_the_remaining_waves() {
    let f = Fixture::open_with(
        3,
        deploy_testkit::temp_dir("engine-").unwrap(),
        std::sync::Arc::new(FakeWorld::default()),
        true,
        deploy_core::testing::environment("prod"),
        |t| t.health_check = None,
    )
    .await;
    let soak_ms = 400;
    let job = f
        .job(1, &release_with(1, digest(1)), |r| {
            r.strategy = Strategy::Canary {
                canary: BatchSize::Count(nz(1)),
                min_healthy_time_ms: soak_ms,
                batch: BatchSize::Count(nz(2)),
            }
        })
        .await;
    let done = f.engine.run_to_settled(job.id).await.unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    let events = f.store.job_events(job.id, 0, 1_000).await.unwrap();
    let canary = done.tasks.iter().find(|t| t.wave == 0).unwrap();
    let at = |event: &str, task: Option<TaskId>| {
        events
            .iter()
            .filter(|e| e.event == event && (task.is_none() || e.task_id == task))
            .map(|e| e.at.unix_millis())
            .collect::<Vec<_>>()
    };
    let canary_verified = at("verify", Some(canary.id))[0];
    let canary_succeeded = at("succeed", Some(canary.id))[0];
    assert!(
        canary_succeeded - canary_verified >= soak_ms,
        "the canary succeeded {} ms after its deploy; expected a soak of {soak_ms} ms",
        canary_succeeded - canary_verified
    );
    let later_dispatches: Vec<u64> = done
        .tasks
        .iter()
        .filter(|t| t.wave > 0)
        .flat_map(|t| at("dispatch", Some(t.id)))
        .collect();
    assert_eq!(later_dispatches.len(), 2);
    assert!(later_dispatches.iter().all(|&d| d >= canary_succeeded));
    let log = f.store.read_log(canary.id, 0, 100).await.unwrap();
    assert!(
        log.iter()
            .any(|c| c.content.contains("no health check: soaking 400 ms")),
        "{log:?}"
    );
}

#[tokio::test]
async fn a_busy_environment_refuses_a_job_at_once_or_queues_it_when_asked_to_wait() {
    use deploy_core::testing::approved_promotion;
    use deploy_store::StoreError;

    let f = Fixture::new(1).await;
    // The first job holds the environment from creation (pending) until it ends.
    let first = f.job(1, &release_with(1, digest(1)), |_| {}).await;
    let second_release = release_with(2, digest(2));
    f.store.put_release(&second_release).await.unwrap();
    let promotion = approved_promotion(2, second_release.id);
    f.store.put_promotion(&promotion).await.unwrap();
    let mut request =
        crate::JobRequest::new(promotion.id, IdempotencyKey::parse("promo-2").unwrap());

    // No wait: refused at once, naming the running job.
    let refused = f.engine.create_job(&request).await.unwrap_err();
    assert!(
        matches!(&refused, EngineError::Store(StoreError::EnvironmentLocked { job, .. }) if *job == first.id),
        "{refused:?}"
    );

    // A short wait that the first job outlasts: refused the same way, after the wait.
    request.wait_for_environment = Some(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let refused = f.engine.create_job(&request).await.unwrap_err();
    assert!(
        matches!(
            refused,
            EngineError::Store(StoreError::EnvironmentLocked { .. })
        ),
        "{refused:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );

    // A long enough wait: queued until the first job completes, then created.
    request.wait_for_environment = Some(Duration::from_secs(30));
    let engine = f.engine.clone();
    let queued = tokio::spawn(async move { engine.create_job(&request).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !queued.is_finished(),
        "created while the first job held the environment"
    );
    let done = f.engine.run_to_settled(first.id).await.unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    let second = tokio::time::timeout(Duration::from_secs(10), queued)
        .await
        .expect("the queued request ends once the environment is free")
        .unwrap()
        .unwrap();
    assert_eq!(second.value.release_id, second_release.id);
    assert_eq!(second.value.status, JobStatus::Pending);
}

/// A rollback re-deploys an earlier job's compose lock: it is checked against the
/// environment's runtime policy as it is now, not as it was when the lock was rendered.
#[tokio::test]
async fn a_rollback_to_a_lock_the_policy_now_refuses_is_refused_and_a_compliant_one_runs() {
    const BIND: &str =
        "services:\n  web:\n    componentName: web\n    volumes: [\"/srv/data:/data\"]\n";
    const PLAIN: &str = "services:\n  web:\n    componentName: web\n";
    let set_policy = |f: &Fixture, json: &'static str| {
        let store = f.store.clone();
        async move {
            let mut env = store
                .get_environment(deploy_core::testing::environment_id(1))
                .await
                .unwrap();
            env.runtime_policy = serde_json::from_str(json).unwrap();
            let version = env.version;
            store.update_environment(&env, version).await.unwrap();
        }
    };
    for (first, tightened, refused) in [
        (BIND, r#"{"bind_prefixes": ["/srv"]}"#, false),
        (BIND, "{}", true),
        (PLAIN, "{}", false),
    ] {
        let f = Fixture::new(1).await;
        set_policy(&f, r#"{"bind_prefixes": ["/srv"]}"#).await;
        let v1 = f
            .job(1, &release_with(1, digest(1)), |r| {
                r.template = Some(first.to_owned())
            })
            .await;
        assert_eq!(
            f.engine.run_to_settled(v1.id).await.unwrap().status,
            JobStatus::Completed
        );
        let v2 = f
            .job(2, &release_with(2, digest(2)), |r| {
                r.template = Some(PLAIN.to_owned())
            })
            .await;
        assert_eq!(
            f.engine.run_to_settled(v2.id).await.unwrap().status,
            JobStatus::Completed
        );
        set_policy(&f, tightened).await;
        let result = f.engine.rollback(v2.id, "operator asked").await;
        if refused {
            let err = result.unwrap_err();
            assert!(
                matches!(&err, EngineError::Artifacts(deploy_artifacts::ArtifactError::PolicyRefused { service, key, .. })
                    if service == "web" && key == "volumes"),
                "{err}"
            );
            assert!(err.to_string().contains("/srv/data"), "{err}");
        } else {
            let rollback = result.unwrap();
            let done = f.engine.run_to_settled(rollback.id).await.unwrap();
            assert_eq!(done.status, JobStatus::Completed, "{first}");
            assert_eq!(f.world.digest_on(f.target(0), "web"), Some(digest(1)));
        }
    }
}

#[tokio::test]
async fn an_automatic_rollback_to_a_lock_the_policy_now_refuses_leaves_the_job_failed() {
    let f = Fixture::new(1).await;
    let mut env = f
        .store
        .get_environment(deploy_core::testing::environment_id(1))
        .await
        .unwrap();
    env.runtime_policy = serde_json::from_str(r#"{"bind_prefixes": ["/srv"]}"#).unwrap();
    let env = f.store.update_environment(&env, env.version).await.unwrap();
    let v1 = f
        .job(1, &release_with(1, digest(1)), |r| {
            r.template = Some(
                "services:\n  web:\n    componentName: web\n    volumes: [\"/srv/data:/data\"]\n"
                    .to_owned(),
            )
        })
        .await;
    assert_eq!(
        f.engine.run_to_settled(v1.id).await.unwrap().status,
        JobStatus::Completed
    );
    let mut tightened = env.clone();
    tightened.runtime_policy = RuntimePolicy::default();
    f.store
        .update_environment(&tightened, env.version)
        .await
        .unwrap();
    f.world.broken.lock().unwrap().insert(digest(2));
    let v2 = f
        .job(2, &release_with(2, digest(2)), |r| {
            r.template = Some("services:\n  web:\n    componentName: web\n".to_owned());
            r.failure_policy.auto_rollback = true;
        })
        .await;
    let done = f.engine.run_to_settled(v2.id).await.unwrap();
    assert_eq!(done.status, JobStatus::Failed);
    // Left as the failed job left it: v1's bind is not restored.
    assert_eq!(f.world.digest_on(f.target(0), "web"), Some(digest(2)));
    let log = f.store.read_log(done.tasks[0].id, 0, 100).await.unwrap();
    assert!(
        log.iter().any(|c| c.content.starts_with(
            "automatic rollback refused: service `web` sets `volumes: /srv/data:/data`"
        )),
        "{log:?}"
    );
}
