//! Errors of deploy-health: a check that cannot be performed at all (as opposed to an unhealthy target).

use thiserror::Error;

/// The health check is misconfigured for this target; retrying will not help.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HealthError {
    #[error("invalid health check for target `{target}`: {source}")]
    InvalidConfig {
        target: String,
        source: deploy_core::ValidationError,
    },
    #[error(
        "target `{target}` has no health_endpoint and no deployed instance to probe; expected one of the two for an http or tcp health check"
    )]
    NoEndpoint { target: String },
    /// The instance does not publish a port the check can aim at.
    #[error("probe instance `{slot}` of target `{target}`: {detail}")]
    NoInstancePort {
        target: String,
        slot: String,
        detail: String,
    },
    /// The target could not be asked where the instance publishes its ports.
    #[error("find the instance to probe on target `{target}`: {detail}")]
    Unreachable { target: String, detail: String },
    #[error(
        "target `{target}` has no host for a tcp health check; expected a health_endpoint or an ssh/winrm connection"
    )]
    NoHost { target: String },
    #[error("target `{target}` has a command health check but no command runner is configured")]
    NoCommandRunner { target: String },
    #[error("cannot build the http client: {0}")]
    HttpClient(String),
}
