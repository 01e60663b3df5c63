//! `HealthVerifier`: repeats a probe with the spec's timeout, retries and interval, then holds it for `min_healthy_time`.

use std::sync::Arc;
use std::time::Duration;

use deploy_core::{HealthCheckConfig, Name, Target};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::errors::HealthError;
use crate::instance::InstanceProber;
use crate::probe::{CommandRunner, Means, ProbeSpec};

/// Shortest pause between probes during the soak, so that `interval_ms = 0` cannot spin.
const MIN_SOAK_PAUSE: Duration = Duration::from_millis(10);

/// The outcome of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthVerdict {
    Healthy,
    Unhealthy,
    /// The check could not run on the target (its last probe's runner failed: the
    /// connection was refused or lost), so nothing was learnt about the deployed
    /// version; the engine retries such an attempt like any unreachable target.
    Unreachable,
    /// The cancellation token fired before a verdict.
    Cancelled,
}

/// What a verification found (the spec's `HealthCheckResult`, plus the soak).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    pub verdict: HealthVerdict,
    /// Probes performed, including those of the soak.
    pub attempts: u32,
    /// The last probe's message, or why the verification ended.
    pub message: String,
    /// The last HTTP status seen, if any.
    pub status_code: Option<u16>,
    /// How long the target was continuously healthy before the verdict.
    pub healthy_for: Duration,
}

impl HealthReport {
    /// True when the target was judged healthy.
    pub fn healthy(&self) -> bool {
        self.verdict == HealthVerdict::Healthy
    }
}

/// Verifies targets' health. Cheap to clone; one per engine is enough.
#[derive(Clone)]
pub struct HealthVerifier {
    http: reqwest::Client,
    commands: Option<Arc<dyn CommandRunner>>,
    instances: Option<Arc<dyn InstanceProber>>,
}

impl HealthVerifier {
    /// A verifier without command checks (http and tcp only).
    pub fn new() -> Result<Self, HealthError> {
        // No redirects (a 301 is not the expected 200) and no proxy from the
        // environment: the check must reach the target itself.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| HealthError::HttpClient(e.to_string()))?;
        Ok(Self {
            http,
            commands: None,
            instances: None,
        })
    }

    /// Adds the runner used by `command` checks.
    pub fn with_command_runner(mut self, runner: Arc<dyn CommandRunner>) -> Self {
        self.commands = Some(runner);
        self
    }

    /// Adds the prober of deployed instances (http and tcp checks without a health endpoint).
    pub fn with_instance_prober(mut self, prober: Arc<dyn InstanceProber>) -> Self {
        self.instances = Some(prober);
        self
    }

    /// Verifies `target` with `config`; http and tcp checks without a health endpoint
    /// aim at instance `slot` (the container or compose project just deployed).
    ///
    /// Up to `retries` probes until the first success, `interval` apart, each
    /// bounded by `timeout`. After the first success, the target must stay
    /// healthy for `min_healthy_time`, probed every `interval`: one failure in
    /// that window makes it unhealthy (a flapping canary must not pass). The
    /// token cancels at any point, including mid-probe.
    pub async fn verify(
        &self,
        target: &Target,
        config: &HealthCheckConfig,
        slot: Option<&Name>,
        cancel: &CancellationToken,
    ) -> Result<HealthReport, HealthError> {
        config
            .validate()
            .map_err(|source| HealthError::InvalidConfig {
                target: target.name.to_string(),
                source,
            })?;
        let means = Means {
            runner: self.commands.as_ref(),
            prober: self.instances.as_ref(),
            slot,
            timeout: config.timeout(),
            cancel,
        };
        let spec = match ProbeSpec::resolve(target, &config.check, &means).await {
            Ok(spec) => spec,
            // The target could not say where the instance publishes: nothing was learnt
            // about the release, so this is a verdict of its own (retried like any
            // unreachable target), not an error that fails the task for good.
            Err(e @ HealthError::Unreachable { .. }) => {
                return Ok(HealthReport {
                    verdict: HealthVerdict::Unreachable,
                    attempts: 1,
                    message: e.to_string(),
                    status_code: None,
                    healthy_for: Duration::ZERO,
                });
            }
            Err(e) => return Err(e),
        };
        let min_healthy = config.min_healthy_time();
        let mut attempts = 0;
        let mut failures = 0;
        let mut healthy_since: Option<Instant> = None;
        let mut last = None;
        loop {
            attempts += 1;
            let probe = tokio::select! {
                () = cancel.cancelled() => return Ok(cancelled(attempts, last.as_ref(), healthy_since)),
                probe = spec.run(&self.http, target, config.timeout(), cancel) => probe,
            };
            let now = Instant::now();
            let report = |verdict, message: String, healthy_for| HealthReport {
                verdict,
                attempts,
                message,
                status_code: probe.status_code,
                healthy_for,
            };
            match (probe.healthy, healthy_since) {
                (true, None) if min_healthy.is_zero() => {
                    return Ok(report(
                        HealthVerdict::Healthy,
                        probe.message.clone(),
                        Duration::ZERO,
                    ));
                }
                (true, None) => healthy_since = Some(now),
                (true, Some(since)) if now - since >= min_healthy => {
                    return Ok(report(
                        HealthVerdict::Healthy,
                        probe.message.clone(),
                        now - since,
                    ));
                }
                (true, Some(_)) => {}
                (false, Some(since)) => {
                    let held = now - since;
                    let message = format!(
                        "became unhealthy after {} ms of the required {} ms: {}",
                        held.as_millis(),
                        min_healthy.as_millis(),
                        probe.message
                    );
                    let verdict = if probe.unreachable {
                        HealthVerdict::Unreachable
                    } else {
                        HealthVerdict::Unhealthy
                    };
                    return Ok(report(verdict, message, held));
                }
                (false, None) => {
                    failures += 1;
                    if failures >= config.retries {
                        let verdict = if probe.unreachable {
                            HealthVerdict::Unreachable
                        } else {
                            HealthVerdict::Unhealthy
                        };
                        return Ok(report(verdict, probe.message.clone(), Duration::ZERO));
                    }
                }
            }
            let pause = match healthy_since {
                // In the soak: probe again after an interval, but never past the end of the window.
                Some(since) => config
                    .interval()
                    .max(MIN_SOAK_PAUSE)
                    .min((since + min_healthy).saturating_duration_since(now)),
                None => config.interval(),
            };
            last = Some(probe);
            tokio::select! {
                () = cancel.cancelled() => return Ok(cancelled(attempts, last.as_ref(), healthy_since)),
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

fn cancelled(
    attempts: u32,
    last: Option<&crate::Probe>,
    healthy_since: Option<Instant>,
) -> HealthReport {
    HealthReport {
        verdict: HealthVerdict::Cancelled,
        attempts,
        message: "health verification cancelled".to_owned(),
        status_code: last.and_then(|p| p.status_code),
        healthy_for: healthy_since.map_or(Duration::ZERO, |s| s.elapsed()),
    }
}

#[cfg(test)]
mod tests;
