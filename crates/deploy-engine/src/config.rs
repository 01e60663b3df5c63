//! `EngineConfig`: timeouts, leases and limits of the engine, with defaults a single `deployd` can run on.

use std::time::Duration;

use deploy_core::RetryBackoff;

/// Settings of an engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Who this engine is in job leases: unique among live replicas, and the same
    /// across a restart of one replica, which then resumes its own jobs at once.
    pub owner: String,
    /// How long a claimed job stays ours without renewal.
    pub lease: Duration,
    /// How often the service looks for jobs to claim.
    pub poll_interval: Duration,
    /// Upper bound of one executor call (deploy, inspect or command).
    pub task_timeout: Duration,
    /// Delays between attempts of a task.
    pub backoff: RetryBackoff,
    /// How long a stopping engine lets in-flight tasks finish before cancelling them.
    pub shutdown_grace: Duration,
    /// Per-task log budget, in bytes.
    pub log_cap: usize,
}

impl EngineConfig {
    /// Defaults for a replica called `owner`.
    pub fn new(owner: impl Into<String>) -> Self {
        Self {
            owner: owner.into(),
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(500),
            task_timeout: Duration::from_secs(600),
            backoff: RetryBackoff::default(),
            shutdown_grace: Duration::from_secs(20),
            log_cap: 256 * 1024,
        }
    }
}
