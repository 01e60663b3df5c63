//! `SqliteStore`: the embedded default. WAL, foreign keys, a busy timeout, one writer connection and a pool of read-only readers.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::Row;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use uuid::Uuid;

use crate::errors::StoreError;
use crate::model::{self, Created, JobEventRecord, LastKnownGood, LogChunk};
use crate::model::{AgentRecord, ApiTokenRecord};
use crate::rows::{self, RowExt, row_ext_common, uuid_text};
use crate::sql::{BindId, sql_store};
use crate::store::Store;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

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
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Claims with no row locking: the single writer serialises claimers.
    const CLAIM_SQL: &'static str = "UPDATE jobs SET claimed_by = $1, lease_until = $2
        WHERE id IN (
            SELECT id FROM jobs
            WHERE status IN ('pending', 'preparing', 'running', 'completing', 'rolling_back')
              AND (claimed_by IS NULL OR lease_until < $3)
            ORDER BY created_at, id LIMIT $4)
        RETURNING id";

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
                .map_err(StoreError::db("open the database read-only"))?;
            let found = schema_version(&probe).await;
            probe.close().await;
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
        MIGRATOR
            .run(&writer)
            .await
            .map_err(|source| StoreError::Migrate {
                location: shown.clone(),
                source,
            })?;
        let reader = SqlitePoolOptions::new()
            .max_connections(config.read_connections.max(1))
            .connect_with(base.read_only(true))
            .await
            .map_err(StoreError::db("open the read connections"))?;
        Ok(Self { writer, reader })
    }

    /// Closes both pools, waiting for connections in use.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

/// The newest migration this build knows.
pub(crate) fn supported_version(migrator: &Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}

fn check_version(location: &str, found: Option<i64>) -> Result<(), StoreError> {
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
async fn schema_version(pool: &SqlitePool) -> Result<Option<i64>, StoreError> {
    let present = sqlx::query(
        "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_one(pool)
    .await
    .map_err(StoreError::db("read the schema version"))?
    .i64("n")?;
    if present == 0 {
        return Ok(None);
    }
    sqlx::query("SELECT MAX(version) AS v FROM _sqlx_migrations")
        .fetch_one(pool)
        .await
        .map_err(StoreError::db("read the schema version"))?
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
