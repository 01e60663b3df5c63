//! The job state machine: `JobStatus`, `JobEvent` and the pure transition function `JobStatus::apply`.

use serde::{Deserialize, Serialize};

use crate::errors::InvalidTransition;

/// A deployment job's status, exactly the spec's eight states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Pending,
    Preparing,
    Running,
    Completing,
    Completed,
    Failed,
    RollingBack,
    RolledBack,
}

/// What happens to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobEvent {
    /// The engine picks the job up: pending -> preparing.
    Start,
    /// Artifacts are rendered and stored: preparing -> running.
    ArtifactsReady,
    /// Every wave finished within the failure policy: running -> completing.
    WavesSucceeded,
    /// Final health verification passed: completing -> completed.
    VerificationPassed,
    /// Preparation, the rollout (policy exceeded) or final verification failed:
    /// -> failed, winding down (see [`crate::DeploymentJob::winding_down`]).
    Fail,
    /// A failed job's wind-down is over (nothing in flight, no automatic rollback to
    /// start): failed -> failed, now settled.
    WoundDown,
    /// A rollback (automatic at the end of a wind-down, or manual) of a failed job
    /// begins, together with its rollback job: failed -> rolling_back.
    RollbackStarted,
    /// The rollback job completed: rolling_back -> rolled_back (written with the
    /// rollback job's own end, in one transaction).
    RollbackSucceeded,
    /// The rollback job failed: rolling_back -> failed, settled (a manual rollback may
    /// be tried again).
    RollbackFailed,
    /// An operator cancels: pending to completing -> failed, winding down. A
    /// `rolling_back` job is cancelled through its rollback job.
    Cancel,
}

impl JobStatus {
    /// Every status, for tables and tests.
    pub const ALL: [JobStatus; 8] = [
        Self::Pending,
        Self::Preparing,
        Self::Running,
        Self::Completing,
        Self::Completed,
        Self::Failed,
        Self::RollingBack,
        Self::RolledBack,
    ];

    /// The spec's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Preparing => "preparing",
            Self::Running => "running",
            Self::Completing => "completing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::RollingBack => "rolling_back",
            Self::RolledBack => "rolled_back",
        }
    }

    /// Parses the spec's spelling.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// The next status after `event`, or why the event is not accepted here.
    pub fn apply(self, event: JobEvent) -> Result<JobStatus, InvalidTransition> {
        use JobEvent as E;
        use JobStatus as S;
        let next = match (self, event) {
            (S::Pending, E::Start) => S::Preparing,
            (S::Preparing, E::ArtifactsReady) => S::Running,
            (S::Running, E::WavesSucceeded) => S::Completing,
            (S::Completing, E::VerificationPassed) => S::Completed,
            (S::Preparing | S::Running | S::Completing, E::Fail) => S::Failed,
            (S::Failed, E::WoundDown) => S::Failed,
            (S::Failed, E::RollbackStarted) => S::RollingBack,
            (S::RollingBack, E::RollbackSucceeded) => S::RolledBack,
            (S::RollingBack, E::RollbackFailed) => S::Failed,
            (s, E::Cancel) if s.holds_environment() => S::Failed,
            _ => {
                return Err(InvalidTransition {
                    entity: "job",
                    from: self.as_str(),
                    event: event.as_str(),
                    reason: self
                        .is_terminal()
                        .then(|| format!("`{}` is terminal", self.as_str())),
                });
            }
        };
        Ok(next)
    }

    /// The job is being worked on (an engine must drive it to a settled state).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Self::Pending | Self::Preparing | Self::Running | Self::Completing | Self::RollingBack
        )
    }

    /// The job holds its environment's lock: at most one such job per environment.
    ///
    /// A `rolling_back` job is active but does not hold the lock: its rollback
    /// job (pending to completing) holds it while it restores the environment.
    pub fn holds_environment(self) -> bool {
        matches!(
            self,
            Self::Pending | Self::Preparing | Self::Running | Self::Completing
        )
    }

    /// No event is accepted any more.
    ///
    /// `failed` is settled but not terminal: a rollback can still start from it.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::RolledBack)
    }
}

impl JobEvent {
    /// Every event, for tables and tests.
    pub const ALL: [JobEvent; 10] = [
        Self::Start,
        Self::ArtifactsReady,
        Self::WavesSucceeded,
        Self::VerificationPassed,
        Self::Fail,
        Self::WoundDown,
        Self::RollbackStarted,
        Self::RollbackSucceeded,
        Self::RollbackFailed,
        Self::Cancel,
    ];

    /// The event's name in events and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::ArtifactsReady => "artifacts_ready",
            Self::WavesSucceeded => "waves_succeeded",
            Self::VerificationPassed => "verification_passed",
            Self::Fail => "fail",
            Self::WoundDown => "wound_down",
            Self::RollbackStarted => "rollback_started",
            Self::RollbackSucceeded => "rollback_succeeded",
            Self::RollbackFailed => "rollback_failed",
            Self::Cancel => "cancel",
        }
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests;
