//! The real emulators: moto_server for ECS and kmock for Kubernetes, started on free loopback ports.
//!
//! They check request shapes against implementations nobody here wrote. Their limits
//! (../shared/peers.md): moto never makes a new deployment PRIMARY, kmock runs no
//! controllers and merges lists by replacing them; rollout progress is tested on the fakes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use deploy_core::testing::{digest, name};
use deploy_core::{ApiConnection, ResourceName};
use serde_json::{Value, json};

use super::ecs::ecs_target;
use super::fake::{ctx, executor, image, request};
use super::k8s::k8s_target;
use crate::errors::ExecError;
use crate::executor::Executor;

const HINT: &str = "run scripts/peers/api.sh (python3 -m pip install 'moto[server]' kmock)";

/// A child process killed on drop.
pub(super) struct Emulator {
    child: Child,
    pub(super) base: String,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) until `port` on loopback accepts connections.
async fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited with {status} before listening; {HINT}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not listen on 127.0.0.1:{port} within 15 s; {HINT}");
}

pub(super) async fn moto() -> Emulator {
    let program = deploy_testkit::require_program("moto_server", &[], HINT).unwrap();
    let port = deploy_testkit::free_port().unwrap();
    let mut child = Command::new(program)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start moto_server: {e}; {HINT}"));
    wait_for_port(port, &mut child, "moto_server").await;
    Emulator {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

/// One unsigned-but-scoped ECS call (moto checks the credential scope, not the signature).
async fn ecs_setup(base: &str, action: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{base}/"))
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/eu-west-1/ecs/aws4_request, SignedHeaders=host, Signature=0",
        )
        .header("x-amz-target", format!("AmazonEC2ContainerServiceV20141113.{action}"))
        .header("content-type", "application/x-amz-json-1.1")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{action}: {}", r.status());
    r.json().await.unwrap()
}

/// The fakes' ECS target with another service name.
fn moto_target(base: &str, service: &str) -> deploy_core::Target {
    let mut t = ecs_target(base);
    if let deploy_core::Connection::Api(ApiConnection::Ecs { service: s, .. }) = &mut t.connection {
        *s = ResourceName::parse(service).unwrap();
    }
    t
}

#[tokio::test]
async fn ecs_requests_are_understood_by_moto_server() {
    let moto = moto().await;
    let base = moto.base.as_str();
    ecs_setup(base, "CreateCluster", json!({"clusterName": "prod"})).await;
    ecs_setup(
        base,
        "RegisterTaskDefinition",
        json!({"family": "web", "networkMode": "bridge", "containerDefinitions": [
            {"name": "web", "image": image(1), "memory": 128, "portMappings": [{"containerPort": 8080}]},
            {"name": "envoy", "image": "envoyproxy/envoy:v1.30", "memory": 64}
        ]}),
    )
    .await;
    ecs_setup(
        base,
        "CreateService",
        json!({"cluster": "prod", "serviceName": "web", "taskDefinition": "web:1", "desiredCount": 2}),
    )
    .await;
    let t = moto_target(base, "web");
    let exec = executor(&[("env:AWS_KEYS", "AKIDTEST:moto-secret-key")]);

    let (c, _) = ctx(10_000);
    assert_eq!(
        exec.inspect(&t, &name("web"), &c).await.unwrap(),
        Some(digest(1))
    );

    // moto never promotes the new deployment to PRIMARY: the wait ends at the deadline,
    // after DescribeServices, DescribeTaskDefinition, RegisterTaskDefinition and UpdateService succeeded.
    let (c, _) = ctx(1_500);
    let result = exec.deploy(&request(&t, 2), &c).await;
    let err = result.clone().unwrap_err().error;
    assert!(matches!(err, ExecError::Timeout { .. }), "{err:?}");
    assert!(
        err.to_string().contains(
            "PRIMARY deployment runs arn:aws:ecs:eu-west-1:123456789012:task-definition/web:1"
        ),
        "{err}"
    );

    let service = ecs_setup(
        base,
        "DescribeServices",
        json!({"cluster": "prod", "services": ["web"]}),
    )
    .await;
    let new_arn = service["services"][0]["taskDefinition"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(new_arn.ends_with("task-definition/web:2"), "{service}");
    let def = ecs_setup(
        base,
        "DescribeTaskDefinition",
        json!({"taskDefinition": new_arn}),
    )
    .await;
    let containers = &def["taskDefinition"]["containerDefinitions"];
    assert_eq!(containers[0]["image"], image(2));
    assert_eq!(containers[0]["memory"], 128);
    assert_eq!(containers[0]["portMappings"][0]["containerPort"], 8080);
    assert_eq!(containers[1]["image"], "envoyproxy/envoy:v1.30");
    assert_eq!(def["taskDefinition"]["networkMode"], "bridge");

    let (c, _) = ctx(10_000);
    assert_eq!(
        exec.inspect(&t, &name("web"), &c).await.unwrap(),
        Some(digest(2))
    );

    // An unknown service: moto answers with `failures`, a permanent error naming it.
    let (c, _) = ctx(10_000);
    let err = exec
        .inspect(&moto_target(base, "nope"), &name("web"), &c)
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::ApiResponse { .. }), "{err:?}");
    assert!(
        err.to_string().contains("service `nope` in cluster `prod`"),
        "{err}"
    );
    assert!(!err.is_retryable());
}

/// kmock as a standalone server (it ships no CLI server): prints its port, runs until killed.
const KMOCK_SERVER: &str = r#"
import asyncio, kmock
async def main():
    async with kmock.KubernetesEmulator() as k, kmock.Server(k) as srv:
        print(srv.port, flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"#;

fn kmock() -> Emulator {
    let mut child = Command::new("python3")
        .args(["-c", KMOCK_SERVER])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start python3 for kmock: {e}; {HINT}"));
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let port: u16 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("kmock did not print its port (got {line:?}); {HINT}"));
    Emulator {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

#[tokio::test]
async fn kubernetes_requests_are_understood_by_kmock() {
    let kmock = kmock();
    let base = kmock.base.as_str();
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{base}/apis/apps/v1/namespaces/prod/deployments"))
        .json(&json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "prod", "generation": 1},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "web", "image": image(1)}]}}},
            "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}
        }))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());
    let t = k8s_target(base);
    let exec = executor(&[("env:KUBE_TOKEN", "kmock-token")]);
    let (c, _) = ctx(10_000);
    assert_eq!(
        exec.inspect(&t, &name("web"), &c).await.unwrap(),
        Some(digest(1))
    );

    // kmock keeps the status we created (no controller) and does not bump the generation,
    // so the rollout counts as done once the patch is applied.
    let (c, _) = ctx(10_000);
    let result = exec.deploy(&request(&t, 2), &c).await;
    let result = result.unwrap_or_else(|e| panic!("{e:?}"));
    assert!(result.changed);
    let stored: Value = client
        .get(format!(
            "{base}/apis/apps/v1/namespaces/prod/deployments/web"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stored["spec"]["template"]["spec"]["containers"][0]["image"],
        image(2),
        "{stored}"
    );
    assert_eq!(stored["spec"]["replicas"], 2, "{stored}");
    let (c, _) = ctx(10_000);
    assert_eq!(
        exec.inspect(&t, &name("web"), &c).await.unwrap(),
        Some(digest(2))
    );

    // A Deployment that does not exist: kmock's 404 is a permanent error.
    let mut missing = t.clone();
    if let deploy_core::Connection::Api(ApiConnection::Kubernetes { deployment, .. }) =
        &mut missing.connection
    {
        *deployment = ResourceName::parse("nope").unwrap();
    }
    let (c, _) = ctx(10_000);
    let err = exec.inspect(&missing, &name("web"), &c).await.unwrap_err();
    assert!(
        matches!(err, ExecError::ApiStatus { status: 404, .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn kubernetes_tls_trusts_the_cluster_ca_from_ca_ref_only() {
    let dir = deploy_testkit::temp_dir("api-tls").unwrap();
    deploy_testkit::TestCertificates::create(dir.path()).unwrap();
    let port = deploy_testkit::free_port().unwrap();
    // `openssl s_server -www` answers every GET with an HTML status page over TLS.
    let mut child = Command::new("openssl")
        .current_dir(dir.path())
        .args([
            "s_server",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-cert",
            "leaf.pem",
            "-key",
            "leaf.key",
            "-www",
            "-quiet",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port, &mut child, "openssl s_server").await;
    let server = Emulator {
        child,
        base: format!("https://127.0.0.1:{port}"),
    };
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    let exec = executor(&[("env:KUBE_TOKEN", "tls-token"), ("env:KUBE_CA", &ca)]);

    // Without the CA: the certificate is not trusted, a permanent error that names ca_ref.
    let t = k8s_target(&server.base);
    let (c, _) = ctx(10_000);
    let err = exec.inspect(&t, &name("web"), &c).await.unwrap_err();
    assert!(matches!(err, ExecError::TlsCertificate { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("ca_ref"), "{err}");

    // With it: the handshake succeeds and the HTML page is refused as a non-JSON answer.
    let mut t = t;
    if let deploy_core::Connection::Api(ApiConnection::Kubernetes { ca_ref, .. }) =
        &mut t.connection
    {
        *ca_ref = Some(deploy_core::CredentialRef::parse("env:KUBE_CA").unwrap());
    }
    let (c, _) = ctx(10_000);
    let err = exec.inspect(&t, &name("web"), &c).await.unwrap_err();
    assert!(matches!(err, ExecError::ApiResponse { .. }), "{err:?}");
    assert!(
        err.to_string().contains("a JSON answer to read deployment"),
        "{err}"
    );
}
