//! `PgStore`: the store on PostgreSQL, for several `deployd` replicas sharing the work.

use std::str::FromStr;
use std::time::Duration;

use deploy_core::DeploymentTask;

use sqlx::Row;
use sqlx::migrate::Migrator;
use sqlx::postgres::{
    PgArguments, PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow, PgSslMode,
};
use uuid::Uuid;

use crate::errors::StoreError;
use crate::model::{self, Created, JobEventRecord, LastKnownGood, LogChunk};
use crate::model::{AgentRecord, ApiTokenRecord};
use crate::rows::{self, RowExt, row_ext_common};
use crate::sql::{BindId, TaskEventRequest, claim_sql, sql_store};
use crate::sqlite::supported_version;
use crate::store::Store;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// How to reach PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgConfig {
    /// `postgres://user[:password]@host:port/database`, with TLS settings as query
    /// parameters: `sslmode` (`disable`, `prefer` (the default), `require`, `verify-ca`,
    /// `verify-full`) and `sslrootcert=/path/ca.pem`; with a CA, `require` verifies the
    /// chain as libpq does. `sslcert` and `sslkey` give a client certificate.
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
    /// Relay announcements, fed by a listener on [`crate::RELAY_CHANNEL`].
    bus: crate::relay::RelayBus,
    /// Task transitions, group-committed ([`crate::pg_commit`]).
    committer: tokio::sync::mpsc::Sender<crate::pg_commit::Pending>,
}

/// The channel a new job is announced on (`pg_notify`, in the transaction that creates
/// it): every replica's claim loop wakes at once instead of at its next poll.
pub const NEW_JOB_CHANNEL: &str = "deploy_new_job";

impl PgStore {
    /// Skips rows another replica is claiming right now.
    const CLAIM_SQL: &'static str = claim_sql!("FOR UPDATE SKIP LOCKED");
    /// Announces a new job to the other replicas when its transaction commits.
    const NOTIFY_NEW_JOB: Option<&'static str> = Some("SELECT pg_notify('deploy_new_job', '')");

    /// Several replicas share the database.
    const SHARED: bool = true;

    /// One transaction per chunk: PostgreSQL groups the WAL flushes of concurrent commits.
    async fn append_log_routed(
        &self,
        task: deploy_core::TaskId,
        at: deploy_core::Timestamp,
        content: &str,
    ) -> Result<u64, StoreError> {
        let mut tx = self
            .writer
            .begin()
            .await
            .map_err(StoreError::db("begin a write transaction"))?;
        let seq = append_log_in(&mut tx, task, at, content).await?;
        tx.commit()
            .await
            .map_err(StoreError::db("commit a log chunk"))?;
        Ok(seq)
    }

    async fn bus_announce(&self, message: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(crate::relay::RELAY_CHANNEL)
            .bind(message)
            .execute(&self.writer)
            .await
            .map_err(StoreError::db("announce to the other replicas"))?;
        Ok(())
    }

    /// Subscribes, starting the listener on the first call. The listener reconnects after
    /// a lost connection (sending [`crate::RESYNC`] each time it is listening again) and
    /// stops once nobody subscribes any more.
    fn bus_subscribe(&self) -> tokio::sync::broadcast::Receiver<String> {
        let rx = self.bus.tx.subscribe();
        if !self
            .bus
            .listening
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let (pool, tx, listening) = (
                self.reader.clone(),
                self.bus.tx.clone(),
                self.bus.listening.clone(),
            );
            tokio::spawn(async move {
                relay_listener(pool, tx).await;
                listening.store(false, std::sync::atomic::Ordering::SeqCst);
            });
        }
        rx
    }

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
                if self.reader.is_closed() {
                    // The store is closing: give the lock to `close` now.
                    return;
                }
                tokio::time::sleep_until(deadline).await;
            }
        }
    }

    /// Connects and migrates (migrations take an advisory lock, so replicas may start together).
    ///
    /// A database whose schema is newer than this build's is refused unmodified.
    pub async fn connect(config: &PgConfig) -> Result<Self, StoreError> {
        let location = redact(&config.url);
        let tls = crate::pg_tls::check(&config.url)?;
        let mut options =
            PgConnectOptions::from_str(&config.url).map_err(StoreError::open(&location))?;
        // libpq verifies the chain for `require` once a CA is given; sqlx would not.
        if tls.root_cert && matches!(options.get_ssl_mode(), PgSslMode::Require) {
            options = options.ssl_mode(PgSslMode::VerifyCa);
        }
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(StoreError::open(&location))?;
        if let Err(e) = check_and_migrate(&pool, location).await {
            crate::pool_close::close_pool(&pool, "postgres").await;
            return Err(e);
        }
        Ok(Self {
            committer: crate::pg_commit::start(pool.clone()),
            writer: pool.clone(),
            reader: pool,
            listener: std::sync::Arc::default(),
            bus: crate::relay::RelayBus::default(),
        })
    }

    /// Queues the transition for the group committer ([`crate::pg_commit`]) and waits
    /// for the commit that holds it.
    async fn commit_task_event(
        &self,
        request: TaskEventRequest,
    ) -> Result<DeploymentTask, StoreError> {
        crate::pg_commit::commit(&self.committer, request).await
    }

    /// Closes the pool, waiting for connections in use ([`crate::pool_close`]).
    pub async fn close(&self) {
        // Marks the pool closed at once (sqlx does so before its future first runs):
        // a listener waiting gets `PoolClosed`, no connection opens any more. Then the
        // kept `wait_announced` listener gives its connection back, to be closed.
        drop(self.writer.close());
        self.listener.lock().await.take();
        crate::pool_close::close_pool(&self.writer, "postgres").await;
    }
}

/// Appends one log chunk inside the caller's transaction (see `Store::append_log`);
/// the chunk's sequence number.
async fn append_log_in(
    conn: &mut sqlx::PgConnection,
    task: deploy_core::TaskId,
    at: deploy_core::Timestamp,
    content: &str,
) -> Result<u64, StoreError> {
    // Bumping the task's counter row serialises concurrent appends to one task, and
    // names the job.
    let row = sqlx::query(
        "UPDATE tasks SET log_seq = log_seq + 1 WHERE id = $1 RETURNING log_seq, job_id",
    )
    .bind_id(task)
    .fetch_optional(&mut *conn)
    .await
    .map_err(StoreError::db("number a log chunk"))?
    .ok_or_else(|| StoreError::NotFound {
        entity: "task",
        id: task.to_string(),
    })?;
    let (seq, job) = (row.i64("log_seq")?, row.uuid("job_id")?);
    let keep = model::int("log chunk bound", model::MAX_LOG_CHUNKS_PER_TASK)?;
    if seq > keep {
        sqlx::query("DELETE FROM task_log_chunks WHERE task_id = $1 AND seq <= $2")
            .bind_id(task)
            .bind(seq - keep)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::db("drop old log chunks"))?;
    }
    // The job's position last, in the statement that inserts the chunk: the job row
    // stays locked until this commits, so the job's positions become visible in the
    // order they are handed out and `read_job_log` never skips one still to come (a
    // sequence would not do); taken last, that lock is held for one statement and the
    // commit, not for the whole append (every chunk of a job queues on it).
    sqlx::query(
        "WITH c AS (UPDATE jobs SET log_cursor = log_cursor + 1 WHERE id = $5 RETURNING log_cursor)
         INSERT INTO task_log_chunks (task_id, seq, at, content, job_id, job_cursor)
         SELECT $1, $2, $3, $4, $5, log_cursor FROM c",
    )
    .bind_id(task)
    .bind(seq)
    .bind(model::millis(at)?)
    .bind(content.to_owned())
    .bind_id(job)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::db("append a log chunk"))?;
    model::uint("tasks.log_seq", seq)
}

/// Refuses a database whose schema is newer than this build's, then migrates it.
async fn check_and_migrate(pool: &PgPool, location: String) -> Result<(), StoreError> {
    let present = sqlx::query("SELECT to_regclass('_sqlx_migrations') IS NOT NULL AS present")
        .fetch_one(pool)
        .await
        .map_err(StoreError::db("read the schema version"))?
        .boolean("present")?;
    if present {
        let found = sqlx::query("SELECT MAX(version) AS v FROM _sqlx_migrations")
            .fetch_one(pool)
            .await
            .map_err(StoreError::db("read the schema version"))?
            .opt_i64("v")?;
        let supported = supported_version(&MIGRATOR);
        if let Some(found) = found.filter(|f| *f > supported) {
            return Err(StoreError::SchemaTooNew {
                location,
                found,
                supported,
            });
        }
    }
    MIGRATOR
        .run(pool)
        .await
        .map_err(|source| StoreError::Migrate { location, source })
}

/// Forwards [`crate::RELAY_CHANNEL`] notifications to `tx` until it has no receiver.
async fn relay_listener(pool: PgPool, tx: tokio::sync::broadcast::Sender<String>) {
    const RETRY: Duration = Duration::from_millis(500);
    const CHECK: Duration = Duration::from_secs(5);
    // A closed store's pool opens nothing: stop instead of retrying forever.
    while tx.receiver_count() > 0 && !pool.is_closed() {
        let connect = async {
            let mut l = PgListener::connect_with(&pool).await?;
            l.listen(crate::relay::RELAY_CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = match connect.await {
            Ok(l) => l,
            Err(_) if pool.is_closed() => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for agent relay announcements; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        // Whatever was announced while not listening is re-read by the subscribers.
        let _ = tx.send(crate::relay::RESYNC.to_owned());
        loop {
            match tokio::time::timeout(CHECK, listener.try_recv()).await {
                Ok(Ok(Some(n))) => {
                    let _ = tx.send(n.payload().to_owned());
                }
                Ok(Ok(None)) | Ok(Err(_)) => break,
                Err(_) if tx.receiver_count() == 0 => return,
                Err(_) => {}
            }
        }
        tokio::time::sleep(RETRY).await;
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
