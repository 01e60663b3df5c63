//! The store's bounded reads for console pages, on both backends: the recent task states of an environment's targets, a job's summary by id, its last event position, a log's tail, and where a release completed.

use deploy_core::testing::*;
use deploy_core::{
    DEFAULT_MAX_ATTEMPTS, DeploymentJob, EnvironmentId, JobEvent, JobStatus, ReleaseId, TargetId,
    TaskStatus,
};

use super::harness::{
    TestStore, both_backends, complete, create_and_fail, new_job, one_job, seed_env, seed_release,
};
use crate::{JobQuery, Store, StoreError, TargetTaskState};

both_backends!(
    recent_target_tasks_counts_each_jobs_tasks_per_target,
    a_job_summary_reads_one_job,
    the_last_event_seq_is_where_a_follower_resumes,
    a_log_tail_is_its_last_chunks_in_order,
    environments_where_a_release_completed_are_listed_once,
);

/// Job `n` in `env` with `status`, its tasks on the given targets with the given statuses.
async fn job_on(
    s: &dyn Store,
    n: u64,
    env: EnvironmentId,
    rel: ReleaseId,
    status: JobStatus,
    tasks: &[(TargetId, TaskStatus)],
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
    for (i, (target, st)) in (1..).zip(tasks) {
        let mut t = task(n * 10_000 + i, DEFAULT_MAX_ATTEMPTS);
        t.job_id = j.id;
        t.target_id = *target;
        t.status = *st;
        if !matches!(st, TaskStatus::Pending | TaskStatus::Queued) {
            t.attempt_number = 1;
        }
        j.tasks.push(t);
    }
    s.create_job(&j).await.unwrap().value
}

#[expect(clippy::too_many_arguments, reason = "a row's columns")]
fn state(
    job: &DeploymentJob,
    target: TargetId,
    tasks: u32,
    succeeded: u32,
    failed: u32,
    started: u32,
    settled: bool,
    winding_down: bool,
) -> TargetTaskState {
    let row = TargetTaskState {
        job_id: job.id,
        job_status: job.status,
        winding_down,
        target_id: target,
        tasks,
        succeeded,
        failed,
        started,
    };
    assert_eq!(row.job_settled(), settled);
    row
}

async fn recent_target_tasks_counts_each_jobs_tasks_per_target(t: TestStore) {
    use TaskStatus::*;
    let s = &*t.store;
    let (env, targets) = seed_env(s, 1, 2).await;
    let (a, b) = (targets[0], targets[1]);
    let (other, other_targets) = seed_env(s, 2, 1).await;
    let rel = seed_release(s, 1).await;
    job_on(
        s,
        1,
        env,
        rel,
        JobStatus::Completed,
        &[(a, Succeeded), (b, Succeeded)],
    )
    .await;
    let failed = job_on(
        s,
        2,
        env,
        rel,
        JobStatus::Failed,
        &[(a, Failed), (b, Succeeded), (b, Succeeded)],
    )
    .await;
    let running = job_on(
        s,
        3,
        env,
        rel,
        JobStatus::Running,
        &[(a, Running), (b, Pending)],
    )
    .await;
    let elsewhere = [(other_targets[0], Succeeded)];
    job_on(s, 4, other, rel, JobStatus::Completed, &elsewhere).await;

    let (first, second) = if a < b { (a, b) } else { (b, a) };
    let row = |job: &DeploymentJob, target: TargetId| -> TargetTaskState {
        match (job.id == running.id, target == a) {
            (true, true) => state(job, a, 1, 0, 0, 1, false, false),
            (true, false) => state(job, b, 1, 0, 0, 0, false, false),
            (false, true) => state(job, a, 1, 0, 1, 1, true, false),
            (false, false) => state(job, b, 2, 2, 0, 2, true, false),
        }
    };
    let expected = vec![
        row(&running, first),
        row(&running, second),
        row(&failed, first),
        row(&failed, second),
    ];
    // The two newest jobs only, newest first, then by target; job 1 and env 2 left out.
    assert_eq!(s.recent_target_tasks(env, 2).await.unwrap(), expected);
    assert_eq!(s.recent_target_tasks(env, 3).await.unwrap().len(), 6);
    assert_eq!(s.recent_target_tasks(other, 5).await.unwrap().len(), 1);
    let (empty, _) = seed_env(s, 3, 1).await;
    assert!(s.recent_target_tasks(empty, 5).await.unwrap().is_empty());
}

async fn a_job_summary_reads_one_job(t: TestStore) {
    let s = &*t.store;
    let job = one_job(s).await;
    let listed = s
        .list_job_summaries(&JobQuery {
            limit: 10,
            ..JobQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(s.get_job_summary(job.id).await.unwrap(), listed[0]);
    assert_eq!(listed[0].tasks.total, 1);
    let missing = s.get_job_summary(job_id(999)).await.unwrap_err();
    assert!(
        matches!(missing, StoreError::NotFound { entity: "job", .. }),
        "{missing:?}"
    );
}

async fn the_last_event_seq_is_where_a_follower_resumes(t: TestStore) {
    let s = &*t.store;
    let job = one_job(s).await;
    let last = |events: Vec<crate::JobEventRecord>| events.last().map_or(0, |e| e.seq);
    let created = s.last_job_event_seq(job.id).await.unwrap();
    assert_eq!(created, last(s.job_events(job.id, 0, 1_000).await.unwrap()));
    s.apply_job_event(job.id, job.version, JobEvent::Start, ts(5), "test")
        .await
        .unwrap();
    let started = s.last_job_event_seq(job.id).await.unwrap();
    assert!(started > created);
    assert_eq!(started, last(s.job_events(job.id, 0, 1_000).await.unwrap()));
    // Nothing follows the last position.
    assert!(s.job_events(job.id, started, 10).await.unwrap().is_empty());
    assert_eq!(s.last_job_event_seq(job_id(999)).await.unwrap(), 0);
}

async fn a_log_tail_is_its_last_chunks_in_order(t: TestStore) {
    let s = &*t.store;
    let job = one_job(s).await;
    let task = job.tasks[0].id;
    let mut seqs = Vec::new();
    for i in 1..=5 {
        seqs.push(
            s.append_log(task, ts(i), &format!("line {i}\n"))
                .await
                .unwrap(),
        );
    }
    let contents = |chunks: Vec<crate::LogChunk>| -> Vec<String> {
        chunks.into_iter().map(|c| c.content).collect()
    };
    assert_eq!(
        contents(s.read_log_tail(task, None, 2).await.unwrap()),
        ["line 4\n", "line 5\n"]
    );
    assert_eq!(
        contents(s.read_log_tail(task, Some(seqs[3]), 2).await.unwrap()),
        ["line 2\n", "line 3\n"]
    );
    assert_eq!(s.read_log_tail(task, None, 100).await.unwrap().len(), 5);
    assert!(
        s.read_log_tail(task, Some(seqs[0]), 2)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.read_log_tail(task_id(999), None, 2)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn environments_where_a_release_completed_are_listed_once(t: TestStore) {
    let s = &*t.store;
    let (e1, t1) = seed_env(s, 1, 1).await;
    let (e2, t2) = seed_env(s, 2, 1).await;
    let (e3, t3) = seed_env(s, 3, 1).await;
    let rel1 = seed_release(s, 1).await;
    let rel2 = seed_release(s, 2).await;
    let rel3 = seed_release(s, 3).await;
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    for (env, targets, rel) in [
        (e1, &t1, rel1),
        (e3, &t3, rel1),
        (e1, &t1, rel1),
        (e2, &t2, rel2),
    ] {
        let job = new_job(s, next(), env, rel, targets, 1).await;
        s.create_job(&job).await.unwrap();
        complete(s, &job, 10).await;
    }
    create_and_fail(s, &new_job(s, next(), e2, rel1, &t2, 1).await, 20).await;
    let mut expected = vec![e1, e3];
    expected.sort();
    assert_eq!(
        s.environments_where_release_completed(rel1).await.unwrap(),
        expected
    );
    assert_eq!(
        s.environments_where_release_completed(rel2).await.unwrap(),
        [e2]
    );
    assert!(
        s.environments_where_release_completed(rel3)
            .await
            .unwrap()
            .is_empty()
    );
}
