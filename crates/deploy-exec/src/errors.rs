//! `ExecError`: every way an executor can fail, each classified as retryable (transient) or permanent.

use thiserror::Error;

/// Whether retrying the same task may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient: connection refused or reset, a timeout, a remote command that failed
    /// for reasons outside the request (a registry hiccup).
    Retryable,
    /// Retrying cannot help until someone changes config or credentials.
    Permanent,
}

/// A failure of an executor. Messages read well after "failed to …" and never contain a secret.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExecError {
    #[error("connect to {host}:{port}: {detail}")]
    Connect {
        host: String,
        port: u16,
        detail: String,
    },
    #[error("connect to {host}:{port} within {seconds} s")]
    ConnectTimeout {
        host: String,
        port: u16,
        seconds: u64,
    },
    #[error("keep the ssh connection to {host}:{port} open: {detail}")]
    ConnectionLost {
        host: String,
        port: u16,
        detail: String,
    },
    #[error(
        "verify the host key of {host}:{port}: the server presented {fingerprint}, expected {expected}"
    )]
    HostKeyMismatch {
        host: String,
        port: u16,
        fingerprint: String,
        expected: String,
    },
    #[error(
        "verify the host key of {host}:{port}: {fingerprint} is not in {known_hosts} (strict host key checking; use the accept_new policy to record it on first use)"
    )]
    HostKeyUnknown {
        host: String,
        port: u16,
        fingerprint: String,
        known_hosts: String,
    },
    #[error("authenticate as `{user}` on {host}:{port} with {method}")]
    Authentication {
        host: String,
        port: u16,
        user: String,
        method: &'static str,
    },
    #[error("resolve credential `{reference}`: {detail}")]
    Secret { reference: String, detail: String },
    #[error("accept {field} `{value}`: expected {expected}")]
    InvalidInput {
        field: String,
        value: String,
        expected: String,
    },
    #[error("run a {target_type} deploy with the {model} executor: no such executor is registered")]
    Unsupported { model: String, target_type: String },
    #[error("finish `{what}` on {host} within {seconds} s")]
    Timeout {
        host: String,
        what: String,
        seconds: u64,
    },
    #[error("finish `{what}` on {host}: cancelled")]
    Cancelled { host: String, what: String },
    #[error("run `{what}` on {host}: exit status {status}: {stderr_tail}")]
    CommandFailed {
        host: String,
        what: String,
        status: u32,
        stderr_tail: String,
    },
    #[error("upload `{file}` to {host}:{path}: {detail}")]
    Upload {
        host: String,
        file: String,
        path: String,
        detail: String,
    },
    /// The target's work dir is missing and cannot be created, or is unsafe (others can
    /// write or swap it, it belongs to another user): permanent until someone fixes the host.
    #[error("use work dir {host}:{path}: {detail}")]
    WorkDir {
        host: String,
        path: String,
        detail: String,
    },
    #[error("start container `{container}` on {host}: {detail}")]
    NotRunning {
        host: String,
        container: String,
        detail: String,
    },
    #[error("record the host key of {host}:{port} in {known_hosts}: {detail}")]
    KnownHostsWrite {
        host: String,
        port: u16,
        known_hosts: String,
        detail: String,
    },
    /// An orchestrator API answered with a non-success status. 401/403 and other 4xx
    /// are permanent; 408, 429 and 5xx are retryable.
    #[error("{action} {platform} `{resource}`: http status {status}, expected 2xx: {detail}")]
    ApiStatus {
        platform: &'static str,
        action: String,
        resource: String,
        status: u16,
        detail: String,
    },
    /// Someone else changed the resource between our read and our write (Nomad
    /// `EnforceIndex`, Kubernetes 409): read it again and retry.
    #[error(
        "{action} {platform} `{resource}`: it was changed concurrently since it was read ({detail}); retry reads it again"
    )]
    ApiConflict {
        platform: &'static str,
        action: String,
        resource: String,
        detail: String,
    },
    /// An orchestrator API answered with something other than what was expected.
    #[error("read the {platform} answer for `{resource}`: expected {expected}")]
    ApiResponse {
        platform: &'static str,
        resource: String,
        expected: String,
    },
    /// The platform reported the rollout as failed (ECS FAILED, Nomad failed deployment,
    /// Kubernetes ProgressDeadlineExceeded).
    #[error("roll out `{image}` on {platform} `{resource}`: {detail}")]
    RolloutFailed {
        platform: &'static str,
        resource: String,
        image: String,
        detail: String,
    },
    /// The server's TLS certificate is not trusted (wrong or missing CA): retrying cannot help.
    #[error("verify the tls certificate of {host}:{port}: {detail}")]
    TlsCertificate {
        host: String,
        port: u16,
        detail: String,
    },
    /// The operation does not exist for this kind of target.
    #[error("{what} on a {target_type} target: not supported ({hint})")]
    NotSupported {
        what: String,
        target_type: String,
        hint: String,
    },
    #[error("{operation} on {endpoint}: {detail}")]
    Protocol {
        endpoint: String,
        operation: String,
        detail: String,
    },
    /// No registered agent can take the target's task now (none matches, inactive,
    /// revoked, lacking the capability); retryable: an agent may come back.
    #[error("find an agent for target `{target}`: {detail}")]
    NoAgentAvailable { target: String, detail: String },
    /// The agent stopped polling (heartbeat expiry) or was revoked while it had the task.
    #[error("hear back from {agent} about task `{task}` attempt {attempt}: {reason}")]
    AgentLost {
        agent: String,
        task: String,
        attempt: u32,
        reason: String,
    },
    /// The agent reported a typed failure; the class follows `AgentErrorCode::is_retryable`.
    #[error("run the task on {agent}: {}: {message}", code.as_str())]
    Agent {
        agent: String,
        code: deploy_api::agent::AgentErrorCode,
        message: String,
    },
    /// A step of the docker_host sequence failed on the target's Docker Engine; the
    /// class follows `DockerErrorKind::is_retryable`.
    #[error("{detail} (on {host})")]
    Docker {
        host: String,
        kind: deploy_docker::DockerErrorKind,
        detail: String,
    },
    #[error("{operation} on {endpoint}: the server answered with a soap fault: {fault}")]
    SoapFault {
        endpoint: String,
        operation: String,
        fault: String,
    },
}

impl ExecError {
    /// The retry class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Connect { .. }
            | Self::ConnectTimeout { .. }
            | Self::ConnectionLost { .. }
            | Self::Timeout { .. }
            | Self::CommandFailed { .. }
            | Self::Upload { .. }
            | Self::ApiConflict { .. }
            | Self::NoAgentAvailable { .. }
            | Self::AgentLost { .. } => ErrorClass::Retryable,
            Self::Docker { kind, .. } => {
                if kind.is_retryable() {
                    ErrorClass::Retryable
                } else {
                    ErrorClass::Permanent
                }
            }
            Self::Agent { code, .. } => {
                if code.is_retryable() {
                    ErrorClass::Retryable
                } else {
                    ErrorClass::Permanent
                }
            }
            Self::ApiStatus { status, .. } => {
                if *status == 408 || *status == 429 || *status >= 500 {
                    ErrorClass::Retryable
                } else {
                    ErrorClass::Permanent
                }
            }
            Self::HostKeyMismatch { .. }
            | Self::HostKeyUnknown { .. }
            | Self::Authentication { .. }
            | Self::Secret { .. }
            | Self::InvalidInput { .. }
            | Self::Unsupported { .. }
            | Self::Cancelled { .. }
            | Self::NotRunning { .. }
            | Self::WorkDir { .. }
            | Self::KnownHostsWrite { .. }
            | Self::ApiResponse { .. }
            | Self::TlsCertificate { .. }
            | Self::RolloutFailed { .. }
            | Self::NotSupported { .. }
            | Self::Protocol { .. }
            | Self::SoapFault { .. } => ErrorClass::Permanent,
        }
    }

    /// True when retrying the task may succeed.
    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Retryable
    }

    /// A failed step of the docker_host sequence on `host`, as an executor error.
    pub fn docker(host: &str, container: &str, e: deploy_docker::DockerError) -> Self {
        match e.kind {
            deploy_docker::DockerErrorKind::NotRunning => Self::NotRunning {
                host: host.to_owned(),
                container: container.to_owned(),
                detail: e.message,
            },
            kind => Self::Docker {
                host: host.to_owned(),
                kind,
                detail: e.message,
            },
        }
    }

    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl Into<String>,
        expected: impl Into<String>,
    ) -> Self {
        Self::InvalidInput {
            field: field.into(),
            value: value.into(),
            expected: expected.into(),
        }
    }

    /// `target` was handed to the executor of the `served` execution model, and its
    /// connection is of another (the registry picks by model, so this is a caller's bug).
    pub(crate) fn wrong_connection(
        target: &deploy_core::Target,
        served: deploy_core::ExecutionModel,
    ) -> Self {
        Self::invalid(
            format!("target `{}`.connection.model", target.name),
            target.connection.model().as_str(),
            format!("{0} for the {0} executor", served.as_str()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_failures_retry_and_trust_failures_do_not() {
        let refused = ExecError::Connect {
            host: "127.0.0.1".into(),
            port: 22,
            detail: "connection refused".into(),
        };
        assert!(refused.is_retryable());
        let mismatch = ExecError::HostKeyMismatch {
            host: "127.0.0.1".into(),
            port: 2222,
            fingerprint: "SHA256:abc".into(),
            expected: "SHA256:def".into(),
        };
        assert!(!mismatch.is_retryable());
        assert_eq!(
            mismatch.to_string(),
            "verify the host key of 127.0.0.1:2222: the server presented SHA256:abc, expected SHA256:def"
        );
        let auth = ExecError::Authentication {
            host: "h".into(),
            port: 22,
            user: "deploy".into(),
            method: "public key",
        };
        assert_eq!(auth.class(), ErrorClass::Permanent);
        let timeout = ExecError::Timeout {
            host: "h".into(),
            what: "docker pull".into(),
            seconds: 5,
        };
        assert!(timeout.is_retryable());
        assert!(!ExecError::invalid("name", "x", "y").is_retryable());
    }

    #[test]
    fn api_statuses_retry_only_when_the_server_may_recover() {
        let status = |status| ExecError::ApiStatus {
            platform: "kubernetes",
            action: "patch deployment".into(),
            resource: "prod/web".into(),
            status,
            detail: "x".into(),
        };
        for (code, retryable) in [
            (401, false),
            (403, false),
            (404, false),
            (422, false),
            (408, true),
            (429, true),
            (500, true),
            (503, true),
        ] {
            assert_eq!(status(code).is_retryable(), retryable, "{code}");
        }
        assert_eq!(
            status(403).to_string(),
            "patch deployment kubernetes `prod/web`: http status 403, expected 2xx: x"
        );
        let conflict = ExecError::ApiConflict {
            platform: "nomad",
            action: "register".into(),
            resource: "web".into(),
            detail: "index 41".into(),
        };
        assert!(conflict.is_retryable());
        let tls = ExecError::TlsCertificate {
            host: "127.0.0.1".into(),
            port: 6443,
            detail: "unknown issuer".into(),
        };
        assert!(!tls.is_retryable());
    }
}
