//! One job over an SSH-model target and a Kubernetes target: the engine drives both executor kinds with one rollout semantics.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deploy_core::testing::{digest, name, ts};
use deploy_core::*;
use deploy_exec::api::{ApiExecutor, ApiExecutorConfig};
use deploy_exec::{DefaultSecrets, ExecutorRegistry};
use deploy_testkit::{http_response, read_request};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use super::fake::{FakeWorld, Fixture, release_with};
use crate::{Engine, EngineConfig, SystemClock};

/// A minimal Kubernetes API for one Deployment: GET returns it, a PATCH of the
/// container image bumps the generation and the fake controller rolls it out at once.
async fn fake_kubernetes(state: Arc<Mutex<Value>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                let Ok(Some(request)) = read_request(&mut socket, &mut Vec::new()).await else {
                    return;
                };
                let body = {
                    let mut d = state.lock().unwrap();
                    if request.method == "PATCH" {
                        let patch: Value =
                            serde_json::from_slice(&request.body).unwrap_or(Value::Null);
                        let image = patch
                            .pointer("/spec/template/spec/containers/0/image")
                            .cloned()
                            .unwrap_or(Value::Null);
                        let generation = d["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                        d["spec"]["template"]["spec"]["containers"][0]["image"] = image;
                        d["metadata"]["generation"] = json!(generation);
                        d["metadata"]["resourceVersion"] = json!(generation.to_string());
                        d["status"]["observedGeneration"] = json!(generation);
                    }
                    d.to_string()
                };
                let reply = http_response(200, "application/json", &body);
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn one_job_over_ssh_and_kubernetes_targets() {
    let deployment = Arc::new(Mutex::new(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "prod", "generation": 1, "resourceVersion": "1"},
        "spec": {"replicas": 2, "template": {"spec": {"containers": [
            {"name": "web", "image": format!("127.0.0.1:5000/web@{}", digest(9))}
        ]}}},
        "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2,
                   "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}
    })));
    let port = fake_kubernetes(deployment.clone()).await;
    let dir = deploy_testkit::temp_dir("engine-mixed-").unwrap();
    let token = dir.path().join("k8s-token");
    std::fs::write(&token, "mixed-test-token").unwrap();

    // The fixture's store and SSH-model fake, plus a Kubernetes target on the real API executor.
    let world = Arc::new(FakeWorld::default());
    let f = Fixture::open(1, dir, world.clone(), true).await;
    let k8s = Target {
        id: deploy_core::testing::target_id(77),
        environment_id: deploy_core::testing::environment_id(1),
        name: name("k8s-web"),
        target_type: TargetType::K8sDeployment,
        connection: Connection::Api(ApiConnection::Kubernetes {
            api_server: Some(HttpUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap()),
            namespace: ResourceName::parse("prod").unwrap(),
            deployment: ResourceName::parse("web").unwrap(),
            container: ResourceName::parse("web").unwrap(),
            credential_ref: Some(
                CredentialRef::parse(&format!("file:{}", token.display())).unwrap(),
            ),
            ca_ref: None,
            auth: deploy_core::KubeAuth::Token,
        }),
        health_endpoint: None,
        health_check: None,
        labels: Labels::default(),
        disabled: false,
        version: 0,
        created_at: ts(0),
    };
    k8s.validate().unwrap();
    f.store.put_target(&k8s).await.unwrap();
    let mut executors = ExecutorRegistry::new();
    executors.register(ExecutionModel::Ssh, world.clone());
    let api = ApiExecutorConfig {
        poll_interval: Duration::from_millis(20),
        ..ApiExecutorConfig::default()
    };
    executors.register(
        ExecutionModel::Api,
        Arc::new(ApiExecutor::new(Arc::new(DefaultSecrets), api)),
    );
    let engine = Engine::new(
        f.store.clone(),
        executors,
        EngineConfig::new("mixed"),
        Arc::new(SystemClock),
    )
    .unwrap();

    let job = f.job(1, &release_with(1, digest(1)), |_| {}).await;
    let done = engine.run_to_settled(job.id).await.unwrap();
    assert_eq!(
        done.status,
        JobStatus::Completed,
        "{:?}",
        done.failure_reason
    );
    assert_eq!(done.tasks.len(), 2, "one task per target");
    assert_eq!(
        world.digest_on(f.target(0), "web"),
        Some(digest(1)),
        "the ssh-model target runs v1"
    );
    let image =
        deployment.lock().unwrap()["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    assert_eq!(
        image,
        json!(format!("127.0.0.1:5000/web@{}", digest(1))),
        "the Deployment was patched to v1"
    );
    let k8s_task = done.tasks.iter().find(|t| t.target_id == k8s.id).unwrap();
    assert_eq!(
        k8s_task.previous_digest,
        Some(digest(9)),
        "what ran before, read from the API"
    );
}
