//! `SshExecutorConfig`: the executor-wide settings (default known_hosts file, timeouts, keepalive, log cap).

use std::path::PathBuf;
use std::time::Duration;

use crate::logs::DEFAULT_LOG_CAP;

/// Settings of an [`crate::ssh::SshExecutor`].
#[derive(Debug, Clone)]
pub struct SshExecutorConfig {
    /// The known_hosts file used by targets whose policy is `known_hosts` (or `accept_new`).
    pub known_hosts: PathBuf,
    /// Upper bound for TCP connect + key exchange + authentication.
    pub connect_timeout: Duration,
    /// SSH keepalive interval on idle connections.
    pub keepalive_interval: Duration,
    /// Unanswered keepalives before the connection is considered dead.
    pub keepalive_max: usize,
    /// How long a started container must stay up before the swap (docker_host).
    pub settle: Duration,
    /// The settle of the instant revert: the kept `-previous` container already served
    /// its digest, so a short check that it stays up is enough (docker_host).
    pub settle_known: Duration,
    /// `docker stop --time`: grace period of the old container before it is killed (docker_host).
    pub stop_timeout: Duration,
    /// Bytes of a remote command's stdout kept for parsing.
    pub stdout_cap: usize,
    /// Per-task log cap (see [`crate::TaskLog`]).
    pub log_cap: usize,
}

impl SshExecutorConfig {
    /// Defaults with the given known_hosts file.
    pub fn new(known_hosts: impl Into<PathBuf>) -> Self {
        Self {
            known_hosts: known_hosts.into(),
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(15),
            keepalive_max: 3,
            settle: Duration::from_millis(300),
            settle_known: Duration::from_millis(100),
            stop_timeout: Duration::from_secs(10),
            stdout_cap: 1024 * 1024,
            log_cap: DEFAULT_LOG_CAP,
        }
    }
}
