//! The SQL of application secrets (sealed, never in clear) and of the checks that prove a key file is the one that sealed them.

/// Expands, for `$store` over `$db`, the `Store` methods on application secrets and
/// the secrets key checks (module `app_secrets_sql`).
macro_rules! app_secrets_sql {
    ($store:ty, $db:ty) => {
        /// The `Store` methods on application secrets and key checks.
        mod app_secrets_sql {
            use super::*;

            #[expect(
                clippy::too_many_arguments,
                reason = "the row's columns, and the version the sealed value is bound to"
            )]
            pub(super) async fn put_app_secret(
                store: &$store,
                name: &str,
                key_id: &str,
                sealed: &str,
                version: u64,
                environments: &[String],
                by: &str,
                now: deploy_core::Timestamp,
            ) -> Result<Option<crate::app_secrets::AppSecretRecord>, StoreError> {
                let at = model::millis(now)?;
                let version_col = crate::sql::decide::secret_version(version)?;
                let environments = environments.join(" ");
                // `version` was sealed into the value: it is written only over the
                // version before it (or as a new row at 1), else the caller read a
                // stale row and must seal again. No row back: nothing was written.
                let written = if version <= 1 {
                    sqlx::query(
                        "INSERT INTO app_secrets (name, key_id, sealed, version, environments,
                           created_at, created_by, updated_at, updated_by)
                         VALUES ($1, $2, $3, 1, $4, $5, $6, $5, $6)
                         ON CONFLICT (name) DO NOTHING RETURNING *",
                    )
                    .bind(name)
                    .bind(key_id)
                    .bind(sealed)
                    .bind(&environments)
                    .bind(at)
                    .bind(by)
                    .fetch_optional(&store.writer)
                    .await
                    .map_err(StoreError::db("create an application secret"))?
                } else {
                    sqlx::query(
                        "UPDATE app_secrets SET key_id = $1, sealed = $2, version = $3,
                           environments = $4, updated_at = $5, updated_by = $6
                         WHERE name = $7 AND version = $8 RETURNING *",
                    )
                    .bind(key_id)
                    .bind(sealed)
                    .bind(version_col)
                    .bind(&environments)
                    .bind(at)
                    .bind(by)
                    .bind(name)
                    .bind(version_col - 1)
                    .fetch_optional(&store.writer)
                    .await
                    .map_err(StoreError::db("replace an application secret"))?
                };
                written.as_ref().map(rows::app_secret).transpose()
            }

            pub(super) async fn get_app_secret(
                store: &$store,
                name: &str,
            ) -> Result<Option<crate::app_secrets::AppSecretRecord>, StoreError> {
                // The writer: a secret replaced a moment ago must be the one deployed.
                <$store>::fetch_opt(
                    &store.writer,
                    sqlx::query("SELECT * FROM app_secrets WHERE name = $1").bind(name),
                    "read an application secret",
                    rows::app_secret,
                )
                .await
            }

            pub(super) async fn list_app_secrets(
                store: &$store,
            ) -> Result<Vec<crate::app_secrets::AppSecretRecord>, StoreError> {
                sqlx::query("SELECT * FROM app_secrets ORDER BY name")
                    .fetch_all(&store.writer)
                    .await
                    .map_err(StoreError::db("list application secrets"))?
                    .iter()
                    .map(rows::app_secret)
                    .collect()
            }

            pub(super) async fn delete_app_secret(
                store: &$store,
                name: &str,
            ) -> Result<bool, StoreError> {
                let mut tx = store.begin_write().await?;
                let done = sqlx::query("DELETE FROM app_secrets WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db("delete an application secret"))?;
                tx.commit()
                    .await
                    .map_err(StoreError::db("commit an application secret's deletion"))?;
                Ok(done.rows_affected() > 0)
            }

            pub(super) async fn secret_key_checks(
                store: &$store,
            ) -> Result<Vec<(String, String)>, StoreError> {
                let rows =
                    sqlx::query("SELECT key_id, sealed FROM secret_key_checks ORDER BY key_id")
                        .fetch_all(&store.writer)
                        .await
                        .map_err(StoreError::db("list the secrets key checks"))?;
                rows.iter()
                    .map(|r| Ok((r.string("key_id")?, r.string("sealed")?)))
                    .collect()
            }

            pub(super) async fn put_secret_key_check(
                store: &$store,
                key_id: &str,
                sealed: &str,
                now: deploy_core::Timestamp,
            ) -> Result<bool, StoreError> {
                let at = model::millis(now)?;
                let mut tx = store.begin_write().await?;
                // The first writer of a key id wins; a later one reads the winner's check.
                let done = sqlx::query(
                    "INSERT INTO secret_key_checks (key_id, sealed, created_at)
                     VALUES ($1, $2, $3) ON CONFLICT (key_id) DO NOTHING",
                )
                .bind(key_id)
                .bind(sealed)
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("record a secrets key check"))?;
                tx.commit()
                    .await
                    .map_err(StoreError::db("commit a secrets key check"))?;
                Ok(done.rows_affected() > 0)
            }

            pub(super) async fn reseal_app_secret(
                store: &$store,
                name: &str,
                version: u64,
                key_id: &str,
                sealed: &str,
            ) -> Result<bool, StoreError> {
                let version = crate::sql::decide::secret_version(version)?;
                let mut tx = store.begin_write().await?;
                // Only the version that was read is re-sealed: a replacement written in
                // between is already sealed under the current key.
                let done = sqlx::query(
                    "UPDATE app_secrets SET key_id = $1, sealed = $2
                     WHERE name = $3 AND version = $4",
                )
                .bind(key_id)
                .bind(sealed)
                .bind(name)
                .bind(version)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("re-seal an application secret"))?;
                tx.commit()
                    .await
                    .map_err(StoreError::db("commit a re-sealed application secret"))?;
                Ok(done.rows_affected() > 0)
            }
        }
    };
}

pub(crate) use app_secrets_sql;
