//! Environment and release lists (paged), and API tokens: listed without secrets, revoked at once, refused past their expiry, recovered locally.

use axum::http::StatusCode;
use deploy_api::Role;
use deploy_core::Timestamp;
use serde_json::{Value, json};

use super::{Fixture, release_body};

/// Reads every page of `path` (`limit=2`), returning the names in order and the page count.
async fn all_pages(f: &Fixture, path: &str, field: &str) -> (Vec<String>, usize) {
    let mut names = Vec::new();
    let mut pages = 0;
    let mut before: Option<String> = None;
    loop {
        let url = match &before {
            Some(b) => format!("{path}?limit=2&before={b}"),
            None => format!("{path}?limit=2"),
        };
        let page = f.ok("GET", &url, Role::Viewer, None).await;
        pages += 1;
        for item in page[field].as_array().unwrap() {
            names.push(item["name"].as_str().unwrap().to_owned());
        }
        match page["next_before"].as_str() {
            Some(b) => before = Some(b.to_owned()),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    (names, pages)
}

#[tokio::test]
async fn environments_and_releases_are_listed_newest_first_in_pages() {
    let f = Fixture::new().await;
    for n in ["e1", "e2", "e3"] {
        f.env_named(n, json!({})).await;
        f.ok(
            "POST",
            "/api/v1/releases",
            Role::Deployer,
            Some(release_body(n)),
        )
        .await;
        // Ids are UUID v7: a new millisecond orders them.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let (envs, pages) = all_pages(&f, "/api/v1/environments", "environments").await;
    assert_eq!(
        (envs, pages),
        (vec!["e3".into(), "e2".into(), "e1".into()], 2)
    );
    let (releases, _) = all_pages(&f, "/api/v1/releases", "releases").await;
    assert_eq!(releases, ["e3", "e2", "e1"]);
    let page = f
        .ok("GET", "/api/v1/releases?limit=1", Role::Viewer, None)
        .await;
    assert_eq!(page["releases"][0]["components"][0]["name"], "web");

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("before=nope", "before"),
    ] {
        let (status, problem) = f
            .call(
                "GET",
                &format!("/api/v1/environments?{query}"),
                Some(f.token(Role::Viewer)),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {problem}");
        assert_eq!(problem["field"], field, "{problem}");
    }
}

#[tokio::test]
async fn tokens_are_listed_without_secrets_and_revoked_at_once() {
    let f = Fixture::new().await;
    let created = f
        .ok(
            "POST",
            "/api/v1/tokens",
            Role::Admin,
            Some(json!({"name": "ci", "role": "deployer"})),
        )
        .await;
    let secret = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    let hash = crate::hash_token(&secret).to_string();
    // The new token works, and its use is recorded.
    f.call("GET", "/api/v1/jobs", Some(&secret), None).await;

    let (status, _, bytes) = f
        .raw(
            "GET",
            "/api/v1/tokens",
            Some(f.token(Role::Admin)),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(bytes).unwrap();
    for (role, token) in &f.tokens {
        assert!(
            !text.contains(token.as_str()),
            "the {role} secret is listed"
        );
        let h = crate::hash_token(token).to_string();
        assert!(!text.contains(&h[7..]), "the {role} hash is listed");
    }
    assert!(!text.contains(&secret) && !text.contains(&hash[7..]));
    let list: Vec<Value> = serde_json::from_str(&text).unwrap();
    let mut names: Vec<&str> = list.iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    // The bootstrap marker is not a token anyone holds: not listed.
    assert_eq!(names, ["bootstrap-admin", "ci", "deployer", "viewer"]);
    let ci = list.iter().find(|t| t["name"] == "ci").unwrap();
    assert_eq!(ci["role"], "deployer");
    assert_eq!(ci["revoked_at"], Value::Null);
    assert!(ci["last_used_at"].is_string(), "{ci}");
    assert_eq!(
        ci.as_object().unwrap().keys().collect::<Vec<_>>(),
        [
            "created_at",
            "expires_at",
            "id",
            "last_used_at",
            "name",
            "revoked_at",
            "role"
        ]
    );

    let revoked = f
        .ok(
            "POST",
            &format!("/api/v1/tokens/{id}/revoke"),
            Role::Admin,
            None,
        )
        .await;
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let (status, problem) = f.call("GET", "/api/v1/jobs", Some(&secret), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(problem["type"], "urn:deploy:problem:unauthorized");

    let (status, problem) = f
        .call(
            "POST",
            "/api/v1/tokens/00000000-0000-0000-0000-000000000009/revoke",
            Some(f.token(Role::Admin)),
            None,
        )
        .await;
    assert_eq!(
        (status, &problem["type"]),
        (
            StatusCode::NOT_FOUND,
            &json!("urn:deploy:problem:not-found")
        )
    );
    let (status, problem) = f
        .call(
            "POST",
            "/api/v1/tokens/nope/revoke",
            Some(f.token(Role::Admin)),
            None,
        )
        .await;
    // Not an id: a name, and no token has it.
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    assert_eq!(problem["detail"], "no api token named `nope`");
}

/// An API token stored with `expires_at` = `at` (no route writes a past expiry).
async fn token_expiring(f: &Fixture, name: &str, role: Role, at: Timestamp) -> String {
    let secret = crate::generate_token();
    f.store
        .put_api_token(&deploy_store::ApiTokenRecord {
            id: uuid::Uuid::new_v4(),
            name: name.to_owned(),
            token_hash: crate::hash_token(&secret),
            scopes: vec![role.as_str().to_owned()],
            created_at: Timestamp::from_unix_millis(1_000).unwrap(),
            revoked_at: None,
            last_used_at: None,
            expires_at: Some(at),
        })
        .await
        .unwrap();
    secret
}

#[test]
fn a_token_is_usable_until_its_expiry_and_refused_from_it_on() {
    let at = Timestamp::from_unix_millis(1_800_000_000_000).unwrap();
    let record = deploy_store::ApiTokenRecord {
        id: uuid::Uuid::nil(),
        name: "ci".into(),
        token_hash: crate::hash_token("x"),
        scopes: vec!["deployer".into()],
        created_at: Timestamp::from_unix_millis(1_000).unwrap(),
        revoked_at: None,
        last_used_at: None,
        expires_at: Some(at),
    };
    let ms = |m: u64| Timestamp::from_unix_millis(m).unwrap();
    let check = |now: Timestamp| crate::auth::usable_at(&record, now).map_err(|e| e.to_string());
    assert_eq!(check(ms(1_799_999_999_999)), Ok(()));
    let expired = format!("the API token expired at {at}; ask an admin for a new one");
    assert_eq!(check(at), Err(expired.clone()));
    assert_eq!(check(ms(1_900_000_000_000)), Err(expired));
    // Revoked wins over expired, and says nothing of the expiry.
    let revoked = deploy_store::ApiTokenRecord {
        revoked_at: Some(ms(5_000)),
        ..record.clone()
    };
    assert_eq!(
        crate::auth::usable_at(&revoked, ms(2_000)).map_err(|e| e.to_string()),
        Err("unknown or revoked API token".to_owned())
    );
    let never = deploy_store::ApiTokenRecord {
        expires_at: None,
        ..record
    };
    assert_eq!(
        crate::auth::usable_at(&never, ms(4_000_000_000_000)).map_err(|e| e.to_string()),
        Ok(())
    );
}

/// The expiry and the recovery on SQLite and on PostgreSQL (timestamps and the
/// audit row go through each store's own SQL).
mod on_both_stores {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expiry_sqlite() {
        super::expiring_tokens(super::Fixture::new().await).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expiry_postgres() {
        super::expiring_tokens(super::Fixture::on_postgres().await).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recovery_sqlite() {
        super::recovery(super::Fixture::new().await).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recovery_postgres() {
        super::recovery(super::Fixture::on_postgres().await).await;
    }
}

/// An expiring token works before its expiry and gets 401 naming it after.
async fn expiring_tokens(f: Fixture) {
    // Created through the API with an expiry: listed with it, and accepted.
    let created = f
        .ok(
            "POST",
            "/api/v1/tokens",
            Role::Admin,
            Some(json!({"name": "ci-hour", "role": "viewer", "expires_in_secs": 3600})),
        )
        .await;
    let expires_at: Timestamp = serde_json::from_value(created["expires_at"].clone()).unwrap();
    let now = deploy_engine::Clock::now(&deploy_engine::SystemClock);
    let lifetime = expires_at.duration_since(now);
    assert!(
        lifetime <= std::time::Duration::from_secs(3600)
            && lifetime > std::time::Duration::from_secs(3500),
        "{created}"
    );
    let secret = created["token"].as_str().unwrap();
    let (status, _) = f
        .call("GET", "/api/v1/environments", Some(secret), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let listed = f.ok("GET", "/api/v1/tokens", Role::Admin, None).await;
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci-hour")
        .unwrap();
    assert_eq!(row["expires_at"], created["expires_at"]);

    // Past its expiry (written to the store, no waiting): 401 on every kind of route,
    // saying it expired and when, and nothing about any other token.
    let at = Timestamp::from_unix_millis(1_700_000_000_000).unwrap();
    let expired = token_expiring(&f, "old-admin", Role::Admin, at).await;
    let expected = format!("the API token expired at {at}; ask an admin for a new one");
    for (method, path, body) in [
        ("GET", "/api/v1/environments", None),
        ("GET", "/api/v1/tokens", None),
        (
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "sneaky", "role": "admin"})),
        ),
        (
            "GET",
            "/api/v1/jobs/01890a5d-ac96-774b-bcce-b302099a8057/events",
            None,
        ),
    ] {
        let (status, problem) = f.call(method, path, Some(&expired), body).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path}: {problem}"
        );
        assert_eq!(problem["type"], "urn:deploy:problem:unauthorized");
        assert_eq!(problem["detail"], expected, "{method} {path}");
    }
    let names: Vec<String> = f
        .ok("GET", "/api/v1/tokens", Role::Admin, None)
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(!names.contains(&"sneaky".to_owned()), "{names:?}");
    // An unknown token still gets the answer that reveals nothing.
    let (status, problem) = f
        .call(
            "GET",
            "/api/v1/environments",
            Some("dpl_no-such-token-0123456789"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(problem["detail"], "unknown or revoked API token");
}

/// Recovery creates an audited admin token straight in the store.
async fn recovery(f: Fixture) {
    let actor = crate::LocalActor {
        user: "root (uid 0)".into(),
        place: "sqlite:/var/lib/deployd/deployd.sqlite".into(),
    };
    let now = deploy_engine::Clock::now(&deploy_engine::SystemClock);
    let created = crate::recover_admin(f.store.as_ref(), "rescue", Some(600), &actor, now)
        .await
        .unwrap();
    assert_eq!(created.role, Role::Admin);
    assert_eq!(
        created.expires_at,
        Some(now.saturating_add(std::time::Duration::from_secs(600)))
    );
    let (status, _) = f
        .call("GET", "/api/v1/tokens", Some(&created.token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let audit = f
        .ok("GET", "/api/v1/audit?actor=rescue", Role::Admin, None)
        .await;
    let text = audit.to_string();
    assert!(text.contains("deployd admin-token"), "{text}");
    assert!(
        text.contains("local user root (uid 0) on sqlite:/var/lib/deployd/deployd.sqlite"),
        "{text}"
    );
    assert!(text.contains(&created.id.to_string()), "{text}");
    assert!(
        !text.contains(&created.token),
        "the secret is in the audit log: {text}"
    );

    // A bad expiry or name stores nothing.
    for (name, secs, field) in [
        ("short", Some(59), "expires_in_secs"),
        (
            "long",
            Some(crate::tokens::MAX_TOKEN_LIFETIME_SECS + 1),
            "expires_in_secs",
        ),
        ("rescue", None, "rescue"),
    ] {
        let err = crate::recover_admin(f.store.as_ref(), name, secs, &actor, now)
            .await
            .unwrap_err();
        assert!(err.to_string().contains(field), "{err}");
    }
    let tokens = f.store.list_api_tokens().await.unwrap();
    assert_eq!(tokens.iter().filter(|t| t.name == "rescue").count(), 1);
    assert!(!tokens.iter().any(|t| t.name == "short" || t.name == "long"));
}
