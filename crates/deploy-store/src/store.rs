//! The `Store` trait: everything the engine, the server and the agent registry persist, implemented for SQLite and PostgreSQL.

use std::time::Duration;

use async_trait::async_trait;
use deploy_core::{
    AgentId, DeploymentJob, DeploymentTask, Digest, Environment, EnvironmentId, JobEvent, JobId,
    JobStatus, Promotion, PromotionId, Release, ReleaseId, Target, TaskEvent, TaskId, Timestamp,
    Traceparent,
};

use crate::app_secrets::AppSecretRecord;
use crate::errors::StoreError;
use crate::model::{
    AgentRecord, ApiTokenRecord, AttemptRecord, AuditFilter, AuditRecord, BootstrapBinding,
    ConsoleSession, Created, JobEventRecord, JobQuery, JobSummary, LastKnownGood, LogChunk,
    TargetTaskState,
};
use crate::relay::{AgentPoll, DeliveryEnd, DeliveryRecord, RelayLine};

/// Persistence of the deployment system.
///
/// State changes go through deploy-core's transition functions and are written
/// with optimistic concurrency: a write names the version it read, and a stale
/// write is [`StoreError::Conflict`], never a silent overwrite. Every state
/// change appends a [`JobEventRecord`] in the same transaction.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Store: Send + Sync {
    /// Inserts an environment; an existing id is [`StoreError::AlreadyExists`], an existing name
    /// [`StoreError::NameTaken`] (naming the environment that holds it).
    async fn put_environment(&self, environment: &Environment) -> Result<(), StoreError>;
    async fn get_environment(&self, id: EnvironmentId) -> Result<Environment, StoreError>;
    /// The environment named `name`, if any.
    async fn find_environment_by_name(&self, name: &str)
    -> Result<Option<Environment>, StoreError>;
    /// Replaces the environment (its name and spec) if its stored version is still
    /// `expected_version`, and returns it with the next version. A stale version is
    /// [`StoreError::Conflict`]; a name another environment holds, [`StoreError::NameTaken`].
    async fn update_environment(
        &self,
        environment: &Environment,
        expected_version: u64,
    ) -> Result<Environment, StoreError>;
    /// Environments newest first (ids are UUID v7), older than `before`, at most `limit`.
    async fn list_environments(
        &self,
        before: Option<EnvironmentId>,
        limit: u32,
    ) -> Result<Vec<Environment>, StoreError>;
    /// Inserts a target of an existing environment; a name its environment already has is
    /// [`StoreError::NameTaken`].
    async fn put_target(&self, target: &Target) -> Result<(), StoreError>;
    /// The environment's targets (deleted ones left out), by name.
    async fn list_targets(&self, environment: EnvironmentId) -> Result<Vec<Target>, StoreError>;
    /// Replaces a target (name, connection, health check, labels, disabled) if its stored
    /// version is still `expected_version`; returns it with the next version. Stale:
    /// [`StoreError::Conflict`]; a name its environment already has: [`StoreError::NameTaken`].
    async fn update_target(
        &self,
        target: &Target,
        expected_version: u64,
    ) -> Result<Target, StoreError>;
    /// Retires a target that no active job uses ([`StoreError::InUse`] names the job):
    /// its row stays for history, out of listings, and its name is free again.
    async fn delete_target(
        &self,
        id: deploy_core::TargetId,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// Retires an environment and its targets when no active job runs in it
    /// ([`StoreError::InUse`]); rows stay for history, the name is free again.
    async fn delete_environment(&self, id: EnvironmentId, now: Timestamp)
    -> Result<(), StoreError>;
    /// Marks a release archived at `now` (a first `archived_at` is kept) and returns it.
    async fn archive_release(&self, id: ReleaseId, now: Timestamp) -> Result<Release, StoreError>;
    /// Inserts a release and its components; an existing name is [`StoreError::NameTaken`].
    async fn put_release(&self, release: &Release) -> Result<(), StoreError>;
    async fn get_release(&self, id: ReleaseId) -> Result<Release, StoreError>;
    /// The release named `name`, if any.
    async fn find_release_by_name(&self, name: &str) -> Result<Option<Release>, StoreError>;
    /// Releases with their components, newest first (ids are UUID v7), older than `before`, at most `limit`.
    async fn list_releases(
        &self,
        before: Option<ReleaseId>,
        limit: u32,
    ) -> Result<Vec<Release>, StoreError>;
    async fn put_promotion(&self, promotion: &Promotion) -> Result<(), StoreError>;
    /// Inserts a requested promotion that waits for someone else's approval, with its
    /// `approval.requested` webhook deliveries, in one transaction.
    async fn put_promotion_awaiting_approval(
        &self,
        promotion: &Promotion,
    ) -> Result<(), StoreError>;
    async fn get_promotion(&self, id: PromotionId) -> Result<Promotion, StoreError>;
    /// Writes a promotion's decision and approvals (status, decided_by, decided_at,
    /// approvals, rejection reason) if its stored version is still `promotion.version`,
    /// and returns it with the next version; a stale version (another approval or a
    /// decision landed meanwhile) is [`StoreError::Conflict`].
    async fn save_promotion(&self, promotion: &Promotion) -> Result<Promotion, StoreError>;
    /// Promotions newest first, optionally of one environment and/or status, older than
    /// `before`, at most `limit`.
    async fn list_promotions(
        &self,
        environment: Option<EnvironmentId>,
        status: Option<deploy_core::PromotionStatus>,
        before: Option<PromotionId>,
        limit: u32,
    ) -> Result<Vec<Promotion>, StoreError>;
    /// Whether a job deploying `release` completed in `environment` (the pipeline rule).
    async fn release_completed_in(
        &self,
        release: ReleaseId,
        environment: EnvironmentId,
    ) -> Result<bool, StoreError>;
    /// The environments where a job deploying `release` completed, by id: one query on
    /// the jobs of the release (what [`Store::release_completed_in`] asks of each).
    async fn environments_where_release_completed(
        &self,
        release: ReleaseId,
    ) -> Result<Vec<EnvironmentId>, StoreError>;

    /// Appends a row to the audit log and returns its sequence number.
    async fn append_audit(&self, record: &AuditRecord) -> Result<u64, StoreError>;
    /// Audit rows newest first that match `filter`, at most `limit`.
    async fn list_audit(
        &self,
        filter: &AuditFilter,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError>;

    /// Creates a job with its tasks and artifacts, idempotently: when the
    /// idempotency key exists, returns that job with `created: false`. The
    /// database refuses a second non-terminal job in one environment:
    /// [`StoreError::EnvironmentLocked`] names the running job.
    async fn create_job(&self, job: &DeploymentJob) -> Result<Created<DeploymentJob>, StoreError> {
        self.create_job_traced(job, None).await
    }
    /// [`Store::create_job`], recording with a new job, in its transaction, the W3C
    /// `traceparent` of the request that created it: the remote parent of the job's
    /// span wherever it runs. An existing job keeps what it had.
    async fn create_job_traced(
        &self,
        job: &DeploymentJob,
        traceparent: Option<Traceparent>,
    ) -> Result<Created<DeploymentJob>, StoreError>;
    /// The `traceparent` recorded with job `job` when it was created, if any (one that
    /// no longer parses is [`StoreError::Corrupt`]).
    async fn job_trace_context(&self, job: JobId) -> Result<Option<Traceparent>, StoreError>;
    /// A job with its tasks (in order) and artifacts.
    async fn get_job(&self, id: JobId) -> Result<DeploymentJob, StoreError>;
    async fn get_task(&self, id: TaskId) -> Result<DeploymentTask, StoreError>;
    /// Jobs newest first (ids are UUID v7), optionally of one environment and/or
    /// status, older than `before` (the last id of the previous page), at most `limit`.
    async fn list_jobs(
        &self,
        environment: Option<EnvironmentId>,
        status: Option<JobStatus>,
        before: Option<JobId>,
        limit: u32,
    ) -> Result<Vec<DeploymentJob>, StoreError>;
    /// The jobs `query` selects, newest first, at most `query.limit`, each without its
    /// tasks and artifacts but with how many of its tasks are in each state: what a list
    /// of jobs shows, in one query that reads the tasks of the listed jobs only.
    async fn list_job_summaries(&self, query: &JobQuery) -> Result<Vec<JobSummary>, StoreError>;
    /// The summary of job `id` (as [`Store::list_job_summaries`] lists it): one row and its
    /// task counts, without loading the tasks ([`Store::get_job`] does).
    async fn get_job_summary(&self, id: JobId) -> Result<JobSummary, StoreError>;
    /// How the tasks of each of the environment's newest `jobs` jobs stand on each target
    /// they touch: one row per (job, target), newest job first, then by target. One
    /// query that returns at most `jobs` x targets rows however many tasks a job has.
    async fn recent_target_tasks(
        &self,
        environment: EnvironmentId,
        jobs: u32,
    ) -> Result<Vec<TargetTaskState>, StoreError>;
    /// How many jobs are in each status (statuses without jobs are left out); one
    /// aggregate query that loads no job, for `/metrics`.
    async fn count_jobs_by_status(&self) -> Result<Vec<(JobStatus, u64)>, StoreError>;
    /// Checks that the database answers (`SELECT 1` on a read connection), for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Applies `event` to the job at `expected_version` (deploy-core decides),
    /// bumps its version and appends the event, in one transaction.
    /// A transition into `failed` records `cause` as the failure reason.
    async fn apply_job_event(
        &self,
        id: JobId,
        expected_version: u64,
        event: JobEvent,
        now: Timestamp,
        cause: &str,
    ) -> Result<DeploymentJob, StoreError>;
    /// Applies `event` that settles rollback job `id` (`verification_passed` or
    /// `wound_down`) as [`Store::apply_job_event`] does and, in the same transaction,
    /// settles the job it rolls back when that one is `rolling_back`:
    /// `rollback_succeeded` when the rollback job completed, `rollback_failed`
    /// otherwise, with `original_cause`. Returns both jobs as written (the original
    /// is `None` when it was not rolling back: a rollback of a completed job).
    async fn settle_rollback_job(
        &self,
        id: JobId,
        expected_version: u64,
        event: JobEvent,
        now: Timestamp,
        cause: &str,
        original_cause: &str,
    ) -> Result<(DeploymentJob, Option<DeploymentJob>), StoreError>;
    /// Starts a rollback in one transaction: applies `rollback_started` to job `id`
    /// at `expected_version` (as [`Store::apply_job_event`]) and creates its
    /// rollback job `rollback`, returning both as written (the same attempt started
    /// twice loses on the original's version, [`StoreError::Conflict`]). Both are
    /// written or neither. When another job holds the environment, nothing is
    /// written: [`StoreError::EnvironmentLocked`].
    async fn start_rollback(
        &self,
        id: JobId,
        expected_version: u64,
        rollback: &DeploymentJob,
        now: Timestamp,
        cause: &str,
    ) -> Result<(DeploymentJob, DeploymentJob), StoreError> {
        self.start_rollback_traced(id, expected_version, rollback, now, cause, None)
            .await
    }
    /// [`Store::start_rollback`], recording with the rollback job, in the same
    /// transaction, the `traceparent` it was started under (the failed job's run, or
    /// the request asking for it), as [`Store::create_job_traced`] does.
    async fn start_rollback_traced(
        &self,
        id: JobId,
        expected_version: u64,
        rollback: &DeploymentJob,
        now: Timestamp,
        cause: &str,
        traceparent: Option<Traceparent>,
    ) -> Result<(DeploymentJob, DeploymentJob), StoreError>;
    /// Applies `event` to the task at `expected_version`, bumps its version and
    /// appends the event, in one transaction. A `fail` records `cause` as the task's error.
    async fn apply_task_event(
        &self,
        id: TaskId,
        expected_version: u64,
        event: TaskEvent,
        now: Timestamp,
        cause: &str,
    ) -> Result<DeploymentTask, StoreError>;
    /// Returns when a job was created by another process sharing the database (a
    /// PostgreSQL replica: `LISTEN`), or after `within`: the claim loop's wait between
    /// polls. On SQLite it is a plain wait.
    async fn wait_for_new_jobs(&self, within: Duration);
    /// `apply_task_event` for the transition that ends an attempt, recording in the same
    /// write what the attempt leaves on the task: its log tail and the agent that ran it.
    async fn finish_attempt(
        &self,
        id: TaskId,
        expected_version: u64,
        event: TaskEvent,
        now: Timestamp,
        cause: &str,
        record: &AttemptRecord,
    ) -> Result<DeploymentTask, StoreError>;
    /// Writes a task's non-status fields (agent, log tail, previous digest, error)
    /// if its stored version is still `task.version`; returns it with the new version.
    /// The status is unchanged: statuses move only through `apply_task_event`.
    async fn save_task(
        &self,
        task: &DeploymentTask,
        now: Timestamp,
    ) -> Result<DeploymentTask, StoreError>;

    /// The job's events after `after_seq` (0 for all), oldest first, at most `limit`.
    async fn job_events(
        &self,
        job: JobId,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<JobEventRecord>, StoreError>;
    /// The `seq` of the job's last event (0 when it has none): where a follower that has
    /// the job's current state resumes.
    async fn last_job_event_seq(&self, job: JobId) -> Result<u64, StoreError>;
    /// Appends a log chunk and returns its sequence number; keeps the newest
    /// [`crate::MAX_LOG_CHUNKS_PER_TASK`] chunks of the task.
    async fn append_log(
        &self,
        task: TaskId,
        at: Timestamp,
        content: &str,
    ) -> Result<u64, StoreError>;
    /// The task's log chunks after `after_seq`, in order, at most `limit`.
    async fn read_log(
        &self,
        task: TaskId,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<LogChunk>, StoreError>;
    /// The task's last `limit` log chunks before `before_seq` (all when `None`), in
    /// order (oldest first): a log's end without reading it from the start.
    async fn read_log_tail(
        &self,
        task: TaskId,
        before_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<LogChunk>, StoreError>;

    /// The previous successful (completed) job of the environment whose
    /// release differs from `release`, latest `completed_at` first.
    async fn previous_successful_job(
        &self,
        environment: EnvironmentId,
        release: ReleaseId,
    ) -> Result<Option<DeploymentJob>, StoreError>;
    /// For each target (and component) of the environment, the digest that the
    /// newest completed job touching it actually deployed there.
    async fn last_known_good(
        &self,
        environment: EnvironmentId,
    ) -> Result<Vec<LastKnownGood>, StoreError>;

    /// Claims up to `limit` jobs that need a runner (pending to completing, or failed
    /// and winding down; not queued) that nobody holds or whose lease ended before
    /// `now`, for `owner` until `now + lease`. Each job goes to one claimer.
    async fn claim_jobs(
        &self,
        owner: &str,
        now: Timestamp,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<JobId>, StoreError>;
    /// The job a job queued now for `environment` would wait behind: the newest queued
    /// one, else the environment's lock holder, else a failed job still winding down
    /// (its automatic rollback may come); `None` when the environment is free.
    async fn last_in_line(&self, environment: EnvironmentId) -> Result<Option<JobId>, StoreError>;
    /// Lets in, per environment that has queued jobs, no lock holder and no failed job
    /// still winding down, the oldest
    /// queued job (clears its `queued_behind`: it holds the lock from now on and is
    /// claimable); returns those jobs.
    async fn dequeue_jobs(&self, now: Timestamp) -> Result<Vec<JobId>, StoreError>;
    /// Extends `owner`'s lease on the job to `now + lease`; [`StoreError::LeaseLost`]
    /// when another owner claimed it meanwhile.
    async fn renew_lease(
        &self,
        job: JobId,
        owner: &str,
        now: Timestamp,
        lease: Duration,
    ) -> Result<Timestamp, StoreError>;
    /// Gives the job back so that the next claim (any replica's) takes it at once if
    /// it still needs a runner ([`deploy_core::DeploymentJob::needs_runner`]).
    async fn release_lease(&self, job: JobId, owner: &str) -> Result<(), StoreError>;
    /// Gives back every lease `owner` holds on an active job, whether or not it has
    /// expired, and returns those jobs: a replica restarted under the same owner
    /// (its predecessor killed before it could release them) calls it once at start,
    /// so its next [`Store::claim_jobs`] resumes them at once instead of after the lease.
    ///
    /// Safe only when no other *live* replica runs under `owner`: owners must be
    /// unique among live replicas (deployd keeps a generated owner in its data
    /// directory and refuses a second process on it).
    async fn release_leases_of(&self, owner: &str) -> Result<Vec<JobId>, StoreError>;

    /// Inserts an agent; an existing id is [`StoreError::AlreadyExists`], an existing name
    /// [`StoreError::NameTaken`] (naming the agent that holds it).
    async fn put_agent(&self, agent: &AgentRecord) -> Result<(), StoreError>;
    async fn get_agent(&self, id: AgentId) -> Result<AgentRecord, StoreError>;
    /// Every agent, revoked or not, oldest first.
    async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError>;
    /// The agent whose credential's sha256 is `hash`, revoked or not.
    async fn find_agent_by_credential(
        &self,
        hash: &Digest,
    ) -> Result<Option<AgentRecord>, StoreError>;
    /// The agent that bootstrap token `token` registered, revoked or not.
    async fn find_agent_by_bootstrap_token(
        &self,
        token: uuid::Uuid,
    ) -> Result<Option<AgentRecord>, StoreError>;
    /// Replaces the credential hash of a non-revoked agent (rotation: the old one stops
    /// matching at once); an unknown or revoked agent is [`StoreError::NotFound`], a hash
    /// another agent holds [`StoreError::AlreadyExists`].
    async fn set_agent_credential(&self, id: AgentId, hash: &Digest) -> Result<(), StoreError>;
    /// Marks the agent revoked at `now` (keeping a first `revoked_at`) and returns it;
    /// an unknown id is [`StoreError::NotFound`].
    async fn revoke_agent(&self, id: AgentId, now: Timestamp) -> Result<AgentRecord, StoreError>;
    /// Records that the agent was seen at `now`.
    async fn touch_agent(&self, id: AgentId, now: Timestamp) -> Result<(), StoreError>;
    /// Replaces the labels of agent `id` when its `labels_version` is still
    /// `expected_version`, and returns it with the next version; a stale version is
    /// [`StoreError::Conflict`], an unknown agent [`StoreError::NotFound`].
    async fn set_agent_labels(
        &self,
        id: AgentId,
        labels: &deploy_core::Labels,
        expected_version: u64,
    ) -> Result<AgentRecord, StoreError>;
    /// Inserts an agent bootstrap token and its binding in one transaction (a bootstrap
    /// token never exists without one).
    async fn put_bootstrap_token(
        &self,
        token: &ApiTokenRecord,
        binding: &BootstrapBinding,
    ) -> Result<(), StoreError>;
    /// The binding of bootstrap token `token_id` (`None`: not a bootstrap token).
    async fn bootstrap_binding(
        &self,
        token_id: uuid::Uuid,
    ) -> Result<Option<BootstrapBinding>, StoreError>;
    /// Every bootstrap token's binding.
    async fn list_bootstrap_bindings(&self) -> Result<Vec<BootstrapBinding>, StoreError>;
    /// Spends the agent bootstrap token whose sha256 is `hash`, in one conditional
    /// update: only an unrevoked, unexpired token of scope [`crate::AGENT_BOOTSTRAP_SCOPE`]
    /// is spent (marked revoked at `now`) and returned; otherwise `None`, and of two
    /// callers racing with one token exactly one gets it.
    async fn spend_bootstrap_token(
        &self,
        hash: &Digest,
        now: Timestamp,
    ) -> Result<Option<ApiTokenRecord>, StoreError>;
    /// Undoes a [`Store::spend_bootstrap_token`] whose registration failed (the agent name
    /// was taken): clears `revoked_at` of the bootstrap token `id` only when it is exactly
    /// `spent_at`, the spend's own mark, so a later revocation (or spend) stays. True
    /// when the token is unspent again.
    async fn unspend_bootstrap_token(
        &self,
        id: uuid::Uuid,
        spent_at: Timestamp,
    ) -> Result<bool, StoreError>;
    async fn put_api_token(&self, token: &ApiTokenRecord) -> Result<(), StoreError>;
    /// The token whose sha256 is `hash`, revoked or not.
    async fn find_api_token(&self, hash: &Digest) -> Result<Option<ApiTokenRecord>, StoreError>;
    /// Every token, revoked or not, oldest first.
    async fn list_api_tokens(&self) -> Result<Vec<ApiTokenRecord>, StoreError>;
    /// Marks the token revoked at `now` (a revoked token keeps its first `revoked_at`)
    /// and returns it; an unknown id is [`StoreError::NotFound`].
    async fn revoke_api_token(
        &self,
        id: uuid::Uuid,
        now: Timestamp,
    ) -> Result<ApiTokenRecord, StoreError>;
    /// Records that the token authenticated a request at `now`.
    async fn touch_api_token(&self, id: uuid::Uuid, now: Timestamp) -> Result<(), StoreError>;
    /// Inserts a console session; an existing `id_hash` is [`StoreError::AlreadyExists`], a
    /// `token_id` no API token has is [`StoreError::NotFound`] (entity `api token`).
    async fn put_console_session(&self, session: &ConsoleSession) -> Result<(), StoreError>;
    /// The session whose hash is `id_hash` with its API token, if it exists and `expires_at > now`.
    /// The token comes revoked or not, as from [`Store::find_api_token`]: the caller checks it.
    async fn find_console_session(
        &self,
        id_hash: &Digest,
        now: Timestamp,
    ) -> Result<Option<(ConsoleSession, ApiTokenRecord)>, StoreError>;
    /// Deletes the session; whether it existed.
    async fn delete_console_session(&self, id_hash: &Digest) -> Result<bool, StoreError>;
    /// Deletes every session expired at `now`, and every session of a revoked token; how many.
    async fn prune_console_sessions(&self, now: Timestamp) -> Result<u64, StoreError>;

    /// The log chunks of every task of the job after the job-wide position `after`
    /// (0 for all), in the order they were appended, at most `limit`, each with its
    /// position. Positions increase in commit order, so a reader that resumes after the
    /// last one it saw misses and repeats nothing (chunks dropped by the per-task bound
    /// leave gaps).
    async fn read_job_log(
        &self,
        job: JobId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<(u64, LogChunk)>, StoreError>;
    /// The job's status and whether it winds down ([`DeploymentJob::winding_down`]):
    /// one row read, for followers that poll it ([`Store::get_job`] reads every task
    /// and artifact of the job).
    async fn job_status(&self, id: JobId) -> Result<(JobStatus, bool), StoreError>;
    /// The rollback job of `original` that still needs a runner (pending to
    /// completing, or failed and winding down): its end settles `original`.
    async fn rollback_job_of(&self, original: JobId) -> Result<Option<DeploymentJob>, StoreError>;

    // Application secrets (`app_secrets.rs`): sealed values, never the value itself.

    /// Creates the secret `name` (`version` 1) or replaces its sealed value and its
    /// environments (`version` = the stored version + 1; creation time and author kept),
    /// and returns the row as written; `None` when the stored version is not the one
    /// before `version` (a concurrent write: read again and seal again).
    #[expect(
        clippy::too_many_arguments,
        reason = "the row's columns, and the version the sealed value is bound to"
    )]
    async fn put_app_secret(
        &self,
        name: &str,
        key_id: &str,
        sealed: &str,
        version: u64,
        environments: &[String],
        by: &str,
        now: Timestamp,
    ) -> Result<Option<AppSecretRecord>, StoreError>;
    /// The secret `name`, if any.
    async fn get_app_secret(&self, name: &str) -> Result<Option<AppSecretRecord>, StoreError>;
    /// Every secret, by name.
    async fn list_app_secrets(&self) -> Result<Vec<AppSecretRecord>, StoreError>;
    /// Deletes the secret `name`; false when there was none.
    async fn delete_app_secret(&self, name: &str) -> Result<bool, StoreError>;
    /// Replaces the sealed value of `name` at `version` (a key rotation: the version is
    /// kept); false when the row is gone or at another version.
    async fn reseal_app_secret(
        &self,
        name: &str,
        version: u64,
        key_id: &str,
        sealed: &str,
    ) -> Result<bool, StoreError>;

    /// Every secrets key check: `(key id, the check value sealed under that key)`.
    async fn secret_key_checks(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// Records the check value of `key_id` unless one is recorded already (the first
    /// deployd to use a key id wins); true when this one was written.
    async fn put_secret_key_check(
        &self,
        key_id: &str,
        sealed: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    // Webhook notifications (`notifications.rs`): deliveries are written by the job
    // transitions and promotion requests that raise them; the server's dispatcher sends.

    /// Inserts a subscription unless its environment has `max_live` live ones already
    /// (false: nothing written; concurrent inserts cannot pass the bound together); an
    /// existing id is [`StoreError::AlreadyExists`].
    async fn put_notification_subscription(
        &self,
        subscription: &crate::NotificationSubscription,
        max_live: u32,
    ) -> Result<bool, StoreError>;
    /// The subscription `id`, removed or not.
    async fn get_notification_subscription(
        &self,
        id: deploy_core::SubscriptionId,
    ) -> Result<Option<crate::NotificationSubscription>, StoreError>;
    /// The live subscriptions, of one environment or all, oldest first.
    async fn list_notification_subscriptions(
        &self,
        environment: Option<EnvironmentId>,
    ) -> Result<Vec<crate::NotificationSubscription>, StoreError>;
    /// Removes a subscription at `now` (its row and log stay) and gives up its pending
    /// deliveries, in one transaction; false when it was unknown or removed already.
    async fn remove_notification_subscription(
        &self,
        id: deploy_core::SubscriptionId,
        now: Timestamp,
    ) -> Result<bool, StoreError>;
    /// Replaces the sealed signing key of live subscription `id`; with `old_sealed`, only
    /// while the row still holds that value (a re-seal that lost to a rotation changes
    /// nothing). False when nothing was replaced.
    async fn replace_notification_key(
        &self,
        id: deploy_core::SubscriptionId,
        old_sealed: Option<String>,
        key_id: &str,
        sealed: &str,
    ) -> Result<bool, StoreError>;
    /// Claims for `owner`, until `now + lease`, up to `limit` pending deliveries due at
    /// `now` that nobody holds, oldest first; never one while an earlier delivery of its
    /// subscription and job (or promotion) is pending, nor more than `per_subscription`
    /// in flight for one subscription. Each goes to one claimer.
    async fn claim_notification_deliveries(
        &self,
        owner: &str,
        now: Timestamp,
        lease: Duration,
        limit: u32,
        per_subscription: u32,
    ) -> Result<Vec<crate::NotificationDelivery>, StoreError>;
    /// Ends every lease `owner` holds on pending deliveries (at start-up: the previous
    /// process of this owner, whose sends were cut, holds them); how many.
    async fn release_notification_leases(&self, owner: &str) -> Result<u64, StoreError>;
    /// Deletes delivered and failed deliveries (and their attempts) that finished before
    /// `before`; how many deliveries.
    async fn prune_notification_deliveries(&self, before: Timestamp) -> Result<u64, StoreError>;
    /// How many deliveries are pending.
    async fn pending_notification_deliveries(&self) -> Result<u64, StoreError>;
    /// Records an attempt of a delivery `owner` holds and what it leaves (delivered,
    /// failed, or pending again at a later time; the lease ends), in one transaction;
    /// false when `owner` no longer holds it (nothing is written).
    async fn record_notification_attempt(
        &self,
        owner: &str,
        outcome: &crate::AttemptOutcome,
    ) -> Result<bool, StoreError>;
    /// Deliveries newest first that match `filter`, at most `limit`.
    async fn list_notification_deliveries(
        &self,
        filter: &crate::DeliveryFilter,
        limit: u32,
    ) -> Result<Vec<crate::NotificationDelivery>, StoreError>;
    /// The delivery `id`, if any.
    async fn get_notification_delivery(
        &self,
        id: uuid::Uuid,
    ) -> Result<Option<crate::NotificationDelivery>, StoreError>;
    /// The attempts of delivery `id`, first first.
    async fn notification_attempts(
        &self,
        id: uuid::Uuid,
    ) -> Result<Vec<crate::NotificationAttempt>, StoreError>;

    // The agent relay (`relay.rs`): what crosses deployd replicas between an executor and
    // the replica its agent polls.

    /// Writes deliveries in one transaction; a key already written keeps its row.
    async fn put_deliveries(&self, deliveries: &[DeliveryRecord]) -> Result<(), StoreError>;
    /// Ends queued deliveries in one transaction; per end, whether it was still queued
    /// (and is now ended by this call).
    async fn finish_deliveries(&self, ends: &[DeliveryEnd]) -> Result<Vec<bool>, StoreError>;
    async fn get_delivery(
        &self,
        task: TaskId,
        attempt: u32,
    ) -> Result<Option<DeliveryRecord>, StoreError>;
    /// The agent's queued deliveries, oldest first.
    async fn queued_deliveries(&self, agent: AgentId) -> Result<Vec<DeliveryRecord>, StoreError>;
    /// Relays the lines of a chunk that the key does not have yet (idempotent by sequence
    /// number) and returns the next sequence number to send; `None` when the key is not a
    /// delivery of `agent`. A finished key acknowledges every line and keeps none.
    async fn append_relay_lines(
        &self,
        task: TaskId,
        attempt: u32,
        agent: AgentId,
        first_seq: u64,
        lines: &[RelayLine],
    ) -> Result<Option<u64>, StoreError>;
    /// The relayed lines of a key from `from_seq` on, in order.
    async fn relay_lines(
        &self,
        task: TaskId,
        attempt: u32,
        from_seq: u64,
    ) -> Result<Vec<RelayLine>, StoreError>;
    /// Records agents' last polls (a later poll is never overwritten by an earlier one).
    async fn record_agent_polls(&self, polls: &[AgentPoll]) -> Result<(), StoreError>;
    /// Every unrevoked agent's last recorded poll.
    async fn agent_polls(&self) -> Result<Vec<AgentPoll>, StoreError>;
    /// Deletes the deliveries (and their relayed lines) that ended before `finished_before`,
    /// and those still queued that were written before `queued_before` (abandoned: an end
    /// that never landed, a replica that died with its ad-hoc keys).
    async fn prune_deliveries(
        &self,
        finished_before: Timestamp,
        queued_before: Timestamp,
    ) -> Result<u64, StoreError>;
    /// Sends `message` to every subscriber of every replica sharing this database.
    async fn announce(&self, message: &str) -> Result<(), StoreError>;
    /// The announcements from now on (on PostgreSQL the first call starts the listener,
    /// which sends [`crate::RESYNC`] each time it connects).
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<String>;
    /// True when several processes may share this database (PostgreSQL).
    fn shared(&self) -> bool;
}
