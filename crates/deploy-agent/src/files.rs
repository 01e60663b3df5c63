//! Files the agent writes on its host: the work dir (created 0700, refused when others could write or swap it, or when it belongs to another user) and files written to new 0600 temp names, then renamed into place.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::errors::TaskError;

/// Mode of the work dir and of the directories created above it.
pub const WORK_DIR_MODE: u32 = 0o700;
/// Mode of every file written into the work dir (env files hold application secrets).
pub const FILE_MODE: u32 = 0o600;

const OTHER_WRITE: u32 = 0o002;
const GROUP_WRITE: u32 = 0o020;
const STICKY: u32 = 0o1000;

fn refused(path: &Path, detail: impl std::fmt::Display) -> TaskError {
    // Permanent: a retry meets the same directory until someone fixes the host.
    TaskError::invalid(format!("use work dir {}: {detail}", path.display()))
}

/// Creates `dir` and its missing parents with mode 0700 (existing ones are left as they
/// are), then checks it: the work dir and every directory above it must not be writable
/// by its group or by every user unless sticky (`/tmp`); the work dir must belong to this process's user
/// (the owner of a file it just created there) and the directories above it to root or
/// to that user, so that nobody else can read, plant or swap files in it. Returns the
/// canonical path (symbolic links resolved once, here).
pub fn prepare_work_dir(dir: &Path) -> Result<PathBuf, TaskError> {
    if !dir.is_absolute() {
        return Err(refused(dir, "expected an absolute path"));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(WORK_DIR_MODE)
        .create(dir)
        .map_err(|e| refused(dir, format!("create (mode 0700): {e}")))?;
    let canonical = dir
        .canonicalize()
        .map_err(|e| refused(dir, format!("resolve to a canonical path: {e}")))?;
    let mut ancestors = Vec::new();
    for (i, path) in canonical.ancestors().enumerate() {
        let meta =
            std::fs::symlink_metadata(path).map_err(|e| refused(path, format!("stat: {e}")))?;
        let mode = meta.mode() & 0o7777;
        if mode & (GROUP_WRITE | OTHER_WRITE) != 0 && mode & STICKY == 0 {
            let what = if i == 0 {
                "the work dir"
            } else {
                "a directory above the work dir"
            };
            let whom = if mode & OTHER_WRITE != 0 {
                "every user"
            } else {
                "its group"
            };
            return Err(refused(
                path,
                format!(
                    "{what} is writable by {whom} without the sticky bit (mode {mode:04o}); expected a directory only its owner can write (e.g. chmod 0700 {}), or remove it and let the deploy create it",
                    path.display()
                ),
            ));
        }
        if i > 0 {
            ancestors.push((path.to_owned(), meta.uid()));
        }
    }
    let dir_uid = std::fs::metadata(&canonical)
        .map_err(|e| refused(&canonical, format!("stat: {e}")))?
        .uid();
    let me = own_uid(&canonical)?;
    if dir_uid != me {
        return Err(refused(
            &canonical,
            format!(
                "the work dir belongs to uid {dir_uid}, not to the agent's user (uid {me}); expected a directory of the agent's user"
            ),
        ));
    }
    if let Some((path, uid)) = ancestors.iter().find(|(_, u)| *u != 0 && *u != me) {
        return Err(refused(
            path,
            format!(
                "a directory above the work dir belongs to uid {uid}, who could replace the work dir; expected root's or the agent's user's (uid {me})"
            ),
        ));
    }
    Ok(canonical)
}

/// The uid this process creates files as: the owner of a new file in `dir`, removed at once.
fn own_uid(dir: &Path) -> Result<u32, TaskError> {
    let probe = dir.join(format!(".owner-probe-{}", uuid::Uuid::new_v4().simple()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(&probe)
        .map_err(|e| refused(dir, format!("create a file in it: {e}")))?;
    let uid = file.metadata().map(|m| m.uid());
    let _ = std::fs::remove_file(&probe);
    uid.map_err(|e| refused(&probe, format!("stat: {e}")))
}

/// A new temp name in `dir` for `name`: `.<name>.<tag>-<random>`.
pub fn temp_path(dir: &Path, name: &str, tag: &str) -> PathBuf {
    dir.join(format!(".{name}.{tag}-{}", uuid::Uuid::new_v4().simple()))
}

/// Writes `content` to a new file at `path` with mode 0600 and syncs it. `create_new`
/// (`O_EXCL`) fails on any existing entry, a planted symbolic link included, instead of
/// writing through it.
pub async fn write_new(path: &Path, content: &[u8]) -> Result<(), TaskError> {
    use tokio::io::AsyncWriteExt;
    let io = |e| TaskError::host(&format!("write {}", path.display()), e);
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
        .await
        .map_err(io)?;
    f.write_all(content).await.map_err(io)?;
    f.sync_all().await.map_err(io)
}

/// Writes `content` to `dir/name` atomically: a new 0600 temp file, synced, renamed
/// into place (`rename(2)` replaces a link at `name` rather than following it).
pub async fn write_atomically(dir: &Path, name: &str, content: &[u8]) -> Result<(), TaskError> {
    let temp = temp_path(dir, name, "tmp");
    if let Err(e) = write_new(&temp, content).await {
        let _ = tokio::fs::remove_file(&temp).await;
        return Err(e);
    }
    tokio::fs::rename(&temp, dir.join(name))
        .await
        .map_err(|e| TaskError::host(&format!("move {} into place", temp.display()), e))
}

#[cfg(test)]
mod tests;
