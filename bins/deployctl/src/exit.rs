//! The documented exit codes and the error that carries one.

use std::fmt;

/// The deployment succeeded (or the command did).
pub const SUCCESS: u8 = 0;
/// The deployment failed.
pub const DEPLOY_FAILED: u8 = 1;
/// Usage or input error (bad flag, 4xx other than 401/403).
pub const USAGE: u8 = 2;
/// The deployment failed and was rolled back.
pub const ROLLED_BACK: u8 = 3;
/// The server is unreachable, or the token was refused (401/403).
pub const UNREACHABLE: u8 = 4;
/// `--timeout` elapsed while following a job: deployctl stopped waiting, the job
/// goes on (its outcome is unknown to this run, so neither 0 nor 1 fits).
pub const TIMED_OUT: u8 = 5;
/// The promotion was requested but awaits approvals by others (its environment's
/// policy): nothing was deployed yet.
pub const AWAITING_APPROVAL: u8 = 6;

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
    /// Worth retrying: the connection failed or broke, or the server answered 503
    /// (its database is restarting), as opposed to a final answer from the server.
    pub retryable: bool,
    /// The HTTP status of a refusal from the server, if that is what this is.
    pub status: Option<u16>,
}

impl CliError {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retryable: false,
            status: None,
        }
    }

    /// The server could not be reached or the connection broke (exit 4).
    pub fn transport(message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            ..Self::new(UNREACHABLE, message)
        }
    }

    /// The server answered that it is unavailable for now (503, exit 4): retryable
    /// like a broken connection, so a follower waits and asks again.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::transport(message)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}
