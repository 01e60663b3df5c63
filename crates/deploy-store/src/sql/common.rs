//! What every area of the SQL shares: id binding, connections and the read, insert and clash helpers on the store.

use uuid::Uuid;

/// Binds ids the way the backend stores them (TEXT on SQLite, UUID on PostgreSQL).
pub(crate) trait BindId: Sized {
    fn bind_id(self, id: impl Into<Uuid>) -> Self;
    fn bind_opt_id<T: Into<Uuid>>(self, id: Option<T>) -> Self;
}

/// Expands, for `$store` over `$db`, the connection type, the store's read, insert
/// and clash helpers, and `ping` (module `common_sql`).
macro_rules! common_sql {
    ($store:ty, $db:ty) => {
        type Conn = <$db as sqlx::Database>::Connection;

        impl $store {
            async fn read_conn(&self) -> Result<sqlx::pool::PoolConnection<$db>, StoreError> {
                self.reader
                    .acquire()
                    .await
                    .map_err(StoreError::db("get a read connection"))
            }

            async fn begin_write(&self) -> Result<sqlx::Transaction<'static, $db>, StoreError> {
                self.writer
                    .begin()
                    .await
                    .map_err(StoreError::db("begin a write transaction"))
            }

            /// Runs a query on the read pool and converts every row.
            async fn read_all<'q, T>(
                &self,
                query: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>,
                action: &'static str,
                convert: fn(&<$db as sqlx::Database>::Row) -> Result<T, StoreError>,
            ) -> Result<Vec<T>, StoreError> {
                query
                    .fetch_all(&self.reader)
                    .await
                    .map_err(StoreError::db(action))?
                    .iter()
                    .map(convert)
                    .collect()
            }

            /// Reads an append-only sequence (`sql` takes the owner id, `after_seq` and `limit`).
            async fn read_after<T>(
                &self,
                sql: &'static str,
                owner: impl Into<uuid::Uuid>,
                after_seq: u64,
                limit: u32,
                action: &'static str,
                convert: fn(&<$db as sqlx::Database>::Row) -> Result<T, StoreError>,
            ) -> Result<Vec<T>, StoreError> {
                let query = sqlx::query(sql)
                    .bind_id(owner)
                    .bind(model::int("after_seq", after_seq)?)
                    .bind(i64::from(limit));
                self.read_all(query, action, convert).await
            }

            /// Runs a query on the read pool that must find one row; none is
            /// `NotFound { entity, id }`.
            async fn read_one<'q, T>(
                &self,
                query: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>,
                entity: &'static str,
                id: String,
                convert: fn(&<$db as sqlx::Database>::Row) -> Result<T, StoreError>,
            ) -> Result<T, StoreError> {
                let row = query
                    .fetch_optional(&self.reader)
                    .await
                    .map_err(StoreError::db("load a row"))?
                    .ok_or(StoreError::NotFound { entity, id })?;
                convert(&row)
            }

            /// Runs a query that finds at most one row on `pool` (the writer where a read
            /// must see a write of a moment ago) and converts the row.
            async fn fetch_opt<'q, T>(
                pool: &sqlx::Pool<$db>,
                query: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>,
                action: &'static str,
                convert: fn(&<$db as sqlx::Database>::Row) -> Result<T, StoreError>,
            ) -> Result<Option<T>, StoreError> {
                let row = query
                    .fetch_optional(pool)
                    .await
                    .map_err(StoreError::db(action))?;
                row.as_ref().map(convert).transpose()
            }

            /// Runs one statement that must touch a row; a unique violation becomes
            /// `AlreadyExists`.
            async fn insert_one<'q>(
                &self,
                query: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>,
                entity: &'static str,
                id: String,
            ) -> Result<(), StoreError> {
                Self::insert_one_on(&self.writer, query, entity, id).await
            }

            /// [`Self::insert_one`] on `executor` (a transaction's connection).
            async fn insert_one_on<'q, 'c, E>(
                executor: E,
                query: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>,
                entity: &'static str,
                id: String,
            ) -> Result<(), StoreError>
            where
                E: sqlx::Executor<'c, Database = $db>,
            {
                match query
                    .execute(executor)
                    .await
                    .map_err(StoreError::db("insert a row"))
                {
                    Err(e) if e.is_unique_violation() => {
                        Err(StoreError::AlreadyExists { entity, id })
                    }
                    Err(e) => Err(e),
                    Ok(_) => Ok(()),
                }
            }

            /// Why a conditional delete of `entity` `id` touched no row: an active job uses
            /// it (`active_job` selects that job's `id`), [`StoreError::InUse`] naming it;
            /// otherwise it does not exist (or was deleted already).
            async fn retirement_refused(
                &self,
                entity: &'static str,
                id: impl Into<uuid::Uuid> + std::fmt::Display + Copy,
                active_job: &'static str,
            ) -> StoreError {
                let job = sqlx::query(active_job)
                    .bind_id(id)
                    .fetch_optional(&self.reader)
                    .await
                    .map_err(StoreError::db(
                        "look up the active jobs of a retired entity",
                    ));
                match job.and_then(|row| row.as_ref().map(rows::job_id).transpose()) {
                    Ok(job) => crate::sql::decide::retirement_refused(entity, id, job),
                    Err(e) => e,
                }
            }

            /// After a unique violation on an insert of `id` named `name`:
            /// [`StoreError::NameTaken`]
            /// with the id of the row `holder` (a query selecting `id` by name) finds, or
            /// `AlreadyExists` when the clash was the id itself (or the holder is gone again).
            async fn name_clash<'q>(
                &self,
                holder: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>,
                entity: &'static str,
                name: &str,
                id: String,
            ) -> StoreError {
                let existing = holder
                    .fetch_optional(&self.reader)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|row| row.uuid("id").ok());
                crate::sql::decide::name_clash(entity, name, id, existing)
            }
        }

        /// The `Store` methods that belong to no area.
        mod common_sql {
            use super::*;

            pub(super) async fn ping(store: &$store) -> Result<(), StoreError> {
                let mut conn = store.read_conn().await?;
                sqlx::query("SELECT 1")
                    .execute(&mut *conn)
                    .await
                    .map_err(StoreError::db("ping the database"))?;
                Ok(())
            }
        }
    };
}

pub(crate) use common_sql;
