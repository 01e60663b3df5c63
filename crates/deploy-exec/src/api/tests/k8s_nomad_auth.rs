//! Kubernetes and Nomad credentials end to end over TLS fakes: kubeconfig client certificates, a rotating service-account token, Nomad mutual TLS and ACL tokens, only the given CA trusted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use deploy_core::testing::{digest, name};
use deploy_core::{
    ApiConnection, CredentialRef, HttpUrl, KubeAuth, ResourceName, TargetType, UnixPath,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

use super::fake::{
    Fake, Handler, Recorded, Reply, assert_no_secret, ctx, executor, request, target,
};
use super::{k8s, nomad};
use crate::api::InClusterConfig;
use crate::errors::ExecError;
use crate::executor::Executor;

/// A test CA, the 127.0.0.1 server certificate and a client certificate it signed.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn create() -> Self {
        let dir = deploy_testkit::temp_dir("k8s-nomad-pki").unwrap();
        deploy_testkit::TestCertificates::create(dir.path()).unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .current_dir(dir.path())
                .args(args)
                .output()
                .expect("openssl (apt-get install openssl)");
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
        };
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "client.key",
            "-out",
            "client.csr",
            "-subj",
            "/CN=deployd",
        ]);
        std::fs::write(
            dir.path().join("client.ext"),
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "client.pem",
            "-extfile",
            "client.ext",
            "-days",
            "2",
        ]);
        Self { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.path(file)).unwrap()
    }

    /// The fake's TLS config; with `require_client_cert`, only clients holding a
    /// certificate signed by the test CA complete the handshake.
    fn server(&self, require_client_cert: bool) -> Arc<ServerConfig> {
        let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(self.path("leaf.pem"))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_file(self.path("leaf.key")).unwrap();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if require_client_cert {
            let mut roots = RootCertStore::empty();
            for ca in CertificateDer::pem_file_iter(self.path("ca.pem")).unwrap() {
                roots.add(ca.unwrap()).unwrap();
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        Arc::new(builder.with_single_cert(certs, key).unwrap())
    }
}

fn k8s_with(auth: KubeAuth) -> deploy_core::Target {
    target(
        TargetType::K8sDeployment,
        ApiConnection::Kubernetes {
            api_server: None,
            namespace: ResourceName::parse("prod").unwrap(),
            deployment: ResourceName::parse("web").unwrap(),
            container: ResourceName::parse("web").unwrap(),
            credential_ref: None,
            ca_ref: None,
            auth,
        },
    )
}

fn kubeconfig(dir: &Path, server: &str, user: &str) -> KubeAuth {
    let config = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
         clusters:\n- name: fake\n  cluster:\n    server: {server}\n    certificate-authority: ca.pem\n\
         contexts:\n- name: test\n  context:\n    cluster: fake\n    user: deployd\n\
         users:\n- name: deployd\n  user:\n{user}\n"
    );
    let path = dir.join("kubeconfig");
    std::fs::write(&path, config).unwrap();
    KubeAuth::Kubeconfig {
        path: UnixPath::parse(path.to_str().unwrap()).unwrap(),
        context: None,
    }
}

#[tokio::test]
async fn a_kubeconfig_client_certificate_opens_a_cluster_that_demands_one() {
    let pki = Pki::create();
    let (handler, _) = k8s::k8s_handler(k8s::Outcome::Succeeds);
    let fake = Fake::start_tls(handler, pki.server(true)).await;
    let exec = executor(&[]);

    // Files next to the kubeconfig: the client certificate makes the handshake.
    let with_cert = k8s_with(kubeconfig(
        pki.dir.path(),
        &fake.base,
        "    client-certificate: client.pem\n    client-key: client.key",
    ));
    let (c, sink) = ctx(10_000);
    let result = exec.deploy(&request(&with_cert, 2), &c).await;
    let result = result.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(result.previous_digest, Some(digest(1)));
    let (c, _) = ctx(10_000);
    assert_eq!(
        exec.inspect(&with_cert, &name("web"), &c).await.unwrap(),
        Some(digest(2))
    );
    // No bearer token was sent: the certificate authenticated.
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.header("authorization").is_empty())
    );
    let key = pki.read("client.key");
    for line in key.lines().filter(|l| !l.starts_with("-----")) {
        assert_no_secret(&sink, line);
    }
    let served = fake.requests().len();

    // The same cluster and CA, a token instead of the certificate: the handshake fails,
    // nothing reaches the server, and the error says so without a retry storm.
    let without = k8s_with(kubeconfig(
        pki.dir.path(),
        &fake.base,
        "    token: not-enough",
    ));
    let (c, _) = ctx(10_000);
    let err = exec.inspect(&without, &name("web"), &c).await.unwrap_err();
    assert!(matches!(err, ExecError::TlsCertificate { .. }), "{err:?}");
    assert!(!err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("client certificate"), "{err}");
    assert_eq!(fake.requests().len(), served);
}

#[tokio::test]
async fn a_rotating_service_account_token_is_read_again_mid_rollout() {
    let pki = Pki::create();
    let token_path = pki.path("sa-token");
    std::fs::write(&token_path, "token-a\n").unwrap();
    // The fake accepts one token at a time. The PATCH rotates it to B and the test's
    // "kubelet" rewrites the file at once; three reads later it rotates to C, and the
    // file is rewritten only when the old token is refused (a 401 the executor must
    // answer by reading the file again).
    let (inner, _) = k8s::k8s_handler(k8s::Outcome::Succeeds);
    let accepted = Arc::new(Mutex::new(String::from("token-a")));
    let reads_after_b = Arc::new(Mutex::new(0u32));
    let rotated_to_c = Arc::new(Mutex::new(false));
    let file = token_path.clone();
    let handler: Handler = Arc::new(move |r: &Recorded| {
        let mut now = accepted.lock().unwrap();
        if r.header("authorization") != format!("Bearer {now}") {
            let mut rotated = rotated_to_c.lock().unwrap();
            if *now == "token-c" && !*rotated {
                std::fs::write(&file, "token-c\n").unwrap();
                *rotated = true;
            }
            return Reply::Text(401, format!("Unauthorized: {}", r.header("authorization")));
        }
        let reply = inner(r);
        if r.method == "PATCH" {
            *now = "token-b".into();
            std::fs::write(&file, "token-b\n").unwrap();
        } else if *now == "token-b" {
            let mut n = reads_after_b.lock().unwrap();
            *n += 1;
            if *n == 3 {
                *now = "token-c".into();
            }
        }
        reply
    });
    let fake = Fake::start_tls(handler, pki.server(false)).await;
    let exec = executor(&[]).with_in_cluster(InClusterConfig {
        token_path: token_path.clone(),
        ca_path: pki.path("ca.pem"),
        api_server: Some(fake.base.clone()),
    });
    let t = k8s_with(KubeAuth::InCluster);
    let (c, sink) = ctx(10_000);
    let result = exec.deploy(&request(&t, 2), &c).await;
    assert!(result.is_ok(), "{result:?}");

    let sent: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.header("authorization")))
        .collect();
    assert_eq!(sent[0], "GET Bearer token-a", "{sent:?}");
    assert_eq!(sent[1], "PATCH Bearer token-a", "{sent:?}");
    assert_eq!(sent[2], "GET Bearer token-b", "{sent:?}");
    // Three reads accepted with B, then one refused after the rotation to C.
    let with_b = sent
        .iter()
        .filter(|s| s.as_str() == "GET Bearer token-b")
        .count();
    assert_eq!(with_b, 4, "{sent:?}");
    let c_at = sent.iter().position(|s| s == "GET Bearer token-c").unwrap();
    assert_eq!(
        sent[c_at - 1],
        "GET Bearer token-b",
        "retried right after the 401: {sent:?}"
    );
    assert!(
        sink.lines()
            .iter()
            .any(|l| l.contains("answered 401; reading the token file again")),
        "{:?}",
        sink.lines()
    );
    for token in ["token-a", "token-b", "token-c"] {
        assert_no_secret(&sink, token);
    }

    // A token that stays wrong: one re-read, then a permanent error without the token.
    std::fs::write(&token_path, "token-stale\n").unwrap();
    let before = fake.requests().len();
    let (c, _) = ctx(10_000);
    let err = exec.inspect(&t, &name("web"), &c).await.unwrap_err();
    assert!(
        matches!(err, ExecError::ApiStatus { status: 401, .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert!(!err.to_string().contains("token-stale"), "{err}");
    assert_eq!(
        fake.requests().len(),
        before + 2,
        "one request and one retry"
    );
}

const ACL: &str = "8d1c3f52-nomad-acl-secret";

fn nomad_mtls(base: &str, token: Option<&str>) -> deploy_core::Target {
    target(
        TargetType::NomadJob,
        ApiConnection::Nomad {
            address: HttpUrl::parse(base).unwrap(),
            namespace: Some(ResourceName::parse("prod").unwrap()),
            region: Some(ResourceName::parse("eu").unwrap()),
            job: ResourceName::parse("web").unwrap(),
            task_group: ResourceName::parse("app").unwrap(),
            task: ResourceName::parse("web").unwrap(),
            credential_ref: token.map(|t| CredentialRef::parse(t).unwrap()),
            ca_ref: Some(CredentialRef::parse("env:NOMAD_CA").unwrap()),
            client_cert_ref: Some(CredentialRef::parse("env:NOMAD_CERT").unwrap()),
            client_key_ref: Some(CredentialRef::parse("env:NOMAD_KEY").unwrap()),
        },
    )
}

#[tokio::test]
async fn nomad_with_mutual_tls_and_an_acl_token() {
    let pki = Pki::create();
    let (inner, _) = nomad::nomad_handler(nomad::Outcome::Succeeds(1), 0);
    // Nomad answers an unknown or missing ACL token with 403 "Permission denied".
    let handler: Handler = Arc::new(move |r: &Recorded| {
        if r.header("x-nomad-token") == ACL {
            inner(r)
        } else {
            Reply::Text(
                403,
                format!("Permission denied (token {:?})", r.header("x-nomad-token")),
            )
        }
    });
    let fake = Fake::start_tls(handler, pki.server(true)).await;
    let (ca, cert, key) = (
        pki.read("ca.pem"),
        pki.read("client.pem"),
        pki.read("client.key"),
    );
    let secrets = [
        ("env:NOMAD_CA", ca.as_str()),
        ("env:NOMAD_CERT", cert.as_str()),
        ("env:NOMAD_KEY", key.as_str()),
        ("env:NOMAD_TOKEN", ACL),
        ("env:WRONG_TOKEN", "0000-wrong-acl-token"),
    ];
    let exec = executor(&secrets);

    let good = nomad_mtls(&fake.base, Some("env:NOMAD_TOKEN"));
    let (c, sink) = ctx(10_000);
    let result = exec.deploy(&request(&good, 2), &c).await;
    assert!(result.is_ok(), "{result:?}");
    let (c, _) = ctx(10_000);
    assert_eq!(
        exec.inspect(&good, &name("web"), &c).await.unwrap(),
        Some(digest(2))
    );
    assert_no_secret(&sink, ACL);

    // A wrong token and no token: 403, permanent, the token in neither error nor log.
    for token in [Some("env:WRONG_TOKEN"), None] {
        let (c, sink) = ctx(10_000);
        let result = exec
            .deploy(&request(&nomad_mtls(&fake.base, token), 3), &c)
            .await;
        let err = result.unwrap_err().error;
        assert!(
            matches!(err, ExecError::ApiStatus { status: 403, .. }),
            "{err:?}"
        );
        assert!(!err.is_retryable(), "{err:?}");
        assert!(!err.to_string().contains("0000-wrong-acl-token"), "{err}");
        assert_no_secret(&sink, "0000-wrong-acl-token");
    }

    // Without the client certificate the handshake fails before any request.
    let before = fake.requests().len();
    let mut no_cert = good.clone();
    if let deploy_core::Connection::Api(ApiConnection::Nomad {
        client_cert_ref,
        client_key_ref,
        ..
    }) = &mut no_cert.connection
    {
        *client_cert_ref = None;
        *client_key_ref = None;
    }
    let (c, _) = ctx(10_000);
    let err = exec.inspect(&no_cert, &name("web"), &c).await.unwrap_err();
    assert!(matches!(err, ExecError::TlsCertificate { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(fake.requests().len(), before);

    // A key that is not a key: refused before connecting, without echoing it.
    let bad = executor(&[
        ("env:NOMAD_CA", ca.as_str()),
        ("env:NOMAD_CERT", cert.as_str()),
        ("env:NOMAD_KEY", "not-a-pem-key-secret"),
        ("env:NOMAD_TOKEN", ACL),
    ]);
    let (c, _) = ctx(10_000);
    let err = bad.inspect(&good, &name("web"), &c).await.unwrap_err();
    assert!(matches!(err, ExecError::InvalidInput { .. }), "{err:?}");
    assert!(
        err.to_string().contains("nomad client certificate"),
        "{err}"
    );
    assert!(!err.to_string().contains("not-a-pem-key-secret"), "{err}");
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_than_the_given_one_is_refused() {
    // The fake's certificate chains to `pki`'s CA; the target names `other`'s CA.
    let pki = Pki::create();
    let other = deploy_testkit::temp_dir("k8s-nomad-other-ca").unwrap();
    deploy_testkit::TestCertificates::create(other.path()).unwrap();
    let other_ca = std::fs::read_to_string(other.path().join("ca.pem")).unwrap();
    let (handler, _) = k8s::k8s_handler(k8s::Outcome::Succeeds);
    let fake = Fake::start_tls(handler, pki.server(false)).await;
    let right_ca = pki.read("ca.pem");
    let secrets = [
        ("env:KUBE_TOKEN", "kube-token-never-sent"),
        ("env:NOMAD_TOKEN", "nomad-token-never-sent"),
        ("env:KUBE_CA", other_ca.as_str()),
        ("env:RIGHT_CA", right_ca.as_str()),
    ];
    let exec = executor(&secrets);
    let with_ca = |ca: &str| {
        let mut t = k8s::k8s_target(&fake.base);
        if let deploy_core::Connection::Api(ApiConnection::Kubernetes { ca_ref, .. }) =
            &mut t.connection
        {
            *ca_ref = Some(CredentialRef::parse(ca).unwrap());
        }
        t
    };

    // The right CA: the call goes through (the fake itself is sound).
    let (c, _) = ctx(10_000);
    assert_eq!(
        exec.inspect(&with_ca("env:RIGHT_CA"), &name("web"), &c)
            .await
            .unwrap(),
        Some(digest(1))
    );
    let served = fake.requests().len();

    // Another CA: the handshake fails, permanently, and no request (no token) is sent.
    let (c, sink) = ctx(10_000);
    let err = exec
        .inspect(&with_ca("env:KUBE_CA"), &name("web"), &c)
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::TlsCertificate { .. }), "{err:?}");
    assert!(!err.is_retryable(), "{err:?}");
    assert_eq!(fake.requests().len(), served);
    assert_no_secret(&sink, "kube-token-never-sent");

    // The same for Nomad's CA.
    let mut t = nomad::nomad_target(&fake.base);
    if let deploy_core::Connection::Api(ApiConnection::Nomad { ca_ref, .. }) = &mut t.connection {
        *ca_ref = Some(CredentialRef::parse("env:KUBE_CA").unwrap());
    }
    let (c, sink) = ctx(10_000);
    let err = exec.inspect(&t, &name("web"), &c).await.unwrap_err();
    assert!(matches!(err, ExecError::TlsCertificate { .. }), "{err:?}");
    assert_eq!(fake.requests().len(), served);
    assert_no_secret(&sink, "nomad-token-never-sent");
}

/// The child of [`the_system_roots_are_not_consulted_when_a_ca_is_given`].
const SYSTEM_ROOTS_CHILD: &str =
    "api::tests::k8s_nomad_auth::system_roots_child_with_ssl_cert_file";

/// The fake's CA is made a system root (`SSL_CERT_FILE`, which the platform verifier
/// reads); a target that names another CA must still be refused. The environment
/// variable is set for a child run of this test binary, not in this process.
#[test]
fn the_system_roots_are_not_consulted_when_a_ca_is_given() {
    let dir = deploy_testkit::temp_dir("system-roots").unwrap();
    let roots = dir.path().join("roots.pem");
    let out = Command::new(std::env::current_exe().unwrap())
        .args([SYSTEM_ROOTS_CHILD, "--exact", "--ignored", "--nocapture"])
        .env("SSL_CERT_FILE", &roots)
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{out:?}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(roots.exists(), "the child ran and wrote the roots file");
}

#[tokio::test]
#[ignore = "run by the_system_roots_are_not_consulted_when_a_ca_is_given with SSL_CERT_FILE"]
async fn system_roots_child_with_ssl_cert_file() {
    let Some(roots) = std::env::var_os("SSL_CERT_FILE") else {
        return;
    };
    let pki = Pki::create();
    // The fake's CA becomes a system root before any client is built.
    std::fs::copy(pki.path("ca.pem"), &roots).unwrap();
    let other = deploy_testkit::temp_dir("system-roots-other-ca").unwrap();
    deploy_testkit::TestCertificates::create(other.path()).unwrap();
    let other_ca = std::fs::read_to_string(other.path().join("ca.pem")).unwrap();
    let (handler, _) = k8s::k8s_handler(k8s::Outcome::Succeeds);
    let fake = Fake::start_tls(handler, pki.server(false)).await;
    let exec = executor(&[
        ("env:KUBE_TOKEN", "kube-token-never-sent"),
        ("env:OTHER_CA", other_ca.as_str()),
    ]);

    // No CA given: the system roots (now holding the fake's CA) are used.
    let (c, _) = ctx(10_000);
    let plain = k8s::k8s_target(&fake.base);
    assert_eq!(
        exec.inspect(&plain, &name("web"), &c).await.unwrap(),
        Some(digest(1))
    );
    let served = fake.requests().len();

    // Another CA given: only it is trusted, the system roots are not.
    let mut t = plain.clone();
    if let deploy_core::Connection::Api(ApiConnection::Kubernetes { ca_ref, .. }) =
        &mut t.connection
    {
        *ca_ref = Some(CredentialRef::parse("env:OTHER_CA").unwrap());
    }
    let (c, _) = ctx(10_000);
    let err = exec.inspect(&t, &name("web"), &c).await.unwrap_err();
    assert!(matches!(err, ExecError::TlsCertificate { .. }), "{err:?}");
    assert_eq!(fake.requests().len(), served);
}
