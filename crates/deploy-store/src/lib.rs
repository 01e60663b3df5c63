//! deploy-store: persistence of the deployment system on embedded SQLite (the default) or PostgreSQL.
//!
//! One [`Store`] trait, two implementations ([`SqliteStore`], [`PgStore`]) whose
//! SQL is written once (`sql/`, a macro per area) and expanded per backend: both dialects
//! take `$n` placeholders; they differ only in how an id is bound and read (TEXT on
//! SQLite, `UUID` on PostgreSQL) and in the claim query. Queries are runtime
//! `sqlx::query` (no compile-time `DATABASE_URL`, not the `Any` driver). Row decoding
//! is shared (`rows.rs`): a stored value that no longer parses is
//! [`StoreError::Corrupt`] naming the column, never a panic. With the `mock` feature
//! (and in this crate's own tests), `MockStore` (mockall) stands in for the store.
//!
//! # Schema
//!
//! Migrations are in `migrations/{sqlite,postgres}`, embedded with
//! `sqlx::migrate!`; an applied one is never edited. Times are integer Unix
//! milliseconds on both backends; nested configuration (strategy, failure policy,
//! connection, hooks, labels) is JSON text; whatever a query filters on is a column.
//!
//! | table | holds | guarantee |
//! |---|---|---|
//! | `environments`, `targets` | JSON `spec`, `version`, `deleted_at` | `name UNIQUE` (targets: per environment); a clash is `NameTaken` naming the holder; deleting keeps the row and frees the name |
//! | `releases`, `release_components` | components by position; the service definition's text | component names unique per release |
//! | `promotions` | promotion, approvals, decision; `version` | written with its version (`save_promotion`) |
//! | `jobs` | scalar job fields, `version`, `claimed_by`, `lease_until`, `queued_behind`, `winding_down`, `log_cursor` | `idempotency_key UNIQUE`; **`jobs_one_active_per_environment`**: a unique partial index on `environment_id` over pending..completing jobs not queued: at most one job holds an environment, whatever the replicas do; `jobs_by_release` lists a release's jobs |
//! | `tasks` | scalar task fields, `version`, `position`, `log_seq` | `UNIQUE (job_id, position)`; `CHECK` on status and counters |
//! | `artifacts` | rendered files: content, size, sha256 | verified against the sha256 on load |
//! | `job_events` | every job and task transition: event, from, to, cause, time | append-only; `seq` is a total order (timelines, SSE resumption); written in the transaction of the change |
//! | `task_log_chunks` | log chunks per task, numbered per task and per job | the newest 1,000 chunks of at most 64 KiB per task; job positions become visible in order (the job row's lock serialises appends) |
//! | `audit_log` | one row per API write, redacted | triggers refuse `UPDATE` and `DELETE` |
//! | `api_tokens` | name, sha256, scopes, revocation, expiry, last use; agent bootstrap tokens (scope `agent_bootstrap`) | `token_hash UNIQUE`; spending a bootstrap token is one conditional `UPDATE … RETURNING`, so of two racing agents exactly one wins |
//! | `console_sessions` | web-console sign-ins: the sha256 of the cookie's secret, the API token that signed in, expiry | only the hash is stored; a session refers to an existing token; sessions expired or of a revoked token are pruned |
//! | `agents`, `agent_bootstrap_bindings` | registered agents (credential sha256, labels, capabilities); what a bootstrap token lets an agent claim | `name UNIQUE`, credential hash unique; a token and its binding are written together |
//! | `agent_deliveries`, `agent_log_lines` | what crosses replicas for the agent hub (`relay.rs`) | payloads sealed |
//! | `app_secrets`, `secret_key_checks` | application secrets, sealed (AES-256-GCM, AAD = key id + name); what proves a key file is the one that sealed them | never a value in clear |
//!
//! # Guarantees
//!
//! - **Optimistic concurrency.** `apply_job_event` / `apply_task_event` load the row,
//!   let deploy-core's `apply` decide, then `UPDATE … WHERE id = $ AND version = $`
//!   with `version + 1` and append the event, in one transaction; zero rows is
//!   [`StoreError::Conflict`] naming the entity and both versions. `finish_attempt`
//!   also writes the attempt's log tail and agent in the same compare-and-swap.
//! - **Two writes, one transaction** where a crash between them would leave a lie:
//!   `start_rollback` creates the rollback job and moves the original to
//!   `rolling_back`; `settle_rollback_job` ends a rollback job and settles its
//!   original (`rollback_succeeded` or `rollback_failed`).
//! - **Environment lock**: the unique index above. A losing `create_job` gets
//!   `EnvironmentLocked` naming the holder; a loser with the same key gets the
//!   winner's job.
//! - **Leases.** `claim_jobs` takes jobs that need a runner with no holder or an
//!   expired lease (`FOR UPDATE SKIP LOCKED` and a re-check on PostgreSQL; SQLite's
//!   single writer serialises claimers). `renew_lease` and `release_lease` succeed
//!   only for the holder (`LeaseLost` names the current one); `release_leases_of`
//!   gives back a restarted replica's leases at once. Leases do not bump `version`.
//! - **New jobs are announced**: PostgreSQL `pg_notify('deploy_new_job')` in the
//!   creating transaction, which `wait_for_new_jobs` listens for; on SQLite (one
//!   process) it is a plain wait.
//! - **Group commit.** Task transitions queue to one committer per store, which
//!   writes up to 256 of them in one transaction (one fsync); a transition refused
//!   (conflict, invalid event) writes nothing and holds back none of the others; any
//!   other failure fails the whole batch. A caller returns only after the commit that
//!   holds its transition (SQLite in `sqlite.rs`, PostgreSQL in `pg_commit.rs`).
//! - **Durability.** SQLite runs `synchronous=FULL` by default (a commit survives
//!   power loss; [`SqliteDurability::Normal`] only SIGKILL); PostgreSQL keeps its own
//!   `fsync` and `synchronous_commit`.
//! - **Full storage** is [`StoreError::StorageFull`]: nothing committed, reads keep
//!   working, the same write succeeds once space is freed.
//! - **Backup** (SQLite, `sqlite_file.rs`): [`SqliteStore::backup`] copies the file
//!   as of one commit while it is written (`VACUUM INTO`, then fsync and rename);
//!   [`SqliteStore::restore`] checks a backup before it moves the database aside.
//!   PostgreSQL has `pg_dump`.
//! - **Start-up checks**: an unwritable SQLite path is `Unwritable`; a database
//!   migrated by a newer build is `SchemaTooNew`, detected before anything writes.
//!
//! Every repository test runs on both backends (`both_backends!`), PostgreSQL being
//! a real cluster per test from deploy-testkit.

mod app_secrets;
mod errors;
mod model;
mod notifications;
mod pg_commit;
mod pg_tls;
mod pool_close;
mod postgres;
mod relay;
mod rows;
mod sql;
mod sqlite;
mod sqlite_file;
mod store;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use app_secrets::AppSecretRecord;
pub use errors::StoreError;
pub use model::{
    AGENT_BOOTSTRAP_SCOPE, AgentRecord, ApiTokenRecord, AttemptRecord, AuditActorKind, AuditFilter,
    AuditRecord, BootstrapBinding, ConsoleSession, Created, JobEventRecord, JobQuery, JobSummary,
    LastKnownGood, LogChunk, MAX_LOG_CHUNK_BYTES, MAX_LOG_CHUNKS_PER_TASK, TargetTaskState,
    TaskCounts,
};
pub use notifications::{
    AttemptOutcome, DeliveryFilter, NotificationAttempt, NotificationDelivery, NotificationStatus,
    NotificationSubscription,
};
pub use postgres::{PgConfig, PgStore};
pub use relay::{
    AgentPoll, DeliveryEnd, DeliveryRecord, DeliveryState, RELAY_CHANNEL, RESYNC, RelayLine,
};
pub use sqlite::{SqliteConfig, SqliteDurability, SqliteStore};
pub use sqlite_file::{Restored, SqliteFileInfo};
#[cfg(any(test, feature = "mock"))]
pub use store::MockStore;
pub use store::Store;

/// Which database to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    Sqlite(SqliteConfig),
    Postgres(PgConfig),
}

/// Opens the configured store, running start-up checks and migrations.
pub async fn open(config: &StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match config {
        StoreConfig::Sqlite(c) => Arc::new(SqliteStore::open(c).await?),
        StoreConfig::Postgres(c) => Arc::new(PgStore::connect(c).await?),
    })
}
