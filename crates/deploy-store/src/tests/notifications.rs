//! Webhook notifications on both backends: deliveries written with the job transitions and promotion requests that raise them (once, only for the events asked), claimed in order per job by one claimer, attempts recorded by the lease holder only, subscriptions removed with their pending deliveries given up.

use std::time::Duration;

use deploy_core::testing::*;
use deploy_core::*;

use super::harness::{
    TestStore, both_backends, complete, create_and_fail, new_job, seed_env, seed_release,
};
use crate::{
    AttemptOutcome, DeliveryFilter, NotificationAttempt, NotificationDelivery, NotificationStatus,
    NotificationSubscription, Store,
};

both_backends!(
    deliveries_are_written_with_the_changes_that_raise_them,
    deliveries_of_a_job_are_claimed_in_order_by_one_claimer,
    racing_claimers_never_get_the_same_delivery,
    a_subscription_holds_at_most_its_share_of_the_claims,
    an_attempt_without_a_body_leaves_it_to_the_next,
    keys_are_replaced_leases_released_and_old_deliveries_pruned,
    a_deleted_environment_ends_its_subscriptions,
    concurrent_subscriptions_never_pass_the_bound,
    a_removal_racing_a_request_leaves_nothing_pending,
);

const LEASE: Duration = Duration::from_secs(10);

fn subscription(
    n: u64,
    env: EnvironmentId,
    events: &[NotificationEvent],
) -> NotificationSubscription {
    NotificationSubscription {
        id: SubscriptionId::from_parts(ts(n), [n as u8; 10]),
        environment_id: env,
        url: format!("https://hooks.example.com/{n}"),
        events: events.to_vec(),
        key_id: "k1".to_owned(),
        sealed_key: format!("sealed-{n}"),
        created_at: ts(n),
        created_by: "admin".to_owned(),
        deleted_at: None,
    }
}

async fn events_of(s: &dyn Store, sub: &NotificationSubscription) -> Vec<&'static str> {
    let filter = DeliveryFilter {
        subscription: Some(sub.id),
        ..DeliveryFilter::default()
    };
    let mut listed = s.list_notification_deliveries(&filter, 100).await.unwrap();
    listed.reverse();
    listed.iter().map(|d| d.event.as_str()).collect()
}

async fn deliveries_are_written_with_the_changes_that_raise_them(t: TestStore) {
    use NotificationEvent::*;
    let s = &*t.store;
    let (env, targets) = seed_env(s, 1, 1).await;
    let (other_env, _) = seed_env(s, 2, 0).await;
    let rel = seed_release(s, 1).await;
    let all = subscription(1, env, &NotificationEvent::ALL);
    let failures = subscription(2, env, &[JobFailed]);
    let elsewhere = subscription(3, other_env, &NotificationEvent::ALL);
    for sub in [&all, &failures, &elsewhere] {
        s.put_notification_subscription(sub, 20).await.unwrap();
    }
    assert_eq!(
        s.get_notification_subscription(all.id).await.unwrap(),
        Some(all.clone())
    );
    assert_eq!(
        s.list_notification_subscriptions(Some(env)).await.unwrap(),
        [all.clone(), failures.clone()]
    );

    // A promotion that waits for another's approval, then one its requester approves
    // (no `approval.requested`), whose job completes.
    let mut waiting = promotion(50);
    waiting.environment_id = env;
    waiting.release_id = rel;
    s.put_promotion_awaiting_approval(&waiting).await.unwrap();
    assert!(matches!(
        s.put_promotion_awaiting_approval(&waiting).await,
        Err(crate::StoreError::AlreadyExists {
            entity: "promotion",
            ..
        })
    ));
    let job = new_job(s, 1, env, rel, &targets, 1).await;
    s.create_job(&job).await.unwrap();
    complete(s, &job, 5).await;
    assert_eq!(
        events_of(s, &all).await,
        ["approval.requested", "job.started", "job.completed"]
    );
    assert!(events_of(s, &failures).await.is_empty());
    assert!(events_of(s, &elsewhere).await.is_empty());

    // A job that fails: job.failed to both subscriptions of the environment, once.
    let failed = new_job(s, 2, env, rel, &targets, 2).await;
    create_and_fail(s, &failed, 10).await;
    assert_eq!(events_of(s, &failures).await, ["job.failed"]);
    let of_job = DeliveryFilter {
        job: Some(failed.id),
        ..DeliveryFilter::default()
    };
    let written = s.list_notification_deliveries(&of_job, 100).await.unwrap();
    assert_eq!(written.len(), 3, "{written:?}");
    let d = written
        .iter()
        .find(|d| d.subscription_id == failures.id)
        .unwrap();
    assert_eq!(
        d.id,
        delivery_id(failures.id.as_uuid(), &format!("job:{}:v2", failed.id))
    );
    assert_eq!(
        (d.status, d.attempts, d.next_attempt_at, d.detail.as_str()),
        (NotificationStatus::Pending, 0, ts(11), "test")
    );
    assert_eq!(
        s.get_notification_delivery(d.id).await.unwrap().as_ref(),
        Some(d)
    );

    // Removed: out of the listing, its pending deliveries given up; none written since.
    assert!(
        s.remove_notification_subscription(all.id, ts(20))
            .await
            .unwrap()
    );
    assert!(
        !s.remove_notification_subscription(all.id, ts(21))
            .await
            .unwrap()
    );
    assert_eq!(
        s.list_notification_subscriptions(Some(env)).await.unwrap(),
        std::slice::from_ref(&failures)
    );
    let removed = DeliveryFilter {
        subscription: Some(all.id),
        ..DeliveryFilter::default()
    };
    let given_up = s.list_notification_deliveries(&removed, 100).await.unwrap();
    assert!(
        given_up
            .iter()
            .all(|d| d.status == NotificationStatus::Failed
                && d.last_error.as_deref() == Some("the subscription was removed")),
        "{given_up:?}"
    );
    // A request for approval now reaches the live subscription only.
    let mut p = promotion(9);
    p.environment_id = env;
    p.release_id = rel;
    s.put_promotion_awaiting_approval(&p).await.unwrap();
    assert_eq!(
        events_of(s, &failures).await,
        ["job.failed"],
        "asked for job.failed only"
    );
    assert_eq!(
        s.list_notification_deliveries(&removed, 100)
            .await
            .unwrap()
            .len(),
        given_up.len()
    );
}

fn outcome(
    d: &NotificationDelivery,
    n: u32,
    at: u64,
    status: NotificationStatus,
) -> AttemptOutcome {
    AttemptOutcome {
        attempt: NotificationAttempt {
            delivery_id: d.id,
            n,
            at: ts(at),
            duration_ms: 3,
            http_status: Some(if status == NotificationStatus::Delivered {
                204
            } else {
                500
            }),
            error: (status != NotificationStatus::Delivered).then(|| "HTTP 500".to_owned()),
        },
        body: Some(format!("{{\"n\":{n}}}")),
        status,
        next_attempt_at: ts(at + 1_000),
    }
}

async fn deliveries_of_a_job_are_claimed_in_order_by_one_claimer(t: TestStore) {
    let s = &*t.store;
    let (env, targets) = seed_env(s, 1, 1).await;
    let rel = seed_release(s, 1).await;
    let sub = subscription(1, env, &NotificationEvent::ALL);
    s.put_notification_subscription(&sub, 20).await.unwrap();
    let mut waiting = promotion(50);
    waiting.environment_id = env;
    waiting.release_id = rel;
    s.put_promotion_awaiting_approval(&waiting).await.unwrap();
    let job = new_job(s, 1, env, rel, &targets, 1).await;
    s.create_job(&job).await.unwrap();
    complete(s, &job, 5).await;

    // The promotion's and the job's first delivery; the job's second waits behind its first.
    let claimed = s
        .claim_notification_deliveries("a", ts(100), LEASE, 10, 10)
        .await
        .unwrap();
    let events: Vec<_> = claimed.iter().map(|d| d.event.as_str()).collect();
    assert_eq!(events, ["approval.requested", "job.started"]);
    assert!(
        s.claim_notification_deliveries("b", ts(101), LEASE, 10, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let started = &claimed[1];

    // Only the holder records; a failed attempt leaves it pending, later, unleased.
    let retry = outcome(started, 1, 102, NotificationStatus::Pending);
    assert!(!s.record_notification_attempt("b", &retry).await.unwrap());
    assert!(s.record_notification_attempt("a", &retry).await.unwrap());
    assert!(!s.record_notification_attempt("a", &retry).await.unwrap());
    // Not due yet, and job.completed still waits behind it.
    assert!(
        s.claim_notification_deliveries("b", ts(103), LEASE, 10, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Due, and the promotion's lease has run out: another claimer takes both.
    let again = s
        .claim_notification_deliveries("b", ts(100 + 10_001), LEASE, 10, 10)
        .await
        .unwrap();
    let ids: Vec<_> = again.iter().map(|d| d.id).collect();
    assert_eq!(ids, [claimed[0].id, started.id]);
    assert_eq!(again[1].body.as_deref(), Some("{\"n\":1}"));
    assert_eq!(again[1].attempts, 1);
    let done = outcome(started, 2, 10_200, NotificationStatus::Delivered);
    assert!(s.record_notification_attempt("b", &done).await.unwrap());
    let delivered = s
        .get_notification_delivery(started.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (delivered.status, delivered.finished_at, delivered.attempts),
        (NotificationStatus::Delivered, Some(ts(10_200)), 2)
    );
    // The first body is kept: a retry sends the same bytes.
    assert_eq!(delivered.body.as_deref(), Some("{\"n\":1}"));
    let attempts = s.notification_attempts(started.id).await.unwrap();
    assert_eq!(
        attempts
            .iter()
            .map(|a| (a.n, a.http_status))
            .collect::<Vec<_>>(),
        [(1, Some(500)), (2, Some(204))]
    );
    // Now job.completed is next.
    let next = s
        .claim_notification_deliveries("b", ts(10_300), LEASE, 10, 10)
        .await
        .unwrap();
    assert_eq!(
        next.iter().map(|d| d.event.as_str()).collect::<Vec<_>>(),
        ["job.completed"]
    );
}

async fn racing_claimers_never_get_the_same_delivery(t: TestStore) {
    let s = &*t.store;
    let (env, _) = seed_env(s, 1, 0).await;
    let rel = seed_release(s, 1).await;
    let sub = subscription(1, env, &[NotificationEvent::ApprovalRequested]);
    s.put_notification_subscription(&sub, 20).await.unwrap();
    // Forty promotion requests: forty deliveries, each its own ordering key.
    for n in 1..=40 {
        let mut p = promotion(n);
        p.environment_id = env;
        p.release_id = rel;
        s.put_promotion_awaiting_approval(&p).await.unwrap();
    }
    let claim = |owner: &'static str| async move {
        let mut got = Vec::new();
        for _ in 0..10 {
            got.extend(
                s.claim_notification_deliveries(owner, ts(100), LEASE, 3, 100)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|d| d.id),
            );
        }
        got
    };
    let (a, b, c) = tokio::join!(claim("a"), claim("b"), claim("c"));
    // What a claimer skipped while another held its row is left for a last one.
    let rest: Vec<_> = s
        .claim_notification_deliveries("d", ts(100), LEASE, 100, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    let mut all: Vec<_> = [a, b, c, rest].concat();
    let claimed = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), claimed, "a delivery went to two claimers");
    assert_eq!(claimed, 40);
}

/// Writes `n` promotion requests to `env` from `first` on (each its own delivery per
/// subscription, in its own ordering key).
async fn requests(s: &dyn Store, env: EnvironmentId, rel: ReleaseId, first: u64, n: u64) {
    for k in first..first + n {
        let mut p = promotion(k);
        p.environment_id = env;
        p.release_id = rel;
        s.put_promotion_awaiting_approval(&p).await.unwrap();
    }
}

async fn a_subscription_holds_at_most_its_share_of_the_claims(t: TestStore) {
    let s = &*t.store;
    let (busy_env, _) = seed_env(s, 1, 0).await;
    let (quiet_env, _) = seed_env(s, 2, 0).await;
    let rel = seed_release(s, 1).await;
    let busy = subscription(1, busy_env, &[NotificationEvent::ApprovalRequested]);
    let quiet = subscription(2, quiet_env, &[NotificationEvent::ApprovalRequested]);
    s.put_notification_subscription(&busy, 20).await.unwrap();
    s.put_notification_subscription(&quiet, 20).await.unwrap();
    // Twenty deliveries of the busy one first, then one of the quiet one.
    requests(s, busy_env, rel, 1, 20).await;
    requests(s, quiet_env, rel, 100, 1).await;
    let of = |got: &[NotificationDelivery], sub: &NotificationSubscription| {
        got.iter().filter(|d| d.subscription_id == sub.id).count()
    };
    let first = s
        .claim_notification_deliveries("a", ts(100), LEASE, 16, 4)
        .await
        .unwrap();
    assert_eq!((of(&first, &busy), of(&first, &quiet)), (4, 1), "{first:?}");
    // Four in flight: none more of it, whoever claims.
    let second = s
        .claim_notification_deliveries("b", ts(101), LEASE, 16, 4)
        .await
        .unwrap();
    assert!(second.is_empty(), "{second:?}");
    // One answered: one more may go.
    let answered = outcome(&first[0], 1, 102, NotificationStatus::Delivered);
    assert!(s.record_notification_attempt("a", &answered).await.unwrap());
    let third = s
        .claim_notification_deliveries("b", ts(103), LEASE, 16, 4)
        .await
        .unwrap();
    assert_eq!(of(&third, &busy), 1, "{third:?}");
}

async fn an_attempt_without_a_body_leaves_it_to_the_next(t: TestStore) {
    let s = &*t.store;
    let (env, _) = seed_env(s, 1, 0).await;
    let rel = seed_release(s, 1).await;
    let sub = subscription(1, env, &[NotificationEvent::ApprovalRequested]);
    s.put_notification_subscription(&sub, 20).await.unwrap();
    requests(s, env, rel, 1, 1).await;
    let claimed = s
        .claim_notification_deliveries("a", ts(100), LEASE, 10, 10)
        .await
        .unwrap();
    // The first attempt failed before a body was built: none is kept.
    let mut failed = outcome(&claimed[0], 1, 101, NotificationStatus::Pending);
    failed.body = None;
    assert!(s.record_notification_attempt("a", &failed).await.unwrap());
    let d = s
        .get_notification_delivery(claimed[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((d.body, d.attempts), (None, 1));
    // The next one built it: kept, and kept over later ones.
    let again = s
        .claim_notification_deliveries("a", ts(1_200), LEASE, 10, 10)
        .await
        .unwrap();
    let mut built = outcome(&again[0], 2, 1_201, NotificationStatus::Pending);
    built.body = Some("{\"full\":true}".to_owned());
    assert!(s.record_notification_attempt("a", &built).await.unwrap());
    let d = s
        .get_notification_delivery(claimed[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.body.as_deref(), Some("{\"full\":true}"));
}

async fn keys_are_replaced_leases_released_and_old_deliveries_pruned(t: TestStore) {
    let s = &*t.store;
    let (env, _) = seed_env(s, 1, 0).await;
    let rel = seed_release(s, 1).await;
    let sub = subscription(1, env, &[NotificationEvent::ApprovalRequested]);
    s.put_notification_subscription(&sub, 20).await.unwrap();

    // A re-seal applies only over the value it read; a rotation over any.
    assert!(
        !s.replace_notification_key(sub.id, Some("stale".to_owned()), "k2", "resealed")
            .await
            .unwrap()
    );
    assert!(
        s.replace_notification_key(sub.id, Some("sealed-1".to_owned()), "k2", "resealed")
            .await
            .unwrap()
    );
    assert!(
        s.replace_notification_key(sub.id, None, "k2", "rotated")
            .await
            .unwrap()
    );
    let got = s
        .get_notification_subscription(sub.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.key_id.as_str(), got.sealed_key.as_str()),
        ("k2", "rotated")
    );

    // A restarted owner takes its deliveries back at once.
    requests(s, env, rel, 1, 3).await;
    assert_eq!(s.pending_notification_deliveries().await.unwrap(), 3);
    let claimed = s
        .claim_notification_deliveries("me", ts(100), LEASE, 10, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    assert_eq!(s.release_notification_leases("other").await.unwrap(), 0);
    assert_eq!(s.release_notification_leases("me").await.unwrap(), 3);
    let again = s
        .claim_notification_deliveries("me", ts(101), LEASE, 10, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 3);

    // Finished ones older than the cut are deleted with their attempts; pending stay.
    assert!(
        s.record_notification_attempt(
            "me",
            &outcome(&again[0], 1, 200, NotificationStatus::Delivered)
        )
        .await
        .unwrap()
    );
    assert!(
        s.record_notification_attempt(
            "me",
            &outcome(&again[1], 1, 400, NotificationStatus::Failed)
        )
        .await
        .unwrap()
    );
    assert_eq!(s.prune_notification_deliveries(ts(300)).await.unwrap(), 1);
    assert!(
        s.get_notification_delivery(again[0].id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.notification_attempts(again[0].id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.get_notification_delivery(again[1].id)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(s.pending_notification_deliveries().await.unwrap(), 1);
    assert!(
        !s.remove_notification_subscription(SubscriptionId::from_parts(ts(9), [9; 10]), ts(500))
            .await
            .unwrap()
    );
    // A removed subscription's key is not replaced.
    assert!(
        s.remove_notification_subscription(sub.id, ts(500))
            .await
            .unwrap()
    );
    assert!(
        !s.replace_notification_key(sub.id, None, "k3", "x")
            .await
            .unwrap()
    );
}

async fn a_deleted_environment_ends_its_subscriptions(t: TestStore) {
    let s = &*t.store;
    let (env, _) = seed_env(s, 1, 0).await;
    let rel = seed_release(s, 1).await;
    let sub = subscription(1, env, &[NotificationEvent::ApprovalRequested]);
    s.put_notification_subscription(&sub, 20).await.unwrap();
    requests(s, env, rel, 1, 1).await;
    s.delete_environment(env, ts(50)).await.unwrap();
    assert!(
        s.list_notification_subscriptions(Some(env))
            .await
            .unwrap()
            .is_empty()
    );
    let got = s
        .get_notification_subscription(sub.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.deleted_at, Some(ts(50)));
    let filter = DeliveryFilter {
        subscription: Some(sub.id),
        ..DeliveryFilter::default()
    };
    let given_up = s.list_notification_deliveries(&filter, 10).await.unwrap();
    assert_eq!(
        (given_up[0].status, given_up[0].last_error.as_deref()),
        (
            NotificationStatus::Failed,
            Some("the environment was deleted")
        )
    );
    assert_eq!(s.pending_notification_deliveries().await.unwrap(), 0);
}

async fn concurrent_subscriptions_never_pass_the_bound(t: TestStore) {
    let s = &*t.store;
    let (env, _) = seed_env(s, 1, 0).await;
    // Ten admins at once, at most three live: three get in, whatever the interleaving.
    let add = |n: u64| async move {
        s.put_notification_subscription(&subscription(n, env, &[NotificationEvent::JobFailed]), 3)
            .await
            .unwrap()
    };
    let (a, b, c, d, e, f, g, h, i, j) = tokio::join!(
        add(1),
        add(2),
        add(3),
        add(4),
        add(5),
        add(6),
        add(7),
        add(8),
        add(9),
        add(10)
    );
    let added = [a, b, c, d, e, f, g, h, i, j];
    assert_eq!(added.iter().filter(|a| **a).count(), 3, "{added:?}");
    assert_eq!(
        s.list_notification_subscriptions(Some(env))
            .await
            .unwrap()
            .len(),
        3
    );
    // A removal frees a place.
    let live = s.list_notification_subscriptions(Some(env)).await.unwrap();
    assert!(
        s.remove_notification_subscription(live[0].id, ts(50))
            .await
            .unwrap()
    );
    assert!(
        s.put_notification_subscription(&subscription(11, env, &[NotificationEvent::JobFailed]), 3)
            .await
            .unwrap()
    );
}

async fn a_removal_racing_a_request_leaves_nothing_pending(t: TestStore) {
    let s = &*t.store;
    let (env, _) = seed_env(s, 1, 0).await;
    let rel = seed_release(s, 1).await;
    // Each round: a promotion request (which writes deliveries) and the removal of the
    // subscription at once. Whichever wins, no delivery of a removed one stays pending.
    for n in 1..=30u64 {
        let sub = subscription(n, env, &[NotificationEvent::ApprovalRequested]);
        assert!(s.put_notification_subscription(&sub, 20).await.unwrap());
        let mut p = promotion(100 + n);
        p.environment_id = env;
        p.release_id = rel;
        let (requested, removed) = tokio::join!(
            s.put_promotion_awaiting_approval(&p),
            s.remove_notification_subscription(sub.id, ts(1_000 + n))
        );
        requested.unwrap();
        assert!(removed.unwrap());
        let filter = DeliveryFilter {
            subscription: Some(sub.id),
            ..DeliveryFilter::default()
        };
        let left = s.list_notification_deliveries(&filter, 10).await.unwrap();
        assert!(
            left.iter().all(|d| d.status != NotificationStatus::Pending),
            "round {n}: {left:?}"
        );
    }
}
