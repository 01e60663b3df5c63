//! The backend-independent halves of the store's writes: version checks, transitions decided in memory, and the errors a refused write becomes.

use deploy_core::{
    DeploymentJob, DeploymentTask, JobEvent, JobStatus, TaskId, TaskStatus, Timestamp,
};
use uuid::Uuid;

use crate::errors::StoreError;
use crate::model::MAX_LOG_CHUNK_BYTES;

/// A task transition to commit: what `Store::apply_task_event` was given.
#[derive(Debug, Clone)]
pub(crate) struct TaskEventRequest {
    pub id: deploy_core::TaskId,
    pub expected_version: u64,
    pub event: deploy_core::TaskEvent,
    pub now: deploy_core::Timestamp,
    pub cause: String,
    /// For the transition that ends an attempt: its log tail and agent.
    pub record: Option<crate::model::AttemptRecord>,
}

/// The decide half of a task transition on `task` as stored: checks the version and
/// applies the event in memory; the new version is `version + 1`. Writes nothing.
pub(crate) fn apply_task_request(
    mut task: DeploymentTask,
    request: &TaskEventRequest,
) -> Result<(DeploymentTask, TaskStatus), StoreError> {
    if task.version != request.expected_version {
        return Err(StoreError::Conflict {
            entity: "task",
            id: request.id.to_string(),
            expected: request.expected_version,
            found: Some(task.version),
        });
    }
    let from = task.status;
    task.apply(request.event, request.now)?;
    if matches!(
        request.event,
        deploy_core::TaskEvent::Fail { .. } | deploy_core::TaskEvent::Cancel
    ) {
        task.error = Some(request.cause.clone());
    }
    if let Some(record) = &request.record {
        task.logs.clone_from(&record.logs);
        if record.agent_id.is_some() {
            task.agent_id = record.agent_id;
        }
    }
    task.version += 1;
    Ok((task, from))
}

/// The `Conflict` of a write of `entity` `id` expected at version `expected`; `found`
/// the stored version, when known.
pub(crate) fn conflict(
    entity: &'static str,
    id: impl std::fmt::Display,
    expected: u64,
    found: Option<u64>,
) -> StoreError {
    StoreError::Conflict {
        entity,
        id: id.to_string(),
        expected,
        found,
    }
}

/// The decide half of a job transition on `job` as stored: checks the version and
/// applies the event in memory (the new version is `version + 1`); the status it left.
pub(crate) fn apply_job_event(
    mut job: DeploymentJob,
    expected_version: u64,
    event: JobEvent,
    now: Timestamp,
    cause: &str,
) -> Result<(DeploymentJob, JobStatus), StoreError> {
    if job.version != expected_version {
        return Err(conflict("job", job.id, expected_version, Some(job.version)));
    }
    let from = job.status;
    let to = job.apply(event, now)?;
    // The reason is the cause of the transition into `failed` (not the end of its wind-down).
    if to == JobStatus::Failed && from != to {
        job.failure_reason = Some(cause.to_owned());
    }
    job.version += 1;
    Ok((job, from))
}

/// The job that the rollback job `job`, just moved by `event`, settles (its
/// `rollback_of`); refused when `job` is no rollback job or not at its end.
pub(crate) fn rollback_settlement(
    job: &DeploymentJob,
    event: JobEvent,
) -> Result<deploy_core::JobId, StoreError> {
    match job.rollback_of.filter(|_| job.is_settled()) {
        Some(original) => Ok(original),
        None => Err(deploy_core::InvalidTransition {
            entity: "job",
            from: job.status.as_str(),
            event: event.as_str(),
            reason: Some("only the end of a rollback job settles the job it rolls back".to_owned()),
        }
        .into()),
    }
}

/// The event that settles `original` once its rollback job ended in `rollback_status`;
/// `None` when `original` is not rolling back.
pub(crate) fn settling_event(
    original: &DeploymentJob,
    rollback_status: JobStatus,
) -> Option<JobEvent> {
    (original.status == JobStatus::RollingBack).then_some(
        if rollback_status == JobStatus::Completed {
            JobEvent::RollbackSucceeded
        } else {
            JobEvent::RollbackFailed
        },
    )
}

/// `stored` with the fields `Store::save_task` writes taken from `task`, at the next
/// version; a `Conflict` when `task` was read at another version.
pub(crate) fn saved_task(
    stored: DeploymentTask,
    task: &DeploymentTask,
    now: Timestamp,
) -> Result<DeploymentTask, StoreError> {
    if stored.version != task.version {
        return Err(conflict(
            "task",
            task.id,
            task.version,
            Some(stored.version),
        ));
    }
    let mut next = stored;
    next.agent_id = task.agent_id;
    next.logs.clone_from(&task.logs);
    next.previous_digest.clone_from(&task.previous_digest);
    next.error.clone_from(&task.error);
    next.version += 1;
    next.updated_at = now;
    Ok(next)
}

/// Refuses a log chunk over [`MAX_LOG_CHUNK_BYTES`] before anything is written.
pub(crate) fn check_log_chunk(task: TaskId, content: &str) -> Result<(), StoreError> {
    if content.len() > MAX_LOG_CHUNK_BYTES {
        return Err(StoreError::LogChunkTooLarge {
            task: task.to_string(),
            size: content.len(),
            limit: MAX_LOG_CHUNK_BYTES,
        });
    }
    Ok(())
}

/// Why inserting a job broke a unique index: the environment is held by `holder`, or
/// (no holder) the job's id exists.
pub(crate) fn job_insert_clash(
    job: &DeploymentJob,
    holder: Option<deploy_core::JobId>,
) -> StoreError {
    match holder {
        Some(running) => StoreError::EnvironmentLocked {
            environment: job.environment_id,
            job: running,
        },
        None => StoreError::AlreadyExists {
            entity: "job",
            id: job.id.to_string(),
        },
    }
}

/// After a unique violation on an insert of `id` named `name`: `NameTaken` naming
/// `existing`, the id of the row holding the name, or `AlreadyExists` when the clash
/// was the id itself (or the holder is gone again).
pub(crate) fn name_clash(
    entity: &'static str,
    name: &str,
    id: String,
    existing: Option<Uuid>,
) -> StoreError {
    match existing.map(|uuid| uuid.to_string()) {
        Some(existing) if existing != id => StoreError::NameTaken {
            entity,
            name: name.to_owned(),
            existing,
        },
        _ => StoreError::AlreadyExists { entity, id },
    }
}

/// Why a conditional delete of `entity` `id` touched no row: the active job `job` uses
/// it ([`StoreError::InUse`]), or (none) it does not exist or was deleted already.
pub(crate) fn retirement_refused(
    entity: &'static str,
    id: impl std::fmt::Display,
    job: Option<deploy_core::JobId>,
) -> StoreError {
    match job {
        Some(job) => StoreError::InUse {
            entity,
            id: id.to_string(),
            job,
        },
        None => StoreError::NotFound {
            entity,
            id: id.to_string(),
        },
    }
}

/// An application secret's version as a column value.
pub(crate) fn secret_version(version: u64) -> Result<i64, StoreError> {
    i64::try_from(version).map_err(|_| {
        StoreError::corrupt("app_secrets.version", version.to_string())("out of range".to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_clash_names_the_holder_unless_it_is_the_row_itself() {
        let holder = Uuid::from_u128(7);
        assert!(matches!(
            name_clash("environment", "prod", "x".to_owned(), Some(holder)),
            StoreError::NameTaken { existing, .. } if existing == holder.to_string()
        ));
        for existing in [None, Some(Uuid::from_u128(1))] {
            assert!(matches!(
                name_clash(
                    "environment",
                    "prod",
                    Uuid::from_u128(1).to_string(),
                    existing
                ),
                StoreError::AlreadyExists {
                    entity: "environment",
                    ..
                }
            ));
        }
    }

    #[test]
    fn a_refused_retirement_names_the_job_that_uses_the_entity() {
        let job = deploy_core::JobId::from_parts(Timestamp::from_unix_millis(9).unwrap(), [9; 10]);
        assert!(matches!(
            retirement_refused("target", "t1", Some(job)),
            StoreError::InUse { entity: "target", job: j, .. } if j == job
        ));
        assert!(matches!(
            retirement_refused("target", "t1", None),
            StoreError::NotFound {
                entity: "target",
                ..
            }
        ));
    }

    #[test]
    fn a_log_chunk_over_the_limit_is_refused() {
        let task = TaskId::from_parts(Timestamp::from_unix_millis(3).unwrap(), [3; 10]);
        assert!(check_log_chunk(task, &"x".repeat(MAX_LOG_CHUNK_BYTES)).is_ok());
        assert!(matches!(
            check_log_chunk(task, &"x".repeat(MAX_LOG_CHUNK_BYTES + 1)),
            Err(StoreError::LogChunkTooLarge { size, .. }) if size == MAX_LOG_CHUNK_BYTES + 1
        ));
    }
}
