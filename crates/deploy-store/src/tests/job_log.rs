//! The job-wide log (`Store::read_job_log`, `Store::job_status`) on both backends: every task's chunks in one order, resumable after any position, under concurrent appends, and numbered for chunks written before the position existed.

use std::collections::BTreeSet;
use std::sync::Arc;

use deploy_core::testing::*;
use deploy_core::*;

use super::harness::{
    Backing, TestStore, both_backends, complete, new_job, seed_env, seed_release,
};
use crate::{LogChunk, Store, StoreError};

both_backends!(
    a_jobs_log_is_every_task_in_append_order_and_resumes_after_any_position,
    concurrent_appends_are_read_once_each,
    chunks_written_before_the_migration_are_numbered_in_write_order,
);

/// A created job numbered `n` in environment `n`, with `tasks` tasks.
async fn job_with_tasks(s: &dyn Store, n: u64, tasks: u64) -> DeploymentJob {
    let (env, targets) = seed_env(s, n, tasks).await;
    let rel = seed_release(s, n).await;
    let job = new_job(s, n, env, rel, &targets, n).await;
    s.create_job(&job).await.unwrap().value
}

/// Reads the whole job log, `page` chunks per call, each call after the last position seen.
async fn read_in_pages(s: &dyn Store, job: JobId, page: u32) -> Vec<(u64, LogChunk)> {
    let mut all: Vec<(u64, LogChunk)> = Vec::new();
    loop {
        let after = all.last().map_or(0, |(c, _)| *c);
        let next = s.read_job_log(job, after, page).await.unwrap();
        if next.is_empty() {
            return all;
        }
        assert!(next.len() <= page as usize);
        all.extend(next);
    }
}

async fn a_jobs_log_is_every_task_in_append_order_and_resumes_after_any_position(t: TestStore) {
    let s = &*t.store;
    let a = job_with_tasks(s, 1, 3).await;
    let b = job_with_tasks(s, 2, 1).await;
    // Interleaved across the tasks of `a`, with another job's chunks in between.
    let mut written = Vec::new();
    for round in 0..4u64 {
        for (i, task) in a.tasks.iter().enumerate() {
            let content = format!("a{i} line {round}\n");
            let seq = s.append_log(task.id, ts(round), &content).await.unwrap();
            written.push((task.id, seq, content));
        }
        s.append_log(b.tasks[0].id, ts(round), &format!("b line {round}\n"))
            .await
            .unwrap();
    }
    let all = s.read_job_log(a.id, 0, 1_000).await.unwrap();
    assert_eq!(
        all.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        (1..=12).collect::<Vec<u64>>(),
        "positions count the job's own chunks only"
    );
    assert_eq!(
        all.iter()
            .map(|(_, c)| (c.task_id, c.seq, c.content.clone()))
            .collect::<Vec<_>>(),
        written,
        "every task's chunks, in the order they were appended"
    );
    assert_eq!(all[4].1.at, ts(1));
    // Resuming after any position gives the rest, once.
    for page in [1, 2, 5] {
        assert_eq!(read_in_pages(s, a.id, page).await, all, "pages of {page}");
    }
    assert_eq!(s.read_job_log(a.id, 7, 2).await.unwrap(), all[7..9]);
    assert!(s.read_job_log(a.id, 12, 10).await.unwrap().is_empty());
    let other = s.read_job_log(b.id, 0, 100).await.unwrap();
    assert_eq!(
        other.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert!(other.iter().all(|(_, c)| c.task_id == b.tasks[0].id));
    // An unknown job has no log; its status is not found.
    assert!(s.read_job_log(job_id(99), 0, 10).await.unwrap().is_empty());
    assert!(matches!(
        s.job_status(job_id(99)).await.unwrap_err(),
        StoreError::NotFound { entity: "job", .. }
    ));
    assert_eq!(
        s.job_status(a.id).await.unwrap(),
        (JobStatus::Pending, false)
    );
    complete(s, &a, 10).await;
    assert_eq!(
        s.job_status(a.id).await.unwrap(),
        (JobStatus::Completed, false)
    );
}

/// Eight tasks append at once while a reader follows the job log page by page: the
/// reader gets every chunk once, positions increasing. (A position committed after a
/// larger one had been read would be skipped, and the count would fall short.)
async fn concurrent_appends_are_read_once_each(t: TestStore) {
    const TASKS: u64 = 8;
    const CHUNKS: u64 = 25;
    let store: Arc<dyn Store> = t.store.clone();
    let job = job_with_tasks(&*store, 1, TASKS).await;
    let writers: Vec<_> = job
        .tasks
        .iter()
        .map(|task| {
            let (store, task) = (store.clone(), task.id);
            tokio::spawn(async move {
                for i in 0..CHUNKS {
                    store
                        .append_log(task, ts(i), &format!("line {i}\n"))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let mut seen: Vec<(u64, LogChunk)> = Vec::new();
    while !writers.iter().all(tokio::task::JoinHandle::is_finished) {
        read_more(&*store, job.id, &mut seen, 7).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    read_more(&*store, job.id, &mut seen, 1_000).await;
    assert_eq!(seen.len() as u64, TASKS * CHUNKS, "every chunk once");
    let distinct: BTreeSet<(TaskId, u64)> = seen.iter().map(|(_, c)| (c.task_id, c.seq)).collect();
    assert_eq!(distinct.len() as u64, TASKS * CHUNKS);
    for task in &job.tasks {
        let seqs: Vec<u64> = seen
            .iter()
            .filter(|(_, c)| c.task_id == task.id)
            .map(|(_, c)| c.seq)
            .collect();
        assert_eq!(seqs, (1..=CHUNKS).collect::<Vec<_>>(), "task {}", task.id);
    }
}

/// One read after the last position in `seen`, appended to it; positions must increase.
async fn read_more(s: &dyn Store, job: JobId, seen: &mut Vec<(u64, LogChunk)>, limit: u32) {
    let after = seen.last().map_or(0, |(c, _)| *c);
    for (cursor, chunk) in s.read_job_log(job, after, limit).await.unwrap() {
        assert!(cursor > after, "position {cursor} after {after}");
        if let Some((last, _)) = seen.last() {
            assert!(cursor > *last, "position {cursor} after {last}");
        }
        seen.push((cursor, chunk));
    }
}

/// Migration 0006 numbers the chunks already stored, per job, by time then task
/// position; appends go on from there.
async fn chunks_written_before_the_migration_are_numbered_in_write_order(t: TestStore) {
    let s = &*t.store;
    let job = job_with_tasks(s, 1, 2).await;
    let (first, second) = (job.tasks[0].id, job.tasks[1].id);
    // Appended out of time order: the migration orders by time, the task's position breaks ties.
    s.append_log(second, ts(5), "second at 5\n").await.unwrap();
    s.append_log(first, ts(5), "first at 5\n").await.unwrap();
    s.append_log(first, ts(2), "first at 2\n").await.unwrap();
    back_to_schema_5(&t).await;
    let s = t.reopen().await;
    let numbered = s.read_job_log(job.id, 0, 100).await.unwrap();
    assert_eq!(
        numbered
            .iter()
            .map(|(c, chunk)| (*c, chunk.content.as_str()))
            .collect::<Vec<_>>(),
        [
            (1, "first at 2\n"),
            (2, "first at 5\n"),
            (3, "second at 5\n")
        ]
    );
    s.append_log(second, ts(6), "after\n").await.unwrap();
    let next = s.read_job_log(job.id, 3, 100).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!((next[0].0, next[0].1.content.as_str()), (4, "after\n"));
}

/// Undoes migration 0006 (its columns, index and `_sqlx_migrations` row), keeping the
/// chunks, so that the next open runs it on them.
async fn back_to_schema_5(t: &TestStore) {
    match &t.backing {
        Backing::Sqlite(dir) => {
            // One connection: the statements below change the schema one after the other.
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect(&format!(
                    "sqlite:{}",
                    dir.path().join("deploy.db").display()
                ))
                .await
                .unwrap();
            // SQLite drops no column a foreign key uses: the table is rebuilt as 0001 made it.
            for sql in [
                "CREATE TABLE chunks_5 (
                     task_id  TEXT NOT NULL REFERENCES tasks (id),
                     seq      INTEGER NOT NULL,
                     at       INTEGER NOT NULL,
                     content  TEXT NOT NULL,
                     PRIMARY KEY (task_id, seq))",
                "INSERT INTO chunks_5 SELECT task_id, seq, at, content FROM task_log_chunks",
                "DROP TABLE task_log_chunks",
                "ALTER TABLE chunks_5 RENAME TO task_log_chunks",
                "ALTER TABLE jobs DROP COLUMN log_cursor",
                "DELETE FROM _sqlx_migrations WHERE version = 6",
            ] {
                sqlx::query(sql).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }
        Backing::Postgres(pg) => {
            let pool = sqlx::PgPool::connect(&pg.url()).await.unwrap();
            for sql in [
                "ALTER TABLE task_log_chunks DROP COLUMN job_id, DROP COLUMN job_cursor",
                "ALTER TABLE jobs DROP COLUMN log_cursor",
                "DELETE FROM _sqlx_migrations WHERE version = 6",
            ] {
                sqlx::query(sql).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }
    }
}
