//! The deploy agent runtime: connects out to deployd, executes docker_host / compose_host tasks on the local host, journals and reports them.

pub mod agent;
pub mod backoff;
pub mod client;
pub mod command;
pub mod compose;
pub mod credentials;
pub mod docker;
pub mod enroll;
pub mod errors;
pub mod files;
pub mod journal;
pub mod locks;
pub mod outbox;
pub mod redact;
pub mod runtime;
pub mod tasklog;
#[cfg(test)]
mod testing;

pub use agent::{Agent, AgentConfig};
pub use errors::{AgentRunError, TaskError};
pub use runtime::{Runtime, RuntimeConfig};
