//! Typed connection configs, one per execution model (agent, ssh, winrm, api), with credentials only as references.

use serde::{Deserialize, Serialize};

use crate::errors::ValidationError;
use crate::ids::AgentId;
use crate::net::{Host, HttpUrl};
use crate::values::{CredentialRef, Labels, UnixPath, Username};

/// How deployd reaches a target; the variant is the target's execution model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "snake_case")]
pub enum Connection {
    /// A `deploy-agent` on the host connects out to deployd and runs tasks.
    Agent(AgentConnection),
    /// Agentless over OpenSSH.
    Ssh(SshConnection),
    /// Agentless over WS-Management to a Windows server.
    Winrm(WinrmConnection),
    /// An orchestrator's API (ECS, Nomad, Kubernetes).
    Api(ApiConnection),
}

/// The four execution models of the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionModel {
    Agent,
    Ssh,
    Winrm,
    Api,
}

impl ExecutionModel {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Ssh => "ssh",
            Self::Winrm => "winrm",
            Self::Api => "api",
        }
    }
}

impl Connection {
    /// The execution model this config belongs to.
    pub fn model(&self) -> ExecutionModel {
        match self {
            Self::Agent(_) => ExecutionModel::Agent,
            Self::Ssh(_) => ExecutionModel::Ssh,
            Self::Winrm(_) => ExecutionModel::Winrm,
            Self::Api(_) => ExecutionModel::Api,
        }
    }

    /// Checks the rules that span fields.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            Self::Agent(_) | Self::Ssh(_) => Ok(()),
            Self::Api(a) => a.validate(),
            Self::Winrm(w) => w.validate(),
        }
    }
}

/// Which agent runs tasks for the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConnection {
    /// A specific agent; when absent, any active agent whose labels match `selector`.
    #[serde(default)]
    pub agent_id: Option<AgentId>,
    /// Labels an agent must carry to serve this target.
    #[serde(default)]
    pub selector: Labels,
    /// Where the agent keeps this target's files (compose lock, env file); when absent,
    /// `<agent state dir>/work/<target>` (see [`DEFAULT_AGENT_WORK_SUBDIR`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_dir: Option<UnixPath>,
    /// Stop the old container before starting the new one (ports or volumes that
    /// cannot be shared). Default: start-first, the old one serves until the new one runs.
    #[serde(default)]
    pub stop_first: bool,
    /// Registry credentials (`user:password` from the secrets provider) sent with each
    /// deploy for pulling the image; none for a registry without authentication.
    #[serde(default)]
    pub registry_auth: Option<CredentialRef>,
}

/// An OpenSSH server on the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshConnection {
    pub host: Host,
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    pub user: Username,
    /// Private key (optionally with passphrase) or password, from the secrets provider.
    pub credential_ref: CredentialRef,
    /// Directory on the target for uploaded artifacts; when absent, a per-target directory
    /// under the login user's home (see [`DEFAULT_SSH_WORK_SUBDIR`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_dir: Option<UnixPath>,
    /// How the server's host key is checked. Strict by default.
    #[serde(default)]
    pub host_key: HostKeyPolicy,
}

fn default_ssh_port() -> u16 {
    22
}

/// Where an SSH target's files go without an explicit `work_dir`: this directory under
/// the login user's home, then the target's name (`~/.local/share/deploy/<target>`).
pub const DEFAULT_SSH_WORK_SUBDIR: &str = ".local/share/deploy";

/// Where an agent target's files go without an explicit `work_dir`: this directory under
/// the agent's state dir, then the target's name (`<state dir>/work/<target>`).
pub const DEFAULT_AGENT_WORK_SUBDIR: &str = "work";

impl Connection {
    /// The work dir that rendered files (the systemd units' env-file path) name: the
    /// explicit `work_dir`, else where the default lies on a conventional host, since only
    /// the executor sees the real one: `/home/<user>` (`/root` for root) +
    /// `.local/share/deploy/<target>` over SSH, `/var/lib/deploy-agent/work/<target>` for
    /// an agent (its default state dir). `None` for the models that keep no files.
    pub fn rendered_work_dir(
        &self,
        target: &crate::Name,
    ) -> Option<Result<UnixPath, ValidationError>> {
        let conventional = match self {
            Self::Ssh(SshConnection {
                work_dir: Some(dir),
                ..
            })
            | Self::Agent(AgentConnection {
                work_dir: Some(dir),
                ..
            }) => return Some(Ok(dir.clone())),
            Self::Ssh(ssh) if ssh.user.as_str() == "root" => {
                format!("/root/{DEFAULT_SSH_WORK_SUBDIR}/{target}")
            }
            Self::Ssh(ssh) => format!("/home/{}/{DEFAULT_SSH_WORK_SUBDIR}/{target}", ssh.user),
            Self::Agent(_) => format!("/var/lib/deploy-agent/{DEFAULT_AGENT_WORK_SUBDIR}/{target}"),
            Self::Winrm(_) | Self::Api(_) => return None,
        };
        Some(UnixPath::parse(&conventional))
    }
}

/// How an SSH server's host key is verified. There is no "accept anything" mode.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum HostKeyPolicy {
    /// The key must already be in a known_hosts file (deployd's default file when absent).
    #[default]
    KnownHosts,
    /// The key must be in this known_hosts file.
    KnownHostsFile { path: UnixPath },
    /// The key's SHA256 fingerprint must equal this one.
    Pinned { fingerprint: HostKeyFingerprint },
    /// Explicit opt-in: record an unknown key on first use, then verify strictly.
    AcceptNew,
}

/// An OpenSSH SHA256 host key fingerprint, `SHA256:` + 43 unpadded base64 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostKeyFingerprint(String);

impl HostKeyFingerprint {
    /// Validates the fingerprint as `ssh-keygen -l` prints it.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let ok = value.strip_prefix("SHA256:").is_some_and(|b64| {
            b64.len() == 43
                && b64
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
        });
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(ValidationError::new(
                "host_key.fingerprint",
                value.escape_debug(),
                "SHA256: followed by 43 base64 characters, as `ssh-keygen -lf` prints",
            ))
        }
    }

    /// The fingerprint text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for HostKeyFingerprint {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<HostKeyFingerprint> for String {
    fn from(f: HostKeyFingerprint) -> Self {
        f.0
    }
}

/// A WS-Management endpoint on a Windows server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WinrmConnection {
    /// e.g. `https://win1.example:5986/wsman`.
    pub endpoint: HttpUrl,
    pub auth: WinrmAuth,
    pub credential_ref: CredentialRef,
    /// CA bundle for a self-signed endpoint.
    #[serde(default)]
    pub ca_ref: Option<CredentialRef>,
    /// Plain HTTP sends credentials and commands readably; it must be asked for.
    #[serde(default)]
    pub allow_insecure_http: bool,
}

impl WinrmConnection {
    fn validate(&self) -> Result<(), ValidationError> {
        if !self.endpoint.is_https() && !self.allow_insecure_http {
            return Err(ValidationError::new(
                "connection.endpoint",
                &self.endpoint,
                "an https:// endpoint, or allow_insecure_http = true",
            ));
        }
        Ok(())
    }
}

/// WinRM authentication scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WinrmAuth {
    Basic,
    Ntlm,
}

/// An orchestrator API; the variant names the platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "platform", rename_all = "snake_case", deny_unknown_fields)]
pub enum ApiConnection {
    Ecs {
        /// Override for the regional endpoint (tests, FIPS, proxies).
        #[serde(default)]
        endpoint: Option<HttpUrl>,
        region: ResourceName,
        cluster: ResourceName,
        service: ResourceName,
        container: ResourceName,
        /// Static keys `ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]`; absent means
        /// deployd's AWS default chain (environment, profile, web identity, container
        /// credentials, instance metadata), as an AWS SDK would pick.
        #[serde(default)]
        credential_ref: Option<CredentialRef>,
        /// The profile of deployd's shared AWS files this target uses instead of
        /// `AWS_PROFILE` (its own role, say); only with the default chain.
        #[serde(default)]
        profile: Option<ResourceName>,
    },
    Nomad {
        address: HttpUrl,
        #[serde(default)]
        namespace: Option<ResourceName>,
        #[serde(default)]
        region: Option<ResourceName>,
        job: ResourceName,
        task_group: ResourceName,
        task: ResourceName,
        /// The ACL token, sent as `X-Nomad-Token`.
        #[serde(default)]
        credential_ref: Option<CredentialRef>,
        /// The CA that signed the Nomad servers' certificate (`file:/etc/nomad.d/ca.pem`).
        #[serde(default)]
        ca_ref: Option<CredentialRef>,
        /// Client certificate (PEM) for a cluster with `verify_https_client`; with `client_key_ref`.
        #[serde(default)]
        client_cert_ref: Option<CredentialRef>,
        /// The client certificate's private key (PEM).
        #[serde(default)]
        client_key_ref: Option<CredentialRef>,
    },
    Kubernetes {
        /// Required with `auth.kind = token`; kubeconfig and in-cluster bring their own.
        #[serde(default)]
        api_server: Option<HttpUrl>,
        namespace: ResourceName,
        deployment: ResourceName,
        container: ResourceName,
        /// The bearer token (`auth.kind = token` only).
        #[serde(default)]
        credential_ref: Option<CredentialRef>,
        /// The cluster CA (`auth.kind = token` only).
        #[serde(default)]
        ca_ref: Option<CredentialRef>,
        /// Where the server address and credentials come from; `token` when absent.
        #[serde(default, skip_serializing_if = "KubeAuth::is_token")]
        auth: KubeAuth,
    },
}

/// Where a Kubernetes target's server address, CA and credentials come from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum KubeAuth {
    /// `api_server`, a bearer token from `credential_ref` and an optional `ca_ref`.
    #[default]
    Token,
    /// A kubeconfig file on deployd's host, read at each deploy: one context's cluster and user.
    Kubeconfig {
        path: UnixPath,
        /// The context to use; the file's `current-context` when absent.
        #[serde(default)]
        context: Option<KubeContext>,
    },
    /// deployd runs in a pod: its service-account token and CA, `KUBERNETES_SERVICE_HOST`/`_PORT`.
    InCluster,
}

impl KubeAuth {
    /// True for the default `token` kind (left out when serialized).
    pub fn is_token(&self) -> bool {
        matches!(self, Self::Token)
    }

    /// The wire spelling of the kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Kubeconfig { .. } => "kubeconfig",
            Self::InCluster => "in_cluster",
        }
    }
}

/// A kubeconfig context name: 1 to 253 printable ASCII characters, no spaces.
///
/// Looser than [`ResourceName`]: contexts are often named `user@cluster` or an EKS ARN.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KubeContext(String);

impl KubeContext {
    /// Validates the name.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        if (1..=253).contains(&value.len()) && value.chars().all(|c| c.is_ascii_graphic()) {
            Ok(Self(value.to_owned()))
        } else {
            Err(ValidationError::new(
                "auth.context",
                value.escape_debug(),
                "1 to 253 printable ASCII characters without spaces",
            ))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for KubeContext {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<KubeContext> for String {
    fn from(c: KubeContext) -> Self {
        c.0
    }
}

impl std::fmt::Display for KubeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl ApiConnection {
    /// Checks the rules that span fields: which Kubernetes fields go with which `auth.kind`,
    /// a Nomad client certificate and key given together, over https, and a token
    /// (Nomad ACL, Kubernetes bearer) sent over plain http to loopback only.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            Self::Ecs {
                credential_ref: Some(_),
                profile: Some(profile),
                ..
            } => Err(ValidationError::new(
                "connection.profile",
                profile,
                "no profile with credential_ref (static keys); leave credential_ref out to use the profile",
            )),
            Self::Ecs { .. } => Ok(()),
            Self::Nomad {
                address,
                credential_ref: Some(_),
                ..
            } if !address.is_https() && !address.is_loopback() => Err(ValidationError::new(
                "connection.address",
                address,
                "an https:// address with credential_ref (plain http is accepted on loopback only: the ACL token travels in every request)",
            )),
            Self::Nomad {
                address,
                client_cert_ref,
                client_key_ref,
                ..
            } => match (client_cert_ref, client_key_ref) {
                (Some(_), None) => Err(ValidationError::new(
                    "connection.client_key_ref",
                    "(absent)",
                    "the client certificate's key, given with client_cert_ref",
                )),
                (None, Some(_)) => Err(ValidationError::new(
                    "connection.client_cert_ref",
                    "(absent)",
                    "the client certificate, given with client_key_ref",
                )),
                (Some(_), Some(_)) if !address.is_https() => Err(ValidationError::new(
                    "connection.address",
                    address,
                    "an https:// address: a client certificate is only presented over TLS",
                )),
                _ => Ok(()),
            },
            Self::Kubernetes {
                api_server,
                credential_ref,
                ca_ref,
                auth,
                ..
            } => {
                if auth.is_token() {
                    let Some(server) = api_server else {
                        return Err(ValidationError::new(
                            "connection.api_server",
                            "(absent)",
                            "the API server URL, required with auth.kind = token",
                        ));
                    };
                    if !server.is_https() && !server.is_loopback() {
                        return Err(ValidationError::new(
                            "connection.api_server",
                            server,
                            "an https:// URL (plain http is accepted on loopback only: the bearer token travels in every request)",
                        ));
                    }
                    if credential_ref.is_none() {
                        return Err(ValidationError::new(
                            "connection.credential_ref",
                            "(absent)",
                            "the bearer token's reference, required with auth.kind = token",
                        ));
                    }
                    return Ok(());
                }
                // The kubeconfig or the pod says where the server is and who we are:
                // a second source would leave it unclear which one is used.
                for (field, given) in [
                    ("api_server", api_server.is_some()),
                    ("credential_ref", credential_ref.is_some()),
                    ("ca_ref", ca_ref.is_some()),
                ] {
                    if given {
                        return Err(ValidationError::new(
                            format!("connection.{field}"),
                            "(set)",
                            format!(
                                "absent with auth.kind = {}, which brings its own",
                                auth.kind()
                            ),
                        ));
                    }
                }
                Ok(())
            }
        }
    }
}

/// A name of a resource on an orchestrator (ECS service, Nomad job, Kubernetes deployment).
///
/// Looser than [`crate::Name`] (upper case allowed, as ECS allows it) because these
/// names only ever travel in API request bodies, never through a shell.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResourceName(String);

impl ResourceName {
    /// Validates `[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}`.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let mut chars = value.chars();
        let ok = value.len() <= 255
            && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && chars.all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c));
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(ValidationError::new(
                "resource name",
                value.escape_debug(),
                "[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}",
            ))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ResourceName {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ResourceName> for String {
    fn from(r: ResourceName) -> Self {
        r.0
    }
}

impl std::fmt::Display for ResourceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_connection_from_json_with_defaults_and_strict_host_keys() {
        let c: Connection = serde_json::from_str(
            r#"{"model":"ssh","host":"127.0.0.1","user":"deploy","credential_ref":"env:KEY","work_dir":"/srv/app"}"#,
        )
        .unwrap();
        let Connection::Ssh(ssh) = &c else {
            panic!("{c:?}")
        };
        assert_eq!(ssh.port, 22);
        assert_eq!(ssh.host_key, HostKeyPolicy::KnownHosts);
        assert_eq!(c.model(), ExecutionModel::Ssh);
    }

    #[test]
    fn the_work_dir_is_optional_and_rendered_where_the_default_lies() {
        let target = crate::Name::parse("web-1").unwrap();
        let check = |json: &str, rendered: Option<&str>| {
            let c: Connection = serde_json::from_str(json).unwrap();
            let got = c.rendered_work_dir(&target).map(|r| r.unwrap());
            assert_eq!(got.as_ref().map(UnixPath::as_str), rendered, "{json}");
            // Absent stays absent on the way back (no default is stored).
            let back = serde_json::to_string(&c).unwrap();
            assert_eq!(
                back.contains("work_dir"),
                json.contains("work_dir"),
                "{back}"
            );
        };
        check(
            r#"{"model":"ssh","host":"h","user":"deploy","credential_ref":"env:K"}"#,
            Some("/home/deploy/.local/share/deploy/web-1"),
        );
        check(
            r#"{"model":"ssh","host":"h","user":"root","credential_ref":"env:K"}"#,
            Some("/root/.local/share/deploy/web-1"),
        );
        check(
            r#"{"model":"ssh","host":"h","user":"deploy","credential_ref":"env:K","work_dir":"/srv/app"}"#,
            Some("/srv/app"),
        );
        check(
            r#"{"model":"agent","selector":{"zone":"a"}}"#,
            Some("/var/lib/deploy-agent/work/web-1"),
        );
        check(
            r#"{"model":"agent","work_dir":"/srv/edge"}"#,
            Some("/srv/edge"),
        );
        check(
            r#"{"model":"winrm","endpoint":"https://w:5986/wsman","auth":"ntlm","credential_ref":"env:K"}"#,
            None,
        );
        let relative =
            r#"{"model":"ssh","host":"h","user":"u","credential_ref":"env:K","work_dir":"srv"}"#;
        assert!(serde_json::from_str::<Connection>(relative).is_err());
    }

    #[test]
    fn typos_and_injections_in_connections_are_errors() {
        let typo = r#"{"model":"ssh","host":"h","user":"u","credential_ref":"env:K","work_dir":"/w","prot":2}"#;
        assert!(
            serde_json::from_str::<Connection>(typo)
                .unwrap_err()
                .to_string()
                .contains("unknown field `prot`")
        );
        let inject = r#"{"model":"ssh","host":"h; touch /tmp/pwned","user":"u","credential_ref":"env:K","work_dir":"/w"}"#;
        assert!(serde_json::from_str::<Connection>(inject).is_err());
        let inline_secret = r#"{"model":"ssh","host":"h","user":"u","credential_ref":"-----BEGIN OPENSSH PRIVATE KEY-----","work_dir":"/w"}"#;
        assert!(serde_json::from_str::<Connection>(inline_secret).is_err());
    }

    #[test]
    fn fingerprints() {
        let fp = format!("SHA256:{}", "A".repeat(43));
        assert!(HostKeyFingerprint::parse(&fp).is_ok());
        assert!(HostKeyFingerprint::parse("MD5:aa").is_err());
        assert!(HostKeyFingerprint::parse(&format!("SHA256:{}", "A".repeat(42))).is_err());
    }

    #[test]
    fn winrm_refuses_plain_http_unless_asked() {
        let mut w = WinrmConnection {
            endpoint: HttpUrl::parse("http://win:5985/wsman").unwrap(),
            auth: WinrmAuth::Ntlm,
            credential_ref: CredentialRef::parse("env:WIN").unwrap(),
            ca_ref: None,
            allow_insecure_http: false,
        };
        assert!(Connection::Winrm(w.clone()).validate().is_err());
        w.allow_insecure_http = true;
        assert!(Connection::Winrm(w).validate().is_ok());
    }

    #[test]
    fn api_connections_name_their_platform() {
        let k: Connection = serde_json::from_str(
            r#"{"model":"api","platform":"kubernetes","api_server":"https://k:6443","namespace":"prod","deployment":"web","container":"web","credential_ref":"file:/var/run/token"}"#,
        )
        .unwrap();
        assert_eq!(k.model(), ExecutionModel::Api);
        assert!(ResourceName::parse("My_Service-1").is_ok());
        assert!(ResourceName::parse("a b").is_err());
    }

    #[test]
    fn ecs_without_a_credential_ref_uses_the_default_chain() {
        let ecs = |extra: &str| {
            serde_json::from_str::<Connection>(&format!(
                r#"{{"model":"api","platform":"ecs","region":"eu-west-1","cluster":"prod","service":"web","container":"web"{extra}}}"#
            ))
        };
        let Ok(Connection::Api(ApiConnection::Ecs { credential_ref, .. })) = ecs("") else {
            panic!("an ecs connection without credential_ref is refused");
        };
        assert_eq!(credential_ref, None);
        let Ok(Connection::Api(ApiConnection::Ecs { credential_ref, .. })) =
            ecs(r#","credential_ref":"env:AWS_KEYS""#)
        else {
            panic!("an ecs connection with credential_ref is refused");
        };
        assert_eq!(
            credential_ref.map(|r| r.as_str().to_owned()).as_deref(),
            Some("env:AWS_KEYS")
        );
        // Keys inline are still no reference, and a misspelt field is no silent default.
        assert!(ecs(r#","credential_ref":"AKIAEXAMPLE:secret""#).is_err());
        assert!(ecs(r#","credentials_ref":"env:AWS_KEYS""#).is_err());
        // A profile goes with the chain, not with static keys.
        let Ok(Connection::Api(chain)) = ecs(r#","profile":"prod-deploy""#) else {
            panic!("an ecs connection with a profile is refused");
        };
        assert!(chain.validate().is_ok());
        let Ok(Connection::Api(both)) = ecs(r#","profile":"prod","credential_ref":"env:K""#) else {
            panic!("an ecs connection with a profile and keys does not parse");
        };
        let err = both.validate().unwrap_err();
        assert_eq!(err.field, "connection.profile", "{err}");
        assert!(ecs(r#","profile":"a b""#).is_err());
    }

    fn kube(auth_and_more: &str) -> Result<Connection, String> {
        let c: Connection = serde_json::from_str(&format!(
            r#"{{"model":"api","platform":"kubernetes","namespace":"prod","deployment":"web","container":"web"{auth_and_more}}}"#
        ))
        .map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn kubernetes_auth_kinds_and_the_fields_each_needs() {
        // Today's static token form keeps working, and serializes without an `auth`.
        let token = kube(r#","api_server":"https://k:6443","credential_ref":"env:T""#).unwrap();
        assert!(!serde_json::to_string(&token).unwrap().contains("auth"));
        assert!(
            kube(
                r#","api_server":"https://k:6443","credential_ref":"env:T","auth":{"kind":"token"}"#
            )
            .is_ok()
        );
        let c = kube(r#","auth":{"kind":"kubeconfig","path":"/etc/deploy/kubeconfig","context":"admin@prod"}"#)
            .unwrap();
        let Connection::Api(ApiConnection::Kubernetes { auth, .. }) = &c else {
            panic!("{c:?}")
        };
        assert_eq!(
            auth,
            &KubeAuth::Kubeconfig {
                path: UnixPath::parse("/etc/deploy/kubeconfig").unwrap(),
                context: Some(KubeContext::parse("admin@prod").unwrap()),
            }
        );
        assert!(kube(r#","auth":{"kind":"in_cluster"}"#).is_ok());

        for (body, expected) in [
            (
                r#","credential_ref":"env:T""#,
                "connection.api_server is `(absent)`; expected the API server URL, required with auth.kind = token",
            ),
            (
                r#","api_server":"https://k:6443""#,
                "connection.credential_ref is `(absent)`",
            ),
            (
                r#","auth":{"kind":"kubeconfig","path":"/k"},"api_server":"https://k:6443""#,
                "connection.api_server is `(set)`; expected absent with auth.kind = kubeconfig",
            ),
            (
                r#","auth":{"kind":"in_cluster"},"ca_ref":"env:CA""#,
                "connection.ca_ref is `(set)`; expected absent with auth.kind = in_cluster",
            ),
            (r#","auth":{"kind":"exec"}"#, "unknown variant `exec`"),
            (
                r#","auth":{"kind":"kubeconfig","path":"/k","contxt":"a"}"#,
                "unknown field `contxt`",
            ),
            (
                r#","auth":{"kind":"kubeconfig","path":"relative/k"}"#,
                "absolute path",
            ),
            (
                r#","auth":{"kind":"kubeconfig","path":"/k","context":"a b"}"#,
                "printable ASCII",
            ),
        ] {
            let err = kube(body).unwrap_err();
            assert!(err.contains(expected), "{body}: {err}");
        }
    }

    #[test]
    fn nomad_client_certificate_and_key_come_together_over_https() {
        let nomad = |address: &str, more: &str| -> Result<(), String> {
            let c: Connection = serde_json::from_str(&format!(
                r#"{{"model":"api","platform":"nomad","address":"{address}","job":"web","task_group":"web","task":"web"{more}}}"#
            ))
            .map_err(|e| e.to_string())?;
            c.validate().map_err(|e| e.to_string())
        };
        let both = r#","ca_ref":"file:/ca.pem","client_cert_ref":"file:/c.pem","client_key_ref":"file:/c.key","credential_ref":"env:NOMAD_TOKEN""#;
        assert_eq!(nomad("https://nomad:4646", both), Ok(()));
        let err = nomad("http://nomad:4646", both).unwrap_err();
        assert!(err.contains("connection.address"), "{err}");
        let err = nomad("https://nomad:4646", r#","client_cert_ref":"file:/c.pem""#).unwrap_err();
        assert!(err.contains("connection.client_key_ref"), "{err}");
        let err = nomad("https://nomad:4646", r#","client_key_ref":"file:/c.key""#).unwrap_err();
        assert!(err.contains("connection.client_cert_ref"), "{err}");
        let err = nomad("https://nomad:4646", r#","client_cert":"/c.pem""#).unwrap_err();
        assert!(err.contains("unknown field `client_cert`"), "{err}");
        // A client certificate needs TLS even on loopback.
        let cert = r#","client_cert_ref":"file:/c.pem","client_key_ref":"file:/c.key""#;
        let err = nomad("http://127.0.0.1:4646", cert).unwrap_err();
        assert!(err.contains("only presented over TLS"), "{err}");
    }

    #[test]
    fn tokens_go_over_plain_http_to_loopback_only() {
        let nomad = |address: &str, more: &str| -> Result<(), String> {
            let c: Connection = serde_json::from_str(&format!(
                r#"{{"model":"api","platform":"nomad","address":"{address}","job":"web","task_group":"web","task":"web"{more}}}"#
            ))
            .map_err(|e| e.to_string())?;
            c.validate().map_err(|e| e.to_string())
        };
        let token = r#","credential_ref":"env:NOMAD_TOKEN""#;
        let err = nomad("http://nomad:4646", token).unwrap_err();
        assert!(
            err.contains("connection.address is `http://nomad:4646")
                && err.contains("loopback only"),
            "{err}"
        );
        for ok in [
            "https://nomad:4646",
            "http://127.0.0.1:4646",
            "http://localhost:4646",
        ] {
            assert_eq!(nomad(ok, token), Ok(()), "{ok}");
        }
        // Without a token, plain http stays allowed (a cluster without ACLs).
        assert_eq!(nomad("http://nomad:4646", ""), Ok(()));

        let err = kube(r#","api_server":"http://k:6443","credential_ref":"env:T""#).unwrap_err();
        assert!(
            err.contains("connection.api_server is `http://k:6443")
                && err.contains("loopback only"),
            "{err}"
        );
        for ok in [
            "https://k:6443",
            "http://127.0.0.1:6443",
            "http://[::1]:6443",
        ] {
            let body = format!(r#","api_server":"{ok}","credential_ref":"env:T""#);
            assert!(kube(&body).is_ok(), "{ok}");
        }
    }
}
