//! Errors: `TaskError` (one failed task, typed by its wire code) and `AgentRunError` (the agent itself cannot go on).

use std::path::PathBuf;

use deploy_api::agent::{AgentError, AgentErrorCode};

/// One task failed; `code` is what the server classifies retries by.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TaskError {
    pub code: AgentErrorCode,
    /// Reads well after "failed to …"; never holds a secret.
    pub message: String,
}

impl TaskError {
    /// An error with `code`.
    pub fn new(code: AgentErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The payload does not fit this host.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(AgentErrorCode::InvalidPayload, message)
    }

    /// The Docker Engine (or Compose) answered with an error or not at all.
    pub fn docker(what: &str, e: impl std::fmt::Display) -> Self {
        Self::new(AgentErrorCode::DockerUnavailable, format!("{what}: {e}"))
    }

    /// The host itself failed (a file, a process).
    pub fn host(what: &str, e: impl std::fmt::Display) -> Self {
        Self::new(AgentErrorCode::HostError, format!("{what}: {e}"))
    }

    /// The wire form.
    pub fn to_wire(&self) -> AgentError {
        AgentError {
            code: self.code,
            message: self.message.clone(),
        }
    }
}

/// Why the agent stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentRunError {
    /// The server refused the credential (revoked or wrong): the agent must not retry.
    #[error(
        "the server refused the agent credential (HTTP 401: {detail}); it was revoked or is wrong: register the agent again with a new bootstrap token"
    )]
    CredentialRefused { detail: String },
    /// Registration was refused.
    #[error("registration as `{name}` was refused (HTTP {status}: {detail})")]
    RegistrationRefused {
        name: String,
        status: u16,
        detail: String,
    },
    /// The server refused a request in a way that retrying cannot fix (HTTP 400, 403,
    /// 404, 409, 422: a protocol-version mismatch, an unknown agent).
    #[error(
        "the server refused {what} (HTTP {status}: {detail}); retrying cannot fix this: check that the agent and deployd versions match and that the agent is still registered"
    )]
    Refused {
        what: String,
        status: u16,
        detail: String,
    },
    /// No credentials and no bootstrap token.
    #[error("no credentials in `{}` and no bootstrap token: set DEPLOY_AGENT_BOOTSTRAP_TOKEN or pass --bootstrap-token-file", path.display())]
    NoBootstrapToken { path: PathBuf },
    /// The stored credentials are for another server.
    #[error("`{}` holds credentials from server `{stored}`, which is not among the configured servers ({configured}): configure it again, or remove the file to register again", path.display())]
    ServerMismatch {
        path: PathBuf,
        stored: String,
        configured: String,
    },
    /// A state file could not be read or written.
    #[error("{action} `{}`: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A state file holds something unreadable.
    #[error("read `{}`: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    /// The server answered something the agent cannot use.
    #[error("{what}: {detail}")]
    Server { what: String, detail: String },
    /// The HTTP client could not be built (bad CA file, TLS setup).
    #[error("build the HTTP client: {0}")]
    Client(String),
}

impl AgentRunError {
    /// An I/O error on `path`.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}
