//! Where a Kubernetes call's server, CA, client certificate and bearer token come from: a static token, a kubeconfig context, or the pod's service account.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use deploy_core::{ApiConnection, KubeAuth, Secret};
use serde::Deserialize;

use crate::errors::ExecError;
use crate::secrets::SecretsProvider;

/// Where deployd finds its service account when it runs in a pod (`auth.kind = in_cluster`).
///
/// The defaults are the paths the kubelet mounts; tests point them elsewhere.
#[derive(Debug, Clone)]
pub struct InClusterConfig {
    /// The projected service-account token (rotated by the kubelet).
    pub token_path: PathBuf,
    /// The cluster CA.
    pub ca_path: PathBuf,
    /// The API server URL; when `None`, `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`
    /// read at each deploy.
    pub api_server: Option<String>,
}

impl Default for InClusterConfig {
    fn default() -> Self {
        let dir = Path::new("/var/run/secrets/kubernetes.io/serviceaccount");
        Self {
            token_path: dir.join("token"),
            ca_path: dir.join("ca.crt"),
            api_server: None,
        }
    }
}

/// The bearer token of a call (`Debug` shows no secret: [`Secret`] redacts itself).
#[derive(Debug)]
pub(crate) enum KubeToken {
    /// No token: the client certificate authenticates.
    None,
    /// A token fixed for the call (`credential_ref`, a kubeconfig `token`).
    Static(Secret),
    /// A file read before each request, so a rotated token is picked up mid-rollout
    /// (kubeconfig `tokenFile`, the service-account token).
    File(PathBuf),
}

impl KubeToken {
    /// The token for the next request, if any.
    pub(crate) async fn current(&self) -> Result<Option<Secret>, ExecError> {
        match self {
            Self::None => Ok(None),
            Self::Static(s) => Ok(Some(Secret::new(s.expose().trim()))),
            Self::File(path) => {
                let text = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| file_error(path, &format!("cannot read it: {e}")))?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(file_error(path, "the token file is empty"));
                }
                Ok(Some(Secret::new(token)))
            }
        }
    }

    /// True when the token can change between two requests (worth a second try after a 401).
    pub(crate) fn rotates(&self) -> bool {
        matches!(self, Self::File(_))
    }
}

/// Everything a Kubernetes call needs to reach and authenticate to the API server.
#[derive(Debug)]
pub(crate) struct KubeAccess {
    /// Base URL, no trailing slash.
    pub(crate) server: String,
    /// Extra trusted root (PEM).
    pub(crate) ca_pem: Option<String>,
    /// Client certificate chain followed by its private key (PEM).
    pub(crate) identity_pem: Option<Secret>,
    pub(crate) token: KubeToken,
}

/// Resolves a Kubernetes connection's credentials, reading the files it names.
pub(crate) async fn resolve(
    api: &ApiConnection,
    secrets: &dyn SecretsProvider,
    in_cluster: &InClusterConfig,
) -> Result<KubeAccess, ExecError> {
    let ApiConnection::Kubernetes {
        api_server,
        credential_ref,
        ca_ref,
        auth,
        ..
    } = api
    else {
        return Err(ExecError::invalid(
            "kubernetes connection",
            "another platform",
            "kubernetes",
        ));
    };
    match auth {
        KubeAuth::Token => {
            let (Some(server), Some(credential)) = (api_server, credential_ref) else {
                return Err(ExecError::invalid(
                    "kubernetes connection",
                    "auth.kind = token without api_server or credential_ref",
                    "both api_server and credential_ref",
                ));
            };
            let ca_pem = match ca_ref {
                Some(r) => Some(secrets.resolve(r).await?.expose().to_owned()),
                None => None,
            };
            Ok(KubeAccess {
                server: server.as_str().trim_end_matches('/').to_owned(),
                ca_pem,
                identity_pem: None,
                token: KubeToken::Static(secrets.resolve(credential).await?),
            })
        }
        KubeAuth::Kubeconfig { path, context } => {
            let path = Path::new(path.as_str());
            let text = read(path).await?;
            let chosen = select(&text, path, context.as_ref().map(|c| c.as_str()))?;
            chosen.load(path).await
        }
        KubeAuth::InCluster => in_cluster_access(in_cluster).await,
    }
}

async fn in_cluster_access(config: &InClusterConfig) -> Result<KubeAccess, ExecError> {
    let server = match &config.api_server {
        Some(s) => s.trim_end_matches('/').to_owned(),
        None => {
            let var = |name: &str| {
                std::env::var(name).map_err(|_| {
                    ExecError::invalid(
                        "in-cluster kubernetes auth",
                        format!("{name} unset"),
                        "deployd running in a pod, where the kubelet sets KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT",
                    )
                })
            };
            let host = var("KUBERNETES_SERVICE_HOST")?;
            let port = var("KUBERNETES_SERVICE_PORT")?;
            if host.contains(':') {
                format!("https://[{host}]:{port}")
            } else {
                format!("https://{host}:{port}")
            }
        }
    };
    let ca_pem = read(&config.ca_path).await?;
    // Read once now so a missing token fails before the first request, then at each request.
    let token = KubeToken::File(config.token_path.clone());
    token.current().await?;
    Ok(KubeAccess {
        server,
        ca_pem: Some(ca_pem),
        identity_pem: None,
        token,
    })
}

/// A file deployd reads for a credential; errors name the path, never the content.
async fn read(path: &Path) -> Result<String, ExecError> {
    tokio::fs::read_to_string(path)
        .await
        .map_err(|e| file_error(path, &format!("cannot read it: {e}")))
}

fn file_error(path: &Path, detail: &str) -> ExecError {
    ExecError::Secret {
        reference: path.display().to_string(),
        detail: detail.to_owned(),
    }
}

// --- kubeconfig: only the fields deployd acts on, and the ones it must refuse. ---

#[derive(Deserialize)]
struct Kubeconfig {
    #[serde(rename = "current-context", default)]
    current_context: Option<String>,
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
    #[serde(default)]
    users: Vec<NamedUser>,
}

#[derive(Deserialize)]
struct NamedCluster {
    name: String,
    cluster: Cluster,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    server: String,
    #[serde(default)]
    certificate_authority: Option<String>,
    #[serde(default)]
    certificate_authority_data: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
    #[serde(default)]
    tls_server_name: Option<String>,
    #[serde(default)]
    proxy_url: Option<String>,
}

#[derive(Deserialize)]
struct NamedContext {
    name: String,
    context: Context,
}

/// The context's `namespace` is ignored: the target names its namespace.
#[derive(Deserialize)]
struct Context {
    cluster: String,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Deserialize)]
struct NamedUser {
    name: String,
    user: User,
}

/// Not `Debug`: it holds the token and key.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct User {
    #[serde(default)]
    token: Option<String>,
    #[serde(rename = "tokenFile", default)]
    token_file: Option<String>,
    #[serde(default)]
    client_certificate: Option<String>,
    #[serde(default)]
    client_certificate_data: Option<String>,
    #[serde(default)]
    client_key: Option<String>,
    #[serde(default)]
    client_key_data: Option<String>,
    #[serde(default)]
    exec: Option<ExecPlugin>,
    #[serde(default)]
    auth_provider: Option<AuthProvider>,
    #[serde(default)]
    username: Option<serde_yaml::Value>,
    #[serde(default)]
    password: Option<serde_yaml::Value>,
    #[serde(rename = "as", default)]
    impersonate: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
struct ExecPlugin {
    #[serde(default)]
    command: String,
}

#[derive(Deserialize)]
struct AuthProvider {
    #[serde(default)]
    name: String,
}

/// A PEM value given inline (`*-data`, base64) or as a file path.
enum Source {
    Data(Vec<u8>),
    File(PathBuf),
}

/// One context's cluster and user, checked, with the files they name still to read.
struct Chosen {
    context: String,
    server: String,
    ca: Option<Source>,
    cert: Option<Source>,
    key: Option<Source>,
    token: Option<Secret>,
    token_file: Option<PathBuf>,
}

fn invalid(path: &Path, field: impl std::fmt::Display, value: &str, expected: &str) -> ExecError {
    ExecError::invalid(
        format!("kubeconfig `{}` {field}", path.display()),
        value,
        expected,
    )
}

/// Parses `text` (the kubeconfig at `path`) and picks `context` (or `current-context`).
fn select(text: &str, path: &Path, context: Option<&str>) -> Result<Chosen, ExecError> {
    let config: Kubeconfig = serde_yaml::from_str(text).map_err(|e| {
        invalid(
            path,
            "content",
            "(not shown: it may hold credentials)",
            &format!(
                "a kubeconfig YAML document ({})",
                without_values(&e.to_string())
            ),
        )
    })?;
    let name = match context {
        Some(c) => c.to_owned(),
        None => config.current_context.clone().unwrap_or_default(),
    };
    if name.is_empty() {
        return Err(invalid(
            path,
            "current-context",
            "(empty)",
            "a current-context, or a context named on the target (auth.context)",
        ));
    }
    let names = |it: &mut dyn Iterator<Item = &str>| {
        let v: Vec<&str> = it.collect();
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.join(", ")
        }
    };
    let ctx = config
        .contexts
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| {
            invalid(
                path,
                "context",
                &name,
                &format!(
                    "a context of the file; available: {}",
                    names(&mut config.contexts.iter().map(|c| c.name.as_str()))
                ),
            )
        })?;
    let cluster = config
        .clusters
        .iter()
        .find(|c| c.name == ctx.context.cluster)
        .ok_or_else(|| {
            invalid(
                path,
                format_args!("context `{name}` cluster"),
                &ctx.context.cluster,
                &format!(
                    "a cluster of the file; available: {}",
                    names(&mut config.clusters.iter().map(|c| c.name.as_str()))
                ),
            )
        })?;
    let c = &cluster.cluster;
    let cluster_field = |f: &str| format!("cluster `{}` {f}", cluster.name);
    if c.insecure_skip_tls_verify {
        return Err(invalid(
            path,
            cluster_field("insecure-skip-tls-verify"),
            "true",
            "false or absent: without verifying the server's certificate anyone on the path \
             can read the credentials deployd sends; give certificate-authority(-data) instead",
        ));
    }
    for (field, given) in [
        ("tls-server-name", c.tls_server_name.is_some()),
        ("proxy-url", c.proxy_url.is_some()),
    ] {
        if given {
            return Err(invalid(
                path,
                cluster_field(field),
                "(set)",
                "absent: deployd does not support it for kubernetes targets",
            ));
        }
    }
    let server = deploy_core::HttpUrl::parse(&c.server)
        .map_err(|e| invalid(path, cluster_field("server"), &c.server, &e.expected))?;
    if !server.is_https() && !server.is_loopback() {
        return Err(invalid(
            path,
            cluster_field("server"),
            &c.server,
            "an https:// URL (plain http is accepted on loopback only: credentials travel in it)",
        ));
    }
    let base = path.parent().unwrap_or(Path::new("/"));
    let source = |data: &Option<String>, file: &Option<String>, field: &str| {
        pem_source(path, base, data.as_deref(), file.as_deref(), field)
    };
    let ca = source(
        &c.certificate_authority_data,
        &c.certificate_authority,
        &cluster_field("certificate-authority"),
    )?;

    let mut chosen = Chosen {
        context: name.clone(),
        server: c.server.trim_end_matches('/').to_owned(),
        ca,
        cert: None,
        key: None,
        token: None,
        token_file: None,
    };
    let Some(user_name) = &ctx.context.user else {
        return Ok(chosen);
    };
    let user = config
        .users
        .iter()
        .find(|u| &u.name == user_name)
        .ok_or_else(|| {
            invalid(
                path,
                format_args!("context `{name}` user"),
                user_name,
                &format!(
                    "a user of the file; available: {}",
                    names(&mut config.users.iter().map(|u| u.name.as_str()))
                ),
            )
        })?;
    let u = &user.user;
    let user_field = |f: &str| format!("user `{user_name}` {f}");
    if let Some(exec) = &u.exec {
        return Err(invalid(
            path,
            user_field("exec"),
            &exec.command,
            "no exec credential plugin: deployd runs no programs from a kubeconfig; give the user \
             a token, tokenFile or client certificate (for EKS/GKE/AKS, a service-account token)",
        ));
    }
    if let Some(provider) = &u.auth_provider {
        return Err(invalid(
            path,
            user_field("auth-provider"),
            &provider.name,
            "no auth-provider plugin (removed from kubectl): give the user a token, tokenFile or \
             client certificate",
        ));
    }
    for (field, given) in [
        ("username", u.username.is_some()),
        ("password", u.password.is_some()),
        ("as", u.impersonate.is_some()),
    ] {
        if given {
            return Err(invalid(
                path,
                user_field(field),
                "(set)",
                "absent: deployd supports token, tokenFile and client certificates only",
            ));
        }
    }
    if u.token.is_some() && u.token_file.is_some() {
        return Err(invalid(
            path,
            user_field("token"),
            "(set together with tokenFile)",
            "one of token or tokenFile",
        ));
    }
    chosen.cert = source(
        &u.client_certificate_data,
        &u.client_certificate,
        &user_field("client-certificate"),
    )?;
    chosen.key = source(&u.client_key_data, &u.client_key, &user_field("client-key"))?;
    match (&chosen.cert, &chosen.key) {
        (Some(_), None) => {
            return Err(invalid(
                path,
                user_field("client-key"),
                "(absent)",
                "the client certificate's key (client-key or client-key-data)",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                path,
                user_field("client-certificate"),
                "(absent)",
                "the client key's certificate (client-certificate or client-certificate-data)",
            ));
        }
        _ => {}
    }
    if chosen.cert.is_some() && !server.is_https() {
        return Err(invalid(
            path,
            cluster_field("server"),
            &c.server,
            "an https:// URL: a client certificate is only presented over TLS",
        ));
    }
    chosen.token = u.token.as_ref().map(Secret::new);
    chosen.token_file = u.token_file.as_deref().map(|f| base.join(f));
    Ok(chosen)
}

/// `*-data` (base64) wins over the file form, as in kubectl; relative paths are relative to the kubeconfig.
fn pem_source(
    path: &Path,
    base: &Path,
    data: Option<&str>,
    file: Option<&str>,
    field: &str,
) -> Result<Option<Source>, ExecError> {
    if let Some(data) = data {
        let compact: String = data.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|e| {
                invalid(
                    path,
                    format_args!("{field}-data"),
                    "(not shown)",
                    &format!("base64 of a PEM file ({e})"),
                )
            })?;
        return Ok(Some(Source::Data(bytes)));
    }
    Ok(file.map(|f| Source::File(base.join(f))))
}

impl Chosen {
    /// Reads the files the context names.
    async fn load(self, path: &Path) -> Result<KubeAccess, ExecError> {
        let field = |what: &str| format!("context `{}` {what}", self.context);
        let ca_pem = read_pem(path, self.ca, &field("certificate-authority")).await?;
        let cert = read_pem(path, self.cert, &field("client-certificate")).await?;
        let key = read_pem(path, self.key, &field("client-key")).await?;
        let identity_pem = match (cert, key) {
            (Some(c), Some(k)) => Some(Secret::new(format!("{}\n{}", c.trim_end(), k))),
            _ => None,
        };
        let token = match (self.token, self.token_file) {
            (Some(t), _) => KubeToken::Static(t),
            (None, Some(f)) => {
                let token = KubeToken::File(f);
                token.current().await?;
                token
            }
            (None, None) => KubeToken::None,
        };
        if identity_pem.is_none() && matches!(token, KubeToken::None) {
            return Err(invalid(
                path,
                format_args!("context `{}` user", self.context),
                "(no credentials)",
                "a user with a token, tokenFile or client certificate and key",
            ));
        }
        Ok(KubeAccess {
            server: self.server,
            ca_pem,
            identity_pem,
            token,
        })
    }
}

/// The PEM text of `source`, if any (`field` names it in errors).
async fn read_pem(
    path: &Path,
    source: Option<Source>,
    field: &str,
) -> Result<Option<String>, ExecError> {
    let bytes = match source {
        None => return Ok(None),
        Some(Source::Data(b)) => b,
        Some(Source::File(f)) => read(&f).await?.into_bytes(),
    };
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| invalid(path, field, "(not UTF-8)", "PEM text"))
}

/// A YAML error message with quoted values blanked: a mistyped token must not be echoed.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quoted = false;
    for c in message.chars() {
        if c == '"' {
            if quoted {
                out.push_str("…\"");
            } else {
                out.push('"');
            }
            quoted = !quoted;
        } else if !quoted {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests;
