//! `Engine::approve_and_create_job`: approvals counted under the environment's policy, the job created by the one that completes it, refusals that leave the promotion as it was.

use std::sync::Arc;

use deploy_core::testing::{approved_promotion, digest, environment, promotion};
use deploy_core::*;
use deploy_store::StoreError;

use super::fake::{FakeWorld, Fixture, release_with};
use crate::{Approval, EngineError, JobRequest};

/// An engine whose environment needs two approvals by deployers other than the requester.
async fn two_approvals() -> Fixture {
    let mut env = environment("prod");
    env.approval = Some(ApprovalPolicy {
        required_approvals: 2,
        approver_role: ApproverRole::Deployer,
        approvers: Vec::new(),
        allow_self_approval: false,
    });
    let dir = deploy_testkit::temp_dir("engine-").unwrap();
    Fixture::open_with(1, dir, Arc::new(FakeWorld::default()), true, env, |_| {}).await
}

fn deployer(name: &str) -> Approver<'_> {
    Approver {
        name,
        token_id: None,
        role: Some(ApproverRole::Deployer),
    }
}

fn request(p: &Promotion) -> JobRequest {
    JobRequest::new(
        p.id,
        IdempotencyKey::parse(&format!("promotion-{}", p.id)).unwrap(),
    )
}

#[tokio::test]
async fn the_approval_that_completes_the_policy_creates_the_job_once() {
    let f = two_approvals().await;
    let release = release_with(1, digest(1));
    f.store.put_release(&release).await.unwrap();
    let p = promotion(1);
    f.store.put_promotion(&p).await.unwrap();
    let now = testing::ts(5);
    let request = request(&p);

    let first = f
        .engine
        .approve_and_create_job(&request, deployer("alice"), now)
        .await
        .unwrap();
    let Approval::Pending { promotion, missing } = first else {
        panic!("{first:?}");
    };
    assert_eq!((promotion.status, missing), (PromotionStatus::Requested, 1));

    // The same approver again, and the requester: refused, nothing recorded.
    for name in ["alice", "tester"] {
        let refused = f
            .engine
            .approve_and_create_job(&request, deployer(name), now)
            .await
            .unwrap_err();
        assert!(
            matches!(refused, EngineError::ApprovalRefused(_)),
            "{name}: {refused:?}"
        );
    }
    assert_eq!(
        f.store.get_promotion(p.id).await.unwrap().approvals.len(),
        1
    );

    let second = f
        .engine
        .approve_and_create_job(&request, deployer("bob"), now)
        .await
        .unwrap();
    let Approval::Job { promotion, job } = second else {
        panic!("{second:?}");
    };
    assert_eq!(promotion.status, PromotionStatus::Approved);
    assert!(job.created);
    assert_eq!(job.value.promotion_id, p.id);

    // Approved already: its job, not a second one.
    let again = f
        .engine
        .approve_and_create_job(&request, deployer("carol"), now)
        .await
        .unwrap();
    let Approval::Job { job: same, .. } = again else {
        panic!("{again:?}");
    };
    assert_eq!((same.created, same.value.id), (false, job.value.id));
}

#[tokio::test]
async fn an_archived_release_or_a_busy_environment_leaves_the_promotion_requested() {
    let f = Fixture::new(1).await;
    // A job holds the environment.
    let holder = f.job(1, &release_with(1, digest(1)), |_| {}).await;
    let release = release_with(2, digest(2));
    f.store.put_release(&release).await.unwrap();
    let mut p = promotion(2);
    p.release_id = release.id;
    f.store.put_promotion(&p).await.unwrap();
    let now = testing::ts(5);

    let busy = f
        .engine
        .approve_and_create_job(&request(&p), deployer("alice"), now)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &busy,
            EngineError::Store(StoreError::EnvironmentLocked { job, .. }) if *job == holder.id
        ),
        "{busy:?}"
    );

    f.store.archive_release(release.id, now).await.unwrap();
    let archived = f
        .engine
        .approve_and_create_job(&request(&p), deployer("alice"), now)
        .await
        .unwrap_err();
    assert!(
        matches!(archived, EngineError::ReleaseArchived { .. }),
        "{archived:?}"
    );
    let stored = f.store.get_promotion(p.id).await.unwrap();
    assert_eq!(
        (stored.status, stored.approvals.len()),
        (PromotionStatus::Requested, 0)
    );
    // Nor does an approved promotion of an archived release get its job.
    let approved = approved_promotion(3, release.id);
    f.store.put_promotion(&approved).await.unwrap();
    assert!(matches!(
        f.engine
            .approve_and_create_job(&request(&approved), deployer("alice"), now)
            .await,
        Err(EngineError::ReleaseArchived { .. })
    ));
}
