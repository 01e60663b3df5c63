//! The SQL of the agent relay: deliveries, relayed log lines and agents' polls, shared between replicas (the records are in `relay.rs`).

/// Expands, for `$store` over `$db`, the `Store` methods of the agent relay (module
/// `relay_sql`).
macro_rules! relay_sql {
    ($store:ty, $db:ty) => {
        /// The `Store` methods of the agent relay.
        mod relay_sql {
            use super::*;

            pub(super) async fn put_deliveries(
                store: &$store,
                deliveries: &[crate::relay::DeliveryRecord],
            ) -> Result<(), StoreError> {
                if deliveries.is_empty() {
                    return Ok(());
                }
                let mut tx = store.begin_write().await?;
                // One statement per chunk of rows: a burst of dispatches is a few round
                // trips, not one per key. A key already written (a resumed attempt)
                // keeps its row and its state.
                for chunk in deliveries.chunks(crate::relay::ROWS_PER_STATEMENT) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO agent_deliveries (task_id, attempt, agent_id, payload, state,
                           result, log_seq, created_at, finished_at) ",
                    );
                    let mut failed = None;
                    q.push_values(chunk, |mut row, d| {
                        let (log_seq, created, finished) = match (
                            model::int("log_seq", d.log_seq),
                            model::millis(d.created_at),
                            model::opt_millis(d.finished_at),
                        ) {
                            (Ok(a), Ok(b), Ok(c)) => (a, b, c),
                            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                                failed = Some(e);
                                (0, 0, None)
                            }
                        };
                        row.push_bind(d.task_id.to_string())
                            .push_bind(i64::from(d.attempt))
                            .push_bind(d.agent_id.to_string())
                            .push_bind(d.payload.clone())
                            .push_bind(d.state.as_str())
                            .push_bind(d.result.clone())
                            .push_bind(log_seq)
                            .push_bind(created)
                            .push_bind(finished);
                    });
                    if let Some(e) = failed {
                        return Err(e);
                    }
                    q.push(" ON CONFLICT (task_id, attempt) DO NOTHING");
                    q.build()
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::db("write agent deliveries"))?;
                }
                tx.commit()
                    .await
                    .map_err(StoreError::db("commit agent deliveries"))
            }

            pub(super) async fn finish_deliveries(
                store: &$store,
                ends: &[crate::relay::DeliveryEnd],
            ) -> Result<Vec<bool>, StoreError> {
                if ends.is_empty() {
                    return Ok(Vec::new());
                }
                // Sequential semantics in one statement per chunk: of two ends of one key
                // in a batch only the first can apply (the second would find it ended).
                let mut seen = std::collections::HashSet::new();
                let first: Vec<bool> = ends
                    .iter()
                    .map(|e| seen.insert((e.task_id, e.attempt)))
                    .collect();
                let mut ended = std::collections::HashSet::new();
                let mut tx = store.begin_write().await?;
                let unique: Vec<&crate::relay::DeliveryEnd> = ends
                    .iter()
                    .zip(&first)
                    .filter(|(_, f)| **f)
                    .map(|(e, _)| e)
                    .collect();
                for chunk in unique.chunks(crate::relay::ROWS_PER_STATEMENT) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "UPDATE agent_deliveries
                         SET state = v.state, result = v.result, finished_at = v.at FROM (",
                    );
                    for (n, e) in chunk.iter().enumerate() {
                        q.push(if n == 0 {
                            "SELECT "
                        } else {
                            " UNION ALL SELECT "
                        });
                        q.push("CAST(")
                            .push_bind(e.task_id.to_string())
                            .push(" AS TEXT) AS task_id, ");
                        q.push("CAST(")
                            .push_bind(i64::from(e.attempt))
                            .push(" AS BIGINT) AS attempt, ");
                        q.push("CAST(")
                            .push_bind(e.agent_id.map(|a| a.to_string()))
                            .push(" AS TEXT) AS agent_id, ");
                        q.push("CAST(")
                            .push_bind(e.state.as_str())
                            .push(" AS TEXT) AS state, ");
                        q.push("CAST(")
                            .push_bind(e.result.clone())
                            .push(" AS TEXT) AS result, ");
                        q.push("CAST(")
                            .push_bind(model::millis(e.at)?)
                            .push(" AS BIGINT) AS at");
                    }
                    q.push(
                        ") AS v
                         WHERE agent_deliveries.task_id = v.task_id
                           AND agent_deliveries.attempt = v.attempt
                           AND agent_deliveries.state = 'queued'
                           AND (v.agent_id IS NULL
                                OR agent_deliveries.agent_id = v.agent_id)
                         RETURNING agent_deliveries.task_id, agent_deliveries.attempt",
                    );
                    for row in q
                        .build()
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(StoreError::db("end agent deliveries"))?
                    {
                        ended.insert((row.string("task_id")?, row.i64("attempt")?));
                    }
                }
                let done = ends
                    .iter()
                    .zip(first)
                    .map(|(e, first)| {
                        first && ended.contains(&(e.task_id.to_string(), i64::from(e.attempt)))
                    })
                    .collect();
                tx.commit()
                    .await
                    .map_err(StoreError::db("commit agent delivery ends"))?;
                Ok(done)
            }

            pub(super) async fn get_delivery(
                store: &$store,
                task: deploy_core::TaskId,
                attempt: u32,
            ) -> Result<Option<crate::relay::DeliveryRecord>, StoreError> {
                <$store>::fetch_opt(
                    &store.writer,
                    sqlx::query(
                        "SELECT * FROM agent_deliveries WHERE task_id = $1 AND attempt = $2",
                    )
                    .bind(task.to_string())
                    .bind(i64::from(attempt)),
                    "read an agent delivery",
                    rows::delivery,
                )
                .await
            }

            pub(super) async fn queued_deliveries(
                store: &$store,
                agent: deploy_core::AgentId,
            ) -> Result<Vec<crate::relay::DeliveryRecord>, StoreError> {
                // The writer pool: a delivery committed a moment ago must be seen (SQLite's
                // readers may hold an older snapshot).
                sqlx::query(
                    "SELECT * FROM agent_deliveries WHERE agent_id = $1 AND state = 'queued'
                     ORDER BY created_at, task_id, attempt",
                )
                .bind(agent.to_string())
                .fetch_all(&store.writer)
                .await
                .map_err(StoreError::db("read an agent's deliveries"))?
                .iter()
                .map(rows::delivery)
                .collect()
            }

            pub(super) async fn append_relay_lines(
                store: &$store,
                task: deploy_core::TaskId,
                attempt: u32,
                agent: deploy_core::AgentId,
                first_seq: u64,
                lines: &[crate::relay::RelayLine],
            ) -> Result<Option<u64>, StoreError> {
                let mut tx = store.begin_write().await?;
                let row = sqlx::query(
                    "SELECT agent_id, state, log_seq FROM agent_deliveries
                     WHERE task_id = $1 AND attempt = $2",
                )
                .bind(task.to_string())
                .bind(i64::from(attempt))
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::db("read an agent delivery"))?;
                let Some(row) = row else {
                    return Ok(None);
                };
                if row.string("agent_id")? != agent.to_string() {
                    return Ok(None);
                }
                let end = first_seq.saturating_add(lines.len() as u64);
                if row.string("state")? != "queued" {
                    // Finished: the lines are no longer wanted; acknowledge them.
                    return Ok(Some(end));
                }
                let stored = model::uint("agent_deliveries.log_seq", row.i64("log_seq")?)?;
                if end <= stored {
                    return Ok(Some(stored));
                }
                // A chunk past `stored` is taken as it is: after a fail-over the lines
                // before it went to the waiting replica directly and are not relayed.
                let skip = usize::try_from(stored.saturating_sub(first_seq)).unwrap_or(usize::MAX);
                for (i, line) in lines.iter().enumerate().skip(skip) {
                    sqlx::query(
                        "INSERT INTO agent_log_lines (task_id, attempt, seq, stream, text)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (task_id, attempt, seq) DO NOTHING",
                    )
                    .bind(task.to_string())
                    .bind(i64::from(attempt))
                    .bind(model::int("seq", first_seq + i as u64)?)
                    .bind(line.stream.clone())
                    .bind(line.text.clone())
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db("relay an agent log line"))?;
                }
                sqlx::query(
                    "UPDATE agent_deliveries SET log_seq = $1
                     WHERE task_id = $2 AND attempt = $3 AND log_seq < $1",
                )
                .bind(model::int("log_seq", end)?)
                .bind(task.to_string())
                .bind(i64::from(attempt))
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("advance a relayed log"))?;
                tx.commit()
                    .await
                    .map_err(StoreError::db("commit relayed log lines"))?;
                Ok(Some(end))
            }

            pub(super) async fn relay_lines(
                store: &$store,
                task: deploy_core::TaskId,
                attempt: u32,
                from_seq: u64,
            ) -> Result<Vec<crate::relay::RelayLine>, StoreError> {
                sqlx::query(
                    "SELECT seq, stream, text FROM agent_log_lines
                     WHERE task_id = $1 AND attempt = $2 AND seq >= $3
                     ORDER BY seq",
                )
                .bind(task.to_string())
                .bind(i64::from(attempt))
                .bind(model::int("from_seq", from_seq)?)
                .fetch_all(&store.writer)
                .await
                .map_err(StoreError::db("read relayed log lines"))?
                .iter()
                .map(rows::relay_line)
                .collect()
            }

            pub(super) async fn record_agent_polls(
                store: &$store,
                polls: &[crate::relay::AgentPoll],
            ) -> Result<(), StoreError> {
                if polls.is_empty() {
                    return Ok(());
                }
                let mut tx = store.begin_write().await?;
                for chunk in polls.chunks(crate::relay::ROWS_PER_STATEMENT) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "UPDATE agents SET last_poll_at = v.at, draining = v.draining FROM (",
                    );
                    for (n, p) in chunk.iter().enumerate() {
                        q.push(if n == 0 {
                            "SELECT "
                        } else {
                            " UNION ALL SELECT "
                        });
                        q.push("CAST(")
                            .push_bind(p.agent_id.to_string())
                            .push(" AS TEXT) AS id, ");
                        q.push("CAST(")
                            .push_bind(model::millis(p.at)?)
                            .push(" AS BIGINT) AS at, ");
                        q.push("CAST(")
                            .push_bind(p.draining)
                            .push(" AS BOOLEAN) AS draining");
                    }
                    // The ids are compared as text (UUID on PostgreSQL, text on SQLite).
                    q.push(
                        ") AS v WHERE CAST(agents.id AS TEXT) = v.id
                           AND (agents.last_poll_at IS NULL
                                OR agents.last_poll_at <= v.at)",
                    );
                    q.build()
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::db("record agent polls"))?;
                }
                tx.commit()
                    .await
                    .map_err(StoreError::db("commit agent polls"))
            }

            pub(super) async fn agent_polls(
                store: &$store,
            ) -> Result<Vec<crate::relay::AgentPoll>, StoreError> {
                sqlx::query(
                    "SELECT id, last_poll_at, draining FROM agents
                     WHERE last_poll_at IS NOT NULL AND revoked_at IS NULL",
                )
                .fetch_all(&store.reader)
                .await
                .map_err(StoreError::db("read agent polls"))?
                .iter()
                .map(rows::agent_poll)
                .collect()
            }

            pub(super) async fn prune_deliveries(
                store: &$store,
                finished_before: deploy_core::Timestamp,
                queued_before: deploy_core::Timestamp,
            ) -> Result<u64, StoreError> {
                let (finished, queued) = (
                    model::millis(finished_before)?,
                    model::millis(queued_before)?,
                );
                let mut tx = store.begin_write().await?;
                sqlx::query(
                    "DELETE FROM agent_log_lines WHERE EXISTS (
                         SELECT 1 FROM agent_deliveries d
                         WHERE d.task_id = agent_log_lines.task_id
                           AND d.attempt = agent_log_lines.attempt
                           AND ((d.state <> 'queued' AND d.finished_at < $1)
                                OR (d.state = 'queued' AND d.created_at < $2)))",
                )
                .bind(finished)
                .bind(queued)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("prune relayed log lines"))?;
                let done = sqlx::query(
                    "DELETE FROM agent_deliveries
                     WHERE (state <> 'queued' AND finished_at < $1)
                        OR (state = 'queued' AND created_at < $2)",
                )
                .bind(finished)
                .bind(queued)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("prune agent deliveries"))?;
                tx.commit()
                    .await
                    .map_err(StoreError::db("commit a relay prune"))?;
                Ok(done.rows_affected())
            }
        }
    };
}

pub(crate) use relay_sql;
