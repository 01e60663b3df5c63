//! Closing a sqlx pool so that every connection it opened is closed when it returns.
//!
//! `sqlx::Pool::close` (0.8.6) can return with a connection still open, and for
//! SQLite an open connection is an open database file: a restore then finds the
//! database busy. Two behaviours of sqlx cause it (sqlx issue #3217, fixed upstream
//! by sqlx PR #3952, which no 0.8 release has; `close_pool` can become a single
//! `close` on a release that has it):
//!
//! - a connection dropped by its user goes back to the pool in a spawned task that
//!   checks whether the pool is closed, then pings the connection, then puts it in
//!   the idle queue without checking again. When `close` starts during that ping it
//!   finds the queue empty, waits for the connection's permit, and returns once the
//!   connection has been put back idle: nothing closes it afterwards;
//! - `close` waits for `1..=max_connections` permits in turn, and closing an idle
//!   connection gives back a permit that connection had given back already, so it
//!   can return while a connection is still checked out.
//!
//! CI saw the first: a store closed right after a read kept its reader connection,
//! and a restore after it was refused for six seconds. [`close_pool`] calls `close`
//! again until the pool counts no connection, so what came back idle late is closed
//! too. `size()` counts a connection from before it is opened until its close is
//! done; only sqlx's hard close (a connection that failed its ping) and a cancelled
//! connect stop counting a moment before the worker thread lets go of the file,
//! which the restore's retries cover.

use std::time::Duration;

use sqlx::{Database, Pool};

/// How long [`close_pool`] waits for connections still in use before giving up on
/// them (they close when their user drops them; the pool is closed already).
const PATIENCE: Duration = Duration::from_secs(10);

/// Closes `pool` (named `what` in the warning) and waits until none of its
/// connections is open, for at most [`PATIENCE`]; a connection still held by a
/// caller after that is left to close when it is dropped, with a warning.
pub(crate) async fn close_pool<DB: Database>(pool: &Pool<DB>, what: &str) {
    let drained = tokio::time::timeout(PATIENCE, async {
        let mut pause = Duration::from_millis(2);
        loop {
            pool.close().await;
            if pool.size() == 0 {
                return;
            }
            // A connection on its way back lands in the idle queue; the next `close`
            // takes it from there. The growing pause keeps this from spinning while a
            // caller still holds one.
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            pool = what,
            open = pool.size(),
            "closing the database pool: connections still in use after {}s",
            PATIENCE.as_secs()
        );
    }
}

#[cfg(test)]
mod tests {
    //! sqlx's two ways of leaving a connection open, made deterministic: each test
    //! fails with `Pool::close` alone (checked) and passes with `close_pool`.

    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
    use tokio::sync::Notify;

    use super::close_pool;

    fn options(dir: &std::path::Path) -> SqliteConnectOptions {
        SqliteConnectOptions::new()
            .filename(dir.join("db.sqlite"))
            .create_if_missing(true)
    }

    /// The return task is held after its "closed?" check (an `after_release` hook
    /// runs there, as the ping does) until `close` has started.
    #[tokio::test]
    async fn a_connection_returning_while_the_pool_closes_is_closed_too() {
        let dir = deploy_testkit::temp_dir("pool-close-").unwrap();
        let (entered, go) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let (e, g) = (entered.clone(), go.clone());
        let pool: SqlitePool = SqlitePoolOptions::new()
            .max_connections(2)
            .after_release(move |_, _| {
                let (e, g) = (e.clone(), g.clone());
                Box::pin(async move {
                    e.notify_one();
                    g.notified().await;
                    Ok(true)
                })
            })
            .connect_with(options(dir.path()))
            .await
            .unwrap();
        drop(pool.acquire().await.unwrap());
        entered.notified().await;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            go.notify_one();
        });
        close_pool(&pool, "test").await;
        assert_eq!(pool.size(), 0, "a connection of the closed pool is open");
    }

    /// One connection idle, one held for 300 ms: `close` alone returns at once.
    #[tokio::test]
    async fn a_connection_checked_out_is_waited_for() {
        let dir = deploy_testkit::temp_dir("pool-close-").unwrap();
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options(dir.path()))
            .await
            .unwrap();
        let idle = pool.acquire().await.unwrap();
        let held = pool.acquire().await.unwrap();
        drop(idle);
        tokio::time::sleep(Duration::from_millis(20)).await;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(held);
        });
        let started = Instant::now();
        close_pool(&pool, "test").await;
        assert_eq!(pool.size(), 0, "a connection of the closed pool is open");
        assert!(started.elapsed() >= Duration::from_millis(250));
    }
}
