//! `StoreError`: every way a store operation fails, each naming the entity, id, path or version involved.

use deploy_core::{EnvironmentId, InvalidTransition, JobId};
use thiserror::Error;

/// A store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database file or its directory cannot be created or written.
    #[error("cannot open the database at `{path}` for writing: {reason}")]
    Unwritable { path: String, reason: String },
    /// The database cannot be opened or reached.
    #[error("cannot open the database at `{location}`: {source}")]
    Open {
        location: String,
        #[source]
        source: sqlx::Error,
    },
    /// A TLS setting of the PostgreSQL url is unknown, or names a file that cannot be used.
    #[error("`{key}={value}` in the database url {problem}")]
    TlsSetting {
        key: String,
        value: String,
        problem: String,
    },
    /// The database was migrated by a newer build; nothing was modified.
    #[error(
        "the database at `{location}` has schema version {found}, newer than version {supported} that this build supports; it was left unmodified"
    )]
    SchemaTooNew {
        location: String,
        found: i64,
        supported: i64,
    },
    /// A compare-and-swap write lost: someone else wrote first.
    #[error(
        "{entity} `{id}` was modified concurrently: expected version {expected}, found {}",
        found.map_or_else(|| "no row".to_owned(), |v| format!("version {v}"))
    )]
    Conflict {
        entity: &'static str,
        id: String,
        expected: u64,
        found: Option<u64>,
    },
    #[error("{entity} `{id}` does not exist")]
    NotFound { entity: &'static str, id: String },
    #[error("{entity} `{id}` already exists")]
    AlreadyExists { entity: &'static str, id: String },
    /// A unique name (an environment's, a release's, a target's in its environment) is held by another row.
    #[error("{entity} name `{name}` is already taken by {entity} `{existing}`")]
    NameTaken {
        entity: &'static str,
        name: String,
        /// The id of the entity that holds the name.
        existing: String,
    },
    /// The entity cannot be deleted while an active job uses it.
    #[error(
        "{entity} `{id}` is used by active job `{job}`; wait for it to settle or cancel it first"
    )]
    InUse {
        entity: &'static str,
        id: String,
        job: JobId,
    },
    /// The environment already has a non-terminal job.
    #[error("environment `{environment}` is locked by running job `{job}`")]
    EnvironmentLocked {
        environment: EnvironmentId,
        job: JobId,
    },
    /// The caller does not (or no longer) hold the job's lease.
    #[error(
        "job `{job}` is not leased by `{owner}`; {}",
        holder.as_ref().map_or_else(|| "nobody holds it".to_owned(), |h| format!("`{h}` holds it"))
    )]
    LeaseLost {
        job: JobId,
        owner: String,
        holder: Option<String>,
    },
    #[error(transparent)]
    InvalidTransition(#[from] InvalidTransition),
    #[error("log chunk of task `{task}` is {size} bytes; the limit is {limit}")]
    LogChunkTooLarge {
        task: String,
        size: usize,
        limit: usize,
    },
    /// A stored value no longer parses as its domain type.
    #[error("stored {column} `{value}` is invalid: {reason}")]
    Corrupt {
        column: &'static str,
        value: String,
        reason: String,
    },
    #[error("{field} {value} does not fit in a signed 64-bit database integer")]
    OutOfRange { field: &'static str, value: u64 },
    #[error("cannot migrate the database at `{location}`: {source}")]
    Migrate {
        location: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A file given as (or for) a backup of the SQLite database cannot be used as one.
    #[error("cannot use `{path}` as a deployd SQLite database: {reason}")]
    NotABackup { path: String, reason: String },
    /// A restore found the database it would replace open in another process.
    #[error(
        "cannot replace `{path}`: another process has it open (a deployd may be running \
         on it); stop it first"
    )]
    DatabaseBusy { path: String },
    /// A restore cannot checkpoint the database it would replace (it may be corrupt),
    /// so it cannot tell that it is whole and unused.
    #[error(
        "cannot check the database `{path}` that the restore would replace: {reason}; \
         a forced restore moves it aside as it is"
    )]
    CurrentUnreadable { path: String, reason: String },
    /// A file operation of a backup or a restore failed.
    #[error("cannot {action} `{path}`: {source}")]
    File {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot {action}: {source}")]
    Database {
        action: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// The database's storage has no room left (SQLite `SQLITE_FULL`, PostgreSQL
    /// `disk_full`); nothing of the write was committed. Reads still work, and the
    /// same write succeeds once space is freed, without a restart.
    #[error(
        "cannot {action}: the database storage is full ({detail}); free space on its volume and retry"
    )]
    StorageFull {
        action: &'static str,
        detail: String,
    },
}

/// SQLite's `SQLITE_FULL` (also returned for `ENOSPC` on the database, WAL or journal).
const SQLITE_FULL: &str = "13";
/// SQLite's `SQLITE_IOERR_SHMSIZE`: the WAL index could not grow (a full `-shm` filesystem).
const SQLITE_IOERR_SHMSIZE: &str = "4874";
/// PostgreSQL's `disk_full` SQLSTATE.
const PG_DISK_FULL: &str = "53100";

/// True when `e` says the database's storage is full.
fn storage_full(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| [SQLITE_FULL, SQLITE_IOERR_SHMSIZE, PG_DISK_FULL].contains(&&*c)),
        _ => false,
    }
}

impl StoreError {
    /// Wraps a database error with what was being done ("insert job").
    pub(crate) fn db(action: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| {
            if storage_full(&source) {
                Self::StorageFull {
                    action,
                    detail: source.to_string(),
                }
            } else {
                Self::Database { action, source }
            }
        }
    }

    /// True when the write failed because the database's storage is full.
    pub fn is_storage_full(&self) -> bool {
        matches!(self, Self::StorageFull { .. })
    }

    /// Wraps an error opening or reaching the database at `location`.
    pub(crate) fn open(location: &str) -> impl FnOnce(sqlx::Error) -> Self {
        let location = location.to_owned();
        move |source| Self::Open { location, source }
    }

    /// Wraps a stored value that failed to parse.
    pub(crate) fn corrupt(
        column: &'static str,
        value: impl Into<String>,
    ) -> impl FnOnce(String) -> Self {
        let value = value.into();
        move |reason| Self::Corrupt {
            column,
            value,
            reason,
        }
    }

    /// True when the database could not be reached or dropped the connection (a
    /// restart, a failover, a network cut, a pool that found no live connection in
    /// time): the operation may succeed when tried again later, unlike a refused
    /// write or a corrupt row. The HTTP API answers these with 503, and the engine
    /// keeps a job (and its lease) across them instead of giving it up.
    pub fn is_unavailable(&self) -> bool {
        let source = match self {
            Self::Database { source, .. } | Self::Open { source, .. } => source,
            _ => return false,
        };
        match source {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            // SQLSTATE class 08 (connection exception) and 57P01..57P03 (the server
            // is shutting down, crashed, or not accepting connections yet).
            sqlx::Error::Database(e) => e
                .code()
                .is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03")),
            _ => false,
        }
    }

    /// True for a unique-constraint violation (the caller then looks up what it collided with).
    pub(crate) fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            Self::Database { source: sqlx::Error::Database(e), .. } if e.is_unique_violation()
        )
    }

    /// True for a foreign-key violation (a row refers to one that does not exist).
    pub(crate) fn is_foreign_key_violation(&self) -> bool {
        matches!(
            self,
            Self::Database { source: sqlx::Error::Database(e), .. } if e.is_foreign_key_violation()
        )
    }
}

#[cfg(test)]
mod tests {
    use sqlx::sqlite::SqlitePoolOptions;

    use super::*;

    fn db(source: sqlx::Error) -> StoreError {
        StoreError::db("read a job")(source)
    }

    #[test]
    fn only_connection_failures_are_unavailable() {
        let refused = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(db(sqlx::Error::Io(refused())).is_unavailable());
        assert!(db(sqlx::Error::PoolTimedOut).is_unavailable());
        assert!(db(sqlx::Error::PoolClosed).is_unavailable());
        assert!(StoreError::open("postgres://db/x")(sqlx::Error::Io(refused())).is_unavailable());
        assert!(!db(sqlx::Error::RowNotFound).is_unavailable());
        assert!(!db(sqlx::Error::Protocol("bad message".to_owned())).is_unavailable());
        let conflict = StoreError::Conflict {
            entity: "job",
            id: "j".to_owned(),
            expected: 1,
            found: Some(2),
        };
        assert!(!conflict.is_unavailable());
    }

    /// A real SQLite out of pages (`max_page_count`) gives `SQLITE_FULL`, as a full disk does.
    #[tokio::test]
    async fn a_full_sqlite_database_is_storage_full_and_says_so() {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (b BLOB)")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("PRAGMA max_page_count = 8")
            .execute(&pool)
            .await
            .unwrap();
        let full = sqlx::query("INSERT INTO t VALUES (zeroblob(100000))")
            .execute(&pool)
            .await
            .map_err(StoreError::db("insert a blob"))
            .unwrap_err();
        assert!(full.is_storage_full(), "{full:?}");
        let message = full.to_string();
        assert!(
            message.starts_with("cannot insert a blob: the database storage is full ("),
            "{message}"
        );
        // Any other database error stays what it was.
        let other = sqlx::query("INSERT INTO missing VALUES (1)")
            .execute(&pool)
            .await
            .map_err(StoreError::db("insert a row"))
            .unwrap_err();
        assert!(!other.is_storage_full(), "{other:?}");
        assert!(matches!(other, StoreError::Database { .. }), "{other:?}");
    }
}
