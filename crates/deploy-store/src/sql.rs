//! The SQL of the `Store`, written once and expanded for each backend by `sql_store!` (the dialects differ only in id binding and row access).
//!
//! Both dialects accept `$n` placeholders. A backend module provides `Db`, an
//! `impl RowExt` for its row type, an `impl BindId` for its query type, and on
//! its store type `writer`/`reader` pools, the `CLAIM_SQL` constant and
//! `commit_task_event` (group commit on both: `pg_commit.rs`, `sqlite.rs`).

use uuid::Uuid;

/// Binds ids the way the backend stores them (TEXT on SQLite, UUID on PostgreSQL).
pub(crate) trait BindId: Sized {
    fn bind_id(self, id: impl Into<Uuid>) -> Self;
    fn bind_opt_id<T: Into<Uuid>>(self, id: Option<T>) -> Self;
}

/// The claim query; `$lock` is the row-locking clause of the dialect (`FOR UPDATE SKIP LOCKED`
/// on PostgreSQL, nothing on SQLite whose single writer serialises claimers). The outer
/// condition is re-checked on the locked row, so a job is claimed by one claimer.
///
/// Besides active jobs it takes a `failed` job whose lease ended while still held: its
/// runner died before it finished with the job (a runner that returns releases the
/// lease), so the job's wind-down or automatic rollback may not have started yet.
macro_rules! claim_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE jobs SET claimed_by = $1, lease_until = $2
             WHERE id IN (
                 SELECT id FROM jobs
                 WHERE ((status IN ('pending', 'preparing', 'running', 'completing', 'rolling_back')
                         AND queued_behind IS NULL
                         AND (claimed_by IS NULL OR lease_until < $3))
                        OR (status = 'failed' AND claimed_by IS NOT NULL AND lease_until < $3))
                 ORDER BY created_at, id LIMIT $4 ",
            $lock,
            ")
               AND ((status IN ('pending', 'preparing', 'running', 'completing', 'rolling_back')
                     AND queued_behind IS NULL
                     AND (claimed_by IS NULL OR lease_until < $3))
                    OR (status = 'failed' AND claimed_by IS NOT NULL AND lease_until < $3))
             RETURNING id"
        )
    };
}
pub(crate) use claim_sql;

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

/// A task transition to commit: what `Store::apply_task_event` was given.
#[derive(Debug, Clone)]
pub(crate) struct TaskEventRequest {
    pub id: deploy_core::TaskId,
    pub expected_version: u64,
    pub event: deploy_core::TaskEvent,
    pub now: deploy_core::Timestamp,
    pub cause: String,
    /// For the transition that ends an attempt: its log tail and agent.
    pub record: Option<crate::model::AttemptRecord>,
}

/// The decide half of a task transition on `task` as stored: checks the version and
/// applies the event in memory; the new version is `version + 1`. Writes nothing.
pub(crate) fn apply_task_request(
    mut task: deploy_core::DeploymentTask,
    request: &TaskEventRequest,
) -> Result<(deploy_core::DeploymentTask, deploy_core::TaskStatus), crate::errors::StoreError> {
    if task.version != request.expected_version {
        return Err(crate::errors::StoreError::Conflict {
            entity: "task",
            id: request.id.to_string(),
            expected: request.expected_version,
            found: Some(task.version),
        });
    }
    let from = task.status;
    task.apply(request.event, request.now)?;
    if matches!(
        request.event,
        deploy_core::TaskEvent::Fail { .. } | deploy_core::TaskEvent::Cancel
    ) {
        task.error = Some(request.cause.clone());
    }
    if let Some(record) = &request.record {
        task.logs.clone_from(&record.logs);
        if record.agent_id.is_some() {
            task.agent_id = record.agent_id;
        }
    }
    task.version += 1;
    Ok((task, from))
}

/// Expands the `Store` implementation for `$store` over the sqlx database `$db`.
macro_rules! sql_store {
    ($store:ty, $db:ty) => {
        type Conn = <$db as sqlx::Database>::Connection;

        /// Loads a job row with its tasks and artifacts.
        async fn load_job(conn: &mut Conn, id: deploy_core::JobId) -> Result<deploy_core::DeploymentJob, StoreError> {
            let row = sqlx::query("SELECT * FROM jobs WHERE id = $1")
                .bind_id(id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(StoreError::db("load a job"))?
                .ok_or_else(|| StoreError::NotFound { entity: "job", id: id.to_string() })?;
            let mut job = rows::job(&row)?;
            job.tasks = sqlx::query("SELECT * FROM tasks WHERE job_id = $1 ORDER BY position")
                .bind_id(id)
                .fetch_all(&mut *conn)
                .await
                .map_err(StoreError::db("load the tasks of a job"))?
                .iter()
                .map(rows::task)
                .collect::<Result<_, _>>()?;
            job.artifacts = sqlx::query("SELECT * FROM artifacts WHERE job_id = $1 ORDER BY position")
                .bind_id(id)
                .fetch_all(&mut *conn)
                .await
                .map_err(StoreError::db("load the artifacts of a job"))?
                .iter()
                .map(rows::artifact)
                .collect::<Result<_, _>>()?;
            Ok(job)
        }

        async fn load_task(conn: &mut Conn, id: deploy_core::TaskId) -> Result<deploy_core::DeploymentTask, StoreError> {
            let row = sqlx::query("SELECT * FROM tasks WHERE id = $1")
                .bind_id(id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(StoreError::db("load a task"))?
                .ok_or_else(|| StoreError::NotFound { entity: "task", id: id.to_string() })?;
            rows::task(&row)
        }

        async fn job_by_key(conn: &mut Conn, key: &str) -> Result<Option<deploy_core::JobId>, StoreError> {
            let row = sqlx::query("SELECT id FROM jobs WHERE idempotency_key = $1")
                .bind(key.to_owned())
                .fetch_optional(&mut *conn)
                .await
                .map_err(StoreError::db("look up a job by idempotency key"))?;
            row.map(|r| model::typed("jobs.id", r.uuid("id")?)).transpose()
        }

        async fn active_job(conn: &mut Conn, environment: deploy_core::EnvironmentId) -> Result<Option<deploy_core::JobId>, StoreError> {
            let row = sqlx::query(
                "SELECT id FROM jobs WHERE environment_id = $1 AND status IN ('pending', 'preparing', 'running', 'completing')
                   AND queued_behind IS NULL",
            )
            .bind_id(environment)
            .fetch_optional(&mut *conn)
            .await
            .map_err(StoreError::db("look up the active job of an environment"))?;
            row.map(|r| model::typed("jobs.id", r.uuid("id")?)).transpose()
        }

        async fn insert_job(conn: &mut Conn, job: &deploy_core::DeploymentJob) -> Result<(), StoreError> {
            sqlx::query(
                "INSERT INTO jobs (id, promotion_id, release_id, environment_id, strategy, parallelism,
                   failure_policy, status, started_at, completed_at, rollback_of, previous_job_id,
                   idempotency_key, failure_reason, version, created_at, updated_at, queued_behind)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
            )
            .bind_id(job.id)
            .bind_id(job.promotion_id)
            .bind_id(job.release_id)
            .bind_id(job.environment_id)
            .bind(model::to_json("jobs.strategy", &job.strategy)?)
            .bind(i64::from(job.parallelism.get()))
            .bind(model::to_json("jobs.failure_policy", &job.failure_policy)?)
            .bind(job.status.as_str())
            .bind(model::opt_millis(job.started_at)?)
            .bind(model::opt_millis(job.completed_at)?)
            .bind_opt_id(job.rollback_of)
            .bind_opt_id(job.previous_job_id)
            .bind(job.idempotency_key.as_str().to_owned())
            .bind(job.failure_reason.clone())
            .bind(model::int("jobs.version", job.version)?)
            .bind(model::millis(job.created_at)?)
            .bind(model::millis(job.updated_at)?)
            .bind_opt_id(job.queued_behind)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::db("insert a job"))?;
            for (position, task) in job.tasks.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO tasks (id, job_id, position, target_id, component_id, digest, status,
                       agent_id, started_at, completed_at, logs, previous_digest, error, attempt_number,
                       max_attempts, last_failure_retryable, wave, version, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
                )
                .bind_id(task.id)
                .bind_id(job.id)
                .bind(model::int("tasks.position", position as u64)?)
                .bind_id(task.target_id)
                .bind_opt_id(task.component_id)
                .bind(task.digest.as_str().to_owned())
                .bind(task.status.as_str())
                .bind_opt_id(task.agent_id)
                .bind(model::opt_millis(task.started_at)?)
                .bind(model::opt_millis(task.completed_at)?)
                .bind(task.logs.clone())
                .bind(task.previous_digest.as_ref().map(|d| d.as_str().to_owned()))
                .bind(task.error.clone())
                .bind(i64::from(task.attempt_number))
                .bind(i64::from(task.max_attempts))
                .bind(task.last_failure_retryable)
                .bind(i64::from(task.wave))
                .bind(model::int("tasks.version", task.version)?)
                .bind(model::millis(task.created_at)?)
                .bind(model::millis(task.updated_at)?)
                .execute(&mut *conn)
                .await
                .map_err(StoreError::db("insert a task"))?;
            }
            for (position, artifact) in job.artifacts.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO artifacts (id, job_id, position, target_id, kind, file_name, content, size, sha256)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind_id(artifact.id)
                .bind_id(job.id)
                .bind(model::int("artifacts.position", position as u64)?)
                .bind_opt_id(artifact.target_id)
                .bind(artifact.kind.as_str())
                .bind(artifact.file_name.as_str().to_owned())
                .bind(artifact.content.clone())
                .bind(model::int("artifacts.size", artifact.size)?)
                .bind(artifact.sha256.as_str().to_owned())
                .execute(&mut *conn)
                .await
                .map_err(StoreError::db("insert an artifact"))?;
            }
            Ok(())
        }

        #[expect(clippy::too_many_arguments, reason = "one column per argument of the event row")]
        async fn insert_event(
            conn: &mut Conn,
            job: deploy_core::JobId,
            task: Option<deploy_core::TaskId>,
            event: &str,
            from: &str,
            to: &str,
            cause: &str,
            at: deploy_core::Timestamp,
        ) -> Result<(), StoreError> {
            sqlx::query(
                "INSERT INTO job_events (job_id, task_id, event, from_status, to_status, cause, at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind_id(job)
            .bind_opt_id(task)
            .bind(event.to_owned())
            .bind(from.to_owned())
            .bind(to.to_owned())
            .bind(cause.to_owned())
            .bind(model::millis(at)?)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::db("append a job event"))?;
            Ok(())
        }

        /// Inserts a new job with its `create` event, inside the caller's transaction.
        async fn insert_new_job(conn: &mut Conn, job: &deploy_core::DeploymentJob) -> Result<(), StoreError> {
            insert_job(conn, job).await?;
            // Retired since the job was planned: nothing is written (the caller's
            // transaction rolls back). Checked after the insert, in its transaction.
            let retired = sqlx::query("SELECT id FROM environments WHERE id = $1 AND deleted_at IS NOT NULL")
                .bind_id(job.environment_id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(StoreError::db("check the environment of a new job"))?;
            if retired.is_some() {
                return Err(StoreError::NotFound { entity: "environment", id: job.environment_id.to_string() });
            }
            let retired = sqlx::query(
                "SELECT t.id FROM tasks k JOIN targets t ON t.id = k.target_id
                 WHERE k.job_id = $1 AND t.deleted_at IS NOT NULL LIMIT 1",
            )
            .bind_id(job.id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(StoreError::db("check the targets of a new job"))?;
            if let Some(row) = retired {
                return Err(StoreError::NotFound { entity: "target", id: row.uuid("id")?.to_string() });
            }
            let cause = format!("created with idempotency key `{}`", job.idempotency_key.as_str());
            insert_event(conn, job.id, None, "create", "", job.status.as_str(), &cause, job.created_at).await
        }

        /// Why inserting `job` broke a unique index (its transaction rolled back): the
        /// environment is held by another job, or the id exists.
        async fn insert_clash(conn: &mut Conn, job: &deploy_core::DeploymentJob) -> StoreError {
            match active_job(conn, job.environment_id).await {
                Ok(Some(running)) => StoreError::EnvironmentLocked { environment: job.environment_id, job: running },
                Ok(None) => StoreError::AlreadyExists { entity: "job", id: job.id.to_string() },
                Err(e) => e,
            }
        }

        /// Applies `event` to job `id` at `expected_version` inside the caller's
        /// transaction: deploy-core decides, the version is bumped, the event appended.
        async fn transition_job(
            conn: &mut Conn,
            id: deploy_core::JobId,
            expected_version: u64,
            event: deploy_core::JobEvent,
            now: deploy_core::Timestamp,
            cause: &str,
        ) -> Result<deploy_core::DeploymentJob, StoreError> {
            let mut job = load_job(conn, id).await?;
            let conflict = |found| StoreError::Conflict { entity: "job", id: id.to_string(), expected: expected_version, found };
            if job.version != expected_version {
                return Err(conflict(Some(job.version)));
            }
            let from = job.status;
            let to = job.apply(event, now)?;
            if to == deploy_core::JobStatus::Failed {
                job.failure_reason = Some(cause.to_owned());
            }
            job.version += 1;
            let done = sqlx::query(
                "UPDATE jobs SET status = $1, started_at = $2, completed_at = $3, failure_reason = $4,
                   version = $5, updated_at = $6
                 WHERE id = $7 AND version = $8",
            )
            .bind(to.as_str())
            .bind(model::opt_millis(job.started_at)?)
            .bind(model::opt_millis(job.completed_at)?)
            .bind(job.failure_reason.clone())
            .bind(model::int("jobs.version", job.version)?)
            .bind(model::millis(now)?)
            .bind_id(id)
            .bind(model::int("jobs.version", expected_version)?)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::db("update a job"))?;
            if done.rows_affected() == 0 {
                return Err(conflict(None));
            }
            insert_event(conn, id, None, event.as_str(), from.as_str(), to.as_str(), cause, now).await?;
            Ok(job)
        }

        /// Writes every mutable column of a task if its stored version is `expected`; the new version is `task.version`.
        async fn write_task(conn: &mut Conn, task: &deploy_core::DeploymentTask, expected: u64) -> Result<(), StoreError> {
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
        ) -> Result<sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>, StoreError> {
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
        async fn task_conflict(conn: &mut Conn, id: deploy_core::TaskId, expected: u64) -> StoreError {
            let found = load_task(conn, id).await.ok().map(|t| t.version);
            StoreError::Conflict { entity: "task", id: id.to_string(), expected, found }
        }

        impl $store {
            async fn read_conn(&self) -> Result<sqlx::pool::PoolConnection<$db>, StoreError> {
                self.reader.acquire().await.map_err(StoreError::db("get a read connection"))
            }

            async fn begin_write(&self) -> Result<sqlx::Transaction<'static, $db>, StoreError> {
                self.writer.begin().await.map_err(StoreError::db("begin a write transaction"))
            }

            /// Runs a query on the read pool and converts every row.
            async fn read_all<'q, T>(
                &self,
                query: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>,
                action: &'static str,
                convert: fn(&<$db as sqlx::Database>::Row) -> Result<T, StoreError>,
            ) -> Result<Vec<T>, StoreError> {
                query.fetch_all(&self.reader).await.map_err(StoreError::db(action))?.iter().map(convert).collect()
            }

            /// Reads an append-only sequence (`sql` takes the owner id, `after_seq` and `limit`).
            async fn read_after<T>(
                &self,
                sql: &'static str,
                owner: impl Into<uuid::Uuid>,
                after_seq: u64,
                limit: u32,
                action: &'static str,
                convert: fn(&<$db as sqlx::Database>::Row) -> Result<T, StoreError>,
            ) -> Result<Vec<T>, StoreError> {
                let query = sqlx::query(sql)
                    .bind_id(owner)
                    .bind(model::int("after_seq", after_seq)?)
                    .bind(i64::from(limit));
                self.read_all(query, action, convert).await
            }

            /// Runs a query on the read pool that must find one row; none is `NotFound { entity, id }`.
            async fn read_one<'q, T>(
                &self,
                query: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>,
                entity: &'static str,
                id: String,
                convert: fn(&<$db as sqlx::Database>::Row) -> Result<T, StoreError>,
            ) -> Result<T, StoreError> {
                let row = query
                    .fetch_optional(&self.reader)
                    .await
                    .map_err(StoreError::db("load a row"))?
                    .ok_or(StoreError::NotFound { entity, id })?;
                convert(&row)
            }

            /// Runs one statement that must touch a row; a unique violation becomes `AlreadyExists`.
            async fn insert_one<'q>(
                &self,
                query: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>,
                entity: &'static str,
                id: String,
            ) -> Result<(), StoreError> {
                match query.execute(&self.writer).await.map_err(StoreError::db("insert a row")) {
                    Err(e) if e.is_unique_violation() => Err(StoreError::AlreadyExists { entity, id }),
                    Err(e) => Err(e),
                    Ok(_) => Ok(()),
                }
            }

            /// Why a conditional delete of `entity` `id` touched no row: an active job uses
            /// it (`active_job` selects that job's `id`), [`StoreError::InUse`] naming it;
            /// otherwise it does not exist (or was deleted already).
            async fn retirement_refused(
                &self,
                entity: &'static str,
                id: impl Into<uuid::Uuid> + std::fmt::Display + Copy,
                active_job: &'static str,
            ) -> StoreError {
                let job = sqlx::query(active_job)
                    .bind_id(id)
                    .fetch_optional(&self.reader)
                    .await
                    .map_err(StoreError::db("look up the active jobs of a retired entity"));
                match job {
                    Err(e) => e,
                    Ok(Some(row)) => match row.uuid("id").and_then(|u| model::typed("jobs.id", u)) {
                        Ok(job) => StoreError::InUse { entity, id: id.to_string(), job },
                        Err(e) => e,
                    },
                    Ok(None) => StoreError::NotFound { entity, id: id.to_string() },
                }
            }

            /// After a unique violation on an insert of `id` named `name`: [`StoreError::NameTaken`]
            /// with the id of the row `holder` (a query selecting `id` by name) finds, or
            /// `AlreadyExists` when the clash was the id itself (or the holder is gone again).
            async fn name_clash<'q>(
                &self,
                holder: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>,
                entity: &'static str,
                name: &str,
                id: String,
            ) -> StoreError {
                let existing = holder
                    .fetch_optional(&self.reader)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|row| row.uuid("id").ok())
                    .map(|uuid| uuid.to_string());
                match existing {
                    Some(existing) if existing != id => {
                        StoreError::NameTaken { entity, name: name.to_owned(), existing }
                    }
                    _ => StoreError::AlreadyExists { entity, id },
                }
            }
        }

        crate::relay::relay_sql!($store, $db);
        crate::app_secrets::app_secrets_sql!($store, $db);

        #[async_trait::async_trait]
        impl Store for $store {
            async fn put_app_secret(&self, name: &str, key_id: &str, sealed: &str, version: u64, environments: &[String], by: &str, now: deploy_core::Timestamp) -> Result<Option<crate::app_secrets::AppSecretRecord>, StoreError> {
                self.app_secret_put(name, key_id, sealed, version, environments, by, now).await
            }

            async fn get_app_secret(&self, name: &str) -> Result<Option<crate::app_secrets::AppSecretRecord>, StoreError> {
                self.app_secret_get(name).await
            }

            async fn list_app_secrets(&self) -> Result<Vec<crate::app_secrets::AppSecretRecord>, StoreError> {
                self.app_secret_list().await
            }

            async fn delete_app_secret(&self, name: &str) -> Result<bool, StoreError> {
                self.app_secret_delete(name).await
            }

            async fn secret_key_checks(&self) -> Result<Vec<(String, String)>, StoreError> {
                self.secret_key_check_list().await
            }

            async fn put_secret_key_check(&self, key_id: &str, sealed: &str, now: deploy_core::Timestamp) -> Result<bool, StoreError> {
                self.secret_key_check_put(key_id, sealed, now).await
            }

            async fn reseal_app_secret(&self, name: &str, version: u64, key_id: &str, sealed: &str) -> Result<bool, StoreError> {
                self.app_secret_reseal(name, version, key_id, sealed).await
            }

            async fn put_deliveries(&self, deliveries: &[crate::relay::DeliveryRecord]) -> Result<(), StoreError> {
                self.relay_put_deliveries(deliveries).await
            }

            async fn finish_deliveries(&self, ends: &[crate::relay::DeliveryEnd]) -> Result<Vec<bool>, StoreError> {
                self.relay_finish_deliveries(ends).await
            }

            async fn get_delivery(&self, task: deploy_core::TaskId, attempt: u32) -> Result<Option<crate::relay::DeliveryRecord>, StoreError> {
                self.relay_get_delivery(task, attempt).await
            }

            async fn queued_deliveries(&self, agent: deploy_core::AgentId) -> Result<Vec<crate::relay::DeliveryRecord>, StoreError> {
                self.relay_queued_deliveries(agent).await
            }

            async fn append_relay_lines(
                &self,
                task: deploy_core::TaskId,
                attempt: u32,
                agent: deploy_core::AgentId,
                first_seq: u64,
                lines: &[crate::relay::RelayLine],
            ) -> Result<Option<u64>, StoreError> {
                self.relay_append_lines(task, attempt, agent, first_seq, lines).await
            }

            async fn relay_lines(&self, task: deploy_core::TaskId, attempt: u32, from_seq: u64) -> Result<Vec<crate::relay::RelayLine>, StoreError> {
                self.relay_read_lines(task, attempt, from_seq).await
            }

            async fn record_agent_polls(&self, polls: &[crate::relay::AgentPoll]) -> Result<(), StoreError> {
                self.relay_record_polls(polls).await
            }

            async fn agent_polls(&self) -> Result<Vec<crate::relay::AgentPoll>, StoreError> {
                self.relay_agent_polls().await
            }

            async fn prune_deliveries(&self, finished_before: deploy_core::Timestamp, queued_before: deploy_core::Timestamp) -> Result<u64, StoreError> {
                self.relay_prune(finished_before, queued_before).await
            }

            async fn announce(&self, message: &str) -> Result<(), StoreError> {
                self.bus_announce(message).await
            }

            fn subscribe(&self) -> tokio::sync::broadcast::Receiver<String> {
                self.bus_subscribe()
            }

            fn shared(&self) -> bool {
                Self::SHARED
            }

            async fn put_environment(&self, environment: &deploy_core::Environment) -> Result<(), StoreError> {
                let query = sqlx::query("INSERT INTO environments (id, name, spec, created_at, version) VALUES ($1, $2, $3, $4, $5)")
                    .bind_id(environment.id)
                    .bind(environment.name.as_str().to_owned())
                    .bind(model::to_json("environments.spec", environment)?)
                    .bind(model::millis(environment.created_at)?)
                    .bind(model::int("environments.version", environment.version)?);
                let name = environment.name.as_str();
                match self.insert_one(query, "environment", environment.id.to_string()).await {
                    Err(StoreError::AlreadyExists { entity, id }) => {
                        let holder = sqlx::query("SELECT id FROM environments WHERE name = $1").bind(name.to_owned());
                        Err(self.name_clash(holder, entity, name, id).await)
                    }
                    other => other,
                }
            }

            async fn get_environment(&self, id: deploy_core::EnvironmentId) -> Result<deploy_core::Environment, StoreError> {
                let query = sqlx::query("SELECT spec, version FROM environments WHERE id = $1 AND deleted_at IS NULL").bind_id(id);
                self.read_one(query, "environment", id.to_string(), rows::environment).await
            }

            async fn find_environment_by_name(&self, name: &str) -> Result<Option<deploy_core::Environment>, StoreError> {
                let query = sqlx::query("SELECT spec, version FROM environments WHERE name = $1 AND deleted_at IS NULL")
                    .bind(name.to_owned());
                Ok(self.read_all(query, "find an environment by name", rows::environment).await?.pop())
            }

            async fn update_environment(
                &self,
                environment: &deploy_core::Environment,
                expected_version: u64,
            ) -> Result<deploy_core::Environment, StoreError> {
                let mut next = environment.clone();
                next.version = expected_version + 1;
                let name = next.name.as_str().to_owned();
                let updated = sqlx::query(
                    "UPDATE environments SET name = $2, spec = $3, version = $4
                     WHERE id = $1 AND version = $5 AND deleted_at IS NULL",
                )
                .bind_id(next.id)
                .bind(name.clone())
                .bind(model::to_json("environments.spec", &next)?)
                .bind(model::int("environments.version", next.version)?)
                .bind(model::int("environments.version", expected_version)?)
                .execute(&self.writer)
                .await
                .map_err(StoreError::db("update an environment"));
                match updated {
                    Err(e) if e.is_unique_violation() => {
                        let holder = sqlx::query("SELECT id FROM environments WHERE name = $1").bind(name.clone());
                        Err(self.name_clash(holder, "environment", &name, next.id.to_string()).await)
                    }
                    Err(e) => Err(e),
                    Ok(done) if done.rows_affected() == 1 => Ok(next),
                    Ok(_) => {
                        let stored = self.get_environment(next.id).await?;
                        Err(StoreError::Conflict {
                            entity: "environment",
                            id: next.id.to_string(),
                            expected: expected_version,
                            found: Some(stored.version),
                        })
                    }
                }
            }

            async fn list_environments(
                &self,
                before: Option<deploy_core::EnvironmentId>,
                limit: u32,
            ) -> Result<Vec<deploy_core::Environment>, StoreError> {
                let query = sqlx::query(
                    "SELECT spec, version FROM environments WHERE deleted_at IS NULL AND ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
                )
                .bind_opt_id(before)
                .bind(i64::from(limit));
                self.read_all(query, "list environments", rows::environment).await
            }

            async fn put_target(&self, target: &deploy_core::Target) -> Result<(), StoreError> {
                let query = sqlx::query(
                    "INSERT INTO targets (id, environment_id, name, target_type, spec, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind_id(target.id)
                .bind_id(target.environment_id)
                .bind(target.name.as_str().to_owned())
                .bind(target.target_type.as_str())
                .bind(model::to_json("targets.spec", target)?)
                .bind(model::millis(target.created_at)?);
                let name = target.name.as_str();
                match self.insert_one(query, "target", target.id.to_string()).await {
                    Err(StoreError::AlreadyExists { entity, id }) => {
                        let holder = sqlx::query("SELECT id FROM targets WHERE environment_id = $1 AND name = $2")
                            .bind_id(target.environment_id)
                            .bind(name.to_owned());
                        Err(self.name_clash(holder, entity, name, id).await)
                    }
                    other => other,
                }
            }

            async fn list_targets(&self, environment: deploy_core::EnvironmentId) -> Result<Vec<deploy_core::Target>, StoreError> {
                let query = sqlx::query(
                    "SELECT spec, version FROM targets WHERE environment_id = $1 AND deleted_at IS NULL ORDER BY name",
                )
                .bind_id(environment);
                self.read_all(query, "list targets", rows::target).await
            }

            async fn update_target(
                &self,
                target: &deploy_core::Target,
                expected_version: u64,
            ) -> Result<deploy_core::Target, StoreError> {
                let mut next = target.clone();
                next.version = expected_version + 1;
                let name = next.name.as_str().to_owned();
                let updated = sqlx::query(
                    "UPDATE targets SET name = $2, target_type = $3, spec = $4, version = $5
                     WHERE id = $1 AND version = $6 AND deleted_at IS NULL",
                )
                .bind_id(next.id)
                .bind(name.clone())
                .bind(next.target_type.as_str())
                .bind(model::to_json("targets.spec", &next)?)
                .bind(model::int("targets.version", next.version)?)
                .bind(model::int("targets.version", expected_version)?)
                .execute(&self.writer)
                .await
                .map_err(StoreError::db("update a target"));
                match updated {
                    Err(e) if e.is_unique_violation() => {
                        let holder = sqlx::query("SELECT id FROM targets WHERE environment_id = $1 AND name = $2")
                            .bind_id(next.environment_id)
                            .bind(name.clone());
                        Err(self.name_clash(holder, "target", &name, next.id.to_string()).await)
                    }
                    Err(e) => Err(e),
                    Ok(done) if done.rows_affected() == 1 => Ok(next),
                    Ok(_) => {
                        let found = sqlx::query("SELECT version FROM targets WHERE id = $1 AND deleted_at IS NULL")
                            .bind_id(next.id)
                            .fetch_optional(&self.reader)
                            .await
                            .map_err(StoreError::db("read a target's version"))?
                            .ok_or_else(|| StoreError::NotFound { entity: "target", id: next.id.to_string() })?;
                        Err(StoreError::Conflict {
                            entity: "target",
                            id: next.id.to_string(),
                            expected: expected_version,
                            found: Some(model::uint("targets.version", found.i64("version")?)?),
                        })
                    }
                }
            }

            async fn delete_target(&self, id: deploy_core::TargetId, now: deploy_core::Timestamp) -> Result<(), StoreError> {
                // One conditional write: no active job may gain a task on it meanwhile
                // unnoticed (SQLite's single writer; PostgreSQL re-checks on the row).
                let done = sqlx::query(
                    "UPDATE targets SET deleted_at = $2, name = name || '~' || $3, version = version + 1
                     WHERE id = $1 AND deleted_at IS NULL
                       AND NOT EXISTS (SELECT 1 FROM tasks t JOIN jobs j ON j.id = t.job_id
                                       WHERE t.target_id = $1
                                         AND j.status IN ('pending', 'preparing', 'running', 'completing', 'rolling_back'))",
                )
                .bind_id(id)
                .bind(model::millis(now)?)
                .bind(id.to_string())
                .execute(&self.writer)
                .await
                .map_err(StoreError::db("delete a target"))?;
                if done.rows_affected() == 1 {
                    return Ok(());
                }
                Err(self
                    .retirement_refused(
                        "target",
                        id,
                        "SELECT j.id FROM tasks t JOIN jobs j ON j.id = t.job_id
                         WHERE t.target_id = $1 AND j.status IN ('pending', 'preparing', 'running', 'completing', 'rolling_back')
                         LIMIT 1",
                    )
                    .await)
            }

            async fn delete_environment(&self, id: deploy_core::EnvironmentId, now: deploy_core::Timestamp) -> Result<(), StoreError> {
                let mut tx = self.begin_write().await?;
                let done = sqlx::query(
                    "UPDATE environments SET deleted_at = $2, name = name || '~' || $3, version = version + 1
                     WHERE id = $1 AND deleted_at IS NULL
                       AND NOT EXISTS (SELECT 1 FROM jobs
                                       WHERE environment_id = $1
                                         AND status IN ('pending', 'preparing', 'running', 'completing', 'rolling_back'))",
                )
                .bind_id(id)
                .bind(model::millis(now)?)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("delete an environment"))?;
                if done.rows_affected() == 1 {
                    sqlx::query(
                        "UPDATE targets SET deleted_at = $2, name = name || '~' || id, version = version + 1
                         WHERE environment_id = $1 AND deleted_at IS NULL",
                    )
                    .bind_id(id)
                    .bind(model::millis(now)?)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db("delete an environment's targets"))?;
                    return tx.commit().await.map_err(StoreError::db("commit an environment's deletion"));
                }
                drop(tx);
                Err(self
                    .retirement_refused(
                        "environment",
                        id,
                        "SELECT id FROM jobs WHERE environment_id = $1
                           AND status IN ('pending', 'preparing', 'running', 'completing', 'rolling_back') LIMIT 1",
                    )
                    .await)
            }

            async fn archive_release(&self, id: deploy_core::ReleaseId, now: deploy_core::Timestamp) -> Result<deploy_core::Release, StoreError> {
                let done = sqlx::query("UPDATE releases SET archived_at = COALESCE(archived_at, $2) WHERE id = $1")
                    .bind_id(id)
                    .bind(model::millis(now)?)
                    .execute(&self.writer)
                    .await
                    .map_err(StoreError::db("archive a release"))?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound { entity: "release", id: id.to_string() });
                }
                self.get_release(id).await
            }

            async fn put_release(&self, release: &deploy_core::Release) -> Result<(), StoreError> {
                let mut tx = self.begin_write().await?;
                let inserted = sqlx::query("INSERT INTO releases (id, name, created_at, template) VALUES ($1, $2, $3, $4)")
                    .bind_id(release.id)
                    .bind(release.name.as_str().to_owned())
                    .bind(model::millis(release.created_at)?)
                    .bind(release.template.as_ref().map(|t| t.content.clone()))
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db("insert a release"));
                match inserted {
                    Err(e) if e.is_unique_violation() => {
                        drop(tx);
                        let name = release.name.as_str();
                        let holder = sqlx::query("SELECT id FROM releases WHERE name = $1").bind(name.to_owned());
                        return Err(self.name_clash(holder, "release", name, release.id.to_string()).await);
                    }
                    other => other?,
                };
                for (position, c) in release.components.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO release_components (release_id, position, component_id, name, image, digest)
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind_id(release.id)
                    .bind(model::int("release_components.position", position as u64)?)
                    .bind_id(c.id)
                    .bind(c.name.as_str().to_owned())
                    .bind(c.image.to_string())
                    .bind(c.digest().as_str().to_owned())
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db("insert a release component"))?;
                }
                tx.commit().await.map_err(StoreError::db("commit a release"))
            }

            async fn list_releases(
                &self,
                before: Option<deploy_core::ReleaseId>,
                limit: u32,
            ) -> Result<Vec<deploy_core::Release>, StoreError> {
                let ids: Vec<deploy_core::ReleaseId> = sqlx::query(
                    "SELECT id FROM releases WHERE ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
                )
                .bind_opt_id(before)
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await
                .map_err(StoreError::db("list releases"))?
                .iter()
                .map(|r| model::typed("releases.id", r.uuid("id")?))
                .collect::<Result<_, StoreError>>()?;
                let mut releases = Vec::with_capacity(ids.len());
                for id in ids {
                    releases.push(self.get_release(id).await?);
                }
                Ok(releases)
            }

            async fn find_release_by_name(&self, name: &str) -> Result<Option<deploy_core::Release>, StoreError> {
                let id = sqlx::query("SELECT id FROM releases WHERE name = $1")
                    .bind(name.to_owned())
                    .fetch_optional(&self.reader)
                    .await
                    .map_err(StoreError::db("find a release by name"))?
                    .map(|r| model::typed("releases.id", r.uuid("id")?))
                    .transpose()?;
                match id {
                    Some(id) => Ok(Some(self.get_release(id).await?)),
                    None => Ok(None),
                }
            }

            async fn get_release(&self, id: deploy_core::ReleaseId) -> Result<deploy_core::Release, StoreError> {
                let mut conn = self.read_conn().await?;
                let row = sqlx::query("SELECT * FROM releases WHERE id = $1")
                    .bind_id(id)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(StoreError::db("load a release"))?
                    .ok_or_else(|| StoreError::NotFound { entity: "release", id: id.to_string() })?;
                let components = sqlx::query("SELECT * FROM release_components WHERE release_id = $1 ORDER BY position")
                    .bind_id(id)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(StoreError::db("load release components"))?
                    .iter()
                    .map(rows::component)
                    .collect::<Result<Vec<_>, _>>()?;
                let name = row.string("name")?;
                let template = row.opt_string("template")?.map(deploy_core::ServiceTemplate::new);
                let archived_at = row
                    .opt_i64("archived_at")?
                    .map(|t| model::timestamp("releases.archived_at", t))
                    .transpose()?;
                deploy_core::Release::new(
                    id,
                    model::parse("releases.name", &name, deploy_core::Name::parse)?,
                    components,
                    model::timestamp("releases.created_at", row.i64("created_at")?)?,
                )
                .map(|r| deploy_core::Release {
                    archived_at,
                    ..r.with_template(template)
                })
                .map_err(|e| StoreError::corrupt("releases.id", id.to_string())(e.to_string()))
            }

            async fn put_promotion(&self, p: &deploy_core::Promotion) -> Result<(), StoreError> {
                let query = sqlx::query(
                    "INSERT INTO promotions (id, release_id, environment_id, status, requested_by, decided_by, requested_at,
                                             decided_at, requested_by_token, approvals, rejection_reason, version)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind_id(p.id)
                .bind_id(p.release_id)
                .bind_id(p.environment_id)
                .bind(p.status.as_str())
                .bind(p.requested_by.clone())
                .bind(p.decided_by.clone())
                .bind(model::millis(p.requested_at)?)
                .bind(model::opt_millis(p.decided_at)?)
                .bind(p.requested_by_token.map(|t| t.to_string()))
                .bind(model::to_json("promotions.approvals", &p.approvals)?)
                .bind(p.rejection_reason.clone())
                .bind(model::int("promotions.version", p.version)?);
                self.insert_one(query, "promotion", p.id.to_string()).await
            }

            async fn save_promotion(&self, p: &deploy_core::Promotion) -> Result<deploy_core::Promotion, StoreError> {
                let mut next = p.clone();
                next.version = p.version + 1;
                let done = sqlx::query(
                    "UPDATE promotions SET status = $2, decided_by = $3, decided_at = $4, approvals = $5,
                                           rejection_reason = $6, version = $7
                     WHERE id = $1 AND version = $8",
                )
                .bind_id(p.id)
                .bind(p.status.as_str())
                .bind(p.decided_by.clone())
                .bind(model::opt_millis(p.decided_at)?)
                .bind(model::to_json("promotions.approvals", &p.approvals)?)
                .bind(p.rejection_reason.clone())
                .bind(model::int("promotions.version", next.version)?)
                .bind(model::int("promotions.version", p.version)?)
                .execute(&self.writer)
                .await
                .map_err(StoreError::db("save a promotion"))?;
                if done.rows_affected() == 0 {
                    let stored = self.get_promotion(p.id).await?;
                    return Err(StoreError::Conflict {
                        entity: "promotion",
                        id: p.id.to_string(),
                        expected: p.version,
                        found: Some(stored.version),
                    });
                }
                Ok(next)
            }

            async fn list_promotions(
                &self,
                environment: Option<deploy_core::EnvironmentId>,
                status: Option<deploy_core::PromotionStatus>,
                before: Option<deploy_core::PromotionId>,
                limit: u32,
            ) -> Result<Vec<deploy_core::Promotion>, StoreError> {
                let query = sqlx::query(
                    "SELECT * FROM promotions
                     WHERE ($1 IS NULL OR environment_id = $1)
                       AND ($2 IS NULL OR status = $2)
                       AND ($3 IS NULL OR id < $3)
                     ORDER BY id DESC LIMIT $4",
                )
                .bind_opt_id(environment)
                .bind(status.map(|s| s.as_str().to_owned()))
                .bind_opt_id(before)
                .bind(i64::from(limit));
                self.read_all(query, "list promotions", rows::promotion).await
            }

            async fn release_completed_in(
                &self,
                release: deploy_core::ReleaseId,
                environment: deploy_core::EnvironmentId,
            ) -> Result<bool, StoreError> {
                let found = sqlx::query(
                    "SELECT id FROM jobs WHERE release_id = $1 AND environment_id = $2 AND status = 'completed' LIMIT 1",
                )
                .bind_id(release)
                .bind_id(environment)
                .fetch_optional(&self.reader)
                .await
                .map_err(StoreError::db("look up a completed job of a release"))?;
                Ok(found.is_some())
            }

            async fn append_audit(&self, r: &crate::model::AuditRecord) -> Result<u64, StoreError> {
                let row = sqlx::query(
                    "INSERT INTO audit_log (at, actor_kind, actor_id, actor_name, method, route, path, entity_id,
                                            status, remote, before, after)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING seq",
                )
                .bind(model::millis(r.at)?)
                .bind(r.actor_kind.as_str())
                .bind(r.actor_id.clone())
                .bind(r.actor_name.clone())
                .bind(r.method.clone())
                .bind(r.route.clone())
                .bind(r.path.clone())
                .bind(r.entity_id.clone())
                .bind(i64::from(r.status))
                .bind(r.remote.clone())
                .bind(r.before.clone())
                .bind(r.after.clone())
                .fetch_one(&self.writer)
                .await
                .map_err(StoreError::db("append to the audit log"))?;
                model::uint("audit_log.seq", row.i64("seq")?)
            }

            async fn list_audit(
                &self,
                filter: &crate::model::AuditFilter,
                limit: u32,
            ) -> Result<Vec<crate::model::AuditRecord>, StoreError> {
                let before = filter.before.map(|b| model::int("before", b)).transpose()?;
                let query = sqlx::query(
                    "SELECT * FROM audit_log
                     WHERE ($1 IS NULL OR actor_name = $1)
                       AND ($2 IS NULL OR entity_id = $2)
                       AND ($3 IS NULL OR seq < $3)
                     ORDER BY seq DESC LIMIT $4",
                )
                .bind(filter.actor.clone())
                .bind(filter.entity.clone())
                .bind(before)
                .bind(i64::from(limit));
                self.read_all(query, "list the audit log", rows::audit).await
            }

            async fn get_promotion(&self, id: deploy_core::PromotionId) -> Result<deploy_core::Promotion, StoreError> {
                let query = sqlx::query("SELECT * FROM promotions WHERE id = $1").bind_id(id);
                self.read_one(query, "promotion", id.to_string(), rows::promotion).await
            }

            async fn create_job(&self, job: &deploy_core::DeploymentJob) -> Result<Created<deploy_core::DeploymentJob>, StoreError> {
                let key = job.idempotency_key.as_str();
                {
                    let mut conn = self.read_conn().await?;
                    if let Some(existing) = job_by_key(&mut conn, key).await? {
                        return Ok(Created { value: load_job(&mut conn, existing).await?, created: false });
                    }
                }
                let mut tx = self.begin_write().await?;
                match insert_new_job(&mut tx, job).await {
                    Ok(()) => {
                        let value = load_job(&mut tx, job.id).await?;
                        if let Some(notify) = Self::NOTIFY_NEW_JOB {
                            sqlx::query(notify)
                                .execute(&mut *tx)
                                .await
                                .map_err(StoreError::db("announce a new job"))?;
                        }
                        tx.commit().await.map_err(StoreError::db("commit a new job"))?;
                        Ok(Created { value, created: true })
                    }
                    Err(e) if e.is_unique_violation() => {
                        tx.rollback().await.map_err(StoreError::db("roll back a job insert"))?;
                        let mut conn = self.read_conn().await?;
                        if let Some(existing) = job_by_key(&mut conn, key).await? {
                            return Ok(Created { value: load_job(&mut conn, existing).await?, created: false });
                        }
                        Err(insert_clash(&mut conn, job).await)
                    }
                    Err(e) => Err(e),
                }
            }

            async fn get_job(&self, id: deploy_core::JobId) -> Result<deploy_core::DeploymentJob, StoreError> {
                load_job(&mut *self.read_conn().await?, id).await
            }

            async fn list_jobs(
                &self,
                environment: Option<deploy_core::EnvironmentId>,
                status: Option<deploy_core::JobStatus>,
                before: Option<deploy_core::JobId>,
                limit: u32,
            ) -> Result<Vec<deploy_core::DeploymentJob>, StoreError> {
                let mut conn = self.read_conn().await?;
                let ids: Vec<deploy_core::JobId> = sqlx::query(
                    "SELECT id FROM jobs
                     WHERE ($1 IS NULL OR environment_id = $1)
                       AND ($2 IS NULL OR status = $2)
                       AND ($3 IS NULL OR id < $3)
                     ORDER BY id DESC LIMIT $4",
                )
                .bind_opt_id(environment)
                .bind(status.map(|s| s.as_str().to_owned()))
                .bind_opt_id(before)
                .bind(i64::from(limit))
                .fetch_all(&mut *conn)
                .await
                .map_err(StoreError::db("list jobs"))?
                .iter()
                .map(|r| model::typed("jobs.id", r.uuid("id")?))
                .collect::<Result<_, StoreError>>()?;
                let mut jobs = Vec::with_capacity(ids.len());
                for id in ids {
                    jobs.push(load_job(&mut *conn, id).await?);
                }
                Ok(jobs)
            }

            async fn count_jobs_by_status(&self) -> Result<Vec<(deploy_core::JobStatus, u64)>, StoreError> {
                let mut conn = self.read_conn().await?;
                sqlx::query("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status ORDER BY status")
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(StoreError::db("count jobs by status"))?
                    .iter()
                    .map(|r| {
                        let status = model::job_status(&r.string("status")?)?;
                        let n = r.i64("n")?;
                        let n = u64::try_from(n).map_err(|e| {
                            StoreError::corrupt("jobs count", n.to_string())(e.to_string())
                        })?;
                        Ok((status, n))
                    })
                    .collect()
            }

            async fn get_task(&self, id: deploy_core::TaskId) -> Result<deploy_core::DeploymentTask, StoreError> {
                load_task(&mut *self.read_conn().await?, id).await
            }

            async fn apply_job_event(
                &self,
                id: deploy_core::JobId,
                expected_version: u64,
                event: deploy_core::JobEvent,
                now: deploy_core::Timestamp,
                cause: &str,
            ) -> Result<deploy_core::DeploymentJob, StoreError> {
                let mut tx = self.begin_write().await?;
                let job = transition_job(&mut tx, id, expected_version, event, now, cause).await?;
                tx.commit().await.map_err(StoreError::db("commit a job transition"))?;
                Ok(job)
            }

            async fn start_rollback(
                &self,
                id: deploy_core::JobId,
                expected_version: u64,
                rollback: &deploy_core::DeploymentJob,
                now: deploy_core::Timestamp,
                cause: &str,
            ) -> Result<(deploy_core::DeploymentJob, Created<deploy_core::DeploymentJob>), StoreError> {
                let key = rollback.idempotency_key.as_str();
                let mut tx = self.begin_write().await?;
                // A rollback job with this key already exists when an older deployd, which
                // created it before the transition, died in between: it is kept, and the
                // cause names it instead of the one planned now.
                let existing = job_by_key(&mut tx, key).await?;
                let cause = match existing {
                    Some(existing) => cause.replace(&rollback.id.to_string(), &existing.to_string()),
                    None => cause.to_owned(),
                };
                let job = transition_job(&mut tx, id, expected_version, deploy_core::JobEvent::RollbackStarted, now, &cause).await?;
                if let Some(existing) = existing {
                    let value = load_job(&mut tx, existing).await?;
                    tx.commit().await.map_err(StoreError::db("commit a rollback start"))?;
                    return Ok((job, Created { value, created: false }));
                }
                match insert_new_job(&mut tx, rollback).await {
                    Ok(()) => {
                        let value = load_job(&mut tx, rollback.id).await?;
                        tx.commit().await.map_err(StoreError::db("commit a rollback start"))?;
                        Ok((job, Created { value, created: true }))
                    }
                    // Another job holds the environment (started after the failure):
                    // nothing is written, and the error names that job.
                    Err(e) if e.is_unique_violation() => {
                        tx.rollback().await.map_err(StoreError::db("roll back a rollback start"))?;
                        let mut conn = self.read_conn().await?;
                        Err(insert_clash(&mut conn, rollback).await)
                    }
                    Err(e) => Err(e),
                }
            }

            async fn wait_for_new_jobs(&self, within: std::time::Duration) {
                self.wait_announced(within).await;
            }

            async fn apply_task_event(
                &self,
                id: deploy_core::TaskId,
                expected_version: u64,
                event: deploy_core::TaskEvent,
                now: deploy_core::Timestamp,
                cause: &str,
            ) -> Result<deploy_core::DeploymentTask, StoreError> {
                let request = crate::sql::TaskEventRequest { id, expected_version, event, now, cause: cause.to_owned(), record: None };
                self.commit_task_event(request).await
            }

            async fn finish_attempt(
                &self,
                id: deploy_core::TaskId,
                expected_version: u64,
                event: deploy_core::TaskEvent,
                now: deploy_core::Timestamp,
                cause: &str,
                record: &crate::model::AttemptRecord,
            ) -> Result<deploy_core::DeploymentTask, StoreError> {
                let request = crate::sql::TaskEventRequest { id, expected_version, event, now, cause: cause.to_owned(), record: Some(record.clone()) };
                self.commit_task_event(request).await
            }

            async fn save_task(
                &self,
                task: &deploy_core::DeploymentTask,
                now: deploy_core::Timestamp,
            ) -> Result<deploy_core::DeploymentTask, StoreError> {
                let mut tx = self.begin_write().await?;
                let stored = load_task(&mut tx, task.id).await?;
                if stored.version != task.version {
                    return Err(StoreError::Conflict {
                        entity: "task",
                        id: task.id.to_string(),
                        expected: task.version,
                        found: Some(stored.version),
                    });
                }
                let mut next = stored;
                next.agent_id = task.agent_id;
                next.logs.clone_from(&task.logs);
                next.previous_digest.clone_from(&task.previous_digest);
                next.error.clone_from(&task.error);
                next.version += 1;
                next.updated_at = now;
                write_task(&mut tx, &next, task.version).await?;
                tx.commit().await.map_err(StoreError::db("commit a task update"))?;
                Ok(next)
            }

            async fn job_events(
                &self,
                job: deploy_core::JobId,
                after_seq: u64,
                limit: u32,
            ) -> Result<Vec<JobEventRecord>, StoreError> {
                self.read_after("SELECT * FROM job_events WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3", job, after_seq, limit, "read job events", rows::job_event).await
            }

            async fn append_log(
                &self,
                task: deploy_core::TaskId,
                at: deploy_core::Timestamp,
                content: &str,
            ) -> Result<u64, StoreError> {
                if content.len() > model::MAX_LOG_CHUNK_BYTES {
                    return Err(StoreError::LogChunkTooLarge {
                        task: task.to_string(),
                        size: content.len(),
                        limit: model::MAX_LOG_CHUNK_BYTES,
                    });
                }
                self.append_log_routed(task, at, content).await
            }

            async fn read_log(
                &self,
                task: deploy_core::TaskId,
                after_seq: u64,
                limit: u32,
            ) -> Result<Vec<LogChunk>, StoreError> {
                self.read_after("SELECT * FROM task_log_chunks WHERE task_id = $1 AND seq > $2 ORDER BY seq LIMIT $3", task, after_seq, limit, "read a task log", rows::log_chunk).await
            }

            async fn previous_successful_job(
                &self,
                environment: deploy_core::EnvironmentId,
                release: deploy_core::ReleaseId,
            ) -> Result<Option<deploy_core::DeploymentJob>, StoreError> {
                let mut conn = self.read_conn().await?;
                let row = sqlx::query(
                    "SELECT id FROM jobs
                     WHERE environment_id = $1 AND status = 'completed' AND release_id <> $2
                     ORDER BY completed_at DESC, id DESC LIMIT 1",
                )
                .bind_id(environment)
                .bind_id(release)
                .fetch_optional(&mut *conn)
                .await
                .map_err(StoreError::db("find the previous successful job"))?;
                match row {
                    None => Ok(None),
                    Some(row) => Ok(Some(load_job(&mut conn, model::typed("jobs.id", row.uuid("id")?)?).await?)),
                }
            }

            async fn last_known_good(
                &self,
                environment: deploy_core::EnvironmentId,
            ) -> Result<Vec<LastKnownGood>, StoreError> {
                let query = sqlx::query(
                    "SELECT target_id, component_id, digest, job_id, completed_at FROM (
                       SELECT t.target_id, t.component_id, t.digest, t.job_id, j.completed_at,
                              ROW_NUMBER() OVER (PARTITION BY t.target_id, t.component_id
                                                 ORDER BY j.completed_at DESC, j.id DESC) AS rn
                       FROM tasks t JOIN jobs j ON j.id = t.job_id
                       WHERE j.environment_id = $1 AND j.status = 'completed' AND t.status = 'succeeded'
                     ) ranked
                     WHERE rn = 1
                     ORDER BY target_id, component_id",
                )
                .bind_id(environment);
                self.read_all(query, "find last-known-good digests", rows::last_known_good).await
            }

            async fn claim_jobs(
                &self,
                owner: &str,
                now: deploy_core::Timestamp,
                lease: std::time::Duration,
                limit: u32,
            ) -> Result<Vec<deploy_core::JobId>, StoreError> {
                sqlx::query(Self::CLAIM_SQL)
                    .bind(owner.to_owned())
                    .bind(model::millis(now.saturating_add(lease))?)
                    .bind(model::millis(now)?)
                    .bind(i64::from(limit))
                    .fetch_all(&self.writer)
                    .await
                    .map_err(StoreError::db("claim jobs"))?
                    .iter()
                    .map(|r| model::typed("jobs.id", r.uuid("id")?))
                    .collect()
            }

            async fn last_in_line(&self, environment: deploy_core::EnvironmentId) -> Result<Option<deploy_core::JobId>, StoreError> {
                let mut conn = self.read_conn().await?;
                let queued = sqlx::query(
                    "SELECT id FROM jobs WHERE environment_id = $1 AND status = 'pending' AND queued_behind IS NOT NULL
                     ORDER BY created_at DESC, id DESC LIMIT 1",
                )
                .bind_id(environment)
                .fetch_optional(&mut *conn)
                .await
                .map_err(StoreError::db("look up the queue of an environment"))?;
                if let Some(row) = queued {
                    return Ok(Some(model::typed("jobs.id", row.uuid("id")?)?));
                }
                if let Some(holder) = active_job(&mut conn, environment).await? {
                    return Ok(Some(holder));
                }
                // A failed job whose runner is not done (its wind-down or automatic
                // rollback is still to run) keeps the line closed too.
                let winding_down = sqlx::query(
                    "SELECT id FROM jobs WHERE environment_id = $1 AND status = 'failed' AND claimed_by IS NOT NULL
                     ORDER BY created_at DESC LIMIT 1",
                )
                .bind_id(environment)
                .fetch_optional(&mut *conn)
                .await
                .map_err(StoreError::db("look up a failed job still winding down"))?;
                winding_down.map(|r| model::typed("jobs.id", r.uuid("id")?)).transpose()
            }

            async fn dequeue_jobs(&self, now: deploy_core::Timestamp) -> Result<Vec<deploy_core::JobId>, StoreError> {
                // Per environment with a queue and no lock holder, the oldest queued job.
                // Two callers racing for one environment: the lock's unique index lets
                // one through; the other's statement fails and lets nobody in this round.
                let result = sqlx::query(
                    "UPDATE jobs SET queued_behind = NULL, updated_at = $1
                     WHERE id IN (
                         SELECT q.id FROM jobs q
                         WHERE q.queued_behind IS NOT NULL AND q.status = 'pending'
                           AND NOT EXISTS (SELECT 1 FROM jobs h
                                           WHERE h.environment_id = q.environment_id AND h.queued_behind IS NULL
                                             AND (h.status IN ('pending', 'preparing', 'running', 'completing')
                                                  OR (h.status = 'failed' AND h.claimed_by IS NOT NULL)))
                           AND q.id = (SELECT o.id FROM jobs o
                                       WHERE o.environment_id = q.environment_id AND o.status = 'pending'
                                         AND o.queued_behind IS NOT NULL
                                       ORDER BY o.created_at, o.id LIMIT 1))
                     RETURNING id",
                )
                .bind(model::millis(now)?)
                .fetch_all(&self.writer)
                .await;
                match result {
                    Ok(rows) => rows.iter().map(|r| model::typed("jobs.id", r.uuid("id")?)).collect(),
                    Err(e) => {
                        let e = StoreError::db("let a queued job in")(e);
                        if e.is_unique_violation() { Ok(Vec::new()) } else { Err(e) }
                    }
                }
            }

            async fn renew_lease(
                &self,
                job: deploy_core::JobId,
                owner: &str,
                now: deploy_core::Timestamp,
                lease: std::time::Duration,
            ) -> Result<deploy_core::Timestamp, StoreError> {
                let until = now.saturating_add(lease);
                let done = sqlx::query("UPDATE jobs SET lease_until = $1 WHERE id = $2 AND claimed_by = $3")
                    .bind(model::millis(until)?)
                    .bind_id(job)
                    .bind(owner.to_owned())
                    .execute(&self.writer)
                    .await
                    .map_err(StoreError::db("renew a lease"))?;
                if done.rows_affected() == 0 {
                    return Err(self.lease_lost(job, owner).await);
                }
                Ok(until)
            }

            async fn release_lease(&self, job: deploy_core::JobId, owner: &str) -> Result<(), StoreError> {
                let sql = "UPDATE jobs SET claimed_by = NULL, lease_until = NULL WHERE id = $1 AND claimed_by = $2";
                self.update_held_lease(sql, job, owner, "release a lease").await
            }

            async fn hand_back_lease(&self, job: deploy_core::JobId, owner: &str) -> Result<(), StoreError> {
                // The same rule as `release_leases_of`, for one job.
                let sql = "UPDATE jobs SET claimed_by = CASE WHEN status = 'failed' THEN claimed_by END,
                                           lease_until = CASE WHEN status = 'failed' THEN 0 END
                           WHERE id = $1 AND claimed_by = $2";
                self.update_held_lease(sql, job, owner, "hand back a lease").await
            }

            async fn release_leases_of(&self, owner: &str) -> Result<Vec<deploy_core::JobId>, StoreError> {
                // A failed job keeps its holder with an ended lease (see `claim_sql`), so
                // that it stays claimable: its runner died before it was done with it.
                sqlx::query(
                    "UPDATE jobs SET claimed_by = CASE WHEN status = 'failed' THEN claimed_by END,
                                     lease_until = CASE WHEN status = 'failed' THEN 0 END
                     WHERE claimed_by = $1
                       AND status IN ('pending', 'preparing', 'running', 'completing', 'rolling_back', 'failed')
                     RETURNING id",
                )
                .bind(owner.to_owned())
                .fetch_all(&self.writer)
                .await
                .map_err(StoreError::db("release an owner's leases"))?
                .iter()
                .map(|r| model::typed("jobs.id", r.uuid("id")?))
                .collect()
            }

            async fn put_agent(&self, agent: &AgentRecord) -> Result<(), StoreError> {
                let query = sqlx::query(
                    "INSERT INTO agents (id, name, labels, capabilities, agent_version, credential_hash,
                       last_seen_at, created_at, revoked_at, bootstrap_token_id, labels_version)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind_id(agent.id)
                .bind(agent.name.clone())
                .bind(model::to_json("agents.labels", &agent.labels)?)
                .bind(model::to_json("agents.capabilities", &agent.capabilities)?)
                .bind(agent.agent_version.clone())
                .bind(agent.credential_hash.as_ref().map(|h| h.as_str().to_owned()))
                .bind(model::opt_millis(agent.last_seen_at)?)
                .bind(model::millis(agent.created_at)?)
                .bind(model::opt_millis(agent.revoked_at)?)
                .bind_opt_id(agent.bootstrap_token_id)
                .bind(model::int("agents.labels_version", agent.labels_version)?);
                let name = agent.name.as_str();
                match self.insert_one(query, "agent", agent.id.to_string()).await {
                    Err(StoreError::AlreadyExists { entity, id }) => {
                        let holder = sqlx::query("SELECT id FROM agents WHERE name = $1").bind(name.to_owned());
                        Err(self.name_clash(holder, entity, name, id).await)
                    }
                    other => other,
                }
            }

            async fn get_agent(&self, id: deploy_core::AgentId) -> Result<AgentRecord, StoreError> {
                let query = sqlx::query("SELECT * FROM agents WHERE id = $1").bind_id(id);
                self.read_one(query, "agent", id.to_string(), rows::agent).await
            }

            async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
                let query = sqlx::query("SELECT * FROM agents ORDER BY created_at, id");
                self.read_all(query, "list agents", rows::agent).await
            }

            async fn find_agent_by_credential(&self, hash: &deploy_core::Digest) -> Result<Option<AgentRecord>, StoreError> {
                sqlx::query("SELECT * FROM agents WHERE credential_hash = $1")
                    .bind(hash.as_str().to_owned())
                    .fetch_optional(&self.writer)
                    .await
                    .map_err(StoreError::db("look up an agent by credential"))?
                    .as_ref()
                    .map(rows::agent)
                    .transpose()
            }

            async fn find_agent_by_bootstrap_token(&self, token: uuid::Uuid) -> Result<Option<AgentRecord>, StoreError> {
                // From the writer: a retry may follow the registration it repeats at once.
                sqlx::query("SELECT * FROM agents WHERE bootstrap_token_id = $1")
                    .bind_id(token)
                    .fetch_optional(&self.writer)
                    .await
                    .map_err(StoreError::db("look up an agent by bootstrap token"))?
                    .as_ref()
                    .map(rows::agent)
                    .transpose()
            }

            async fn set_agent_credential(&self, id: deploy_core::AgentId, hash: &deploy_core::Digest) -> Result<(), StoreError> {
                let done = match sqlx::query("UPDATE agents SET credential_hash = $1 WHERE id = $2 AND revoked_at IS NULL")
                    .bind(hash.as_str().to_owned())
                    .bind_id(id)
                    .execute(&self.writer)
                    .await
                    .map_err(StoreError::db("rotate an agent credential"))
                {
                    // Another agent holds this credential (a proposed one can collide only by
                    // mistake or malice): refused, nothing changed.
                    Err(e) if e.is_unique_violation() => {
                        return Err(StoreError::AlreadyExists { entity: "agent credential", id: id.to_string() });
                    }
                    other => other?,
                };
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound { entity: "active agent", id: id.to_string() });
                }
                Ok(())
            }

            async fn revoke_agent(&self, id: deploy_core::AgentId, now: deploy_core::Timestamp) -> Result<AgentRecord, StoreError> {
                sqlx::query("UPDATE agents SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
                    .bind(model::millis(now)?)
                    .bind_id(id)
                    .execute(&self.writer)
                    .await
                    .map_err(StoreError::db("revoke an agent"))?;
                // Read from the writer: the reader may not see the update yet.
                sqlx::query("SELECT * FROM agents WHERE id = $1")
                    .bind_id(id)
                    .fetch_optional(&self.writer)
                    .await
                    .map_err(StoreError::db("load an agent"))?
                    .as_ref()
                    .map(rows::agent)
                    .transpose()?
                    .ok_or(StoreError::NotFound { entity: "agent", id: id.to_string() })
            }

            async fn set_agent_labels(
                &self,
                id: deploy_core::AgentId,
                labels: &deploy_core::Labels,
                expected_version: u64,
            ) -> Result<AgentRecord, StoreError> {
                let updated = sqlx::query(
                    "UPDATE agents SET labels = $1, labels_version = labels_version + 1
                     WHERE id = $2 AND labels_version = $3
                     RETURNING *",
                )
                .bind(model::to_json("agents.labels", labels)?)
                .bind_id(id)
                .bind(model::int("agents.labels_version", expected_version)?)
                .fetch_optional(&self.writer)
                .await
                .map_err(StoreError::db("change an agent's labels"))?;
                if let Some(row) = updated {
                    return rows::agent(&row);
                }
                // Nothing matched: say whether the agent is unknown or was changed meanwhile.
                let found = sqlx::query("SELECT * FROM agents WHERE id = $1")
                    .bind_id(id)
                    .fetch_optional(&self.writer)
                    .await
                    .map_err(StoreError::db("load an agent"))?
                    .as_ref()
                    .map(rows::agent)
                    .transpose()?
                    .ok_or(StoreError::NotFound { entity: "agent", id: id.to_string() })?;
                Err(StoreError::Conflict {
                    entity: "agent labels",
                    id: id.to_string(),
                    expected: expected_version,
                    found: Some(found.labels_version),
                })
            }

            async fn put_bootstrap_token(
                &self,
                token: &ApiTokenRecord,
                binding: &crate::model::BootstrapBinding,
            ) -> Result<(), StoreError> {
                let mut tx = self.begin_write().await?;
                let inserted = sqlx::query(
                    "INSERT INTO api_tokens (id, name, token_hash, scopes, created_at, revoked_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind_id(token.id)
                .bind(token.name.clone())
                .bind(token.token_hash.as_str().to_owned())
                .bind(model::to_json("api_tokens.scopes", &token.scopes)?)
                .bind(model::millis(token.created_at)?)
                .bind(model::opt_millis(token.revoked_at)?)
                .bind(model::opt_millis(token.expires_at)?)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("insert a bootstrap token"));
                match inserted {
                    Err(e) if e.is_unique_violation() => {
                        return Err(StoreError::AlreadyExists { entity: "api token", id: token.name.clone() });
                    }
                    other => other?,
                };
                sqlx::query(
                    "INSERT INTO agent_bootstrap_bindings (token_id, agent_name, labels, capabilities) VALUES ($1, $2, $3, $4)",
                )
                .bind_id(binding.token_id)
                .bind(binding.agent_name.clone())
                .bind(model::to_json("agent_bootstrap_bindings.labels", &binding.labels)?)
                .bind(model::to_json("agent_bootstrap_bindings.capabilities", &binding.capabilities)?)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("insert a bootstrap token's binding"))?;
                tx.commit().await.map_err(StoreError::db("commit a bootstrap token"))
            }

            async fn bootstrap_binding(&self, token_id: uuid::Uuid) -> Result<Option<crate::model::BootstrapBinding>, StoreError> {
                // From the writer: a registration may follow the token's creation at once.
                sqlx::query("SELECT * FROM agent_bootstrap_bindings WHERE token_id = $1")
                    .bind_id(token_id)
                    .fetch_optional(&self.writer)
                    .await
                    .map_err(StoreError::db("look up a bootstrap token's binding"))?
                    .as_ref()
                    .map(rows::bootstrap_binding)
                    .transpose()
            }

            async fn list_bootstrap_bindings(&self) -> Result<Vec<crate::model::BootstrapBinding>, StoreError> {
                let query = sqlx::query("SELECT * FROM agent_bootstrap_bindings");
                self.read_all(query, "list bootstrap token bindings", rows::bootstrap_binding).await
            }

            async fn touch_agent(&self, id: deploy_core::AgentId, now: deploy_core::Timestamp) -> Result<(), StoreError> {
                sqlx::query("UPDATE agents SET last_seen_at = $1 WHERE id = $2")
                    .bind(model::millis(now)?)
                    .bind_id(id)
                    .execute(&self.writer)
                    .await
                    .map_err(StoreError::db("record that an agent was seen"))?;
                Ok(())
            }

            async fn spend_bootstrap_token(&self, hash: &deploy_core::Digest, now: deploy_core::Timestamp) -> Result<Option<ApiTokenRecord>, StoreError> {
                sqlx::query(
                    "UPDATE api_tokens SET revoked_at = $1
                     WHERE token_hash = $2 AND scopes = $3 AND revoked_at IS NULL
                       AND (expires_at IS NULL OR expires_at > $1)
                     RETURNING *",
                )
                .bind(model::millis(now)?)
                .bind(hash.as_str().to_owned())
                .bind(model::to_json("api_tokens.scopes", &[crate::model::AGENT_BOOTSTRAP_SCOPE])?)
                .fetch_optional(&self.writer)
                .await
                .map_err(StoreError::db("spend an agent bootstrap token"))?
                .as_ref()
                .map(rows::api_token)
                .transpose()
            }

            async fn unspend_bootstrap_token(&self, id: uuid::Uuid, spent_at: deploy_core::Timestamp) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "UPDATE api_tokens SET revoked_at = NULL
                     WHERE id = $1 AND scopes = $2 AND revoked_at = $3",
                )
                .bind_id(id)
                .bind(model::to_json("api_tokens.scopes", &[crate::model::AGENT_BOOTSTRAP_SCOPE])?)
                .bind(model::millis(spent_at)?)
                .execute(&self.writer)
                .await
                .map_err(StoreError::db("unspend an agent bootstrap token"))?;
                Ok(done.rows_affected() > 0)
            }

            async fn put_api_token(&self, token: &ApiTokenRecord) -> Result<(), StoreError> {
                let query = sqlx::query(
                    "INSERT INTO api_tokens (id, name, token_hash, scopes, created_at, revoked_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind_id(token.id)
                .bind(token.name.clone())
                .bind(token.token_hash.as_str().to_owned())
                .bind(model::to_json("api_tokens.scopes", &token.scopes)?)
                .bind(model::millis(token.created_at)?)
                .bind(model::opt_millis(token.revoked_at)?)
                .bind(model::opt_millis(token.expires_at)?);
                self.insert_one(query, "api token", token.name.clone()).await
            }

            async fn find_api_token(&self, hash: &deploy_core::Digest) -> Result<Option<ApiTokenRecord>, StoreError> {
                sqlx::query("SELECT * FROM api_tokens WHERE token_hash = $1")
                    .bind(hash.as_str().to_owned())
                    .fetch_optional(&self.reader)
                    .await
                    .map_err(StoreError::db("look up an api token"))?
                    .as_ref()
                    .map(rows::api_token)
                    .transpose()
            }

            async fn list_api_tokens(&self) -> Result<Vec<ApiTokenRecord>, StoreError> {
                let query = sqlx::query("SELECT * FROM api_tokens ORDER BY created_at, id");
                self.read_all(query, "list api tokens", rows::api_token).await
            }

            async fn revoke_api_token(&self, id: uuid::Uuid, now: deploy_core::Timestamp) -> Result<ApiTokenRecord, StoreError> {
                sqlx::query("UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
                    .bind(model::millis(now)?)
                    .bind_id(id)
                    .execute(&self.writer)
                    .await
                    .map_err(StoreError::db("revoke an api token"))?;
                // Read from the writer: the reader may not see the update yet.
                sqlx::query("SELECT * FROM api_tokens WHERE id = $1")
                    .bind_id(id)
                    .fetch_optional(&self.writer)
                    .await
                    .map_err(StoreError::db("load an api token"))?
                    .as_ref()
                    .map(rows::api_token)
                    .transpose()?
                    .ok_or(StoreError::NotFound { entity: "api token", id: id.to_string() })
            }

            async fn touch_api_token(&self, id: uuid::Uuid, now: deploy_core::Timestamp) -> Result<(), StoreError> {
                sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
                    .bind(model::millis(now)?)
                    .bind_id(id)
                    .execute(&self.writer)
                    .await
                    .map_err(StoreError::db("record the use of an api token"))?;
                Ok(())
            }

            async fn read_job_log(
                &self,
                job: deploy_core::JobId,
                after: u64,
                limit: u32,
            ) -> Result<Vec<(u64, LogChunk)>, StoreError> {
                self.read_after(
                    "SELECT * FROM task_log_chunks WHERE job_id = $1 AND job_cursor > $2 ORDER BY job_cursor LIMIT $3",
                    job,
                    after,
                    limit,
                    "read a job's log",
                    |r| Ok((model::uint("task_log_chunks.job_cursor", r.i64("job_cursor")?)?, rows::log_chunk(r)?)),
                )
                .await
            }

            async fn job_status(&self, id: deploy_core::JobId) -> Result<deploy_core::JobStatus, StoreError> {
                let query = sqlx::query("SELECT status FROM jobs WHERE id = $1").bind_id(id);
                self.read_one(query, "job", id.to_string(), |r| model::job_status(&r.string("status")?)).await
            }
        }

        impl $store {
            /// Runs `sql` (`$1` the job, `$2` the owner, matching only while `owner`
            /// holds the lease); `LeaseLost` when it matched nothing.
            async fn update_held_lease(
                &self,
                sql: &'static str,
                job: deploy_core::JobId,
                owner: &str,
                action: &'static str,
            ) -> Result<(), StoreError> {
                let done = sqlx::query(sql)
                    .bind_id(job)
                    .bind(owner.to_owned())
                    .execute(&self.writer)
                    .await
                    .map_err(StoreError::db(action))?;
                if done.rows_affected() == 0 {
                    return Err(self.lease_lost(job, owner).await);
                }
                Ok(())
            }

            /// The `LeaseLost` error for `owner`, naming the current holder.
            async fn lease_lost(&self, job: deploy_core::JobId, owner: &str) -> StoreError {
                let holder = sqlx::query("SELECT claimed_by FROM jobs WHERE id = $1")
                    .bind_id(job)
                    .fetch_optional(&self.reader)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|r| r.opt_string("claimed_by").ok().flatten());
                StoreError::LeaseLost { job, owner: owner.to_owned(), holder }
            }
        }
    };
}

pub(crate) use sql_store;
