//! `HealthCheckConfig`: how a target is judged healthy after a deploy (http, tcp or command), with retries and a soak time.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::errors::ValidationError;
use crate::values::CommandSpec;

/// What to probe.
///
/// Without a `health_endpoint` on the target, http and tcp checks aim at the instance
/// just deployed: the address where the new container publishes `port` (a container
/// port), reached from the target's side (through the SSH connection, by the agent on
/// its host, or from deployd for WinRM). With a `health_endpoint` (a load balancer,
/// on purpose) they aim there instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum HealthCheck {
    /// GET `path`; healthy when the status matches (and the body contains `expected_body`).
    Http {
        #[serde(default = "default_path")]
        path: String,
        #[serde(default = "default_status")]
        expected_status: u16,
        #[serde(default)]
        expected_body: Option<String>,
        /// The container port to probe (instance checks); default: the one TCP port the
        /// instance publishes. Ignored with a `health_endpoint`, which names its port.
        #[serde(default)]
        port: Option<u16>,
    },
    /// A TCP connect succeeds: to the container port `port` where the instance publishes
    /// it, or, with a `health_endpoint`, to `port` on the endpoint's host.
    Tcp { port: u16 },
    /// The command exits 0 when run on the target through its executor; with
    /// `in_container` (docker_host), inside the new container (`docker exec`).
    Command {
        command: CommandSpec,
        #[serde(default)]
        in_container: bool,
    },
}

/// An HTTP probe's expectation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpExpectation {
    pub path: String,
    pub expected_status: u16,
    #[serde(default)]
    pub expected_body: Option<String>,
}

/// One probe of a deployed instance at a published address, carried out from the
/// target's side (a TCP connect, or an HTTP GET when `http` is set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceProbe {
    pub address: crate::container::PublishedPort,
    #[serde(default)]
    pub http: Option<HttpExpectation>,
    /// Limit for the probe, milliseconds.
    pub timeout_ms: u64,
}

/// What one instance probe found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeOutcome {
    pub healthy: bool,
    /// What was checked and what came back.
    pub message: String,
    #[serde(default)]
    pub status_code: Option<u16>,
}

fn default_path() -> String {
    "/health".to_owned()
}

fn default_status() -> u16 {
    200
}

/// A health check with the spec's timing (timeout, retries, interval) plus a soak time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    pub check: HealthCheck,
    /// Limit for one attempt.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts before the target is declared unhealthy (at least 1).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Pause between attempts, and between checks during the soak.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// After the first success the target must stay healthy this long (Nomad's `min_healthy_time`).
    #[serde(default)]
    pub min_healthy_time_ms: u64,
}

fn default_timeout_ms() -> u64 {
    5_000
}

fn default_retries() -> u32 {
    3
}

fn default_interval_ms() -> u64 {
    1_000
}

/// One hour: any single timing above this is almost certainly a unit mistake (seconds typed as ms is the other way round).
const MAX_TIMING_MS: u64 = 3_600_000;

impl HealthCheckConfig {
    /// A check with the default timing.
    pub fn new(check: HealthCheck) -> Self {
        Self {
            check,
            timeout_ms: default_timeout_ms(),
            retries: default_retries(),
            interval_ms: default_interval_ms(),
            min_healthy_time_ms: 0,
        }
    }

    /// Checks ranges and the HTTP path.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let timing = |field: &str, v: u64, min: u64| {
            if (min..=MAX_TIMING_MS).contains(&v) {
                Ok(())
            } else {
                Err(ValidationError::new(
                    format!("health_check.{field}"),
                    v,
                    format!("{min} to {MAX_TIMING_MS} milliseconds"),
                ))
            }
        };
        timing("timeout_ms", self.timeout_ms, 1)?;
        timing("interval_ms", self.interval_ms, 0)?;
        timing("min_healthy_time_ms", self.min_healthy_time_ms, 0)?;
        if !(1..=1000).contains(&self.retries) {
            return Err(ValidationError::new(
                "health_check.retries",
                self.retries,
                "1 to 1000 attempts",
            ));
        }
        match &self.check {
            HealthCheck::Http {
                path,
                expected_status,
                expected_body,
                port,
            } => {
                if *port == Some(0) {
                    return Err(ValidationError::new(
                        "health_check.port",
                        0,
                        "a port from 1 to 65535",
                    ));
                }
                let path_ok = path.starts_with('/')
                    && path.len() <= 2048
                    && path.chars().all(|c| c.is_ascii_graphic());
                if !path_ok {
                    return Err(ValidationError::new(
                        "health_check.path",
                        path.escape_debug(),
                        "a path starting with `/`, printable ASCII without spaces",
                    ));
                }
                if !(100..=599).contains(expected_status) {
                    return Err(ValidationError::new(
                        "health_check.expected_status",
                        expected_status,
                        "an HTTP status from 100 to 599",
                    ));
                }
                if expected_body
                    .as_ref()
                    .is_some_and(|b| b.is_empty() || b.len() > 4096)
                {
                    return Err(ValidationError::new(
                        "health_check.expected_body",
                        "(empty or over 4096 bytes)",
                        "a non-empty substring of at most 4096 bytes",
                    ));
                }
            }
            HealthCheck::Tcp { port } => {
                if *port == 0 {
                    return Err(ValidationError::new(
                        "health_check.port",
                        port,
                        "a port from 1 to 65535",
                    ));
                }
            }
            HealthCheck::Command { .. } => {}
        }
        Ok(())
    }

    /// Limit for one attempt.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Pause between attempts.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// How long the target must stay healthy after its first success.
    pub fn min_healthy_time(&self) -> Duration {
        Duration::from_millis(self.min_healthy_time_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_defaults_follow_the_spec() {
        let c: HealthCheckConfig = serde_json::from_str(r#"{"check":{"type":"http"}}"#).unwrap();
        assert_eq!(
            c.check,
            HealthCheck::Http {
                path: "/health".into(),
                expected_status: 200,
                expected_body: None,
                port: None,
            }
        );
        assert_eq!(c.retries, 3);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn validation_names_field_and_range() {
        let mut c = HealthCheckConfig::new(HealthCheck::Tcp { port: 0 });
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "health_check.port is `0`; expected a port from 1 to 65535"
        );
        c.check = HealthCheck::Tcp { port: 80 };
        c.retries = 0;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "health_check.retries is `0`; expected 1 to 1000 attempts"
        );
        c.retries = 1;
        c.timeout_ms = 0;
        assert!(c.validate().is_err());
        let bad_path = HealthCheckConfig::new(HealthCheck::Http {
            path: "health now".into(),
            expected_status: 200,
            expected_body: None,
            port: None,
        });
        assert!(bad_path.validate().is_err());
        assert!(
            serde_json::from_str::<HealthCheckConfig>(
                r#"{"check":{"type":"tcp","port":1},"retry":2}"#
            )
            .is_err()
        );
    }
}
