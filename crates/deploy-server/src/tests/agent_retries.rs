//! Registration and rotation with a credential the agent proposes: a retry after a lost answer is answered as the first time, anything else with a spent token or an old credential is still refused, and a malformed or taken credential is refused without being echoed.

use axum::http::StatusCode;
use deploy_api::Role;
use serde_json::{Value, json};

use super::Fixture;
use super::agents::{bootstrap_token, poll, register_agent, register_body};

/// A well-formed credential (`dpa_` + 64 hex), distinct per `n`.
fn credential(n: u8) -> String {
    format!("dpa_{}", format!("{n:02x}").repeat(32))
}

async fn register(
    f: &Fixture,
    token: &str,
    name: &str,
    credential: Option<&str>,
) -> (StatusCode, Value) {
    let mut body = register_body(name, &[]);
    if let Some(c) = credential {
        body["credential"] = json!(c);
    }
    f.call("POST", "/api/v1/agent/register", Some(token), Some(body))
        .await
}

async fn rotate(f: &Fixture, bearer: &str, body: Option<Value>) -> (StatusCode, Value) {
    f.call(
        "POST",
        "/api/v1/agent/credential/rotate",
        Some(bearer),
        body,
    )
    .await
}

#[tokio::test]
async fn a_registration_retried_with_its_credential_is_answered_as_the_first_time() {
    let f = Fixture::new().await;
    let token = bootstrap_token(&f, "web-1").await;
    let c1 = credential(1);
    let (status, first) = register(&f, &token, "web-1", Some(&c1)).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(
        first["credential"],
        c1.as_str(),
        "the proposed credential is the one"
    );
    // The answer was lost: the same call again gets the same answer, no second agent.
    let (status, again) = register(&f, &token, "web-1", Some(&c1)).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(again, first);
    let listed = f.ok("GET", "/api/v1/agents", Role::Viewer, None).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(poll(&f, &c1, json!([])).await.0, StatusCode::OK);

    // Anything else with the spent token is refused as before, never echoing a secret.
    for (name, proposed) in [
        ("web-2", Some(c1.as_str())),
        ("web-1", Some(credential(2).as_str())),
        ("web-1", None),
        ("web-1", Some("dpa_short")),
    ] {
        let proposed = proposed.map(str::to_owned);
        let (status, body) = register(&f, &token, name, proposed.as_deref()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name} {body}");
        assert_eq!(
            body["detail"],
            "the agent bootstrap token was already spent or revoked"
        );
        if let Some(p) = &proposed {
            assert!(!body.to_string().contains(p.as_str()), "{body}");
        }
    }

    // Once the agent rotated, or is revoked, the registration is not answered again.
    let (status, _) = rotate(
        &f,
        &c1,
        Some(json!({"protocol": 1, "credential": credential(3)})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        register(&f, &token, "web-1", Some(&c1)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let token2 = bootstrap_token(&f, "web-4").await;
    let c4 = credential(4);
    let (status, second) = register(&f, &token2, "web-4", Some(&c4)).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let id = second["agent_id"].as_str().unwrap();
    f.ok(
        "POST",
        &format!("/api/v1/agents/{id}/revoke"),
        Role::Admin,
        None,
    )
    .await;
    assert_eq!(
        register(&f, &token2, "web-4", Some(&c4)).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_malformed_or_taken_proposed_credential_is_refused_and_the_token_kept() {
    let f = Fixture::new().await;
    let token = bootstrap_token(&f, "web-1").await;
    for bad in ["dpa_short", "dpb_0123", &credential(1).to_uppercase(), ""] {
        let (status, body) = register(&f, &token, "web-1", Some(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["field"], "credential", "{body}");
        assert_eq!(
            body["detail"],
            "credential is not a valid agent credential; expected `dpa_` followed by 64 lowercase hex characters"
        );
        if !bad.is_empty() {
            assert!(!body.to_string().contains(bad), "{body}");
        }
    }
    // Another agent's credential (it would have to be known): 409, the token still unspent.
    let (_, taken) = register_agent(&f, "other", &[]).await;
    let (status, body) = register(&f, &token, "web-1", Some(&taken)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(!body.to_string().contains(&taken), "{body}");
    let (status, body) = register(&f, &token, "web-1", Some(&credential(1))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(poll(&f, &taken, json!([])).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_rotation_to_a_proposed_credential_is_answered_again_after_a_lost_answer() {
    let f = Fixture::new().await;
    let (id, old) = register_agent(&f, "a", &[]).await;
    let next = credential(7);
    let body = json!({"protocol": 1, "credential": next});
    let (status, first) = rotate(&f, &old, Some(body.clone())).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["credential"], next.as_str());
    assert_eq!(first["agent_id"], id.as_str());
    // The agent retries with the old bearer: refused, the rotation happened.
    assert_eq!(
        rotate(&f, &old, Some(body.clone())).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(poll(&f, &old, json!([])).await.0, StatusCode::UNAUTHORIZED);
    // Then with the new one as bearer: the same answer, nothing changed.
    let (status, again) = rotate(&f, &next, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, first);
    assert_eq!(poll(&f, &next, json!([])).await.0, StatusCode::OK);

    // Bad bodies: refused naming the field, never the value; nothing changed.
    for (proposed, protocol, field) in [
        ("dpa_short".to_owned(), 1, "credential"),
        (credential(8), 2, "protocol"),
    ] {
        let body = json!({"protocol": protocol, "credential": proposed});
        let (status, problem) = rotate(&f, &next, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
        assert_eq!(problem["field"], field, "{problem}");
        assert!(!problem.to_string().contains(&proposed), "{problem}");
    }
    let (_, other) = register_agent(&f, "b", &[]).await;
    let (status, problem) =
        rotate(&f, &next, Some(json!({"protocol": 1, "credential": other}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(!problem.to_string().contains(&other), "{problem}");
    assert_eq!(poll(&f, &next, json!([])).await.0, StatusCode::OK);
    assert_eq!(poll(&f, &other, json!([])).await.0, StatusCode::OK);

    // Without a body (older agents): a server-generated credential, as before.
    let (status, generated) = rotate(&f, &next, None).await;
    assert_eq!(status, StatusCode::OK, "{generated}");
    let generated = generated["credential"].as_str().unwrap();
    assert!(deploy_api::agent::is_agent_credential(generated));
    assert_ne!(generated, next);
    assert_eq!(poll(&f, &next, json!([])).await.0, StatusCode::UNAUTHORIZED);
}
