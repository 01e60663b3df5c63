//! Who this deployd is across restarts: the data directory's lock file (one live process per directory) and its persisted lease owner.
//!
//! A restarted deployd takes back at once the job leases its owner still holds
//! (`Engine::serve`, `Store::release_leases_of`), instead of waiting out the
//! lease its killed predecessor never released. That is only safe if no other
//! live process runs under the same owner, so:
//!
//! - the data directory is locked (`deployd.lock`, an exclusive `flock` the
//!   kernel drops when the process dies, even on SIGKILL): a second deployd on
//!   the same directory is refused at start;
//! - without `--owner`, the owner is generated once (`deployd-<host>-<random>`)
//!   and kept in the directory's `owner` file, so it is unique to the directory
//!   and the same on every restart from it.
//!
//! An explicit `--owner` is the operator's promise that it is unique among live
//! replicas (sharing one across hosts or data directories cannot be detected here).

use std::fs::{File, TryLockError};
use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "deployd.lock";
/// The persisted owner's file name in the data directory.
pub const OWNER_FILE: &str = "owner";

/// Held for the process's life: the data directory's exclusive lock.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Locks `dir` (creating it) for this process; refuses when another live process holds it.
pub fn lock(dir: &Path) -> anyhow::Result<DataDirLock> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory `{}`", dir.display()))?;
    let path = dir.join(LOCK_FILE);
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open the lock file `{}`", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "another deployd ({}) is running on the data directory `{}`: its lock `{}` is held; \
                 two live processes must not share a data directory (nor a lease owner)",
                match holder.trim() {
                    "" => "pid unknown".to_owned(),
                    pid => format!("pid {pid}"),
                },
                dir.display(),
                path.display()
            );
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock `{}`", path.display()));
        }
    }
    file.set_len(0)
        .and_then(|()| write!(file, "{}", std::process::id()))
        .with_context(|| format!("cannot write the lock file `{}`", path.display()))?;
    Ok(DataDirLock { _file: file })
}

/// The lease owner: `explicit` (flag, env or config file), else the one kept in
/// `dir/owner`, else a new one written there. Call with the directory locked.
pub fn owner(explicit: Option<String>, dir: &Path) -> anyhow::Result<String> {
    if let Some(owner) = explicit {
        return Ok(owner);
    }
    let path = dir.join(OWNER_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let owner = text.trim().to_owned();
            validate(&owner).with_context(|| format!("the owner file `{}`", path.display()))?;
            return Ok(owner);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot read the owner file `{}`", path.display()));
        }
    }
    let random = deploy_core::hex::lower_hex(&deploy_engine::random_bytes()[..4]);
    let owner = format!("deployd-{}-{random}", host_name());
    let temp = dir.join(format!("{OWNER_FILE}.tmp"));
    std::fs::write(&temp, format!("{owner}\n"))
        .and_then(|()| std::fs::rename(&temp, &path))
        .with_context(|| format!("cannot write the owner file `{}`", path.display()))?;
    Ok(owner)
}

/// 1 to 100 characters, not blank.
pub fn validate(owner: &str) -> anyhow::Result<()> {
    if owner.trim().is_empty() || owner.len() > 100 {
        bail!("owner `{owner}` is invalid; expected 1 to 100 characters");
    }
    Ok(())
}

/// The kernel's host name, reduced to `[a-z0-9.-]`, at most 40 characters.
fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = raw
        .trim()
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
        .take(40)
        .collect();
    if name.is_empty() {
        "host".to_owned()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_owner_is_kept_and_an_explicit_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let first = owner(None, dir.path()).unwrap();
        assert!(first.starts_with("deployd-"), "{first}");
        assert_eq!(
            owner(None, dir.path()).unwrap(),
            first,
            "the same on restart"
        );
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            owner(None, other.path()).unwrap(),
            first,
            "unique per directory"
        );
        assert_eq!(
            owner(Some("replica-a".into()), dir.path()).unwrap(),
            "replica-a"
        );
        assert_eq!(owner(None, dir.path()).unwrap(), first, "the file is kept");
        std::fs::write(dir.path().join(OWNER_FILE), "  \n").unwrap();
        let err = format!("{:#}", owner(None, dir.path()).unwrap_err());
        assert!(
            err.contains("owner file") && err.contains("1 to 100"),
            "{err}"
        );
    }

    #[test]
    fn a_second_lock_on_the_directory_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let held = lock(&data).unwrap();
        let err = format!("{:#}", lock(&data).unwrap_err());
        assert!(
            err.contains(&format!("pid {}", std::process::id()))
                && err.contains("must not share a data directory"),
            "{err}"
        );
        drop(held);
        lock(&data).unwrap();
    }
}
