//! The SQLite database as a file: a consistent online copy of it (`deployd backup`) and the checks a file must pass before it replaces one (`deployd restore`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use crate::errors::StoreError;
use crate::sqlite::{MIGRATOR, SqliteStore, check_version, schema_version, supported_version};

/// What a database file holds, as far as a backup or a restore cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteFileInfo {
    /// Size of the file in bytes.
    pub bytes: u64,
    /// The newest migration applied to it.
    pub schema_version: i64,
    /// The newest migration of this build.
    pub supported_version: i64,
}

impl SqliteStore {
    /// Writes a consistent copy of the database at `source` to `target`, while other
    /// connections and processes (a running deployd) keep writing it.
    ///
    /// The copy is one `VACUUM INTO` on a read-only connection: it runs in one read
    /// transaction, so it is the database as of one commit (WAL: it neither waits for
    /// the writer nor holds it up), compacted. It goes to a new file in `target`'s
    /// directory, readable by its owner only (0600), fsynced, then put in place:
    /// renamed over `target` when `replace`, else hard-linked to it, so an existing
    /// `target` is never overwritten (`AlreadyExists`); the directory is fsynced last.
    /// A failure or a crash leaves no `target` or a whole one, never half a backup.
    pub async fn backup(
        source: &Path,
        target: &Path,
        replace: bool,
    ) -> Result<SqliteFileInfo, StoreError> {
        let shown = source.display().to_string();
        if !source.is_file() {
            return Err(StoreError::NotABackup {
                path: shown,
                reason: "there is no database file there".to_owned(),
            });
        }
        let dir = directory_of(target);
        let name = target
            .file_name()
            .ok_or_else(|| file_error("name", target, std::io::ErrorKind::InvalidInput.into()))?;
        let temp = dir.join(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let pool = connect(options(source)?.read_only(true), &shown).await?;
        let copied = async {
            let version = schema_version(&pool, &shown).await?;
            sqlx::query("VACUUM INTO $1")
                .bind(temp.to_string_lossy().into_owned())
                .execute(&pool)
                .await
                .map_err(StoreError::db("copy the database (VACUUM INTO)"))?;
            Ok::<_, StoreError>(version)
        }
        .await;
        pool.close().await;
        let placed = copied.and_then(|version| {
            // It holds what the database holds (token hashes, sealed secrets, the audit log).
            std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| file_error("restrict the permissions of", &temp, e))?;
            sync_file(&temp)?;
            if replace {
                std::fs::rename(&temp, target).map_err(|e| file_error("rename to", target, e))?;
            } else {
                std::fs::hard_link(&temp, target).map_err(|e| file_error("create", target, e))?;
                std::fs::remove_file(&temp).map_err(|e| file_error("remove", &temp, e))?;
            }
            sync_dir(&dir)?;
            Ok(version)
        });
        let version = match placed {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                return Err(e);
            }
        };
        let bytes = std::fs::metadata(target)
            .map_err(|e| file_error("read", target, e))?
            .len();
        Ok(SqliteFileInfo {
            bytes,
            schema_version: version.unwrap_or(0),
            supported_version: supported_version(&MIGRATOR),
        })
    }

    /// Checks that `file` is a database of this store that this build can open:
    /// `PRAGMA integrity_check` answers `ok`, it has the migrations table, and its
    /// schema is not newer than this build's ([`StoreError::SchemaTooNew`]). Anything
    /// else is [`StoreError::NotABackup`] with the reason. The file is opened read-only
    /// and immutable: nothing is written to it or next to it.
    pub async fn check_file(file: &Path) -> Result<SqliteFileInfo, StoreError> {
        let shown = file.display().to_string();
        let not_ours = |reason: String| StoreError::NotABackup {
            path: shown.clone(),
            reason,
        };
        let bytes = std::fs::metadata(file)
            .map_err(|e| not_ours(format!("cannot read it: {e}")))?
            .len();
        let pool = connect(options(file)?.read_only(true).immutable(true), &shown).await?;
        let checked = async {
            let rows = sqlx::query("PRAGMA integrity_check")
                .fetch_all(&pool)
                .await
                .map_err(|e| not_ours(format!("it is not a readable SQLite database ({e})")))?;
            let problems: Vec<String> = rows
                .iter()
                .filter_map(|r| r.try_get::<String, _>(0).ok())
                .filter(|m| m != "ok")
                .collect();
            if !problems.is_empty() {
                return Err(not_ours(format!(
                    "PRAGMA integrity_check found problems: {}",
                    problems.join("; ")
                )));
            }
            let Some(version) = schema_version(&pool, &shown).await? else {
                return Err(not_ours(
                    "it has no `_sqlx_migrations` table, so it is no deployd database".to_owned(),
                ));
            };
            check_version(&shown, Some(version))?;
            Ok(version)
        }
        .await;
        pool.close().await;
        Ok(SqliteFileInfo {
            bytes,
            schema_version: checked?,
            supported_version: supported_version(&MIGRATOR),
        })
    }
}

/// What [`SqliteStore::restore`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The database now in place (the backup's copy).
    pub info: SqliteFileInfo,
    /// Where the database it replaced went (its `-wal` beside it, if it had one);
    /// `None` when there was none.
    pub moved_aside: Option<PathBuf>,
}

/// SQLite's files beside a WAL database: they belong to the file they sit next to.
const SIDECARS: [&str; 2] = ["-wal", "-shm"];

impl SqliteStore {
    /// Replaces the database at `database` with the backup `from`. The caller makes sure
    /// no process has `database` open (deployd's data directory lock).
    ///
    /// A `from` with a non-empty `-wal` beside it is refused (the copy would miss its
    /// commits). `from` is copied to a new file beside `database` and fsynced, and that copy is
    /// checked ([`SqliteStore::check_file`]) before anything is moved. Then the current
    /// database, if any, is renamed to `<database>.before-restore-<stamp>`, with its
    /// `-wal` and `-shm` (a WAL left beside the new file would be replayed into it), and
    /// the copy is renamed into place; the directory is fsynced.
    pub async fn restore(
        from: &Path,
        database: &Path,
        stamp: &str,
    ) -> Result<Restored, StoreError> {
        let dir = directory_of(database);
        let name = database
            .file_name()
            .ok_or_else(|| file_error("name", database, std::io::ErrorKind::InvalidInput.into()))?
            .to_string_lossy()
            .into_owned();
        let wal = PathBuf::from(format!("{}-wal", from.display()));
        if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
            return Err(StoreError::NotABackup {
                path: from.display().to_string(),
                reason: format!(
                    "`{}` beside it holds commits that a copy of the file alone would lose; \
                     checkpoint it first (`sqlite3 FILE 'PRAGMA wal_checkpoint(TRUNCATE)'`) \
                     or restore a file written by `deployd backup`",
                    wal.display()
                ),
            });
        }
        let temp = dir.join(format!(".{name}.restore-{}", std::process::id()));
        let copied = async {
            std::fs::copy(from, &temp).map_err(|e| file_error("copy the backup to", &temp, e))?;
            sync_file(&temp)?;
            Self::check_file(&temp).await.map_err(|e| match e {
                StoreError::NotABackup { reason, .. } => StoreError::NotABackup {
                    path: from.display().to_string(),
                    reason,
                },
                StoreError::SchemaTooNew {
                    found, supported, ..
                } => StoreError::SchemaTooNew {
                    location: from.display().to_string(),
                    found,
                    supported,
                },
                other => other,
            })
        }
        .await;
        let info = match copied {
            Ok(info) => info,
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                return Err(e);
            }
        };
        let aside = dir.join(format!("{name}.before-restore-{stamp}"));
        let moved_aside = if database.exists() {
            std::fs::rename(database, &aside).map_err(|e| file_error("move aside", database, e))?;
            Some(aside.clone())
        } else {
            None
        };
        for sidecar in SIDECARS {
            let from = dir.join(format!("{name}{sidecar}"));
            if from.exists() {
                let to = dir.join(format!("{name}.before-restore-{stamp}{sidecar}"));
                std::fs::rename(&from, &to).map_err(|e| file_error("move aside", &from, e))?;
            }
        }
        std::fs::rename(&temp, database).map_err(|e| file_error("rename to", database, e))?;
        sync_dir(&dir)?;
        Ok(Restored { info, moved_aside })
    }
}

fn options(path: &Path) -> Result<SqliteConnectOptions, StoreError> {
    Ok(SqliteConnectOptions::from_str("sqlite:")
        .map_err(StoreError::db("build sqlite options"))?
        .filename(path)
        .busy_timeout(std::time::Duration::from_secs(5)))
}

async fn connect(options: SqliteConnectOptions, shown: &str) -> Result<SqlitePool, StoreError> {
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(StoreError::open(shown))
}

/// The directory a new file at `path` goes into.
fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn file_error(action: &'static str, path: &Path, source: std::io::Error) -> StoreError {
    StoreError::File {
        action,
        path: path.display().to_string(),
        source,
    }
}

fn sync_file(path: &Path) -> Result<(), StoreError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| file_error("fsync", path, e))
}

/// Makes a rename or link in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| file_error("fsync the directory", dir, e))
}
