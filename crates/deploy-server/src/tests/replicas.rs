//! Two replicas on one PostgreSQL, in process: a key dispatched on A reaches an agent polling B, its lines and result come back to A, liveness is shared, and a revocation on B is refused by A at once.

use std::time::Duration;

use axum::http::StatusCode;
use deploy_api::Role;
use deploy_api::agent::{AgentAction, AgentCapability, TaskDelivery, TaskKey};
use deploy_core::testing::*;
use deploy_core::{AgentId, Labels};
use serde_json::json;

use super::Fixture;
use super::agents::register_agent;

async fn long_poll(f: &Fixture, credential: &str, wait_ms: u64) -> (StatusCode, serde_json::Value) {
    f.call(
        "POST",
        "/api/v1/agent/poll",
        Some(credential),
        Some(json!({"protocol": 1, "running": [], "wait_ms": wait_ms})),
    )
    .await
}

/// Retries `check` every 20 ms for at most `within`; how long it took.
async fn eventually(within: Duration, mut check: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let start = tokio::time::Instant::now();
    while start.elapsed() < within {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_dispatched_on_one_replica_runs_on_an_agent_polling_the_other() {
    let a = Fixture::on_postgres_relayed().await;
    let b = a.replica().await;
    let (id, credential) = register_agent(&a, "web-1", &[("zone", "a")]).await;
    let agent: AgentId = id.parse().unwrap();

    // The agent polls B only (B learns it from the store at its first poll) ...
    let (status, first) = long_poll(&b, &credential, 0).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    // ... and A sees it active through the shared liveness.
    let seen = eventually(Duration::from_secs(5), async || {
        a.hub
            .select(None, &Labels::default(), AgentCapability::Docker)
            .is_ok()
    })
    .await;
    assert!(seen.is_some(), "A never saw the agent polling B as active");

    let delivery = super::inspect_delivery(41);
    let key = delivery.key;
    let (dispatched, log) = a.dispatch(agent, delivery, &[]).await;

    // B hands it out (woken by A's announcement, well before the poll's wait ends).
    let started = tokio::time::Instant::now();
    let (status, answer) = long_poll(&b, &credential, 5_000).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["deliveries"][0]["key"]["task_id"],
        key.task_id.to_string()
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // Lines and the result go to B; A's waiter gets both.
    let path = format!("/api/v1/agent/tasks/{}/attempts/1", key.task_id);
    let chunk = json!({"protocol": 1, "first_seq": 0, "lines": [
        {"stream": "stdout", "text": "inspecting web"},
        {"stream": "stderr", "text": "no such container"},
    ]});
    let (status, ack) = b
        .call(
            "POST",
            &format!("{path}/logs"),
            Some(&credential),
            Some(chunk),
        )
        .await;
    assert_eq!(
        (status, ack["next_seq"].clone()),
        (StatusCode::OK, json!(2)),
        "{ack}"
    );
    let result = json!({"protocol": 1, "log_lines": 2, "outcome": {"outcome": "inspected", "digest": null, "published": []}});
    let (status, ack) = b
        .call(
            "POST",
            &format!("{path}/result"),
            Some(&credential),
            Some(result.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    let completion = tokio::time::timeout(Duration::from_secs(5), dispatched)
        .await
        .expect("A's waiter got the result relayed by B")
        .unwrap();
    assert!(
        matches!(completion, deploy_exec::agent::Completion::Result(_)),
        "{completion:?}"
    );
    assert_eq!(log.lines(), ["inspecting web", "stderr: no such container"]);
    // A re-sent result (a lost acknowledgement) is acknowledged again, by either replica.
    for replica in [&b, &a] {
        let (status, _) = replica
            .call(
                "POST",
                &format!("{path}/result"),
                Some(&credential),
                Some(result.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }

    // Revoked on B: A refuses the credential at once (announced, not at A's restart).
    let (status, _) = b
        .call(
            "POST",
            &format!("/api/v1/agents/{id}/revoke"),
            Some(b.token(Role::Admin)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let refused = eventually(Duration::from_secs(5), async || {
        long_poll(&a, &credential, 0).await.0 == StatusCode::UNAUTHORIZED
    })
    .await
    .expect("A still accepts a credential revoked on B");
    assert!(
        refused < Duration::from_secs(1),
        "A refused it only after {refused:?}"
    );
}

/// A deploy of `key` whose container environment holds the application secret `value`.
fn deploy_with_secret(key: TaskKey, value: &str) -> TaskDelivery {
    let mut container = deploy_core::ContainerSpec::from_image(
        deploy_core::ImageRef::parse(&format!("registry.local:5000/web@{}", digest(1))).unwrap(),
    );
    container
        .env
        .insert("DB_PASSWORD".to_owned(), value.to_owned());
    TaskDelivery {
        key,
        target: ssh_target(1),
        action: AgentAction::Deploy {
            deploy: deploy_api::agent::DeployPayload {
                digest: digest(1),
                component: Some(deploy_api::agent::ComponentPayload {
                    name: name("web"),
                    container,
                    keep_previous_running: false,
                    stop_first: false,
                }),
                project: name("web"),
                artifacts: Vec::new(),
                registry_auth: None,
                secret_values: vec![value.to_owned()],
            },
        },
        timeout_ms: 10_000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stored_delivery_holds_no_secret_value_and_still_opens_on_the_other_replica() {
    let a = Fixture::on_postgres_relayed().await;
    let b = a.replica().await;
    let (id, credential) = register_agent(&a, "web-1", &[]).await;
    let agent: AgentId = id.parse().unwrap();
    let (status, first) = long_poll(&b, &credential, 0).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    eventually(Duration::from_secs(5), async || {
        a.hub
            .select(None, &Labels::default(), AgentCapability::Docker)
            .is_ok()
    })
    .await
    .expect("A never saw the agent polling B as active");

    let value = "pg-s3cret-V4LUE";
    let key = TaskKey {
        task_id: task_id(42),
        attempt: 1,
    };
    let (dispatched, log) = a
        .dispatch(agent, deploy_with_secret(key, value), &[value])
        .await;

    // The row: sealed under the first key of the key file, no byte of the value, not
    // even the variable's name.
    let row = a
        .store
        .get_delivery(key.task_id, key.attempt)
        .await
        .unwrap()
        .expect("the delivery is stored before any poll can take it");
    assert!(row.payload.starts_with("new "), "{}", row.payload);
    for needle in [value, "DB_PASSWORD", "registry.local"] {
        assert!(
            !row.payload.contains(needle),
            "`{needle}` in {}",
            row.payload
        );
    }

    // B opens it and hands it out with the value intact.
    let (status, answer) = long_poll(&b, &credential, 5_000).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let handed = &answer["deliveries"][0]["action"]["deploy"];
    assert_eq!(
        handed["component"]["container"]["env"]["DB_PASSWORD"], value,
        "{answer}"
    );

    // A line the agent did not redact is redacted by B before it is relayed (stored),
    // and A's waiter log shows it redacted.
    let path = format!("/api/v1/agent/tasks/{}/attempts/1", key.task_id);
    let chunk = json!({"protocol": 1, "first_seq": 0, "lines": [
        {"stream": "stdout", "text": format!("echo {value}")},
    ]});
    let (status, ack) = b
        .call(
            "POST",
            &format!("{path}/logs"),
            Some(&credential),
            Some(chunk),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    let relayed = a
        .store
        .relay_lines(key.task_id, key.attempt, 0)
        .await
        .unwrap();
    assert_eq!(relayed.len(), 1, "{relayed:?}");
    assert_eq!(relayed[0].text, "echo [REDACTED]");
    let result = json!({"protocol": 1, "log_lines": 1, "outcome": {"outcome": "failed", "error": {"code": "host_error", "message": "stop"}, "previous_digest": null}});
    let (status, ack) = b
        .call(
            "POST",
            &format!("{path}/result"),
            Some(&credential),
            Some(result),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    tokio::time::timeout(Duration::from_secs(5), dispatched)
        .await
        .expect("A's waiter got the result relayed by B")
        .unwrap();
    assert_eq!(log.lines(), ["echo [REDACTED]"]);

    // Rotation: a payload sealed under the key that was first before (`old`) still
    // opens while its line stays in the key file; without it, it does not, by key id.
    let old_only = std::sync::Arc::new(
        crate::SecretKeys::parse(
            super::RELAY_KEYS.lines().nth(1).unwrap(),
            std::path::Path::new("old.key"),
        )
        .unwrap(),
    );
    let earlier = crate::StoreRelay::new(
        a.store.clone(),
        std::sync::Arc::new(deploy_exec::DefaultSecrets),
        old_only,
    );
    let old_key = TaskKey {
        task_id: task_id(43),
        attempt: 1,
    };
    use deploy_exec::agent::HubRelay as _;
    earlier
        .put_deliveries(&[(agent, deploy_with_secret(old_key, value))])
        .await
        .unwrap();
    let row = a
        .store
        .get_delivery(old_key.task_id, 1)
        .await
        .unwrap()
        .unwrap();
    assert!(row.payload.starts_with("old "), "{}", row.payload);
    let current = crate::StoreRelay::new(
        a.store.clone(),
        std::sync::Arc::new(deploy_exec::DefaultSecrets),
        super::relay_keys(),
    );
    let opened = current.delivery(old_key).await.unwrap().unwrap();
    assert_eq!(opened.delivery, deploy_with_secret(old_key, value));
    let new_only = std::sync::Arc::new(
        crate::SecretKeys::parse(
            super::RELAY_KEYS.lines().next().unwrap(),
            std::path::Path::new("new.key"),
        )
        .unwrap(),
    );
    let err = crate::StoreRelay::new(
        a.store.clone(),
        std::sync::Arc::new(deploy_exec::DefaultSecrets),
        new_only,
    )
    .delivery(old_key)
    .await
    .unwrap_err();
    assert!(err.contains("`old`"), "{err}");
    assert!(!err.contains(value), "{err}");
}
