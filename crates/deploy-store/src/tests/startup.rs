//! Start-up checks: an unwritable path and a database from a newer schema are refused, naming the path and versions, and nothing is modified.

use crate::tests::harness::{Backing, TestStore, postgres, sqlite};
use crate::{PgConfig, PgStore, SqliteConfig, SqliteStore, StoreError};

#[tokio::test]
async fn unwritable_paths_are_named_and_nothing_is_created() {
    let dir = deploy_testkit::temp_dir("deploy-store-").unwrap();
    let missing = dir.path().join("no-such-dir").join("deploy.db");
    let err = SqliteStore::open(&SqliteConfig::new(&missing))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot open the database at `{}` for writing: directory `{}` does not exist",
            missing.display(),
            dir.path().join("no-such-dir").display()
        )
    );
    let err = SqliteStore::open(&SqliteConfig::new(dir.path()))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unwritable { .. }), "{err}");
    // /proc refuses new files even to root.
    let err = SqliteStore::open(&SqliteConfig::new("/proc/deploy-store.db"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot open the database at `/proc/deploy-store.db`"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing was created"
    );
}

/// Marks the database as migrated by a future build (version 99990101000000).
async fn from_the_future(t: &TestStore) {
    let sql =
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
               VALUES (99990101000000, 'from the future', TRUE, X'00', 0)";
    match &t.backing {
        Backing::Sqlite(dir) => {
            let pool = sqlx::SqlitePool::connect(&format!(
                "sqlite:{}",
                dir.path().join("deploy.db").display()
            ))
            .await
            .unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Backing::Postgres(pg) => {
            let pool = sqlx::PgPool::connect(&pg.url()).await.unwrap();
            sqlx::query(&sql.replace("X'00'", "'\\x00'::bytea"))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
    }
}

async fn newer_schema_is_refused(t: TestStore) {
    from_the_future(&t).await;
    let (err, location) = match &t.backing {
        Backing::Sqlite(dir) => {
            let path = dir.path().join("deploy.db");
            let before = std::fs::read(&path).unwrap();
            let err = SqliteStore::open(&SqliteConfig::new(&path))
                .await
                .unwrap_err();
            assert_eq!(
                std::fs::read(&path).unwrap(),
                before,
                "the file is unmodified"
            );
            (err, path.display().to_string())
        }
        Backing::Postgres(pg) => {
            let err = PgStore::connect(&PgConfig::new(pg.url()))
                .await
                .unwrap_err();
            (err, pg.url())
        }
    };
    // The newest version this build knows: one migration file per version.
    let latest = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .unwrap()
        .count();
    assert!(
        err.to_string().starts_with(&format!(
            "the database at `{location}` has schema version 99990101000000, newer than version {latest} that this build supports"
        )),
        "{err}"
    );
}

#[tokio::test]
async fn newer_schema_is_refused_sqlite() {
    let dir = deploy_testkit::temp_dir("deploy-store-").unwrap();
    let store = SqliteStore::open(&SqliteConfig::new(dir.path().join("deploy.db")))
        .await
        .unwrap();
    // Close so that the file alone holds the database (the WAL is checkpointed and removed).
    store.close().await;
    let t = TestStore {
        store: std::sync::Arc::new(store),
        backing: Backing::Sqlite(dir),
    };
    newer_schema_is_refused(t).await;
}

#[tokio::test]
async fn newer_schema_is_refused_postgres() {
    newer_schema_is_refused(postgres().await).await;
}

#[tokio::test]
async fn reopening_an_up_to_date_database_works() {
    let t = sqlite().await;
    let again = t.reopen().await;
    assert!(
        again
            .claim_jobs(
                "x",
                deploy_core::testing::ts(0),
                std::time::Duration::from_secs(1),
                1
            )
            .await
            .unwrap()
            .is_empty()
    );
}

#[test]
fn the_mock_stands_in_for_orchestration_tests() {
    use crate::{MockStore, Store};
    let mut mock = MockStore::new();
    mock.expect_claim_jobs()
        .times(1)
        .returning(|_, _, _, _| Ok(vec![deploy_core::testing::job_id(1)]));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let got = rt.block_on(mock.claim_jobs(
        "a",
        deploy_core::testing::ts(0),
        std::time::Duration::from_secs(1),
        1,
    ));
    assert_eq!(got.unwrap(), [deploy_core::testing::job_id(1)]);
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_named_and_left_alone() {
    let dir = deploy_testkit::temp_dir("deploy-store-").unwrap();
    let path = dir.path().join("deploy.db");
    let text = "not a database\n".repeat(100);
    std::fs::write(&path, &text).unwrap();
    let err = SqliteStore::open(&SqliteConfig::new(&path))
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "cannot open the database at `{}`: ",
            path.display()
        )),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[tokio::test]
async fn an_unreachable_postgres_is_named_without_its_password() {
    let port = deploy_testkit::free_port().unwrap();
    let mut config = PgConfig::new(format!("postgres://app:s3cret@127.0.0.1:{port}/deploy"));
    config.acquire_timeout = std::time::Duration::from_secs(2);
    let err = PgStore::connect(&config).await.unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "cannot open the database at `postgres://app@127.0.0.1:{port}/deploy`: "
        )),
        "{err}"
    );
    assert!(!err.contains("s3cret"));
}
