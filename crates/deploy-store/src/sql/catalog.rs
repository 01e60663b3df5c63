//! The SQL of what deployments are about: environments, targets, releases and promotions.

/// Expands, for `$store` over `$db`, the `Store` methods on environments, targets,
/// releases and promotions (module `catalog_sql`).
macro_rules! catalog_sql {
    ($store:ty, $db:ty) => {
        /// The `Store` methods on environments, targets, releases and promotions.
        mod catalog_sql {
            use super::*;

            pub(super) async fn put_environment(
                store: &$store,
                environment: &deploy_core::Environment,
            ) -> Result<(), StoreError> {
                let query = sqlx::query(
                    "INSERT INTO environments (id, name, spec, created_at, version)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind_id(environment.id)
                .bind(environment.name.as_str().to_owned())
                .bind(model::to_json("environments.spec", environment)?)
                .bind(model::millis(environment.created_at)?)
                .bind(model::int("environments.version", environment.version)?);
                let name = environment.name.as_str();
                match store
                    .insert_one(query, "environment", environment.id.to_string())
                    .await
                {
                    Err(StoreError::AlreadyExists { entity, id }) => {
                        let holder = sqlx::query("SELECT id FROM environments WHERE name = $1")
                            .bind(name.to_owned());
                        Err(store.name_clash(holder, entity, name, id).await)
                    }
                    other => other,
                }
            }

            pub(super) async fn get_environment(
                store: &$store,
                id: deploy_core::EnvironmentId,
            ) -> Result<deploy_core::Environment, StoreError> {
                let query = sqlx::query(
                    "SELECT spec, version FROM environments WHERE id = $1 AND deleted_at IS NULL",
                )
                .bind_id(id);
                store
                    .read_one(query, "environment", id.to_string(), rows::environment)
                    .await
            }

            pub(super) async fn find_environment_by_name(
                store: &$store,
                name: &str,
            ) -> Result<Option<deploy_core::Environment>, StoreError> {
                let query = sqlx::query(
                    "SELECT spec, version FROM environments
                     WHERE name = $1 AND deleted_at IS NULL",
                )
                .bind(name.to_owned());
                Ok(store
                    .read_all(query, "find an environment by name", rows::environment)
                    .await?
                    .pop())
            }

            pub(super) async fn update_environment(
                store: &$store,
                environment: &deploy_core::Environment,
                expected_version: u64,
            ) -> Result<deploy_core::Environment, StoreError> {
                let mut next = environment.clone();
                next.version = expected_version + 1;
                let name = next.name.as_str().to_owned();
                let updated = sqlx::query(
                    "UPDATE environments SET name = $2, spec = $3, version = $4
                     WHERE id = $1 AND version = $5 AND deleted_at IS NULL",
                )
                .bind_id(next.id)
                .bind(name.clone())
                .bind(model::to_json("environments.spec", &next)?)
                .bind(model::int("environments.version", next.version)?)
                .bind(model::int("environments.version", expected_version)?)
                .execute(&store.writer)
                .await
                .map_err(StoreError::db("update an environment"));
                match updated {
                    Err(e) if e.is_unique_violation() => {
                        let holder = sqlx::query("SELECT id FROM environments WHERE name = $1")
                            .bind(name.clone());
                        Err(store
                            .name_clash(holder, "environment", &name, next.id.to_string())
                            .await)
                    }
                    Err(e) => Err(e),
                    Ok(done) if done.rows_affected() == 1 => Ok(next),
                    Ok(_) => {
                        let stored = store.get_environment(next.id).await?;
                        Err(StoreError::Conflict {
                            entity: "environment",
                            id: next.id.to_string(),
                            expected: expected_version,
                            found: Some(stored.version),
                        })
                    }
                }
            }

            pub(super) async fn list_environments(
                store: &$store,
                before: Option<deploy_core::EnvironmentId>,
                limit: u32,
            ) -> Result<Vec<deploy_core::Environment>, StoreError> {
                let query = sqlx::query(
                    "SELECT spec, version FROM environments
                     WHERE deleted_at IS NULL AND ($1 IS NULL OR id < $1)
                     ORDER BY id DESC LIMIT $2",
                )
                .bind_opt_id(before)
                .bind(i64::from(limit));
                store
                    .read_all(query, "list environments", rows::environment)
                    .await
            }

            pub(super) async fn put_target(
                store: &$store,
                target: &deploy_core::Target,
            ) -> Result<(), StoreError> {
                let query = sqlx::query(
                    "INSERT INTO targets (id, environment_id, name, target_type, spec, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind_id(target.id)
                .bind_id(target.environment_id)
                .bind(target.name.as_str().to_owned())
                .bind(target.target_type.as_str())
                .bind(model::to_json("targets.spec", target)?)
                .bind(model::millis(target.created_at)?);
                let name = target.name.as_str();
                match store
                    .insert_one(query, "target", target.id.to_string())
                    .await
                {
                    Err(StoreError::AlreadyExists { entity, id }) => {
                        let holder = sqlx::query(
                            "SELECT id FROM targets WHERE environment_id = $1 AND name = $2",
                        )
                        .bind_id(target.environment_id)
                        .bind(name.to_owned());
                        Err(store.name_clash(holder, entity, name, id).await)
                    }
                    other => other,
                }
            }

            pub(super) async fn list_targets(
                store: &$store,
                environment: deploy_core::EnvironmentId,
            ) -> Result<Vec<deploy_core::Target>, StoreError> {
                let query = sqlx::query(
                    "SELECT spec, version FROM targets
                     WHERE environment_id = $1 AND deleted_at IS NULL
                     ORDER BY name",
                )
                .bind_id(environment);
                store.read_all(query, "list targets", rows::target).await
            }

            pub(super) async fn update_target(
                store: &$store,
                target: &deploy_core::Target,
                expected_version: u64,
            ) -> Result<deploy_core::Target, StoreError> {
                let mut next = target.clone();
                next.version = expected_version + 1;
                let name = next.name.as_str().to_owned();
                let updated = sqlx::query(
                    "UPDATE targets SET name = $2, target_type = $3, spec = $4, version = $5
                     WHERE id = $1 AND version = $6 AND deleted_at IS NULL",
                )
                .bind_id(next.id)
                .bind(name.clone())
                .bind(next.target_type.as_str())
                .bind(model::to_json("targets.spec", &next)?)
                .bind(model::int("targets.version", next.version)?)
                .bind(model::int("targets.version", expected_version)?)
                .execute(&store.writer)
                .await
                .map_err(StoreError::db("update a target"));
                match updated {
                    Err(e) if e.is_unique_violation() => {
                        let holder = sqlx::query(
                            "SELECT id FROM targets WHERE environment_id = $1 AND name = $2",
                        )
                        .bind_id(next.environment_id)
                        .bind(name.clone());
                        Err(store
                            .name_clash(holder, "target", &name, next.id.to_string())
                            .await)
                    }
                    Err(e) => Err(e),
                    Ok(done) if done.rows_affected() == 1 => Ok(next),
                    Ok(_) => {
                        let found = sqlx::query(
                            "SELECT version FROM targets WHERE id = $1 AND deleted_at IS NULL",
                        )
                        .bind_id(next.id)
                        .fetch_optional(&store.reader)
                        .await
                        .map_err(StoreError::db("read a target's version"))?
                        .ok_or_else(|| StoreError::NotFound {
                            entity: "target",
                            id: next.id.to_string(),
                        })?;
                        Err(StoreError::Conflict {
                            entity: "target",
                            id: next.id.to_string(),
                            expected: expected_version,
                            found: Some(model::uint("targets.version", found.i64("version")?)?),
                        })
                    }
                }
            }

            pub(super) async fn delete_target(
                store: &$store,
                id: deploy_core::TargetId,
                now: deploy_core::Timestamp,
            ) -> Result<(), StoreError> {
                // One conditional write: no active job may gain a task on it meanwhile
                // unnoticed (SQLite's single writer; PostgreSQL re-checks on the row).
                let done = sqlx::query(
                    "UPDATE targets
                     SET deleted_at = $2, name = name || '~' || $3, version = version + 1
                     WHERE id = $1 AND deleted_at IS NULL
                       AND NOT EXISTS (
                           SELECT 1 FROM tasks t JOIN jobs j ON j.id = t.job_id
                           WHERE t.target_id = $1
                             AND (j.status IN ('pending', 'preparing', 'running',
                                               'completing', 'rolling_back')
                                  OR j.winding_down))",
                )
                .bind_id(id)
                .bind(model::millis(now)?)
                .bind(id.to_string())
                .execute(&store.writer)
                .await
                .map_err(StoreError::db("delete a target"))?;
                if done.rows_affected() == 1 {
                    return Ok(());
                }
                Err(store
                    .retirement_refused(
                        "target",
                        id,
                        "SELECT j.id FROM tasks t JOIN jobs j ON j.id = t.job_id
                         WHERE t.target_id = $1
                           AND (j.status IN ('pending', 'preparing', 'running',
                                             'completing', 'rolling_back')
                                OR j.winding_down)
                         LIMIT 1",
                    )
                    .await)
            }

            pub(super) async fn delete_environment(
                store: &$store,
                id: deploy_core::EnvironmentId,
                now: deploy_core::Timestamp,
            ) -> Result<(), StoreError> {
                let mut tx = store.begin_write().await?;
                let done = sqlx::query(
                    "UPDATE environments
                     SET deleted_at = $2, name = name || '~' || $3, version = version + 1
                     WHERE id = $1 AND deleted_at IS NULL
                       AND NOT EXISTS (
                           SELECT 1 FROM jobs
                           WHERE environment_id = $1
                             AND (status IN ('pending', 'preparing', 'running',
                                             'completing', 'rolling_back')
                                  OR winding_down))",
                )
                .bind_id(id)
                .bind(model::millis(now)?)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("delete an environment"))?;
                if done.rows_affected() == 1 {
                    sqlx::query(
                        "UPDATE targets
                         SET deleted_at = $2, name = name || '~' || id,
                             version = version + 1
                         WHERE environment_id = $1 AND deleted_at IS NULL",
                    )
                    .bind_id(id)
                    .bind(model::millis(now)?)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db("delete an environment's targets"))?;
                    // Its webhook subscriptions end with it, giving up what is pending.
                    sqlx::query(
                        "UPDATE notification_deliveries SET status = 'failed', finished_at = $2,
                           last_error = 'the environment was deleted',
                           lease_owner = NULL, lease_until = NULL
                         WHERE environment_id = $1 AND status = 'pending'",
                    )
                    .bind_id(id)
                    .bind(model::millis(now)?)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db("end an environment's webhook deliveries"))?;
                    sqlx::query(
                        "UPDATE notification_subscriptions SET deleted_at = $2
                         WHERE environment_id = $1 AND deleted_at IS NULL",
                    )
                    .bind_id(id)
                    .bind(model::millis(now)?)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db("end an environment's webhook subscriptions"))?;
                    return tx
                        .commit()
                        .await
                        .map_err(StoreError::db("commit an environment's deletion"));
                }
                drop(tx);
                Err(store
                    .retirement_refused(
                        "environment",
                        id,
                        "SELECT id FROM jobs
                         WHERE environment_id = $1
                           AND (status IN ('pending', 'preparing', 'running', 'completing',
                                           'rolling_back')
                                OR winding_down)
                         LIMIT 1",
                    )
                    .await)
            }

            pub(super) async fn archive_release(
                store: &$store,
                id: deploy_core::ReleaseId,
                now: deploy_core::Timestamp,
            ) -> Result<deploy_core::Release, StoreError> {
                let done = sqlx::query(
                    "UPDATE releases SET archived_at = COALESCE(archived_at, $2) WHERE id = $1",
                )
                .bind_id(id)
                .bind(model::millis(now)?)
                .execute(&store.writer)
                .await
                .map_err(StoreError::db("archive a release"))?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound {
                        entity: "release",
                        id: id.to_string(),
                    });
                }
                store.get_release(id).await
            }

            pub(super) async fn put_release(
                store: &$store,
                release: &deploy_core::Release,
            ) -> Result<(), StoreError> {
                let mut tx = store.begin_write().await?;
                let inserted = sqlx::query(
                    "INSERT INTO releases (id, name, created_at, template)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind_id(release.id)
                .bind(release.name.as_str().to_owned())
                .bind(model::millis(release.created_at)?)
                .bind(release.template.as_ref().map(|t| t.content.clone()))
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("insert a release"));
                match inserted {
                    Err(e) if e.is_unique_violation() => {
                        drop(tx);
                        let name = release.name.as_str();
                        let holder = sqlx::query("SELECT id FROM releases WHERE name = $1")
                            .bind(name.to_owned());
                        return Err(store
                            .name_clash(holder, "release", name, release.id.to_string())
                            .await);
                    }
                    other => other?,
                };
                for (position, c) in release.components.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO release_components
                           (release_id, position, component_id, name, image, digest)
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind_id(release.id)
                    .bind(model::int("release_components.position", position as u64)?)
                    .bind_id(c.id)
                    .bind(c.name.as_str().to_owned())
                    .bind(c.image.to_string())
                    .bind(c.digest().as_str().to_owned())
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db("insert a release component"))?;
                }
                tx.commit()
                    .await
                    .map_err(StoreError::db("commit a release"))
            }

            pub(super) async fn list_releases(
                store: &$store,
                before: Option<deploy_core::ReleaseId>,
                limit: u32,
            ) -> Result<Vec<deploy_core::Release>, StoreError> {
                let ids: Vec<deploy_core::ReleaseId> = sqlx::query(
                    "SELECT id FROM releases WHERE ($1 IS NULL OR id < $1)
                     ORDER BY id DESC LIMIT $2",
                )
                .bind_opt_id(before)
                .bind(i64::from(limit))
                .fetch_all(&store.reader)
                .await
                .map_err(StoreError::db("list releases"))?
                .iter()
                .map(rows::release_id)
                .collect::<Result<_, StoreError>>()?;
                let mut releases = Vec::with_capacity(ids.len());
                for id in ids {
                    releases.push(store.get_release(id).await?);
                }
                Ok(releases)
            }

            pub(super) async fn find_release_by_name(
                store: &$store,
                name: &str,
            ) -> Result<Option<deploy_core::Release>, StoreError> {
                let id = <$store>::fetch_opt(
                    &store.reader,
                    sqlx::query("SELECT id FROM releases WHERE name = $1").bind(name.to_owned()),
                    "find a release by name",
                    rows::release_id,
                )
                .await?;
                match id {
                    Some(id) => Ok(Some(store.get_release(id).await?)),
                    None => Ok(None),
                }
            }

            pub(super) async fn get_release(
                store: &$store,
                id: deploy_core::ReleaseId,
            ) -> Result<deploy_core::Release, StoreError> {
                let mut conn = store.read_conn().await?;
                let row = sqlx::query("SELECT * FROM releases WHERE id = $1")
                    .bind_id(id)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(StoreError::db("load a release"))?
                    .ok_or_else(|| StoreError::NotFound {
                        entity: "release",
                        id: id.to_string(),
                    })?;
                let components = sqlx::query(
                    "SELECT * FROM release_components WHERE release_id = $1 ORDER BY position",
                )
                .bind_id(id)
                .fetch_all(&mut *conn)
                .await
                .map_err(StoreError::db("load release components"))?
                .iter()
                .map(rows::component)
                .collect::<Result<Vec<_>, _>>()?;
                rows::release(&row, components)
            }

            fn promotion_insert(
                p: &deploy_core::Promotion,
            ) -> Result<
                sqlx::query::Query<'static, $db, <$db as sqlx::Database>::Arguments<'static>>,
                StoreError,
            > {
                Ok(sqlx::query(
                    "INSERT INTO promotions (id, release_id, environment_id, status, requested_by,
                       decided_by, requested_at, decided_at, requested_by_token, approvals,
                       rejection_reason, version)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind_id(p.id)
                .bind_id(p.release_id)
                .bind_id(p.environment_id)
                .bind(p.status.as_str())
                .bind(p.requested_by.clone())
                .bind(p.decided_by.clone())
                .bind(model::millis(p.requested_at)?)
                .bind(model::opt_millis(p.decided_at)?)
                .bind(p.requested_by_token.map(|t| t.to_string()))
                .bind(model::to_json("promotions.approvals", &p.approvals)?)
                .bind(p.rejection_reason.clone())
                .bind(model::int("promotions.version", p.version)?))
            }

            pub(super) async fn put_promotion(
                store: &$store,
                p: &deploy_core::Promotion,
            ) -> Result<(), StoreError> {
                let query = promotion_insert(p)?;
                store.insert_one(query, "promotion", p.id.to_string()).await
            }

            pub(super) async fn put_promotion_awaiting_approval(
                store: &$store,
                p: &deploy_core::Promotion,
            ) -> Result<(), StoreError> {
                // Its `approval.requested` deliveries are written in the same transaction,
                // so none is lost and none sent for a request that was not stored.
                let query = promotion_insert(p)?;
                let mut tx = store.begin_write().await?;
                <$store>::insert_one_on(&mut *tx, query, "promotion", p.id.to_string()).await?;
                let detail = format!("requested by {}", p.requested_by);
                enqueue_notifications(
                    &mut tx,
                    p.environment_id,
                    deploy_core::NotificationEvent::ApprovalRequested,
                    &format!("promotion:{}", p.id),
                    None,
                    Some(p.id),
                    &detail,
                    p.requested_at,
                )
                .await?;
                tx.commit()
                    .await
                    .map_err(StoreError::db("commit a promotion request"))
            }

            pub(super) async fn get_promotion(
                store: &$store,
                id: deploy_core::PromotionId,
            ) -> Result<deploy_core::Promotion, StoreError> {
                let query = sqlx::query("SELECT * FROM promotions WHERE id = $1").bind_id(id);
                store
                    .read_one(query, "promotion", id.to_string(), rows::promotion)
                    .await
            }

            pub(super) async fn save_promotion(
                store: &$store,
                p: &deploy_core::Promotion,
            ) -> Result<deploy_core::Promotion, StoreError> {
                let mut next = p.clone();
                next.version = p.version + 1;
                let done = sqlx::query(
                    "UPDATE promotions
                     SET status = $2, decided_by = $3, decided_at = $4, approvals = $5,
                       rejection_reason = $6, version = $7
                     WHERE id = $1 AND version = $8",
                )
                .bind_id(p.id)
                .bind(p.status.as_str())
                .bind(p.decided_by.clone())
                .bind(model::opt_millis(p.decided_at)?)
                .bind(model::to_json("promotions.approvals", &p.approvals)?)
                .bind(p.rejection_reason.clone())
                .bind(model::int("promotions.version", next.version)?)
                .bind(model::int("promotions.version", p.version)?)
                .execute(&store.writer)
                .await
                .map_err(StoreError::db("save a promotion"))?;
                if done.rows_affected() == 0 {
                    let stored = store.get_promotion(p.id).await?;
                    return Err(StoreError::Conflict {
                        entity: "promotion",
                        id: p.id.to_string(),
                        expected: p.version,
                        found: Some(stored.version),
                    });
                }
                Ok(next)
            }

            pub(super) async fn list_promotions(
                store: &$store,
                environment: Option<deploy_core::EnvironmentId>,
                status: Option<deploy_core::PromotionStatus>,
                before: Option<deploy_core::PromotionId>,
                limit: u32,
            ) -> Result<Vec<deploy_core::Promotion>, StoreError> {
                let query = sqlx::query(
                    "SELECT * FROM promotions
                     WHERE ($1 IS NULL OR environment_id = $1)
                       AND ($2 IS NULL OR status = $2)
                       AND ($3 IS NULL OR id < $3)
                     ORDER BY id DESC LIMIT $4",
                )
                .bind_opt_id(environment)
                .bind(status.map(|s| s.as_str().to_owned()))
                .bind_opt_id(before)
                .bind(i64::from(limit));
                store
                    .read_all(query, "list promotions", rows::promotion)
                    .await
            }

            pub(super) async fn release_completed_in(
                store: &$store,
                release: deploy_core::ReleaseId,
                environment: deploy_core::EnvironmentId,
            ) -> Result<bool, StoreError> {
                let found = sqlx::query(
                    "SELECT id FROM jobs
                     WHERE release_id = $1 AND environment_id = $2 AND status = 'completed'
                     LIMIT 1",
                )
                .bind_id(release)
                .bind_id(environment)
                .fetch_optional(&store.reader)
                .await
                .map_err(StoreError::db("look up a completed job of a release"))?;
                Ok(found.is_some())
            }

            pub(super) async fn environments_where_release_completed(
                store: &$store,
                release: deploy_core::ReleaseId,
            ) -> Result<Vec<deploy_core::EnvironmentId>, StoreError> {
                // The release's jobs through `jobs_by_release`: as many as it was deployed.
                let query = sqlx::query(
                    "SELECT DISTINCT environment_id FROM jobs
                     WHERE release_id = $1 AND status = 'completed'
                     ORDER BY environment_id",
                )
                .bind_id(release);
                store
                    .read_all(
                        query,
                        "list the environments where a release completed",
                        rows::job_environment_id,
                    )
                    .await
            }
        }
    };
}

pub(crate) use catalog_sql;
