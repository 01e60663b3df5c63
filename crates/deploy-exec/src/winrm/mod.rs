//! The WinRM executor: a WS-Management client, PowerShell encoding and the docker_host sequence for Windows servers.
//!
//! Windows servers are reached agentlessly over WS-Management; WinRM serves
//! docker_host targets only (a Windows host running Docker), and `windows_service`
//! targets are refused by `Target::validate`.
//!
//! - `envelope.rs` builds the SOAP requests (create shell, command, receive, signal,
//!   delete) with quick-xml's writer and parses the answers; malformed XML, bad base64
//!   or a missing body are errors, never panics.
//! - `client.rs` ([`WinrmClient`]) sends them over reqwest, checks each answer's
//!   `RelatesTo`, refuses an answer larger than `MaxEnvelopeSize` while reading it,
//!   streams output into the task log, always deletes the shell, and signals terminate
//!   on cancel or deadline.
//! - `ntlm.rs`: Basic or NTLMv2 (the handshake once per pooled connection and again
//!   after a 401). No NTLM message encryption: plain http is refused unless
//!   `allow_insecure_http`.
//! - `executor.rs` ([`WinrmExecutor`]): one shell per call; every remote step is
//!   `powershell -NoProfile -NonInteractive -EncodedCommand <base64 of UTF-16LE>`, and
//!   user values enter scripts only through [`ps_quote`] (`powershell.rs`).
//! - `docker_cli.rs`: deploy-docker's steps as Docker CLI commands (WinRM cannot
//!   forward the engine's named pipe), so docker_host runs the one shared sequence.
//!   The environment goes through a temporary env-file written in base64 pieces, never
//!   on a command line; words PowerShell 5.1 would mangle (a `"`, an empty word) are
//!   refused when the job is created ([`check_windows_spec`]), as are environment
//!   values with a line break and exec-form healthchecks. The background stop is a
//!   WMI-created process that outlives the shell. Instance probes run from deployd
//!   (the default `Executor::probe`).
//!
//! Errors: `Protocol` and `SoapFault` are permanent, connection failures and timeouts
//! retryable, a 401 is `Authentication`; messages never hold the password. Tests run
//! against `fake.rs`, a loopback server answering with envelopes recorded from
//! pywinrm's test suite, whose NTLM is judged by pyspnego, and which the real pywinrm
//! client drives too (`scripts/peers/winrm.sh`).

mod client;
mod docker_cli;
pub(crate) mod envelope;
mod executor;
mod ntlm;
mod powershell;

pub use client::{RunOutput, WinrmClient, WinrmClientConfig};
pub use docker_cli::check_windows_spec;
pub use executor::WinrmExecutor;
pub use powershell::{encoded_command, ps_quote};

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;
