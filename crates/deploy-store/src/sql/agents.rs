//! The SQL of registered agents and their bootstrap tokens.

/// Expands, for `$store` over `$db`, the `Store` methods on agents and bootstrap
/// tokens (module `agents_sql`).
macro_rules! agents_sql {
    ($store:ty, $db:ty) => {
        /// The `Store` methods on agents and bootstrap tokens.
        mod agents_sql {
            use super::*;

            pub(super) async fn put_agent(
                store: &$store,
                agent: &AgentRecord,
            ) -> Result<(), StoreError> {
                let query = sqlx::query(
                    "INSERT INTO agents (id, name, labels, capabilities, agent_version,
                       credential_hash, last_seen_at, created_at, revoked_at,
                       bootstrap_token_id, labels_version)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind_id(agent.id)
                .bind(agent.name.clone())
                .bind(model::to_json("agents.labels", &agent.labels)?)
                .bind(model::to_json("agents.capabilities", &agent.capabilities)?)
                .bind(agent.agent_version.clone())
                .bind(
                    agent
                        .credential_hash
                        .as_ref()
                        .map(|h| h.as_str().to_owned()),
                )
                .bind(model::opt_millis(agent.last_seen_at)?)
                .bind(model::millis(agent.created_at)?)
                .bind(model::opt_millis(agent.revoked_at)?)
                .bind_opt_id(agent.bootstrap_token_id)
                .bind(model::int("agents.labels_version", agent.labels_version)?);
                let name = agent.name.as_str();
                match store.insert_one(query, "agent", agent.id.to_string()).await {
                    Err(StoreError::AlreadyExists { entity, id }) => {
                        let holder = sqlx::query("SELECT id FROM agents WHERE name = $1")
                            .bind(name.to_owned());
                        Err(store.name_clash(holder, entity, name, id).await)
                    }
                    other => other,
                }
            }

            pub(super) async fn get_agent(
                store: &$store,
                id: deploy_core::AgentId,
            ) -> Result<AgentRecord, StoreError> {
                let query = sqlx::query("SELECT * FROM agents WHERE id = $1").bind_id(id);
                store
                    .read_one(query, "agent", id.to_string(), rows::agent)
                    .await
            }

            pub(super) async fn list_agents(
                store: &$store,
            ) -> Result<Vec<AgentRecord>, StoreError> {
                let query = sqlx::query("SELECT * FROM agents ORDER BY created_at, id");
                store.read_all(query, "list agents", rows::agent).await
            }

            pub(super) async fn find_agent_by_credential(
                store: &$store,
                hash: &deploy_core::Digest,
            ) -> Result<Option<AgentRecord>, StoreError> {
                <$store>::fetch_opt(
                    &store.writer,
                    sqlx::query("SELECT * FROM agents WHERE credential_hash = $1")
                        .bind(hash.as_str().to_owned()),
                    "look up an agent by credential",
                    rows::agent,
                )
                .await
            }

            pub(super) async fn find_agent_by_bootstrap_token(
                store: &$store,
                token: uuid::Uuid,
            ) -> Result<Option<AgentRecord>, StoreError> {
                // From the writer: a retry may follow the registration it repeats at once.
                <$store>::fetch_opt(
                    &store.writer,
                    sqlx::query("SELECT * FROM agents WHERE bootstrap_token_id = $1")
                        .bind_id(token),
                    "look up an agent by bootstrap token",
                    rows::agent,
                )
                .await
            }

            pub(super) async fn set_agent_credential(
                store: &$store,
                id: deploy_core::AgentId,
                hash: &deploy_core::Digest,
            ) -> Result<(), StoreError> {
                let done = match sqlx::query(
                    "UPDATE agents SET credential_hash = $1 WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(hash.as_str().to_owned())
                .bind_id(id)
                .execute(&store.writer)
                .await
                .map_err(StoreError::db("rotate an agent credential"))
                {
                    // Another agent holds this credential (a proposed one can collide only by
                    // mistake or malice): refused, nothing changed.
                    Err(e) if e.is_unique_violation() => {
                        return Err(StoreError::AlreadyExists {
                            entity: "agent credential",
                            id: id.to_string(),
                        });
                    }
                    other => other?,
                };
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound {
                        entity: "active agent",
                        id: id.to_string(),
                    });
                }
                Ok(())
            }

            pub(super) async fn revoke_agent(
                store: &$store,
                id: deploy_core::AgentId,
                now: deploy_core::Timestamp,
            ) -> Result<AgentRecord, StoreError> {
                <$store>::fetch_opt(
                    &store.writer,
                    sqlx::query(
                        "UPDATE agents SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2
                     RETURNING *",
                    )
                    .bind(model::millis(now)?)
                    .bind_id(id),
                    "revoke an agent",
                    rows::agent,
                )
                .await?
                .ok_or(StoreError::NotFound {
                    entity: "agent",
                    id: id.to_string(),
                })
            }

            pub(super) async fn touch_agent(
                store: &$store,
                id: deploy_core::AgentId,
                now: deploy_core::Timestamp,
            ) -> Result<(), StoreError> {
                sqlx::query("UPDATE agents SET last_seen_at = $1 WHERE id = $2")
                    .bind(model::millis(now)?)
                    .bind_id(id)
                    .execute(&store.writer)
                    .await
                    .map_err(StoreError::db("record that an agent was seen"))?;
                Ok(())
            }

            pub(super) async fn set_agent_labels(
                store: &$store,
                id: deploy_core::AgentId,
                labels: &deploy_core::Labels,
                expected_version: u64,
            ) -> Result<AgentRecord, StoreError> {
                let updated = sqlx::query(
                    "UPDATE agents SET labels = $1, labels_version = labels_version + 1
                     WHERE id = $2 AND labels_version = $3
                     RETURNING *",
                )
                .bind(model::to_json("agents.labels", labels)?)
                .bind_id(id)
                .bind(model::int("agents.labels_version", expected_version)?)
                .fetch_optional(&store.writer)
                .await
                .map_err(StoreError::db("change an agent's labels"))?;
                if let Some(row) = updated {
                    return rows::agent(&row);
                }
                // Nothing matched: say whether the agent is unknown or was changed meanwhile.
                let found = <$store>::fetch_opt(
                    &store.writer,
                    sqlx::query("SELECT * FROM agents WHERE id = $1").bind_id(id),
                    "load an agent",
                    rows::agent,
                )
                .await?
                .ok_or(StoreError::NotFound {
                    entity: "agent",
                    id: id.to_string(),
                })?;
                Err(StoreError::Conflict {
                    entity: "agent labels",
                    id: id.to_string(),
                    expected: expected_version,
                    found: Some(found.labels_version),
                })
            }

            pub(super) async fn put_bootstrap_token(
                store: &$store,
                token: &ApiTokenRecord,
                binding: &crate::model::BootstrapBinding,
            ) -> Result<(), StoreError> {
                let mut tx = store.begin_write().await?;
                let inserted = insert_api_token(token)?
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db("insert a bootstrap token"));
                match inserted {
                    Err(e) if e.is_unique_violation() => {
                        return Err(StoreError::AlreadyExists {
                            entity: "api token",
                            id: token.name.clone(),
                        });
                    }
                    other => other?,
                };
                sqlx::query(
                    "INSERT INTO agent_bootstrap_bindings
                       (token_id, agent_name, labels, capabilities)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind_id(binding.token_id)
                .bind(binding.agent_name.clone())
                .bind(model::to_json(
                    "agent_bootstrap_bindings.labels",
                    &binding.labels,
                )?)
                .bind(model::to_json(
                    "agent_bootstrap_bindings.capabilities",
                    &binding.capabilities,
                )?)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("insert a bootstrap token's binding"))?;
                tx.commit()
                    .await
                    .map_err(StoreError::db("commit a bootstrap token"))
            }

            pub(super) async fn bootstrap_binding(
                store: &$store,
                token_id: uuid::Uuid,
            ) -> Result<Option<crate::model::BootstrapBinding>, StoreError> {
                // From the writer: a registration may follow the token's creation at once.
                <$store>::fetch_opt(
                    &store.writer,
                    sqlx::query("SELECT * FROM agent_bootstrap_bindings WHERE token_id = $1")
                        .bind_id(token_id),
                    "look up a bootstrap token's binding",
                    rows::bootstrap_binding,
                )
                .await
            }

            pub(super) async fn list_bootstrap_bindings(
                store: &$store,
            ) -> Result<Vec<crate::model::BootstrapBinding>, StoreError> {
                let query = sqlx::query("SELECT * FROM agent_bootstrap_bindings");
                store
                    .read_all(
                        query,
                        "list bootstrap token bindings",
                        rows::bootstrap_binding,
                    )
                    .await
            }

            pub(super) async fn spend_bootstrap_token(
                store: &$store,
                hash: &deploy_core::Digest,
                now: deploy_core::Timestamp,
            ) -> Result<Option<ApiTokenRecord>, StoreError> {
                <$store>::fetch_opt(
                    &store.writer,
                    sqlx::query(
                        "UPDATE api_tokens SET revoked_at = $1
                     WHERE token_hash = $2 AND scopes = $3 AND revoked_at IS NULL
                       AND (expires_at IS NULL OR expires_at > $1)
                     RETURNING *",
                    )
                    .bind(model::millis(now)?)
                    .bind(hash.as_str().to_owned())
                    .bind(model::to_json(
                        "api_tokens.scopes",
                        &[crate::model::AGENT_BOOTSTRAP_SCOPE],
                    )?),
                    "spend an agent bootstrap token",
                    rows::api_token,
                )
                .await
            }

            pub(super) async fn unspend_bootstrap_token(
                store: &$store,
                id: uuid::Uuid,
                spent_at: deploy_core::Timestamp,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "UPDATE api_tokens SET revoked_at = NULL
                     WHERE id = $1 AND scopes = $2 AND revoked_at = $3",
                )
                .bind_id(id)
                .bind(model::to_json(
                    "api_tokens.scopes",
                    &[crate::model::AGENT_BOOTSTRAP_SCOPE],
                )?)
                .bind(model::millis(spent_at)?)
                .execute(&store.writer)
                .await
                .map_err(StoreError::db("unspend an agent bootstrap token"))?;
                Ok(done.rows_affected() > 0)
            }
        }
    };
}

pub(crate) use agents_sql;
