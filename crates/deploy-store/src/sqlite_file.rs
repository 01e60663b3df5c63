//! The SQLite database as a file: a consistent online copy of it (`deployd backup`), the checks a file must pass before it replaces one, and the replacement, with a whole database at the path at every moment (`deployd restore`).

use std::fs::{Metadata, OpenOptions, Permissions};
use std::hash::BuildHasher;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
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
    /// directory with a random name, created 0600 before a byte is written, fsynced,
    /// then put in place: renamed over `target` when `replace`, else hard-linked to it,
    /// so an existing `target` is never overwritten (`AlreadyExists`); the directory is
    /// fsynced last. A failure or a crash leaves no `target` or a whole one, never half
    /// a backup.
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
        let (dir, name) = dir_and_name(target)?;
        let temp = dir.join(format!(".{name}.tmp-{}", random_suffix()));
        // sqlx opens SQLite with URI filenames: only an absolute path is surely a path.
        let temp_text = temp
            .to_str()
            .ok_or_else(|| {
                file_error(
                    "use a non-UTF-8 path",
                    &temp,
                    ErrorKind::InvalidInput.into(),
                )
            })?
            .to_owned();
        create_private(&temp)?;
        let written = async {
            let pool = connect(options(source)?.read_only(true), &shown).await?;
            let copied = async {
                let version = schema_version(&pool, &shown).await?;
                // VACUUM INTO takes an existing empty file, so it keeps create_private's mode.
                sqlx::query("VACUUM INTO $1")
                    .bind(&temp_text)
                    .execute(&pool)
                    .await
                    .map_err(StoreError::db("copy the database (VACUUM INTO)"))?;
                Ok::<_, StoreError>(version)
            }
            .await;
            crate::pool_close::close_pool(&pool, "sqlite file").await;
            let version = copied?;
            sync_file(&temp)?;
            if replace {
                std::fs::rename(&temp, target).map_err(|e| file_error("rename to", target, e))?;
            } else {
                link_new(&temp, target)?;
            }
            sync_dir(&dir)?;
            Ok::<_, StoreError>(version)
        }
        .await;
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        let version = written?;
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
        crate::pool_close::close_pool(&pool, "sqlite file").await;
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
    /// Where the database it replaced went; `None` when there was none.
    pub moved_aside: Option<PathBuf>,
    /// Why the new file could not be given the owner of the one it replaced (or of
    /// the directory), when it could not (`chown` not permitted).
    pub owner_not_set: Option<String>,
}

/// SQLite's files beside a WAL database: they belong to the file they sit next to.
const SIDECARS: [&str; 2] = ["-wal", "-shm"];

impl SqliteStore {
    /// Replaces the database at `database` with the backup `from`, keeping a whole
    /// database at that path at every moment.
    ///
    /// A `from` with a non-empty `-wal` beside it is refused (the copy would miss its
    /// commits). `from` is copied to a new 0600 file beside `database`, fsynced and
    /// checked ([`SqliteStore::check_file`]), and given the owner and mode of the
    /// database it replaces, before anything else is touched. The current database is
    /// then checkpointed into its file and switched out of WAL, which fails
    /// ([`StoreError::DatabaseBusy`]) while any other process has it open; it is
    /// hard-linked to `<database>.before-restore-<stamp>` (`-2`, `-3`… if taken) and
    /// the copy renamed over it, atomically. A database that cannot be checkpointed
    /// (corrupt) is refused ([`StoreError::CurrentUnreadable`]) unless `force`; then
    /// its `-wal` and `-shm` are moved aside with it first, so for a moment the old
    /// file sits there without its WAL. Every failure undoes what was done.
    pub async fn restore(
        from: &Path,
        database: &Path,
        stamp: &str,
        force: bool,
    ) -> Result<Restored, StoreError> {
        Self::restore_failing(from, database, stamp, force, false).await
    }

    /// [`SqliteStore::restore`], whose last rename fails when `fail_replace` (tests).
    pub(crate) async fn restore_failing(
        from: &Path,
        database: &Path,
        stamp: &str,
        force: bool,
        fail_replace: bool,
    ) -> Result<Restored, StoreError> {
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
        let (dir, name) = dir_and_name(database)?;
        let database = dir.join(&name);
        let temp = dir.join(format!(".{name}.restore-{}", random_suffix()));
        create_private(&temp)?;
        let done = async {
            let info = stage(from, &temp).await?;
            let current = match std::fs::metadata(&database) {
                Ok(m) => Some(m),
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => return Err(file_error("read", &database, e)),
            };
            let owner_not_set = adopt_owner(&temp, current.as_ref(), &dir)?;
            let moved_aside = match current {
                Some(_) => Some(replace(&temp, &database, stamp, force, fail_replace).await?),
                None => {
                    // Sidecars without their database: the new file would replay them.
                    remove_sidecars(&database)?;
                    rename_in(&temp, &database, fail_replace)?;
                    None
                }
            };
            sync_dir(&dir)?;
            Ok(Restored {
                info,
                moved_aside,
                owner_not_set,
            })
        }
        .await;
        if done.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        done
    }
}

/// Copies the backup `from` into `temp` (created empty), fsyncs and checks it.
async fn stage(from: &Path, temp: &Path) -> Result<SqliteFileInfo, StoreError> {
    let copied = std::fs::File::open(from).and_then(|mut source| {
        let mut file = OpenOptions::new().write(true).open(temp)?;
        std::io::copy(&mut source, &mut file)?;
        file.sync_all()
    });
    copied.map_err(|e| file_error("copy the backup to", temp, e))?;
    SqliteStore::check_file(temp).await.map_err(|e| match e {
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

/// Puts `temp` in the place of the existing `database`, which is linked aside first;
/// returns where. See [`SqliteStore::restore`].
async fn replace(
    temp: &Path,
    database: &Path,
    stamp: &str,
    force: bool,
    fail_replace: bool,
) -> Result<PathBuf, StoreError> {
    let forced = match quiesce_patiently(database).await {
        Ok(()) => false,
        Err(e @ StoreError::CurrentUnreadable { .. }) if force => {
            tracing::warn!(error = %e, "restoring over a database that cannot be checkpointed");
            true
        }
        Err(e) => return Err(e),
    };
    let aside = link_aside(database, stamp)?;
    // On a failure: the sidecars moved back, the link removed; `database` never moved.
    let undo = |moved: &[(PathBuf, PathBuf)], e: StoreError| {
        for (from, to) in moved {
            let _ = std::fs::rename(to, from);
        }
        let _ = std::fs::remove_file(&aside);
        e
    };
    // Checkpointed, the old database has no WAL left; else its sidecars go with it,
    // before the new file arrives: a -wal beside the new file would be replayed into it.
    let mut moved = Vec::new();
    if forced {
        for sidecar in SIDECARS {
            let (from, to) = (with_suffix(database, sidecar), with_suffix(&aside, sidecar));
            if from.exists() {
                std::fs::rename(&from, &to)
                    .map_err(|e| undo(&moved, file_error("move aside", &from, e)))?;
                moved.push((from, to));
            }
        }
    }
    sync_dir(&directory_of(database)).map_err(|e| undo(&moved, e))?;
    rename_in(temp, database, fail_replace).map_err(|e| undo(&moved, e))?;
    remove_sidecars(database)?;
    Ok(aside)
}

/// [`quiesce`], tried again twice (0.1 s, then 0.2 s later) while it answers busy: a
/// deployd that was stopped a moment ago may still be exiting, and sqlx's hard close
/// lets go of the file a moment after it stops counting the connection. One that
/// really runs keeps the database busy throughout and is refused after the last try:
/// in a fraction of a second when SQLite refuses to leave WAL at once (CI: 0.5 s for
/// the whole refusing test), a few seconds when each checkpoint waits on a lock. Our
/// own stores leave nothing open once closed ([`crate::pool_close`]): CI's restores
/// refused as busy were sqlx keeping a closed pool's connection, which no wait cures.
async fn quiesce_patiently(database: &Path) -> Result<(), StoreError> {
    const TRIES: u32 = 3;
    let mut pause = std::time::Duration::from_millis(100);
    for _ in 1..TRIES {
        match quiesce(database).await {
            Err(StoreError::DatabaseBusy { .. }) => {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            done => return done,
        }
    }
    quiesce(database).await
}

/// Checkpoints the database at `database` into its file and switches it out of WAL,
/// so that the file alone is the whole database. Leaving WAL needs every other
/// connection closed: SQLite answers BUSY otherwise, which is the proof that no
/// deployd (whatever its data directory) has this database open.
pub(crate) async fn quiesce(database: &Path) -> Result<(), StoreError> {
    let path = database.display().to_string();
    let refused = |e: sqlx::Error| {
        let code = e.as_database_error().and_then(|d| d.code());
        // SQLITE_BUSY and SQLITE_LOCKED, with their extended codes.
        if code
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|c| matches!(c & 0xff, 5 | 6))
        {
            StoreError::DatabaseBusy { path: path.clone() }
        } else {
            StoreError::CurrentUnreadable {
                path: path.clone(),
                reason: e.to_string(),
            }
        }
    };
    // SQLite would open a file that is no database in WAL mode when a -wal is beside it,
    // and on close checkpoint and delete that -wal: such a file is not opened at all.
    let mut header = [0u8; 16];
    let read = std::fs::File::open(database).and_then(|mut f| f.read_exact(&mut header));
    if read.is_err() || &header != b"SQLite format 3\0" {
        return Err(StoreError::CurrentUnreadable {
            path,
            reason: "it does not start with the SQLite header".to_owned(),
        });
    }
    let options = options(database)?
        .create_if_missing(false)
        .busy_timeout(std::time::Duration::from_secs(1));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(refused)?;
    let done = async {
        let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&pool)
            .await
            .map_err(refused)?;
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode=DELETE")
            .fetch_one(&pool)
            .await
            .map_err(refused)?;
        // A busy checkpoint, or a journal mode SQLite kept: someone else has it open.
        if row.try_get::<i64, _>(0).unwrap_or(1) != 0 || !mode.eq_ignore_ascii_case("delete") {
            return Err(StoreError::DatabaseBusy { path: path.clone() });
        }
        Ok(())
    }
    .await;
    crate::pool_close::close_pool(&pool, "sqlite file").await;
    done
}

/// Hard-links `database` to `<database>.before-restore-<stamp>`, or `-2`, `-3`…: a
/// link never replaces a file (EEXIST), so two restores in one second keep both.
fn link_aside(database: &Path, stamp: &str) -> Result<PathBuf, StoreError> {
    let mut n = 1;
    loop {
        let suffix = if n == 1 {
            String::new()
        } else {
            format!("-{n}")
        };
        let aside = with_suffix(database, &format!(".before-restore-{stamp}{suffix}"));
        match std::fs::hard_link(database, &aside) {
            Ok(()) => return Ok(aside),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(file_error("link aside", database, e)),
        }
    }
}

/// The atomic step of a restore: `temp` replaces `database`.
fn rename_in(temp: &Path, database: &Path, fail: bool) -> Result<(), StoreError> {
    let renamed = if fail {
        Err(std::io::Error::other("failure injected by a test"))
    } else {
        std::fs::rename(temp, database)
    };
    renamed.map_err(|e| file_error("rename to", database, e))
}

fn remove_sidecars(database: &Path) -> Result<(), StoreError> {
    for sidecar in SIDECARS {
        let path = with_suffix(database, sidecar);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(file_error("remove", &path, e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Gives `temp` the mode and owner of the database it replaces (or the owner of
/// `dir` when there is none): a restore run as root must leave a file the service
/// user can open. Returns why the owner could not be set, when `chown` is refused.
fn adopt_owner(
    temp: &Path,
    current: Option<&Metadata>,
    dir: &Path,
) -> Result<Option<String>, StoreError> {
    let reference = match current {
        Some(m) => {
            std::fs::set_permissions(temp, Permissions::from_mode(m.mode() & 0o777))
                .map_err(|e| file_error("set the permissions of", temp, e))?;
            m.clone()
        }
        None => std::fs::metadata(dir).map_err(|e| file_error("read", dir, e))?,
    };
    let mine = std::fs::metadata(temp).map_err(|e| file_error("read", temp, e))?;
    let (uid, gid) = (reference.uid(), reference.gid());
    if (mine.uid(), mine.gid()) == (uid, gid) {
        return Ok(None);
    }
    match std::os::unix::fs::chown(temp, Some(uid), Some(gid)) {
        Ok(()) => Ok(None),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Ok(Some(format!(
            "it is owned by {}:{}, not {uid}:{gid} like the file it replaces (or its \
             directory): chown was refused ({e})",
            mine.uid(),
            mine.gid()
        ))),
        Err(e) => Err(file_error("change the owner of", temp, e)),
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

/// The absolute directory of `path` (relative to the working directory) and its
/// file name, which must be UTF-8.
fn dir_and_name(path: &Path) -> Result<(PathBuf, String), StoreError> {
    let invalid = || file_error("use", path, ErrorKind::InvalidInput.into());
    let name = path
        .file_name()
        .ok_or_else(invalid)?
        .to_str()
        .ok_or_else(invalid)?;
    let dir =
        std::path::absolute(directory_of(path)).map_err(|e| file_error("resolve", path, e))?;
    Ok((dir, name.to_owned()))
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A part of a file name no other process can guess (std's random hash keys).
fn random_suffix() -> String {
    let n = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    format!("{}-{n:016x}", std::process::id())
}

/// Creates `path`, empty and 0600 from the start: it will hold what the database
/// holds (token hashes, sealed secrets, the audit log). `create_new` refuses a file
/// or a symlink planted at the name instead of following it.
fn create_private(path: &Path) -> Result<(), StoreError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(|e| file_error("create", path, e))
}

/// Puts the finished `temp` at `target` unless a file is there: a hard link fails
/// rather than replace one. Where the filesystem has no hard links, an existence
/// check then a rename does it, with a race (a `target` created in between is
/// replaced) that docs/operations.md states.
fn link_new(temp: &Path, target: &Path) -> Result<(), StoreError> {
    match std::fs::hard_link(temp, target) {
        Ok(()) => std::fs::remove_file(temp).map_err(|e| file_error("remove", temp, e)),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::PermissionDenied | ErrorKind::Unsupported
            ) =>
        {
            if target.symlink_metadata().is_ok() {
                return Err(file_error(
                    "create",
                    target,
                    ErrorKind::AlreadyExists.into(),
                ));
            }
            std::fs::rename(temp, target).map_err(|e| file_error("rename to", target, e))
        }
        Err(e) => Err(file_error("create", target, e)),
    }
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
