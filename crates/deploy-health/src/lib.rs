//! deploy-health: verifies that a deployed target is healthy (http, tcp or command checks) with the spec's timeout, retries and interval, plus a soak time.
//!
//! The verifier is independent of how it reaches a target: command checks go
//! through the [`CommandRunner`] trait and probes of a deployed instance through
//! the [`InstanceProber`] trait, which the engine implements on top of the target's
//! executor; [`probe_stream`] is the probe itself over any byte stream, shared by
//! the executors and the agent.

mod errors;
mod instance;
mod probe;
mod verifier;

#[cfg(test)]
mod test_server;

pub use errors::HealthError;
pub use instance::{
    InstanceProber, NoProbePort, choose_port, local_address, local_socket, probe_container_port,
    probe_stream, probe_tcp,
};
pub use probe::{CommandOutput, CommandRunner, Probe};
pub use verifier::{HealthReport, HealthVerdict, HealthVerifier};
