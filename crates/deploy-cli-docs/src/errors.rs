//! Errors of deploy-cli-docs.

use std::path::PathBuf;

use thiserror::Error;

/// Man pages or completions that could not be written.
#[derive(Debug, Error)]
pub enum DocsError {
    #[error("cannot write {what} under `{}`: {source}", dir.display())]
    Write {
        what: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}` exists and is not a directory; expected a directory (created when missing)", path.display())]
    NotADirectory { path: PathBuf },
}
