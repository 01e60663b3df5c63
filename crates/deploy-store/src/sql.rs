//! The SQL of the `Store`, written once and expanded for each backend by `sql_store!`, one macro per area in `sql/` (the dialects differ only in id binding and row access).
//!
//! Both dialects accept `$n` placeholders. A backend module provides `Db`, an
//! `impl RowExt` for its row type, an `impl BindId` for its query type, and on
//! its store type `writer`/`reader` pools, the `CLAIM_SQL` constant and
//! `commit_task_event` (group commit on both: `pg_commit.rs`, `sqlite.rs`).
//!
//! Each area macro expands its `Store` methods as functions of a module of the
//! backend (`jobs_sql::create_job(store, ...)`), and `store_impl!` forwards the
//! trait's methods to them. What does not need the backend's types is written as
//! plain functions: row decoding in `rows.rs`, decisions and errors in `decide.rs`.

mod agents;
mod app_secrets;
mod catalog;
mod common;
pub(crate) mod decide;
mod jobs;
mod leases;
mod logs;
mod notifications;
mod relay;
mod store_impl;
mod tasks;
mod tokens;
mod trace_context;

pub(crate) use agents::agents_sql;
pub(crate) use app_secrets::app_secrets_sql;
pub(crate) use catalog::catalog_sql;
pub(crate) use common::{BindId, common_sql};
pub(crate) use decide::{TaskEventRequest, apply_task_request};
pub(crate) use jobs::jobs_sql;
pub(crate) use leases::{claim_sql, leases_sql};
pub(crate) use logs::logs_sql;
pub(crate) use notifications::{notification_claim_sql, notifications_sql};
pub(crate) use relay::relay_sql;
pub(crate) use store_impl::store_impl;
pub(crate) use tasks::{task_update_sql, tasks_sql};
pub(crate) use tokens::tokens_sql;
pub(crate) use trace_context::trace_context_sql;

/// Expands the `Store` implementation for `$store` over the sqlx database `$db`.
macro_rules! sql_store {
    ($store:ty, $db:ty) => {
        crate::sql::common_sql!($store, $db);
        crate::sql::jobs_sql!($store, $db);
        crate::sql::tasks_sql!($store, $db);
        crate::sql::leases_sql!($store, $db);
        crate::sql::catalog_sql!($store, $db);
        crate::sql::agents_sql!($store, $db);
        crate::sql::tokens_sql!($store, $db);
        crate::sql::logs_sql!($store, $db);
        crate::sql::relay_sql!($store, $db);
        crate::sql::app_secrets_sql!($store, $db);
        crate::sql::notifications_sql!($store, $db);
        crate::sql::trace_context_sql!($store, $db);
        crate::sql::store_impl!($store);
    };
}

pub(crate) use sql_store;
