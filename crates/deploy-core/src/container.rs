//! `ContainerSpec`: the complete definition of one docker_host container (image, command, environment, ports, mounts, networks, limits, healthcheck, …), as the release's service definition declares it, resolved for one target.
//!
//! It is what every docker_host transport applies (the Docker Engine API through the
//! agent or an SSH-forwarded socket, the Docker CLI over WinRM), so that a container
//! is the same whichever way it was started. deploy-artifacts builds it from a
//! rendered compose file; [`ContainerSpec::validate`] checks the rules every
//! transport relies on (no NUL anywhere a C string carries it, absolute paths,
//! ports in range), so a value that passed can be handed to any of them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::errors::ValidationError;
use crate::image_ref::ImageRef;

/// Docker's own default grace period between the stop signal and SIGKILL.
pub const DEFAULT_STOP_GRACE_SECS: u64 = 10;

/// One container, fully resolved: names of volumes and networks are the final Docker
/// names, the image is pinned, the environment is merged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    pub image: ImageRef,
    /// Replaces the image's `CMD` (`None`: the image's own).
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Replaces the image's `ENTRYPOINT` (`None`: the image's own; `Some([])` clears it).
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// Variables as the process sees them, byte for byte.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The service's own labels (ours, `stella.*`, are added by the transport).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// Ports exposed without publishing (`expose:`).
    #[serde(default)]
    pub expose: Vec<ExposedPort>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Read-only root filesystem.
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    /// Run an init process as PID 1 that forwards signals and reaps zombies.
    #[serde(default)]
    pub init: bool,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// User-defined networks, created when missing unless external.
    #[serde(default)]
    pub networks: Vec<NetworkAttachment>,
    /// Memory limit in bytes.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// CPU limit in billionths of a CPU (`cpus: 0.5` = 500_000_000).
    #[serde(default)]
    pub nano_cpus: Option<u64>,
    /// The container's own healthcheck (replaces the image's; `test: ["NONE"]` disables it).
    #[serde(default)]
    pub healthcheck: Option<ContainerHealthcheck>,
    /// Signal sent to stop it (`None`: the image's, else SIGTERM).
    #[serde(default)]
    pub stop_signal: Option<String>,
    /// Seconds between the stop signal and SIGKILL.
    #[serde(default = "default_stop_grace")]
    pub stop_grace_secs: u64,
    #[serde(default)]
    pub extra_hosts: Vec<ExtraHost>,
    #[serde(default)]
    pub logging: Option<Logging>,
    /// Compose's `deploy.update_config.order` (`None`: decided by [`ContainerSpec::stop_first`]).
    /// Left out of the JSON when unset, so definitions without it keep their identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_order: Option<UpdateOrder>,
}

/// Whether a new container starts before the old one stops (Compose's `update_config.order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    StartFirst,
    StopFirst,
}

fn default_stop_grace() -> u64 {
    DEFAULT_STOP_GRACE_SECS
}

/// The transport protocol of a port.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// Docker's spelling (`tcp`, `udp`, `sctp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }

    /// Reads Docker's spelling back (the inverse of [`Protocol::as_str`]).
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Tcp, Self::Udp, Self::Sctp]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

/// A container port published on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortMapping {
    /// The host address it listens on (`None`: every address).
    #[serde(default)]
    pub host_ip: Option<IpAddr>,
    /// The host port (`None`: one the engine picks).
    #[serde(default)]
    pub host_port: Option<u16>,
    pub container_port: u16,
    #[serde(default)]
    pub protocol: Protocol,
}

impl PortMapping {
    /// Docker's key for the container side, e.g. `8080/tcp`.
    pub fn container_key(&self) -> String {
        format!("{}/{}", self.container_port, self.protocol.as_str())
    }
}

/// Where the engine published a container port of a running container: what a
/// health check of the new instance connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedPort {
    pub container_port: u16,
    #[serde(default)]
    pub protocol: Protocol,
    /// The address it listens on (`0.0.0.0` / `::` for every address).
    pub host_ip: IpAddr,
    pub host_port: u16,
}

/// A container port exposed to other containers without publishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExposedPort {
    pub port: u16,
    #[serde(default)]
    pub protocol: Protocol,
}

/// Something mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Mount {
    /// A host path.
    Bind {
        source: String,
        target: String,
        #[serde(default)]
        read_only: bool,
    },
    /// A named volume (created when missing unless `external`).
    Volume {
        /// The final Docker volume name.
        name: String,
        target: String,
        #[serde(default)]
        read_only: bool,
        /// Created when missing with this driver; `None` with `external`.
        #[serde(default)]
        driver: Option<String>,
        #[serde(default)]
        driver_opts: BTreeMap<String, String>,
        /// Declared `external: true`: must exist, is never created.
        #[serde(default)]
        external: bool,
    },
    /// A tmpfs.
    Tmpfs {
        target: String,
        #[serde(default)]
        size_bytes: Option<u64>,
    },
}

impl Mount {
    /// Where it is mounted in the container.
    pub fn target(&self) -> &str {
        match self {
            Self::Bind { target, .. }
            | Self::Volume { target, .. }
            | Self::Tmpfs { target, .. } => target,
        }
    }
}

/// A restart policy, as Docker names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RestartPolicy {
    No,
    Always,
    /// The default for docker_host: a deployed container survives a reboot of the host.
    #[default]
    UnlessStopped,
    OnFailure {
        #[serde(default)]
        max_retries: Option<u32>,
    },
}

impl RestartPolicy {
    /// Docker's spelling: `no`, `always`, `unless-stopped`, `on-failure[:N]`.
    pub fn to_docker(self) -> String {
        match self {
            Self::No => "no".to_owned(),
            Self::Always => "always".to_owned(),
            Self::UnlessStopped => "unless-stopped".to_owned(),
            Self::OnFailure { max_retries: None } => "on-failure".to_owned(),
            Self::OnFailure {
                max_retries: Some(n),
            } => format!("on-failure:{n}"),
        }
    }
}

/// A user-defined network the container joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkAttachment {
    /// The final Docker network name.
    pub name: String,
    /// Other names the container answers to on this network.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Created when missing with this driver (`None`: the engine's default).
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub driver_opts: BTreeMap<String, String>,
    /// Declared `external: true`: must exist, is never created.
    #[serde(default)]
    pub external: bool,
}

/// The container's healthcheck, in Docker's terms (durations in milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerHealthcheck {
    /// `["NONE"]`, `["CMD", prog, args…]` or `["CMD-SHELL", "command line"]`.
    pub test: Vec<String>,
    #[serde(default)]
    pub interval_ms: Option<u64>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub start_period_ms: Option<u64>,
}

impl ContainerHealthcheck {
    /// True when it switches the image's healthcheck off.
    pub fn disables(&self) -> bool {
        self.test.first().map(String::as_str) == Some("NONE")
    }
}

/// An `/etc/hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraHost {
    pub host: String,
    pub ip: IpAddr,
}

/// Where the container's output goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    pub driver: String,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// Checks a value that a transport hands to the engine as a C string. The value is
/// not quoted back (environment values are often credentials); the field names it.
fn no_nul(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.contains('\0') {
        Err(ValidationError::new(
            field,
            "(a value holding NUL)",
            "no NUL character (the engine cannot carry one)",
        ))
    } else {
        Ok(())
    }
}

/// A name Docker accepts for a volume or a network: `[A-Za-z0-9][A-Za-z0-9_.-]*`.
fn docker_name(field: &str, value: &str) -> Result<(), ValidationError> {
    let mut chars = value.chars();
    let ok = value.len() <= 255
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            value.escape_debug(),
            "[A-Za-z0-9][A-Za-z0-9_.-]*, at most 255 characters",
        ))
    }
}

/// An absolute path inside the container or on the host: `/` first, no NUL, no `:`
/// (Docker's short mount syntax splits on it), no `..` component.
fn absolute_path(field: &str, value: &str) -> Result<(), ValidationError> {
    let ok = value.starts_with('/')
        && !value.contains(['\0', ':', ','])
        && value.len() <= 4096
        && !value.split('/').any(|c| c == "..");
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            value.escape_debug(),
            "an absolute path without `..`, `:`, `,` or NUL",
        ))
    }
}

/// A variable name Docker and both env-file readers agree on: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn valid_env_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl ContainerSpec {
    /// A container running `image` with the image's own command and nothing else declared.
    pub fn from_image(image: ImageRef) -> Self {
        Self {
            image,
            command: None,
            entrypoint: None,
            env: BTreeMap::new(),
            labels: BTreeMap::new(),
            ports: Vec::new(),
            expose: Vec::new(),
            mounts: Vec::new(),
            read_only: false,
            working_dir: None,
            user: None,
            hostname: None,
            init: false,
            restart: RestartPolicy::default(),
            networks: Vec::new(),
            memory_bytes: None,
            nano_cpus: None,
            healthcheck: None,
            stop_signal: None,
            stop_grace_secs: DEFAULT_STOP_GRACE_SECS,
            extra_hosts: Vec::new(),
            logging: None,
            update_order: None,
        }
    }

    /// Whether the running container must stop before the new one starts, and why
    /// (`None`: they run side by side for a moment, start-first). Stop-first when a fixed
    /// host port cannot be held by both, when the definition asks for it, and by default
    /// when a writable volume or bind mount would be shared by two processes (as
    /// Compose recreates containers); `update_config.order: start-first` allows that.
    pub fn stop_first(&self) -> Option<&'static str> {
        if self.has_fixed_host_ports() {
            return Some("it holds the fixed host ports the new one needs");
        }
        match self.update_order {
            Some(UpdateOrder::StopFirst) => {
                Some("the definition asks for it (deploy.update_config.order: stop-first)")
            }
            Some(UpdateOrder::StartFirst) => None,
            None if self.has_writable_shared_mount() => Some(
                "it writes to a volume or bind mount the new one would share (deploy.update_config.order: start-first allows both at once)",
            ),
            None => None,
        }
    }

    /// True when a named volume or bind mount is mounted writable.
    pub fn has_writable_shared_mount(&self) -> bool {
        self.mounts.iter().any(|m| match m {
            Mount::Bind { read_only, .. } | Mount::Volume { read_only, .. } => !read_only,
            Mount::Tmpfs { .. } => false,
        })
    }

    /// True when a port is bound to a fixed host port: the old and the new container
    /// cannot run side by side, so the old one is stopped first.
    pub fn has_fixed_host_ports(&self) -> bool {
        self.ports.iter().any(|p| p.host_port.is_some())
    }

    /// Checks the rules every transport relies on; `field` prefixes each error's path
    /// (e.g. `services.web`).
    pub fn validate(&self, field: &str) -> Result<(), ValidationError> {
        let at = |rest: &str| format!("{field}.{rest}");
        if self.update_order == Some(UpdateOrder::StartFirst) && self.has_fixed_host_ports() {
            return Err(ValidationError::new(
                at("deploy.update_config.order"),
                "start-first",
                "stop-first (or no order) with a fixed host port: the old and the new container cannot both hold it",
            ));
        }
        for (list, name) in [(&self.command, "command"), (&self.entrypoint, "entrypoint")] {
            for (i, word) in list.iter().flatten().enumerate() {
                no_nul(&at(&format!("{name}[{i}]")), word)?;
            }
        }
        for (k, v) in &self.env {
            if !valid_env_key(k) {
                return Err(ValidationError::new(
                    at("environment"),
                    k.escape_debug(),
                    "variable names of [A-Za-z_][A-Za-z0-9_]*",
                ));
            }
            no_nul(&at(&format!("environment.{k}")), v)?;
        }
        for (k, v) in &self.labels {
            if k.is_empty() || k.contains(['=', '\0']) {
                return Err(ValidationError::new(
                    at("labels"),
                    k.escape_debug(),
                    "label keys without `=` or NUL",
                ));
            }
            no_nul(&at(&format!("labels.{k}")), v)?;
        }
        let mut published = std::collections::BTreeSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            if p.container_port == 0 || p.host_port == Some(0) {
                return Err(ValidationError::new(
                    at(&format!("ports[{i}]")),
                    format!("{}", p.container_port),
                    "ports from 1 to 65535",
                ));
            }
            if let Some(host) = p.host_port
                && !published.insert((p.host_ip, host, p.protocol))
            {
                return Err(ValidationError::new(
                    at(&format!("ports[{i}]")),
                    host,
                    "each host port once",
                ));
            }
        }
        for (i, e) in self.expose.iter().enumerate() {
            if e.port == 0 {
                return Err(ValidationError::new(
                    at(&format!("expose[{i}]")),
                    0,
                    "ports from 1 to 65535",
                ));
            }
        }
        let mut targets = std::collections::BTreeSet::new();
        for (i, m) in self.mounts.iter().enumerate() {
            let here = at(&format!("volumes[{i}]"));
            absolute_path(&here, m.target())?;
            if !targets.insert(m.target()) {
                return Err(ValidationError::new(
                    here,
                    m.target(),
                    "each container path mounted once",
                ));
            }
            match m {
                Mount::Bind { source, .. } => absolute_path(&here, source)?,
                Mount::Volume {
                    name,
                    driver,
                    driver_opts,
                    ..
                } => {
                    docker_name(&here, name)?;
                    for v in driver
                        .iter()
                        .chain(driver_opts.keys())
                        .chain(driver_opts.values())
                    {
                        no_nul(&here, v)?;
                    }
                }
                Mount::Tmpfs { .. } => {}
            }
        }
        for (name, value) in [
            ("working_dir", &self.working_dir),
            ("user", &self.user),
            ("hostname", &self.hostname),
            ("stop_signal", &self.stop_signal),
        ] {
            if let Some(v) = value {
                no_nul(&at(name), v)?;
                if v.is_empty() {
                    return Err(ValidationError::new(at(name), "", "a non-empty value"));
                }
            }
        }
        if let Some(dir) = &self.working_dir {
            absolute_path(&at("working_dir"), dir)?;
        }
        for (i, n) in self.networks.iter().enumerate() {
            let here = at(&format!("networks[{i}]"));
            docker_name(&here, &n.name)?;
            for a in &n.aliases {
                no_nul(&here, a)?;
            }
        }
        if self.nano_cpus == Some(0) {
            return Err(ValidationError::new(at("cpus"), 0, "a positive CPU limit"));
        }
        if let Some(mem) = self.memory_bytes
            && mem < 6 * 1024 * 1024
        {
            return Err(ValidationError::new(
                at("mem_limit"),
                mem,
                "at least 6 MiB (Docker's minimum)",
            ));
        }
        if let Some(h) = &self.healthcheck {
            let ok = match h.test.first().map(String::as_str) {
                Some("NONE") => h.test.len() == 1,
                Some("CMD") => h.test.len() >= 2,
                Some("CMD-SHELL") => h.test.len() == 2,
                _ => false,
            };
            if !ok || h.test.iter().any(|w| w.contains('\0')) {
                return Err(ValidationError::new(
                    at("healthcheck.test"),
                    format!("{:?}", h.test),
                    "[\"NONE\"], [\"CMD\", program, args…] or [\"CMD-SHELL\", command]",
                ));
            }
        }
        if self.stop_grace_secs > 86_400 {
            return Err(ValidationError::new(
                at("stop_grace_period"),
                self.stop_grace_secs,
                "at most one day",
            ));
        }
        for (i, h) in self.extra_hosts.iter().enumerate() {
            let ok = !h.host.is_empty()
                && h.host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !ok {
                return Err(ValidationError::new(
                    at(&format!("extra_hosts[{i}]")),
                    h.host.escape_debug(),
                    "a host name of [A-Za-z0-9_.-]",
                ));
            }
        }
        if let Some(l) = &self.logging {
            for v in std::iter::once(&l.driver)
                .chain(l.options.keys())
                .chain(l.options.values())
            {
                no_nul(&at("logging"), v)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::digest;

    fn spec() -> ContainerSpec {
        ContainerSpec::from_image(ImageRef::from_parts("127.0.0.1:5000/web", &digest(1)).unwrap())
    }

    #[test]
    fn a_plain_image_is_valid_and_round_trips() {
        let s = spec();
        assert!(s.validate("services.web").is_ok());
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<ContainerSpec>(&json).unwrap(), s);
        assert_eq!(s.restart.to_docker(), "unless-stopped");
        assert!(!s.has_fixed_host_ports());
    }

    #[test]
    fn stop_first_for_fixed_ports_shared_writable_mounts_or_when_asked() {
        let mut s = spec();
        assert_eq!(s.stop_first(), None);
        s.mounts.push(Mount::Bind {
            source: "/srv/config".into(),
            target: "/config".into(),
            read_only: true,
        });
        assert_eq!(s.stop_first(), None, "a read-only mount is shared safely");
        s.mounts.push(Mount::Tmpfs {
            target: "/tmp".into(),
            size_bytes: None,
        });
        assert_eq!(s.stop_first(), None, "a tmpfs is the container's own");
        s.mounts.push(Mount::Volume {
            name: "prod_data".into(),
            target: "/data".into(),
            read_only: false,
            driver: None,
            driver_opts: BTreeMap::new(),
            external: false,
        });
        assert!(s.stop_first().unwrap().contains("volume or bind mount"));
        s.update_order = Some(UpdateOrder::StartFirst);
        assert_eq!(s.stop_first(), None, "asked for start-first");
        s.update_order = Some(UpdateOrder::StopFirst);
        s.mounts.clear();
        assert!(s.stop_first().unwrap().contains("asks for it"));
        s.update_order = Some(UpdateOrder::StartFirst);
        s.ports.push(PortMapping {
            host_ip: None,
            host_port: Some(8080),
            container_port: 80,
            protocol: Protocol::Tcp,
        });
        assert!(s.stop_first().unwrap().contains("fixed host ports"));
        assert_eq!(
            s.validate("services.web").unwrap_err().field,
            "services.web.deploy.update_config.order"
        );
    }

    #[test]
    fn errors_carry_the_field_path() {
        let mut s = spec();
        s.env.insert("A".into(), "x\0y".into());
        assert_eq!(
            s.validate("services.web").unwrap_err().to_string(),
            "services.web.environment.A is `(a value holding NUL)`; expected no NUL character (the engine cannot carry one)"
        );
        let mut s = spec();
        s.ports.push(PortMapping {
            host_ip: None,
            host_port: Some(8080),
            container_port: 80,
            protocol: Protocol::Tcp,
        });
        s.ports.push(s.ports[0]);
        assert_eq!(
            s.validate("services.web").unwrap_err().field,
            "services.web.ports[1]"
        );
        assert!(s.has_fixed_host_ports());
        let mut s = spec();
        s.mounts.push(Mount::Bind {
            source: "/srv/../etc".into(),
            target: "/data".into(),
            read_only: false,
        });
        assert_eq!(
            s.validate("services.web").unwrap_err().field,
            "services.web.volumes[0]"
        );
        let mut s = spec();
        s.healthcheck = Some(ContainerHealthcheck {
            test: vec!["CMD-SHELL".into()],
            interval_ms: None,
            timeout_ms: None,
            retries: None,
            start_period_ms: None,
        });
        assert!(s.validate("s").is_err());
    }

    #[test]
    fn hostile_values_are_kept_as_they_are() {
        let mut s = spec();
        for (i, v) in ["value # not a comment", "${HOME}", "'\"\\", "日本", ""]
            .iter()
            .enumerate()
        {
            s.env.insert(format!("V{i}"), (*v).to_owned());
        }
        s.env.insert("LONG".into(), "x".repeat(32 * 1024));
        assert!(s.validate("s").is_ok());
        let back: ContainerSpec =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back.env, s.env);
    }
}
