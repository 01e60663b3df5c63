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
mod logs;
mod quote;
mod registry;
mod secrets;
pub mod ssh;
pub mod winrm;

pub use errors::{ErrorClass, ExecError};
pub use executor::{
    CommandOutput, ComponentSpec, DeployRequest, ExecContext, ExecutionResult, Executor, Published,
    TrafficSwitch, labels,
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
