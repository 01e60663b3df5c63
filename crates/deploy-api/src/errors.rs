//! `ApiTypeError`: a wire value that does not parse.

use thiserror::Error;

/// A wire value could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ApiTypeError {
    #[error("role `{0}` is unknown; expected viewer, deployer or admin")]
    UnknownRole(String),
    #[error("problem type `{0}` is unknown")]
    UnknownProblemType(String),
}
