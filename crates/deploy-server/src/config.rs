//! `ServerConfig`: the limits of the HTTP API, the web console's cookie settings, and the build the embedder reports (`BuildInfo`).

use std::time::Duration;

/// Limits of the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Largest accepted request body, in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Largest page a list may ask for (`limit`); larger: 400.
    pub max_page_size: u32,
    /// Page size when `limit` is absent.
    pub default_page_size: u32,
    /// Bound of a whole `POST /plan` (each inspect is bounded by the plan engine's
    /// task timeout, see `ServerState::set_plan_engine`); longer: 503.
    pub plan_timeout: Duration,
    /// The listener serves HTTPS: web-console cookies are marked `Secure`.
    pub secure_cookies: bool,
    /// How long a web-console sign-in lasts (never past its API token's expiry).
    pub console_session_ttl: Duration,
    /// What `GET /api/v1/version` and the `deployd_build_info` metric report: the
    /// embedding binary's build (deployd sets its own from its build script).
    pub build: BuildInfo,
}

/// The version and commit a server was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// The workspace version, e.g. `0.1.0`.
    pub version: String,
    /// The git commit (short), or `unknown` when it could not be told at build time.
    pub commit: String,
}

impl Default for BuildInfo {
    /// This library's version; the commit is the embedder's to tell.
    fn default() -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            commit: "unknown".to_owned(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_page_size: 500,
            default_page_size: 100,
            plan_timeout: Duration::from_secs(60),
            secure_cookies: false,
            console_session_ttl: Duration::from_secs(12 * 3600),
            build: BuildInfo::default(),
        }
    }
}
