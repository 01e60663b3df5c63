//! `SqliteStore`: the embedded default. WAL, foreign keys, a busy timeout, one writer connection and a pool of read-only readers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use deploy_core::{DeploymentTask, TaskId};
use sqlx::Row;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::errors::StoreError;
use crate::model::{self, Created, JobEventRecord, LastKnownGood, LogChunk};
use crate::model::{AgentRecord, ApiTokenRecord};
use crate::rows::{self, RowExt, row_ext_common, uuid_text};
use crate::sql::{BindId, TaskEventRequest, apply_task_request, claim_sql, sql_store};
use crate::store::Store;

pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SqliteDurability {
    /// `synchronous=FULL`: the WAL is fsynced at every commit, so a committed
    /// transition survives a process kill, an OS crash and a power loss.
    #[default]
    Full,
    /// `synchronous=NORMAL`: a committed transition survives a process kill
    /// (it is in the OS page cache) but the last commits may be lost on power loss.
    Normal,
}

/// Where and how to open the SQLite database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteConfig {
    pub path: PathBuf,
    pub durability: SqliteDurability,
    /// How long a writer from another process is waited for.
    pub busy_timeout: Duration,
    /// Size of the read-only connection pool.
    pub read_connections: u32,
}

impl SqliteConfig {
    /// Defaults: full durability, a 5 s busy timeout, 4 readers.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            durability: SqliteDurability::Full,
            busy_timeout: Duration::from_secs(5),
            read_connections: 4,
        }
    }
}

/// The store on an embedded SQLite database.
///
/// All writes go through one connection (a pool of size 1), so writers queue
/// in-process instead of failing with "database is locked"; readers use WAL
/// snapshots and never block the writer.
///
/// Task transitions, the engine's hot path, are group-committed: a committer
/// task takes every transition queued while the previous batch was being
/// written and commits them in one transaction, so one WAL fsync covers many
/// transitions. Each caller returns only after the commit that holds its
/// transition, so "returned" still means "durable".
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    committer: mpsc::Sender<Pending>,
    /// Log chunks, group-committed like the transitions (each is its own transaction
    /// otherwise: one fsync per chunk on the single writer, ahead of every transition).
    logs: mpsc::Sender<PendingLog>,
    /// Relay announcements: one process, so an in-process broadcast.
    bus: crate::relay::RelayBus,
}

/// Most task transitions in one group commit.
const MAX_BATCH: usize = 256;

/// A queued log chunk and where to send its sequence number.
#[derive(Debug)]
struct PendingLog {
    task: TaskId,
    at: deploy_core::Timestamp,
    content: String,
    reply: oneshot::Sender<Result<u64, StoreError>>,
}

/// A queued task transition and where to send its outcome.
#[derive(Debug)]
struct Pending {
    request: TaskEventRequest,
    reply: oneshot::Sender<Result<DeploymentTask, StoreError>>,
}

impl SqliteStore {
    const CLAIM_SQL: &'static str = claim_sql!("");
    /// One process per database: the engine wakes itself when it creates a job.
    const NOTIFY_NEW_JOB: Option<&'static str> = None;

    /// One process per database.
    const SHARED: bool = false;

    /// Queues the chunk for the log committer and waits for its commit.
    async fn append_log_routed(
        &self,
        task: TaskId,
        at: deploy_core::Timestamp,
        content: &str,
    ) -> Result<u64, StoreError> {
        let (reply, outcome) = oneshot::channel();
        let stopped = || StoreError::Database {
            action: "commit a log chunk",
            source: sqlx::Error::PoolClosed,
        };
        self.logs
            .send(PendingLog {
                task,
                at,
                content: content.to_owned(),
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    async fn bus_announce(&self, message: &str) -> Result<(), StoreError> {
        // No subscriber is not an error: nobody is waiting.
        let _ = self.bus.tx.send(message.to_owned());
        Ok(())
    }

    fn bus_subscribe(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.bus.tx.subscribe()
    }

    /// Nothing announces a job across processes on SQLite: the claim loop polls.
    async fn wait_announced(&self, within: std::time::Duration) {
        tokio::time::sleep(within).await;
    }

    /// Opens (creating if missing) and migrates the database.
    ///
    /// Refuses, without modifying anything, a path that cannot be written and a
    /// database whose schema is newer than this build's.
    pub async fn open(config: &SqliteConfig) -> Result<Self, StoreError> {
        let path = &config.path;
        let shown = path.display().to_string();
        check_path(path)?;
        let base = SqliteConnectOptions::from_str("sqlite:")
            .map_err(StoreError::db("build sqlite options"))?
            .filename(path)
            .foreign_keys(true)
            .busy_timeout(config.busy_timeout);
        if path.exists() {
            let probe = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(base.clone().read_only(true))
                .await
                .map_err(StoreError::open(&shown))?;
            let found = schema_version(&probe, &shown).await;
            crate::pool_close::close_pool(&probe, "sqlite probe").await;
            check_version(&shown, found?)?;
        }
        let synchronous = match config.durability {
            SqliteDurability::Full => SqliteSynchronous::Full,
            SqliteDurability::Normal => SqliteSynchronous::Normal,
        };
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .after_release(|conn, _| Box::pin(release_writer(conn)))
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(synchronous),
            )
            .await
            .map_err(|e| StoreError::Unwritable {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        if let Err(source) = MIGRATOR.run(&writer).await {
            crate::pool_close::close_pool(&writer, "sqlite writer").await;
            return Err(StoreError::Migrate {
                location: shown.clone(),
                source,
            });
        }
        let reader = match SqlitePoolOptions::new()
            .max_connections(config.read_connections.max(1))
            .connect_with(base.read_only(true))
            .await
        {
            Ok(reader) => reader,
            Err(e) => {
                crate::pool_close::close_pool(&writer, "sqlite writer").await;
                return Err(StoreError::open(&shown)(e));
            }
        };
        let (committer, queue) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(group_commit(writer.clone(), queue));
        let (logs, log_queue) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(group_commit_logs(writer.clone(), log_queue));
        Ok(Self {
            writer,
            reader,
            committer,
            logs,
            bus: crate::relay::RelayBus::default(),
        })
    }

    /// Queues the transition for the group committer and waits for its commit.
    async fn commit_task_event(
        &self,
        request: TaskEventRequest,
    ) -> Result<DeploymentTask, StoreError> {
        let (reply, outcome) = oneshot::channel();
        let stopped = || StoreError::Database {
            action: "commit a task transition",
            source: sqlx::Error::PoolClosed,
        };
        self.committer
            .send(Pending { request, reply })
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    /// Closes both pools, waiting for connections in use: when it returns, no
    /// connection of this store has the database open ([`crate::pool_close`]).
    pub async fn close(&self) {
        // The read-only connections first: the last connection to close checkpoints
        // the WAL and removes `-wal` and `-shm`, which a read-only one cannot do.
        crate::pool_close::close_pool(&self.reader, "sqlite reader").await;
        crate::pool_close::close_pool(&self.writer, "sqlite writer").await;
    }
}

/// Decides, as the write connection goes back to its pool, whether it may be reused
/// (`Ok(true)`) or must be closed (`Ok(false)`; the pool opens a fresh one).
///
/// A write transaction that failed (say `SQLITE_FULL` at `COMMIT` on a full disk) is
/// rolled back when it is dropped; but SQLite may have rolled it back already, or keep
/// it open with the `ROLLBACK` refused, and sqlx then still counts an open transaction.
/// Reused, that connection would nest every later "transaction" as a savepoint inside
/// one that never commits: writes acknowledged, seen by the writer alone, and lost.
/// Closing it rolls back whatever is open. The common case costs one atomic load.
async fn release_writer(conn: &mut sqlx::SqliteConnection) -> Result<bool, sqlx::Error> {
    use sqlx::{Connection, Database, TransactionManager};
    type Manager = <sqlx::Sqlite as Database>::TransactionManager;
    if Manager::get_transaction_depth(conn) == 0 {
        return Ok(true);
    }
    // A dropped transaction queues its rollback on the connection's worker: a ping
    // runs after it, so the depth read next is the one the rollback left.
    conn.ping().await?;
    // Still inside one: close it (the failed write was reported to its caller already).
    Ok(Manager::get_transaction_depth(conn) == 0)
}

/// Most tasks the group committer remembers as it committed them (see [`Written`]).
const WRITTEN_CAP: usize = 16_384;

/// Tasks as the group committer last committed them, by id. A task row changes only
/// through writes that bump its version (`task_update_sql!`; `append_log` touches
/// only `log_seq`, which is not part of a task), so a remembered task whose version
/// is the one a transition expects is exactly the stored row: the committer applies
/// the event to it without reading the row again. The compare-and-swap update still
/// checks the version, so a write by anything else (another process on the file,
/// `save_task`) is a conflict or a miss, never a lost update. Only committed writes
/// are remembered; a failed batch forgets everything.
type Written = HashMap<TaskId, DeploymentTask>;

/// The group committer: runs until every `SqliteStore` clone is dropped.
async fn group_commit(writer: SqlitePool, mut queue: mpsc::Receiver<Pending>) {
    let mut written = Written::new();
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        match commit_batch(&writer, &batch, &written).await {
            Ok(outcomes) => {
                if written.len() + outcomes.len() > WRITTEN_CAP {
                    written.clear();
                }
                for task in outcomes.iter().flatten() {
                    written.insert(task.id, task.clone());
                }
                for (pending, outcome) in batch.into_iter().zip(outcomes) {
                    // A caller that stopped waiting has nobody to tell.
                    let _ = pending.reply.send(outcome);
                }
            }
            Err(e) => {
                written.clear();
                for pending in batch {
                    let error = batch_error(&e, "commit a batch of task transitions");
                    let _ = pending.reply.send(Err(error));
                }
            }
        }
    }
}

/// A failed batch's error for each of its callers: a full disk stays a full disk (the
/// API's 503 that says so), anything else a database error carrying the message.
fn batch_error(e: &StoreError, action: &'static str) -> StoreError {
    let message = match e {
        StoreError::StorageFull { detail, .. } => detail.clone(),
        other => other.to_string(),
    };
    if e.is_storage_full() {
        StoreError::StorageFull {
            action,
            detail: message,
        }
    } else {
        StoreError::Database {
            action,
            source: sqlx::Error::Protocol(message),
        }
    }
}

/// The log committer: every chunk queued while the previous batch was written goes into
/// one transaction (one fsync); each caller hears back only after that commit. A chunk
/// refused on its own (its task is missing) gets its error and the others still commit;
/// a failed commit fails the whole batch. Runs until every `SqliteStore` clone is dropped.
async fn group_commit_logs(writer: SqlitePool, mut queue: mpsc::Receiver<PendingLog>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let committed = async {
            let mut tx = writer
                .begin()
                .await
                .map_err(StoreError::db("begin a group commit of log chunks"))?;
            let outcomes = append_logs(&mut tx, &batch).await?;
            tx.commit()
                .await
                .map_err(StoreError::db("commit a batch of log chunks"))?;
            Ok::<_, StoreError>(outcomes)
        }
        .await;
        match committed {
            Ok(outcomes) => {
                for (chunk, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = chunk.reply.send(outcome);
                }
            }
            Err(e) => {
                for chunk in batch {
                    let error = batch_error(&e, "commit a batch of log chunks");
                    let _ = chunk.reply.send(Err(error));
                }
            }
        }
    }
}

/// Appends a batch of chunks in the caller's transaction with few statements: per chunk
/// one numbering update (which also names its job), per job one cursor bump for all its
/// chunks, then one multi-row insert, and old chunks dropped only for tasks past the
/// bound. The same rows as [`append_log_in`] chunk by chunk, in queue order.
async fn append_logs(
    tx: &mut sqlx::SqliteConnection,
    batch: &[PendingLog],
) -> Result<Vec<Result<u64, StoreError>>, StoreError> {
    let mut numbered: Vec<Result<(u64, Uuid), StoreError>> = Vec::with_capacity(batch.len());
    for chunk in batch {
        let row = sqlx::query(
            "UPDATE tasks SET log_seq = log_seq + 1 WHERE id = $1 RETURNING log_seq, job_id",
        )
        .bind(uuid_text_of(chunk.task))
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::db("number a log chunk"))?;
        numbered.push(match row {
            Some(row) => Ok((
                model::uint("tasks.log_seq", row.i64("log_seq")?)?,
                row.uuid("job_id")?,
            )),
            None => Err(StoreError::NotFound {
                entity: "task",
                id: chunk.task.to_string(),
            }),
        });
    }
    // Each job's positions, handed out in queue order.
    let mut per_job: Vec<(Uuid, i64)> = Vec::new();
    for (job, _) in numbered.iter().flatten().map(|(s, j)| (*j, *s)) {
        match per_job.iter_mut().find(|(j, _)| *j == job) {
            Some((_, n)) => *n += 1,
            None => per_job.push((job, 1)),
        }
    }
    let mut next_cursor = std::collections::HashMap::new();
    for (job, n) in &per_job {
        let row = sqlx::query(
            "UPDATE jobs SET log_cursor = log_cursor + $1 WHERE id = $2 RETURNING log_cursor",
        )
        .bind(*n)
        .bind(job.hyphenated().to_string())
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::db("place log chunks in their job's log"))?;
        next_cursor.insert(*job, row.i64("log_cursor")? - n + 1);
    }
    let keep = model::MAX_LOG_CHUNKS_PER_TASK;
    let rows: Vec<(&PendingLog, u64, Uuid, i64)> = batch
        .iter()
        .zip(&numbered)
        .filter_map(|(chunk, n)| n.as_ref().ok().map(|(seq, job)| (chunk, *seq, *job)))
        .map(|(chunk, seq, job)| {
            let cursor = next_cursor.get_mut(&job).map_or(0, |c| {
                *c += 1;
                *c - 1
            });
            (chunk, seq, job, cursor)
        })
        .collect();
    for part in rows.chunks(200) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO task_log_chunks (task_id, seq, at, content, job_id, job_cursor) ",
        );
        let mut failed = None;
        q.push_values(part, |mut row, (chunk, seq, job, cursor)| {
            let (seq, at) = match (model::int("log seq", *seq), model::millis(chunk.at)) {
                (Ok(s), Ok(a)) => (s, a),
                (Err(e), _) | (_, Err(e)) => {
                    failed = Some(e);
                    (0, 0)
                }
            };
            row.push_bind(uuid_text_of(chunk.task))
                .push_bind(seq)
                .push_bind(at)
                .push_bind(chunk.content.clone())
                .push_bind(job.hyphenated().to_string())
                .push_bind(*cursor);
        });
        if let Some(e) = failed {
            return Err(e);
        }
        q.build()
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("append log chunks"))?;
    }
    for (chunk, seq, _, _) in &rows {
        if *seq > keep {
            sqlx::query("DELETE FROM task_log_chunks WHERE task_id = $1 AND seq <= $2")
                .bind(uuid_text_of(chunk.task))
                .bind(model::int("log chunk bound", seq - keep)?)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("drop old log chunks"))?;
        }
    }
    Ok(numbered
        .into_iter()
        .map(|n| n.map(|(seq, _)| seq))
        .collect())
}

fn uuid_text_of(id: impl Into<Uuid>) -> String {
    id.into().hyphenated().to_string()
}

/// The read-and-decide half of a task transition: loads the task, checks the version and
/// applies the event in memory. Writes nothing, so an error here leaves the transaction clean.
async fn prepare_task_event(
    conn: &mut sqlx::SqliteConnection,
    request: &TaskEventRequest,
) -> Result<(DeploymentTask, deploy_core::TaskStatus), StoreError> {
    let task = load_task(conn, request.id).await?;
    apply_task_request(task, request)
}

/// Writes a batch in one transaction. A transition refused (conflict, invalid event,
/// missing task) gets its own error and writes nothing; any other failed write or
/// the commit fails the whole batch, so nothing of it is committed.
///
/// Each transition's compare-and-swap update runs in batch order (a later one of
/// the same task reads the earlier one's row, or finds its version changed); their
/// event rows are appended at the end, in the same order and the same transaction,
/// by multi-row inserts. A task remembered in `written` at the expected version is
/// not read again (see [`Written`]).
async fn commit_batch(
    writer: &SqlitePool,
    batch: &[Pending],
    written: &Written,
) -> Result<Vec<Result<DeploymentTask, StoreError>>, StoreError> {
    let mut tx = writer
        .begin()
        .await
        .map_err(StoreError::db("begin a group commit"))?;
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut events = Vec::with_capacity(batch.len());
    for pending in batch {
        let request = &pending.request;
        let prepared = match written
            .get(&request.id)
            .filter(|t| t.version == request.expected_version)
        {
            Some(known) => apply_task_request(known.clone(), request),
            None => prepare_task_event(&mut tx, request).await,
        };
        let outcome = match prepared {
            Ok((task, from)) => {
                match write_task(&mut tx, &task, request.expected_version).await {
                    Ok(()) => {}
                    // Zero rows updated: the version moved (earlier in this batch, or
                    // another writer). Nothing was written; refuse this one only.
                    Err(conflict @ StoreError::Conflict { .. }) => {
                        outcomes.push(Err(conflict));
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                events.push(EventRow {
                    job: task.job_id,
                    task: task.id,
                    from,
                    to: task.status,
                    request: &pending.request,
                });
                Ok(task)
            }
            Err(refused) => Err(refused),
        };
        outcomes.push(outcome);
    }
    insert_task_events(&mut tx, &events).await?;
    tx.commit()
        .await
        .map_err(StoreError::db("commit a batch of task transitions"))?;
    Ok(outcomes)
}

/// The `job_events` row of one task transition of a group commit.
struct EventRow<'a> {
    job: deploy_core::JobId,
    task: deploy_core::TaskId,
    from: deploy_core::TaskStatus,
    to: deploy_core::TaskStatus,
    request: &'a TaskEventRequest,
}

/// Event rows per `INSERT` of a group commit: 7 parameters each, well under SQLite's
/// limit of 32,766 bound parameters a statement; few distinct statements to cache.
const EVENTS_PER_INSERT: usize = 64;

/// Appends the event rows of a group commit, in order, `EVENTS_PER_INSERT` to a statement.
async fn insert_task_events(
    conn: &mut sqlx::SqliteConnection,
    events: &[EventRow<'_>],
) -> Result<(), StoreError> {
    for chunk in events.chunks(EVENTS_PER_INSERT) {
        let mut sql = String::from(
            "INSERT INTO job_events (job_id, task_id, event, from_status, to_status, cause, at) VALUES ",
        );
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 {
                "(?, ?, ?, ?, ?, ?, ?)"
            } else {
                ", (?, ?, ?, ?, ?, ?, ?)"
            });
        }
        let mut query = sqlx::query(&sql);
        for row in chunk {
            query = query
                .bind_id(row.job)
                .bind_id(row.task)
                .bind(row.request.event.as_str())
                .bind(row.from.as_str())
                .bind(row.to.as_str())
                .bind(row.request.cause.clone())
                .bind(model::millis(row.request.now)?);
        }
        query
            .execute(&mut *conn)
            .await
            .map_err(StoreError::db("append job events"))?;
    }
    Ok(())
}

/// The newest migration this build knows.
pub(crate) fn supported_version(migrator: &Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}

pub(crate) fn check_version(location: &str, found: Option<i64>) -> Result<(), StoreError> {
    let supported = supported_version(&MIGRATOR);
    match found {
        Some(found) if found > supported => Err(StoreError::SchemaTooNew {
            location: location.to_owned(),
            found,
            supported,
        }),
        _ => Ok(()),
    }
}

/// Refuses a path that is a directory or whose directory does not exist, before anything is created.
fn check_path(path: &Path) -> Result<(), StoreError> {
    let unwritable = |reason: String| StoreError::Unwritable {
        path: path.display().to_string(),
        reason,
    };
    if path.is_dir() {
        return Err(unwritable("it is a directory".to_owned()));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(unwritable(format!(
            "directory `{}` does not exist",
            parent.display()
        )));
    }
    if parent
        .metadata()
        .map(|m| m.permissions().readonly())
        .unwrap_or(true)
    {
        return Err(unwritable(format!(
            "directory `{}` is read-only",
            parent.display()
        )));
    }
    Ok(())
}

/// The highest applied migration, or `None` for a database never migrated.
pub(crate) async fn schema_version(
    pool: &SqlitePool,
    location: &str,
) -> Result<Option<i64>, StoreError> {
    let present = sqlx::query(
        "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_one(pool)
    .await
    .map_err(StoreError::open(location))?
    .i64("n")?;
    if present == 0 {
        return Ok(None);
    }
    sqlx::query("SELECT MAX(version) AS v FROM _sqlx_migrations")
        .fetch_one(pool)
        .await
        .map_err(StoreError::open(location))?
        .opt_i64("v")
}

impl RowExt for SqliteRow {
    fn uuid(&self, col: &'static str) -> Result<Uuid, StoreError> {
        uuid_text(col, &self.string(col)?)
    }
    fn opt_uuid(&self, col: &'static str) -> Result<Option<Uuid>, StoreError> {
        self.opt_string(col)?
            .map(|s| uuid_text(col, &s))
            .transpose()
    }
    row_ext_common!();
}

impl<'q> BindId for sqlx::query::Query<'q, sqlx::Sqlite, SqliteArguments<'q>> {
    fn bind_id(self, id: impl Into<Uuid>) -> Self {
        self.bind(id.into().hyphenated().to_string())
    }
    fn bind_opt_id<T: Into<Uuid>>(self, id: Option<T>) -> Self {
        self.bind(id.map(|id| id.into().hyphenated().to_string()))
    }
}

sql_store!(SqliteStore, sqlx::Sqlite);

#[cfg(test)]
mod tests {
    use sqlx::{Connection, SqliteConnection};

    use super::release_writer;

    /// A connection that sqlx still counts inside a transaction (a rollback that never
    /// happened) is closed, not reused; a clean one, and one whose dropped transaction
    /// rolled back, are reused.
    #[tokio::test]
    async fn a_write_connection_left_in_a_transaction_is_not_reused() {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        assert!(release_writer(&mut conn).await.unwrap(), "clean");
        let tx = conn.begin().await.unwrap();
        drop(tx);
        assert!(
            release_writer(&mut conn).await.unwrap(),
            "rolled back on drop"
        );
        let mut stuck = conn.begin().await.unwrap();
        sqlx::query("CREATE TABLE t (x)")
            .execute(&mut *stuck)
            .await
            .unwrap();
        // Neither committed nor rolled back: what a refused ROLLBACK leaves.
        std::mem::forget(stuck);
        assert!(
            !release_writer(&mut conn).await.unwrap(),
            "still in a transaction"
        );
    }
}
