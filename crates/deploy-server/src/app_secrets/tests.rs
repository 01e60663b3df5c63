//! The key file and the AEAD: round trip, fresh nonces, wrong key and moved ciphertexts refused, file modes, syntax errors without key text, rotation over a real store.

use std::os::unix::fs::PermissionsExt as _;

use super::*;

fn key_line(id: &str, byte: u8) -> String {
    format!("{id} {}\n", B64.encode([byte; KEY_BYTES]))
}

fn keys(text: &str) -> SecretKeys {
    SecretKeys::parse(text, Path::new("/k")).unwrap()
}

#[test]
fn a_value_round_trips_and_every_seal_is_fresh() {
    let k = keys(&key_line("k1", 1));
    let value = "pa$$ 'w\"o#rd\nline two";
    let (id, a) = k.seal("db", value.as_bytes()).unwrap();
    let (_, b) = k.seal("db", value.as_bytes()).unwrap();
    assert_eq!(id, "k1");
    assert_ne!(a, b, "a random nonce per seal");
    assert!(!a.contains("pa$$"));
    assert_eq!(k.open("db", "k1", &a).unwrap(), value.as_bytes());
    assert_eq!(k.open("db", "k1", &b).unwrap(), value.as_bytes());
}

#[test]
fn a_wrong_key_a_moved_or_altered_ciphertext_does_not_open() {
    let k = keys(&key_line("k1", 1));
    let (_, sealed) = k.seal("db", b"value").unwrap();
    // Another key under the same id.
    let other = keys(&key_line("k1", 2));
    assert!(matches!(
        other.open("db", "k1", &sealed),
        Err(SecretKeyError::Open { .. })
    ));
    // The same ciphertext moved to another name, or relabelled with another key id.
    assert!(matches!(
        k.open("api", "k1", &sealed),
        Err(SecretKeyError::Open { .. })
    ));
    let two = keys(&format!("{}{}", key_line("k2", 1), key_line("k1", 1)));
    assert!(two.open("db", "k2", &sealed).is_err());
    assert!(two.open("db", "k1", &sealed).is_ok());
    // An unknown key id is named.
    let err = k.open("db", "k9", &sealed).unwrap_err().to_string();
    assert!(err.contains("`k9`") && err.contains("`db`"), "{err}");
    // One flipped byte.
    let mut bytes = B64.decode(&sealed).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert!(k.open("db", "k1", &B64.encode(bytes)).is_err());
    assert!(k.open("db", "k1", "not base64!").is_err());
    assert!(k.open("db", "k1", "").is_err());
}

#[test]
fn bad_key_files_are_refused_by_line_without_quoting_the_key() {
    let check = |text: &str, expected: &str| {
        let err = SecretKeys::parse(text, Path::new("/etc/k"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{text:?}: {err}");
        assert!(err.contains("/etc/k"), "{err}");
        err
    };
    check("", "holds no key");
    check("# only a comment\n", "holds no key");
    check("k1\n", "line 1: not two fields");
    check("k1 a b\n", "line 1: not two fields");
    let short = format!("k1 {}\n", B64.encode([7u8; 16]));
    check(&short, "16 bytes long");
    let err = check("k1 c2VjcmV0IGtleSB0ZXh0!!\n", "not base64");
    assert!(!err.contains("c2VjcmV0"), "{err}");
    check(&format!("K1 {}", B64.encode([1u8; KEY_BYTES])), "key id");
    check(
        &format!("{}{}", key_line("k1", 1), key_line("k1", 2)),
        "appears twice",
    );
}

#[test]
fn the_key_file_is_created_0600_and_refused_when_others_can_read_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/secrets.key");
    let first = SecretKeys::load_or_create(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(first.current_id(), "k1");
    // Loaded again: the same key opens what the first sealed.
    let (id, sealed) = first.seal("db", b"v").unwrap();
    let again = SecretKeys::load_or_create(&path).unwrap();
    assert_eq!(again.open("db", &id, &sealed).unwrap(), b"v");
    for bad in [0o640, 0o604, 0o644] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bad)).unwrap();
        let err = SecretKeys::load_or_create(&path).unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains(&format!("{bad:04o}")),
            "{err}"
        );
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    assert!(SecretKeys::load_or_create(&path).is_ok());
}

#[tokio::test]
async fn rotation_reseals_every_row_under_the_new_key_and_keeps_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        deploy_store::SqliteStore::open(&deploy_store::SqliteConfig::new(
            dir.path().join("db.sqlite"),
        ))
        .await
        .unwrap(),
    );
    let old = keys(&key_line("k1", 1));
    for (name, value) in [("db", "one"), ("api", "two")] {
        let (id, sealed) = old.seal_secret(name, 1, value.as_bytes()).unwrap();
        store
            .put_app_secret(
                name,
                &id,
                &sealed,
                1,
                &[],
                "admin",
                deploy_core::testing::ts(1),
            )
            .await
            .unwrap()
            .unwrap();
    }
    let rotated = keys(&format!("{}{}", key_line("k2", 9), key_line("k1", 1)));
    assert_eq!(reseal_all(store.as_ref(), &rotated).await.unwrap(), 2);
    assert_eq!(reseal_all(store.as_ref(), &rotated).await.unwrap(), 0);
    // Only the new key is needed from now on.
    let new_only = keys(&key_line("k2", 9));
    let secrets = StoreSecrets::new(store.clone(), Arc::new(new_only));
    let db = secrets
        .resolve(&Name::parse("db").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((db.value.expose(), db.version), ("one", 1));
    assert!(
        secrets
            .resolve(&Name::parse("nope").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    // A key file missing the key a row needs: the rotation stops, naming both.
    let (id, sealed) = old.seal_secret("late", 1, b"x").unwrap();
    store
        .put_app_secret(
            "late",
            &id,
            &sealed,
            1,
            &[],
            "admin",
            deploy_core::testing::ts(2),
        )
        .await
        .unwrap()
        .unwrap();
    let without_k1 = keys(&format!("{}{}", key_line("k3", 3), key_line("k2", 9)));
    let err = reseal_all(store.as_ref(), &without_k1)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("`late`") && err.contains("`k1`"), "{err}");
}

#[test]
fn a_secret_opens_only_at_the_version_it_was_sealed_for() {
    let k = keys(&key_line("k1", 1));
    let (_, v1) = k.seal_secret("db", 1, b"old").unwrap();
    assert_eq!(k.open_secret("db", "k1", 1, &v1).unwrap(), b"old");
    assert!(matches!(
        k.open_secret("db", "k1", 2, &v1),
        Err(SecretKeyError::Open { .. })
    ));
    // Nor as a delivery's sealed text, nor the other way round.
    assert!(k.open("db", "k1", &v1).is_err());
    let (_, plain) = k.seal("db", b"old").unwrap();
    assert!(k.open_secret("db", "k1", 1, &plain).is_err());
}

#[tokio::test]
async fn an_older_sealed_value_written_back_over_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        deploy_store::SqliteStore::open(&deploy_store::SqliteConfig::new(
            dir.path().join("db.sqlite"),
        ))
        .await
        .unwrap(),
    );
    let k = Arc::new(keys(&key_line("k1", 1)));
    let (id, v1) = k.seal_secret("db", 1, b"old-password").unwrap();
    let at = deploy_core::testing::ts(1);
    store
        .put_app_secret("db", &id, &v1, 1, &[], "admin", at)
        .await
        .unwrap()
        .unwrap();
    let (id, v2) = k.seal_secret("db", 2, b"new-password").unwrap();
    store
        .put_app_secret("db", &id, &v2, 2, &[], "admin", at)
        .await
        .unwrap()
        .unwrap();
    let secrets = StoreSecrets::new(store.clone(), k.clone());
    let name = Name::parse("db").unwrap();
    let got = secrets.resolve(&name).await.unwrap().unwrap();
    assert_eq!((got.value.expose(), got.version), ("new-password", 2));
    // Someone with write access to the database puts version 1's ciphertext back.
    assert!(store.reseal_app_secret("db", 2, "k1", &v1).await.unwrap());
    let err = secrets.resolve(&name).await.unwrap_err();
    assert!(!err.retryable, "{err}");
    assert!(err.to_string().contains("`db`"), "{err}");
    assert!(!err.to_string().contains("password"), "{err}");
}

/// Writes a key file of `lines` with mode 0600.
fn key_file(path: &Path, lines: &str) {
    std::fs::write(path, lines).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[tokio::test]
async fn replicas_with_other_key_bytes_and_a_lost_key_file_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        deploy_store::SqliteStore::open(&deploy_store::SqliteConfig::new(
            dir.path().join("db.sqlite"),
        ))
        .await
        .unwrap(),
    );
    let now = deploy_core::testing::ts(1);
    // The first start makes the key and records its check.
    let a = dir.path().join("a.key");
    let first = open_key_file(store.as_ref(), &a, now).await.unwrap();
    // The same file opens again (a restart, or a replica given a copy).
    let copy = dir.path().join("copy.key");
    std::fs::copy(&a, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).unwrap();
    let again = open_key_file(store.as_ref(), &copy, now).await.unwrap();
    let (id, sealed) = first.seal("db", b"v").unwrap();
    assert_eq!(again.open("db", &id, &sealed).unwrap(), b"v");

    // Another replica with its own `k1`: refused, naming the key id and the file.
    let other = dir.path().join("other.key");
    key_file(&other, &key_line("k1", 7));
    let err = open_key_file(store.as_ref(), &other, now)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("key `k1`") && err.contains(&other.display().to_string()),
        "{err}"
    );

    // A lost (or unmounted) key file is not replaced by a fresh key.
    let lost = dir.path().join("lost/secrets.key");
    let err = open_key_file(store.as_ref(), &lost, now)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no secrets key file") && err.contains("k1"),
        "{err}"
    );
    assert!(!lost.exists(), "no key file is created");

    // A rotation adds a new key id: recorded on first use, then checked like the rest.
    let rotated = dir.path().join("rotated.key");
    let old_line = std::fs::read_to_string(&a).unwrap();
    key_file(&rotated, &format!("{}{old_line}", key_line("k2", 9)));
    let keys = open_key_file(store.as_ref(), &rotated, now).await.unwrap();
    assert_eq!(keys.current_id(), "k2");
    let ids: Vec<String> = store
        .secret_key_checks()
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, ["k1", "k2"]);
    let wrong_k2 = dir.path().join("wrong-k2.key");
    key_file(&wrong_k2, &format!("{}{old_line}", key_line("k2", 8)));
    assert!(open_key_file(store.as_ref(), &wrong_k2, now).await.is_err());
}
