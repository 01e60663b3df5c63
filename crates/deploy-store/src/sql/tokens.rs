//! The SQL of API tokens, console sessions and the audit log.

/// Expands, for `$store` over `$db`, the `Store` methods on API tokens, console sessions
/// and the audit log (module `tokens_sql`).
macro_rules! tokens_sql {
    ($store:ty, $db:ty) => {
        /// The insert of an API token row (an agent bootstrap token is one too).
        fn insert_api_token(
            token: &ApiTokenRecord,
        ) -> Result<sqlx::query::Query<'_, $db, <$db as sqlx::Database>::Arguments<'_>>, StoreError>
        {
            Ok(sqlx::query(
                "INSERT INTO api_tokens (id, name, token_hash, scopes, created_at, revoked_at,
                   expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind_id(token.id)
            .bind(token.name.clone())
            .bind(token.token_hash.as_str().to_owned())
            .bind(model::to_json("api_tokens.scopes", &token.scopes)?)
            .bind(model::millis(token.created_at)?)
            .bind(model::opt_millis(token.revoked_at)?)
            .bind(model::opt_millis(token.expires_at)?))
        }

        /// The `Store` methods on API tokens, console sessions and the audit log.
        mod tokens_sql {
            use super::*;

            pub(super) async fn put_api_token(
                store: &$store,
                token: &ApiTokenRecord,
            ) -> Result<(), StoreError> {
                let query = insert_api_token(token)?;
                store
                    .insert_one(query, "api token", token.name.clone())
                    .await
            }

            pub(super) async fn find_api_token(
                store: &$store,
                hash: &deploy_core::Digest,
            ) -> Result<Option<ApiTokenRecord>, StoreError> {
                <$store>::fetch_opt(
                    &store.reader,
                    sqlx::query("SELECT * FROM api_tokens WHERE token_hash = $1")
                        .bind(hash.as_str().to_owned()),
                    "look up an api token",
                    rows::api_token,
                )
                .await
            }

            pub(super) async fn list_api_tokens(
                store: &$store,
            ) -> Result<Vec<ApiTokenRecord>, StoreError> {
                let query = sqlx::query("SELECT * FROM api_tokens ORDER BY created_at, id");
                store
                    .read_all(query, "list api tokens", rows::api_token)
                    .await
            }

            pub(super) async fn revoke_api_token(
                store: &$store,
                id: uuid::Uuid,
                now: deploy_core::Timestamp,
            ) -> Result<ApiTokenRecord, StoreError> {
                <$store>::fetch_opt(
                    &store.writer,
                    sqlx::query(
                        "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2
                     RETURNING *",
                    )
                    .bind(model::millis(now)?)
                    .bind_id(id),
                    "revoke an api token",
                    rows::api_token,
                )
                .await?
                .ok_or(StoreError::NotFound {
                    entity: "api token",
                    id: id.to_string(),
                })
            }

            pub(super) async fn touch_api_token(
                store: &$store,
                id: uuid::Uuid,
                now: deploy_core::Timestamp,
            ) -> Result<(), StoreError> {
                sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
                    .bind(model::millis(now)?)
                    .bind_id(id)
                    .execute(&store.writer)
                    .await
                    .map_err(StoreError::db("record the use of an api token"))?;
                Ok(())
            }

            pub(super) async fn put_console_session(
                store: &$store,
                session: &crate::model::ConsoleSession,
            ) -> Result<(), StoreError> {
                let query = sqlx::query(
                    "INSERT INTO console_sessions
                       (id_hash, token_id, created_at, expires_at)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(session.id_hash.as_str().to_owned())
                .bind_id(session.token_id)
                .bind(model::millis(session.created_at)?)
                .bind(model::millis(session.expires_at)?);
                match store
                    .insert_one(query, "console session", session.id_hash.to_string())
                    .await
                {
                    Err(e) if e.is_foreign_key_violation() => Err(StoreError::NotFound {
                        entity: "api token",
                        id: session.token_id.to_string(),
                    }),
                    other => other,
                }
            }

            pub(super) async fn find_console_session(
                store: &$store,
                id_hash: &deploy_core::Digest,
                now: deploy_core::Timestamp,
            ) -> Result<Option<(crate::model::ConsoleSession, ApiTokenRecord)>, StoreError> {
                <$store>::fetch_opt(
                    &store.reader,
                    sqlx::query(
                        "SELECT t.*, s.id_hash AS session_id_hash,
                           s.token_id AS session_token_id,
                           s.created_at AS session_created_at,
                           s.expires_at AS session_expires_at
                         FROM console_sessions s JOIN api_tokens t ON t.id = s.token_id
                         WHERE s.id_hash = $1 AND s.expires_at > $2",
                    )
                    .bind(id_hash.as_str().to_owned())
                    .bind(model::millis(now)?),
                    "look up a console session",
                    rows::console_session,
                )
                .await
            }

            pub(super) async fn delete_console_session(
                store: &$store,
                id_hash: &deploy_core::Digest,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
                    .bind(id_hash.as_str().to_owned())
                    .execute(&store.writer)
                    .await
                    .map_err(StoreError::db("delete a console session"))?;
                Ok(done.rows_affected() > 0)
            }

            pub(super) async fn prune_console_sessions(
                store: &$store,
                now: deploy_core::Timestamp,
            ) -> Result<u64, StoreError> {
                let done = sqlx::query(
                    "DELETE FROM console_sessions
                     WHERE expires_at <= $1
                        OR token_id IN
                           (SELECT id FROM api_tokens WHERE revoked_at IS NOT NULL)",
                )
                .bind(model::millis(now)?)
                .execute(&store.writer)
                .await
                .map_err(StoreError::db("prune console sessions"))?;
                Ok(done.rows_affected())
            }

            pub(super) async fn append_audit(
                store: &$store,
                r: &crate::model::AuditRecord,
            ) -> Result<u64, StoreError> {
                let row = sqlx::query(
                    "INSERT INTO audit_log (at, actor_kind, actor_id, actor_name, method, route,
                       path, entity_id, status, remote, before, after)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                     RETURNING seq",
                )
                .bind(model::millis(r.at)?)
                .bind(r.actor_kind.as_str())
                .bind(r.actor_id.clone())
                .bind(r.actor_name.clone())
                .bind(r.method.clone())
                .bind(r.route.clone())
                .bind(r.path.clone())
                .bind(r.entity_id.clone())
                .bind(i64::from(r.status))
                .bind(r.remote.clone())
                .bind(r.before.clone())
                .bind(r.after.clone())
                .fetch_one(&store.writer)
                .await
                .map_err(StoreError::db("append to the audit log"))?;
                model::uint("audit_log.seq", row.i64("seq")?)
            }

            pub(super) async fn list_audit(
                store: &$store,
                filter: &crate::model::AuditFilter,
                limit: u32,
            ) -> Result<Vec<crate::model::AuditRecord>, StoreError> {
                let before = filter.before.map(|b| model::int("before", b)).transpose()?;
                let query = sqlx::query(
                    "SELECT * FROM audit_log
                     WHERE ($1 IS NULL OR actor_name = $1)
                       AND ($2 IS NULL OR entity_id = $2)
                       AND ($3 IS NULL OR seq < $3)
                     ORDER BY seq DESC LIMIT $4",
                )
                .bind(filter.actor.clone())
                .bind(filter.entity.clone())
                .bind(before)
                .bind(i64::from(limit));
                store
                    .read_all(query, "list the audit log", rows::audit)
                    .await
            }
        }
    };
}

pub(crate) use tokens_sql;
