//! Kubernetes against a deterministic fake: strategic-merge patch, `kubectl rollout status` logic, 409.

use std::sync::{Arc, Mutex};

use deploy_core::testing::digest;
use deploy_core::{ApiConnection, CredentialRef, HttpUrl, ResourceName, TargetType};
use serde_json::{Value, json};

use super::fake::{
    Fake, Handler, Recorded, Reply, assert_no_secret, assert_redeploy_is_a_no_op, ctx,
    deploy_failure, executor, image, request, target,
};
use crate::errors::ExecError;
use crate::executor::Executor;

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.bearer-token-secret";
const PATH: &str = "/apis/apps/v1/namespaces/prod/deployments/web";

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Outcome {
    /// One more replica updated and available per read, until all 3 are.
    Succeeds,
    /// The controller reports ProgressDeadlineExceeded after one read.
    DeadlineExceeded,
    /// Nothing moves.
    Never,
    /// Someone changes the Deployment between our read and our patch.
    Concurrent,
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "prod", "generation": 4, "resourceVersion": "1001"},
        "spec": {"replicas": 3, "template": {"spec": {"containers": [
            {"name": "web", "image": image(1), "ports": [{"containerPort": 8080}]},
            {"name": "sidecar", "image": "envoyproxy/envoy:v1.30"}
        ]}}},
        "status": {"observedGeneration": 4, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3,
                   "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}
    })
}

pub(super) fn k8s_handler(outcome: Outcome) -> (Handler, Arc<Mutex<Value>>) {
    let state = Arc::new(Mutex::new(deployment()));
    let shared = state.clone();
    let polls = Arc::new(Mutex::new(0u64));
    let handler: Handler = Arc::new(move |r: &Recorded| {
        let mut d = state.lock().unwrap();
        if r.path != PATH {
            return Reply::Text(404, "not found".into());
        }
        match r.method.as_str() {
            "GET" => {
                let answer = d.clone();
                if outcome == Outcome::Concurrent {
                    d["metadata"]["resourceVersion"] = json!("1002");
                }
                let generation = d["metadata"]["generation"].as_i64().unwrap();
                if generation > 4 {
                    let mut p = polls.lock().unwrap();
                    *p += 1;
                    let n = *p;
                    let s = &mut d["status"];
                    match outcome {
                        Outcome::Succeeds => {
                            s["observedGeneration"] = json!(generation);
                            let updated = n.min(3);
                            s["updatedReplicas"] = json!(updated);
                            // Old replicas linger one read longer than the new ones appear.
                            s["replicas"] = json!(if n <= 3 { 3 + updated.min(1) } else { 3 });
                            s["availableReplicas"] = json!(n.saturating_sub(2).min(3));
                        }
                        Outcome::DeadlineExceeded if n > 1 => {
                            s["observedGeneration"] = json!(generation);
                            s["conditions"] = json!([{"type": "Progressing", "status": "False",
                                "reason": "ProgressDeadlineExceeded",
                                "message": "ReplicaSet \"web-7d4\" has timed out progressing."}]);
                        }
                        _ => {}
                    }
                }
                Reply::Json(200, answer)
            }
            "PATCH" => {
                let patch = r.json();
                if patch["metadata"]["resourceVersion"] != d["metadata"]["resourceVersion"] {
                    return Reply::Json(
                        409,
                        json!({"kind": "Status", "status": "Failure", "reason": "Conflict", "code": 409,
                        "message": "Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified; please apply your changes to the latest version and try again"}),
                    );
                }
                for c in patch["spec"]["template"]["spec"]["containers"]
                    .as_array()
                    .unwrap()
                {
                    let containers = d["spec"]["template"]["spec"]["containers"]
                        .as_array_mut()
                        .unwrap();
                    let target = containers
                        .iter_mut()
                        .find(|x| x["name"] == c["name"])
                        .unwrap();
                    target["image"] = c["image"].clone();
                }
                d["metadata"]["generation"] = json!(5);
                d["metadata"]["resourceVersion"] = json!("1005");
                Reply::Json(200, d.clone())
            }
            _ => Reply::Text(405, "method not allowed".into()),
        }
    });
    (handler, shared)
}

pub(super) fn k8s_target(base: &str) -> deploy_core::Target {
    target(
        TargetType::K8sDeployment,
        ApiConnection::Kubernetes {
            api_server: Some(HttpUrl::parse(base).unwrap()),
            namespace: ResourceName::parse("prod").unwrap(),
            deployment: ResourceName::parse("web").unwrap(),
            container: ResourceName::parse("web").unwrap(),
            credential_ref: Some(CredentialRef::parse("env:KUBE_TOKEN").unwrap()),
            ca_ref: None,
            auth: deploy_core::KubeAuth::Token,
        },
    )
}

#[tokio::test]
async fn deploy_patches_one_container_and_waits_like_rollout_status() {
    let (handler, state) = k8s_handler(Outcome::Succeeds);
    let fake = Fake::start(handler).await;
    let t = k8s_target(&fake.base);
    let exec = executor(&[("env:KUBE_TOKEN", TOKEN)]);
    let (c, sink) = ctx(5_000);
    let result = exec.deploy(&request(&t, 2), &c).await;
    let result = result.unwrap_or_else(|e| panic!("{e:?}"));
    assert!(result.changed);
    assert_eq!(result.previous_digest, Some(digest(1)));
    let requests = fake.requests();
    assert_eq!(requests[1].method, "PATCH");
    assert_eq!(
        requests[1].header("content-type"),
        "application/strategic-merge-patch+json"
    );
    assert_eq!(
        requests[1].json(),
        json!({"metadata": {"resourceVersion": "1001"},
               "spec": {"template": {"spec": {"containers": [{"name": "web", "image": image(2)}]}}}})
    );
    assert!(
        requests
            .iter()
            .all(|r| r.header("authorization") == format!("Bearer {TOKEN}"))
    );
    // Each read shows the state before that read's controller step: generation not yet
    // observed, then updated 1..3 with old replicas and availability lagging; done on read 6.
    assert_eq!(requests.len(), 2 + 6, "{:?}", fake.calls());
    let d = state.lock().unwrap().clone();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][1]["image"],
        "envoyproxy/envoy:v1.30"
    );
    let lines = sink.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("old replicas are pending termination")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("updated replicas are available")),
        "{lines:?}"
    );
    assert_no_secret(&sink, TOKEN);

    assert_redeploy_is_a_no_op(&exec, &t).await;
    assert_eq!(
        fake.requests()
            .iter()
            .filter(|r| r.method == "PATCH")
            .count(),
        1
    );
}

#[tokio::test]
async fn progress_deadline_exceeded_is_a_permanent_rollout_failure() {
    let (handler, _) = k8s_handler(Outcome::DeadlineExceeded);
    let fake = Fake::start(handler).await;
    let err = deploy_failure(&k8s_target(&fake.base), &[("env:KUBE_TOKEN", TOKEN)], 5_000).await;
    assert!(matches!(err, ExecError::RolloutFailed { .. }), "{err:?}");
    assert!(
        err.to_string().contains("ProgressDeadlineExceeded"),
        "{err}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_rollout_that_never_progresses_hits_our_deadline() {
    let (handler, _) = k8s_handler(Outcome::Never);
    let fake = Fake::start(handler).await;
    let err = deploy_failure(&k8s_target(&fake.base), &[("env:KUBE_TOKEN", TOKEN)], 300).await;
    assert!(matches!(err, ExecError::Timeout { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("waiting for generation 5 to be observed"),
        "{err}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_concurrent_change_is_a_retryable_409_conflict() {
    let (handler, state) = k8s_handler(Outcome::Concurrent);
    let fake = Fake::start(handler).await;
    let err = deploy_failure(&k8s_target(&fake.base), &[("env:KUBE_TOKEN", TOKEN)], 5_000).await;
    assert!(matches!(err, ExecError::ApiConflict { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(
        err.to_string().contains("the object has been modified"),
        "{err}"
    );
    assert_eq!(
        state.lock().unwrap()["spec"]["template"]["spec"]["containers"][0]["image"],
        image(1)
    );
}

#[tokio::test]
async fn a_bad_ca_certificate_is_a_permanent_input_error() {
    let mut t = k8s_target("https://127.0.0.1:9");
    if let deploy_core::Connection::Api(ApiConnection::Kubernetes { ca_ref, .. }) =
        &mut t.connection
    {
        *ca_ref = Some(CredentialRef::parse("env:KUBE_CA").unwrap());
    }
    let (c, _) = ctx(5_000);
    let result = executor(&[("env:KUBE_TOKEN", TOKEN), ("env:KUBE_CA", "not a pem")])
        .deploy(&request(&t, 2), &c)
        .await;
    let err = result.unwrap_err().error;
    assert!(matches!(err, ExecError::InvalidInput { .. }), "{err:?}");
    assert!(err.to_string().contains("ca certificate"), "{err}");
}

#[tokio::test]
async fn auth_failures_are_permanent_and_server_and_transport_failures_retry() {
    super::fake::check_error_classes(k8s_target, &[("env:KUBE_TOKEN", TOKEN)]).await;
}

#[tokio::test]
async fn cancel_during_the_wait_is_a_permanent_cancelled_error() {
    let (handler, _) = k8s_handler(Outcome::Never);
    let fake = Fake::start(handler).await;
    let (c, _) = ctx(10_000);
    let cancel = c.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        cancel.cancel();
    });
    let result = executor(&[("env:KUBE_TOKEN", TOKEN)])
        .deploy(&request(&k8s_target(&fake.base), 2), &c)
        .await;
    let err = result.unwrap_err().error;
    assert!(matches!(err, ExecError::Cancelled { .. }), "{err:?}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn the_registry_routes_api_targets_to_the_api_executor() {
    let mut registry = crate::ExecutorRegistry::new();
    registry.register(
        deploy_core::ExecutionModel::Api,
        std::sync::Arc::new(executor(&[])),
    );
    let t = k8s_target("http://127.0.0.1:9");
    let chosen = registry.for_target(&t).unwrap();
    let (c, _) = ctx(1_000);
    let cmd = deploy_core::CommandSpec::new(vec!["true".into()]).unwrap();
    let err = chosen.run_command(&t, &cmd, &c).await.unwrap_err();
    assert!(matches!(err, ExecError::NotSupported { .. }), "{err:?}");
}
