//! deploy-store: persistence of the deployment system on embedded SQLite (the default) or PostgreSQL.
//!
//! One [`Store`] trait, two implementations ([`SqliteStore`], [`PgStore`]) whose
//! SQL is written once (`sql.rs`). The database holds the engine's guarantees:
//! optimistic concurrency on every state change (a stale write is
//! [`StoreError::Conflict`]), at most one non-terminal job per environment (a
//! unique partial index), idempotent job creation (a unique key), job leases
//! for several replicas, and an append-only event log written in the same
//! transaction as each change. With the `mock` feature, `MockStore` (mockall)
//! stands in for the store in unit tests of orchestration logic.

mod app_secrets;
mod errors;
mod model;
mod pg_commit;
mod pg_tls;
mod postgres;
mod relay;
mod rows;
mod sql;
mod sqlite;
mod store;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use app_secrets::AppSecretRecord;
pub use errors::StoreError;
pub use model::{
    AGENT_BOOTSTRAP_SCOPE, AgentRecord, ApiTokenRecord, AttemptRecord, AuditActorKind, AuditFilter,
    AuditRecord, BootstrapBinding, Created, JobEventRecord, LastKnownGood, LogChunk,
    MAX_LOG_CHUNK_BYTES, MAX_LOG_CHUNKS_PER_TASK,
};
pub use postgres::{PgConfig, PgStore};
pub use relay::{
    AgentPoll, DeliveryEnd, DeliveryRecord, DeliveryState, RELAY_CHANNEL, RESYNC, RelayLine,
};
pub use sqlite::{SqliteConfig, SqliteDurability, SqliteStore};
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
