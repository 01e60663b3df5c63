//! `count_jobs_by_status` on both backends: one row per status that has jobs, from an aggregate query.

use deploy_core::JobStatus;

use super::harness::{TestStore, both_backends, complete, new_job, seed_env, seed_release};

both_backends!(jobs_are_counted_by_status);

async fn jobs_are_counted_by_status(t: TestStore) {
    let s = &*t.store;
    assert_eq!(s.count_jobs_by_status().await.unwrap(), vec![]);
    let rel = seed_release(s, 1).await;
    let mut jobs = Vec::new();
    for e in 1..=3 {
        let (env, targets) = seed_env(s, e, 1).await;
        let job = s
            .create_job(&new_job(s, e, env, rel, &targets, 1).await)
            .await
            .unwrap()
            .value;
        jobs.push(job);
    }
    complete(s, &jobs[0], 10).await;
    assert_eq!(
        s.count_jobs_by_status().await.unwrap(),
        vec![(JobStatus::Completed, 1), (JobStatus::Pending, 2)]
    );
}
