//! The task state machine: `TaskStatus`, `TaskEvent` and the pure transition function `TaskStatus::apply`.

use serde::{Deserialize, Serialize};

use crate::errors::InvalidTransition;

/// A deployment task's status, exactly the spec's eight states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Pending,
    Queued,
    Dispatched,
    Running,
    Verifying,
    Succeeded,
    Failed,
    Retrying,
}

/// What happens to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum TaskEvent {
    /// Joins the queue (pending -> queued, retrying -> queued). Still legal, but the
    /// engine no longer writes it: it dispatches straight from pending or retrying
    /// (see docs/ARCHITECTURE.md, "Task state machine").
    Enqueue,
    /// Handed to an executor or agent (from pending, queued or retrying); starts a new attempt.
    Dispatch,
    /// The executor reports the deploy under way.
    Start,
    /// The deploy finished; health verification begins.
    Verify,
    /// Health verification passed.
    Succeed,
    /// The attempt failed; `retryable` says whether another attempt may help.
    Fail { retryable: bool },
    /// Another attempt is granted (only while attempts remain and the failure was retryable).
    Retry,
    /// The job was cancelled or gave up: the task ends failed and will not be retried.
    Cancel,
}

impl TaskStatus {
    /// Every status, for tables and tests.
    pub const ALL: [TaskStatus; 8] = [
        Self::Pending,
        Self::Queued,
        Self::Dispatched,
        Self::Running,
        Self::Verifying,
        Self::Succeeded,
        Self::Failed,
        Self::Retrying,
    ];

    /// The spec's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Dispatched => "dispatched",
            Self::Running => "running",
            Self::Verifying => "verifying",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Retrying => "retrying",
        }
    }

    /// Parses the spec's spelling.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// The next status after `event` by the table alone.
    ///
    /// The retry budget is not visible here; [`crate::DeploymentTask::apply`]
    /// adds that guard and counts attempts.
    pub fn apply(self, event: TaskEvent) -> Result<TaskStatus, InvalidTransition> {
        use TaskEvent as E;
        use TaskStatus as S;
        let next = match (self, event) {
            (S::Pending | S::Retrying, E::Enqueue) => S::Queued,
            (S::Pending | S::Queued | S::Retrying, E::Dispatch) => S::Dispatched,
            (S::Dispatched, E::Start) => S::Running,
            (S::Running, E::Verify) => S::Verifying,
            (S::Verifying, E::Succeed) => S::Succeeded,
            (S::Queued | S::Dispatched | S::Running | S::Verifying, E::Fail { .. }) => S::Failed,
            (S::Failed, E::Retry) => S::Retrying,
            (s, E::Cancel) if s != S::Succeeded => S::Failed,
            _ => {
                return Err(InvalidTransition {
                    entity: "task",
                    from: self.as_str(),
                    event: event.as_str(),
                    reason: (self == S::Succeeded).then(|| "`succeeded` is terminal".to_owned()),
                });
            }
        };
        Ok(next)
    }

    /// Waiting for a slot: the decider dispatches such a task of the current wave
    /// (pending and retrying directly; queued only appears in rows of older engines).
    pub fn awaits_dispatch(self) -> bool {
        matches!(self, Self::Pending | Self::Queued | Self::Retrying)
    }

    /// An attempt is in flight on an executor (what resume must reconcile with `inspect`).
    pub fn is_in_flight(self) -> bool {
        matches!(self, Self::Dispatched | Self::Running | Self::Verifying)
    }
}

impl TaskEvent {
    /// Every event, for tables and tests.
    pub const ALL: [TaskEvent; 9] = [
        Self::Enqueue,
        Self::Dispatch,
        Self::Start,
        Self::Verify,
        Self::Succeed,
        Self::Fail { retryable: true },
        Self::Fail { retryable: false },
        Self::Retry,
        Self::Cancel,
    ];

    /// The event's name in events and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enqueue => "enqueue",
            Self::Dispatch => "dispatch",
            Self::Start => "start",
            Self::Verify => "verify",
            Self::Succeed => "succeed",
            Self::Fail { retryable: true } => "fail_retryable",
            Self::Fail { retryable: false } => "fail_permanent",
            Self::Retry => "retry",
            Self::Cancel => "cancel",
        }
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
