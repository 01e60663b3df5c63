//! The WinRM executor: a WS-Management client, PowerShell encoding and the docker_host sequence for Windows servers.

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
