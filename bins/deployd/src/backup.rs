//! `deployd backup` (a consistent copy of the SQLite database while deployd runs) and `deployd restore` (putting one back while no process has the database open).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use deploy_core::Timestamp;
use deploy_engine::{Clock, SystemClock};
use deploy_store::{SqliteStore, StoreConfig, StoreError};

use crate::config::Config;
use crate::{identity, subcommand};

/// Where a PostgreSQL operator is sent instead.
const POSTGRES_DOCS: &str = "docs/operations.md, \"Backup and restore\"";

/// The database flags of deployd, so these commands reach the very database it uses.
#[derive(Debug, clap::Args)]
pub struct DatabaseFlags {
    /// deployd's TOML configuration file (its database_url and data_dir are used).
    #[arg(long, env = "DEPLOYD_CONFIG")]
    pub config: Option<PathBuf>,
    /// deployd's data directory (default ./deployd-data).
    #[arg(long, env = "DEPLOYD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// `sqlite:PATH`; default: SQLite under the data dir. A PostgreSQL url is refused:
    /// back it up with `pg_dump`.
    #[arg(long, env = "DEPLOYD_DATABASE_URL")]
    pub database_url: Option<String>,
}

/// deployd backup: a consistent copy of deployd's SQLite database, taken while it runs.
///
/// The copy is the database as of one commit, even while jobs write (SQLite
/// `VACUUM INTO` in one read transaction; deployd is not paused). It is written to a
/// temporary file beside FILE (mode 0600 from the start), fsynced, then linked (or,
/// with --force, renamed) into place: FILE is whole or absent. The secrets key file (<data dir>/secrets.key) is not in it: keep a copy of
/// that file apart from the backups.
///
/// For PostgreSQL use `pg_dump --format=custom` (docs/operations.md).
///
/// Exit status: 0 written, 2 bad configuration or FILE exists, 1 the copy failed.
///
/// Examples:
///   deployd backup --data-dir /var/lib/deployd --to /backup/deployd-2026-12-06.sqlite
///   deployd backup --config /etc/deployd.toml --to /backup/deployd.sqlite --force
#[derive(Debug, Parser)]
#[command(
    name = "deployd backup",
    bin_name = "deployd backup",
    verbatim_doc_comment
)]
pub struct BackupArgs {
    #[command(flatten)]
    pub database: DatabaseFlags,
    /// The backup file to write; refused if it exists, unless --force.
    #[arg(long, value_name = "FILE")]
    pub to: PathBuf,
    /// Replace FILE if it exists (atomically: the old backup stays whole until the new one is).
    #[arg(long)]
    pub force: bool,
}

/// deployd restore: replace deployd's SQLite database with a backup.
///
/// Only while no deployd runs on the database: it takes deployd's lock
/// (<data dir>/deployd.lock), and refuses when any process has the database open
/// (switching it out of WAL fails then). FILE must be a database of deployd (PRAGMA
/// integrity_check ok, a migrations table, a schema not newer than this build's). The
/// current database is checkpointed, kept as <database>.before-restore-<UTC time>
/// (a hard link, never deleted), and the backup's copy, with the owner and mode of
/// the database it replaces, is renamed over it: a whole database is at the path at
/// every moment. The next deployd start migrates it if it is older than the build. It needs the secrets key file of the deployd that
/// wrote the backup (<data dir>/secrets.key) when application secrets are stored.
///
/// For PostgreSQL use `pg_restore` (docs/operations.md).
///
/// Exit status: 0 restored, 2 bad configuration, 1 refused or failed (deployd runs,
/// FILE is no deployd database, the current database cannot be checkpointed and no
/// --force, a file operation failed).
///
/// Examples:
///   deployd restore --data-dir /var/lib/deployd --from /backup/deployd-2026-12-06.sqlite
#[derive(Debug, Parser)]
#[command(
    name = "deployd restore",
    bin_name = "deployd restore",
    verbatim_doc_comment
)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub database: DatabaseFlags,
    /// The backup to restore (a file `deployd backup` wrote).
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// Restore even when the current database cannot be checkpointed (it is corrupt):
    /// it is moved aside as it is, with its -wal and -shm.
    #[arg(long)]
    pub force: bool,
}

/// `deployd backup …` (`args` starts with `backup`).
pub fn backup_main(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    subcommand::run("deployd backup", args, backup_config, backup)
}

/// `deployd restore …` (`args` starts with `restore`).
pub fn restore_main(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    subcommand::run("deployd restore", args, restore_config, restore)
}

/// deployd's configuration (file, environment, these flags).
fn config(flags: &DatabaseFlags) -> anyhow::Result<Config> {
    subcommand::server_config(
        flags.config.as_ref(),
        flags.data_dir.as_ref(),
        flags.database_url.as_ref(),
    )
}

/// The SQLite file of `config`; a PostgreSQL database is refused with where to look.
fn sqlite_path(config: &Config, pg_tool: &str) -> anyhow::Result<PathBuf> {
    match &config.store {
        StoreConfig::Sqlite(sqlite) => Ok(sqlite.path.clone()),
        StoreConfig::Postgres(_) => bail!(
            "the database is PostgreSQL ({}); this command handles deployd's SQLite \
             database only: use `{pg_tool}` (see {POSTGRES_DOCS})",
            config.database_display
        ),
    }
}

/// `path` as text: the store hands it to SQLite, whose file names are UTF-8.
fn utf8(flag: &str, path: &Path) -> anyhow::Result<()> {
    if path.to_str().is_none() {
        bail!(
            "{flag} `{}` is not valid UTF-8; expected a UTF-8 path",
            path.display()
        );
    }
    Ok(())
}

/// `path` made absolute, to show which file was meant (a relative data dir resolves
/// against the working directory).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn backup_config(args: &BackupArgs) -> anyhow::Result<PathBuf> {
    utf8("--to", &args.to)?;
    let config = config(&args.database)?;
    let source = sqlite_path(&config, "pg_dump --format=custom")?;
    if !source.is_file() {
        bail!(
            "there is no database at `{}`; expected the data directory of an existing \
             deployd (--data-dir) or its --database-url",
            source.display()
        );
    }
    if !args.force && args.to.symlink_metadata().is_ok() {
        bail!(
            "--to `{}` already exists; expected a new file (--force replaces it)",
            args.to.display()
        );
    }
    let same = |a: &Path, b: &Path| {
        a.canonicalize()
            .ok()
            .zip(b.canonicalize().ok())
            .is_some_and(|(a, b)| a == b)
    };
    if same(&source, &args.to) {
        bail!("--to `{}` is the database itself", args.to.display());
    }
    Ok(source)
}

#[expect(
    clippy::print_stdout,
    reason = "the command run by hand (or a cron job) reports what it wrote on stdout"
)]
async fn backup(args: BackupArgs, source: PathBuf) -> anyhow::Result<()> {
    let started = Instant::now();
    let info = SqliteStore::backup(&source, &args.to, args.force)
        .await
        .map_err(|e| match e {
            StoreError::File { source, .. }
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                anyhow::anyhow!(
                    "--to `{}` was created by someone else meanwhile; it was left as it is \
                     (--force replaces it)",
                    absolute(&args.to).display()
                )
            }
            other => anyhow::Error::new(other),
        })
        .with_context(|| format!("cannot back up `{}`", absolute(&source).display()))?;
    println!(
        "backup of `{}` written to `{}`: {} bytes, schema version {}, in {} ms",
        absolute(&source).display(),
        absolute(&args.to).display(),
        info.bytes,
        info.schema_version,
        started.elapsed().as_millis()
    );
    Ok(())
}

/// The database to restore to, and deployd's configuration (read once).
fn restore_config(args: &RestoreArgs) -> anyhow::Result<(PathBuf, Config)> {
    utf8("--from", &args.from)?;
    let config = config(&args.database)?;
    let database = sqlite_path(&config, "pg_restore")?;
    if !args.from.is_file() {
        bail!(
            "--from `{}` is not a file; expected a backup written by `deployd backup`",
            args.from.display()
        );
    }
    Ok((database, config))
}

#[expect(
    clippy::print_stdout,
    reason = "the command is run by hand: it reports what it did on stdout"
)]
async fn restore(args: RestoreArgs, (database, config): (PathBuf, Config)) -> anyhow::Result<()> {
    // deployd's own start-up: the data directory comes from the same flags. A deployd
    // on this database with another data directory is caught by the store instead
    // (`StoreError::DatabaseBusy`).
    let _lock = identity::lock(&config.data_dir).context("cannot restore while deployd runs")?;
    let database = absolute(&database);
    if let Some(dir) = database.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the directory `{}`", dir.display()))?;
    }
    let now = stamp(SystemClock.now());
    let restored = SqliteStore::restore(&args.from, &database, &now, args.force)
        .await
        .with_context(|| format!("cannot restore `{}`", absolute(&args.from).display()))?;
    let info = &restored.info;
    println!(
        "restored `{}` ({} bytes, schema version {}; this build's is {}) to `{}`",
        absolute(&args.from).display(),
        info.bytes,
        info.schema_version,
        info.supported_version,
        database.display()
    );
    match &restored.moved_aside {
        Some(aside) => println!("the previous database is now `{}`", aside.display()),
        None => println!(
            "there was no database at `{}` before: restored into a fresh data directory",
            database.display()
        ),
    }
    if let Some(why) = &restored.owner_not_set {
        println!(
            "warning: the owner of `{}` could not be set: {why}; chown it to the user \
             deployd runs as before starting deployd",
            database.display()
        );
    }
    let key = &config.secrets_key_file;
    if !key.exists() {
        println!(
            "no secrets key file at `{}`: put there the one of the deployd that wrote the \
             backup before starting deployd (its application secrets need it)",
            absolute(key).display()
        );
    }
    Ok(())
}

/// `2026-12-06T11:02:03.456Z` as `20261206T110203Z`, for a file name.
fn stamp(now: Timestamp) -> String {
    let text = now.to_rfc3339();
    let seconds = text.split('.').next().unwrap_or(&text);
    let mut compact: String = seconds
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    compact.push('Z');
    compact
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stamp_is_a_compact_utc_time() {
        let t = Timestamp::from_unix_millis(1_764_149_621_123).unwrap();
        assert_eq!(stamp(t), "20251126T093341Z");
    }

    #[test]
    fn postgres_is_refused_naming_its_tools() {
        let backup = BackupArgs::try_parse_from([
            "backup",
            "--database-url",
            "postgres://deploy:pw@127.0.0.1:5432/deploy",
            "--to",
            "/tmp/x",
        ])
        .unwrap();
        let err = format!("{:#}", backup_config(&backup).unwrap_err());
        assert!(err.contains("pg_dump --format=custom"), "{err}");
        assert!(err.contains("docs/operations.md"), "{err}");
        assert!(!err.contains("pw"), "{err}");
        let restore = RestoreArgs::try_parse_from([
            "restore",
            "--database-url",
            "postgres://deploy@127.0.0.1:5432/deploy",
            "--from",
            "/tmp/x",
        ])
        .unwrap();
        let err = format!("{:#}", restore_config(&restore).unwrap_err());
        assert!(err.contains("pg_restore"), "{err}");
    }

    #[test]
    fn a_backup_refuses_a_missing_database_and_an_existing_target() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap();
        let target = dir.path().join("b.sqlite");
        let args = |force: bool| {
            let mut argv = vec![
                "backup",
                "--data-dir",
                data,
                "--to",
                target.to_str().unwrap(),
            ];
            if force {
                argv.push("--force");
            }
            BackupArgs::try_parse_from(argv).unwrap()
        };
        let err = format!("{:#}", backup_config(&args(false)).unwrap_err());
        assert!(err.contains("there is no database at"), "{err}");
        std::fs::write(dir.path().join("deployd.sqlite"), "").unwrap();
        std::fs::write(&target, "earlier").unwrap();
        let err = format!("{:#}", backup_config(&args(false)).unwrap_err());
        assert!(err.contains("already exists"), "{err}");
        assert!(err.contains("--force"), "{err}");
        assert!(backup_config(&args(true)).is_ok());
    }

    #[test]
    fn a_non_utf8_path_is_refused_naming_it() {
        use std::os::unix::ffi::OsStrExt;
        let bad = std::ffi::OsStr::from_bytes(b"/tmp/b\xffd.sqlite");
        let args = BackupArgs::try_parse_from([
            "backup".as_ref(),
            "--data-dir".as_ref(),
            "/nonexistent".as_ref(),
            "--to".as_ref(),
            bad,
        ])
        .unwrap();
        let err = format!("{:#}", backup_config(&args).unwrap_err());
        assert!(
            err.contains("--to `/tmp/b\u{fffd}d.sqlite` is not valid UTF-8"),
            "{err}"
        );
        let args = RestoreArgs::try_parse_from([
            "restore".as_ref(),
            "--data-dir".as_ref(),
            "/nonexistent".as_ref(),
            "--from".as_ref(),
            bad,
        ])
        .unwrap();
        let err = format!("{:#}", restore_config(&args).unwrap_err());
        assert!(
            err.contains("--from `/tmp/b\u{fffd}d.sqlite` is not valid UTF-8"),
            "{err}"
        );
    }
}
