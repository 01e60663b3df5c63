//! Job trace contexts on both backends: written with a new job in its transaction, kept by an idempotent repeat, absent for an untraced job; written with a rollback job when its start is, not at all when it is refused.

use deploy_core::testing::*;

use deploy_core::{IdempotencyKey, JobEvent};

use super::harness::{TestStore, both_backends, create_and_fail, new_job, seed_env, seed_release};
use crate::Store;

both_backends!(a_job_keeps_the_trace_context_it_was_created_with);
both_backends!(a_rollback_job_keeps_the_trace_context_it_was_started_in);

const FIRST: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const SECOND: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn tp(text: &str) -> deploy_core::Traceparent {
    deploy_core::Traceparent::parse(text).unwrap()
}

async fn a_job_keeps_the_trace_context_it_was_created_with(t: TestStore) {
    let s: &dyn Store = t.store.as_ref();
    let rel = seed_release(s, 1).await;
    let (env1, targets1) = seed_env(s, 1, 1).await;
    let (env2, targets2) = seed_env(s, 2, 1).await;

    let traced = new_job(s, 1, env1, rel, &targets1, 1).await;
    let created = s.create_job_traced(&traced, Some(tp(FIRST))).await.unwrap();
    assert!(created.created);
    assert_eq!(
        s.job_trace_context(traced.id).await.unwrap(),
        Some(tp(FIRST))
    );
    // The same idempotency key again: the job as it was, its trace context too.
    let again = s
        .create_job_traced(&traced, Some(tp(SECOND)))
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(
        s.job_trace_context(traced.id).await.unwrap(),
        Some(tp(FIRST))
    );

    let untraced = new_job(s, 2, env2, rel, &targets2, 2).await;
    assert!(s.create_job(&untraced).await.unwrap().created);
    assert_eq!(s.job_trace_context(untraced.id).await.unwrap(), None);
    assert_eq!(s.job_trace_context(job_id(99)).await.unwrap(), None);
}

async fn a_rollback_job_keeps_the_trace_context_it_was_started_in(t: TestStore) {
    let s: &dyn Store = t.store.as_ref();
    let rel = seed_release(s, 1).await;
    let (env, targets) = seed_env(s, 1, 1).await;
    let failed = new_job(s, 1, env, rel, &targets, 2).await;
    create_and_fail(s, &failed, 10).await;
    let failed = s.get_job(failed.id).await.unwrap();
    let mut rollback = new_job(s, 2, env, rel, &targets, 1).await;
    rollback.rollback_of = Some(failed.id);
    rollback.idempotency_key = IdempotencyKey::parse(&format!("rollback:{}:1", failed.id)).unwrap();

    // Refused (a stale version): no trace context either.
    assert!(
        s.start_rollback_traced(
            failed.id,
            failed.version - 1,
            &rollback,
            ts(20),
            "stale",
            Some(tp(SECOND)),
        )
        .await
        .is_err()
    );
    assert_eq!(s.job_trace_context(rollback.id).await.unwrap(), None);

    let (original, created) = s
        .start_rollback_traced(
            failed.id,
            failed.version,
            &rollback,
            ts(21),
            "rollback",
            Some(tp(FIRST)),
        )
        .await
        .unwrap();
    assert_eq!(created.id, rollback.id);
    assert!(
        s.job_events(original.id, 0, 100)
            .await
            .unwrap()
            .iter()
            .any(|e| e.event == JobEvent::RollbackStarted.as_str())
    );
    assert_eq!(
        s.job_trace_context(rollback.id).await.unwrap(),
        Some(tp(FIRST))
    );
}
