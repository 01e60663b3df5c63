//! `ArtifactError`: why a template could not be read, a bundle could not be rendered, or a lock failed verification.

use deploy_core::NameError;
use thiserror::Error;

/// Every way parsing, rendering or verifying can fail. Messages read well after
/// "failed to render artifacts: " and carry the offending value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ArtifactError {
    /// The document is larger than the parser accepts; it was not parsed.
    #[error("{what} is {size} bytes; expected at most {limit}")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    /// The document is not UTF-8.
    #[error("{what} is not UTF-8 (invalid byte at offset {offset}); expected UTF-8 text")]
    NotUtf8 { what: &'static str, offset: usize },
    /// YAML syntax or shape error, with its position (1-based).
    #[error("{what} is not valid at line {line}, column {column}: {message}")]
    Yaml {
        what: &'static str,
        line: usize,
        column: usize,
        message: String,
    },
    /// A YAML error without a position (rare: end of input, custom checks).
    #[error("{what} is not valid: {message}")]
    YamlNoPosition { what: &'static str, message: String },
    /// Anchors and aliases expand to more nodes than allowed (an alias expansion bomb); refused, not expanded.
    #[error(
        "{what} has more than {limit} YAML nodes once aliases are expanded; expected at most {limit} (an alias expansion bomb?)"
    )]
    TooManyNodes { what: &'static str, limit: u64 },
    /// Anchors and aliases expand to more bytes of keys, strings and tags than allowed
    /// (one long string repeated by aliases); refused, not expanded.
    #[error(
        "{what} has more than {limit} bytes of YAML scalars once aliases are expanded; expected at most {limit} (an alias expansion bomb?)"
    )]
    TooManyScalarBytes { what: &'static str, limit: u64 },
    /// A service names a component that the release does not have.
    #[error(
        "service `{service}` runs component `{component}`, which is not in release `{release}`; available: {available}"
    )]
    UnknownComponent {
        service: String,
        component: String,
        release: String,
        available: String,
    },
    /// A compose lock's secret references cannot be moved to a secrets override file (or a
    /// value cannot travel in one); the detail names the service and the variable,
    /// never a value.
    #[error("{detail}")]
    ComposeSecrets { detail: String },
    /// Two services share a name.
    #[error("service `{name}` is defined twice; expected each service name once")]
    DuplicateService { name: String },
    /// A name that must be a deploy-core `Name` is not one.
    #[error("{field} is invalid: {source}")]
    InvalidName {
        field: String,
        #[source]
        source: NameError,
    },
    /// An environment variable name outside `[A-Za-z_][A-Za-z0-9_]*`.
    #[error(
        "environment variable name `{key}` of service `{service}` is invalid; expected [A-Za-z_][A-Za-z0-9_]*"
    )]
    InvalidEnvKey { service: String, key: String },
    /// Any other value that breaks a rule: which field, what it was, what was expected.
    #[error("{field} is `{value}`; expected {expected}")]
    Invalid {
        field: String,
        value: String,
        expected: String,
    },
    /// A service asks its host for something the runtime policy does not allow
    /// (`setting` is quoted, with why it reaches the host where that is not plain).
    #[error("service `{service}` sets {setting}, which {scope} refuses; {remedy}")]
    PolicyRefused {
        service: String,
        /// The service key (`privileged`, `volumes`, …): the error's field.
        key: String,
        setting: String,
        scope: String,
        remedy: String,
    },
    /// The lock's recorded digest differs from the digest of its content.
    #[error(
        "compose lock digest is `{recorded}` but its content hashes to `{actual}`; expected them equal"
    )]
    LockDigestMismatch { recorded: String, actual: String },
}

impl ArtifactError {
    /// Shorthand for [`ArtifactError::Invalid`]; control characters in the value are shown escaped.
    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl AsRef<str>,
        expected: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            field: field.into(),
            value: value
                .as_ref()
                .chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_debug().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect(),
            expected: expected.into(),
        }
    }
}
