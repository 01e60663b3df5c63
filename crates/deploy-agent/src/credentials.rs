//! `<state-dir>/credentials.json` (the server URL, the agent id and its credential) and `pending-credential.json` (a credential proposed but not yet confirmed), both mode 0600, written atomically.
//!
//! The agent makes its next credential itself and writes it to the pending file before
//! it proposes it (registering or rotating): whatever happens to the answer (lost,
//! or the agent killed before reading it), the next attempt proposes the same credential
//! and the server, which keeps only its sha256, recognises the retry. Once the answer is
//! in, `credentials.json` is replaced and only then the pending file removed.

use std::path::{Path, PathBuf};

use deploy_api::agent::{AGENT_CREDENTIAL_PREFIX, AgentCredentials};
use deploy_core::AgentId;
use serde::{Deserialize, Serialize};

use crate::client::Secret;
use crate::errors::AgentRunError;
use crate::journal::write_atomically;

/// The file name in the state dir.
pub const FILE_NAME: &str = "credentials.json";
/// The proposed credential's file name in the state dir.
pub const PENDING_FILE_NAME: &str = "pending-credential.json";

/// What the agent keeps after registering. `Debug` never shows the credential.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredCredentials {
    /// The server that registered the agent (one of those configured).
    pub server: String,
    pub agent_id: AgentId,
    pub credential: String,
    pub heartbeat_timeout_ms: u64,
}

impl std::fmt::Debug for StoredCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredentials")
            .field("server", &self.server)
            .field("agent_id", &self.agent_id)
            .field("credential", &"<redacted>")
            .field("heartbeat_timeout_ms", &self.heartbeat_timeout_ms)
            .finish()
    }
}

impl StoredCredentials {
    /// From the server's answer to a registration or rotation.
    pub fn from_answer(server: &str, answer: AgentCredentials) -> Self {
        Self {
            server: server.to_owned(),
            agent_id: answer.agent_id,
            credential: answer.credential,
            heartbeat_timeout_ms: answer.heartbeat_timeout_ms,
        }
    }

    /// The credential as a bearer.
    pub fn bearer(&self) -> Secret {
        Secret::new(self.credential.clone())
    }
}

/// What a proposed credential is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// The first credential, proposed with the bootstrap token.
    Register,
    /// The next credential, replacing the stored one.
    Rotate,
}

/// A credential proposed to the server and not yet confirmed. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingCredential {
    pub purpose: Purpose,
    pub credential: String,
}

impl std::fmt::Debug for PendingCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingCredential")
            .field("purpose", &self.purpose)
            .field("credential", &"<redacted>")
            .finish()
    }
}

impl PendingCredential {
    /// A fresh credential for `purpose`.
    pub fn new(purpose: Purpose) -> Self {
        Self {
            purpose,
            credential: new_credential(),
        }
    }

    /// The credential as a bearer.
    pub fn bearer(&self) -> Secret {
        Secret::new(self.credential.clone())
    }
}

/// A new credential: `dpa_` and 64 lowercase hex characters, the shape deployd
/// generates. The randomness is the operating system's CSPRNG (`getrandom`, through
/// UUID v4: 122 random bits each, 244 in all), as deployd's own credentials.
pub fn new_credential() -> String {
    format!(
        "{AGENT_CREDENTIAL_PREFIX}{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// `<state_dir>/credentials.json`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// `<state_dir>/pending-credential.json`.
pub fn pending_path(state_dir: &Path) -> PathBuf {
    state_dir.join(PENDING_FILE_NAME)
}

/// The stored credentials, if the file exists.
pub fn load(state_dir: &Path) -> Result<Option<StoredCredentials>, AgentRunError> {
    read_private(&path(state_dir), "not valid credentials")
}

/// The pending credential, if the file exists.
pub fn load_pending(state_dir: &Path) -> Result<Option<PendingCredential>, AgentRunError> {
    read_private(&pending_path(state_dir), "not a valid pending credential")
}

/// Writes the pending credential (mode 0600, atomically): before it is ever sent.
pub fn store_pending(state_dir: &Path, pending: &PendingCredential) -> Result<(), AgentRunError> {
    write_private(&pending_path(state_dir), pending)
}

/// Removes the pending credential (once the stored credentials hold the outcome).
pub fn remove_pending(state_dir: &Path) -> Result<(), AgentRunError> {
    let path = pending_path(state_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(AgentRunError::io("remove", &path)(e)),
    }
    // The removal must not come back after a power cut while the new credential stays.
    if let Ok(dir) = std::fs::File::open(state_dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Reads a JSON file holding a secret: `None` when missing; a warning when others may
/// read it; a parse error names the position, never the content.
fn read_private<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
) -> Result<Option<T>, AgentRunError> {
    use std::os::unix::fs::PermissionsExt;
    let path = path.to_owned();
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AgentRunError::io("read", &path)(e)),
    };
    if let Ok(meta) = std::fs::metadata(&path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            "`{}` is readable by other users (mode {:o}): it holds the agent credential; chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    // The parse error names the position, never echoes the file (it holds the credential).
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| AgentRunError::Corrupt {
            path,
            detail: format!("{what} (line {}, column {})", e.line(), e.column()),
        })
}

/// Writes `value` as JSON to `path` (mode 0600, atomically: temp file, fsync, rename).
fn write_private<T: Serialize>(path: &Path, value: &T) -> Result<(), AgentRunError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| AgentRunError::Corrupt {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    write_atomically(path, &bytes, 0o600)
}

/// Writes the credentials (mode 0600, atomically).
pub fn store(state_dir: &Path, creds: &StoredCredentials) -> Result<(), AgentRunError> {
    write_private(&path(state_dir), creds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deploy_core::testing::agent_id;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn stored_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let creds = StoredCredentials {
            server: "https://deployd:8443".to_owned(),
            agent_id: agent_id(1),
            credential: "dpa_topsecret".to_owned(),
            heartbeat_timeout_ms: 30_000,
        };
        store(dir.path(), &creds).unwrap();
        let mode = std::fs::metadata(path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load(dir.path()).unwrap(), Some(creds.clone()));
        assert!(!format!("{creds:?}").contains("topsecret"));
        std::fs::write(path(dir.path()), "{\"credential\": \"dpa_topsecret\"").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(!err.contains("topsecret"), "{err}");
    }

    #[test]
    fn a_pending_credential_is_private_removable_and_fresh_each_time() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_pending(dir.path()).unwrap(), None);
        remove_pending(dir.path()).unwrap();
        let pending = PendingCredential::new(Purpose::Rotate);
        assert!(deploy_api::agent::is_agent_credential(&pending.credential));
        assert_ne!(pending.credential, new_credential());
        assert!(!format!("{pending:?}").contains(&pending.credential));
        store_pending(dir.path(), &pending).unwrap();
        let mode = std::fs::metadata(pending_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_pending(dir.path()).unwrap(), Some(pending.clone()));
        remove_pending(dir.path()).unwrap();
        assert_eq!(load_pending(dir.path()).unwrap(), None);
        std::fs::write(
            pending_path(dir.path()),
            format!("{{\"credential\": \"{}", pending.credential),
        )
        .unwrap();
        let err = load_pending(dir.path()).unwrap_err().to_string();
        assert!(err.contains(PENDING_FILE_NAME), "{err}");
        assert!(!err.contains(&pending.credential), "{err}");
    }
}
