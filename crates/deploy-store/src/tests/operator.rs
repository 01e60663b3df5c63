//! The operator workflow's persistence on both backends: lookups by name, environment updates with versions, promotion approvals with versions, the pipeline lookup, and the append-only audit log.

use deploy_core::testing::*;
use deploy_core::*;

use super::harness::{TestStore, both_backends, complete, new_job, seed_env, seed_release};
use crate::{AuditActorKind, AuditFilter, AuditRecord, StoreError};

both_backends!(
    environments_and_releases_are_found_by_name,
    environment_updates_compare_versions,
    promotion_saves_compare_versions_and_list_by_filter,
    a_release_completed_in_an_environment_is_found,
    the_audit_log_appends_filters_and_refuses_changes,
    queued_jobs_hold_no_lock_and_are_let_in_oldest_first,
    targets_and_environments_are_updated_and_retired,
);

async fn environments_and_releases_are_found_by_name(t: TestStore) {
    let s = &*t.store;
    let (env, _) = seed_env(s, 1, 0).await;
    let release = seed_release(s, 1).await;
    let found = s.find_environment_by_name("env-1").await.unwrap().unwrap();
    assert_eq!(found.id, env);
    assert!(s.find_environment_by_name("env-2").await.unwrap().is_none());
    assert_eq!(
        s.find_release_by_name("r1").await.unwrap().unwrap().id,
        release
    );
    assert!(s.find_release_by_name("r9").await.unwrap().is_none());
}

async fn environment_updates_compare_versions(t: TestStore) {
    let s = &*t.store;
    let (env, _) = seed_env(s, 1, 0).await;
    seed_env(s, 2, 0).await;
    let mut e = s.get_environment(env).await.unwrap();
    assert_eq!(e.version, 0);
    e.variables.insert("LOG_LEVEL".into(), "debug".into());
    e.approval = Some(ApprovalPolicy {
        required_approvals: 2,
        ..ApprovalPolicy::default()
    });
    e.requires = vec![environment_id(2)];
    // The runtime policy is stored with the rest and read back whole.
    e.runtime_policy = serde_json::from_str(
        r#"{"privileged": true, "capabilities": ["NET_ADMIN"], "bind_prefixes": ["/srv/app"]}"#,
    )
    .unwrap();
    let updated = s.update_environment(&e, 0).await.unwrap();
    assert_eq!(updated.version, 1);
    assert_eq!(s.get_environment(env).await.unwrap(), updated);

    // A writer that read version 0 loses: 409 with what it found.
    let stale = s.update_environment(&e, 0).await.unwrap_err();
    assert!(
        matches!(
            stale,
            StoreError::Conflict {
                expected: 0,
                found: Some(1),
                ..
            }
        ),
        "{stale}"
    );
    // A name another environment holds.
    let mut renamed = updated.clone();
    renamed.name = name("env-2");
    let taken = s.update_environment(&renamed, 1).await.unwrap_err();
    assert!(matches!(taken, StoreError::NameTaken { .. }), "{taken}");
    assert_eq!(s.get_environment(env).await.unwrap().name.as_str(), "env-1");
    // Renaming to a free name works and is found by it.
    renamed.name = name("staging");
    s.update_environment(&renamed, 1).await.unwrap();
    assert_eq!(
        s.find_environment_by_name("staging")
            .await
            .unwrap()
            .unwrap()
            .version,
        2
    );
}

async fn promotion_saves_compare_versions_and_list_by_filter(t: TestStore) {
    let s = &*t.store;
    let (env, _) = seed_env(s, 1, 0).await;
    let (other, _) = seed_env(s, 2, 0).await;
    let release = seed_release(s, 1).await;
    let mut ids = Vec::new();
    for (n, e) in [(1, env), (2, env), (3, other)] {
        let mut p = promotion(n);
        p.environment_id = e;
        p.release_id = release;
        p.requested_by_token = Some(uuid::Uuid::from_u128(u128::from(n)));
        s.put_promotion(&p).await.unwrap();
        assert_eq!(s.get_promotion(p.id).await.unwrap(), p);
        ids.push(p.id);
    }
    let mut p = s.get_promotion(ids[0]).await.unwrap();
    let policy = ApprovalPolicy {
        required_approvals: 2,
        ..ApprovalPolicy::default()
    };
    let approver = |name, n| Approver {
        name,
        token_id: Some(uuid::Uuid::from_u128(n)),
        role: Some(ApproverRole::Deployer),
    };
    p.approve(approver("alice", 10), Some(&policy), ts(5))
        .unwrap();
    let saved = s.save_promotion(&p).await.unwrap();
    assert_eq!(saved.version, 1);
    assert_eq!(s.get_promotion(p.id).await.unwrap(), saved);
    // A concurrent approver that read version 0 does not overwrite alice's approval.
    let mut racer = p.clone();
    racer.approvals.clear();
    racer
        .approve(approver("bob", 11), Some(&policy), ts(6))
        .unwrap();
    let lost = s.save_promotion(&racer).await.unwrap_err();
    assert!(matches!(lost, StoreError::Conflict { .. }), "{lost}");

    let mut rejected = s.get_promotion(ids[1]).await.unwrap();
    rejected
        .reject("carol", Some("not this week".into()), ts(7))
        .unwrap();
    s.save_promotion(&rejected).await.unwrap();
    let stored = s.get_promotion(ids[1]).await.unwrap();
    assert_eq!(stored.rejection_reason.as_deref(), Some("not this week"));

    let all = s.list_promotions(None, None, None, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![ids[2], ids[1], ids[0]],
        "newest first"
    );
    let requested_here = s
        .list_promotions(Some(env), Some(PromotionStatus::Requested), None, 10)
        .await
        .unwrap();
    assert_eq!(
        requested_here.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![ids[0]]
    );
    let page = s
        .list_promotions(None, None, Some(ids[2]), 1)
        .await
        .unwrap();
    assert_eq!(page.iter().map(|p| p.id).collect::<Vec<_>>(), vec![ids[1]]);
}

async fn a_release_completed_in_an_environment_is_found(t: TestStore) {
    let s = &*t.store;
    let (staging, targets) = seed_env(s, 1, 1).await;
    let (prod, _) = seed_env(s, 2, 0).await;
    let release = seed_release(s, 1).await;
    assert!(!s.release_completed_in(release, staging).await.unwrap());
    let job = new_job(s, 1, staging, release, &targets, 1).await;
    let created = s.create_job(&job).await.unwrap().value;
    assert!(
        !s.release_completed_in(release, staging).await.unwrap(),
        "a pending job is not a completed one"
    );
    complete(s, &created, 50).await;
    assert!(s.release_completed_in(release, staging).await.unwrap());
    assert!(!s.release_completed_in(release, prod).await.unwrap());
}

fn audit_row(n: u64, actor: &str, entity: &str) -> AuditRecord {
    AuditRecord {
        seq: 0,
        at: ts(n),
        actor_kind: AuditActorKind::Token,
        actor_id: format!("id-{actor}"),
        actor_name: actor.to_owned(),
        method: "POST".into(),
        route: "/api/v1/environments".into(),
        path: "/api/v1/environments".into(),
        entity_id: Some(entity.to_owned()),
        status: 201,
        remote: Some("127.0.0.1:5000".into()),
        before: None,
        after: Some(r#"{"name":"staging"}"#.into()),
    }
}

async fn the_audit_log_appends_filters_and_refuses_changes(t: TestStore) {
    let s = &*t.store;
    let first = s.append_audit(&audit_row(1, "alice", "e1")).await.unwrap();
    let second = s.append_audit(&audit_row(2, "bob", "e1")).await.unwrap();
    let third = s.append_audit(&audit_row(3, "alice", "e2")).await.unwrap();
    assert!(first < second && second < third);
    let all = s.list_audit(&AuditFilter::default(), 10).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![third, second, first]
    );
    let mut expected = audit_row(3, "alice", "e2");
    expected.seq = third;
    assert_eq!(all[0], expected);
    let alice = AuditFilter {
        actor: Some("alice".into()),
        ..AuditFilter::default()
    };
    assert_eq!(s.list_audit(&alice, 10).await.unwrap().len(), 2);
    let e1_older = AuditFilter {
        entity: Some("e1".into()),
        before: Some(second),
        ..AuditFilter::default()
    };
    let rows = s.list_audit(&e1_older, 10).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![first]);

    // Append-only in the database itself, not only by the absence of a method.
    let (update, delete) = match &t.backing {
        super::harness::Backing::Sqlite(dir) => {
            let path = dir.path().join("deploy.db");
            let conn = |sql: &'static str| {
                let path = path.clone();
                async move {
                    use sqlx::ConnectOptions;
                    let mut c = sqlx::sqlite::SqliteConnectOptions::new()
                        .filename(&path)
                        .connect()
                        .await
                        .unwrap();
                    sqlx::query(sql).execute(&mut c).await.map(|_| ())
                }
            };
            (
                conn("UPDATE audit_log SET actor_name = 'mallory'").await,
                conn("DELETE FROM audit_log").await,
            )
        }
        super::harness::Backing::Postgres(pg) => {
            let pool = sqlx::PgPool::connect(&pg.url()).await.unwrap();
            let truncated = sqlx::query("TRUNCATE audit_log").execute(&pool).await;
            assert!(
                truncated.unwrap_err().to_string().contains("append-only"),
                "TRUNCATE is refused too"
            );
            (
                sqlx::query("UPDATE audit_log SET actor_name = 'mallory'")
                    .execute(&pool)
                    .await
                    .map(|_| ()),
                sqlx::query("DELETE FROM audit_log")
                    .execute(&pool)
                    .await
                    .map(|_| ()),
            )
        }
    };
    for refused in [update, delete] {
        let err = refused.unwrap_err().to_string();
        assert!(err.contains("append-only"), "{err}");
    }
    assert_eq!(
        s.list_audit(&AuditFilter::default(), 10)
            .await
            .unwrap()
            .len(),
        3
    );
}

async fn queued_jobs_hold_no_lock_and_are_let_in_oldest_first(t: TestStore) {
    let s = &*t.store;
    let (env, targets) = seed_env(s, 1, 1).await;
    let release = seed_release(s, 1).await;
    let holder = s
        .create_job(&new_job(s, 1, env, release, &targets, 1).await)
        .await
        .unwrap()
        .value;
    assert_eq!(s.last_in_line(env).await.unwrap(), Some(holder.id));
    // Without a place in line, a second job is refused, naming the holder.
    let refused = s
        .create_job(&new_job(s, 2, env, release, &targets, 2).await)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::EnvironmentLocked { job, .. } if job == holder.id),
        "{refused}"
    );
    let mut second = new_job(s, 3, env, release, &targets, 3).await;
    second.queued_behind = Some(holder.id);
    let second = s.create_job(&second).await.unwrap().value;
    assert_eq!(second.queued_behind, Some(holder.id));
    assert_eq!(s.last_in_line(env).await.unwrap(), Some(second.id));
    let mut third = new_job(s, 4, env, release, &targets, 4).await;
    third.queued_behind = Some(second.id);
    third.created_at = ts(10);
    let third = s.create_job(&third).await.unwrap().value;

    // Queued jobs are not claimed, and nobody is let in while the holder runs.
    let claimed = s
        .claim_jobs("r1", ts(20), std::time::Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert_eq!(claimed, vec![holder.id]);
    assert!(s.dequeue_jobs(ts(21)).await.unwrap().is_empty());

    // The holder completes: the oldest queued job takes the environment, alone.
    complete(s, &holder, 30).await;
    assert_eq!(s.dequeue_jobs(ts(31)).await.unwrap(), vec![second.id]);
    assert!(
        s.dequeue_jobs(ts(32)).await.unwrap().is_empty(),
        "one at a time"
    );
    let let_in = s.get_job(second.id).await.unwrap();
    assert_eq!(let_in.queued_behind, None);
    assert_eq!(let_in.status, JobStatus::Pending);
    let claimed = s
        .claim_jobs("r1", ts(33), std::time::Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert_eq!(claimed, vec![second.id]);
    assert_eq!(
        s.get_job(third.id).await.unwrap().queued_behind,
        Some(second.id)
    );
    assert_eq!(s.last_in_line(env).await.unwrap(), Some(third.id));
}

async fn targets_and_environments_are_updated_and_retired(t: TestStore) {
    let s = &*t.store;
    let (env, targets) = seed_env(s, 1, 2).await;
    let release = seed_release(s, 1).await;
    let listed = s.list_targets(env).await.unwrap();
    let mut first = listed[0].clone();
    assert_eq!(first.version, 0);
    first.disabled = true;
    let updated = s.update_target(&first, 0).await.unwrap();
    assert_eq!((updated.version, updated.disabled), (1, true));
    assert!(matches!(
        s.update_target(&first, 0).await.unwrap_err(),
        StoreError::Conflict {
            expected: 0,
            found: Some(1),
            ..
        }
    ));
    // A job holds the second target: it cannot go; the first (no task) can.
    let job = new_job(s, 1, env, release, &targets[1..], 1).await;
    let job = s.create_job(&job).await.unwrap().value;
    let busy = s.delete_target(targets[1], ts(5)).await.unwrap_err();
    assert!(
        matches!(busy, StoreError::InUse { job: j, .. } if j == job.id),
        "{busy}"
    );
    assert!(matches!(
        s.delete_environment(env, ts(5)).await.unwrap_err(),
        StoreError::InUse { .. }
    ));
    s.delete_target(targets[0], ts(6)).await.unwrap();
    assert_eq!(s.list_targets(env).await.unwrap().len(), 1);
    assert!(matches!(
        s.update_target(&updated, 1).await.unwrap_err(),
        StoreError::NotFound { .. } | StoreError::Conflict { .. }
    ));
    // The name is free again.
    let mut again = ssh_target(1);
    again.id = target_id(99);
    again.environment_id = env;
    again.name = listed[0].name.clone();
    s.put_target(&again).await.unwrap();
    // A job on a deleted target is not created.
    let stale = new_job(s, 2, env, release, &targets[..1], 2).await;
    complete(s, &job, 10).await;
    assert!(matches!(
        s.create_job(&stale).await.unwrap_err(),
        StoreError::NotFound {
            entity: "target",
            ..
        }
    ));
    // Once no job is active, the environment goes, with its targets; its name is free.
    s.delete_environment(env, ts(20)).await.unwrap();
    assert!(s.find_environment_by_name("env-1").await.unwrap().is_none());
    assert!(matches!(
        s.get_environment(env).await.unwrap_err(),
        StoreError::NotFound { .. }
    ));
    let mut e = s.list_environments(None, 10).await.unwrap();
    e.retain(|e| e.id == env);
    assert!(e.is_empty());
    assert_eq!(
        s.get_job(job.id).await.unwrap().environment_id,
        env,
        "history stays"
    );
    seed_env(s, 2, 0).await;
}
