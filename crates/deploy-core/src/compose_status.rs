//! `ComposeStatus`: what runs in a compose project, as an executor observed it (the SSH executor's status script, the agent's Docker queries).

use std::collections::BTreeMap;

use crate::container::PublishedPort;
use crate::digest::Digest;

/// What runs in a compose project.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComposeStatus {
    /// Service -> digest of its running container (`image: repo@sha256:…`).
    pub running: BTreeMap<String, Digest>,
    /// Services whose container exists but does not run, or runs an unpinned image.
    pub not_running: Vec<String>,
    /// The lock digest recorded by the last successful up.
    pub lock: Option<Digest>,
    /// Ports the project's running containers publish on the host.
    pub published: Vec<PublishedPort>,
}

impl ComposeStatus {
    /// The deployed lock digest, if every container of the project runs.
    pub fn healthy_lock(&self) -> Option<Digest> {
        if self.not_running.is_empty() && !self.running.is_empty() {
            self.lock.clone()
        } else {
            None
        }
    }
}
