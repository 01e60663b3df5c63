//! The SQL of jobs and their events: loading and inserting a job with its tasks and artifacts, compare-and-swap transitions, rollbacks.

/// Expands, for `$store` over `$db`, the job statements other areas share (`load_job`,
/// `transition_job`, `insert_new_job`, ...) and the `Store` methods on jobs and job
/// events (module `jobs_sql`).
macro_rules! jobs_sql {
    ($store:ty, $db:ty) => {
        /// Loads a job row with its tasks and artifacts.
        async fn load_job(
            conn: &mut Conn,
            id: deploy_core::JobId,
        ) -> Result<deploy_core::DeploymentJob, StoreError> {
            let row = sqlx::query("SELECT * FROM jobs WHERE id = $1")
                .bind_id(id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(StoreError::db("load a job"))?
                .ok_or_else(|| StoreError::NotFound {
                    entity: "job",
                    id: id.to_string(),
                })?;
            let mut job = rows::job(&row)?;
            job.tasks = sqlx::query("SELECT * FROM tasks WHERE job_id = $1 ORDER BY position")
                .bind_id(id)
                .fetch_all(&mut *conn)
                .await
                .map_err(StoreError::db("load the tasks of a job"))?
                .iter()
                .map(rows::task)
                .collect::<Result<_, _>>()?;
            job.artifacts =
                sqlx::query("SELECT * FROM artifacts WHERE job_id = $1 ORDER BY position")
                    .bind_id(id)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(StoreError::db("load the artifacts of a job"))?
                    .iter()
                    .map(rows::artifact)
                    .collect::<Result<_, _>>()?;
            Ok(job)
        }

        async fn job_by_key(
            conn: &mut Conn,
            key: &str,
        ) -> Result<Option<deploy_core::JobId>, StoreError> {
            let row = sqlx::query("SELECT id FROM jobs WHERE idempotency_key = $1")
                .bind(key.to_owned())
                .fetch_optional(&mut *conn)
                .await
                .map_err(StoreError::db("look up a job by idempotency key"))?;
            row.as_ref().map(rows::job_id).transpose()
        }

        async fn active_job(
            conn: &mut Conn,
            environment: deploy_core::EnvironmentId,
        ) -> Result<Option<deploy_core::JobId>, StoreError> {
            let row = sqlx::query(
                "SELECT id FROM jobs
                 WHERE environment_id = $1
                   AND ((status IN ('pending', 'preparing', 'running', 'completing')
                         AND queued_behind IS NULL)
                        OR winding_down)",
            )
            .bind_id(environment)
            .fetch_optional(&mut *conn)
            .await
            .map_err(StoreError::db("look up the active job of an environment"))?;
            row.as_ref().map(rows::job_id).transpose()
        }

        async fn insert_job(
            conn: &mut Conn,
            job: &deploy_core::DeploymentJob,
        ) -> Result<(), StoreError> {
            sqlx::query(
                "INSERT INTO jobs (id, promotion_id, release_id, environment_id, strategy,
                   parallelism, failure_policy, status, started_at, completed_at,
                   rollback_of, previous_job_id, idempotency_key, failure_reason, version,
                   created_at, updated_at, queued_behind, winding_down)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                   $11, $12, $13, $14, $15, $16, $17, $18, $19)",
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
            .bind(job.winding_down)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::db("insert a job"))?;
            for (position, task) in job.tasks.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO tasks (id, job_id, position, target_id, component_id, digest,
                       status, agent_id, started_at, completed_at, logs, previous_digest,
                       error, attempt_number, max_attempts, last_failure_retryable, wave,
                       version, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                       $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
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
                    "INSERT INTO artifacts (id, job_id, position, target_id, kind, file_name,
                       content, size, sha256)
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

        #[expect(
            clippy::too_many_arguments,
            reason = "one column per argument of the event row"
        )]
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

        /// Wakes the other replicas' claim loops (PostgreSQL `NOTIFY`, sent at commit)
        /// for a job inserted in `conn`'s transaction; nothing on SQLite.
        async fn announce_new_job(conn: &mut Conn) -> Result<(), StoreError> {
            if let Some(notify) = <$store>::NOTIFY_NEW_JOB {
                sqlx::query(notify)
                    .execute(&mut *conn)
                    .await
                    .map_err(StoreError::db("announce a new job"))?;
            }
            Ok(())
        }

        /// Inserts a new job with its `create` event and the trace context it was
        /// created under, inside the caller's transaction.
        async fn insert_new_job(
            conn: &mut Conn,
            job: &deploy_core::DeploymentJob,
            traceparent: Option<&deploy_core::Traceparent>,
        ) -> Result<(), StoreError> {
            insert_job(conn, job).await?;
            // Retired since the job was planned: nothing is written (the caller's
            // transaction rolls back). Checked after the insert, in its transaction.
            let retired =
                sqlx::query("SELECT id FROM environments WHERE id = $1 AND deleted_at IS NOT NULL")
                    .bind_id(job.environment_id)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(StoreError::db("check the environment of a new job"))?;
            if retired.is_some() {
                return Err(StoreError::NotFound {
                    entity: "environment",
                    id: job.environment_id.to_string(),
                });
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
                return Err(StoreError::NotFound {
                    entity: "target",
                    id: row.uuid("id")?.to_string(),
                });
            }
            let cause = format!(
                "created with idempotency key `{}`",
                job.idempotency_key.as_str()
            );
            insert_event(
                conn,
                job.id,
                None,
                "create",
                "",
                job.status.as_str(),
                &cause,
                job.created_at,
            )
            .await?;
            match traceparent {
                Some(tp) => insert_trace_context(conn, job.id, tp).await,
                None => Ok(()),
            }
        }

        /// Why inserting `job` broke a unique index (its transaction rolled back): the
        /// environment is held by another job, or the id exists.
        async fn insert_clash(conn: &mut Conn, job: &deploy_core::DeploymentJob) -> StoreError {
            match active_job(conn, job.environment_id).await {
                Ok(holder) => crate::sql::decide::job_insert_clash(job, holder),
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
            let stored = load_job(conn, id).await?;
            let (job, from) =
                crate::sql::decide::apply_job_event(stored, expected_version, event, now, cause)?;
            let to = job.status;
            let done = sqlx::query(
                "UPDATE jobs SET status = $1, started_at = $2, completed_at = $3,
                   failure_reason = $4, version = $5, updated_at = $6, winding_down = $7
                 WHERE id = $8 AND version = $9",
            )
            .bind(to.as_str())
            .bind(model::opt_millis(job.started_at)?)
            .bind(model::opt_millis(job.completed_at)?)
            .bind(job.failure_reason.clone())
            .bind(model::int("jobs.version", job.version)?)
            .bind(model::millis(now)?)
            .bind(job.winding_down)
            .bind_id(id)
            .bind(model::int("jobs.version", expected_version)?)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::db("update a job"))?;
            if done.rows_affected() == 0 {
                return Err(crate::sql::decide::conflict(
                    "job",
                    id,
                    expected_version,
                    None,
                ));
            }
            insert_event(
                conn,
                id,
                None,
                event.as_str(),
                from.as_str(),
                to.as_str(),
                cause,
                now,
            )
            .await?;
            // Webhook deliveries are written with the change, never sent from here:
            // the dispatcher sends them, so no transition waits on a receiver.
            if let Some(notice) = deploy_core::NotificationEvent::of_job_transition(event, from, to)
            {
                let source = format!("job:{id}:v{}", job.version);
                enqueue_notifications(
                    conn,
                    job.environment_id,
                    notice,
                    &source,
                    Some(id),
                    None,
                    cause,
                    now,
                )
                .await?;
            }
            Ok(job)
        }

        /// The `Store` methods on jobs and job events.
        mod jobs_sql {
            use super::*;

            pub(super) async fn create_job(
                store: &$store,
                job: &deploy_core::DeploymentJob,
                traceparent: Option<&deploy_core::Traceparent>,
            ) -> Result<Created<deploy_core::DeploymentJob>, StoreError> {
                let key = job.idempotency_key.as_str();
                {
                    let mut conn = store.read_conn().await?;
                    if let Some(existing) = job_by_key(&mut conn, key).await? {
                        return Ok(Created {
                            value: load_job(&mut conn, existing).await?,
                            created: false,
                        });
                    }
                }
                let mut tx = store.begin_write().await?;
                match insert_new_job(&mut tx, job, traceparent).await {
                    Ok(()) => {
                        let value = load_job(&mut tx, job.id).await?;
                        announce_new_job(&mut tx).await?;
                        tx.commit()
                            .await
                            .map_err(StoreError::db("commit a new job"))?;
                        Ok(Created {
                            value,
                            created: true,
                        })
                    }
                    Err(e) if e.is_unique_violation() => {
                        tx.rollback()
                            .await
                            .map_err(StoreError::db("roll back a job insert"))?;
                        let mut conn = store.read_conn().await?;
                        if let Some(existing) = job_by_key(&mut conn, key).await? {
                            return Ok(Created {
                                value: load_job(&mut conn, existing).await?,
                                created: false,
                            });
                        }
                        Err(insert_clash(&mut conn, job).await)
                    }
                    Err(e) => Err(e),
                }
            }

            pub(super) async fn get_job(
                store: &$store,
                id: deploy_core::JobId,
            ) -> Result<deploy_core::DeploymentJob, StoreError> {
                load_job(&mut *store.read_conn().await?, id).await
            }

            pub(super) async fn list_jobs(
                store: &$store,
                environment: Option<deploy_core::EnvironmentId>,
                status: Option<deploy_core::JobStatus>,
                before: Option<deploy_core::JobId>,
                limit: u32,
            ) -> Result<Vec<deploy_core::DeploymentJob>, StoreError> {
                let mut conn = store.read_conn().await?;
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
                .map(rows::job_id)
                .collect::<Result<_, StoreError>>()?;
                let mut jobs = Vec::with_capacity(ids.len());
                for id in ids {
                    jobs.push(load_job(&mut *conn, id).await?);
                }
                Ok(jobs)
            }

            pub(super) async fn list_job_summaries(
                store: &$store,
                query: &crate::model::JobQuery,
            ) -> Result<Vec<crate::model::JobSummary>, StoreError> {
                summaries(store, query, None).await
            }

            pub(super) async fn get_job_summary(
                store: &$store,
                id: deploy_core::JobId,
            ) -> Result<crate::model::JobSummary, StoreError> {
                let query = crate::model::JobQuery {
                    limit: 1,
                    ..crate::model::JobQuery::default()
                };
                summaries(store, &query, Some(id))
                    .await?
                    .into_iter()
                    .next()
                    .ok_or(StoreError::NotFound {
                        entity: "job",
                        id: id.to_string(),
                    })
            }

            /// The summaries `query` selects, of job `id` only when given (its primary key).
            async fn summaries(
                store: &$store,
                query: &crate::model::JobQuery,
                id: Option<deploy_core::JobId>,
            ) -> Result<Vec<crate::model::JobSummary>, StoreError> {
                // Only the given filters are in the SQL, so the planner can use the index
                // that serves them (`jobs (release_id, id)` for a release's jobs), which a
                // `$n IS NULL OR ...` would hide from it.
                let mut filters = Vec::new();
                for (given, condition) in [
                    (query.environment.is_some(), "environment_id ="),
                    (query.status.is_some(), "status ="),
                    (query.release.is_some(), "release_id ="),
                    (query.rollback_of.is_some(), "rollback_of ="),
                    (query.before.is_some(), "id <"),
                    (id.is_some(), "id ="),
                ] {
                    if given {
                        filters.push(format!("{condition} ${}", filters.len() + 1));
                    }
                }
                let limit = filters.len() + 1;
                let filters = if filters.is_empty() {
                    String::new()
                } else {
                    format!("WHERE {}", filters.join(" AND "))
                };
                // The page's jobs first; their tasks are reached from them (the LEFT JOIN
                // keeps the page the outer side: the index on `tasks (job_id, position)`),
                // so the tasks of other jobs are never read. The release's name and the
                // promotion's requester come by primary key, one row each per job.
                let sql = format!(
                    "WITH page AS (
                       SELECT id, environment_id, release_id, promotion_id, status,
                              winding_down, rollback_of, queued_behind, created_at,
                              started_at, completed_at, failure_reason
                       FROM jobs {filters}
                       ORDER BY id DESC LIMIT ${limit}
                     ),
                     counts AS (
                       SELECT p.id AS job_id, COUNT(t.id) AS total,
                         COUNT(CASE WHEN t.status = 'succeeded' THEN 1 END) AS succeeded,
                         COUNT(CASE WHEN t.status = 'failed' THEN 1 END) AS failed,
                         COUNT(CASE WHEN t.status IN ('dispatched', 'running',
                           'verifying', 'retrying') THEN 1 END) AS running,
                         COUNT(CASE WHEN t.status IN ('pending', 'queued')
                           THEN 1 END) AS waiting
                       FROM page p LEFT JOIN tasks t ON t.job_id = p.id
                       GROUP BY p.id
                     )
                     SELECT p.*, c.total AS tasks_total, c.succeeded AS tasks_succeeded,
                       c.failed AS tasks_failed, c.running AS tasks_running,
                       c.waiting AS tasks_waiting, r.name AS release_name,
                       pr.requested_by
                     FROM page p JOIN counts c ON c.job_id = p.id
                     LEFT JOIN releases r ON r.id = p.release_id
                     LEFT JOIN promotions pr ON pr.id = p.promotion_id
                     ORDER BY p.id DESC"
                );
                let mut sql_query = sqlx::query(&sql);
                if let Some(environment) = query.environment {
                    sql_query = sql_query.bind_id(environment);
                }
                if let Some(status) = query.status {
                    sql_query = sql_query.bind(status.as_str());
                }
                if let Some(release) = query.release {
                    sql_query = sql_query.bind_id(release);
                }
                if let Some(original) = query.rollback_of {
                    sql_query = sql_query.bind_id(original);
                }
                if let Some(before) = query.before {
                    sql_query = sql_query.bind_id(before);
                }
                if let Some(id) = id {
                    sql_query = sql_query.bind_id(id);
                }
                let sql_query = sql_query.bind(i64::from(query.limit));
                store
                    .read_all(sql_query, "list job summaries", rows::job_summary)
                    .await
            }

            pub(super) async fn recent_target_tasks(
                store: &$store,
                environment: deploy_core::EnvironmentId,
                jobs: u32,
            ) -> Result<Vec<crate::model::TargetTaskState>, StoreError> {
                // The environment's newest jobs first (their ids by `id DESC`), then their
                // tasks by `tasks (job_id, position)`, counted per target: the rows are
                // bounded by jobs x targets, not by tasks.
                let query = sqlx::query(
                    "WITH recent AS (
                       SELECT id, status, winding_down FROM jobs
                       WHERE environment_id = $1
                       ORDER BY id DESC LIMIT $2
                     )
                     SELECT r.id AS job_id, r.status, r.winding_down, t.target_id,
                       COUNT(*) AS tasks,
                       COUNT(CASE WHEN t.status = 'succeeded' THEN 1 END) AS succeeded,
                       COUNT(CASE WHEN t.status = 'failed' THEN 1 END) AS failed,
                       COUNT(CASE WHEN t.status NOT IN ('pending', 'queued')
                         THEN 1 END) AS started
                     FROM recent r JOIN tasks t ON t.job_id = r.id
                     GROUP BY r.id, r.status, r.winding_down, t.target_id
                     ORDER BY r.id DESC, t.target_id",
                )
                .bind_id(environment)
                .bind(i64::from(jobs));
                store
                    .read_all(
                        query,
                        "read the recent tasks of an environment's targets",
                        rows::target_task_state,
                    )
                    .await
            }

            pub(super) async fn rollback_job_of(
                store: &$store,
                original: deploy_core::JobId,
            ) -> Result<Option<deploy_core::DeploymentJob>, StoreError> {
                let mut conn = store.read_conn().await?;
                let row = sqlx::query(
                    "SELECT id FROM jobs
                     WHERE rollback_of = $1
                       AND (status IN ('pending', 'preparing', 'running', 'completing')
                            OR winding_down)
                     ORDER BY created_at DESC, id DESC LIMIT 1",
                )
                .bind_id(original)
                .fetch_optional(&mut *conn)
                .await
                .map_err(StoreError::db("look up the rollback job of a job"))?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let id = crate::model::typed("jobs.id", row.uuid("id")?)?;
                Ok(Some(load_job(&mut conn, id).await?))
            }

            pub(super) async fn count_jobs_by_status(
                store: &$store,
            ) -> Result<Vec<(deploy_core::JobStatus, u64)>, StoreError> {
                let mut conn = store.read_conn().await?;
                sqlx::query(
                    "SELECT status, COUNT(*) AS n FROM jobs GROUP BY status ORDER BY status",
                )
                .fetch_all(&mut *conn)
                .await
                .map_err(StoreError::db("count jobs by status"))?
                .iter()
                .map(rows::status_count)
                .collect()
            }

            pub(super) async fn job_status(
                store: &$store,
                id: deploy_core::JobId,
            ) -> Result<(deploy_core::JobStatus, bool), StoreError> {
                let query =
                    sqlx::query("SELECT status, winding_down FROM jobs WHERE id = $1").bind_id(id);
                store
                    .read_one(query, "job", id.to_string(), rows::job_state)
                    .await
            }

            pub(super) async fn apply_job_event(
                store: &$store,
                id: deploy_core::JobId,
                expected_version: u64,
                event: deploy_core::JobEvent,
                now: deploy_core::Timestamp,
                cause: &str,
            ) -> Result<deploy_core::DeploymentJob, StoreError> {
                let mut tx = store.begin_write().await?;
                let job = transition_job(&mut tx, id, expected_version, event, now, cause).await?;
                tx.commit()
                    .await
                    .map_err(StoreError::db("commit a job transition"))?;
                Ok(job)
            }

            pub(super) async fn start_rollback(
                store: &$store,
                id: deploy_core::JobId,
                expected_version: u64,
                rollback: &deploy_core::DeploymentJob,
                now: deploy_core::Timestamp,
                cause: &str,
                traceparent: Option<&deploy_core::Traceparent>,
            ) -> Result<(deploy_core::DeploymentJob, deploy_core::DeploymentJob), StoreError> {
                let mut tx = store.begin_write().await?;
                let job = transition_job(
                    &mut tx,
                    id,
                    expected_version,
                    deploy_core::JobEvent::RollbackStarted,
                    now,
                    cause,
                )
                .await?;
                match insert_new_job(&mut tx, rollback, traceparent).await {
                    Ok(()) => {
                        let value = load_job(&mut tx, rollback.id).await?;
                        // Other replicas claim the rollback job like any new job.
                        announce_new_job(&mut tx).await?;
                        tx.commit()
                            .await
                            .map_err(StoreError::db("commit a rollback start"))?;
                        Ok((job, value))
                    }
                    // Another job holds the environment (started after the failure):
                    // nothing is written, and the error names that job.
                    Err(e) if e.is_unique_violation() => {
                        tx.rollback()
                            .await
                            .map_err(StoreError::db("roll back a rollback start"))?;
                        let mut conn = store.read_conn().await?;
                        Err(insert_clash(&mut conn, rollback).await)
                    }
                    Err(e) => Err(e),
                }
            }

            pub(super) async fn settle_rollback_job(
                store: &$store,
                id: deploy_core::JobId,
                expected_version: u64,
                event: deploy_core::JobEvent,
                now: deploy_core::Timestamp,
                cause: &str,
                original_cause: &str,
            ) -> Result<
                (
                    deploy_core::DeploymentJob,
                    Option<deploy_core::DeploymentJob>,
                ),
                StoreError,
            > {
                let mut tx = store.begin_write().await?;
                let job = transition_job(&mut tx, id, expected_version, event, now, cause).await?;
                // Nothing is written (the transaction rolls back) for a misuse.
                let original_id = crate::sql::decide::rollback_settlement(&job, event)?;
                let original = load_job(&mut tx, original_id).await?;
                let settled = match crate::sql::decide::settling_event(&original, job.status) {
                    Some(settle) => Some(
                        transition_job(
                            &mut tx,
                            original_id,
                            original.version,
                            settle,
                            now,
                            original_cause,
                        )
                        .await?,
                    ),
                    None => None,
                };
                tx.commit()
                    .await
                    .map_err(StoreError::db("commit a rollback job's end"))?;
                Ok((job, settled))
            }

            pub(super) async fn job_events(
                store: &$store,
                job: deploy_core::JobId,
                after_seq: u64,
                limit: u32,
            ) -> Result<Vec<JobEventRecord>, StoreError> {
                store
                    .read_after(
                        "SELECT * FROM job_events WHERE job_id = $1 AND seq > $2
                         ORDER BY seq LIMIT $3",
                        job,
                        after_seq,
                        limit,
                        "read job events",
                        rows::job_event,
                    )
                    .await
            }

            pub(super) async fn last_job_event_seq(
                store: &$store,
                job: deploy_core::JobId,
            ) -> Result<u64, StoreError> {
                // An aggregate answers one row, 0 without events; `job_events (job_id, seq)`.
                let query = sqlx::query(
                    "SELECT COALESCE(MAX(seq), 0) AS seq FROM job_events WHERE job_id = $1",
                )
                .bind_id(job);
                store
                    .read_one(query, "job", job.to_string(), rows::last_seq)
                    .await
            }

            pub(super) async fn previous_successful_job(
                store: &$store,
                environment: deploy_core::EnvironmentId,
                release: deploy_core::ReleaseId,
            ) -> Result<Option<deploy_core::DeploymentJob>, StoreError> {
                let mut conn = store.read_conn().await?;
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
                    Some(row) => Ok(Some(load_job(&mut conn, rows::job_id(&row)?).await?)),
                }
            }

            pub(super) async fn last_known_good(
                store: &$store,
                environment: deploy_core::EnvironmentId,
            ) -> Result<Vec<LastKnownGood>, StoreError> {
                let query = sqlx::query(
                    "SELECT target_id, component_id, digest, job_id, completed_at FROM (
                       SELECT t.target_id, t.component_id, t.digest, t.job_id,
                              j.completed_at,
                              ROW_NUMBER() OVER (
                                  PARTITION BY t.target_id, t.component_id
                                  ORDER BY j.completed_at DESC, j.id DESC) AS rn
                       FROM tasks t JOIN jobs j ON j.id = t.job_id
                       WHERE j.environment_id = $1 AND j.status = 'completed'
                         AND t.status = 'succeeded'
                     ) ranked
                     WHERE rn = 1
                     ORDER BY target_id, component_id",
                )
                .bind_id(environment);
                store
                    .read_all(query, "find last-known-good digests", rows::last_known_good)
                    .await
            }
        }
    };
}

pub(crate) use jobs_sql;
