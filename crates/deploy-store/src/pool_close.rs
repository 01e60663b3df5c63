//! Closing a sqlx pool so that every connection it opened is closed when it returns.
//!
//! `sqlx::Pool::close` (0.8.6) can return with a connection still open, and for
//! SQLite an open connection is an open database file: a restore then finds the
//! database busy, and a WAL database keeps its `-wal` and `-shm`. Two behaviours of
//! sqlx cause it (sqlx issue #3217):
//!
//! - a connection dropped by its user goes back to the pool in a spawned task that
//!   checks whether the pool is closed, then pings the connection, then puts it in
//!   the idle queue without checking again. When `close` starts during that ping it
//!   finds the queue empty, waits for the connection's permit, and returns once the
//!   connection has been put back idle: nothing closes it afterwards;
//! - `close` waits for `1..=max_connections` permits in turn and returns after the
//!   last wait, so a permit given back twice lets it return early.
//!
//! CI saw the first: a store closed right after a read kept its reader connection,
//! and a restore after it was refused for six seconds. [`close_pool`] calls `close`
//! again until the pool counts no connection, so what came back idle late is closed
//! too.

use std::time::Duration;

use sqlx::{Database, Pool};

/// How long [`close_pool`] waits for connections still in use before giving up on
/// them (they close when their user drops them; the pool is closed already).
const PATIENCE: Duration = Duration::from_secs(10);

/// Closes `pool` and waits until none of its connections is open, for at most
/// [`PATIENCE`]; a connection still held by a caller after that is left to close
/// when it is dropped, with a warning.
pub(crate) async fn close_pool<DB: Database>(pool: &Pool<DB>) {
    pool.close().await;
    if pool.size() == 0 {
        return;
    }
    let drained = tokio::time::timeout(PATIENCE, async {
        while pool.size() > 0 {
            // A connection on its way back lands in the idle queue; the next `close`
            // takes it from there. The pause keeps this from spinning while a caller
            // still holds one.
            tokio::time::sleep(Duration::from_millis(2)).await;
            pool.close().await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = pool.size(),
            "closing the database pool: connections still in use after {}s",
            PATIENCE.as_secs()
        );
    }
}
