//! Error types of deploy-core: each names the offending value and what was expected.

use thiserror::Error;

/// A `Name` that does not match `[a-z0-9][a-z0-9_.-]{0,62}`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("name is empty; expected [a-z0-9][a-z0-9_.-]{{0,62}}")]
    Empty,
    #[error("name `{value}` starts with `{found}`; expected a lowercase letter or digit first")]
    InvalidFirstChar { value: String, found: char },
    #[error(
        "name `{value}` has `{found}` at position {position}; expected only a-z, 0-9, `_`, `.`, `-`"
    )]
    InvalidChar {
        value: String,
        found: char,
        position: usize,
    },
    #[error("name `{value}` is {len} bytes long; expected at most 63")]
    TooLong { value: String, len: usize },
}

/// A digest that is not `sha256:` + 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DigestError {
    #[error(
        "digest `{value}` has no algorithm prefix; expected `sha256:` followed by 64 lowercase hex characters"
    )]
    MissingPrefix { value: String },
    #[error("digest `{value}` uses algorithm `{algorithm}`; expected `sha256`")]
    UnsupportedAlgorithm { value: String, algorithm: String },
    #[error(
        "digest `{value}` has `{found}` at position {position}; expected a lowercase hex character (0-9, a-f)"
    )]
    InvalidChar {
        value: String,
        found: char,
        position: usize,
    },
    #[error("digest `{value}` has {len} hex characters; expected 64")]
    WrongLength { value: String, len: usize },
}

/// An image reference that is malformed or not pinned by digest.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ImageRefError {
    #[error("image reference is empty; expected [registry[:port]/]path@sha256:<64 hex>")]
    Empty,
    #[error(
        "image reference `{value}` has no digest; expected [registry[:port]/]path@sha256:<64 hex> (tags are not identities)"
    )]
    MissingDigest { value: String },
    #[error("image reference `{value}` has an invalid digest: {source}")]
    InvalidDigest { value: String, source: DigestError },
    #[error("image reference `{value}` has a repository name of {len} bytes; expected at most 255")]
    TooLong { value: String, len: usize },
    #[error(
        "image reference `{value}` has registry `{registry}`; expected host[:port] with a port from 0 to 65535"
    )]
    InvalidRegistry { value: String, registry: String },
    #[error(
        "image reference `{value}` has path component `{component}`; expected lowercase letters and digits joined by `.`, `_`, `__` or `-`"
    )]
    InvalidPathComponent { value: String, component: String },
    #[error(
        "image reference `{value}` has tag `{tag}`; expected [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"
    )]
    InvalidTag { value: String, tag: String },
}

/// A typed id that is not a version 7 UUID.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdError {
    #[error(
        "{entity} id `{value}` is not a UUID; expected the hyphenated form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
    )]
    Malformed { entity: &'static str, value: String },
    #[error("{entity} id `{value}` is a version {version} UUID; expected version 7")]
    WrongVersion {
        entity: &'static str,
        value: String,
        version: usize,
    },
}

/// A timestamp outside what we can represent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TimestampError {
    #[error("timestamp `{value}` is not RFC 3339; expected e.g. 2026-11-26T09:33:41.123Z")]
    Malformed { value: String },
    #[error("timestamp `{value}` is before 1970-01-01; expected a later instant")]
    BeforeEpoch { value: String },
    #[error(
        "timestamp of {millis} ms after the epoch is out of range; expected a year before 10000"
    )]
    OutOfRange { millis: u64 },
}

/// A field of a model value that breaks its rule.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field} is `{value}`; expected {expected}")]
pub struct ValidationError {
    /// Dotted path of the field, e.g. `connection.ssh.port`.
    pub field: String,
    /// The offending value, as text (never a secret: secrets are not model values).
    pub value: String,
    /// What would have been accepted.
    pub expected: String,
}

impl ValidationError {
    /// Builds an error for `field` holding `value`.
    pub fn new(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

/// A release has no component of the requested name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("component `{component}` is not in release `{release}`; available: {}", available.join(", "))]
pub struct UnknownComponent {
    pub component: String,
    pub release: String,
    pub available: Vec<String>,
}

/// An event that the current state does not accept.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{entity} in state `{from}` cannot take event `{event}`{}", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
pub struct InvalidTransition {
    /// `job` or `task`.
    pub entity: &'static str,
    /// The state the entity was in (it is unchanged).
    pub from: &'static str,
    /// The rejected event.
    pub event: &'static str,
    /// Why, when the table alone does not say (e.g. the retry budget is spent).
    pub reason: Option<String>,
}

/// The rollout planner refused its input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlanError {
    #[error("rollout has no targets; expected at least one target in the environment")]
    NoTargets,
    #[error("target `{target}` is listed twice; expected each target once")]
    DuplicateTarget { target: String },
}

/// Every error of deploy-core, for callers that do not care which rule broke.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CoreError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error(transparent)]
    ImageRef(#[from] ImageRefError),
    #[error(transparent)]
    Id(#[from] IdError),
    #[error(transparent)]
    Timestamp(#[from] TimestampError),
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error(transparent)]
    UnknownComponent(#[from] UnknownComponent),
    #[error(transparent)]
    InvalidTransition(#[from] InvalidTransition),
    #[error(transparent)]
    Plan(#[from] PlanError),
}
