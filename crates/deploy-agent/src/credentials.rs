//! `<state-dir>/credentials.json` (mode 0600, written atomically): the server URL, the agent id and its credential.

use std::path::{Path, PathBuf};

use deploy_api::agent::AgentCredentials;
use deploy_core::AgentId;
use serde::{Deserialize, Serialize};

use crate::client::Secret;
use crate::errors::AgentRunError;
use crate::journal::write_atomically;

/// The file name in the state dir.
pub const FILE_NAME: &str = "credentials.json";

/// What the agent keeps after registering. `Debug` never shows the credential.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredCredentials {
    /// The server these credentials are for.
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

/// `<state_dir>/credentials.json`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// The stored credentials, if the file exists.
pub fn load(state_dir: &Path) -> Result<Option<StoredCredentials>, AgentRunError> {
    use std::os::unix::fs::PermissionsExt;
    let path = path(state_dir);
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
    // The parse error names the field, never echoes the file (it holds the credential).
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| AgentRunError::Corrupt {
            path,
            detail: format!(
                "not valid credentials (line {}, column {})",
                e.line(),
                e.column()
            ),
        })
}

/// Writes the credentials (mode 0600, atomically).
pub fn store(state_dir: &Path, creds: &StoredCredentials) -> Result<(), AgentRunError> {
    let path = path(state_dir);
    let bytes = serde_json::to_vec_pretty(creds).map_err(|e| AgentRunError::Corrupt {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    write_atomically(&path, &bytes, 0o600)
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
}
