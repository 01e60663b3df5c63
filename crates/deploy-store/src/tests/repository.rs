//! Repository behaviour on both backends: round trips, transitions, the environment lock, the engine's queries, logs and leases.

use std::time::Duration;

use deploy_core::testing::*;
use deploy_core::*;

use super::harness::{
    TestStore, both_backends, complete, create_and_fail, new_job, one_job, seed_env, seed_release,
};
use crate::{AgentRecord, ApiTokenRecord, MAX_LOG_CHUNKS_PER_TASK, Store, StoreError};

both_backends!(
    entities_round_trip,
    jobs_round_trip_and_creation_is_idempotent,
    job_transitions_are_compare_and_swap_and_logged,
    task_transitions_and_saves_are_compare_and_swap,
    one_active_job_per_environment,
    previous_successful_job_skips_the_given_release,
    last_known_good_is_what_the_newest_completed_job_deployed,
    logs_are_ordered_and_bounded,
    leases_claim_renew_expire_and_release,
    a_failed_job_whose_runner_died_is_claimed_again,
    a_rollback_starts_in_one_transaction_or_not_at_all,
    a_rollback_jobs_end_settles_the_original_with_it,
);

async fn entities_round_trip(t: TestStore) {
    let s = &*t.store;
    let (env, targets) = seed_env(s, 1, 2).await;
    assert_eq!(s.get_environment(env).await.unwrap().name.as_str(), "env-1");
    let listed = s.list_targets(env).await.unwrap();
    assert_eq!(listed.iter().map(|t| t.id).collect::<Vec<_>>(), targets);
    assert_eq!(listed[0].connection, ssh_connection(1));
    let err = s
        .put_environment(&s.get_environment(env).await.unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("environment `{env}` already exists")
    );

    // Another environment with the same name: the error names the name and its holder.
    let mut twin = s.get_environment(env).await.unwrap();
    twin.id = deploy_core::EnvironmentId::from_parts(ts(99), [7; 10]);
    let err = s.put_environment(&twin).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::NameTaken { entity: "environment", name, existing }
            if name == "env-1" && *existing == env.to_string()),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("environment name `env-1` is already taken by environment `{env}`")
    );
    let mut twin = listed[0].clone();
    twin.id = deploy_core::TargetId::from_parts(ts(99), [7; 10]);
    let err = s.put_target(&twin).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "target name `{}` is already taken by target `{}`",
            twin.name, listed[0].id
        )
    );

    // The service definition is stored with the release, byte for byte.
    let r = super::harness::release_n(3).with_template(Some(deploy_core::ServiceTemplate::new(
        "services:\n  web:\n    componentName: web\n    environment:\n      A: \"x # y $${HOME} 日本\"\n".to_owned(),
    )));
    s.put_release(&r).await.unwrap();
    assert_eq!(s.get_release(r.id).await.unwrap(), r);

    let err = s.put_release(&r).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("release `{}` already exists", r.id)
    );
    let mut twin = r.clone();
    twin.id = deploy_core::ReleaseId::from_parts(ts(99), [7; 10]);
    let err = s.put_release(&twin).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "release name `{}` is already taken by release `{}`",
            r.name, r.id
        )
    );
    assert!(
        s.get_release(twin.id).await.is_err(),
        "nothing of the twin was written"
    );

    let mut p = promotion(1);
    p.environment_id = env;
    p.release_id = r.id;
    s.put_promotion(&p).await.unwrap();
    assert_eq!(s.get_promotion(p.id).await.unwrap(), p);

    let agent = AgentRecord {
        id: agent_id(1),
        name: "agent-1".into(),
        labels: Labels::default(),
        capabilities: vec!["docker".into()],
        agent_version: "0.0.0".into(),
        credential_hash: None,
        last_seen_at: Some(ts(5)),
        created_at: ts(1),
        revoked_at: None,
        bootstrap_token_id: None,
        labels_version: 1,
    };
    s.put_agent(&agent).await.unwrap();
    assert_eq!(s.get_agent(agent.id).await.unwrap(), agent);

    let token = ApiTokenRecord {
        id: uuid::Uuid::from_u128(7),
        name: "ci".into(),
        token_hash: sha256_of(b"secret-token"),
        scopes: vec!["deploy".into()],
        created_at: ts(1),
        revoked_at: None,
        last_used_at: None,
        expires_at: None,
    };
    s.put_api_token(&token).await.unwrap();
    assert_eq!(
        s.find_api_token(&token.token_hash).await.unwrap(),
        Some(token.clone())
    );
    s.touch_api_token(token.id, ts(3)).await.unwrap();
    let revoked = s.revoke_api_token(token.id, ts(4)).await.unwrap();
    assert_eq!(
        (revoked.last_used_at, revoked.revoked_at),
        (Some(ts(3)), Some(ts(4)))
    );
    // Revoking again keeps the first revocation time.
    let again = s.revoke_api_token(token.id, ts(9)).await.unwrap();
    assert_eq!(again.revoked_at, Some(ts(4)));
    assert_eq!(s.list_api_tokens().await.unwrap(), vec![again]);
    assert!(matches!(
        s.revoke_api_token(uuid::Uuid::from_u128(8), ts(4))
            .await
            .unwrap_err(),
        StoreError::NotFound {
            entity: "api token",
            ..
        }
    ));
    assert_eq!(s.list_releases(None, 10).await.unwrap(), vec![r.clone()]);
    assert!(s.list_releases(Some(r.id), 10).await.unwrap().is_empty());
    let envs = s.list_environments(None, 10).await.unwrap();
    assert_eq!(envs.iter().map(|e| e.id).collect::<Vec<_>>(), vec![env]);
    assert!(s.list_environments(Some(env), 10).await.unwrap().is_empty());
    assert_eq!(s.find_api_token(&sha256_of(b"other")).await.unwrap(), None);
    assert!(matches!(
        s.get_job(job_id(99)).await.unwrap_err(),
        StoreError::NotFound { entity: "job", .. }
    ));
}

async fn jobs_round_trip_and_creation_is_idempotent(t: TestStore) {
    let s = &*t.store;
    let (env, targets) = seed_env(s, 1, 3).await;
    let rel = seed_release(s, 1).await;
    let mut j = new_job(s, 1, env, rel, &targets, 1).await;
    j.strategy = Strategy::Rolling {
        batch: BatchSize::Count(std::num::NonZeroU32::new(2).unwrap()),
    };
    j.artifacts.push(GeneratedArtifact::new(
        artifact_id(1),
        j.id,
        Some(targets[0]),
        ArtifactKind::ALL[0],
        name("docker-compose.yml"),
        "services: {}\n".into(),
    ));
    let created = s.create_job(&j).await.unwrap();
    assert!(created.created);
    assert_eq!(created.value, j);
    assert_eq!(s.get_job(j.id).await.unwrap(), j);
    assert_eq!(s.get_task(j.tasks[1].id).await.unwrap(), j.tasks[1]);

    // Same key, different id: the first job comes back.
    let mut again = j.clone();
    again.id = job_id(2);
    let second = s.create_job(&again).await.unwrap();
    assert!(!second.created);
    assert_eq!(second.value, j);

    let events = s.job_events(j.id, 0, 100).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].event.as_str(), events[0].to_status.as_str()),
        ("create", "pending")
    );
}

async fn job_transitions_are_compare_and_swap_and_logged(t: TestStore) {
    let s = &*t.store;
    let j = one_job(s).await;
    let started = s
        .apply_job_event(j.id, 0, JobEvent::Start, ts(10), "engine")
        .await
        .unwrap();
    assert_eq!(
        (started.status, started.version, started.started_at),
        (JobStatus::Preparing, 1, Some(ts(10)))
    );
    assert_eq!(s.get_job(j.id).await.unwrap(), started);

    let stale = s
        .apply_job_event(j.id, 0, JobEvent::ArtifactsReady, ts(11), "engine")
        .await
        .unwrap_err();
    assert_eq!(
        stale.to_string(),
        format!(
            "job `{}` was modified concurrently: expected version 0, found version 1",
            j.id
        )
    );
    let invalid = s
        .apply_job_event(j.id, 1, JobEvent::VerificationPassed, ts(11), "engine")
        .await
        .unwrap_err();
    assert!(
        matches!(invalid, StoreError::InvalidTransition(_)),
        "{invalid}"
    );
    assert_eq!(
        s.get_job(j.id).await.unwrap(),
        started,
        "refused writes change nothing"
    );

    let failed = s
        .apply_job_event(j.id, 1, JobEvent::Fail, ts(12), "prepare: registry down")
        .await
        .unwrap();
    assert_eq!(
        failed.failure_reason.as_deref(),
        Some("prepare: registry down")
    );
    assert_eq!(
        (failed.completed_at, failed.winding_down),
        (None, true),
        "settled only once wound down"
    );

    let events = s.job_events(j.id, 0, 100).await.unwrap();
    let seen: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.event.as_str(),
                e.from_status.as_str(),
                e.to_status.as_str(),
                e.cause.as_str(),
                e.at,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "create",
                "",
                "pending",
                "created with idempotency key `job-1`",
                ts(0)
            ),
            ("start", "pending", "preparing", "engine", ts(10)),
            (
                "fail",
                "preparing",
                "failed",
                "prepare: registry down",
                ts(12)
            ),
        ]
    );
    let later = s.job_events(j.id, events[1].seq, 100).await.unwrap();
    assert_eq!(later, events[2..]);
}

async fn task_transitions_and_saves_are_compare_and_swap(t: TestStore) {
    let s = &*t.store;
    let j = one_job(s).await;
    let id = j.tasks[0].id;
    let mut task = s
        .apply_task_event(id, 0, TaskEvent::Enqueue, ts(1), "wave 0")
        .await
        .unwrap();
    task = s
        .apply_task_event(id, task.version, TaskEvent::Dispatch, ts(2), "engine")
        .await
        .unwrap();
    task = s
        .apply_task_event(
            id,
            task.version,
            TaskEvent::Fail { retryable: true },
            ts(3),
            "connection refused",
        )
        .await
        .unwrap();
    assert_eq!(
        (
            task.status,
            task.attempt_number,
            task.error.as_deref(),
            task.version,
            task.started_at
        ),
        (
            TaskStatus::Failed,
            1,
            Some("connection refused"),
            3,
            Some(ts(2))
        )
    );
    assert_eq!(s.get_task(id).await.unwrap(), task);
    let stale = s
        .apply_task_event(id, 2, TaskEvent::Retry, ts(4), "engine")
        .await
        .unwrap_err();
    assert!(
        matches!(
            stale,
            StoreError::Conflict {
                entity: "task",
                expected: 2,
                found: Some(3),
                ..
            }
        ),
        "{stale}"
    );

    let mut edited = task.clone();
    edited.logs = "pulled\n".into();
    edited.agent_id = Some(agent_id(1));
    let saved = s.save_task(&edited, ts(5)).await.unwrap();
    assert_eq!(
        (saved.version, saved.logs.as_str(), saved.status),
        (4, "pulled\n", TaskStatus::Failed)
    );
    let lost = s.save_task(&edited, ts(6)).await.unwrap_err();
    assert_eq!(
        lost.to_string(),
        format!("task `{id}` was modified concurrently: expected version 3, found version 4")
    );
    // A transition after a save sees the saved row (the SQLite committer remembers
    // the version-3 task it wrote; it must not apply the event to that one), and one
    // still expecting version 3 is refused.
    let stale = s
        .apply_task_event(id, 3, TaskEvent::Retry, ts(7), "engine")
        .await
        .unwrap_err();
    assert!(
        matches!(
            stale,
            StoreError::Conflict {
                expected: 3,
                found: Some(4),
                ..
            }
        ),
        "{stale}"
    );
    let retried = s
        .apply_task_event(id, 4, TaskEvent::Retry, ts(8), "engine")
        .await
        .unwrap();
    assert_eq!(
        (
            retried.version,
            retried.status,
            retried.logs.as_str(),
            retried.agent_id
        ),
        (5, TaskStatus::Retrying, "pulled\n", Some(agent_id(1)))
    );
    assert_eq!(s.get_task(id).await.unwrap(), retried);
    let task_events = s
        .job_events(j.id, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.task_id == Some(id))
        .count();
    assert_eq!(
        task_events, 4,
        "one event per transition; saves are not transitions"
    );
}

async fn one_active_job_per_environment(t: TestStore) {
    let s = &*t.store;
    let (env, targets) = seed_env(s, 1, 1).await;
    let rel = seed_release(s, 1).await;
    let first = s
        .create_job(&new_job(s, 1, env, rel, &targets, 1).await)
        .await
        .unwrap()
        .value;
    let second = new_job(s, 2, env, rel, &targets, 1).await;
    let err = s.create_job(&second).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "environment `{env}` is locked by running job `{}`",
            first.id
        )
    );
    // Another environment is not locked.
    let (other, other_targets) = seed_env(s, 2, 1).await;
    s.create_job(&new_job(s, 3, other, rel, &other_targets, 1).await)
        .await
        .unwrap();
    // Once the first job settles, the environment takes a new one.
    complete(s, &first, 10).await;
    assert!(s.create_job(&second).await.unwrap().created);
    // A failed job still winding down keeps the lock, and its target and environment.
    let second = s.get_job(second.id).await.unwrap();
    let started = s
        .apply_job_event(second.id, second.version, JobEvent::Start, ts(20), "test")
        .await
        .unwrap();
    let failed = s
        .apply_job_event(second.id, started.version, JobEvent::Fail, ts(21), "boom")
        .await
        .unwrap();
    assert!(failed.winding_down);
    let third = new_job(s, 4, env, rel, &targets, 2).await;
    let err = s.create_job(&third).await.unwrap_err();
    assert!(
        matches!(err, StoreError::EnvironmentLocked { job, .. } if job == second.id),
        "{err:?}"
    );
    assert_eq!(s.last_in_line(env).await.unwrap(), Some(second.id));
    assert!(matches!(
        s.delete_target(targets[0], ts(22)).await,
        Err(StoreError::InUse { job, .. }) if job == second.id
    ));
    assert!(matches!(
        s.delete_environment(env, ts(22)).await,
        Err(StoreError::InUse { job, .. }) if job == second.id
    ));
    // Wound down: settled, the environment is free again.
    s.apply_job_event(
        second.id,
        failed.version,
        JobEvent::WoundDown,
        ts(23),
        "done",
    )
    .await
    .unwrap();
    assert!(s.create_job(&third).await.unwrap().created);
}

async fn previous_successful_job_skips_the_given_release(t: TestStore) {
    let s = &*t.store;
    let (env, targets) = seed_env(s, 1, 1).await;
    let (other_env, other_targets) = seed_env(s, 2, 1).await;
    let (r1, r2) = (seed_release(s, 1).await, seed_release(s, 2).await);
    assert_eq!(s.previous_successful_job(env, r1).await.unwrap(), None);
    let j1 = new_job(s, 1, env, r1, &targets, 1).await;
    s.create_job(&j1).await.unwrap();
    let j1 = complete(s, &j1, 10).await;
    let j2 = new_job(s, 2, env, r2, &targets, 2).await;
    s.create_job(&j2).await.unwrap();
    let j2 = complete(s, &j2, 20).await;
    // A newer failed job and a newer job elsewhere do not count.
    let j3 = new_job(s, 3, env, r1, &targets, 3).await;
    create_and_fail(s, &j3, 30).await;
    let j4 = new_job(s, 4, other_env, r2, &other_targets, 4).await;
    s.create_job(&j4).await.unwrap();
    complete(s, &j4, 40).await;

    assert_eq!(
        s.previous_successful_job(env, r1).await.unwrap(),
        Some(j2.clone())
    );
    assert_eq!(s.previous_successful_job(env, r2).await.unwrap(), Some(j1));
    let r3 = seed_release(s, 3).await;
    assert_eq!(s.previous_successful_job(env, r3).await.unwrap(), Some(j2));
}

async fn last_known_good_is_what_the_newest_completed_job_deployed(t: TestStore) {
    let s = &*t.store;
    let (env, targets) = seed_env(s, 1, 3).await;
    let rel = seed_release(s, 1).await;
    let j1 = new_job(s, 1, env, rel, &targets[..2], 11).await;
    s.create_job(&j1).await.unwrap();
    complete(s, &j1, 10).await;
    let j2 = new_job(s, 2, env, rel, &targets[..1], 22).await;
    s.create_job(&j2).await.unwrap();
    complete(s, &j2, 20).await;
    // A failed job on target 2 deployed nothing that counts.
    let j3 = new_job(s, 3, env, rel, &targets[1..2], 33).await;
    create_and_fail(s, &j3, 30).await;

    let lkg = s.last_known_good(env).await.unwrap();
    let seen: Vec<_> = lkg
        .iter()
        .map(|l| (l.target_id, l.digest.clone(), l.job_id, l.completed_at))
        .collect();
    let mut expected = vec![
        (targets[0], digest(22), j2.id, ts(20)),
        (targets[1], digest(11), j1.id, ts(10)),
    ];
    expected.sort_by_key(|e| e.0);
    assert_eq!(seen, expected);
    assert_eq!(lkg[0].component_id, Some(component_id(1)));
}

async fn logs_are_ordered_and_bounded(t: TestStore) {
    let s = &*t.store;
    let j = one_job(s).await;
    let task = j.tasks[0].id;
    let total = MAX_LOG_CHUNKS_PER_TASK + 5;
    for i in 1..=total {
        assert_eq!(
            s.append_log(task, ts(i), &format!("line {i}\n"))
                .await
                .unwrap(),
            i
        );
    }
    let all = s.read_log(task, 0, 5_000).await.unwrap();
    assert_eq!(
        all.len() as u64,
        MAX_LOG_CHUNKS_PER_TASK,
        "only the newest chunks are kept"
    );
    assert_eq!(all[0].seq, 6);
    assert_eq!(all.last().unwrap().content, format!("line {total}\n"));
    let tail = s.read_log(task, total - 2, 10).await.unwrap();
    assert_eq!(
        tail.iter().map(|c| c.seq).collect::<Vec<_>>(),
        [total - 1, total]
    );
    let big = "x".repeat(crate::MAX_LOG_CHUNK_BYTES + 1);
    assert!(matches!(
        s.append_log(task, ts(1), &big).await.unwrap_err(),
        StoreError::LogChunkTooLarge { .. }
    ));
    assert!(matches!(
        s.append_log(task_id(999), ts(1), "x").await.unwrap_err(),
        StoreError::NotFound { entity: "task", .. }
    ));
}

async fn leases_claim_renew_expire_and_release(t: TestStore) {
    let s = &*t.store;
    let lease = Duration::from_secs(10);
    let j = one_job(s).await;
    assert_eq!(s.claim_jobs("a", ts(0), lease, 10).await.unwrap(), [j.id]);
    assert!(
        s.claim_jobs("b", ts(5_000), lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "the lease holds"
    );
    let err = s
        .renew_lease(j.id, "b", ts(5_000), lease)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("job `{}` is not leased by `b`; `a` holds it", j.id)
    );
    assert_eq!(
        s.renew_lease(j.id, "a", ts(5_000), lease).await.unwrap(),
        ts(15_000)
    );
    assert!(
        s.claim_jobs("b", ts(14_000), lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "renewed"
    );
    // a dies: once its lease ends, b takes the job.
    assert_eq!(
        s.claim_jobs("b", ts(15_001), lease, 10).await.unwrap(),
        [j.id]
    );
    assert!(matches!(
        s.renew_lease(j.id, "a", ts(15_002), lease).await.unwrap_err(),
        StoreError::LeaseLost { holder: Some(h), .. } if h == "b"
    ));
    s.release_lease(j.id, "b").await.unwrap();
    assert_eq!(
        s.claim_jobs("c", ts(15_003), lease, 10).await.unwrap(),
        [j.id],
        "released jobs are claimable at once"
    );
    // A restart under the same owner gives back that owner's unexpired leases, and only those.
    assert!(s.release_leases_of("a").await.unwrap().is_empty());
    assert!(
        s.claim_jobs("a", ts(15_004), lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "c still holds it"
    );
    assert_eq!(s.release_leases_of("c").await.unwrap(), [j.id]);
    assert!(s.release_leases_of("c").await.unwrap().is_empty());
    assert_eq!(
        s.claim_jobs("c", ts(15_005), lease, 10).await.unwrap(),
        [j.id],
        "claimable at once, long before the lease would end"
    );
    // Settled jobs are never claimed.
    s.release_lease(j.id, "c").await.unwrap();
    complete(s, &j, 20).await;
    assert!(
        s.claim_jobs("d", ts(100_000), lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A runner killed between a job's `fail` and the start of its automatic rollback left
/// the job failed with its lease held: it must be claimed again (after the lease, or at
/// once after a restart under the same owner), not left failed without its rollback.
async fn a_failed_job_whose_runner_died_is_claimed_again(t: TestStore) {
    let s = &*t.store;
    let lease = Duration::from_secs(10);
    let j = one_job(s).await;
    assert_eq!(s.claim_jobs("a", ts(0), lease, 10).await.unwrap(), [j.id]);
    let started = s
        .apply_job_event(j.id, j.version, JobEvent::Start, ts(1), "test")
        .await
        .unwrap();
    s.apply_job_event(j.id, started.version, JobEvent::Fail, ts(2), "test")
        .await
        .unwrap();
    // a dies: another replica takes the failed job once the lease ends, not before.
    assert!(
        s.claim_jobs("b", ts(5_000), lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.claim_jobs("b", ts(10_001), lease, 10).await.unwrap(),
        [j.id]
    );
    // b dies too and restarts under its owner: the job is claimable at once.
    assert_eq!(s.release_leases_of("b").await.unwrap(), [j.id]);
    assert_eq!(
        s.claim_jobs("b", ts(10_002), lease, 10).await.unwrap(),
        [j.id]
    );
    // b's runner stops before it is done (shutdown, a store error) and releases the
    // job: still winding down, anyone claims it at once.
    s.release_lease(j.id, "b").await.unwrap();
    assert_eq!(
        s.claim_jobs("c", ts(10_003), lease, 10).await.unwrap(),
        [j.id]
    );
    // Releasing is for the holder only.
    assert!(matches!(
        s.release_lease(j.id, "b").await,
        Err(StoreError::LeaseLost { .. })
    ));
    // c's runner ends the wind-down: the failure is settled and never claimed again.
    let failed = s.get_job(j.id).await.unwrap();
    assert!(failed.winding_down);
    let settled = s
        .apply_job_event(
            j.id,
            failed.version,
            JobEvent::WoundDown,
            ts(10_004),
            "done",
        )
        .await
        .unwrap();
    assert!(settled.is_settled());
    assert_eq!(
        settled.failure_reason.as_deref(),
        Some("test"),
        "the reason stays the failure's"
    );
    s.release_lease(j.id, "c").await.unwrap();
    assert!(s.release_leases_of("c").await.unwrap().is_empty());
    assert!(
        s.claim_jobs("d", ts(100_000), lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Rollback job `n` of `original` (its key as the engine forms it), restoring digest 1.
async fn rollback_of(
    s: &dyn Store,
    n: u64,
    original: &DeploymentJob,
    targets: &[TargetId],
) -> DeploymentJob {
    let mut r = new_job(
        s,
        n,
        original.environment_id,
        original.release_id,
        targets,
        1,
    )
    .await;
    r.rollback_of = Some(original.id);
    r.idempotency_key = IdempotencyKey::parse(&format!("rollback:{}:1", original.id)).unwrap();
    r
}

async fn a_rollback_starts_in_one_transaction_or_not_at_all(t: TestStore) {
    let s = &*t.store;
    let (env, targets) = seed_env(s, 1, 1).await;
    let rel = seed_release(s, 1).await;
    let failed = new_job(s, 1, env, rel, &targets, 2).await;
    create_and_fail(s, &failed, 10).await;
    // Wound down and settled (a winding-down job holds the environment): the manual path.
    let failed = s.get_job(failed.id).await.unwrap();
    let failed = s
        .apply_job_event(
            failed.id,
            failed.version,
            JobEvent::WoundDown,
            ts(11),
            "test",
        )
        .await
        .unwrap();
    let rollback = rollback_of(s, 2, &failed, &targets).await;
    let events_of = |id| async move { s.job_events(id, 0, 100).await.unwrap() };

    // A stale version: nothing is written, the rollback job included.
    let err = s
        .start_rollback(failed.id, failed.version - 1, &rollback, ts(20), "stale")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    assert!(matches!(
        s.get_job(rollback.id).await,
        Err(StoreError::NotFound { .. })
    ));

    // Another job took the environment after the failure: refused as locked, and
    // the original is still failed, at its version, without a rollback_started.
    let other = new_job(s, 3, env, rel, &targets, 3).await;
    let other = s.create_job(&other).await.unwrap().value;
    let err = s
        .start_rollback(failed.id, failed.version, &rollback, ts(21), "blocked")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "environment `{env}` is locked by running job `{}`",
            other.id
        )
    );
    let unchanged = s.get_job(failed.id).await.unwrap();
    assert_eq!(
        (unchanged.status, unchanged.version),
        (JobStatus::Failed, failed.version)
    );
    assert!(
        !events_of(failed.id)
            .await
            .iter()
            .any(|e| e.event == "rollback_started")
    );
    assert!(matches!(
        s.get_job(rollback.id).await,
        Err(StoreError::NotFound { .. })
    ));

    // Once that job settles: both writes, in one go.
    complete(s, &other, 30).await;
    let cause = format!("rollback job `{}` restores 1 slot(s)", rollback.id);
    let (original, created) = s
        .start_rollback(failed.id, failed.version, &rollback, ts(40), &cause)
        .await
        .unwrap();
    assert_eq!(created.id, rollback.id);
    assert_eq!(created.status, JobStatus::Pending);
    assert_eq!(
        (original.status, original.version),
        (JobStatus::RollingBack, failed.version + 1)
    );
    assert_eq!(s.get_job(failed.id).await.unwrap(), original);
    let started = events_of(failed.id).await;
    let last = started.last().unwrap();
    assert_eq!(
        (last.event.as_str(), last.cause.as_str()),
        ("rollback_started", cause.as_str())
    );
    assert_eq!(events_of(rollback.id).await[0].event, "create");
    // The rollback job now holds the environment.
    let err = s
        .create_job(&new_job(s, 4, env, rel, &targets, 4).await)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::EnvironmentLocked { job, .. } if job == rollback.id),
        "{err:?}"
    );

    // The same attempt started again (a second replica, a retry): the original's
    // version moved, so nothing is written twice.
    let err = s
        .start_rollback(failed.id, failed.version, &rollback, ts(41), &cause)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    // The original waits: nobody claims it; its rollback job is claimed like any job.
    assert_eq!(
        s.claim_jobs("a", ts(42), Duration::from_secs(10), 10)
            .await
            .unwrap(),
        [rollback.id]
    );
}

/// The rollback job's end settles the original in the same transaction; an event
/// that does not settle it, or a job that rolls nothing back, writes nothing.
async fn a_rollback_jobs_end_settles_the_original_with_it(t: TestStore) {
    let s = &*t.store;
    let (env, targets) = seed_env(s, 1, 1).await;
    let rel = seed_release(s, 1).await;
    let failed = new_job(s, 1, env, rel, &targets, 2).await;
    create_and_fail(s, &failed, 10).await;
    let failed = s.get_job(failed.id).await.unwrap();
    let rollback = rollback_of(s, 2, &failed, &targets).await;
    let (_, created) = s
        .start_rollback(failed.id, failed.version, &rollback, ts(20), "start")
        .await
        .unwrap();
    // Refused mid-way: `start` does not settle it; nothing is written.
    let err = s
        .settle_rollback_job(rollback.id, 0, JobEvent::Start, ts(21), "x", "y")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidTransition(_)), "{err:?}");
    assert_eq!(s.get_job(rollback.id).await.unwrap(), created);
    // The rollback job runs and completes: the original is rolled back with it.
    let mut r = created;
    for e in [
        JobEvent::Start,
        JobEvent::ArtifactsReady,
        JobEvent::WavesSucceeded,
    ] {
        r = s
            .apply_job_event(r.id, r.version, e, ts(22), "test")
            .await
            .unwrap();
    }
    let (done, original) = s
        .settle_rollback_job(
            r.id,
            r.version,
            JobEvent::VerificationPassed,
            ts(23),
            "healthy",
            "rollback job completed",
        )
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    let original = original.expect("the original was rolling back");
    assert_eq!(original.status, JobStatus::RolledBack);
    assert_eq!(s.get_job(failed.id).await.unwrap(), original);
    let last = s
        .job_events(failed.id, 0, 100)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        (last.event.as_str(), last.cause.as_str()),
        ("rollback_succeeded", "rollback job completed")
    );

    // A failed rollback job, once wound down, leaves the original failed and settled.
    let (env2, targets2) = seed_env(s, 2, 1).await;
    let mut failed2 = new_job(s, 3, env2, rel, &targets2, 3).await;
    failed2.environment_id = env2;
    create_and_fail(s, &failed2, 30).await;
    let failed2 = s.get_job(failed2.id).await.unwrap();
    let rollback2 = rollback_of(s, 4, &failed2, &targets2).await;
    let (_, created) = s
        .start_rollback(failed2.id, failed2.version, &rollback2, ts(31), "start")
        .await
        .unwrap();
    let mut r = created;
    for e in [JobEvent::Start, JobEvent::Fail] {
        r = s
            .apply_job_event(r.id, r.version, e, ts(32), "boom")
            .await
            .unwrap();
    }
    // Failed but still winding down: the original keeps waiting.
    assert_eq!(
        s.get_job(failed2.id).await.unwrap().status,
        JobStatus::RollingBack
    );
    let (done, original) = s
        .settle_rollback_job(
            r.id,
            r.version,
            JobEvent::WoundDown,
            ts(33),
            "wound down",
            "rollback job failed: boom",
        )
        .await
        .unwrap();
    assert!(done.is_settled());
    let original = original.unwrap();
    assert_eq!(
        (original.status, original.winding_down),
        (JobStatus::Failed, false)
    );
    assert_eq!(
        original.failure_reason.as_deref(),
        Some("rollback job failed: boom")
    );

    // A rollback of a completed job leaves that job completed.
    let (env3, targets3) = seed_env(s, 3, 1).await;
    let mut good = new_job(s, 5, env3, rel, &targets3, 5).await;
    good.environment_id = env3;
    s.create_job(&good).await.unwrap();
    let good = complete(s, &good, 40).await;
    let mut undo = rollback_of(s, 6, &good, &targets3).await;
    undo.environment_id = env3;
    let mut r = s.create_job(&undo).await.unwrap().value;
    for e in [
        JobEvent::Start,
        JobEvent::ArtifactsReady,
        JobEvent::WavesSucceeded,
    ] {
        r = s
            .apply_job_event(r.id, r.version, e, ts(41), "test")
            .await
            .unwrap();
    }
    let (done, original) = s
        .settle_rollback_job(
            r.id,
            r.version,
            JobEvent::VerificationPassed,
            ts(42),
            "healthy",
            "unused",
        )
        .await
        .unwrap();
    assert_eq!((done.status, original), (JobStatus::Completed, None));
    assert_eq!(s.get_job(good.id).await.unwrap(), good);
}
