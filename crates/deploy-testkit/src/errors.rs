//! Errors of the test fixtures: each names the program, path or port involved.

use thiserror::Error;

/// A fixture could not be set up.
#[derive(Debug, Error)]
pub enum TestkitError {
    #[error("program `{program}` is not installed; install it with {hint}")]
    MissingProgram { program: String, hint: String },
    #[error("cannot {action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} did not become ready within {seconds} s: {detail}")]
    NotReady {
        what: String,
        seconds: u64,
        detail: String,
    },
}

impl TestkitError {
    /// Wraps an I/O error with what was being done.
    pub fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let action = action.into();
        move |source| Self::Io { action, source }
    }
}
