//! Webhook notifications: the events a subscription can ask for, which job transitions raise them, and the stable id of a delivery.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::errors::ValidationError;
use crate::job_status::{JobEvent, JobStatus};

/// What a subscription is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum NotificationEvent {
    /// The engine picked the job up (pending -> preparing).
    JobStarted,
    /// The job completed, health verification included.
    JobCompleted,
    /// The job entered `failed` (also back from `rolling_back` when its rollback failed).
    JobFailed,
    /// The job's rollback restored the last-known-good release.
    JobRolledBack,
    /// A promotion was requested and waits for approval.
    ApprovalRequested,
}

impl NotificationEvent {
    /// Every event, in the order the docs list them.
    pub const ALL: [Self; 5] = [
        Self::JobStarted,
        Self::JobCompleted,
        Self::JobFailed,
        Self::JobRolledBack,
        Self::ApprovalRequested,
    ];

    /// The wire and database spelling (also the `X-Deploy-Event` header).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JobStarted => "job.started",
            Self::JobCompleted => "job.completed",
            Self::JobFailed => "job.failed",
            Self::JobRolledBack => "job.rolled_back",
            Self::ApprovalRequested => "approval.requested",
        }
    }

    /// Parses the wire spelling; the error names the value and every known event.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        Self::ALL
            .into_iter()
            .find(|e| e.as_str() == value)
            .ok_or_else(|| {
                ValidationError::new(
                    "events",
                    value.escape_debug(),
                    format!("one of {}", Self::known()),
                )
            })
    }

    /// Every event's wire spelling, comma-separated in the documented order (for
    /// messages that list what is accepted).
    pub fn known() -> String {
        let known: Vec<&str> = Self::ALL.iter().map(|e| e.as_str()).collect();
        known.join(", ")
    }

    /// The event a job transition raises, if any: the transition `event` took the job
    /// from `from` to `to`. A failed job that winds down (failed -> failed) raises
    /// nothing more: `job.failed` is sent when the job enters `failed`.
    pub fn of_job_transition(event: JobEvent, from: JobStatus, to: JobStatus) -> Option<Self> {
        match (event, to) {
            (JobEvent::Start, _) => Some(Self::JobStarted),
            (_, JobStatus::Completed) => Some(Self::JobCompleted),
            (_, JobStatus::Failed) if from != JobStatus::Failed => Some(Self::JobFailed),
            (_, JobStatus::RolledBack) => Some(Self::JobRolledBack),
            _ => None,
        }
    }
}

impl fmt::Display for NotificationEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for NotificationEvent {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<NotificationEvent> for String {
    fn from(e: NotificationEvent) -> Self {
        e.as_str().to_owned()
    }
}

/// The id of the delivery of `source_key` (what happened: a job's transition, a
/// promotion's request) to `subscription`: a UUID v8 from their sha256. The same pair
/// always has the same id, so a write replayed after a crash cannot make a second
/// delivery, and a receiver that dedups by `X-Deploy-Delivery` sees one id per event.
pub fn delivery_id(subscription: Uuid, source_key: &str) -> Uuid {
    let mut hash = Sha256::new();
    hash.update(subscription.as_bytes());
    hash.update(source_key.as_bytes());
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_round_trips_and_unknown_names_list_the_known_ones() {
        for e in NotificationEvent::ALL {
            assert_eq!(NotificationEvent::parse(e.as_str()), Ok(e));
        }
        let err = NotificationEvent::parse("job.finished").unwrap_err();
        assert_eq!(err.value, "job.finished");
        assert!(err.expected.contains("job.rolled_back"), "{err:?}");
        assert!(NotificationEvent::parse("").is_err());
        assert!(NotificationEvent::parse("JOB.STARTED").is_err());
    }

    fn check(event: JobEvent, from: JobStatus, to: JobStatus, expected: Option<&str>) {
        assert_eq!(
            NotificationEvent::of_job_transition(event, from, to).map(NotificationEvent::as_str),
            expected,
            "{event:?}: {from:?} -> {to:?}"
        );
    }

    #[test]
    fn job_transitions_raise_the_events_subscribers_ask_for() {
        use JobStatus::*;
        check(JobEvent::Start, Pending, Preparing, Some("job.started"));
        check(JobEvent::ArtifactsReady, Preparing, Running, None);
        check(JobEvent::WavesSucceeded, Running, Completing, None);
        check(
            JobEvent::VerificationPassed,
            Completing,
            Completed,
            Some("job.completed"),
        );
        check(JobEvent::Fail, Running, Failed, Some("job.failed"));
        check(JobEvent::Cancel, Running, Failed, Some("job.failed"));
        check(JobEvent::WoundDown, Failed, Failed, None);
        check(JobEvent::RollbackStarted, Failed, RollingBack, None);
        check(
            JobEvent::RollbackSucceeded,
            RollingBack,
            RolledBack,
            Some("job.rolled_back"),
        );
        check(
            JobEvent::RollbackFailed,
            RollingBack,
            Failed,
            Some("job.failed"),
        );
    }

    #[test]
    fn a_delivery_id_is_stable_per_subscription_and_source() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        assert_eq!(delivery_id(a, "job:x:v1"), delivery_id(a, "job:x:v1"));
        assert_ne!(delivery_id(a, "job:x:v1"), delivery_id(a, "job:x:v2"));
        assert_ne!(delivery_id(a, "job:x:v1"), delivery_id(b, "job:x:v1"));
        assert_eq!(delivery_id(a, "job:x:v1").get_version_num(), 8);
    }
}
