//! The SQL of job trace contexts: the W3C `traceparent` a job was created under, written
//! with the job and read by whichever runner runs it.

/// Expands, for `$store` over `$db`, `insert_trace_context` (used by `insert_new_job` in
/// the new job's transaction) and the `Store` method that reads a job's trace context (module
/// `trace_context_sql`).
macro_rules! trace_context_sql {
    ($store:ty, $db:ty) => {
        /// Records `traceparent` for the job `job` just inserted on `conn`.
        async fn insert_trace_context(
            conn: &mut Conn,
            job: deploy_core::JobId,
            traceparent: &deploy_core::Traceparent,
        ) -> Result<(), StoreError> {
            sqlx::query(
                "INSERT INTO job_trace_contexts (job_id, traceparent)
                 VALUES ($1, $2)",
            )
            .bind_id(job)
            .bind(traceparent.to_string())
            .execute(&mut *conn)
            .await
            .map_err(StoreError::db("record a job's trace context"))?;
            Ok(())
        }

        /// The `Store` method on job trace contexts.
        mod trace_context_sql {
            use super::*;

            pub(super) async fn job_trace_context(
                store: &$store,
                job: deploy_core::JobId,
            ) -> Result<Option<deploy_core::Traceparent>, StoreError> {
                <$store>::fetch_opt(
                    &store.reader,
                    sqlx::query(
                        "SELECT traceparent FROM job_trace_contexts
                         WHERE job_id = $1",
                    )
                    .bind_id(job),
                    "read a job's trace context",
                    |row| {
                        let text = row.string("traceparent")?;
                        deploy_core::Traceparent::parse(&text).map_err(|e| {
                            StoreError::corrupt("job_trace_contexts.traceparent", text)(
                                e.why.to_owned(),
                            )
                        })
                    },
                )
                .await
            }
        }
    };
}

pub(crate) use trace_context_sql;
