//! `list_job_summaries` on both backends: job rows newest first, filtered by environment, status and release, paged with `before` and `limit`, with their tasks counted by state.

use deploy_core::testing::*;
use deploy_core::{
    DEFAULT_MAX_ATTEMPTS, DeploymentJob, EnvironmentId, JobId, JobStatus, ReleaseId, TargetId,
    TaskStatus,
};

use super::harness::{TestStore, both_backends, new_job, seed_env, seed_release};
use crate::{JobQuery, JobSummary, Store, TaskCounts};

both_backends!(
    summaries_carry_the_job_row_and_its_task_counts,
    each_filter_narrows_the_list_alone_and_combined,
    pages_follow_before_and_limit,
    an_empty_store_lists_nothing,
);

/// What [`world`] stored: the jobs as created, and the ids it filters on.
struct World {
    /// Jobs 1..=6, by number (`jobs[0]` is job 1).
    jobs: Vec<DeploymentJob>,
    env1: EnvironmentId,
    env2: EnvironmentId,
    rel1: ReleaseId,
    rel2: ReleaseId,
}

/// Job `n` with `status`, one task per status in `tasks` (all on `target`), times from `n`.
async fn job_with(
    s: &dyn Store,
    n: u64,
    (env, target): (EnvironmentId, TargetId),
    rel: ReleaseId,
    status: JobStatus,
    tasks: &[TaskStatus],
) -> DeploymentJob {
    let mut j = new_job(s, n, env, rel, &[], 1).await;
    j.status = status;
    j.created_at = ts(n * 1_000);
    j.updated_at = ts(n * 1_000);
    if status != JobStatus::Pending {
        j.started_at = Some(ts(n * 1_000 + 10));
    }
    if matches!(status, JobStatus::Completed | JobStatus::Failed) {
        j.completed_at = Some(ts(n * 1_000 + 500));
    }
    if status == JobStatus::Failed {
        j.failure_reason = Some(format!("job {n} failed"));
    }
    for (i, st) in (1..).zip(tasks) {
        let mut t = task(n * 10_000 + i, DEFAULT_MAX_ATTEMPTS);
        t.job_id = j.id;
        t.target_id = target;
        t.status = *st;
        if !matches!(st, TaskStatus::Pending | TaskStatus::Queued) {
            t.attempt_number = 1;
        }
        j.tasks.push(t);
    }
    s.create_job(&j).await.unwrap().value
}

/// Six jobs over two environments and two releases, in every kind of state:
///
/// | job | env | release | status | tasks |
/// |---|---|---|---|---|
/// | 1 | 1 | 1 | completed | 2 succeeded |
/// | 2 | 2 | 1 | failed | succeeded, failed |
/// | 3 | 1 | 2 | failed | failed |
/// | 4 | 2 | 2 | completed | none |
/// | 5 | 1 | 2 | running | one in each of the 8 states |
/// | 6 | 2 | 1 | pending, rolls back job 2 | pending |
async fn world(s: &dyn Store) -> World {
    use TaskStatus::*;
    let (env1, t1) = seed_env(s, 1, 1).await;
    let (env2, t2) = seed_env(s, 2, 1).await;
    let (e1, e2) = ((env1, t1[0]), (env2, t2[0]));
    let rel1 = seed_release(s, 1).await;
    let rel2 = seed_release(s, 2).await;
    let all = [
        Pending, Queued, Dispatched, Running, Verifying, Succeeded, Failed, Retrying,
    ];
    let mut jobs = vec![
        job_with(s, 1, e1, rel1, JobStatus::Completed, &[Succeeded; 2]).await,
        job_with(s, 2, e2, rel1, JobStatus::Failed, &[Succeeded, Failed]).await,
        job_with(s, 3, e1, rel2, JobStatus::Failed, &[Failed]).await,
        job_with(s, 4, e2, rel2, JobStatus::Completed, &[]).await,
        job_with(s, 5, e1, rel2, JobStatus::Running, &all).await,
    ];
    let mut rollback = new_job(s, 6, env2, rel1, &t2, 1).await;
    rollback.rollback_of = Some(jobs[1].id);
    rollback.previous_job_id = Some(jobs[1].id);
    rollback.created_at = ts(6_000);
    jobs.push(s.create_job(&rollback).await.unwrap().value);
    World {
        jobs,
        env1,
        env2,
        rel1,
        rel2,
    }
}

/// The summary of a job as stored, with `tasks` as its counts.
fn summary_of(j: &DeploymentJob, tasks: TaskCounts) -> JobSummary {
    JobSummary {
        id: j.id,
        environment_id: j.environment_id,
        release_id: j.release_id,
        promotion_id: j.promotion_id,
        status: j.status,
        winding_down: j.winding_down,
        rollback_of: j.rollback_of,
        queued_behind: j.queued_behind,
        created_at: j.created_at,
        started_at: j.started_at,
        completed_at: j.completed_at,
        failure_reason: j.failure_reason.clone(),
        tasks,
        // The world's releases are `seed_release`'s (`r<n>`), its promotions `promotion(n)`'s.
        release_name: Some(
            if j.release_id == release_id(1) {
                "r1"
            } else {
                "r2"
            }
            .to_owned(),
        ),
        requested_by: Some("tester".to_owned()),
    }
}

fn counts(total: u32, succeeded: u32, failed: u32, running: u32, waiting: u32) -> TaskCounts {
    TaskCounts {
        total,
        succeeded,
        failed,
        running,
        waiting,
    }
}

/// The numbers (1-based, as in [`world`]) of the jobs `query` lists, in order.
async fn listed(s: &dyn Store, w: &World, query: JobQuery) -> Vec<usize> {
    s.list_job_summaries(&query)
        .await
        .unwrap()
        .iter()
        .map(|summary| {
            1 + w
                .jobs
                .iter()
                .position(|j| j.id == summary.id)
                .expect("a listed job is one of the world's")
        })
        .collect()
}

fn all(limit: u32) -> JobQuery {
    JobQuery {
        limit,
        ..JobQuery::default()
    }
}

async fn summaries_carry_the_job_row_and_its_task_counts(t: TestStore) {
    let s = &*t.store;
    let w = world(s).await;
    let j = &w.jobs;
    assert_eq!(
        s.list_job_summaries(&all(50)).await.unwrap(),
        vec![
            summary_of(&j[5], counts(1, 0, 0, 0, 1)),
            // One task in each state: running counts dispatched, running, verifying
            // and retrying; waiting counts pending and queued.
            summary_of(&j[4], counts(8, 1, 1, 4, 2)),
            // No tasks: every count is zero.
            summary_of(&j[3], TaskCounts::default()),
            summary_of(&j[2], counts(1, 0, 1, 0, 0)),
            summary_of(&j[1], counts(2, 1, 1, 0, 0)),
            summary_of(&j[0], counts(2, 2, 0, 0, 0)),
        ]
    );
    // The fields the fixtures set are the ones stored, not defaults.
    let rollback = s.list_job_summaries(&all(1)).await.unwrap().remove(0);
    assert_eq!(rollback.rollback_of, Some(j[1].id));
    let failed = &s
        .list_job_summaries(&JobQuery {
            status: Some(JobStatus::Failed),
            limit: 1,
            ..JobQuery::default()
        })
        .await
        .unwrap()[0];
    assert_eq!(failed.failure_reason.as_deref(), Some("job 3 failed"));
    assert_eq!(failed.completed_at, Some(ts(3_500)));
    // The counts follow a task's transition.
    let running = s.get_job(j[4].id).await.unwrap();
    let verifying = running
        .tasks
        .iter()
        .find(|t| t.status == TaskStatus::Verifying)
        .unwrap();
    s.apply_task_event(
        verifying.id,
        verifying.version,
        deploy_core::TaskEvent::Succeed,
        ts(5_900),
        "test",
    )
    .await
    .unwrap();
    let now = s
        .list_job_summaries(&JobQuery {
            environment: Some(w.env1),
            limit: 1,
            ..JobQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(now[0].id, j[4].id);
    assert_eq!(now[0].tasks, counts(8, 2, 1, 3, 2));
}

async fn each_filter_narrows_the_list_alone_and_combined(t: TestStore) {
    let s = &*t.store;
    let w = world(s).await;
    let q = |environment, status, release| JobQuery {
        environment,
        status,
        release,
        limit: 50,
        ..JobQuery::default()
    };
    let (env1, env2, rel1, rel2) = (Some(w.env1), Some(w.env2), Some(w.rel1), Some(w.rel2));
    let (completed, failed) = (Some(JobStatus::Completed), Some(JobStatus::Failed));
    let cases: Vec<(JobQuery, Vec<usize>)> = vec![
        (q(None, None, None), vec![6, 5, 4, 3, 2, 1]),
        (q(env1, None, None), vec![5, 3, 1]),
        (
            JobQuery {
                rollback_of: Some(w.jobs[1].id),
                ..q(None, None, None)
            },
            vec![6],
        ),
        (
            JobQuery {
                rollback_of: Some(w.jobs[0].id),
                ..q(None, None, None)
            },
            vec![],
        ),
        (q(env2, None, None), vec![6, 4, 2]),
        (q(None, failed, None), vec![3, 2]),
        (q(None, Some(JobStatus::Pending), None), vec![6]),
        (q(None, Some(JobStatus::RolledBack), None), vec![]),
        (q(None, None, rel1), vec![6, 2, 1]),
        (q(None, None, rel2), vec![5, 4, 3]),
        (q(env1, failed, None), vec![3]),
        (q(env2, completed, None), vec![4]),
        (q(env1, None, rel2), vec![5, 3]),
        (q(None, failed, rel1), vec![2]),
        (q(env2, completed, rel2), vec![4]),
        (q(env2, completed, rel1), vec![]),
        (q(env1, Some(JobStatus::Running), rel2), vec![5]),
    ];
    for (query, expected) in cases {
        assert_eq!(listed(s, &w, query.clone()).await, expected, "{query:?}");
        // Without the filters `list_jobs` lacks, the same jobs as `list_jobs`.
        if query.release.is_none() && query.rollback_of.is_none() {
            let ids: Vec<JobId> = s
                .list_jobs(query.environment, query.status, None, 50)
                .await
                .unwrap()
                .iter()
                .map(|j| j.id)
                .collect();
            let summaries: Vec<JobId> = s
                .list_job_summaries(&query)
                .await
                .unwrap()
                .iter()
                .map(|j| j.id)
                .collect();
            assert_eq!(summaries, ids, "{query:?}");
        }
    }
}

async fn pages_follow_before_and_limit(t: TestStore) {
    let s = &*t.store;
    let w = world(s).await;
    let page = |before: Option<usize>, limit| JobQuery {
        before: before.map(|n| w.jobs[n - 1].id),
        limit,
        ..JobQuery::default()
    };
    assert_eq!(listed(s, &w, page(None, 2)).await, vec![6, 5]);
    assert_eq!(listed(s, &w, page(Some(5), 2)).await, vec![4, 3]);
    assert_eq!(listed(s, &w, page(Some(3), 2)).await, vec![2, 1]);
    assert_eq!(listed(s, &w, page(Some(1), 2)).await, Vec::<usize>::new());
    assert_eq!(listed(s, &w, page(Some(4), 50)).await, vec![3, 2, 1]);
    assert_eq!(listed(s, &w, page(None, 0)).await, Vec::<usize>::new());
    // A page of one still counts that job's tasks, and only its own.
    let one = s.list_job_summaries(&page(Some(6), 1)).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].id, w.jobs[4].id);
    assert_eq!(one[0].tasks, counts(8, 1, 1, 4, 2));
    // `before` combines with the filters.
    let q = JobQuery {
        environment: Some(w.env1),
        before: Some(w.jobs[4].id),
        limit: 1,
        ..JobQuery::default()
    };
    assert_eq!(listed(s, &w, q.clone()).await, vec![3]);
    let q = JobQuery {
        before: Some(w.jobs[2].id),
        ..q
    };
    assert_eq!(listed(s, &w, q).await, vec![1]);
    let q = JobQuery {
        release: Some(w.rel1),
        status: Some(JobStatus::Completed),
        before: Some(w.jobs[5].id),
        limit: 10,
        ..JobQuery::default()
    };
    assert_eq!(listed(s, &w, q).await, vec![1]);
    // Paging through everything two at a time visits every job once, newest first.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let got = s
            .list_job_summaries(&JobQuery {
                before,
                limit: 2,
                ..JobQuery::default()
            })
            .await
            .unwrap();
        let Some(last) = got.last() else { break };
        before = Some(last.id);
        seen.extend(got.iter().map(|j| j.id));
    }
    let mut expected: Vec<JobId> = w.jobs.iter().map(|j| j.id).collect();
    expected.reverse();
    assert_eq!(seen, expected);
}

async fn an_empty_store_lists_nothing(t: TestStore) {
    let s = &*t.store;
    assert_eq!(s.list_job_summaries(&all(50)).await.unwrap(), vec![]);
    let (env, _) = seed_env(s, 1, 1).await;
    let q = JobQuery {
        environment: Some(env),
        status: Some(JobStatus::Running),
        release: Some(release_id(1)),
        before: Some(job_id(9)),
        limit: 50,
        ..JobQuery::default()
    };
    assert_eq!(s.list_job_summaries(&q).await.unwrap(), vec![]);
}
