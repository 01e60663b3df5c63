//! The SQL of task logs: appending a chunk (routed to the backend's committer) and reading a task's or a job's log.

/// Expands, for `$store` over `$db`, the `Store` methods on task logs (module `logs_sql`).
macro_rules! logs_sql {
    ($store:ty, $db:ty) => {
        /// The `Store` methods on task logs.
        mod logs_sql {
            use super::*;

            pub(super) async fn append_log(
                store: &$store,
                task: deploy_core::TaskId,
                at: deploy_core::Timestamp,
                content: &str,
            ) -> Result<u64, StoreError> {
                crate::sql::decide::check_log_chunk(task, content)?;
                store.append_log_routed(task, at, content).await
            }

            pub(super) async fn read_log(
                store: &$store,
                task: deploy_core::TaskId,
                after_seq: u64,
                limit: u32,
            ) -> Result<Vec<LogChunk>, StoreError> {
                store
                    .read_after(
                        "SELECT * FROM task_log_chunks WHERE task_id = $1 AND seq > $2
                         ORDER BY seq LIMIT $3",
                        task,
                        after_seq,
                        limit,
                        "read a task log",
                        rows::log_chunk,
                    )
                    .await
            }

            pub(super) async fn read_log_tail(
                store: &$store,
                task: deploy_core::TaskId,
                before_seq: Option<u64>,
                limit: u32,
            ) -> Result<Vec<LogChunk>, StoreError> {
                // Backwards from the end on the `(task_id, seq)` key, then back in order.
                let before = before_seq
                    .map(|seq| model::int("before_seq", seq))
                    .transpose()?;
                let query = sqlx::query(
                    "SELECT * FROM (
                       SELECT * FROM task_log_chunks
                       WHERE task_id = $1 AND ($2 IS NULL OR seq < $2)
                       ORDER BY seq DESC LIMIT $3
                     ) tail ORDER BY seq",
                )
                .bind_id(task)
                .bind(before)
                .bind(i64::from(limit));
                store
                    .read_all(query, "read the end of a task log", rows::log_chunk)
                    .await
            }

            pub(super) async fn read_job_log(
                store: &$store,
                job: deploy_core::JobId,
                after: u64,
                limit: u32,
            ) -> Result<Vec<(u64, LogChunk)>, StoreError> {
                store
                    .read_after(
                        "SELECT * FROM task_log_chunks WHERE job_id = $1 AND job_cursor > $2
                     ORDER BY job_cursor LIMIT $3",
                        job,
                        after,
                        limit,
                        "read a job's log",
                        rows::job_log_chunk,
                    )
                    .await
            }
        }
    };
}

pub(crate) use logs_sql;
