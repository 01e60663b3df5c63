//! deploy-health: verifies that a deployed target is healthy (http, tcp or command checks) with the spec's timeout, retries and interval, plus a soak time.
//!
//! The verifier is independent of how commands reach a target: command checks
//! go through the [`CommandRunner`] trait, which the engine implements on top of
//! the target's executor (`Executor::run_command`).

mod errors;
mod probe;
mod verifier;

#[cfg(test)]
mod test_server;

pub use errors::HealthError;
pub use probe::{CommandOutput, CommandRunner, Probe};
pub use verifier::{HealthReport, HealthVerdict, HealthVerifier};
