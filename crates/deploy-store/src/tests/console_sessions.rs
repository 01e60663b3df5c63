//! Console sessions on both backends: stored by hash with their API token, found only before they expire, deleted once, pruned when expired or their token is revoked, refused for an unknown token.

use deploy_core::testing::*;
use deploy_core::{Digest, Timestamp, sha256_of};

use super::harness::{TestStore, both_backends};
use crate::{ApiTokenRecord, ConsoleSession, StoreError};

both_backends!(
    a_session_is_found_with_its_token_until_it_expires,
    a_session_is_deleted_once,
    pruning_removes_expired_sessions_and_those_of_revoked_tokens,
    a_session_of_an_unknown_token_is_refused,
);

fn token(n: u128) -> ApiTokenRecord {
    ApiTokenRecord {
        id: uuid::Uuid::from_u128(n),
        name: format!("console-{n}"),
        token_hash: sha256_of(format!("token-{n}").as_bytes()),
        scopes: vec!["read".into()],
        created_at: ts(1),
        revoked_at: None,
        last_used_at: None,
        expires_at: None,
    }
}

fn session(secret: &str, token: &ApiTokenRecord, expires_at: Timestamp) -> ConsoleSession {
    ConsoleSession {
        id_hash: sha256_of(secret.as_bytes()),
        token_id: token.id,
        created_at: ts(10),
        expires_at,
    }
}

fn hash(secret: &str) -> Digest {
    sha256_of(secret.as_bytes())
}

async fn a_session_is_found_with_its_token_until_it_expires(t: TestStore) {
    let s = &*t.store;
    let tok = token(1);
    s.put_api_token(&tok).await.unwrap();
    let sess = session("cookie-1", &tok, ts(100));
    s.put_console_session(&sess).await.unwrap();

    assert_eq!(
        s.find_console_session(&sess.id_hash, ts(99)).await.unwrap(),
        Some((sess.clone(), tok.clone()))
    );
    // Expired at `expires_at` itself, and after it.
    assert_eq!(
        s.find_console_session(&sess.id_hash, ts(100))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.find_console_session(&sess.id_hash, ts(500))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.find_console_session(&hash("unknown"), ts(10))
            .await
            .unwrap(),
        None
    );
    // The same hash twice is refused, the first session left as it was.
    let mut twin = sess.clone();
    twin.expires_at = ts(900);
    assert!(matches!(
        s.put_console_session(&twin).await.unwrap_err(),
        StoreError::AlreadyExists {
            entity: "console session",
            ..
        }
    ));
    // The token comes with its current state: revoked, it says so (the caller refuses it).
    let revoked = s.revoke_api_token(tok.id, ts(20)).await.unwrap();
    assert_eq!(
        s.find_console_session(&sess.id_hash, ts(30)).await.unwrap(),
        Some((sess, revoked))
    );
}

async fn a_session_is_deleted_once(t: TestStore) {
    let s = &*t.store;
    let tok = token(1);
    s.put_api_token(&tok).await.unwrap();
    let sess = session("cookie-1", &tok, ts(100));
    let other = session("cookie-2", &tok, ts(100));
    s.put_console_session(&sess).await.unwrap();
    s.put_console_session(&other).await.unwrap();

    assert!(s.delete_console_session(&sess.id_hash).await.unwrap());
    assert!(!s.delete_console_session(&sess.id_hash).await.unwrap());
    assert!(!s.delete_console_session(&hash("unknown")).await.unwrap());
    assert_eq!(
        s.find_console_session(&sess.id_hash, ts(20)).await.unwrap(),
        None
    );
    // Only that session went.
    assert_eq!(
        s.find_console_session(&other.id_hash, ts(20))
            .await
            .unwrap(),
        Some((other, tok))
    );
}

async fn pruning_removes_expired_sessions_and_those_of_revoked_tokens(t: TestStore) {
    let s = &*t.store;
    let live = token(1);
    let gone = token(2);
    s.put_api_token(&live).await.unwrap();
    s.put_api_token(&gone).await.unwrap();
    let expired = session("expired", &live, ts(50));
    let kept = session("kept", &live, ts(51));
    let of_revoked = session("of-revoked", &gone, ts(200));
    for sess in [&expired, &kept, &of_revoked] {
        s.put_console_session(sess).await.unwrap();
    }
    s.revoke_api_token(gone.id, ts(40)).await.unwrap();

    assert_eq!(s.prune_console_sessions(ts(50)).await.unwrap(), 2);
    assert!(!s.delete_console_session(&expired.id_hash).await.unwrap());
    assert!(!s.delete_console_session(&of_revoked.id_hash).await.unwrap());
    assert_eq!(
        s.find_console_session(&kept.id_hash, ts(50)).await.unwrap(),
        Some((kept.clone(), live))
    );
    assert_eq!(s.prune_console_sessions(ts(50)).await.unwrap(), 0);
    // Its own expiry takes the last one.
    assert_eq!(s.prune_console_sessions(ts(51)).await.unwrap(), 1);
    assert!(!s.delete_console_session(&kept.id_hash).await.unwrap());
}

async fn a_session_of_an_unknown_token_is_refused(t: TestStore) {
    let s = &*t.store;
    let stranger = token(9);
    let sess = session("cookie-1", &stranger, ts(100));
    let err = s.put_console_session(&sess).await.unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::NotFound { entity: "api token", id } if *id == stranger.id.to_string()
        ),
        "{err:?}"
    );
    // Nothing was stored: once the token exists, the same session goes in.
    s.put_api_token(&stranger).await.unwrap();
    s.put_console_session(&sess).await.unwrap();
    assert_eq!(
        s.find_console_session(&sess.id_hash, ts(20)).await.unwrap(),
        Some((sess, stranger))
    );
}
