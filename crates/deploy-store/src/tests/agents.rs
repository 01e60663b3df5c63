//! Agents and agent bootstrap tokens on both backends: registration, credential lookup, rotation, revocation, one-time spending.

use std::sync::Arc;

use deploy_core::testing::*;
use deploy_core::*;

use super::harness::{TestStore, both_backends};
use crate::{AGENT_BOOTSTRAP_SCOPE, AgentRecord, ApiTokenRecord, BootstrapBinding, StoreError};

both_backends!(
    agents_round_trip_rotate_and_revoke,
    bootstrap_tokens_are_spent_once,
    racing_spenders_of_one_token_have_one_winner,
    a_spend_is_undone_only_by_its_own_mark,
    an_agent_is_found_by_the_token_that_registered_it,
    a_bootstrap_token_is_stored_with_its_binding,
    labels_change_only_from_the_version_read,
);

fn agent(n: u64, credential: &[u8]) -> AgentRecord {
    AgentRecord {
        id: agent_id(n),
        name: format!("agent-{n}"),
        labels: Labels::default(),
        capabilities: vec!["docker".into(), "compose".into()],
        agent_version: "1.2.3".into(),
        credential_hash: Some(sha256_of(credential)),
        last_seen_at: None,
        created_at: ts(n),
        revoked_at: None,
        bootstrap_token_id: None,
        labels_version: 1,
    }
}

fn bootstrap(n: u128, secret: &[u8], expires_at: Option<Timestamp>) -> ApiTokenRecord {
    ApiTokenRecord {
        id: uuid::Uuid::from_u128(n),
        name: format!("bootstrap-{n}"),
        token_hash: sha256_of(secret),
        scopes: vec![AGENT_BOOTSTRAP_SCOPE.into()],
        created_at: ts(1),
        revoked_at: None,
        last_used_at: None,
        expires_at,
    }
}

async fn agents_round_trip_rotate_and_revoke(t: TestStore) {
    let s = &*t.store;
    let a = agent(1, b"cred-a");
    s.put_agent(&a).await.unwrap();
    s.put_agent(&agent(2, b"cred-b")).await.unwrap();
    assert_eq!(s.get_agent(a.id).await.unwrap(), a);

    let mut twin = agent(3, b"cred-c");
    twin.name = a.name.clone();
    let err = s.put_agent(&twin).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("agent name `agent-1` is already taken by agent `{}`", a.id)
    );

    let found = s
        .find_agent_by_credential(&sha256_of(b"cred-a"))
        .await
        .unwrap();
    assert_eq!(found, Some(a.clone()));
    assert_eq!(
        s.find_agent_by_credential(&sha256_of(b"nope"))
            .await
            .unwrap(),
        None
    );

    s.set_agent_credential(a.id, &sha256_of(b"cred-a2"))
        .await
        .unwrap();
    assert_eq!(
        s.find_agent_by_credential(&sha256_of(b"cred-a"))
            .await
            .unwrap(),
        None,
        "the old credential stops matching at once"
    );
    assert_eq!(
        s.find_agent_by_credential(&sha256_of(b"cred-a2"))
            .await
            .unwrap()
            .map(|r| r.id),
        Some(a.id)
    );

    s.touch_agent(a.id, ts(7)).await.unwrap();
    let revoked = s.revoke_agent(a.id, ts(8)).await.unwrap();
    assert_eq!(
        (revoked.last_seen_at, revoked.revoked_at),
        (Some(ts(7)), Some(ts(8)))
    );
    assert_eq!(
        s.revoke_agent(a.id, ts(9)).await.unwrap().revoked_at,
        Some(ts(8)),
        "revoking again keeps the first time"
    );
    assert!(matches!(
        s.set_agent_credential(a.id, &sha256_of(b"x")).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.revoke_agent(agent_id(9), ts(9)).await,
        Err(StoreError::NotFound {
            entity: "agent",
            ..
        })
    ));
    let listed = s.list_agents().await.unwrap();
    assert_eq!(
        listed.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["agent-1", "agent-2"]
    );
}

async fn bootstrap_tokens_are_spent_once(t: TestStore) {
    let s = &*t.store;
    s.put_api_token(&bootstrap(1, b"boot-1", Some(ts(100))))
        .await
        .unwrap();
    s.put_api_token(&bootstrap(2, b"boot-2", Some(ts(10))))
        .await
        .unwrap();
    let mut api = bootstrap(3, b"api-3", None);
    api.scopes = vec!["admin".into()];
    s.put_api_token(&api).await.unwrap();

    let spent = s
        .spend_bootstrap_token(&sha256_of(b"boot-1"), ts(50))
        .await
        .unwrap()
        .expect("an unspent token is spent");
    assert_eq!(
        (spent.id, spent.revoked_at, spent.expires_at),
        (uuid::Uuid::from_u128(1), Some(ts(50)), Some(ts(100)))
    );
    assert_eq!(
        s.spend_bootstrap_token(&sha256_of(b"boot-1"), ts(51))
            .await
            .unwrap(),
        None,
        "a spent token is not spent again"
    );
    assert_eq!(
        s.spend_bootstrap_token(&sha256_of(b"boot-2"), ts(10))
            .await
            .unwrap(),
        None,
        "an expired token is refused"
    );
    assert_eq!(
        s.spend_bootstrap_token(&sha256_of(b"api-3"), ts(10))
            .await
            .unwrap(),
        None,
        "an API token is no bootstrap token"
    );
    assert_eq!(
        s.find_api_token(&sha256_of(b"api-3"))
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        None
    );
}

async fn racing_spenders_of_one_token_have_one_winner(t: TestStore) {
    let store: Arc<dyn crate::Store> = t.store.clone();
    store
        .put_api_token(&bootstrap(1, b"boot-race", None))
        .await
        .unwrap();
    let other = t.reopen().await;
    let mut handles = Vec::new();
    for i in 0..8u64 {
        let s = if i % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        handles.push(tokio::spawn(async move {
            s.spend_bootstrap_token(&sha256_of(b"boot-race"), ts(5 + i))
                .await
                .unwrap()
                .is_some()
        }));
    }
    let mut winners = 0;
    for h in handles {
        winners += usize::from(h.await.unwrap());
    }
    assert_eq!(winners, 1);
}

async fn a_spend_is_undone_only_by_its_own_mark(t: TestStore) {
    let s = &*t.store;
    s.put_api_token(&bootstrap(1, b"boot-1", None))
        .await
        .unwrap();
    let spent = s
        .spend_bootstrap_token(&sha256_of(b"boot-1"), ts(50))
        .await
        .unwrap()
        .unwrap();
    // Another mark (a revocation at another time) is not undone.
    assert!(!s.unspend_bootstrap_token(spent.id, ts(49)).await.unwrap());
    assert!(s.unspend_bootstrap_token(spent.id, ts(50)).await.unwrap());
    let again = s
        .find_api_token(&sha256_of(b"boot-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.revoked_at, None);
    // Unspent, it can be spent again (by the next registration).
    assert!(
        s.spend_bootstrap_token(&sha256_of(b"boot-1"), ts(60))
            .await
            .unwrap()
            .is_some()
    );
    // Only bootstrap tokens are touched.
    let mut api = bootstrap(3, b"api-3", None);
    api.scopes = vec!["admin".into()];
    api.revoked_at = Some(ts(70));
    s.put_api_token(&api).await.unwrap();
    assert!(!s.unspend_bootstrap_token(api.id, ts(70)).await.unwrap());
}

async fn an_agent_is_found_by_the_token_that_registered_it(t: TestStore) {
    let s = &*t.store;
    s.put_api_token(&bootstrap(1, b"boot-1", None))
        .await
        .unwrap();
    s.put_api_token(&bootstrap(2, b"boot-2", None))
        .await
        .unwrap();
    let token = uuid::Uuid::from_u128(1);
    let mut a = agent(1, b"cred-a");
    a.bootstrap_token_id = Some(token);
    s.put_agent(&a).await.unwrap();
    s.put_agent(&agent(2, b"cred-b")).await.unwrap();
    assert_eq!(
        s.find_agent_by_bootstrap_token(token).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        s.find_agent_by_bootstrap_token(uuid::Uuid::from_u128(2))
            .await
            .unwrap(),
        None
    );
    // One token registers one agent.
    let mut twin = agent(3, b"cred-c");
    twin.bootstrap_token_id = Some(token);
    assert!(matches!(
        s.put_agent(&twin).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    // A credential another agent holds is refused, and nothing changes.
    assert!(matches!(
        s.set_agent_credential(a.id, &sha256_of(b"cred-b")).await,
        Err(StoreError::AlreadyExists {
            entity: "agent credential",
            ..
        })
    ));
    assert_eq!(s.get_agent(a.id).await.unwrap(), a);
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::new(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
    .unwrap()
}

async fn a_bootstrap_token_is_stored_with_its_binding(t: TestStore) {
    let s = &*t.store;
    let token = bootstrap(7, b"secret-7", Some(ts(100)));
    let binding = BootstrapBinding {
        token_id: token.id,
        agent_name: "rack-1".into(),
        labels: labels(&[("env", "staging")]),
        capabilities: vec!["docker".into()],
    };
    s.put_bootstrap_token(&token, &binding).await.unwrap();
    assert_eq!(
        s.bootstrap_binding(token.id).await.unwrap(),
        Some(binding.clone())
    );
    assert_eq!(
        s.list_bootstrap_bindings().await.unwrap(),
        vec![binding.clone()]
    );
    assert_eq!(
        s.find_api_token(&token.token_hash).await.unwrap(),
        Some(token.clone())
    );
    // A second token with the same hash: neither the token nor a binding is written.
    let mut twin = bootstrap(8, b"secret-7", None);
    twin.name = "bootstrap-8".into();
    let twin_binding = BootstrapBinding {
        token_id: twin.id,
        ..binding.clone()
    };
    assert!(matches!(
        s.put_bootstrap_token(&twin, &twin_binding).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    assert_eq!(s.bootstrap_binding(twin.id).await.unwrap(), None);
    assert_eq!(s.list_bootstrap_bindings().await.unwrap().len(), 1);
}

async fn labels_change_only_from_the_version_read(t: TestStore) {
    let s = &*t.store;
    let a = agent(1, b"cred-a");
    s.put_agent(&a).await.unwrap();
    let prod = labels(&[("env", "prod")]);
    let changed = s.set_agent_labels(a.id, &prod, 1).await.unwrap();
    assert_eq!(
        (changed.labels.clone(), changed.labels_version),
        (prod.clone(), 2)
    );
    assert_eq!(s.get_agent(a.id).await.unwrap(), changed);
    // A change made from the old version is refused, naming both versions.
    let err = s
        .set_agent_labels(a.id, &labels(&[("env", "dev")]), 1)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                expected: 1,
                found: Some(2),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(s.get_agent(a.id).await.unwrap().labels, prod);
    assert!(matches!(
        s.set_agent_labels(agent_id(99), &prod, 1).await,
        Err(StoreError::NotFound { .. })
    ));
}
