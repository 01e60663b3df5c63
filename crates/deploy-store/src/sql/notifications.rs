//! The SQL of webhook notifications: subscriptions, deliveries written in the transaction of the change that raised them, the dispatcher's claim and its attempts.

/// The claim of due deliveries; `$lock` is the dialect's row-locking clause (`FOR UPDATE
/// SKIP LOCKED` on PostgreSQL, nothing on SQLite whose single writer serialises
/// claimers). The outer condition is re-checked on the locked row, so one claimer gets
/// each delivery. A delivery waits while an earlier one of its subscription and job (or
/// promotion) is pending: that is what keeps a job's events in order at the receiver.
/// A subscription has at most `$5` deliveries in flight (leased, counting this claim's):
/// a receiver that hangs holds that many of the dispatcher's slots, never all of them.
macro_rules! notification_claim_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE notification_deliveries SET lease_owner = $1, lease_until = $2
             WHERE seq IN (
                 SELECT c.seq FROM (
                     SELECT d.seq,
                       ROW_NUMBER() OVER (PARTITION BY d.subscription_id ORDER BY d.seq) AS rn,
                       (SELECT COUNT(*) FROM notification_deliveries f
                        WHERE f.subscription_id = d.subscription_id
                          AND f.status = 'pending' AND f.lease_until >= $3) AS busy
                     FROM (
                         SELECT g.seq, g.subscription_id FROM notification_deliveries g
                         WHERE g.status = 'pending' AND g.next_attempt_at <= $3
                           AND (g.lease_until IS NULL OR g.lease_until < $3)
                           AND NOT EXISTS (
                               SELECT 1 FROM notification_deliveries e
                               WHERE e.subscription_id = g.subscription_id
                                 AND e.ordering_key = g.ordering_key
                                 AND e.status = 'pending' AND e.seq < g.seq) ",
            $lock,
            "
                     ) d
                 ) c
                 WHERE c.rn + c.busy <= $5
                 ORDER BY c.seq LIMIT $4)
               AND status = 'pending' AND (lease_until IS NULL OR lease_until < $3)
             RETURNING *"
        )
    };
}
pub(crate) use notification_claim_sql;

/// Expands, for `$store` over `$db`, `enqueue_notifications` (called inside the
/// transactions of job transitions and promotion requests) and the `Store` methods
/// on notifications (module `notifications_sql`).
macro_rules! notifications_sql {
    ($store:ty, $db:ty) => {
        /// Writes, inside the caller's transaction, one delivery of `event` per live
        /// subscription of `environment` that asked for it. `source_key` names the change
        /// (a replayed write adds nothing: unique per subscription), `ordering_key` the
        /// job or promotion whose deliveries are sent in order.
        #[expect(
            clippy::too_many_arguments,
            reason = "one column per argument of the delivery row"
        )]
        async fn enqueue_notifications(
            conn: &mut Conn,
            environment: deploy_core::EnvironmentId,
            event: deploy_core::NotificationEvent,
            source_key: &str,
            job: Option<deploy_core::JobId>,
            promotion: Option<deploy_core::PromotionId>,
            detail: &str,
            at: deploy_core::Timestamp,
        ) -> Result<(), StoreError> {
            // On PostgreSQL the rows are share-locked until the caller commits: a removal
            // (which updates them) waits for this transaction, then gives up what it wrote,
            // so a removed subscription is never left with a pending delivery.
            let sql = if <$store>::SHARED {
                "SELECT id, events FROM notification_subscriptions
                 WHERE environment_id = $1 AND deleted_at IS NULL FOR SHARE"
            } else {
                "SELECT id, events FROM notification_subscriptions
                 WHERE environment_id = $1 AND deleted_at IS NULL"
            };
            let subscriptions = sqlx::query(sql)
                .bind_id(environment)
                .fetch_all(&mut *conn)
                .await
                .map_err(StoreError::db("read the notification subscriptions"))?;
            let ordering_key = match (job, promotion) {
                (Some(job), _) => format!("job:{job}"),
                (None, Some(promotion)) => format!("promotion:{promotion}"),
                (None, None) => source_key.to_owned(),
            };
            for row in &subscriptions {
                let wanted = row.string("events")?;
                if !wanted.split_whitespace().any(|e| e == event.as_str()) {
                    continue;
                }
                let subscription = row.uuid("id")?;
                sqlx::query(
                    "INSERT INTO notification_deliveries (id, subscription_id, environment_id,
                       source_key, ordering_key, event, job_id, promotion_id, detail,
                       occurred_at, status, attempts, next_attempt_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', 0, $10)
                     ON CONFLICT (subscription_id, source_key) DO NOTHING",
                )
                .bind_id(deploy_core::delivery_id(subscription, source_key))
                .bind_id(subscription)
                .bind_id(environment)
                .bind(source_key.to_owned())
                .bind(ordering_key.clone())
                .bind(event.as_str())
                .bind_opt_id(job)
                .bind_opt_id(promotion)
                .bind(detail.to_owned())
                .bind(model::millis(at)?)
                .execute(&mut *conn)
                .await
                .map_err(StoreError::db("write a notification delivery"))?;
            }
            Ok(())
        }

        /// The `Store` methods on notifications.
        mod notifications_sql {
            use super::*;
            use crate::notifications::{
                AttemptOutcome, DeliveryFilter, NotificationAttempt, NotificationDelivery,
                NotificationStatus, NotificationSubscription,
            };

            pub(super) async fn put_subscription(
                store: &$store,
                s: &NotificationSubscription,
                max_live: u32,
            ) -> Result<bool, StoreError> {
                let mut tx = store.begin_write().await?;
                // The environment's row is locked on PostgreSQL so two admins adding at
                // once count one after the other (SQLite's single writer does that).
                if <$store>::SHARED {
                    sqlx::query("SELECT id FROM environments WHERE id = $1 FOR UPDATE")
                        .bind_id(s.environment_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::db("lock a subscription's environment"))?;
                }
                let live = sqlx::query(
                    "SELECT COUNT(*) AS n FROM notification_subscriptions
                     WHERE environment_id = $1 AND deleted_at IS NULL",
                )
                .bind_id(s.environment_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::db("count an environment's subscriptions"))?
                .i64("n")?;
                if live >= i64::from(max_live) {
                    return Ok(false);
                }
                let query = sqlx::query(
                    "INSERT INTO notification_subscriptions (id, environment_id, url, events,
                       key_id, sealed_key, created_at, created_by, deleted_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind_id(s.id)
                .bind_id(s.environment_id)
                .bind(s.url.clone())
                .bind(crate::notifications::events_text(&s.events))
                .bind(s.key_id.clone())
                .bind(s.sealed_key.clone())
                .bind(model::millis(s.created_at)?)
                .bind(s.created_by.clone())
                .bind(model::opt_millis(s.deleted_at)?);
                <$store>::insert_one_on(
                    &mut *tx,
                    query,
                    "notification subscription",
                    s.id.to_string(),
                )
                .await?;
                tx.commit()
                    .await
                    .map_err(StoreError::db("commit a notification subscription"))?;
                Ok(true)
            }

            pub(super) async fn get_subscription(
                store: &$store,
                id: deploy_core::SubscriptionId,
            ) -> Result<Option<NotificationSubscription>, StoreError> {
                <$store>::fetch_opt(
                    &store.reader,
                    sqlx::query("SELECT * FROM notification_subscriptions WHERE id = $1")
                        .bind_id(id),
                    "read a notification subscription",
                    crate::notifications::subscription,
                )
                .await
            }

            pub(super) async fn list_subscriptions(
                store: &$store,
                environment: Option<deploy_core::EnvironmentId>,
            ) -> Result<Vec<NotificationSubscription>, StoreError> {
                let query = sqlx::query(
                    "SELECT * FROM notification_subscriptions
                     WHERE deleted_at IS NULL AND ($1 IS NULL OR environment_id = $1)
                     ORDER BY created_at, id",
                )
                .bind_opt_id(environment);
                store
                    .read_all(
                        query,
                        "list notification subscriptions",
                        crate::notifications::subscription,
                    )
                    .await
            }

            pub(super) async fn remove_subscription(
                store: &$store,
                id: deploy_core::SubscriptionId,
                now: deploy_core::Timestamp,
            ) -> Result<bool, StoreError> {
                let at = model::millis(now)?;
                let mut tx = store.begin_write().await?;
                let done = sqlx::query(
                    "UPDATE notification_subscriptions SET deleted_at = $1
                     WHERE id = $2 AND deleted_at IS NULL",
                )
                .bind(at)
                .bind_id(id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("remove a notification subscription"))?;
                // What was still to send is given up, and says why in its log.
                sqlx::query(
                    "UPDATE notification_deliveries SET status = 'failed', finished_at = $1,
                       last_error = 'the subscription was removed',
                       lease_owner = NULL, lease_until = NULL
                     WHERE subscription_id = $2 AND status = 'pending'",
                )
                .bind(at)
                .bind_id(id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db(
                    "end the deliveries of a removed subscription",
                ))?;
                tx.commit()
                    .await
                    .map_err(StoreError::db("commit a subscription's removal"))?;
                Ok(done.rows_affected() > 0)
            }

            pub(super) async fn replace_key(
                store: &$store,
                id: deploy_core::SubscriptionId,
                old_sealed: Option<String>,
                key_id: &str,
                sealed: &str,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "UPDATE notification_subscriptions SET key_id = $1, sealed_key = $2
                     WHERE id = $3 AND deleted_at IS NULL
                       AND ($4 IS NULL OR sealed_key = $4)",
                )
                .bind(key_id.to_owned())
                .bind(sealed.to_owned())
                .bind_id(id)
                .bind(old_sealed)
                .execute(&store.writer)
                .await
                .map_err(StoreError::db("replace a subscription's signing key"))?;
                Ok(done.rows_affected() > 0)
            }

            pub(super) async fn release_leases(
                store: &$store,
                owner: &str,
            ) -> Result<u64, StoreError> {
                let done = sqlx::query(
                    "UPDATE notification_deliveries SET lease_owner = NULL, lease_until = NULL
                     WHERE lease_owner = $1 AND status = 'pending'",
                )
                .bind(owner.to_owned())
                .execute(&store.writer)
                .await
                .map_err(StoreError::db("release notification delivery leases"))?;
                Ok(done.rows_affected())
            }

            pub(super) async fn prune_deliveries(
                store: &$store,
                before: deploy_core::Timestamp,
            ) -> Result<u64, StoreError> {
                let before = model::millis(before)?;
                let mut tx = store.begin_write().await?;
                sqlx::query(
                    "DELETE FROM notification_attempts WHERE delivery_id IN (
                       SELECT id FROM notification_deliveries
                       WHERE status <> 'pending' AND finished_at < $1)",
                )
                .bind(before)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("prune notification attempts"))?;
                let done = sqlx::query(
                    "DELETE FROM notification_deliveries
                     WHERE status <> 'pending' AND finished_at < $1",
                )
                .bind(before)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("prune notification deliveries"))?;
                tx.commit()
                    .await
                    .map_err(StoreError::db("commit a notification prune"))?;
                Ok(done.rows_affected())
            }

            pub(super) async fn pending_count(store: &$store) -> Result<u64, StoreError> {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM notification_deliveries WHERE status = 'pending'",
                )
                .fetch_one(&store.reader)
                .await
                .map_err(StoreError::db("count pending notification deliveries"))?;
                Ok(u64::try_from(n).unwrap_or(0))
            }

            pub(super) async fn claim_deliveries(
                store: &$store,
                owner: &str,
                now: deploy_core::Timestamp,
                lease: std::time::Duration,
                limit: u32,
                per_subscription: u32,
            ) -> Result<Vec<NotificationDelivery>, StoreError> {
                let sql = if <$store>::SHARED {
                    crate::sql::notification_claim_sql!("FOR UPDATE SKIP LOCKED")
                } else {
                    crate::sql::notification_claim_sql!("")
                };
                let until = now.saturating_add(lease);
                let mut claimed = sqlx::query(sql)
                    .bind(owner.to_owned())
                    .bind(model::millis(until)?)
                    .bind(model::millis(now)?)
                    .bind(i64::from(limit))
                    .bind(i64::from(per_subscription))
                    .fetch_all(&store.writer)
                    .await
                    .map_err(StoreError::db("claim notification deliveries"))?
                    .iter()
                    .map(crate::notifications::delivery)
                    .collect::<Result<Vec<_>, _>>()?;
                claimed.sort_by_key(|d| d.seq);
                Ok(claimed)
            }

            pub(super) async fn record_attempt(
                store: &$store,
                owner: &str,
                outcome: &AttemptOutcome,
            ) -> Result<bool, StoreError> {
                let a = &outcome.attempt;
                let finished = (outcome.status != NotificationStatus::Pending)
                    .then_some(a.at)
                    .map(model::millis)
                    .transpose()?;
                let mut tx = store.begin_write().await?;
                // Only the lease holder records: a replica that lost the lease (it ran
                // past it) leaves the delivery to the one that claimed it since.
                let done = sqlx::query(
                    "UPDATE notification_deliveries SET status = $1, attempts = $2,
                       next_attempt_at = $3, body = COALESCE(body, $4), last_error = $5,
                       finished_at = $6, lease_owner = NULL, lease_until = NULL
                     WHERE id = $7 AND lease_owner = $8 AND status = 'pending'",
                )
                .bind(outcome.status.as_str())
                .bind(i64::from(a.n))
                .bind(model::millis(outcome.next_attempt_at)?)
                .bind(outcome.body.clone())
                .bind(a.error.clone())
                .bind(finished)
                .bind_id(a.delivery_id)
                .bind(owner.to_owned())
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("record a notification attempt"))?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                sqlx::query(
                    "INSERT INTO notification_attempts (delivery_id, n, at, duration_ms,
                       http_status, error)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind_id(a.delivery_id)
                .bind(i64::from(a.n))
                .bind(model::millis(a.at)?)
                .bind(model::int(
                    "notification_attempts.duration_ms",
                    a.duration_ms,
                )?)
                .bind(a.http_status.map(i64::from))
                .bind(a.error.clone())
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("append a notification attempt"))?;
                tx.commit()
                    .await
                    .map_err(StoreError::db("commit a notification attempt"))?;
                Ok(true)
            }

            pub(super) async fn list_deliveries(
                store: &$store,
                filter: &DeliveryFilter,
                limit: u32,
            ) -> Result<Vec<NotificationDelivery>, StoreError> {
                let before = filter.before.map(|b| model::int("before", b)).transpose()?;
                let query = sqlx::query(
                    "SELECT * FROM notification_deliveries
                     WHERE ($1 IS NULL OR subscription_id = $1)
                       AND ($2 IS NULL OR environment_id = $2)
                       AND ($3 IS NULL OR job_id = $3)
                       AND ($4 IS NULL OR seq < $4)
                     ORDER BY seq DESC LIMIT $5",
                )
                .bind_opt_id(filter.subscription)
                .bind_opt_id(filter.environment)
                .bind_opt_id(filter.job)
                .bind(before)
                .bind(i64::from(limit));
                store
                    .read_all(
                        query,
                        "list notification deliveries",
                        crate::notifications::delivery,
                    )
                    .await
            }

            pub(super) async fn get_delivery(
                store: &$store,
                id: uuid::Uuid,
            ) -> Result<Option<NotificationDelivery>, StoreError> {
                <$store>::fetch_opt(
                    &store.reader,
                    sqlx::query("SELECT * FROM notification_deliveries WHERE id = $1").bind_id(id),
                    "read a notification delivery",
                    crate::notifications::delivery,
                )
                .await
            }

            pub(super) async fn attempts(
                store: &$store,
                delivery: uuid::Uuid,
            ) -> Result<Vec<NotificationAttempt>, StoreError> {
                let query = sqlx::query(
                    "SELECT * FROM notification_attempts WHERE delivery_id = $1 ORDER BY n",
                )
                .bind_id(delivery);
                store
                    .read_all(
                        query,
                        "list notification attempts",
                        crate::notifications::attempt,
                    )
                    .await
            }
        }
    };
}

pub(crate) use notifications_sql;
