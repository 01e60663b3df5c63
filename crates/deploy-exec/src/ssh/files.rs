//! Files on SSH targets over SFTP: the work dir (by default under the login user's home), created 0700 and refused when others could write or swap it, and uploads to exclusive temp names with a set mode.
//!
//! Everything here goes through the raw SFTP session: the high-level one neither sets a
//! mode on `mkdir` nor exposes the handle's `fstat`, and both close a race.

use deploy_core::{DEFAULT_SSH_WORK_SUBDIR, Name, UnixPath};
use russh_sftp::client::RawSftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};

use crate::errors::ExecError;

/// Mode of the work dir and of the directories created above it.
pub const WORK_DIR_MODE: u32 = 0o700;
/// Mode of every uploaded file in the work dir (env files hold application secrets).
pub const FILE_MODE: u32 = 0o600;
/// How many temp names an upload tries before it gives up (each one found taken).
const TEMP_ATTEMPTS: usize = 4;
/// Bytes per SFTP write request (OpenSSH accepts up to 256 KiB; 32 KiB is what every server takes).
const CHUNK: usize = 32 * 1024;

const OTHER_WRITE: u32 = 0o002;
const GROUP_WRITE: u32 = 0o020;
const STICKY: u32 = 0o1000;

/// The first name an upload of `name` tries in `dir`; taken (a leftover, or something
/// planted there), the next ones add a random suffix.
pub fn first_temp_name(dir: &str, name: &str) -> String {
    format!("{dir}/.{name}.uploading-{}", std::process::id())
}

/// A work dir that passed the checks that need no uid; the owner is checked against the
/// first file an upload creates in it (see [`RemoteFiles::upload`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedDir {
    /// The canonical path (symbolic links resolved once, here).
    pub path: String,
    /// Owner of the work dir.
    uid: u32,
    /// Owner of each directory above it, outermost first.
    ancestors: Vec<(String, u32)>,
}

/// One SFTP session on a target.
pub struct RemoteFiles {
    raw: RawSftpSession,
    host: String,
}

impl RemoteFiles {
    /// Starts the SFTP protocol on an open `sftp` subsystem channel to `host`.
    pub(crate) async fn start(raw: RawSftpSession, host: &str) -> Result<Self, ExecError> {
        let files = Self {
            raw,
            host: host.to_owned(),
        };
        files
            .raw
            .init()
            .await
            .map_err(|e| files.upload_error("(sftp session)", "", &e.to_string()))?;
        Ok(files)
    }

    fn refused(&self, path: &str, detail: &str) -> ExecError {
        ExecError::WorkDir {
            host: self.host.clone(),
            path: path.to_owned(),
            detail: detail.to_lowercase(),
        }
    }

    /// An SFTP failure at `path`: the server's answer (permission denied, no such file, …)
    /// is about the host and permanent; a lost channel or a timeout is retryable.
    fn sftp_error(&self, path: &str, what: &str, e: &SftpError) -> ExecError {
        match e {
            SftpError::Status(_) => self.refused(path, &format!("{what}: {e}")),
            _ => self.upload_error("(sftp session)", path, &format!("{what}: {e}")),
        }
    }

    fn upload_error(&self, file: &str, path: &str, detail: &str) -> ExecError {
        ExecError::Upload {
            host: self.host.clone(),
            file: file.to_owned(),
            path: path.to_owned(),
            detail: detail.to_lowercase(),
        }
    }

    /// The login user's home: where the SFTP server starts (OpenSSH: the home directory).
    pub async fn home(&self) -> Result<String, ExecError> {
        let name = self
            .raw
            .realpath(".")
            .await
            .map_err(|e| self.sftp_error("~", "resolve the home directory", &e))?;
        match name.files.first() {
            Some(f) if f.filename.starts_with('/') => Ok(f.filename.clone()),
            _ => Err(self.refused(
                "~",
                "resolve the home directory: the server answered no absolute path",
            )),
        }
    }

    /// `explicit`, or `<home>/.local/share/deploy/<target>`.
    pub async fn work_dir_path(
        &self,
        explicit: Option<&UnixPath>,
        target: &Name,
    ) -> Result<String, ExecError> {
        match explicit {
            Some(dir) => Ok(dir.as_str().to_owned()),
            None => {
                let home = self.home().await?;
                Ok(format!(
                    "{}/{DEFAULT_SSH_WORK_SUBDIR}/{target}",
                    home.trim_end_matches('/')
                ))
            }
        }
    }

    /// `stat` of `path`, `None` when nothing is there.
    async fn stat(&self, path: &str) -> Result<Option<FileAttributes>, SftpError> {
        match self.raw.stat(path).await {
            Ok(a) => Ok(Some(a.attrs)),
            Err(SftpError::Status(s)) if s.status_code == StatusCode::NoSuchFile => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates `path` and its missing parents with mode 0700 (an existing directory is
    /// left as it is), then checks what lies on the way: the work dir and every directory
    /// above it must not be writable by its group or others unless sticky (`/tmp`), so nobody else can
    /// put files in it or swap it for their own.
    pub async fn prepare_work_dir(&self, path: &str) -> Result<CheckedDir, ExecError> {
        let mut prefix = String::new();
        for component in path.split('/').filter(|c| !c.is_empty()) {
            prefix.push('/');
            prefix.push_str(component);
            let found = self
                .stat(&prefix)
                .await
                .map_err(|e| self.sftp_error(&prefix, "stat", &e))?;
            match found {
                Some(a) if a.is_dir() => continue,
                Some(_) => {
                    return Err(self.refused(&prefix, "exists and is not a directory"));
                }
                None => {}
            }
            let mut attrs = FileAttributes::empty();
            attrs.permissions = Some(WORK_DIR_MODE);
            if let Err(e) = self.raw.mkdir(prefix.clone(), attrs).await {
                // Another deploy to this host may have created it meanwhile.
                let now = self.stat(&prefix).await.ok().flatten();
                if !now.is_some_and(|a| a.is_dir()) {
                    return Err(self.sftp_error(&prefix, "create (mode 0700)", &e));
                }
            }
        }
        // From here on the canonical path: a symbolic link on the way is resolved once.
        let canonical = self
            .raw
            .realpath(path)
            .await
            .map_err(|e| self.sftp_error(path, "resolve to a canonical path", &e))?
            .files
            .first()
            .map(|f| f.filename.clone())
            .filter(|p| p.starts_with('/'))
            .ok_or_else(|| self.refused(path, "resolve to a canonical path: no absolute path"))?;
        let mut ancestors = Vec::new();
        let mut dir_uid = None;
        let mut walked = String::new();
        let components: Vec<&str> = canonical.split('/').filter(|c| !c.is_empty()).collect();
        for (i, component) in std::iter::once("")
            .chain(components.iter().copied())
            .enumerate()
        {
            if i > 0 {
                walked.push('/');
                walked.push_str(component);
            }
            let shown = if walked.is_empty() { "/" } else { &walked };
            let attrs = self
                .raw
                .lstat(shown)
                .await
                .map_err(|e| self.sftp_error(shown, "stat", &e))?
                .attrs;
            let mode = attrs.permissions.unwrap_or(0) & 0o7777;
            if mode & (GROUP_WRITE | OTHER_WRITE) != 0 && mode & STICKY == 0 {
                let what = if i == components.len() {
                    "the work dir"
                } else {
                    "a directory above the work dir"
                };
                let whom = if mode & OTHER_WRITE != 0 {
                    "every user"
                } else {
                    "its group"
                };
                return Err(self.refused(
                    shown,
                    &format!(
                        "{what} is writable by {whom} without the sticky bit (mode {mode:04o}); expected a directory only its owner can write (e.g. chmod 0700 {shown}), or remove it and let the deploy create it"
                    ),
                ));
            }
            let uid = attrs
                .uid
                .ok_or_else(|| self.refused(shown, "stat: the server sent no owner"))?;
            if i == components.len() {
                dir_uid = Some(uid);
            } else {
                ancestors.push((shown.to_owned(), uid));
            }
        }
        Ok(CheckedDir {
            path: canonical.clone(),
            uid: dir_uid.ok_or_else(|| self.refused(&canonical, "stat: no such directory"))?,
            ancestors,
        })
    }

    /// The work dir must be the login user's (`me`: the owner of a file it just created)
    /// and every directory above it root's or the login user's.
    fn check_owner(&self, dir: &CheckedDir, me: u32) -> Result<(), ExecError> {
        if dir.uid != me {
            return Err(self.refused(
                &dir.path,
                &format!(
                    "the work dir belongs to uid {}, not to the login user (uid {me}); expected a directory of the login user",
                    dir.uid
                ),
            ));
        }
        if let Some((path, uid)) = dir.ancestors.iter().find(|(_, u)| *u != 0 && *u != me) {
            return Err(self.refused(
                path,
                &format!(
                    "a directory above the work dir belongs to uid {uid}, who could replace the work dir; expected root's or the login user's (uid {me})"
                ),
            ));
        }
        Ok(())
    }

    /// Creates a new file in `dir` for `name` with `mode`, never following or reusing what
    /// is there: `CREATE | EXCLUDE` fails on any existing entry, a planted symbolic link
    /// included; a taken name is skipped for another one.
    async fn create_exclusive(
        &self,
        dir: &str,
        name: &str,
        mode: u32,
    ) -> Result<(String, String), ExecError> {
        let mut last = String::new();
        for attempt in 0..TEMP_ATTEMPTS {
            let temp = if attempt == 0 {
                first_temp_name(dir, name)
            } else {
                format!(
                    "{}-{}",
                    first_temp_name(dir, name),
                    uuid::Uuid::new_v4().simple()
                )
            };
            let mut attrs = FileAttributes::empty();
            attrs.permissions = Some(mode);
            let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUDE;
            match self.raw.open(temp.clone(), flags, attrs).await {
                Ok(h) => return Ok((temp, h.handle)),
                Err(e) => {
                    // SFTP v3 has no "exists" status: look whether the name is taken.
                    let taken = self.raw.lstat(temp.clone()).await.is_ok();
                    if !taken {
                        return Err(self.upload_error(name, &temp, &e.to_string()));
                    }
                    last = temp;
                }
            }
        }
        Err(self.upload_error(
            name,
            &last,
            &format!(
                "{TEMP_ATTEMPTS} temp names were taken (left untouched); expected a free name"
            ),
        ))
    }

    /// Writes `content` through the open `handle` and closes it.
    async fn write_all(&self, handle: &str, content: &[u8]) -> Result<(), SftpError> {
        let mut offset = 0u64;
        for chunk in content.chunks(CHUNK) {
            self.raw.write(handle, offset, chunk.to_vec()).await?;
            offset += chunk.len() as u64;
        }
        self.raw.close(handle).await.map(|_| ())
    }

    /// Uploads `files` into `dir`, each to a new temp name created exclusively with `mode`;
    /// returns the temp paths in order (the caller renames them into place with `mv -f`,
    /// a `rename(2)`: atomic, and it replaces a link rather than following it). With
    /// `owned`, the owner of the work dir is checked against the first file created,
    /// before any content is written.
    pub async fn upload(
        &self,
        dir: &str,
        files: &[(&str, &[u8])],
        mode: u32,
        owned: Option<&CheckedDir>,
    ) -> Result<Vec<String>, ExecError> {
        let mut temps: Vec<String> = Vec::with_capacity(files.len());
        let result = async {
            for (i, (name, content)) in files.iter().enumerate() {
                let (temp, handle) = self.create_exclusive(dir, name, mode).await?;
                temps.push(temp.clone());
                if i == 0
                    && let Some(checked) = owned
                {
                    let me = self
                        .raw
                        .fstat(handle.clone())
                        .await
                        .map_err(|e| self.upload_error(name, &temp, &e.to_string()))?
                        .attrs
                        .uid
                        .ok_or_else(|| {
                            self.upload_error(name, &temp, "stat: the server sent no owner")
                        })?;
                    if let Err(e) = self.check_owner(checked, me) {
                        let _ = self.raw.close(handle).await;
                        return Err(e);
                    }
                }
                self.write_all(&handle, content)
                    .await
                    .map_err(|e| self.upload_error(name, &temp, &e.to_string()))?;
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => Ok(temps),
            Err(e) => {
                for t in &temps {
                    let _ = self.raw.remove(t.clone()).await;
                }
                Err(e)
            }
        }
    }

    /// Ends the SFTP session.
    pub fn close(&self) {
        let _ = self.raw.close_session();
    }
}
