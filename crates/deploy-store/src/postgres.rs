//! `PgStore`: the store on PostgreSQL, for several `deployd` replicas sharing the work.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Row;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use uuid::Uuid;

use crate::errors::StoreError;
use crate::model::{self, Created, JobEventRecord, LastKnownGood, LogChunk};
use crate::model::{AgentRecord, ApiTokenRecord};
use crate::rows::{self, RowExt, row_ext_common};
use crate::sql::{BindId, sql_store};
use crate::sqlite::supported_version;
use crate::store::Store;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// How to reach PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgConfig {
    /// `postgres://user[:password]@host:port/database`.
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl PgConfig {
    /// Defaults: 10 connections, 10 s to get one.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

/// The store on PostgreSQL. Reads and writes share one pool; row locks and
/// `FOR UPDATE SKIP LOCKED` keep replicas apart.
#[derive(Debug, Clone)]
pub struct PgStore {
    writer: PgPool,
    reader: PgPool,
}

impl PgStore {
    /// Claims skipping rows another replica is claiming right now; the outer
    /// condition is re-checked on the locked row, so a job is claimed once.
    const CLAIM_SQL: &'static str = "UPDATE jobs SET claimed_by = $1, lease_until = $2
        WHERE id IN (
            SELECT id FROM jobs
            WHERE status IN ('pending', 'preparing', 'running', 'completing', 'rolling_back')
              AND (claimed_by IS NULL OR lease_until < $3)
            ORDER BY created_at, id LIMIT $4
            FOR UPDATE SKIP LOCKED)
          AND (claimed_by IS NULL OR lease_until < $3)
        RETURNING id";

    /// Connects and migrates (migrations take an advisory lock, so replicas may start together).
    ///
    /// A database whose schema is newer than this build's is refused unmodified.
    pub async fn connect(config: &PgConfig) -> Result<Self, StoreError> {
        let location = redact(&config.url);
        let options = PgConnectOptions::from_str(&config.url)
            .map_err(StoreError::db("parse the PostgreSQL url"))?;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(StoreError::db("connect to PostgreSQL"))?;
        let present = sqlx::query("SELECT to_regclass('_sqlx_migrations') IS NOT NULL AS present")
            .fetch_one(&pool)
            .await
            .map_err(StoreError::db("read the schema version"))?
            .boolean("present")?;
        if present {
            let found = sqlx::query("SELECT MAX(version) AS v FROM _sqlx_migrations")
                .fetch_one(&pool)
                .await
                .map_err(StoreError::db("read the schema version"))?
                .opt_i64("v")?;
            let supported = supported_version(&MIGRATOR);
            if let Some(found) = found.filter(|f| *f > supported) {
                pool.close().await;
                return Err(StoreError::SchemaTooNew {
                    location,
                    found,
                    supported,
                });
            }
        }
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate { location, source })?;
        Ok(Self {
            writer: pool.clone(),
            reader: pool,
        })
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.writer.close().await;
    }
}

/// The url without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{}@{}", &url[..scheme + 3], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

impl RowExt for PgRow {
    fn uuid(&self, col: &'static str) -> Result<Uuid, StoreError> {
        self.try_get(col).map_err(rows::column_error(col))
    }
    fn opt_uuid(&self, col: &'static str) -> Result<Option<Uuid>, StoreError> {
        self.try_get(col).map_err(rows::column_error(col))
    }
    row_ext_common!();
}

impl BindId for sqlx::query::Query<'_, sqlx::Postgres, PgArguments> {
    fn bind_id(self, id: impl Into<Uuid>) -> Self {
        self.bind(id.into())
    }
    fn bind_opt_id<T: Into<Uuid>>(self, id: Option<T>) -> Self {
        self.bind(id.map(Into::into))
    }
}

sql_store!(PgStore, sqlx::Postgres);

#[cfg(test)]
mod tests {
    #[test]
    fn redact_drops_the_password() {
        assert_eq!(
            super::redact("postgres://app:s3cret@db:5432/deploy"),
            "postgres://app@db:5432/deploy"
        );
        assert_eq!(
            super::redact("postgres://db/deploy"),
            "postgres://db/deploy"
        );
    }
}
