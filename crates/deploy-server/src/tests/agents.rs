//! Agent routes: bootstrap tokens spent once, wrong/expired/spent/revoked refused, rotation, API tokens and agent credentials never crossing, agents scoped to their own keys.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::StatusCode;
use deploy_api::Role;
use deploy_core::testing::*;
use serde_json::{Value, json};

use super::Fixture;

/// Creates a bootstrap token (admin) for agent `name` without labels; returns its secret.
pub(super) async fn bootstrap_token(f: &Fixture, name: &str) -> String {
    bootstrap_token_for(f, name, &[]).await
}

/// Creates a bootstrap token (admin) for agent `name` with `labels`; returns its secret.
pub(super) async fn bootstrap_token_for(
    f: &Fixture,
    name: &str,
    labels: &[(&str, &str)],
) -> String {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    let created = f
        .ok(
            "POST",
            "/api/v1/agents/bootstrap-tokens",
            Role::Admin,
            Some(json!({ "name": name, "labels": labels })),
        )
        .await;
    assert_eq!(created["name"], name, "{created}");
    assert_eq!(created["labels"], json!(labels), "{created}");
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("dpb_"), "{token}");
    token
}

pub(super) fn register_body(name: &str, labels: &[(&str, &str)]) -> Value {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    json!({
        "protocol": 1,
        "name": name,
        "capabilities": ["docker", "compose"],
        "labels": labels,
        "agent_version": "test",
    })
}

/// Registers agent `name` with a fresh bootstrap token; returns its id and credential.
pub(super) async fn register_agent(
    f: &Fixture,
    name: &str,
    labels: &[(&str, &str)],
) -> (String, String) {
    let token = bootstrap_token_for(f, name, labels).await;
    let (status, body) = f
        .call(
            "POST",
            "/api/v1/agent/register",
            Some(&token),
            Some(register_body(name, labels)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let credential = body["credential"].as_str().unwrap().to_owned();
    assert!(credential.starts_with("dpa_"));
    assert_eq!(body["heartbeat_timeout_ms"], 15_000);
    // The answer carries the identity the server recorded (the token's).
    assert_eq!(body["name"], name, "{body}");
    let expected: BTreeMap<&str, &str> = labels.iter().copied().collect();
    assert_eq!(body["labels"], json!(expected), "{body}");
    (body["agent_id"].as_str().unwrap().to_owned(), credential)
}

pub(super) async fn poll(f: &Fixture, credential: &str, running: Value) -> (StatusCode, Value) {
    f.call(
        "POST",
        "/api/v1/agent/poll",
        Some(credential),
        Some(json!({"protocol": 1, "running": running, "wait_ms": 0})),
    )
    .await
}

#[tokio::test]
async fn bootstrap_tokens_register_once_and_wrong_expired_or_spent_ones_are_refused() {
    let f = Fixture::new().await;
    let token = bootstrap_token(&f, "web-1").await;
    // A bootstrap token is no API token, and is not listed as one.
    let (status, _) = f
        .call("GET", "/api/v1/environments", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let listed = f.ok("GET", "/api/v1/tokens", Role::Admin, None).await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["name"] != "web-1"),
        "{listed}"
    );

    // A protocol this server does not speak: 400 naming both; the token is not spent.
    let mut other = register_body("web-1", &[]);
    other["protocol"] = json!(2);
    let (status, body) = f
        .call("POST", "/api/v1/agent/register", Some(&token), Some(other))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["detail"],
        "agent protocol version 2 is not supported; this server speaks version 1"
    );

    let (status, body) = f
        .call(
            "POST",
            "/api/v1/agent/register",
            Some(&token),
            Some(register_body("web-1", &[])),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = f
        .call(
            "POST",
            "/api/v1/agent/register",
            Some(&token),
            Some(register_body("web-2", &[])),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body["detail"],
        "the agent bootstrap token was already spent or revoked"
    );
    assert!(!body.to_string().contains(&token));

    let (status, body) = f
        .call(
            "POST",
            "/api/v1/agent/register",
            Some("dpb_wrong0000000000000000000000"),
            Some(register_body("web-2", &[])),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["detail"], "unknown agent bootstrap token");

    // An expired token (written directly: the API never makes one already expired).
    let expired = "dpb_expired000000000000000000000";
    let expired_id = uuid::Uuid::new_v4();
    f.engine
        .store()
        .put_bootstrap_token(
            &deploy_store::ApiTokenRecord {
                id: expired_id,
                name: "old".into(),
                token_hash: crate::hash_token(expired),
                scopes: vec![deploy_store::AGENT_BOOTSTRAP_SCOPE.into()],
                created_at: ts(1),
                revoked_at: None,
                last_used_at: None,
                expires_at: Some(ts(2)),
            },
            &deploy_store::BootstrapBinding {
                token_id: expired_id,
                agent_name: "web-2".into(),
                labels: deploy_core::Labels::default(),
                capabilities: vec!["docker".into(), "compose".into()],
            },
        )
        .await
        .unwrap();
    // A bootstrap token without a binding (as made before bindings existed) registers
    // nothing: it is unknown.
    let unbound = "dpb_unbound000000000000000000000";
    f.engine
        .store()
        .put_api_token(&deploy_store::ApiTokenRecord {
            id: uuid::Uuid::new_v4(),
            name: "unbound".into(),
            token_hash: crate::hash_token(unbound),
            scopes: vec![deploy_store::AGENT_BOOTSTRAP_SCOPE.into()],
            created_at: ts(1),
            revoked_at: None,
            last_used_at: None,
            expires_at: None,
        })
        .await
        .unwrap();
    let (status, body) = f
        .call(
            "POST",
            "/api/v1/agent/register",
            Some(unbound),
            Some(register_body("web-2", &[])),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["detail"], "unknown agent bootstrap token");
    let (status, body) = f
        .call(
            "POST",
            "/api/v1/agent/register",
            Some(expired),
            Some(register_body("web-2", &[])),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body["detail"],
        format!(
            "the agent bootstrap token expired at {}; ask an admin for a new one",
            ts(2)
        )
    );

    // A token for a name a registered agent holds is refused when it is made (409).
    let (status, body) = f
        .call(
            "POST",
            "/api/v1/agents/bootstrap-tokens",
            Some(f.token(Role::Admin)),
            Some(json!({"name": "web-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        body["detail"],
        "agent name `web-1` is already taken by a registered agent (revoked agents keep their names); choose another name"
    );
    let fresh = bootstrap_token(&f, "web-2").await;
    let (status, _) = f
        .call(
            "POST",
            "/api/v1/agent/register",
            Some(&fresh),
            Some(register_body("web-2", &[])),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // Expiry bounds.
    for secs in [0, 7 * 24 * 3600 + 1] {
        let (status, body) = f
            .call(
                "POST",
                "/api/v1/agents/bootstrap-tokens",
                Some(f.token(Role::Admin)),
                Some(json!({"name": "x", "expires_in_secs": secs})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{secs}");
        assert_eq!(body["field"], "expires_in_secs");
    }
    let listed = f.ok("GET", "/api/v1/agents", Role::Viewer, None).await;
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web-1", "web-2"]);
    assert!(!listed.to_string().contains("dpa_"));
}

#[tokio::test]
async fn api_tokens_and_agent_credentials_never_cross() {
    let f = Fixture::new().await;
    let (_, credential) = register_agent(&f, "a", &[]).await;
    let (status, _) = f
        .call("GET", "/api/v1/environments", Some(&credential), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = f
        .call("GET", "/api/v1/agents", Some(&credential), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let key = "019a0000-0000-7000-8000-000000000000/attempts/1";
    for role in Role::ALL {
        for (path, body) in [
            ("/api/v1/agent/poll".to_owned(), json!({"protocol": 1})),
            ("/api/v1/agent/credential/rotate".to_owned(), json!({})),
            (
                format!("/api/v1/agent/tasks/{key}/logs"),
                json!({"protocol": 1, "first_seq": 0, "lines": []}),
            ),
            (
                format!("/api/v1/agent/tasks/{key}/result"),
                json!({"protocol": 1, "log_lines": 0, "outcome": {"outcome": "inspected", "digest": null}}),
            ),
            ("/api/v1/agent/register".to_owned(), register_body("z", &[])),
        ] {
            let (status, value) = f.call("POST", &path, Some(f.token(role)), Some(body)).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{path} as {role}: {value}"
            );
        }
    }
}

#[tokio::test]
async fn rotation_replaces_the_credential_and_revocation_refuses_it_at_once() {
    let f = Fixture::new().await;
    let (id, old) = register_agent(&f, "a", &[]).await;
    let (status, _) = poll(&f, &old, json!([])).await;
    assert_eq!(status, StatusCode::OK);
    let summary = f
        .ok("GET", &format!("/api/v1/agents/{id}"), Role::Viewer, None)
        .await;
    assert_eq!(summary["active"], true);

    let (status, rotated) = f
        .call("POST", "/api/v1/agent/credential/rotate", Some(&old), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["credential"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(poll(&f, &old, json!([])).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(poll(&f, &new, json!([])).await.0, StatusCode::OK);

    let revoked = f
        .ok(
            "POST",
            &format!("/api/v1/agents/{id}/revoke"),
            Role::Admin,
            None,
        )
        .await;
    assert_eq!(revoked["active"], false);
    assert!(revoked["revoked_at"].is_string());
    let (status, body) = poll(&f, &new, json!([])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["detail"], "unknown or revoked agent credential");
    let (status, _) = f
        .call("POST", "/api/v1/agent/credential/rotate", Some(&new), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = f
        .call(
            "POST",
            "/api/v1/agents/019a0000-0000-7000-8000-000000000000/revoke",
            Some(f.token(Role::Admin)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_agent_only_sees_and_reports_its_own_keys() {
    let f = Fixture::new().await;
    let (a_id, a) = register_agent(&f, "a", &[]).await;
    let (_, b) = register_agent(&f, "b", &[]).await;
    assert_eq!(poll(&f, &a, json!([])).await.0, StatusCode::OK);
    assert_eq!(poll(&f, &b, json!([])).await.0, StatusCode::OK);

    let delivery = super::inspect_delivery(7);
    let key = delivery.key;
    let (rx, log) = f.dispatch(a_id.parse().unwrap(), delivery, &[]).await;

    let (_, for_b) = poll(&f, &b, json!([])).await;
    assert_eq!(for_b["deliveries"], json!([]));
    let (_, for_a) = poll(&f, &a, json!([])).await;
    assert_eq!(for_a["deliveries"][0]["key"]["attempt"], 1);
    assert_eq!(for_a["deliveries"][0]["action"]["action"], "inspect");

    let logs = format!("/api/v1/agent/tasks/{}/attempts/1/logs", key.task_id);
    let result = format!("/api/v1/agent/tasks/{}/attempts/1/result", key.task_id);
    let chunk =
        json!({"protocol": 1, "first_seq": 0, "lines": [{"stream": "agent", "text": "looking"}]});
    let outcome = json!({"protocol": 1, "log_lines": 1, "outcome": {"outcome": "inspected", "digest": digest(1)}});
    for (path, body) in [(&logs, &chunk), (&result, &outcome)] {
        let (status, value) = f.call("POST", path, Some(&b), Some(body.clone())).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {value}");
        assert_eq!(
            value["detail"],
            format!("task `{}` attempt 1 does not exist", key.task_id)
        );
    }
    // The same answer for a key nobody has.
    let (status, _) = f
        .call(
            "POST",
            &format!("/api/v1/agent/tasks/{}/attempts/2/result", key.task_id),
            Some(&a),
            Some(outcome.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, ack) = f.call("POST", &logs, Some(&a), Some(chunk.clone())).await;
    assert_eq!((status, &ack["next_seq"]), (StatusCode::OK, &json!(1)));
    let listed = f.ok("GET", "/api/v1/agents", Role::Viewer, None).await;
    assert_eq!(listed[0]["in_flight"], 1);
    let (status, ack) = f
        .call("POST", &result, Some(&a), Some(outcome.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    // Re-sent: acknowledged again.
    let (status, _) = f.call("POST", &result, Some(&a), Some(outcome)).await;
    assert_eq!(status, StatusCode::OK);
    let done = tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        done,
        deploy_exec::agent::Completion::Result(r) if r.log_lines == 1
    ));
    assert_eq!(log.lines(), ["looking"]);
}

/// The whole server side: approve -> engine -> `AgentExecutor` -> hub -> a fake agent
/// speaking the protocol over the routes (inspect, deploy, logs, result) -> completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_on_an_agent_target_completes_through_the_routes() {
    let f = Fixture::with_agents().await;
    let (_, credential) = register_agent(&f, "edge-1", &[("zone", "a")]).await;
    assert_eq!(poll(&f, &credential, json!([])).await.0, StatusCode::OK);

    let env_id = f
        .agent_env("edge", "host-1", json!({"zone": "a"}), "/srv/edge")
        .await;
    let promotion = f.promote_release(&env_id, "v1").await;
    let (shutdown, serve) = f.serve_engine();
    let approved = f.approve(&promotion).await;
    let job_id = approved["job"]["id"].as_str().unwrap().to_owned();

    // The fake agent: answer every delivery once, as the real one would.
    let mut running: Option<String> = None;
    let mut actions = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let job = f
            .ok("GET", &format!("/api/v1/jobs/{job_id}"), Role::Viewer, None)
            .await;
        if ["completed", "failed"].contains(&job["status"].as_str().unwrap()) {
            assert_eq!(job["status"], "completed", "{job}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{job}");
        let (status, answer) = f
            .call(
                "POST",
                "/api/v1/agent/poll",
                Some(&credential),
                Some(json!({"protocol": 1, "running": [], "wait_ms": 200})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        for d in answer["deliveries"].as_array().unwrap() {
            let task = d["key"]["task_id"].as_str().unwrap();
            let attempt = d["key"]["attempt"].as_u64().unwrap();
            let action = d["action"]["action"].as_str().unwrap().to_owned();
            let outcome = match action.as_str() {
                "inspect" => json!({"outcome": "inspected", "digest": running}),
                "deploy" => {
                    let digest = d["action"]["deploy"]["digest"].as_str().unwrap().to_owned();
                    assert_eq!(d["target"]["name"], "host-1");
                    running = Some(digest.clone());
                    json!({"outcome": "deployed", "deployed_digest": digest,
                           "previous_digest": null, "changed": true,
                           "running": {"web": digest}})
                }
                other => panic!("unexpected action {other}"),
            };
            actions.push(action);
            let base = format!("/api/v1/agent/tasks/{task}/attempts/{attempt}");
            let (status, _) = f
                .call(
                    "POST",
                    &format!("{base}/logs"),
                    Some(&credential),
                    Some(json!({"protocol": 1, "first_seq": 0,
                                "lines": [{"stream": "agent", "text": "fake agent at work"}]})),
                )
                .await;
            assert_eq!(status, StatusCode::OK);
            let (status, ack) = f
                .call(
                    "POST",
                    &format!("{base}/result"),
                    Some(&credential),
                    Some(json!({"protocol": 1, "log_lines": 1, "outcome": outcome})),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{ack}");
        }
    }
    assert!(actions.contains(&"deploy".to_owned()), "{actions:?}");
    let job = f
        .ok("GET", &format!("/api/v1/jobs/{job_id}"), Role::Viewer, None)
        .await;
    let task_id = job["tasks"][0]["id"].as_str().unwrap();
    let logs = f
        .ok(
            "GET",
            &format!("/api/v1/tasks/{task_id}/logs"),
            Role::Viewer,
            None,
        )
        .await;
    assert!(logs.to_string().contains("fake agent at work"), "{logs}");
    shutdown.cancel();
    serve.await.unwrap();
}

#[tokio::test]
async fn a_registration_losing_the_name_race_answers_409_and_keeps_its_token() {
    let f = Fixture::new().await;
    // Another replica registered `b` (this one's hub does not know it yet).
    let other = deploy_store::AgentRecord {
        id: agent_id(77),
        name: "b".into(),
        labels: deploy_core::Labels::default(),
        capabilities: vec!["docker".into()],
        agent_version: "test".into(),
        credential_hash: Some(deploy_core::testing::digest(77)),
        last_seen_at: None,
        created_at: ts(1),
        revoked_at: None,
        bootstrap_token_id: None,
        labels_version: 1,
    };
    f.engine.store().put_agent(&other).await.unwrap();
    let token = bootstrap_token(&f, "b").await;
    let (status, body) = f
        .call(
            "POST",
            "/api/v1/agent/register",
            Some(&token),
            Some(register_body("b", &[])),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["detail"], "agent name `b` is already taken");
    // The token was not spent by the failed registration.
    let listed = f
        .ok("GET", "/api/v1/agents/bootstrap-tokens", Role::Admin, None)
        .await;
    assert!(listed[0]["revoked_at"].is_null(), "{listed}");
}

#[tokio::test]
async fn bootstrap_tokens_are_listed_without_secrets_and_revoked_on_their_own_route() {
    let f = Fixture::new().await;
    let token = bootstrap_token(&f, "rack-1").await;
    let listed = f
        .ok("GET", "/api/v1/agents/bootstrap-tokens", Role::Admin, None)
        .await;
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let entry = &listed[0];
    assert_eq!(entry["name"], "rack-1");
    assert!(entry["expires_at"].is_string() && entry["revoked_at"].is_null());
    let text = entry.to_string();
    assert!(!text.contains(&token) && !text.contains("hash"), "{text}");
    let id = entry["id"].as_str().unwrap().to_owned();
    // Not an API token: the token route answers 404 and revokes nothing.
    let (status, _) = f
        .call(
            "POST",
            &format!("/api/v1/tokens/{id}/revoke"),
            Some(f.token(Role::Admin)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let listed = f
        .ok("GET", "/api/v1/agents/bootstrap-tokens", Role::Admin, None)
        .await;
    assert!(listed[0]["revoked_at"].is_null(), "{listed}");
    // Nor is an API token a bootstrap token.
    let api = f
        .ok(
            "POST",
            "/api/v1/tokens",
            Role::Admin,
            Some(json!({"name": "ci", "role": "viewer"})),
        )
        .await;
    let (status, _) = f
        .call(
            "POST",
            &format!(
                "/api/v1/agents/bootstrap-tokens/{}/revoke",
                api["id"].as_str().unwrap()
            ),
            Some(f.token(Role::Admin)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let tokens = f.ok("GET", "/api/v1/tokens", Role::Admin, None).await;
    assert!(
        tokens
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["revoked_at"].is_null()),
        "{tokens}"
    );

    let revoked = f
        .ok(
            "POST",
            &format!("/api/v1/agents/bootstrap-tokens/{id}/revoke"),
            Role::Admin,
            None,
        )
        .await;
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let (status, body) = f
        .call(
            "POST",
            "/api/v1/agent/register",
            Some(&token),
            Some(register_body("a", &[])),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = f
        .call(
            "POST",
            "/api/v1/agents/bootstrap-tokens/019a0000-0000-7000-8000-000000000000/revoke",
            Some(f.token(Role::Admin)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
