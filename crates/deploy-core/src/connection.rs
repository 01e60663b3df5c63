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
            Self::Agent(_) | Self::Ssh(_) | Self::Api(_) => Ok(()),
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
    /// Where the agent keeps this target's files (compose lock, env file).
    pub work_dir: UnixPath,
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
    /// Directory on the target for uploaded artifacts.
    pub work_dir: UnixPath,
    /// How the server's host key is checked. Strict by default.
    #[serde(default)]
    pub host_key: HostKeyPolicy,
}

fn default_ssh_port() -> u16 {
    22
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
        credential_ref: CredentialRef,
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
        #[serde(default)]
        credential_ref: Option<CredentialRef>,
    },
    Kubernetes {
        api_server: HttpUrl,
        namespace: ResourceName,
        deployment: ResourceName,
        container: ResourceName,
        credential_ref: CredentialRef,
        #[serde(default)]
        ca_ref: Option<CredentialRef>,
    },
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
}
