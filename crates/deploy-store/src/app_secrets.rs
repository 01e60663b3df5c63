//! Application secrets at rest: rows holding a sealed value (never the value), the key id that sealed it, a version and who wrote it.
//!
//! The store neither seals nor opens: deploy-server does, with the key from deployd's key
//! file. Replacing a secret bumps its version; re-sealing it under another key (a key
//! rotation) keeps the version, so what a deployment ran is still named by it.

use deploy_core::Timestamp;

/// One application secret as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct AppSecretRecord {
    /// A deploy-core `Name` (checked by the server before any write).
    pub name: String,
    /// The id of the key in the key file that sealed `sealed`.
    pub key_id: String,
    /// base64 of nonce || ciphertext || tag.
    pub sealed: String,
    /// 1 at creation, +1 at every replacement.
    pub version: u64,
    /// The environments (ids) the secret may be used in; empty: every environment.
    pub environments: Vec<String>,
    pub created_at: Timestamp,
    pub created_by: String,
    pub updated_at: Timestamp,
    pub updated_by: String,
}

impl std::fmt::Debug for AppSecretRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The sealed text is left out: it is no use in a log line.
        f.debug_struct("AppSecretRecord")
            .field("name", &self.name)
            .field("key_id", &self.key_id)
            .field("version", &self.version)
            .field("environments", &self.environments)
            .field("updated_at", &self.updated_at)
            .field("updated_by", &self.updated_by)
            .finish_non_exhaustive()
    }
}

/// Expands the application secrets' SQL as inherent methods of `$store` (the `Store`
/// impl delegates to them; `async_trait` cannot see into a macro in its impl block).
macro_rules! app_secrets_sql {
    ($store:ty, $db:ty) => {
        impl $store {
            fn app_secret_row(r: &<$db as sqlx::Database>::Row) -> Result<crate::app_secrets::AppSecretRecord, StoreError> {
                Ok(crate::app_secrets::AppSecretRecord {
                    name: r.string("name")?,
                    key_id: r.string("key_id")?,
                    sealed: r.string("sealed")?,
                    version: model::uint("app_secrets.version", r.i64("version")?)?,
                    environments: r.string("environments")?.split_whitespace().map(str::to_owned).collect(),
                    created_at: model::timestamp("app_secrets.created_at", r.i64("created_at")?)?,
                    created_by: r.string("created_by")?,
                    updated_at: model::timestamp("app_secrets.updated_at", r.i64("updated_at")?)?,
                    updated_by: r.string("updated_by")?,
                })
            }

            #[expect(clippy::too_many_arguments, reason = "the row's columns, and the version the sealed value is bound to")]
            pub(crate) async fn app_secret_put(
                &self,
                name: &str,
                key_id: &str,
                sealed: &str,
                version: u64,
                environments: &[String],
                by: &str,
                now: deploy_core::Timestamp,
            ) -> Result<Option<crate::app_secrets::AppSecretRecord>, StoreError> {
                let at = model::millis(now)?;
                let version_col = i64::try_from(version).map_err(|_| StoreError::corrupt("app_secrets.version", version.to_string())("out of range".to_owned()))?;
                let environments = environments.join(" ");
                let mut tx = self.begin_write().await?;
                // `version` was sealed into the value: it is written only over the
                // version before it (or as a new row at 1), else the caller read a
                // stale row and must seal again.
                let written = if version <= 1 {
                    sqlx::query(
                        "INSERT INTO app_secrets (name, key_id, sealed, version, environments, created_at, created_by, updated_at, updated_by) VALUES ($1, $2, $3, 1, $4, $5, $6, $5, $6) ON CONFLICT (name) DO NOTHING",
                    )
                    .bind(name)
                    .bind(key_id)
                    .bind(sealed)
                    .bind(&environments)
                    .bind(at)
                    .bind(by)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db("create an application secret"))?
                } else {
                    sqlx::query(
                        "UPDATE app_secrets SET key_id = $1, sealed = $2, version = $3, environments = $4, updated_at = $5, updated_by = $6 WHERE name = $7 AND version = $8",
                    )
                    .bind(key_id)
                    .bind(sealed)
                    .bind(version_col)
                    .bind(&environments)
                    .bind(at)
                    .bind(by)
                    .bind(name)
                    .bind(version_col - 1)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db("replace an application secret"))?
                };
                if written.rows_affected() == 0 {
                    return Ok(None);
                }
                let row = sqlx::query("SELECT * FROM app_secrets WHERE name = $1")
                    .bind(name)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(StoreError::db("read back an application secret"))?;
                let record = Self::app_secret_row(&row)?;
                tx.commit().await.map_err(StoreError::db("commit an application secret"))?;
                Ok(Some(record))
            }

            pub(crate) async fn app_secret_get(&self, name: &str) -> Result<Option<crate::app_secrets::AppSecretRecord>, StoreError> {
                // The writer: a secret replaced a moment ago must be the one deployed.
                sqlx::query("SELECT * FROM app_secrets WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&self.writer)
                    .await
                    .map_err(StoreError::db("read an application secret"))?
                    .as_ref()
                    .map(Self::app_secret_row)
                    .transpose()
            }

            pub(crate) async fn app_secret_list(&self) -> Result<Vec<crate::app_secrets::AppSecretRecord>, StoreError> {
                sqlx::query("SELECT * FROM app_secrets ORDER BY name")
                    .fetch_all(&self.writer)
                    .await
                    .map_err(StoreError::db("list application secrets"))?
                    .iter()
                    .map(Self::app_secret_row)
                    .collect()
            }

            pub(crate) async fn app_secret_delete(&self, name: &str) -> Result<bool, StoreError> {
                let mut tx = self.begin_write().await?;
                let done = sqlx::query("DELETE FROM app_secrets WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db("delete an application secret"))?;
                tx.commit().await.map_err(StoreError::db("commit an application secret's deletion"))?;
                Ok(done.rows_affected() > 0)
            }

            pub(crate) async fn secret_key_check_list(&self) -> Result<Vec<(String, String)>, StoreError> {
                let rows = sqlx::query("SELECT key_id, sealed FROM secret_key_checks ORDER BY key_id")
                    .fetch_all(&self.writer)
                    .await
                    .map_err(StoreError::db("list the secrets key checks"))?;
                rows.iter()
                    .map(|r| Ok((r.string("key_id")?, r.string("sealed")?)))
                    .collect()
            }

            pub(crate) async fn secret_key_check_put(
                &self,
                key_id: &str,
                sealed: &str,
                now: deploy_core::Timestamp,
            ) -> Result<bool, StoreError> {
                let at = model::millis(now)?;
                let mut tx = self.begin_write().await?;
                // The first writer of a key id wins; a later one reads the winner's check.
                let done = sqlx::query("INSERT INTO secret_key_checks (key_id, sealed, created_at) VALUES ($1, $2, $3) ON CONFLICT (key_id) DO NOTHING")
                    .bind(key_id)
                    .bind(sealed)
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db("record a secrets key check"))?;
                tx.commit().await.map_err(StoreError::db("commit a secrets key check"))?;
                Ok(done.rows_affected() > 0)
            }

            pub(crate) async fn app_secret_reseal(
                &self,
                name: &str,
                version: u64,
                key_id: &str,
                sealed: &str,
            ) -> Result<bool, StoreError> {
                let version = i64::try_from(version).map_err(|_| StoreError::corrupt("app_secrets.version", version.to_string())("out of range".to_owned()))?;
                let mut tx = self.begin_write().await?;
                // Only the version that was read is re-sealed: a replacement written in
                // between is already sealed under the current key.
                let done = sqlx::query("UPDATE app_secrets SET key_id = $1, sealed = $2 WHERE name = $3 AND version = $4")
                    .bind(key_id)
                    .bind(sealed)
                    .bind(name)
                    .bind(version)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db("re-seal an application secret"))?;
                tx.commit().await.map_err(StoreError::db("commit a re-sealed application secret"))?;
                Ok(done.rows_affected() > 0)
            }
        }
    };
}

pub(crate) use app_secrets_sql;
