//! Agent identity set by the server: a bootstrap token registers one name with its labels and capabilities, nothing else; labels change only by an admin call, audited, and target selection follows them.

use std::time::Duration;

use axum::http::StatusCode;
use deploy_api::Role;
use serde_json::{Value, json};

use super::Fixture;
use super::agents::{poll, register_body};

/// A token for `rack-1` with `env=staging` that may claim only `docker`; its secret and id.
async fn rack_1_token(f: &Fixture) -> (String, String) {
    let created = f
        .ok(
            "POST",
            "/api/v1/agents/bootstrap-tokens",
            Role::Admin,
            Some(
                json!({"name": "rack-1", "labels": {"env": "staging"}, "capabilities": ["docker"]}),
            ),
        )
        .await;
    assert_eq!(created["labels"], json!({"env": "staging"}), "{created}");
    assert_eq!(created["capabilities"], json!(["docker"]), "{created}");
    (
        created["token"].as_str().unwrap().to_owned(),
        created["id"].as_str().unwrap().to_owned(),
    )
}

async fn register(f: &Fixture, token: &str, body: Value) -> (StatusCode, Value) {
    f.call("POST", "/api/v1/agent/register", Some(token), Some(body))
        .await
}

fn claim(name: &str, labels: &[(&str, &str)], capabilities: &[&str]) -> Value {
    let mut body = register_body(name, labels);
    body["capabilities"] = json!(capabilities);
    body
}

#[tokio::test]
async fn a_token_for_rack_1_staging_registers_nothing_else() {
    let f = Fixture::new().await;
    let (token, id) = rack_1_token(&f).await;
    let cases = [
        (
            claim("rack-2", &[("env", "staging")], &["docker"]),
            format!("bootstrap token `{id}` is for agent `rack-1`, not `rack-2`"),
        ),
        (
            claim("rack-1", &[("env", "prod")], &["docker"]),
            format!(
                "label `env=prod` is not among the labels of bootstrap token `{id}`: env=staging"
            ),
        ),
        (
            claim("rack-1", &[("env", "staging"), ("zone", "a")], &["docker"]),
            format!(
                "label `zone=a` is not among the labels of bootstrap token `{id}`: env=staging"
            ),
        ),
        (
            claim("rack-1", &[], &["docker", "compose"]),
            format!(
                "capability `compose` is not among the capabilities of bootstrap token `{id}`: docker"
            ),
        ),
    ];
    for (body, detail) in cases {
        let (status, answer) = register(&f, &token, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
        assert_eq!(answer["type"], "urn:deploy:problem:forbidden", "{answer}");
        assert_eq!(answer["detail"], detail.as_str(), "{answer}");
    }
    // Refusals spend nothing and register nothing.
    let agents = f.ok("GET", "/api/v1/agents", Role::Viewer, None).await;
    assert_eq!(agents, json!([]));

    // Claiming no labels: the agent gets the token's, in the answer and the record.
    let (status, answer) = register(&f, &token, claim("rack-1", &[], &["docker"])).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["name"], "rack-1");
    assert_eq!(answer["labels"], json!({"env": "staging"}));
    let credential = answer["credential"].as_str().unwrap().to_owned();
    let agent = f
        .ok("GET", "/api/v1/agents/rack-1", Role::Viewer, None)
        .await;
    assert_eq!(agent["labels"], json!({"env": "staging"}), "{agent}");
    assert_eq!(agent["labels_version"], 1, "{agent}");
    assert_eq!(agent["capabilities"], json!(["docker"]), "{agent}");

    // A rotation cannot carry labels, and answers the recorded ones.
    let (status, answer) = f
        .call(
            "POST",
            "/api/v1/agent/credential/rotate",
            Some(&credential),
            Some(json!({"protocol": 1, "credential": format!("dpa_{}", "ab".repeat(32)), "labels": {"env": "prod"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, answer) = f
        .call(
            "POST",
            "/api/v1/agent/credential/rotate",
            Some(&credential),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["labels"], json!({"env": "staging"}), "{answer}");

    // The token is listed with what it registers.
    let listed = f
        .ok("GET", "/api/v1/agents/bootstrap-tokens", Role::Admin, None)
        .await;
    assert_eq!(listed[0]["name"], "rack-1", "{listed}");
    assert_eq!(listed[0]["labels"], json!({"env": "staging"}), "{listed}");
    assert_eq!(listed[0]["capabilities"], json!(["docker"]), "{listed}");
    assert!(listed[0]["revoked_at"].is_string(), "spent: {listed}");
}

/// Promotes a new release `name` to `env_id` and returns the job id.
async fn deploy(f: &Fixture, env_id: &str, name: &str) -> String {
    let promotion = f.promote_release(env_id, name).await;
    let approved = f.approve(&promotion).await;
    approved["job"]["id"].as_str().unwrap().to_owned()
}

/// Polls as the agent, answering every delivery as a real agent would, until the job
/// ends; returns the job and how many deliveries the agent got.
async fn run_as_agent(f: &Fixture, credential: &str, job_id: &str) -> (Value, usize) {
    let mut running: Option<String> = None;
    let mut delivered = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let job = f
            .ok("GET", &format!("/api/v1/jobs/{job_id}"), Role::Viewer, None)
            .await;
        if ["completed", "failed"].contains(&job["status"].as_str().unwrap()) {
            return (job, delivered);
        }
        assert!(tokio::time::Instant::now() < deadline, "{job}");
        let (status, answer) = f
            .call(
                "POST",
                "/api/v1/agent/poll",
                Some(credential),
                Some(json!({"protocol": 1, "running": [], "wait_ms": 200})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        for d in answer["deliveries"].as_array().unwrap() {
            delivered += 1;
            let task = d["key"]["task_id"].as_str().unwrap();
            let attempt = d["key"]["attempt"].as_u64().unwrap();
            let outcome = match d["action"]["action"].as_str().unwrap() {
                "inspect" => json!({"outcome": "inspected", "digest": running}),
                "deploy" => {
                    let digest = d["action"]["deploy"]["digest"].as_str().unwrap().to_owned();
                    running = Some(digest.clone());
                    json!({"outcome": "deployed", "deployed_digest": digest,
                           "previous_digest": null, "changed": true,
                           "running": {"web": digest}})
                }
                other => panic!("unexpected action {other}"),
            };
            let (status, ack) = f
                .call(
                    "POST",
                    &format!("/api/v1/agent/tasks/{task}/attempts/{attempt}/result"),
                    Some(credential),
                    Some(json!({"protocol": 1, "log_lines": 0, "outcome": outcome})),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{ack}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prod_targets_never_reach_a_staging_agent_until_an_admin_relabels_it() {
    let f = Fixture::with_agents().await;
    let (token, _) = rack_1_token(&f).await;
    let (status, answer) = register(
        &f,
        &token,
        claim("rack-1", &[("env", "staging")], &["docker"]),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let agent_id = answer["agent_id"].as_str().unwrap().to_owned();
    let credential = answer["credential"].as_str().unwrap().to_owned();
    assert_eq!(poll(&f, &credential, json!([])).await.0, StatusCode::OK);

    let env_id = f
        .agent_env("prod", "prod-1", json!({"env": "prod"}), "/srv/prod")
        .await;
    let (shutdown, serve) = f.serve_engine();

    // The staging agent polls all along and is handed nothing: the job fails, naming
    // the selector no agent matches.
    let job_id = deploy(&f, &env_id, "v1").await;
    let (job, delivered) = run_as_agent(&f, &credential, &job_id).await;
    assert_eq!(delivered, 0, "{job}");
    assert_eq!(job["status"], "failed", "{job}");
    // Every attempt (the engine retries: an agent may yet register) found no agent.
    let task = &job["tasks"][0];
    assert_eq!(
        task["error"],
        "find an agent for target `prod-1`: no agent matches the selector {env=prod}",
        "{job}"
    );
    assert!(task["agent_id"].is_null(), "{job}");

    // Relabelling is an admin call: a deployer or a viewer is refused, nothing changes.
    let path = format!("/api/v1/agents/{agent_id}/labels");
    let change = json!({"labels": {"env": "prod"}, "version": 1});
    for role in [Role::Viewer, Role::Deployer] {
        let (status, answer) = f
            .call("PUT", &path, Some(f.token(role)), Some(change.clone()))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{role}: {answer}");
    }
    let agent = f
        .ok(
            "GET",
            &format!("/api/v1/agents/{agent_id}"),
            Role::Viewer,
            None,
        )
        .await;
    assert_eq!(agent["labels"], json!({"env": "staging"}), "{agent}");

    let changed = f.ok("PUT", &path, Role::Admin, Some(change.clone())).await;
    assert_eq!(changed["labels"], json!({"env": "prod"}), "{changed}");
    assert_eq!(changed["labels_version"], 2, "{changed}");
    // The same change from the version read before it: 409, naming both versions.
    let (status, answer) = f
        .call("PUT", &path, Some(f.token(Role::Admin)), Some(change))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains('2'), "{answer}");

    // The audit log has the change, by whom, with the new labels.
    let audit = f
        .ok(
            "GET",
            &format!("/api/v1/audit?entity={agent_id}"),
            Role::Admin,
            None,
        )
        .await;
    let entries = audit["entries"].as_array().unwrap();
    let accepted: Vec<&Value> = entries
        .iter()
        .filter(|e| e["method"] == "PUT" && e["status"] == 200)
        .collect();
    assert_eq!(accepted.len(), 1, "{audit}");
    assert_eq!(accepted[0]["route"], "/api/v1/agents/{id}/labels");
    assert_eq!(accepted[0]["actor_name"], "bootstrap-admin");
    assert_eq!(accepted[0]["after"]["labels"], json!({"env": "prod"}));
    assert_eq!(
        entries.iter().filter(|e| e["status"] == 403).count(),
        2,
        "{audit}"
    );

    // Target selection follows at once: the next deploy reaches the agent.
    let job_id = deploy(&f, &env_id, "v2").await;
    let (job, delivered) = run_as_agent(&f, &credential, &job_id).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert!(delivered > 0, "{job}");
    shutdown.cancel();
    serve.await.unwrap();
}

#[tokio::test]
async fn label_changes_name_the_agent_and_valid_labels() {
    let f = Fixture::new().await;
    let (status, answer) = f
        .call(
            "PUT",
            "/api/v1/agents/no-such-agent/labels",
            Some(f.token(Role::Admin)),
            Some(json!({"labels": {}, "version": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    let (agent_id, _) = super::agents::register_agent(&f, "edge-1", &[("zone", "a")]).await;
    let path = format!("/api/v1/agents/{agent_id}/labels");
    for (body, needle) in [
        (json!({"labels": {"Env": "prod"}, "version": 1}), "Env"),
        (json!({"labels": {"env": "a\u{7}b"}, "version": 1}), "env"),
        (json!({"labels": {"env": "prod"}}), "version"),
        (
            json!({"labels": {"env": "prod"}, "version": 1, "name": "x"}),
            "name",
        ),
    ] {
        let (status, answer) = f
            .call("PUT", &path, Some(f.token(Role::Admin)), Some(body.clone()))
            .await;
        assert!(status.is_client_error(), "{body}: {status} {answer}");
        assert!(answer.to_string().contains(needle), "{body}: {answer}");
    }
    let agent = f
        .ok(
            "GET",
            &format!("/api/v1/agents/{agent_id}"),
            Role::Viewer,
            None,
        )
        .await;
    assert_eq!(agent["labels"], json!({"zone": "a"}), "{agent}");
    assert_eq!(agent["labels_version"], 1, "{agent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_label_change_on_one_replica_moves_selection_on_the_other() {
    use deploy_api::agent::AgentCapability;
    let a = Fixture::on_postgres_relayed().await;
    let b = a.replica().await;
    let (id, credential) = super::agents::register_agent(&a, "web-1", &[("zone", "a")]).await;
    assert_eq!(poll(&a, &credential, json!([])).await.0, StatusCode::OK);
    let zone =
        |z: &str| deploy_core::Labels::new([("zone".to_owned(), z.to_owned())].into()).unwrap();
    assert!(
        a.hub
            .select(None, &zone("a"), AgentCapability::Docker)
            .is_ok()
    );

    let changed = b
        .ok(
            "PUT",
            &format!("/api/v1/agents/{id}/labels"),
            Role::Admin,
            Some(json!({"labels": {"zone": "b"}, "version": 1})),
        )
        .await;
    assert_eq!(changed["labels"], json!({"zone": "b"}), "{changed}");
    // A learns it from B's announcement (its periodic reload is far slower).
    let start = tokio::time::Instant::now();
    while a
        .hub
        .select(None, &zone("b"), AgentCapability::Docker)
        .is_err()
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "replica A still does not select the agent by its new labels"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = a
        .hub
        .select(None, &zone("a"), AgentCapability::Docker)
        .unwrap_err();
    assert_eq!(refused.0, "no agent matches the selector {zone=a}");
    let shown = a
        .ok("GET", &format!("/api/v1/agents/{id}"), Role::Viewer, None)
        .await;
    assert_eq!(shown["labels_version"], 2, "{shown}");
}
