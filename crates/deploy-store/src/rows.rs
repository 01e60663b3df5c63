//! Reading rows into domain values, written once for both backends over the small `RowExt` accessor trait.

use deploy_core::{
    ArtifactKind, Component, DeploymentJob, DeploymentTask, Digest, Environment, GeneratedArtifact,
    IdempotencyKey, ImageRef, Name, Promotion, PromotionStatus, Target,
};
use uuid::Uuid;

use crate::errors::StoreError;
use crate::model::{
    AgentRecord, ApiTokenRecord, JobEventRecord, LastKnownGood, LogChunk, from_json, opt_timestamp,
    opt_typed, parallelism, parse, task_status, timestamp, typed, uint, uint32,
};

/// Typed column access on a backend's row; ids are TEXT on SQLite and UUID on PostgreSQL.
pub(crate) trait RowExt {
    fn uuid(&self, col: &'static str) -> Result<Uuid, StoreError>;
    fn opt_uuid(&self, col: &'static str) -> Result<Option<Uuid>, StoreError>;
    fn i64(&self, col: &'static str) -> Result<i64, StoreError>;
    fn opt_i64(&self, col: &'static str) -> Result<Option<i64>, StoreError>;
    fn string(&self, col: &'static str) -> Result<String, StoreError>;
    fn opt_string(&self, col: &'static str) -> Result<Option<String>, StoreError>;
    fn boolean(&self, col: &'static str) -> Result<bool, StoreError>;
}

/// Parses a stored hyphenated UUID (SQLite keeps ids as TEXT).
pub(crate) fn uuid_text(col: &'static str, value: &str) -> Result<Uuid, StoreError> {
    parse(col, value, Uuid::try_parse)
}

pub(crate) fn environment<R: RowExt>(r: &R) -> Result<Environment, StoreError> {
    let mut environment: Environment = from_json("environments.spec", &r.string("spec")?)?;
    // The column is what updates compare against.
    environment.version = uint("environments.version", r.i64("version")?)?;
    Ok(environment)
}

pub(crate) fn audit<R: RowExt>(r: &R) -> Result<crate::model::AuditRecord, StoreError> {
    let kind = r.string("actor_kind")?;
    Ok(crate::model::AuditRecord {
        seq: uint("audit_log.seq", r.i64("seq")?)?,
        at: timestamp("audit_log.at", r.i64("at")?)?,
        actor_kind: crate::model::AuditActorKind::parse(&kind).ok_or_else(|| {
            StoreError::corrupt("audit_log.actor_kind", &kind)("unknown actor kind".into())
        })?,
        actor_id: r.string("actor_id")?,
        actor_name: r.string("actor_name")?,
        method: r.string("method")?,
        route: r.string("route")?,
        path: r.string("path")?,
        entity_id: r.opt_string("entity_id")?,
        status: u16::try_from(r.i64("status")?).map_err(|_| {
            StoreError::corrupt("audit_log.status", "out of range")("not an HTTP status".into())
        })?,
        remote: r.opt_string("remote")?,
        before: r.opt_string("before")?,
        after: r.opt_string("after")?,
    })
}

pub(crate) fn target<R: RowExt>(r: &R) -> Result<Target, StoreError> {
    let mut target: Target = from_json("targets.spec", &r.string("spec")?)?;
    // The column is what updates compare against.
    target.version = uint("targets.version", r.i64("version")?)?;
    Ok(target)
}

pub(crate) fn component<R: RowExt>(r: &R) -> Result<Component, StoreError> {
    let image = r.string("image")?;
    Ok(Component {
        id: typed("release_components.component_id", r.uuid("component_id")?)?,
        name: parse("release_components.name", &r.string("name")?, Name::parse)?,
        image: parse("release_components.image", &image, ImageRef::parse)?,
    })
}

pub(crate) fn promotion<R: RowExt>(r: &R) -> Result<Promotion, StoreError> {
    let status = r.string("status")?;
    let status = [
        PromotionStatus::Requested,
        PromotionStatus::Approved,
        PromotionStatus::Rejected,
    ]
    .into_iter()
    .find(|s| s.as_str() == status)
    .ok_or_else(|| StoreError::corrupt("promotions.status", &status)("unknown status".into()))?;
    Ok(Promotion {
        id: typed("promotions.id", r.uuid("id")?)?,
        release_id: typed("promotions.release_id", r.uuid("release_id")?)?,
        environment_id: typed("promotions.environment_id", r.uuid("environment_id")?)?,
        status,
        requested_by: r.string("requested_by")?,
        requested_by_token: r
            .opt_string("requested_by_token")?
            .map(|t| uuid_text("promotions.requested_by_token", &t))
            .transpose()?,
        decided_by: r.opt_string("decided_by")?,
        requested_at: timestamp("promotions.requested_at", r.i64("requested_at")?)?,
        decided_at: opt_timestamp("promotions.decided_at", r.opt_i64("decided_at")?)?,
        approvals: from_json("promotions.approvals", &r.string("approvals")?)?,
        rejection_reason: r.opt_string("rejection_reason")?,
        version: uint("promotions.version", r.i64("version")?)?,
    })
}

/// A job row; tasks and artifacts are read separately and attached.
pub(crate) fn job<R: RowExt>(r: &R) -> Result<DeploymentJob, StoreError> {
    Ok(DeploymentJob {
        id: typed("jobs.id", r.uuid("id")?)?,
        promotion_id: typed("jobs.promotion_id", r.uuid("promotion_id")?)?,
        release_id: typed("jobs.release_id", r.uuid("release_id")?)?,
        environment_id: typed("jobs.environment_id", r.uuid("environment_id")?)?,
        strategy: from_json("jobs.strategy", &r.string("strategy")?)?,
        parallelism: parallelism(r.i64("parallelism")?)?,
        failure_policy: from_json("jobs.failure_policy", &r.string("failure_policy")?)?,
        status: crate::model::job_status(&r.string("status")?)?,
        started_at: opt_timestamp("jobs.started_at", r.opt_i64("started_at")?)?,
        completed_at: opt_timestamp("jobs.completed_at", r.opt_i64("completed_at")?)?,
        artifacts: Vec::new(),
        rollback_of: opt_typed("jobs.rollback_of", r.opt_uuid("rollback_of")?)?,
        previous_job_id: opt_typed("jobs.previous_job_id", r.opt_uuid("previous_job_id")?)?,
        queued_behind: opt_typed("jobs.queued_behind", r.opt_uuid("queued_behind")?)?,
        winding_down: r.boolean("winding_down")?,
        tasks: Vec::new(),
        idempotency_key: parse(
            "jobs.idempotency_key",
            &r.string("idempotency_key")?,
            IdempotencyKey::parse,
        )?,
        failure_reason: r.opt_string("failure_reason")?,
        version: uint("jobs.version", r.i64("version")?)?,
        created_at: timestamp("jobs.created_at", r.i64("created_at")?)?,
        updated_at: timestamp("jobs.updated_at", r.i64("updated_at")?)?,
    })
}

/// A row of `list_job_summaries`: job columns and the `tasks_*` counts.
pub(crate) fn job_summary<R: RowExt>(r: &R) -> Result<crate::model::JobSummary, StoreError> {
    let count = |col: &'static str| uint32(col, r.i64(col)?);
    Ok(crate::model::JobSummary {
        id: typed("jobs.id", r.uuid("id")?)?,
        environment_id: typed("jobs.environment_id", r.uuid("environment_id")?)?,
        release_id: typed("jobs.release_id", r.uuid("release_id")?)?,
        promotion_id: typed("jobs.promotion_id", r.uuid("promotion_id")?)?,
        status: crate::model::job_status(&r.string("status")?)?,
        winding_down: r.boolean("winding_down")?,
        rollback_of: opt_typed("jobs.rollback_of", r.opt_uuid("rollback_of")?)?,
        queued_behind: opt_typed("jobs.queued_behind", r.opt_uuid("queued_behind")?)?,
        created_at: timestamp("jobs.created_at", r.i64("created_at")?)?,
        started_at: opt_timestamp("jobs.started_at", r.opt_i64("started_at")?)?,
        completed_at: opt_timestamp("jobs.completed_at", r.opt_i64("completed_at")?)?,
        failure_reason: r.opt_string("failure_reason")?,
        tasks: crate::model::TaskCounts {
            total: count("tasks_total")?,
            succeeded: count("tasks_succeeded")?,
            failed: count("tasks_failed")?,
            running: count("tasks_running")?,
            waiting: count("tasks_waiting")?,
        },
        release_name: r.opt_string("release_name")?,
        requested_by: r.opt_string("requested_by")?,
    })
}

pub(crate) fn task<R: RowExt>(r: &R) -> Result<DeploymentTask, StoreError> {
    let digest = |col: &'static str, v: &str| parse(col, v, Digest::parse);
    Ok(DeploymentTask {
        id: typed("tasks.id", r.uuid("id")?)?,
        job_id: typed("tasks.job_id", r.uuid("job_id")?)?,
        target_id: typed("tasks.target_id", r.uuid("target_id")?)?,
        component_id: opt_typed("tasks.component_id", r.opt_uuid("component_id")?)?,
        digest: digest("tasks.digest", &r.string("digest")?)?,
        status: task_status(&r.string("status")?)?,
        agent_id: opt_typed("tasks.agent_id", r.opt_uuid("agent_id")?)?,
        started_at: opt_timestamp("tasks.started_at", r.opt_i64("started_at")?)?,
        completed_at: opt_timestamp("tasks.completed_at", r.opt_i64("completed_at")?)?,
        logs: r.string("logs")?,
        previous_digest: r
            .opt_string("previous_digest")?
            .map(|d| digest("tasks.previous_digest", &d))
            .transpose()?,
        error: r.opt_string("error")?,
        attempt_number: uint32("tasks.attempt_number", r.i64("attempt_number")?)?,
        max_attempts: uint32("tasks.max_attempts", r.i64("max_attempts")?)?,
        last_failure_retryable: r.boolean("last_failure_retryable")?,
        wave: uint32("tasks.wave", r.i64("wave")?)?,
        version: uint("tasks.version", r.i64("version")?)?,
        created_at: timestamp("tasks.created_at", r.i64("created_at")?)?,
        updated_at: timestamp("tasks.updated_at", r.i64("updated_at")?)?,
    })
}

pub(crate) fn artifact<R: RowExt>(r: &R) -> Result<GeneratedArtifact, StoreError> {
    let kind = r.string("kind")?;
    let kind = ArtifactKind::ALL
        .into_iter()
        .find(|k| k.as_str() == kind)
        .ok_or_else(|| StoreError::corrupt("artifacts.kind", &kind)("unknown kind".into()))?;
    let artifact = GeneratedArtifact {
        id: typed("artifacts.id", r.uuid("id")?)?,
        job_id: typed("artifacts.job_id", r.uuid("job_id")?)?,
        target_id: opt_typed("artifacts.target_id", r.opt_uuid("target_id")?)?,
        kind,
        file_name: parse("artifacts.file_name", &r.string("file_name")?, Name::parse)?,
        content: r.string("content")?,
        size: uint("artifacts.size", r.i64("size")?)?,
        sha256: parse("artifacts.sha256", &r.string("sha256")?, Digest::parse)?,
    };
    artifact.verify().map_err(|e| {
        StoreError::corrupt("artifacts.sha256", artifact.sha256.as_str())(e.to_string())
    })?;
    Ok(artifact)
}

pub(crate) fn job_event<R: RowExt>(r: &R) -> Result<JobEventRecord, StoreError> {
    Ok(JobEventRecord {
        seq: uint("job_events.seq", r.i64("seq")?)?,
        job_id: typed("job_events.job_id", r.uuid("job_id")?)?,
        task_id: opt_typed("job_events.task_id", r.opt_uuid("task_id")?)?,
        event: r.string("event")?,
        from_status: r.string("from_status")?,
        to_status: r.string("to_status")?,
        cause: r.string("cause")?,
        at: timestamp("job_events.at", r.i64("at")?)?,
    })
}

pub(crate) fn log_chunk<R: RowExt>(r: &R) -> Result<LogChunk, StoreError> {
    Ok(LogChunk {
        task_id: typed("task_log_chunks.task_id", r.uuid("task_id")?)?,
        seq: uint("task_log_chunks.seq", r.i64("seq")?)?,
        at: timestamp("task_log_chunks.at", r.i64("at")?)?,
        content: r.string("content")?,
    })
}

pub(crate) fn last_known_good<R: RowExt>(r: &R) -> Result<LastKnownGood, StoreError> {
    Ok(LastKnownGood {
        target_id: typed("tasks.target_id", r.uuid("target_id")?)?,
        component_id: opt_typed("tasks.component_id", r.opt_uuid("component_id")?)?,
        digest: parse("tasks.digest", &r.string("digest")?, Digest::parse)?,
        job_id: typed("tasks.job_id", r.uuid("job_id")?)?,
        completed_at: timestamp("jobs.completed_at", r.i64("completed_at")?)?,
    })
}

pub(crate) fn agent<R: RowExt>(r: &R) -> Result<AgentRecord, StoreError> {
    Ok(AgentRecord {
        id: typed("agents.id", r.uuid("id")?)?,
        name: r.string("name")?,
        labels: from_json("agents.labels", &r.string("labels")?)?,
        capabilities: from_json("agents.capabilities", &r.string("capabilities")?)?,
        agent_version: r.string("agent_version")?,
        credential_hash: r
            .opt_string("credential_hash")?
            .map(|h| parse("agents.credential_hash", &h, Digest::parse))
            .transpose()?,
        last_seen_at: opt_timestamp("agents.last_seen_at", r.opt_i64("last_seen_at")?)?,
        created_at: timestamp("agents.created_at", r.i64("created_at")?)?,
        revoked_at: opt_timestamp("agents.revoked_at", r.opt_i64("revoked_at")?)?,
        bootstrap_token_id: r.opt_uuid("bootstrap_token_id")?,
        labels_version: uint("agents.labels_version", r.i64("labels_version")?)?,
    })
}

pub(crate) fn bootstrap_binding<R: RowExt>(
    r: &R,
) -> Result<crate::model::BootstrapBinding, StoreError> {
    Ok(crate::model::BootstrapBinding {
        token_id: r.uuid("token_id")?,
        agent_name: r.string("agent_name")?,
        labels: from_json("agent_bootstrap_bindings.labels", &r.string("labels")?)?,
        capabilities: from_json(
            "agent_bootstrap_bindings.capabilities",
            &r.string("capabilities")?,
        )?,
    })
}

pub(crate) fn api_token<R: RowExt>(r: &R) -> Result<ApiTokenRecord, StoreError> {
    Ok(ApiTokenRecord {
        id: r.uuid("id")?,
        name: r.string("name")?,
        token_hash: parse(
            "api_tokens.token_hash",
            &r.string("token_hash")?,
            Digest::parse,
        )?,
        scopes: from_json("api_tokens.scopes", &r.string("scopes")?)?,
        created_at: timestamp("api_tokens.created_at", r.i64("created_at")?)?,
        revoked_at: opt_timestamp("api_tokens.revoked_at", r.opt_i64("revoked_at")?)?,
        last_used_at: opt_timestamp("api_tokens.last_used_at", r.opt_i64("last_used_at")?)?,
        expires_at: opt_timestamp("api_tokens.expires_at", r.opt_i64("expires_at")?)?,
    })
}

/// A console session and its API token, from a row of the token's columns plus the
/// session's as `session_id_hash`, `session_token_id`, `session_created_at` and
/// `session_expires_at`.
pub(crate) fn console_session<R: RowExt>(
    r: &R,
) -> Result<(crate::model::ConsoleSession, ApiTokenRecord), StoreError> {
    let session = crate::model::ConsoleSession {
        id_hash: parse(
            "console_sessions.id_hash",
            &r.string("session_id_hash")?,
            Digest::parse,
        )?,
        token_id: r.uuid("session_token_id")?,
        created_at: timestamp("console_sessions.created_at", r.i64("session_created_at")?)?,
        expires_at: timestamp("console_sessions.expires_at", r.i64("session_expires_at")?)?,
    };
    Ok((session, api_token(r)?))
}

/// The error for a column that is missing or has an unexpected type.
pub(crate) fn column_error(col: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| StoreError::Corrupt {
        column: col,
        value: String::new(),
        reason: e.to_string(),
    }
}

/// Implements the column accessors that are the same on both backends.
macro_rules! row_ext_common {
    () => {
        fn i64(&self, col: &'static str) -> Result<i64, StoreError> {
            self.try_get(col).map_err(crate::rows::column_error(col))
        }
        fn opt_i64(&self, col: &'static str) -> Result<Option<i64>, StoreError> {
            self.try_get(col).map_err(crate::rows::column_error(col))
        }
        fn string(&self, col: &'static str) -> Result<String, StoreError> {
            self.try_get(col).map_err(crate::rows::column_error(col))
        }
        fn opt_string(&self, col: &'static str) -> Result<Option<String>, StoreError> {
            self.try_get(col).map_err(crate::rows::column_error(col))
        }
        fn boolean(&self, col: &'static str) -> Result<bool, StoreError> {
            self.try_get(col).map_err(crate::rows::column_error(col))
        }
    };
}

pub(crate) use row_ext_common;

pub(crate) fn app_secret<R: RowExt>(
    r: &R,
) -> Result<crate::app_secrets::AppSecretRecord, StoreError> {
    Ok(crate::app_secrets::AppSecretRecord {
        name: r.string("name")?,
        key_id: r.string("key_id")?,
        sealed: r.string("sealed")?,
        version: uint("app_secrets.version", r.i64("version")?)?,
        environments: r
            .string("environments")?
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        created_at: timestamp("app_secrets.created_at", r.i64("created_at")?)?,
        created_by: r.string("created_by")?,
        updated_at: timestamp("app_secrets.updated_at", r.i64("updated_at")?)?,
        updated_by: r.string("updated_by")?,
    })
}

pub(crate) fn delivery<R: RowExt>(r: &R) -> Result<crate::relay::DeliveryRecord, StoreError> {
    let state = r.string("state")?;
    Ok(crate::relay::DeliveryRecord {
        task_id: parse(
            "agent_deliveries.task_id",
            &r.string("task_id")?,
            deploy_core::TaskId::parse,
        )?,
        attempt: uint32("agent_deliveries.attempt", r.i64("attempt")?)?,
        agent_id: parse(
            "agent_deliveries.agent_id",
            &r.string("agent_id")?,
            deploy_core::AgentId::parse,
        )?,
        payload: r.string("payload")?,
        state: crate::relay::DeliveryState::parse(&state)
            .map_err(StoreError::corrupt("agent_deliveries.state", state.clone()))?,
        result: r.opt_string("result")?,
        log_seq: uint("agent_deliveries.log_seq", r.i64("log_seq")?)?,
        created_at: timestamp("agent_deliveries.created_at", r.i64("created_at")?)?,
        finished_at: opt_timestamp("agent_deliveries.finished_at", r.opt_i64("finished_at")?)?,
    })
}

pub(crate) fn relay_line<R: RowExt>(r: &R) -> Result<crate::relay::RelayLine, StoreError> {
    Ok(crate::relay::RelayLine {
        seq: uint("agent_log_lines.seq", r.i64("seq")?)?,
        stream: r.string("stream")?,
        text: r.string("text")?,
    })
}

pub(crate) fn agent_poll<R: RowExt>(r: &R) -> Result<crate::relay::AgentPoll, StoreError> {
    Ok(crate::relay::AgentPoll {
        agent_id: typed("agents.id", r.uuid("id")?)?,
        at: timestamp("agents.last_poll_at", r.i64("last_poll_at")?)?,
        draining: r.boolean("draining")?,
    })
}

/// The `id` column of a row of `jobs`.
pub(crate) fn job_id<R: RowExt>(r: &R) -> Result<deploy_core::JobId, StoreError> {
    typed("jobs.id", r.uuid("id")?)
}

/// The `environment_id` column of a row of `jobs`.
pub(crate) fn job_environment_id<R: RowExt>(
    r: &R,
) -> Result<deploy_core::EnvironmentId, StoreError> {
    typed("jobs.environment_id", r.uuid("environment_id")?)
}

/// A row of `recent_target_tasks`: a job's state and the counts of its tasks on a target.
pub(crate) fn target_task_state<R: RowExt>(
    r: &R,
) -> Result<crate::model::TargetTaskState, StoreError> {
    let count = |col: &'static str| uint32(col, r.i64(col)?);
    Ok(crate::model::TargetTaskState {
        job_id: typed("jobs.id", r.uuid("job_id")?)?,
        job_status: job_status(r)?,
        winding_down: r.boolean("winding_down")?,
        target_id: typed("tasks.target_id", r.uuid("target_id")?)?,
        tasks: count("tasks")?,
        succeeded: count("succeeded")?,
        failed: count("failed")?,
        started: count("started")?,
    })
}

/// A row of `SELECT COALESCE(MAX(seq), 0) AS seq`.
pub(crate) fn last_seq<R: RowExt>(r: &R) -> Result<u64, StoreError> {
    uint("job_events.seq", r.i64("seq")?)
}

/// The `id` column of a row of `releases`.
pub(crate) fn release_id<R: RowExt>(r: &R) -> Result<deploy_core::ReleaseId, StoreError> {
    typed("releases.id", r.uuid("id")?)
}

/// The `status` column of a row of `jobs`.
pub(crate) fn job_status<R: RowExt>(r: &R) -> Result<deploy_core::JobStatus, StoreError> {
    crate::model::job_status(&r.string("status")?)
}

/// A row of `SELECT status, winding_down FROM jobs`.
pub(crate) fn job_state<R: RowExt>(r: &R) -> Result<(deploy_core::JobStatus, bool), StoreError> {
    Ok((job_status(r)?, r.boolean("winding_down")?))
}

/// A row of `SELECT status, COUNT(*) AS n FROM jobs GROUP BY status`.
pub(crate) fn status_count<R: RowExt>(r: &R) -> Result<(deploy_core::JobStatus, u64), StoreError> {
    let status = job_status(r)?;
    let n = r.i64("n")?;
    let count = u64::try_from(n)
        .map_err(|e| StoreError::corrupt("jobs count", n.to_string())(e.to_string()))?;
    Ok((status, count))
}

/// A chunk of a job's log with its position in the job (`job_cursor`).
pub(crate) fn job_log_chunk<R: RowExt>(r: &R) -> Result<(u64, LogChunk), StoreError> {
    let cursor = uint("task_log_chunks.job_cursor", r.i64("job_cursor")?)?;
    Ok((cursor, log_chunk(r)?))
}

/// A row of `releases` with its components (read separately, in order).
pub(crate) fn release<R: RowExt>(
    r: &R,
    components: Vec<Component>,
) -> Result<deploy_core::Release, StoreError> {
    let id = release_id(r)?;
    let template = r
        .opt_string("template")?
        .map(deploy_core::ServiceTemplate::new);
    let archived_at = opt_timestamp("releases.archived_at", r.opt_i64("archived_at")?)?;
    deploy_core::Release::new(
        id,
        parse("releases.name", &r.string("name")?, Name::parse)?,
        components,
        timestamp("releases.created_at", r.i64("created_at")?)?,
    )
    .map(|release| deploy_core::Release {
        archived_at,
        ..release.with_template(template)
    })
    .map_err(|e| StoreError::corrupt("releases.id", id.to_string())(e.to_string()))
}
