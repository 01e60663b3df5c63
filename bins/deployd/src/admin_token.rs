//! The admin token outside the API: the first start's token written to a 0600 file in the data dir (never to stdout or the log), and `deployd admin-token`, the local recovery when every admin token is lost.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use deploy_core::Timestamp;
use deploy_engine::{Clock, SystemClock};
use deploy_server::{LocalActor, bootstrap_admin, generate_token, is_bootstrapped, recover_admin};
use deploy_store::{Store, StoreConfig};

use crate::config::Config;
use crate::subcommand;

/// The first admin token's file in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Writes `token` and a newline to a new file at `path`, readable by its owner only
/// (0600). Refuses an existing path (a symlink included): it may hold another token,
/// and following a planted link would write the secret wherever it points.
pub fn write_new(path: &Path, token: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| match path.symlink_metadata() {
            Ok(_) => format!(
                "`{}` already exists; expected no file there (it may hold an earlier admin \
                 token): read it or move it away, then run again",
                path.display()
            ),
            Err(_) => format!("cannot create the token file `{}`", path.display()),
        })?;
    // The mode above is masked by the umask; set it exactly (0600 is never widened).
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| file.write_all(format!("{token}\n").as_bytes()))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write the token file `{}`", path.display()))
}

/// The first start's admin token: `preset` (`DEPLOYD_ADMIN_TOKEN`) is stored as given;
/// else a generated one is written to `<data_dir>/admin-token` (0600) before it is
/// stored, so a token the operator cannot read never exists. Only the path is logged.
pub async fn first_start(
    store: &dyn Store,
    data_dir: &Path,
    preset: Option<String>,
    now: Timestamp,
) -> anyhow::Result<()> {
    if preset.is_some() {
        if bootstrap_admin(store, preset, now).await?.is_some() {
            tracing::info!("stored the admin token from DEPLOYD_ADMIN_TOKEN");
        }
        return Ok(());
    }
    if is_bootstrapped(store).await? {
        return Ok(());
    }
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    let secret = generate_token();
    write_new(&path, &secret)?;
    let stored = bootstrap_admin(store, Some(secret), now).await;
    match stored {
        Ok(Some(_)) => {
            tracing::info!(
                path = %path.display(),
                "the first admin token is in this file (mode 0600): copy it to where \
                 you keep secrets, then delete the file"
            );
            Ok(())
        }
        // Another replica bootstrapped the database in between: this secret is no token.
        Ok(None) => remove(&path),
        Err(e) => {
            remove(&path)?;
            Err(e.into())
        }
    }
}

fn remove(path: &Path) -> anyhow::Result<()> {
    std::fs::remove_file(path)
        .with_context(|| format!("cannot remove the unused token file `{}`", path.display()))
}

/// deployd admin-token: create a new admin API token directly in the database.
///
/// The recovery when every admin token is lost (or revoked). It needs what deployd
/// itself needs to reach the database: the data directory of the embedded SQLite
/// database, or the PostgreSQL URL (same flags, variables and config file as
/// deployd). Run it as the user deployd runs as; deployd may keep running (the
/// token works from its next request) or be stopped. The creation is recorded in
/// the audit log (route `deployd admin-token`, with the local user).
///
/// The token goes to stdout alone (for `TOKEN=$(deployd admin-token ...)` at a
/// terminal), or with --out to a new file of mode 0600.
///
/// Examples:
///   deployd admin-token --data-dir /var/lib/deployd --out /root/admin-token
///   deployd admin-token --database-url postgres://deploy@db:5432/deploy --expires-in-secs 3600
#[derive(Debug, Parser)]
#[command(
    name = "deployd admin-token",
    bin_name = "deployd admin-token",
    verbatim_doc_comment
)]
pub struct AdminTokenArgs {
    /// deployd's TOML configuration file (its database_url and data_dir are used).
    #[arg(long, env = "DEPLOYD_CONFIG")]
    pub config: Option<PathBuf>,
    /// deployd's data directory (default ./deployd-data).
    #[arg(long, env = "DEPLOYD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// `sqlite:PATH` or `postgres://user@host:port/db`; default: SQLite under the data dir.
    #[arg(long, env = "DEPLOYD_DATABASE_URL")]
    pub database_url: Option<String>,
    /// The token's name (unique) [default: recovered-admin-<unix seconds>].
    #[arg(long)]
    pub name: Option<String>,
    /// Seconds until it stops being accepted, 60 to ten years [default: never].
    #[arg(long, value_name = "SECS")]
    pub expires_in_secs: Option<u64>,
    /// Write the token to this new file (mode 0600; an existing file is refused)
    /// instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `deployd admin-token …` (`args` starts with `admin-token`): 0 done, 2 bad
/// configuration, 1 the database refused or failed.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    subcommand::run("deployd admin-token", args, config, recover)
}

/// deployd's own configuration (file, environment, the flags given here), so the
/// command reaches the very database the server uses.
fn config(args: &AdminTokenArgs) -> anyhow::Result<Config> {
    let config = subcommand::server_config(
        args.config.as_ref(),
        args.data_dir.as_ref(),
        args.database_url.as_ref(),
    )?;
    if let StoreConfig::Sqlite(sqlite) = &config.store
        && !sqlite.path.is_file()
    {
        // Opening would create an empty database, and a token in it recovers nothing.
        anyhow::bail!(
            "there is no database at `{}`; expected the data directory of an existing \
             deployd (--data-dir) or its --database-url",
            sqlite.path.display()
        );
    }
    if let Some(out) = &args.out
        && out.symlink_metadata().is_ok()
    {
        anyhow::bail!(
            "--out `{}` already exists; expected a new file (an existing one may hold \
             another token)",
            out.display()
        );
    }
    Ok(config)
}

async fn recover(args: AdminTokenArgs, config: Config) -> anyhow::Result<()> {
    let store = deploy_store::open(&config.store)
        .await
        .with_context(|| format!("cannot open the database {}", config.database_display))?;
    let now = SystemClock.now();
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("recovered-admin-{}", now.unix_millis() / 1000));
    let actor = LocalActor {
        user: local_user(),
        place: config.database_display.clone(),
    };
    let created = recover_admin(store.as_ref(), &name, args.expires_in_secs, &actor, now)
        .await
        .context("cannot create the admin token")?;
    let expiry = created.expires_at.map_or_else(
        || "never expires".to_owned(),
        |at| format!("expires at {at}"),
    );
    match &args.out {
        Some(path) => {
            write_new(path, &created.token)?;
            eprintln!(
                "deployd admin-token: admin token `{}` ({}, {expiry}) written to {}",
                created.name,
                created.id,
                path.display()
            );
        }
        None => {
            print_token(&created.token);
            eprintln!(
                "deployd admin-token: admin token `{}` ({}, {expiry}) created; it is shown once",
                created.name, created.id
            );
        }
    }
    Ok(())
}

#[expect(
    clippy::print_stdout,
    reason = "the recovery command is run by hand: its token goes to the operator's terminal or pipe"
)]
fn print_token(token: &str) {
    println!("{token}");
}

/// `$USER` (or `$LOGNAME`) and the real uid, for the audit row: the variable alone is
/// whatever the caller set, the uid is what the kernel says.
fn local_user() -> String {
    let name = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_owned());
    match std::fs::metadata("/proc/self") {
        Ok(meta) => format!("{name} (uid {})", meta.uid()),
        Err(_) => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_are_0600_new_and_never_follow_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        write_new(&path, "dpl_secret").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "dpl_secret\n");
        let err = format!("{:#}", write_new(&path, "dpl_other").unwrap_err());
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "dpl_secret\n");
        // A planted (dangling) link is refused, and its target is not created.
        let target = dir.path().join("elsewhere");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = format!("{:#}", write_new(&link, "dpl_x").unwrap_err());
        assert!(err.contains("already exists"), "{err}");
        assert!(!target.exists());
    }

    #[test]
    fn recovery_refuses_a_data_dir_without_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let args = AdminTokenArgs::try_parse_from([
            "admin-token",
            "--data-dir",
            dir.path().join("nothing").to_str().unwrap(),
        ])
        .unwrap();
        let err = format!("{:#}", config(&args).unwrap_err());
        assert!(err.contains("no database at"), "{err}");
        assert!(err.contains("nothing"), "{err}");
    }

    #[tokio::test]
    async fn the_first_start_writes_the_file_once_and_a_preset_writes_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = deploy_store::open(&StoreConfig::Sqlite(deploy_store::SqliteConfig::new(
            dir.path().join("db.sqlite"),
        )))
        .await
        .unwrap();
        let now = SystemClock.now();
        first_start(store.as_ref(), dir.path(), None, now)
            .await
            .unwrap();
        let path = dir.path().join(ADMIN_TOKEN_FILE);
        let token = std::fs::read_to_string(&path).unwrap();
        let token = token.trim();
        assert!(token.starts_with("dpl_"), "{token}");
        assert!(
            store
                .find_api_token(&deploy_server::hash_token(token))
                .await
                .unwrap()
                .is_some()
        );
        // Later starts leave the file alone (deleted or not).
        std::fs::remove_file(&path).unwrap();
        first_start(store.as_ref(), dir.path(), None, now)
            .await
            .unwrap();
        assert!(!path.exists());

        // A fresh database with a leftover file: refused, and nothing stored.
        let other = tempfile::tempdir().unwrap();
        let store = deploy_store::open(&StoreConfig::Sqlite(deploy_store::SqliteConfig::new(
            other.path().join("db.sqlite"),
        )))
        .await
        .unwrap();
        std::fs::write(other.path().join(ADMIN_TOKEN_FILE), "old\n").unwrap();
        let err = format!(
            "{:#}",
            first_start(store.as_ref(), other.path(), None, now)
                .await
                .unwrap_err()
        );
        assert!(err.contains("already exists"), "{err}");
        assert!(!is_bootstrapped(store.as_ref()).await.unwrap());

        // A preset token: stored, no file.
        std::fs::remove_file(other.path().join(ADMIN_TOKEN_FILE)).unwrap();
        first_start(
            store.as_ref(),
            other.path(),
            Some("dpl_preset-0123456789abcdef-xyz".to_owned()),
            now,
        )
        .await
        .unwrap();
        assert!(!other.path().join(ADMIN_TOKEN_FILE).exists());
        assert!(is_bootstrapped(store.as_ref()).await.unwrap());
    }
}
