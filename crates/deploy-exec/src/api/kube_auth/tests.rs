//! Tests of kubeconfig parsing (contexts, inline and file forms, refused fields) and in-cluster resolution.

use std::path::Path;

use base64::Engine as _;
use deploy_core::{ApiConnection, KubeAuth, KubeContext, ResourceName, UnixPath};

use super::{InClusterConfig, KubeAccess, KubeToken, resolve};
use crate::errors::ExecError;
use crate::secrets::EnvSecrets;

const CA: &str = "-----BEGIN CERTIFICATE-----\nQ0E=\n-----END CERTIFICATE-----\n";
const CERT: &str = "-----BEGIN CERTIFICATE-----\nQ0VSVA==\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nS0VZ\n-----END PRIVATE KEY-----\n";
const TOKEN: &str = "kubeconfig-token-secret-value";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn connection(path: &Path, context: Option<&str>) -> ApiConnection {
    ApiConnection::Kubernetes {
        api_server: None,
        namespace: ResourceName::parse("prod").unwrap(),
        deployment: ResourceName::parse("web").unwrap(),
        container: ResourceName::parse("web").unwrap(),
        credential_ref: None,
        ca_ref: None,
        auth: KubeAuth::Kubeconfig {
            path: UnixPath::parse(path.to_str().unwrap()).unwrap(),
            context: context.map(|c| KubeContext::parse(c).unwrap()),
        },
    }
}

/// Writes `kubeconfig` into a fresh directory (with the PEM files and token file
/// that file forms name, relative to it) and resolves `context`.
async fn load(kubeconfig: &str, context: Option<&str>) -> Result<KubeAccess, ExecError> {
    load_in(
        &deploy_testkit::temp_dir("kubeconfig").unwrap(),
        kubeconfig,
        context,
    )
    .await
}

async fn load_in(
    dir: &tempfile::TempDir,
    kubeconfig: &str,
    context: Option<&str>,
) -> Result<KubeAccess, ExecError> {
    for (name, content) in [
        ("ca.pem", CA),
        ("client.pem", CERT),
        ("client.key", KEY),
        ("token", "file-token-value\n"),
    ] {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let path = dir.path().join("config");
    std::fs::write(&path, kubeconfig).unwrap();
    resolve(
        &connection(&path, context),
        &EnvSecrets,
        &InClusterConfig::default(),
    )
    .await
}

/// Two clusters, two users, three contexts; `{user_a}` and `{cluster_a}` are spliced in.
fn two_contexts(cluster_a: &str, user_a: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Config
current-context: staging
preferences: {{}}
clusters:
- name: staging-cluster
  cluster:
    server: https://staging.example:6443
{cluster_a}
- name: prod-cluster
  cluster:
    server: https://prod.example:6443/
    certificate-authority: ca.pem
contexts:
- name: staging
  context:
    cluster: staging-cluster
    user: staging-user
    namespace: ignored
- name: admin@prod
  context:
    cluster: prod-cluster
    user: prod-user
- name: dangling
  context:
    cluster: nowhere
    user: prod-user
users:
- name: staging-user
  user:
{user_a}
- name: prod-user
  user:
    client-certificate: client.pem
    client-key: client.key
"#
    )
}

fn token(access: &KubeAccess) -> String {
    match &access.token {
        KubeToken::None => "(none)".into(),
        KubeToken::Static(s) => format!("static {}", s.expose()),
        KubeToken::File(p) => format!("file {}", p.file_name().unwrap().to_string_lossy()),
    }
}

#[tokio::test]
async fn contexts_pick_their_cluster_and_user() {
    let config = two_contexts(
        &format!("    certificate-authority-data: {}", b64(CA)),
        &format!("    token: {TOKEN}"),
    );
    // No context named: current-context.
    let a = load(&config, None).await.unwrap();
    assert_eq!(a.server, "https://staging.example:6443");
    assert_eq!(a.ca_pem.as_deref(), Some(CA));
    assert!(a.identity_pem.is_none());
    assert_eq!(token(&a), format!("static {TOKEN}"));

    // A named context: its cluster's CA file and its user's client certificate files.
    let b = load(&config, Some("admin@prod")).await.unwrap();
    assert_eq!(b.server, "https://prod.example:6443");
    assert_eq!(b.ca_pem.as_deref(), Some(CA));
    let identity = b.identity_pem.as_ref().unwrap();
    assert!(
        identity.expose().starts_with(CERT.trim_end()),
        "chain first"
    );
    assert!(identity.expose().ends_with(KEY), "then the key");
    assert_eq!(token(&b), "(none)");

    // A context the file does not have: named, with the ones it has.
    let err = load(&config, Some("prod")).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("context `prod`")
            && text.contains("available: staging, admin@prod, dangling"),
        "{text}"
    );
    assert!(!err.is_retryable());
    // A context whose cluster is missing.
    let err = load(&config, Some("dangling"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("context `dangling` cluster `nowhere`")
            && err.contains("available: staging-cluster, prod-cluster"),
        "{err}"
    );
    // No current-context and none named.
    let err = load(&config.replace("current-context: staging\n", ""), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("current-context"), "{err}");
}

#[tokio::test]
async fn inline_data_and_file_forms_give_the_same_material() {
    let data = two_contexts(
        "",
        &format!(
            "    client-certificate-data: {}\n    client-key-data: {}",
            b64(CERT),
            b64(KEY)
        ),
    );
    let files = two_contexts(
        "    certificate-authority: ca.pem",
        "    client-certificate: client.pem\n    client-key: client.key",
    );
    let a = load(&data, None).await.unwrap();
    let b = load(&files, None).await.unwrap();
    assert_eq!(
        a.identity_pem.unwrap().expose(),
        b.identity_pem.unwrap().expose()
    );
    assert_eq!(a.ca_pem, None, "no CA given: the built-in roots only");
    assert_eq!(b.ca_pem.as_deref(), Some(CA));

    // tokenFile (relative to the kubeconfig) is a file token, re-read per request.
    let dir = deploy_testkit::temp_dir("kubeconfig").unwrap();
    let f = load_in(&dir, &two_contexts("", "    tokenFile: token"), None)
        .await
        .unwrap();
    assert_eq!(token(&f), "file token");
    assert!(f.token.rotates());
    assert_eq!(
        f.token.current().await.unwrap().unwrap().expose(),
        "file-token-value"
    );
    let err = load(&two_contexts("", "    tokenFile: missing"), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing") && err.contains("cannot read"),
        "{err}"
    );

    // Bad base64 is named, not echoed.
    let err = load(
        &two_contexts(
            "",
            "    client-certificate-data: '!!notbase64'\n    client-key: client.key",
        ),
        None,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("client-certificate-data") && !err.contains("notbase64"),
        "{err}"
    );
    // A certificate without its key.
    let err = load(
        &two_contexts("", "    client-certificate: client.pem"),
        None,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("user `staging-user` client-key"), "{err}");
    // A user with nothing to authenticate with.
    let err = load(&two_contexts("", "    {}"), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no credentials"), "{err}");
}

#[tokio::test]
async fn fields_deployd_cannot_honour_are_refused_by_name() {
    for (cluster, user, expected) in [
        (
            "    insecure-skip-tls-verify: true",
            format!("    token: {TOKEN}"),
            "cluster `staging-cluster` insecure-skip-tls-verify `true`: expected false or absent: without verifying",
        ),
        (
            "",
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: aws\n      args: [eks, get-token]".into(),
            "user `staging-user` exec `aws`: expected no exec credential plugin",
        ),
        (
            "",
            "    auth-provider:\n      name: gcp\n      config: {}".into(),
            "user `staging-user` auth-provider `gcp`",
        ),
        (
            "",
            "    username: admin\n    password: hunter22".into(),
            "user `staging-user` username",
        ),
        (
            "",
            format!("    token: {TOKEN}\n    as: system:admin"),
            "user `staging-user` as",
        ),
        (
            "",
            format!("    token: {TOKEN}\n    tokenFile: token"),
            "one of token or tokenFile",
        ),
        (
            "    tls-server-name: other.example",
            format!("    token: {TOKEN}"),
            "tls-server-name",
        ),
        (
            "    proxy-url: http://proxy:3128",
            format!("    token: {TOKEN}"),
            "proxy-url",
        ),
    ] {
        let err = load(&two_contexts(cluster, &user), None).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains(expected), "{expected}: {text}");
        assert!(!text.contains(TOKEN) && !text.contains("hunter22"), "{text}");
        assert!(matches!(err, ExecError::InvalidInput { .. }) && !err.is_retryable());
    }
}

#[tokio::test]
async fn plain_http_servers_only_on_loopback_and_never_with_a_certificate() {
    let with = |server: &str, user: &str| {
        two_contexts("", user).replace("https://staging.example:6443", server)
    };
    let token_user = format!("    token: {TOKEN}");
    let err = load(&with("http://k8s.example:8080", &token_user), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("http://k8s.example:8080") && err.contains("loopback"),
        "{err}"
    );
    assert!(
        load(&with("http://127.0.0.1:8080", &token_user), None)
            .await
            .is_ok()
    );
    let cert_user = "    client-certificate: client.pem\n    client-key: client.key";
    let err = load(&with("http://127.0.0.1:8080", cert_user), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("only presented over TLS"), "{err}");
}

#[tokio::test]
async fn yaml_errors_name_the_place_but_not_the_values() {
    // A token typed where a map belongs: serde's message would quote it.
    let broken = two_contexts("", &format!("    token: {TOKEN}")).replace(
        "  user:\n    client-certificate: client.pem",
        &format!("  user: \"{TOKEN}\"\n  x:\n    client-certificate: client.pem"),
    );
    let err = load(&broken, None).await.unwrap_err().to_string();
    assert!(err.contains("a kubeconfig YAML document"), "{err}");
    assert!(!err.contains(TOKEN), "{err}");
    // The message had a quoted value, and it was blanked.
    assert!(err.contains("\"…\""), "{err}");
    let err = load("clusters: [", None).await.unwrap_err().to_string();
    assert!(err.contains("a kubeconfig YAML document"), "{err}");
}

#[tokio::test]
async fn in_cluster_reads_the_injected_token_and_ca() {
    let dir = deploy_testkit::temp_dir("in-cluster").unwrap();
    std::fs::write(dir.path().join("ca.crt"), CA).unwrap();
    std::fs::write(dir.path().join("token"), "sa-token-1\n").unwrap();
    let config = InClusterConfig {
        token_path: dir.path().join("token"),
        ca_path: dir.path().join("ca.crt"),
        api_server: Some("https://10.96.0.1:443/".into()),
    };
    let mut api = connection(Path::new("/unused"), None);
    if let ApiConnection::Kubernetes { auth, .. } = &mut api {
        *auth = KubeAuth::InCluster;
    }
    let a = resolve(&api, &EnvSecrets, &config).await.unwrap();
    assert_eq!(a.server, "https://10.96.0.1:443");
    assert_eq!(a.ca_pem.as_deref(), Some(CA));
    assert_eq!(
        a.token.current().await.unwrap().unwrap().expose(),
        "sa-token-1"
    );
    // The kubelet rotates the token: the next request reads the new one.
    std::fs::write(dir.path().join("token"), "sa-token-2\n").unwrap();
    assert_eq!(
        a.token.current().await.unwrap().unwrap().expose(),
        "sa-token-2"
    );

    // Outside a pod: the missing token is named by its path.
    std::fs::remove_file(dir.path().join("token")).unwrap();
    let err = resolve(&api, &EnvSecrets, &config).await.unwrap_err();
    assert!(matches!(err, ExecError::Secret { .. }), "{err:?}");
    assert!(err.to_string().contains("token"), "{err}");
}
