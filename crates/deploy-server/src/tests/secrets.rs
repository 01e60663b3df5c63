//! Application secrets through the routes: admin only, never answered back (no route, list, audit row or artifact holds the value), bad names and bodies refused, a missing secret refused at job creation by name.

use axum::http::StatusCode;
use deploy_api::Role;
use serde_json::{Value, json};

use super::{Fixture, release_body};

/// A value no other text of a test could contain.
const VALUE: &str = "s3cr3t-V4lue $HOME #x 'q' \"dq\"\nline2";

fn put_body(value: &str) -> Option<Value> {
    Some(json!({ "value": value }))
}

/// Every text `value` may hide behind: as is, and JSON-escaped.
fn assert_absent(haystack: &str, what: &str) {
    let escaped = serde_json::to_string(VALUE).unwrap();
    let escaped = escaped.trim_matches('"');
    for needle in ["s3cr3t-V4lue", escaped] {
        assert!(
            !haystack.contains(needle),
            "{what} holds the value: {haystack}"
        );
    }
}

#[tokio::test]
async fn only_an_admin_writes_lists_and_deletes_secrets_and_no_answer_holds_a_value() {
    let f = Fixture::new().await;
    for role in [Role::Viewer, Role::Deployer] {
        let token = Some(f.token(role));
        for (method, path, body) in [
            ("PUT", "/api/v1/secrets/db", put_body(VALUE)),
            ("GET", "/api/v1/secrets", None),
            ("DELETE", "/api/v1/secrets/db", None),
        ] {
            let (status, answer) = f.call(method, path, token, body).await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{role:?} {method} {path}: {answer}"
            );
        }
    }
    let (status, _) = f
        .call("PUT", "/api/v1/secrets/db", None, put_body(VALUE))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let first = f
        .ok("PUT", "/api/v1/secrets/db", Role::Admin, put_body(VALUE))
        .await;
    assert_eq!(first["name"], "db", "{first}");
    assert_eq!(first["version"], 1, "{first}");
    assert_eq!(first["key_id"], "k1", "{first}");
    assert_eq!(first["created_by"], "bootstrap-admin", "{first}");
    let second = f
        .ok("PUT", "/api/v1/secrets/db", Role::Admin, put_body("other"))
        .await;
    assert_eq!(second["version"], 2, "{second}");
    assert_absent(&first.to_string(), "the answer to a write");
    let list = f.ok("GET", "/api/v1/secrets", Role::Admin, None).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_absent(&list.to_string(), "the list");
    // No route reads one back.
    for path in ["/api/v1/secrets/db", "/api/v1/secrets/db/value"] {
        let (status, body) = f.call("GET", path, Some(f.token(Role::Admin)), None).await;
        assert!(
            status == StatusCode::METHOD_NOT_ALLOWED || status == StatusCode::NOT_FOUND,
            "GET {path}: {status} {body}"
        );
        assert_absent(&body.to_string(), path);
    }
    // The store holds a sealed value only.
    let row = f.store.get_app_secret("db").await.unwrap().unwrap();
    assert!(!row.sealed.contains("other"));
    let audit = f
        .ok("GET", "/api/v1/audit?limit=100", Role::Admin, None)
        .await;
    let text = audit.to_string();
    assert!(text.contains("/api/v1/secrets/{id}"), "{text}");
    assert_absent(&text, "the audit log");
    assert!(!text.contains("\"other\""), "{text}");

    let (status, _, body) = f
        .raw(
            "DELETE",
            "/api/v1/secrets/db",
            Some(f.token(Role::Admin)),
            None,
            &[],
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, body) = f
        .call(
            "DELETE",
            "/api/v1/secrets/db",
            Some(f.token(Role::Admin)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("secret `db`"),
        "{body}"
    );
}

#[tokio::test]
async fn bad_names_and_bodies_are_refused_without_echoing_a_value() {
    let f = Fixture::new().await;
    let admin = Some(f.token(Role::Admin));
    for name in ["DB", "a%20b", "-x", "x%2Fy", &"a".repeat(64)] {
        let (status, body) = f
            .call(
                "PUT",
                &format!("/api/v1/secrets/{name}"),
                admin,
                put_body(VALUE),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains("secret name"),
            "{body}"
        );
        assert_absent(&body.to_string(), "a refusal");
    }
    let cases: [(Value, StatusCode, &str); 5] = [
        (json!({}), StatusCode::BAD_REQUEST, "value"),
        (
            json!({"value": VALUE, "extra": 1}),
            StatusCode::BAD_REQUEST,
            "extra",
        ),
        (
            json!({"value": 5}),
            StatusCode::BAD_REQUEST,
            "expected a string",
        ),
        (
            json!({"value": "a\u{0}b"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "NUL",
        ),
        (
            json!({"value": "x".repeat(deploy_api::MAX_SECRET_BYTES + 1)}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "at most 65536",
        ),
    ];
    for (body, expected, words) in cases {
        let (status, answer) = f.call("PUT", "/api/v1/secrets/db", admin, Some(body)).await;
        assert_eq!(status, expected, "{words}: {answer}");
        assert!(
            answer["detail"].as_str().unwrap().contains(words),
            "{answer}"
        );
        assert_absent(&answer.to_string(), "a refusal");
    }
    let list = f.ok("GET", "/api/v1/secrets", Role::Admin, None).await;
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn a_missing_secret_is_refused_at_job_creation_and_artifacts_keep_the_reference() {
    let f = Fixture::new().await;
    f.env_named("prod", json!({})).await;
    f.add_target("prod", "host-1").await;
    let mut release = release_body("r1");
    release["template"] = json!(
        "services:\n  web:\n    componentName: web\n    environment:\n      DB_PASSWORD: secret:db\n"
    );
    let release = f
        .ok("POST", "/api/v1/releases", Role::Deployer, Some(release))
        .await;
    let promotion = f
        .ok(
            "POST",
            "/api/v1/promotions",
            Role::Deployer,
            Some(json!({"release_id": release["id"], "environment_id": "prod"})),
        )
        .await;
    let approve = format!(
        "/api/v1/promotions/{}/approve",
        promotion["id"].as_str().unwrap()
    );
    let (status, body) = f
        .call(
            "POST",
            &approve,
            Some(f.token(Role::Deployer)),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("variable `DB_PASSWORD` references secret `db`, which does not exist"),
        "{detail}"
    );

    f.ok("PUT", "/api/v1/secrets/db", Role::Admin, put_body(VALUE))
        .await;
    let approved = f
        .ok("POST", &approve, Role::Deployer, Some(json!({})))
        .await;
    let job = approved["job"]["id"].as_str().unwrap().to_owned();
    let lock = f
        .raw(
            "GET",
            &format!("/api/v1/jobs/{job}/artifacts/compose-lock"),
            Some(f.token(Role::Viewer)),
            None,
            &[],
        )
        .await;
    assert_eq!(
        lock.0,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&lock.2)
    );
    let lock = String::from_utf8(lock.2).unwrap();
    assert!(
        lock.contains("DB_PASSWORD: secret:db") || lock.contains("DB_PASSWORD: \"secret:db\""),
        "{lock}"
    );
    assert_absent(&lock, "the compose lock");
    let job_doc = f
        .ok("GET", &format!("/api/v1/jobs/{job}"), Role::Viewer, None)
        .await;
    assert_absent(&job_doc.to_string(), "the job");
}

#[tokio::test]
async fn a_secret_limited_to_environments_is_refused_elsewhere_by_name() {
    let f = Fixture::new().await;
    for env in ["prod", "staging"] {
        f.env_named(env, json!({})).await;
    }
    f.add_target("prod", "host-1").await;
    let admin = Some(f.token(Role::Admin));
    // Unknown, malformed and too many environments are refused, naming the field.
    for (environments, words) in [
        (json!(["nowhere"]), "nowhere"),
        (json!(["Not A Name"]), "environments[0]"),
        (json!("staging"), "environments"),
        (json!(vec!["staging"; 101]), "at most 100"),
    ] {
        let (status, body) = f
            .call(
                "PUT",
                "/api/v1/secrets/db",
                admin,
                Some(json!({"value": VALUE, "environments": environments})),
            )
            .await;
        assert!(status.is_client_error(), "{environments}: {status} {body}");
        assert!(body.to_string().contains(words), "{environments}: {body}");
        assert_absent(&body.to_string(), "a refusal");
    }
    assert!(f.store.get_app_secret("db").await.unwrap().is_none());

    let put = f
        .ok(
            "PUT",
            "/api/v1/secrets/db",
            Role::Admin,
            Some(json!({"value": VALUE, "environments": ["staging", "staging"]})),
        )
        .await;
    assert_eq!(put["environments"], json!(["staging"]), "{put}");
    // A new value without `environments` keeps the list (it never widens).
    let again = f
        .ok("PUT", "/api/v1/secrets/db", Role::Admin, put_body(VALUE))
        .await;
    assert_eq!(
        (again["version"].clone(), again["environments"].clone()),
        (json!(2), json!(["staging"])),
        "{again}"
    );

    let mut release = release_body("r1");
    release["template"] = json!(
        "services:\n  web:\n    componentName: web\n    environment:\n      DB_PASSWORD: secret:db\n"
    );
    let release = f
        .ok("POST", "/api/v1/releases", Role::Deployer, Some(release))
        .await;
    let promotion = f
        .ok(
            "POST",
            "/api/v1/promotions",
            Role::Deployer,
            Some(json!({"release_id": release["id"], "environment_id": "prod"})),
        )
        .await;
    let approve = format!(
        "/api/v1/promotions/{}/approve",
        promotion["id"].as_str().unwrap()
    );
    let (status, body) = f
        .call(
            "POST",
            &approve,
            Some(f.token(Role::Deployer)),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains(
            "variable `DB_PASSWORD` references secret `db`, which may not be used in environment `prod`"
        ),
        "{detail}"
    );
    assert_absent(&body.to_string(), "a refusal");

    // By id or name; listed by name.
    let prod = f
        .ok("GET", "/api/v1/environments/prod", Role::Viewer, None)
        .await;
    let put = f
        .ok(
            "PUT",
            "/api/v1/secrets/db",
            Role::Admin,
            Some(json!({"value": VALUE, "environments": [prod["id"], "staging"]})),
        )
        .await;
    assert_eq!(put["environments"], json!(["prod", "staging"]), "{put}");
    let list = f.ok("GET", "/api/v1/secrets", Role::Admin, None).await;
    assert_eq!(
        list[0]["environments"],
        json!(["prod", "staging"]),
        "{list}"
    );
    f.ok("POST", &approve, Role::Deployer, Some(json!({})))
        .await;
    // `[]`: every environment.
    let all = f
        .ok(
            "PUT",
            "/api/v1/secrets/db",
            Role::Admin,
            Some(json!({"value": VALUE, "environments": []})),
        )
        .await;
    assert_eq!(all["environments"], json!([]), "{all}");
}
