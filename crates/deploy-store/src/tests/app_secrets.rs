//! Application secrets on both backends: created at version 1, replaced with the next version and the author kept, re-sealed only at the version read, listed by name, deleted once.

use deploy_core::testing::ts;

use super::harness::{TestStore, both_backends};

both_backends!(a_secret_is_versioned_resealed_at_its_version_and_deleted_once,);

async fn a_secret_is_versioned_resealed_at_its_version_and_deleted_once(t: TestStore) {
    let s = &*t.store;
    assert_eq!(s.get_app_secret("db").await.unwrap(), None);
    let first = s
        .put_app_secret("db", "k1", "c2VhbGVk", 1, &[], "alice", ts(10))
        .await
        .unwrap()
        .unwrap();
    assert!(first.environments.is_empty());
    // A second creation, or a write over a version that is not the one before, is
    // refused: the version is sealed into the value.
    assert_eq!(
        s.put_app_secret("db", "k1", "eA==", 1, &[], "eve", ts(11))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.put_app_secret("db", "k1", "eA==", 3, &[], "eve", ts(11))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        (
            first.version,
            first.key_id.as_str(),
            first.created_by.as_str()
        ),
        (1, "k1", "alice")
    );
    let second = s
        .put_app_secret(
            "db",
            "k1",
            "b3RoZXI=",
            2,
            &["env-a".to_owned(), "env-b".to_owned()],
            "bob",
            ts(20),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.version, 2);
    assert_eq!(second.environments, ["env-a", "env-b"]);
    assert_eq!(
        (second.created_at, second.created_by.as_str()),
        (ts(10), "alice")
    );
    assert_eq!(
        (second.updated_at, second.updated_by.as_str()),
        (ts(20), "bob")
    );
    s.put_app_secret("api", "k1", "eA==", 1, &[], "alice", ts(30))
        .await
        .unwrap()
        .unwrap();
    let names: Vec<String> = s
        .list_app_secrets()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["api", "db"]);

    // A rotation re-seals the version it read, and keeps it.
    assert!(!s.reseal_app_secret("db", 1, "k2", "bmV3").await.unwrap());
    assert!(s.reseal_app_secret("db", 2, "k2", "bmV3").await.unwrap());
    let got = s.get_app_secret("db").await.unwrap().unwrap();
    assert_eq!(
        (got.version, got.key_id.as_str(), got.sealed.as_str()),
        (2, "k2", "bmV3")
    );
    // The data survives a reopen (the migration's table is the one written).
    let again = t.reopen().await;
    assert_eq!(
        again
            .get_app_secret("db")
            .await
            .unwrap()
            .unwrap()
            .environments,
        ["env-a", "env-b"]
    );

    assert!(s.delete_app_secret("db").await.unwrap());
    assert!(!s.delete_app_secret("db").await.unwrap());
    assert!(!s.reseal_app_secret("db", 2, "k2", "bmV3").await.unwrap());
    assert_eq!(s.get_app_secret("db").await.unwrap(), None);
}
