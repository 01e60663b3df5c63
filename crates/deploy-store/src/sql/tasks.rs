//! The SQL of tasks: loading one, the compare-and-swap write of its mutable columns, and the task methods of the `Store`.

/// The compare-and-swap update of a task's mutable columns: `$1..$11` the values, `$12` the id, `$13` the expected version.
macro_rules! task_update_sql {
    () => {
        "UPDATE tasks SET status = $1, agent_id = $2, started_at = $3, completed_at = $4, logs = $5,
           previous_digest = $6, error = $7, attempt_number = $8, last_failure_retryable = $9,
           version = $10, updated_at = $11
         WHERE id = $12 AND version = $13"
    };
}
pub(crate) use task_update_sql;

/// Expands, for `$store` over `$db`, the task statements the group committers share
/// (`load_task`, `write_task`) and the `Store` methods on tasks (module `tasks_sql`).
macro_rules! tasks_sql {
    ($store:ty, $db:ty) => {
        async fn load_task(
            conn: &mut Conn,
            id: deploy_core::TaskId,
        ) -> Result<deploy_core::DeploymentTask, StoreError> {
            let row = sqlx::query("SELECT * FROM tasks WHERE id = $1")
                .bind_id(id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(StoreError::db("load a task"))?
                .ok_or_else(|| StoreError::NotFound {
                    entity: "task",
                    id: id.to_string(),
                })?;
            rows::task(&row)
        }

        /// Writes every mutable column of a task if its stored version is `expected`; the new
        /// version is `task.version`.
        async fn write_task(
            conn: &mut Conn,
            task: &deploy_core::DeploymentTask,
            expected: u64,
        ) -> Result<(), StoreError> {
            let done = bind_task_update(crate::sql::task_update_sql!(), task, expected)?
                .execute(&mut *conn)
                .await
                .map_err(StoreError::db("update a task"))?;
            if done.rows_affected() == 0 {
                return Err(task_conflict(conn, task.id, expected).await);
            }
            Ok(())
        }

        /// Binds the 13 parameters of `task_update_sql!` (for `sql`, which starts with it).
        fn bind_task_update<'q>(
            sql: &'q str,
            task: &deploy_core::DeploymentTask,
            expected: u64,
        ) -> Result<sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>, StoreError>
        {
            Ok(sqlx::query(sql)
                .bind(task.status.as_str())
                .bind_opt_id(task.agent_id)
                .bind(model::opt_millis(task.started_at)?)
                .bind(model::opt_millis(task.completed_at)?)
                .bind(task.logs.clone())
                .bind(task.previous_digest.as_ref().map(|d| d.as_str().to_owned()))
                .bind(task.error.clone())
                .bind(i64::from(task.attempt_number))
                .bind(task.last_failure_retryable)
                .bind(model::int("tasks.version", task.version)?)
                .bind(model::millis(task.updated_at)?)
                .bind_id(task.id)
                .bind(model::int("tasks.version", expected)?))
        }

        /// The `Conflict` for a task write that matched no row.
        async fn task_conflict(
            conn: &mut Conn,
            id: deploy_core::TaskId,
            expected: u64,
        ) -> StoreError {
            let found = load_task(conn, id).await.ok().map(|t| t.version);
            crate::sql::decide::conflict("task", id, expected, found)
        }

        /// The `Store` methods on tasks.
        mod tasks_sql {
            use super::*;

            pub(super) async fn get_task(
                store: &$store,
                id: deploy_core::TaskId,
            ) -> Result<deploy_core::DeploymentTask, StoreError> {
                load_task(&mut *store.read_conn().await?, id).await
            }

            pub(super) async fn apply_task_event(
                store: &$store,
                id: deploy_core::TaskId,
                expected_version: u64,
                event: deploy_core::TaskEvent,
                now: deploy_core::Timestamp,
                cause: &str,
            ) -> Result<deploy_core::DeploymentTask, StoreError> {
                let request = crate::sql::TaskEventRequest {
                    id,
                    expected_version,
                    event,
                    now,
                    cause: cause.to_owned(),
                    record: None,
                };
                store.commit_task_event(request).await
            }

            pub(super) async fn finish_attempt(
                store: &$store,
                id: deploy_core::TaskId,
                expected_version: u64,
                event: deploy_core::TaskEvent,
                now: deploy_core::Timestamp,
                cause: &str,
                record: &crate::model::AttemptRecord,
            ) -> Result<deploy_core::DeploymentTask, StoreError> {
                let request = crate::sql::TaskEventRequest {
                    id,
                    expected_version,
                    event,
                    now,
                    cause: cause.to_owned(),
                    record: Some(record.clone()),
                };
                store.commit_task_event(request).await
            }

            pub(super) async fn save_task(
                store: &$store,
                task: &deploy_core::DeploymentTask,
                now: deploy_core::Timestamp,
            ) -> Result<deploy_core::DeploymentTask, StoreError> {
                let mut tx = store.begin_write().await?;
                let stored = load_task(&mut tx, task.id).await?;
                let next = crate::sql::decide::saved_task(stored, task, now)?;
                write_task(&mut tx, &next, task.version).await?;
                tx.commit()
                    .await
                    .map_err(StoreError::db("commit a task update"))?;
                Ok(next)
            }
        }
    };
}

pub(crate) use tasks_sql;
