//! The group committer of `PgStore`: the task transitions queued while one batch commits are written together by one statement, one commit, one WAL flush.
//!
//! A commit per transition would make each wait for its own WAL flush, with at most
//! a pool's worth of commits in flight (docs/benchmarks.md, "Engine: orchestration
//! overhead"). A committer task takes every transition queued while the previous
//! batch was being written and writes them in one statement: the compare-and-swap
//! update of each task and its `job_events` row, in one implicit transaction. Each
//! caller returns only after the commit that holds its transition, so "returned"
//! still means "durable"; a transition refused by its version (a conflict) writes
//! nothing and does not hold back the others of its batch.

use std::collections::{HashMap, HashSet};

use deploy_core::{DeploymentTask, TaskId, TaskStatus};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool, Postgres};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::errors::StoreError;
use crate::model;
use crate::rows::{self, RowExt};
use crate::sql::{TaskEventRequest, apply_task_request};

/// Most task transitions in one batch (the engine keeps `parallelism` in flight per job).
const MAX_BATCH: usize = 256;

/// Most tasks the committer remembers as it committed them (see [`Written`]).
const WRITTEN_CAP: usize = 16_384;

/// A queued task transition and where to send its outcome.
#[derive(Debug)]
pub(crate) struct Pending {
    request: TaskEventRequest,
    reply: oneshot::Sender<Result<DeploymentTask, StoreError>>,
}

/// Tasks as the committer last committed them, by id. Every write of a task row that
/// a transition depends on bumps its version (`append_log` touches only `log_seq`), so
/// a remembered task at the version a transition expects is the stored row, and the
/// committer applies the event to it without reading the row again. The update still
/// compares the version, so a write by another replica or by `save_task` makes it a
/// conflict, never a lost update. Only committed writes are remembered; a failed batch
/// forgets everything.
type Written = HashMap<TaskId, DeploymentTask>;

/// Starts the committer over `pool`; it runs until every sender is dropped.
pub(crate) fn start(pool: PgPool) -> mpsc::Sender<Pending> {
    let (committer, queue) = mpsc::channel(MAX_BATCH * 4);
    tokio::spawn(run(pool, queue));
    committer
}

/// Queues `request` for the committer and waits for its commit.
pub(crate) async fn commit(
    committer: &mpsc::Sender<Pending>,
    request: TaskEventRequest,
) -> Result<DeploymentTask, StoreError> {
    let (reply, outcome) = oneshot::channel();
    let stopped = || StoreError::Database {
        action: "commit a task transition",
        source: sqlx::Error::PoolClosed,
    };
    committer
        .send(Pending { request, reply })
        .await
        .map_err(|_| stopped())?;
    outcome.await.map_err(|_| stopped())?
}

async fn run(pool: PgPool, mut queue: mpsc::Receiver<Pending>) {
    let mut written = Written::new();
    // A transition of a task already in the batch being gathered starts the next one:
    // one statement updates each row at most once.
    let mut held: Option<Pending> = None;
    // Kept from one batch to the next while transitions keep coming (the pool pings a
    // connection at every acquire: a round trip per batch), given back when idle.
    let mut conn: Option<PoolConnection<Postgres>> = None;
    loop {
        let first = match held.take() {
            Some(p) => p,
            None => match queue.try_recv() {
                Ok(p) => p,
                Err(mpsc::error::TryRecvError::Empty) => {
                    conn = None;
                    match queue.recv().await {
                        Some(p) => p,
                        None => return,
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return,
            },
        };
        let mut ids = HashSet::from([first.request.id]);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) if ids.insert(next.request.id) => batch.push(next),
                Ok(next) => {
                    held = Some(next);
                    break;
                }
                Err(_) => break,
            }
        }
        let outcomes = match conn.as_mut() {
            Some(c) => commit_batch(c, &batch, &written).await,
            None => match pool.acquire().await {
                Ok(c) => commit_batch(conn.insert(c), &batch, &written).await,
                Err(e) => Err(StoreError::db("get a write connection")(e)),
            },
        };
        if outcomes.is_err()
            && let Some(mut c) = conn.take()
        {
            // It may be broken (the server went away): the next batch takes a fresh one.
            c.close_on_drop();
        }
        match outcomes {
            Ok(outcomes) => {
                if written.len() + outcomes.len() > WRITTEN_CAP {
                    written.clear();
                }
                for (pending, outcome) in batch.iter().zip(&outcomes) {
                    match outcome {
                        Ok(task) => written.insert(task.id, task.clone()),
                        Err(_) => written.remove(&pending.request.id),
                    };
                }
                for (pending, outcome) in batch.into_iter().zip(outcomes) {
                    // A caller that stopped waiting has nobody to tell.
                    let _ = pending.reply.send(outcome);
                }
            }
            Err(e) => {
                written.clear();
                for pending in batch {
                    let _ = pending.reply.send(Err(copy_for_caller(&e)));
                }
            }
        }
    }
}

/// The batch's error for each of its callers, of the same class: unavailable (the
/// caller may try again later), storage full, or another database error.
fn copy_for_caller(e: &StoreError) -> StoreError {
    let action = "commit a batch of task transitions";
    let message = e.to_string();
    if e.is_storage_full() {
        StoreError::StorageFull {
            action,
            detail: message,
        }
    } else if e.is_unavailable() {
        StoreError::Database {
            action,
            source: sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                message,
            )),
        }
    } else {
        StoreError::Database {
            action,
            source: sqlx::Error::Protocol(message),
        }
    }
}

/// Every task transition of a batch and its event row, in one statement (one implicit
/// transaction). `$1` the ids, `$2` the expected versions, `$3..$13` the new values of
/// `task_update_sql!`'s columns, `$14` each transition's place in the batch (the order
/// of its event row), `$15..$19` the event columns. Returns the ids updated; a task whose
/// version moved is not updated and gets no event row.
///
/// `t.id = ANY($1)` gives the planner the primary-key lookups: with the join alone it
/// may scan the whole `tasks` table (every job's tasks) per batch, as a hash join.
const BATCH_SQL: &str = "WITH batch AS (
    SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::uuid[], $5::bigint[], $6::bigint[],
                         $7::text[], $8::text[], $9::text[], $10::bigint[], $11::boolean[], $12::bigint[],
                         $13::bigint[], $14::bigint[], $15::uuid[], $16::text[], $17::text[], $18::text[],
                         $19::bigint[])
        AS b (id, expected, status, agent_id, started_at, completed_at, logs, previous_digest, error,
              attempt_number, last_failure_retryable, version, updated_at, ord, job_id, event,
              from_status, cause, at)
 ), updated AS (
    UPDATE tasks t SET status = b.status, agent_id = b.agent_id, started_at = b.started_at,
           completed_at = b.completed_at, logs = b.logs, previous_digest = b.previous_digest,
           error = b.error, attempt_number = b.attempt_number,
           last_failure_retryable = b.last_failure_retryable, version = b.version,
           updated_at = b.updated_at
    FROM batch b WHERE t.id = ANY($1) AND t.id = b.id AND t.version = b.expected
    RETURNING t.id
 ), events AS (
    INSERT INTO job_events (job_id, task_id, event, from_status, to_status, cause, at)
    SELECT b.job_id, b.id, b.event, b.from_status, b.status, b.cause, b.at
    FROM batch b JOIN updated u ON u.id = b.id ORDER BY b.ord
 )
 SELECT id FROM updated";

/// One accepted transition of a batch: the task as it will be written, and its origin.
struct Accepted<'a> {
    ord: usize,
    task: DeploymentTask,
    from: TaskStatus,
    request: &'a TaskEventRequest,
}

/// Writes a batch: reads the tasks not remembered (one query), decides each
/// transition in memory, then writes the accepted ones with their events
/// ([`BATCH_SQL`]). A transition refused (conflict, invalid event, missing task) gets
/// its own error and writes nothing; a failed statement fails the whole batch, and
/// nothing of it is committed.
async fn commit_batch(
    conn: &mut PgConnection,
    batch: &[Pending],
    written: &Written,
) -> Result<Vec<Result<DeploymentTask, StoreError>>, StoreError> {
    let unknown: Vec<Uuid> = batch
        .iter()
        .map(|p| &p.request)
        .filter(|r| remembered(written, r).is_none())
        .map(|r| r.id.into())
        .collect();
    let mut stored: HashMap<TaskId, DeploymentTask> = HashMap::new();
    if !unknown.is_empty() {
        let found = sqlx::query("SELECT * FROM tasks WHERE id = ANY($1)")
            .bind(unknown)
            .fetch_all(&mut *conn)
            .await
            .map_err(StoreError::db("load the tasks of a batch"))?;
        for row in &found {
            let task = rows::task(row)?;
            stored.insert(task.id, task);
        }
    }
    let mut outcomes: Vec<Result<DeploymentTask, StoreError>> = Vec::with_capacity(batch.len());
    let mut accepted = Vec::with_capacity(batch.len());
    for (ord, pending) in batch.iter().enumerate() {
        let request = &pending.request;
        let current = match remembered(written, request) {
            Some(task) => Ok(task.clone()),
            None => stored
                .remove(&request.id)
                .ok_or_else(|| StoreError::NotFound {
                    entity: "task",
                    id: request.id.to_string(),
                }),
        };
        match current.and_then(|task| apply_task_request(task, request)) {
            Ok((task, from)) => {
                // Filled in below once the statement has run.
                outcomes.push(Ok(task.clone()));
                accepted.push(Accepted {
                    ord,
                    task,
                    from,
                    request,
                });
            }
            Err(refused) => outcomes.push(Err(refused)),
        }
    }
    if accepted.is_empty() {
        return Ok(outcomes);
    }
    // Rows are locked in id order, so that two batches (of two replicas) touching the
    // same tasks wait for each other instead of deadlocking.
    accepted.sort_by_key(|a| a.task.id);
    let updated: HashSet<TaskId> = bind_batch(&accepted)?
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::db("apply a batch of task transitions"))?
        .iter()
        .map(|row| model::typed("tasks.id", row.uuid("id")?))
        .collect::<Result<_, StoreError>>()?;
    let missed: Vec<&Accepted<'_>> = accepted
        .iter()
        .filter(|a| !updated.contains(&a.task.id))
        .collect();
    if !missed.is_empty() {
        // The version moved since it was read (another replica, `save_task`): nothing
        // of these was written; each is a conflict naming the version found now.
        let ids: Vec<Uuid> = missed.iter().map(|a| a.task.id.into()).collect();
        let mut found = HashMap::new();
        for row in sqlx::query("SELECT id, version FROM tasks WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(StoreError::db("read the versions of conflicting tasks"))?
        {
            let id: TaskId = model::typed("tasks.id", row.uuid("id")?)?;
            found.insert(id, model::uint("tasks.version", row.i64("version")?)?);
        }
        for a in missed {
            outcomes[a.ord] = Err(StoreError::Conflict {
                entity: "task",
                id: a.task.id.to_string(),
                expected: a.request.expected_version,
                found: found.get(&a.task.id).copied(),
            });
        }
    }
    Ok(outcomes)
}

/// The remembered task for `request`, when it is at the version the request expects.
fn remembered<'w>(written: &'w Written, request: &TaskEventRequest) -> Option<&'w DeploymentTask> {
    written
        .get(&request.id)
        .filter(|t| t.version == request.expected_version)
}

/// Binds the 19 arrays of [`BATCH_SQL`].
fn bind_batch<'q>(
    accepted: &[Accepted<'_>],
) -> Result<sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>, StoreError> {
    let n = accepted.len();
    let mut id = Vec::with_capacity(n);
    let mut expected = Vec::with_capacity(n);
    let mut status = Vec::with_capacity(n);
    let mut agent_id = Vec::with_capacity(n);
    let mut started_at = Vec::with_capacity(n);
    let mut completed_at = Vec::with_capacity(n);
    let mut logs = Vec::with_capacity(n);
    let mut previous_digest = Vec::with_capacity(n);
    let mut error = Vec::with_capacity(n);
    let mut attempt_number = Vec::with_capacity(n);
    let mut retryable = Vec::with_capacity(n);
    let mut version = Vec::with_capacity(n);
    let mut updated_at = Vec::with_capacity(n);
    let mut ord = Vec::with_capacity(n);
    let mut job_id = Vec::with_capacity(n);
    let mut event = Vec::with_capacity(n);
    let mut from_status = Vec::with_capacity(n);
    let mut cause = Vec::with_capacity(n);
    let mut at = Vec::with_capacity(n);
    for a in accepted {
        let (t, r) = (&a.task, a.request);
        id.push(Uuid::from(t.id));
        expected.push(model::int("tasks.version", r.expected_version)?);
        status.push(t.status.as_str());
        agent_id.push(t.agent_id.map(Uuid::from));
        started_at.push(model::opt_millis(t.started_at)?);
        completed_at.push(model::opt_millis(t.completed_at)?);
        logs.push(t.logs.clone());
        previous_digest.push(t.previous_digest.as_ref().map(|d| d.as_str().to_owned()));
        error.push(t.error.clone());
        attempt_number.push(i64::from(t.attempt_number));
        retryable.push(t.last_failure_retryable);
        version.push(model::int("tasks.version", t.version)?);
        updated_at.push(model::millis(t.updated_at)?);
        ord.push(model::int("batch position", a.ord as u64)?);
        job_id.push(Uuid::from(t.job_id));
        event.push(r.event.as_str());
        from_status.push(a.from.as_str());
        cause.push(r.cause.clone());
        at.push(model::millis(r.now)?);
    }
    Ok(sqlx::query(BATCH_SQL)
        .bind(id)
        .bind(expected)
        .bind(status)
        .bind(agent_id)
        .bind(started_at)
        .bind(completed_at)
        .bind(logs)
        .bind(previous_digest)
        .bind(error)
        .bind(attempt_number)
        .bind(retryable)
        .bind(version)
        .bind(updated_at)
        .bind(ord)
        .bind(job_id)
        .bind(event)
        .bind(from_status)
        .bind(cause)
        .bind(at))
}
