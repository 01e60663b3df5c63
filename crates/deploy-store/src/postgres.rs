//! `PgStore`: the store on PostgreSQL, for several `deployd` replicas sharing the work.

use std::str::FromStr;
use std::time::Duration;

use deploy_core::DeploymentTask;

use sqlx::Row;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use uuid::Uuid;

use crate::errors::StoreError;
use crate::model::{self, Created, JobEventRecord, LastKnownGood, LogChunk};
use crate::model::{AgentRecord, ApiTokenRecord};
use crate::rows::{self, RowExt, row_ext_common};
use crate::sql::{BindId, TaskEventRequest, claim_sql, sql_store, task_update_sql};
use crate::sqlite::supported_version;
use crate::store::Store;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// How to reach PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgConfig {
    /// `postgres://user[:password]@host:port/database`.
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl PgConfig {
    /// Defaults: 10 connections, 3 s to get one. The acquire timeout is also how
    /// long a caller waits while PostgreSQL is down (the pool keeps trying to
    /// connect until then) before it gets `unavailable` (the API's 503 with
    /// `Retry-After`); waiting longer for a free connection only hides an overload.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(3),
        }
    }
}

/// The store on PostgreSQL. Reads and writes share one pool; row locks and
/// `FOR UPDATE SKIP LOCKED` keep replicas apart.
#[derive(Debug, Clone)]
pub struct PgStore {
    writer: PgPool,
    reader: PgPool,
    /// Listens on [`NEW_JOB_CHANNEL`] once a replica waits for new jobs.
    listener: std::sync::Arc<tokio::sync::Mutex<Option<PgListener>>>,
}

/// The channel a new job is announced on (`pg_notify`, in the transaction that creates
/// it): every replica's claim loop wakes at once instead of at its next poll.
pub const NEW_JOB_CHANNEL: &str = "deploy_new_job";

impl PgStore {
    /// Skips rows another replica is claiming right now.
    const CLAIM_SQL: &'static str = claim_sql!("FOR UPDATE SKIP LOCKED");
    /// Announces a new job to the other replicas when its transaction commits.
    const NOTIFY_NEW_JOB: Option<&'static str> = Some("SELECT pg_notify('deploy_new_job', '')");

    /// Waits at most `within` for a new job's announcement; a lost listener is
    /// connected again on the next call (meanwhile the claim loop polls).
    async fn wait_announced(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        let mut guard = self.listener.lock().await;
        if guard.is_none() {
            let connect = async {
                let mut l = PgListener::connect_with(&self.reader).await?;
                l.listen(NEW_JOB_CHANNEL).await?;
                Ok::<_, sqlx::Error>(l)
            };
            match tokio::time::timeout_at(deadline, connect).await {
                Ok(Ok(l)) => *guard = Some(l),
                // Cannot listen (yet): this wait polls; the next one tries again.
                Ok(Err(_)) => {}
                Err(_) => return,
            }
        }
        let Some(listener) = guard.as_mut() else {
            tokio::time::sleep_until(deadline).await;
            return;
        };
        match tokio::time::timeout_at(deadline, listener.try_recv()).await {
            Ok(Ok(Some(_))) | Err(_) => {}
            // The connection was lost (and notifications with it): reconnect next time.
            Ok(Ok(None)) | Ok(Err(_)) => {
                *guard = None;
                tokio::time::sleep_until(deadline).await;
            }
        }
    }

    /// Connects and migrates (migrations take an advisory lock, so replicas may start together).
    ///
    /// A database whose schema is newer than this build's is refused unmodified.
    pub async fn connect(config: &PgConfig) -> Result<Self, StoreError> {
        let location = redact(&config.url);
        let options =
            PgConnectOptions::from_str(&config.url).map_err(StoreError::open(&location))?;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(StoreError::open(&location))?;
        let present = sqlx::query("SELECT to_regclass('_sqlx_migrations') IS NOT NULL AS present")
            .fetch_one(&pool)
            .await
            .map_err(StoreError::db("read the schema version"))?
            .boolean("present")?;
        if present {
            let found = sqlx::query("SELECT MAX(version) AS v FROM _sqlx_migrations")
                .fetch_one(&pool)
                .await
                .map_err(StoreError::db("read the schema version"))?
                .opt_i64("v")?;
            let supported = supported_version(&MIGRATOR);
            if let Some(found) = found.filter(|f| *f > supported) {
                pool.close().await;
                return Err(StoreError::SchemaTooNew {
                    location,
                    found,
                    supported,
                });
            }
        }
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate { location, source })?;
        Ok(Self {
            writer: pool.clone(),
            reader: pool,
            listener: std::sync::Arc::default(),
        })
    }

    /// The task update and its event row in one statement (one implicit transaction, one round trip).
    const TRANSITION_SQL: &'static str = concat!(
        "WITH updated AS (",
        task_update_sql!(),
        " RETURNING id)
         INSERT INTO job_events (job_id, task_id, event, from_status, to_status, cause, at)
         SELECT $14, id, $15, $16, $17, $18, $19 FROM updated"
    );

    /// Reads and decides, then writes the compare-and-swap update and the event in one
    /// statement: two round trips per transition, no explicit transaction. PostgreSQL
    /// groups the WAL flushes of concurrent commits.
    async fn commit_task_event(
        &self,
        request: TaskEventRequest,
    ) -> Result<DeploymentTask, StoreError> {
        let mut conn = self
            .writer
            .acquire()
            .await
            .map_err(StoreError::db("get a write connection"))?;
        let (task, from) = prepare_task_event(&mut conn, &request).await?;
        let done = bind_task_update(Self::TRANSITION_SQL, &task, request.expected_version)?
            .bind(task.job_id.as_uuid())
            .bind(request.event.as_str())
            .bind(from.as_str())
            .bind(task.status.as_str())
            .bind(request.cause.clone())
            .bind(model::millis(request.now)?)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::db("apply a task transition"))?;
        if done.rows_affected() == 0 {
            return Err(task_conflict(&mut conn, task.id, request.expected_version).await);
        }
        Ok(task)
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.writer.close().await;
    }
}

/// The url without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{}@{}", &url[..scheme + 3], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

impl RowExt for PgRow {
    fn uuid(&self, col: &'static str) -> Result<Uuid, StoreError> {
        self.try_get(col).map_err(rows::column_error(col))
    }
    fn opt_uuid(&self, col: &'static str) -> Result<Option<Uuid>, StoreError> {
        self.try_get(col).map_err(rows::column_error(col))
    }
    row_ext_common!();
}

impl BindId for sqlx::query::Query<'_, sqlx::Postgres, PgArguments> {
    fn bind_id(self, id: impl Into<Uuid>) -> Self {
        self.bind(id.into())
    }
    fn bind_opt_id<T: Into<Uuid>>(self, id: Option<T>) -> Self {
        self.bind(id.map(Into::into))
    }
}

sql_store!(PgStore, sqlx::Postgres);

#[cfg(test)]
mod tests {
    #[test]
    fn redact_drops_the_password() {
        assert_eq!(
            super::redact("postgres://app:s3cret@db:5432/deploy"),
            "postgres://app@db:5432/deploy"
        );
        assert_eq!(
            super::redact("postgres://db/deploy"),
            "postgres://db/deploy"
        );
    }
}
