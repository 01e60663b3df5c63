//! The SQL of job leases and the environment queue: claiming, renewing and releasing leases, letting queued jobs in.

/// The claim query; `$lock` is the row-locking clause of the dialect (`FOR UPDATE SKIP LOCKED`
/// on PostgreSQL, nothing on SQLite whose single writer serialises claimers). The outer
/// condition is re-checked on the locked row, so a job is claimed by one claimer.
///
/// It takes every job that needs a runner (`DeploymentJob::needs_runner`): pending to
/// completing (not queued), and a `failed` job still winding down. A `rolling_back`
/// job is not run: its rollback job is, and its end settles it.
macro_rules! claim_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE jobs SET claimed_by = $1, lease_until = $2
             WHERE id IN (
                 SELECT id FROM jobs
                 WHERE (status IN ('pending', 'preparing', 'running', 'completing') OR winding_down)
                   AND queued_behind IS NULL
                   AND (claimed_by IS NULL OR lease_until < $3)
                 ORDER BY created_at, id LIMIT $4 ",
            $lock,
            ")
               AND (status IN ('pending', 'preparing', 'running', 'completing') OR winding_down)
               AND queued_behind IS NULL
               AND (claimed_by IS NULL OR lease_until < $3)
             RETURNING id"
        )
    };
}
pub(crate) use claim_sql;

/// Expands, for `$store` over `$db`, the `Store` methods on leases and the queue
/// (module `leases_sql`).
macro_rules! leases_sql {
    ($store:ty, $db:ty) => {
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
                StoreError::LeaseLost {
                    job,
                    owner: owner.to_owned(),
                    holder,
                }
            }
        }

        /// The `Store` methods on leases and the queue.
        mod leases_sql {
            use super::*;

            pub(super) async fn claim_jobs(
                store: &$store,
                owner: &str,
                now: deploy_core::Timestamp,
                lease: std::time::Duration,
                limit: u32,
            ) -> Result<Vec<deploy_core::JobId>, StoreError> {
                sqlx::query(<$store>::CLAIM_SQL)
                    .bind(owner.to_owned())
                    .bind(model::millis(now.saturating_add(lease))?)
                    .bind(model::millis(now)?)
                    .bind(i64::from(limit))
                    .fetch_all(&store.writer)
                    .await
                    .map_err(StoreError::db("claim jobs"))?
                    .iter()
                    .map(rows::job_id)
                    .collect()
            }

            pub(super) async fn last_in_line(
                store: &$store,
                environment: deploy_core::EnvironmentId,
            ) -> Result<Option<deploy_core::JobId>, StoreError> {
                let mut conn = store.read_conn().await?;
                let queued = sqlx::query(
                    "SELECT id FROM jobs
                     WHERE environment_id = $1 AND status = 'pending'
                       AND queued_behind IS NOT NULL
                     ORDER BY created_at DESC, id DESC LIMIT 1",
                )
                .bind_id(environment)
                .fetch_optional(&mut *conn)
                .await
                .map_err(StoreError::db("look up the queue of an environment"))?;
                if let Some(row) = queued {
                    return Ok(Some(rows::job_id(&row)?));
                }
                if let Some(holder) = active_job(&mut conn, environment).await? {
                    return Ok(Some(holder));
                }
                // A failed job still winding down (its automatic rollback may come)
                // keeps the line closed too.
                let winding_down = sqlx::query(
                    "SELECT id FROM jobs
                     WHERE environment_id = $1 AND status = 'failed'
                       AND winding_down
                     ORDER BY created_at DESC LIMIT 1",
                )
                .bind_id(environment)
                .fetch_optional(&mut *conn)
                .await
                .map_err(StoreError::db("look up a failed job still winding down"))?;
                winding_down.as_ref().map(rows::job_id).transpose()
            }

            pub(super) async fn dequeue_jobs(
                store: &$store,
                now: deploy_core::Timestamp,
            ) -> Result<Vec<deploy_core::JobId>, StoreError> {
                // Per environment with a queue and no lock holder, the oldest queued job.
                // Two callers racing for one environment: the lock's unique index lets
                // one through; the other's statement fails and lets nobody in this round.
                let result = sqlx::query(
                    "UPDATE jobs SET queued_behind = NULL, updated_at = $1
                     WHERE id IN (
                       SELECT q.id FROM jobs q
                       WHERE q.queued_behind IS NOT NULL AND q.status = 'pending'
                         AND NOT EXISTS (
                             SELECT 1 FROM jobs h
                             WHERE h.environment_id = q.environment_id
                               AND h.queued_behind IS NULL
                               AND (h.status IN ('pending', 'preparing', 'running',
                                                 'completing')
                                    OR (h.status = 'failed' AND h.winding_down)))
                         AND q.id = (
                             SELECT o.id FROM jobs o
                             WHERE o.environment_id = q.environment_id
                               AND o.status = 'pending' AND o.queued_behind IS NOT NULL
                             ORDER BY o.created_at, o.id LIMIT 1))
                     RETURNING id",
                )
                .bind(model::millis(now)?)
                .fetch_all(&store.writer)
                .await;
                match result {
                    Ok(found) => found.iter().map(rows::job_id).collect(),
                    Err(e) => {
                        let e = StoreError::db("let a queued job in")(e);
                        if e.is_unique_violation() {
                            Ok(Vec::new())
                        } else {
                            Err(e)
                        }
                    }
                }
            }

            pub(super) async fn renew_lease(
                store: &$store,
                job: deploy_core::JobId,
                owner: &str,
                now: deploy_core::Timestamp,
                lease: std::time::Duration,
            ) -> Result<deploy_core::Timestamp, StoreError> {
                let until = now.saturating_add(lease);
                let done = sqlx::query(
                    "UPDATE jobs SET lease_until = $1 WHERE id = $2 AND claimed_by = $3",
                )
                .bind(model::millis(until)?)
                .bind_id(job)
                .bind(owner.to_owned())
                .execute(&store.writer)
                .await
                .map_err(StoreError::db("renew a lease"))?;
                if done.rows_affected() == 0 {
                    return Err(store.lease_lost(job, owner).await);
                }
                Ok(until)
            }

            pub(super) async fn release_lease(
                store: &$store,
                job: deploy_core::JobId,
                owner: &str,
            ) -> Result<(), StoreError> {
                let sql = "UPDATE jobs SET claimed_by = NULL, lease_until = NULL
                     WHERE id = $1 AND claimed_by = $2";
                store
                    .update_held_lease(sql, job, owner, "release a lease")
                    .await
            }

            pub(super) async fn release_leases_of(
                store: &$store,
                owner: &str,
            ) -> Result<Vec<deploy_core::JobId>, StoreError> {
                sqlx::query(
                    "UPDATE jobs SET claimed_by = NULL, lease_until = NULL
                     WHERE claimed_by = $1
                       AND (status IN ('pending', 'preparing', 'running', 'completing')
                            OR winding_down)
                     RETURNING id",
                )
                .bind(owner.to_owned())
                .fetch_all(&store.writer)
                .await
                .map_err(StoreError::db("release an owner's leases"))?
                .iter()
                .map(rows::job_id)
                .collect()
            }
        }
    };
}

pub(crate) use leases_sql;
