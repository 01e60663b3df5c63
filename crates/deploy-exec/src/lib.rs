//! deploy-exec: the `Executor` contract, the executor registry, secrets providers, and the SSH, API, WinRM and agent executors.
//!
//! An executor carries out one task on one target: `deploy` (with the rendered
//! artifacts), `inspect` (which digest runs: idempotency, resume, rollback) and
//! `run_command` (command health checks). Every call takes an [`ExecContext`]:
//! a [`TaskLog`] (line streaming, byte cap, secret redaction), a cancellation
//! token and a timeout. Failures are [`ExecError`]s classified retryable or not.

pub mod agent;
pub mod api;
mod errors;
mod executor;
#[cfg(test)]
mod layering;
mod logs;
mod quote;
mod registry;
mod secrets;
pub mod ssh;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod winrm;

pub use errors::{ErrorClass, ExecError};
pub use executor::{
    CommandOutput, ComponentSpec, DeployFailure, DeployOutcome, DeployRequest, Deployed,
    ExecContext, Executor, Published, TrafficSwitch,
};
pub use logs::{
    DEFAULT_LOG_CAP, LogSink, MemorySink, NullSink, REDACTED, Stream, TRUNCATION_MARKER, TaskLog,
};
pub use quote::{sh_join, sh_quote};
pub use registry::ExecutorRegistry;
pub use secrets::{
    DefaultSecrets, EnvSecrets, FileSecrets, ScopedSecrets, Secret, SecretsProvider,
};
pub use tokio_util::sync::CancellationToken;

/// Entry points for the fuzz targets in `fuzz/` (its own workspace, see
/// docs/ARCHITECTURE.md). The WS-Management envelope code is private to the WinRM
/// client; fuzzing its response parser needs to call it directly, and this is the
/// smallest opening that allows it. Not an API: hidden from the docs, free to change.
#[doc(hidden)]
pub mod fuzzing {
    use std::time::Duration;

    pub use crate::winrm::envelope::{Fault, Response, StreamChunk, parse as parse_envelope};
    use crate::winrm::envelope::{Header, Request, build};

    /// The Receive request envelope for `command_id` in shell `shell_id`, as the client builds it.
    pub fn build_receive_envelope(shell_id: &str, command_id: &str) -> Vec<u8> {
        let header = Header {
            to: "https://fuzz.invalid:5986/wsman",
            message_id: "uuid:00000000-0000-0000-0000-000000000000",
            max_envelope_size: 153_600,
            operation_timeout: Duration::from_secs(20),
            shell_id: Some(shell_id),
        };
        build(&header, &Request::Receive { command_id })
    }
}
