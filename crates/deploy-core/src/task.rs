//! `DeploymentTask`: one unit of work (a component, or a whole compose project, on one target), with its attempt budget.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::errors::InvalidTransition;
use crate::ids::{AgentId, ComponentId, JobId, TargetId, TaskId};
use crate::task_status::{TaskEvent, TaskStatus};
use crate::timestamp::Timestamp;

/// Default attempt budget of a task.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// A task of a deployment job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentTask {
    pub id: TaskId,
    pub job_id: JobId,
    pub target_id: TargetId,
    /// The component deployed; `None` for a compose_host task, which deploys the whole project.
    pub component_id: Option<ComponentId>,
    /// The component's image digest, or for a compose_host task the sha256 of its compose lock.
    pub digest: Digest,
    pub status: TaskStatus,
    /// The agent the task was dispatched to, for the agent execution model.
    pub agent_id: Option<AgentId>,
    /// Set when the first attempt is dispatched.
    pub started_at: Option<Timestamp>,
    /// Set when the task succeeds or fails for good.
    pub completed_at: Option<Timestamp>,
    /// A short tail of the task log; the complete log lives in the store's log chunks.
    pub logs: String,
    /// What `inspect` found running before this task deployed (informational: rollback
    /// uses the last-known-good digest of the target, not this field).
    pub previous_digest: Option<Digest>,
    pub error: Option<String>,
    /// Attempts started so far (0 before the first dispatch).
    pub attempt_number: u32,
    pub max_attempts: u32,
    /// Whether the last failure may be retried (false after a permanent failure or a cancel).
    pub last_failure_retryable: bool,
    /// Index of the rollout wave the task belongs to.
    pub wave: u32,
    /// Optimistic-concurrency counter, bumped by the store on every write.
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// What a new task deploys, where, and with which budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    pub id: TaskId,
    pub job_id: JobId,
    pub target_id: TargetId,
    pub component_id: Option<ComponentId>,
    pub digest: Digest,
    pub max_attempts: u32,
    pub wave: u32,
}

impl DeploymentTask {
    /// A pending task that has not been attempted, created at `now`.
    pub fn pending(new: NewTask, now: Timestamp) -> Self {
        Self {
            id: new.id,
            job_id: new.job_id,
            target_id: new.target_id,
            component_id: new.component_id,
            digest: new.digest,
            status: TaskStatus::Pending,
            agent_id: None,
            started_at: None,
            completed_at: None,
            logs: String::new(),
            previous_digest: None,
            error: None,
            attempt_number: 0,
            max_attempts: new.max_attempts,
            last_failure_retryable: false,
            wave: new.wave,
            version: 0,
            created_at: now,
            updated_at: now,
        }
    }

    /// Attempts still available after the current one.
    pub fn attempts_left(&self) -> u32 {
        self.max_attempts.saturating_sub(self.attempt_number)
    }

    /// True when a `Retry` would be accepted now.
    pub fn can_retry(&self) -> bool {
        self.status == TaskStatus::Failed && self.last_failure_retryable && self.attempts_left() > 0
    }

    /// No event will change this task any more: it succeeded, or failed with no retry possible.
    pub fn is_settled(&self) -> bool {
        self.status == TaskStatus::Succeeded
            || (self.status == TaskStatus::Failed && !self.can_retry())
    }

    /// Applies `event` at `now`: the status table plus the attempt budget.
    ///
    /// `Dispatch` starts a new attempt and is refused once `max_attempts` have
    /// started; `Retry` is refused after a permanent failure or when no attempt
    /// is left. On error the task is unchanged.
    pub fn apply(
        &mut self,
        event: TaskEvent,
        now: Timestamp,
    ) -> Result<TaskStatus, InvalidTransition> {
        let refuse = |reason: String| InvalidTransition {
            entity: "task",
            from: self.status.as_str(),
            event: event.as_str(),
            reason: Some(reason),
        };
        match event {
            TaskEvent::Dispatch if self.attempt_number >= self.max_attempts => {
                return Err(refuse(format!(
                    "all {} attempts are used",
                    self.max_attempts
                )));
            }
            TaskEvent::Retry
                if self.status == TaskStatus::Failed && !self.last_failure_retryable =>
            {
                return Err(refuse("the last failure is not retryable".to_owned()));
            }
            TaskEvent::Retry if self.status == TaskStatus::Failed && self.attempts_left() == 0 => {
                return Err(refuse(format!(
                    "all {} attempts are used",
                    self.max_attempts
                )));
            }
            _ => {}
        }
        let next = self.status.apply(event)?;
        match event {
            TaskEvent::Dispatch => {
                self.attempt_number += 1;
                self.started_at.get_or_insert(now);
            }
            TaskEvent::Fail { retryable } => self.last_failure_retryable = retryable,
            // `error` says what is wrong now: nothing, once an attempt succeeded.
            TaskEvent::Succeed => self.error = None,
            TaskEvent::Cancel => self.last_failure_retryable = false,
            _ => {}
        }
        self.status = next;
        self.updated_at = now;
        if self.is_settled() {
            self.completed_at.get_or_insert(now);
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests;
