//! Environment and release lists (paged), and API tokens: listed without secrets, revoked at once.

use axum::http::StatusCode;
use deploy_api::Role;
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
        f.ok(
            "POST",
            "/api/v1/environments",
            Role::Admin,
            Some(json!({ "name": n })),
        )
        .await;
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
