//! Rollback from the engine's side: gather the last-known-good digests, create the rollback job (run by the claim loop like any job), and settle the original with the rollback job's end.

use std::collections::BTreeMap;

use deploy_artifacts::{ArtifactError, PolicyScope, check_lock_policy};
use deploy_core::{
    ArtifactId, ArtifactKind, ComponentId, DeploymentJob, Digest, GeneratedArtifact, JobEvent,
    JobId, JobStatus, Release, ReleaseId, TargetId, TaskStatus, Timestamp,
};
use deploy_rollback::{
    KnownGood, LastKnownGood, RollbackError, RollbackPlan, RollbackRequest, SlotKey, plan_rollback,
};

use crate::clock::random_bytes;
use crate::engine::{Engine, Inner};
use crate::errors::EngineError;
use crate::runner;

/// What a completed job deployed on one slot, in that job's own terms.
struct SourceRow {
    target_id: TargetId,
    component_id: Option<ComponentId>,
    digest: Digest,
    job_id: JobId,
    completed_at: Timestamp,
}

/// The last-known-good digests a rollback of `job` restores: for a failed job, what
/// the newest completed job deployed on each slot; for a completed job (a manual
/// rollback), what the previous completed job of another release deployed.
///
/// Slots are matched by component *name*: each release gives its components new
/// ids, so a source row is keyed by the id the same-named component has in `job`'s
/// release, and keeps its own id for the rollback task (whose job runs the source
/// release). Components that `job`'s release does not have are not part of it.
async fn known_good(inner: &Inner, job: &DeploymentJob) -> Result<LastKnownGood, EngineError> {
    let store = &inner.store;
    let rows: Vec<SourceRow> = if job.status == JobStatus::Completed {
        let previous = store
            .previous_successful_job(job.environment_id, job.release_id)
            .await?;
        previous
            .into_iter()
            .flat_map(|p| {
                let completed_at = p.completed_at.unwrap_or(p.updated_at);
                let job_id = p.id;
                p.tasks
                    .into_iter()
                    .filter(|t| t.status == TaskStatus::Succeeded)
                    .map(move |t| SourceRow {
                        target_id: t.target_id,
                        component_id: t.component_id,
                        digest: t.digest,
                        job_id,
                        completed_at,
                    })
            })
            .collect()
    } else {
        store
            .last_known_good(job.environment_id)
            .await?
            .into_iter()
            .filter(|r| r.job_id != job.id)
            .map(|r| SourceRow {
                target_id: r.target_id,
                component_id: r.component_id,
                digest: r.digest,
                job_id: r.job_id,
                completed_at: r.completed_at,
            })
            .collect()
    };
    let current = store.get_release(job.release_id).await?;
    let mut release_of_job: BTreeMap<JobId, ReleaseId> = BTreeMap::new();
    let mut releases: BTreeMap<ReleaseId, Release> = BTreeMap::new();
    let mut slots: BTreeMap<SlotKey, KnownGood> = BTreeMap::new();
    for row in rows {
        let release_id = match release_of_job.get(&row.job_id) {
            Some(r) => *r,
            None => {
                let r = store.get_job(row.job_id).await?.release_id;
                release_of_job.insert(row.job_id, r);
                r
            }
        };
        if let std::collections::btree_map::Entry::Vacant(slot) = releases.entry(release_id) {
            slot.insert(store.get_release(release_id).await?);
        }
        let slot_component = match row.component_id {
            None => None,
            Some(id) => {
                let name = releases
                    .get(&release_id)
                    .and_then(|r| r.component_by_id(id))
                    .map(|c| c.name.clone());
                match name.and_then(|n| current.component(n.as_str()).ok().map(|c| c.id)) {
                    Some(current_id) => Some(current_id),
                    None => continue,
                }
            }
        };
        let candidate = KnownGood {
            digest: row.digest,
            component_id: row.component_id,
            job_id: row.job_id,
            release_id,
            completed_at: row.completed_at,
        };
        let slot = (row.target_id, slot_component);
        let newer = slots.get(&slot).is_none_or(|known| {
            (candidate.completed_at, candidate.job_id) > (known.completed_at, known.job_id)
        });
        if newer {
            slots.insert(slot, candidate);
        }
    }
    Ok(LastKnownGood::from_entries(slots))
}

/// Plans rollback number `attempt` of `job` (nothing is written).
async fn plan(
    inner: &Inner,
    job: &DeploymentJob,
    attempt: u32,
    reason: &str,
) -> Result<RollbackPlan, EngineError> {
    let lkg = known_good(inner, job).await?;
    let mut random = random_bytes;
    let mut plan = plan_rollback(RollbackRequest {
        job,
        reason: reason.to_owned(),
        known_good: &lkg,
        attempt,
        now: inner.clock.now(),
        random: &mut random,
    })?;
    attach_artifacts(inner, &lkg, &mut plan.job).await?;
    check_policy(inner, &plan.job).await?;
    Ok(plan)
}

/// Checks each compose lock the rollback re-deploys against the environment's
/// runtime policy as it is now: a lock rendered before the policy was tightened is
/// refused (naming the service and key), as a new job with its template would be.
async fn check_policy(inner: &Inner, rollback: &DeploymentJob) -> Result<(), EngineError> {
    let locks: Vec<&GeneratedArtifact> = rollback
        .artifacts
        .iter()
        .filter(|a| a.kind == ArtifactKind::ComposeLock)
        .collect();
    if locks.is_empty() {
        return Ok(());
    }
    let environment = inner.store.get_environment(rollback.environment_id).await?;
    for lock in locks {
        check_lock_policy(
            lock.content.as_bytes(),
            &environment.runtime_policy,
            PolicyScope::Environment(environment.name.as_str()),
        )?;
    }
    Ok(())
}

/// Copies into the rollback job the artifacts each restored slot's source job rendered
/// for its target (compose lock, env files, …): the rollback re-deploys the whole
/// previous definition (ports, environment, volumes, …), not just its digest, and
/// never depends on a template a client would have to send again.
async fn attach_artifacts(
    inner: &Inner,
    lkg: &LastKnownGood,
    rollback: &mut DeploymentJob,
) -> Result<(), EngineError> {
    let mut sources: std::collections::BTreeSet<(TargetId, JobId)> = Default::default();
    for (slot, good) in lkg.iter() {
        let restored = rollback.tasks.iter().any(|t| {
            t.target_id == slot.0 && t.component_id == good.component_id && t.digest == good.digest
        });
        if restored {
            sources.insert((slot.0, good.job_id));
        }
    }
    let now = inner.clock.now();
    let mut jobs: BTreeMap<JobId, DeploymentJob> = BTreeMap::new();
    for (target, source) in sources {
        let source_job = match jobs.entry(source) {
            std::collections::btree_map::Entry::Occupied(read) => read.into_mut(),
            std::collections::btree_map::Entry::Vacant(unread) => {
                unread.insert(inner.store.get_job(source).await?)
            }
        };
        for a in source_job
            .artifacts
            .iter()
            .filter(|a| a.target_id == Some(target))
        {
            let copied = rollback
                .artifacts
                .iter()
                .any(|c| c.target_id == Some(target) && c.sha256 == a.sha256);
            if !copied {
                rollback.artifacts.push(GeneratedArtifact::new(
                    ArtifactId::from_parts(now, random_bytes()),
                    rollback.id,
                    Some(target),
                    a.kind,
                    a.file_name.clone(),
                    a.content.clone(),
                ));
            }
        }
    }
    Ok(())
}

/// Plans rollback number `attempt` of `job` and creates its job (idempotent: the same attempt returns the same job).
async fn create_rollback(
    inner: &Inner,
    job: &DeploymentJob,
    attempt: u32,
    reason: &str,
) -> Result<(RollbackPlan, DeploymentJob), EngineError> {
    let plan = plan(inner, job, attempt, reason).await?;
    // Asked for by a request (a manual rollback): the job joins the request's trace.
    let traceparent = crate::trace::current_traceparent(inner);
    let created = inner
        .store
        .create_job_traced(&plan.job, traceparent)
        .await?;
    if created.created {
        inner.job_created.notify_one();
    }
    Ok((plan, created.value))
}

/// Starts the automatic rollback of a failed job at the end of its wind-down: the
/// job moves to `rolling_back` in the same write that creates its rollback job.
/// When nothing can be restored (no last-known-good digest, or what would be
/// restored is no longer allowed by the runtime policy) the wind-down ends
/// instead, and every slot the job touched says why in its log. Returns the job
/// as written.
pub(crate) async fn start(
    inner: &Inner,
    job: &DeploymentJob,
    attempt: u32,
) -> Result<DeploymentJob, EngineError> {
    let reason = job
        .failure_reason
        .clone()
        .unwrap_or_else(|| "the job failed".to_owned());
    let why = match plan(inner, job, attempt, &reason).await {
        Ok(plan) => {
            let rollback = &plan.job;
            let mut cause = format!(
                "rollback job `{}` restores {} slot(s)",
                rollback.id,
                rollback.tasks.len()
            );
            if !plan.unrestorable.is_empty() {
                let slots: Vec<SlotKey> = plan.unrestorable.iter().map(|u| u.slot).collect();
                cause.push_str(&format!(
                    "; not restorable (no last-known-good digest, left as the failed job left them): {}",
                    describe_slots(inner, job, &slots).await?
                ));
            }
            let (updated, _) = inner.start_rollback(job, rollback, &cause).await?;
            return Ok(updated);
        }
        Err(EngineError::Rollback(e @ RollbackError::NoRollbackTarget { .. })) => {
            tracing::warn!(job = %job.id, error = %e, "automatic rollback impossible");
            format!("automatic rollback impossible: {e}")
        }
        Err(EngineError::Artifacts(e @ ArtifactError::PolicyRefused { .. })) => {
            tracing::warn!(job = %job.id, error = %e, "automatic rollback refused by the runtime policy");
            format!("automatic rollback refused: {e}")
        }
        Err(e) => return Err(e),
    };
    // The job stays failed; every slot it touched says so in its own log, so
    // `deployctl logs` and `--follow --logs` show why nothing was restored.
    let now = inner.clock.now();
    for task in job.tasks.iter().filter(|t| t.attempt_number > 0) {
        inner.store.append_log(task.id, now, &why).await?;
    }
    Ok(inner.job_event(job, JobEvent::WoundDown, &why).await?)
}

/// Names slots as `target/component` (`target` alone for a compose project),
/// at most 20 of them and then a count, for a job event's cause.
async fn describe_slots(
    inner: &Inner,
    job: &DeploymentJob,
    slots: &[SlotKey],
) -> Result<String, EngineError> {
    const SHOWN: usize = 20;
    let targets: BTreeMap<TargetId, String> = inner
        .store
        .list_targets(job.environment_id)
        .await?
        .into_iter()
        .map(|t| (t.id, t.name.to_string()))
        .collect();
    let components: BTreeMap<ComponentId, String> = inner
        .store
        .get_release(job.release_id)
        .await?
        .components
        .into_iter()
        .map(|c| (c.id, c.name.to_string()))
        .collect();
    let mut names: Vec<String> = slots
        .iter()
        .take(SHOWN)
        .map(|(target, component)| {
            let target = targets
                .get(target)
                .cloned()
                .unwrap_or_else(|| target.to_string());
            match component {
                Some(c) => {
                    let c = components.get(c).cloned().unwrap_or_else(|| c.to_string());
                    format!("`{target}/{c}`")
                }
                None => format!("`{target}`"),
            }
        })
        .collect();
    if slots.len() > SHOWN {
        names.push(format!("and {} more", slots.len() - SHOWN));
    }
    Ok(names.join(", "))
}

/// Writes `event` (`verification_passed` or `wound_down`), which settles
/// `rollback`, and in the same transaction settles the job it rolls back if that
/// one is `rolling_back` ([`deploy_store::Store::settle_rollback_job`]): the
/// original is never left waiting on a rollback job that has ended.
pub(crate) async fn settle(
    inner: &Inner,
    rollback: &DeploymentJob,
    event: JobEvent,
    cause: &str,
) -> Result<DeploymentJob, EngineError> {
    let original_cause = match event {
        JobEvent::VerificationPassed => {
            // `rolled_back` with slots left broken must say which, not only succeed.
            let mut cause = format!("rollback job `{}` completed", rollback.id);
            // Best effort: the list must never keep the rollback job from settling.
            let unrestored = unrestored_slots(inner, rollback)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(job = %rollback.id, error = %e, "cannot name the slots the rollback left unrestored");
                    "(cannot be listed: see the `rollback_started` event)".to_owned()
                });
            if !unrestored.is_empty() {
                cause.push_str(&format!(
                    "; not restored (no last-known-good digest): {unrestored}"
                ));
            }
            cause
        }
        _ => format!(
            "rollback job `{}` failed: {}",
            rollback.id,
            rollback
                .failure_reason
                .as_deref()
                .unwrap_or("unknown reason")
        ),
    };
    let now = inner.clock.now();
    let (settled, original) = inner
        .store
        .settle_rollback_job(
            rollback.id,
            rollback.version,
            event,
            now,
            cause,
            &original_cause,
        )
        .await?;
    inner.publish_job_event(&settled, event, cause, now);
    if let Some(original) = original {
        let event = if original.status == JobStatus::RolledBack {
            JobEvent::RollbackSucceeded
        } else {
            JobEvent::RollbackFailed
        };
        inner.publish_job_event(&original, event, &original_cause, now);
    }
    Ok(settled)
}

/// The slots of the job `rollback` rolls back that had no last-known-good digest
/// to restore (named, for the original's last event), or "" when there are none
/// or that job is not rolling back. Planned again rather than stored: nothing has
/// completed in the environment since the rollback started (its job holds the lock),
/// so the plan is the same.
async fn unrestored_slots(inner: &Inner, rollback: &DeploymentJob) -> Result<String, EngineError> {
    let Some(original) = rollback.rollback_of else {
        return Ok(String::new());
    };
    let original = inner.store.get_job(original).await?;
    if original.status != JobStatus::RollingBack {
        return Ok(String::new());
    }
    let lkg = known_good(inner, &original).await?;
    let mut random = random_bytes;
    let plan = plan_rollback(RollbackRequest {
        job: &original,
        reason: String::new(),
        known_good: &lkg,
        attempt: 1,
        now: inner.clock.now(),
        random: &mut random,
    })?;
    if plan.unrestorable.is_empty() {
        return Ok(String::new());
    }
    let slots: Vec<SlotKey> = plan.unrestorable.iter().map(|u| u.slot).collect();
    describe_slots(inner, &original, &slots).await
}

impl Engine {
    /// Rolls back a job by hand: a settled failed job goes to `rolling_back` in the
    /// write that creates its rollback job; a completed job stays completed and a new
    /// rollback job restores what the job before it deployed. Returns the rollback
    /// job: the claim loop runs it ([`Engine::serve`]), or the caller with
    /// [`Engine::run_job`]; its end settles the original. Refused (a rollback error,
    /// 409 in the API): a job already rolling back, and a failed job still winding down.
    pub async fn rollback(&self, id: JobId, reason: &str) -> Result<DeploymentJob, EngineError> {
        let inner = &self.inner;
        let job = inner.store.get_job(id).await?;
        let attempt = runner::rollback_attempts(inner, id).await? + 1;
        match job.status {
            // Its rollback job is under way; a second one would have to wait for the
            // environment, and the first one's end settles the job.
            JobStatus::RollingBack => Err(RollbackError::NotRollbackable {
                job: id.to_string(),
                status: job.status.as_str(),
            }
            .into()),
            JobStatus::Failed => {
                // Its runner first settles the attempts still out (reconciles or
                // cancels them) and may start the automatic rollback; a rollback
                // started before would deploy the last-known-good digest beside an
                // attempt still finishing there.
                if job.winding_down {
                    let tasks = job
                        .tasks
                        .iter()
                        .filter(|t| {
                            t.status.is_in_flight()
                                || matches!(t.status, TaskStatus::Queued | TaskStatus::Retrying)
                        })
                        .count();
                    return Err(RollbackError::StillWindingDown {
                        job: id.to_string(),
                        tasks,
                    }
                    .into());
                }
                let plan = plan(inner, &job, attempt, reason).await?;
                let (_, rollback) = inner
                    .start_rollback(&job, &plan.job, &format!("manual rollback: {reason}"))
                    .await?;
                Ok(rollback)
            }
            // A completed job stays completed: the rollback job is all there is to
            // write (any other status is refused by the planner).
            _ => Ok(create_rollback(inner, &job, attempt, reason).await?.1),
        }
    }
}
