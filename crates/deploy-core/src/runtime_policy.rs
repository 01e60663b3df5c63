//! `RuntimePolicy`: what the containers of an environment may get from their host (privileges, host namespaces, capabilities, devices, bind mounts), set by an admin; the default refuses all of it.
//!
//! A compose template is written by whoever creates a release (a deployer), but
//! what it asks for runs as root on every target host: `privileged: true`, a bind of
//! `/` or of the Docker socket, `pid: host` each hand the host to the container.
//! The policy is the admin's answer to "what may a release ask for here". It is
//! pure data with its invariants in its types ([`Capability`] is a known Linux
//! capability, [`HostPrefix`] an absolute path without `.` or `..`), so a policy
//! that exists is valid; deploy-artifacts reads templates against it.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::errors::ValidationError;

/// What an environment's containers may get from their hosts. `Default` (every
/// field false or empty) refuses everything this type names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimePolicy {
    /// `privileged: true` (every capability, every device, no confinement).
    #[serde(default)]
    pub privileged: bool,
    /// Host namespaces a service may join (`network_mode: host`, `pid: host`,
    /// `ipc: host`, `uts: host`, `userns_mode: host`, `cgroup: host`; `network` also
    /// a network whose engine name is `host`).
    #[serde(default)]
    pub host_namespaces: BTreeSet<HostNamespace>,
    /// Capabilities `cap_add` may add; `ALL` only if `ALL` is listed.
    #[serde(default)]
    pub capabilities: BTreeSet<Capability>,
    /// Host devices: `devices`, `device_cgroup_rules`, `gpus` and device
    /// reservations under `deploy.resources`; also volumes that mount anything of the
    /// host but a tmpfs, an NFS/CIFS share or a checked bind (`local` driver options
    /// such as `type: proc` or an overlay of host directories, a block device, a
    /// volume plugin), as root-equivalent as a device.
    #[serde(default)]
    pub devices: bool,
    /// `security_opt` entries other than `no-new-privileges` (they loosen or replace
    /// seccomp, AppArmor or SELinux confinement).
    #[serde(default)]
    pub unconfined: bool,
    /// Host directories that bind mounts (and local volumes bound to a host path)
    /// may come from: the directory itself and everything under it.
    #[serde(default)]
    pub bind_prefixes: BTreeSet<HostPrefix>,
    /// A bind of a container engine's socket ([`ENGINE_SOCKETS`]) or of a directory
    /// holding one (`/run`, `/var/run`, `/`), even under an allowed prefix: the
    /// socket is root on the host.
    #[serde(default)]
    pub docker_socket: bool,
    /// Containers outside the deployment: `volumes_from: container:…` (their mounts,
    /// the engine socket among them) and `network_mode` / `pid` / `ipc: container:…`
    /// (their namespaces, the host's if they run with it).
    #[serde(default)]
    pub other_containers: bool,
}

/// The sockets of container engines on a host, and their state directories (all
/// containers' file systems and configuration); whoever can reach one is root there.
/// A `*` segment stands for any one segment (a user id of a rootless engine). A bind
/// of one of these, of a directory holding one, or of anything under a state
/// directory is refused unless `docker_socket` allows it.
pub const ENGINE_SOCKETS: &[&str] = &[
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
    "/run/podman/podman.sock",
    "/var/run/podman/podman.sock",
    "/run/crio/crio.sock",
    "/var/run/crio/crio.sock",
    "/run/k3s/containerd/containerd.sock",
    "/var/run/k3s/containerd/containerd.sock",
    "/run/buildkit/buildkitd.sock",
    "/var/run/buildkit/buildkitd.sock",
    "/run/user/*/docker.sock",
    "/var/run/user/*/docker.sock",
    "/run/user/*/podman/podman.sock",
    "/var/run/user/*/podman/podman.sock",
    "/var/lib/docker",
    "/var/lib/containerd",
];

/// The entries of [`ENGINE_SOCKETS`] that are directories: everything under them is
/// the engine's too.
const ENGINE_STATE_DIRS: &[&str] = &["/var/lib/docker", "/var/lib/containerd"];

/// Why a bind of a host path is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindRefusal {
    /// The path has `..` (or `.`) segments: what it names depends on the host's
    /// directories, not on the text, so no prefix can vouch for it.
    NotNormal,
    /// The path is under none of the policy's prefixes.
    OutsidePrefixes,
    /// The path is, or holds, this engine socket.
    EngineSocket(&'static str),
}

impl RuntimePolicy {
    /// Whether `cap_add` may add `name` (any case, `CAP_` prefix optional, as Docker reads it).
    pub fn allows_capability(&self, name: &str) -> bool {
        let Ok(cap) = Capability::parse(name) else {
            return false;
        };
        self.capabilities.contains(&cap) || (cap.0 != "ALL" && self.capabilities.contains(&ALL))
    }

    /// Whether a bind mount of host path `source` is allowed; `None`: it is.
    pub fn bind_refusal(&self, source: &str) -> Option<BindRefusal> {
        let Some(path) = normal_path(source) else {
            return Some(BindRefusal::NotNormal);
        };
        if !self.docker_socket
            && let Some(socket) = ENGINE_SOCKETS
                .iter()
                .find(|s| holds(&path, s) || (ENGINE_STATE_DIRS.contains(s) && is_under(&path, s)))
        {
            return Some(BindRefusal::EngineSocket(socket));
        }
        if self.bind_prefixes.iter().any(|p| is_under(&path, &p.0)) {
            None
        } else {
            Some(BindRefusal::OutsidePrefixes)
        }
    }

    /// Everything either policy allows: what a release is checked against before it
    /// is tied to an environment (refused only if no environment could run it).
    pub fn union(&self, other: &Self) -> Self {
        Self {
            privileged: self.privileged || other.privileged,
            host_namespaces: self
                .host_namespaces
                .union(&other.host_namespaces)
                .copied()
                .collect(),
            capabilities: self
                .capabilities
                .union(&other.capabilities)
                .cloned()
                .collect(),
            devices: self.devices || other.devices,
            unconfined: self.unconfined || other.unconfined,
            bind_prefixes: self
                .bind_prefixes
                .union(&other.bind_prefixes)
                .cloned()
                .collect(),
            docker_socket: self.docker_socket || other.docker_socket,
            other_containers: self.other_containers || other.other_containers,
        }
    }
}

/// `path` is `prefix` or below it, segment by segment (`/srv/data` holds
/// `/srv/data/x`, not `/srv/database`).
fn is_under(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// `path` is `pattern` or a directory above it, segment by segment, a `*` segment
/// of `pattern` matching any one segment.
fn holds(path: &str, pattern: &str) -> bool {
    let mut wanted = pattern.split('/').filter(|s| !s.is_empty());
    path.split('/')
        .filter(|s| !s.is_empty())
        .all(|segment| wanted.next().is_some_and(|w| w == "*" || w == segment))
}

/// `path` without repeated or trailing slashes; `None` if it is not absolute or has
/// a `.` or `..` segment.
fn normal_path(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let mut out = String::with_capacity(path.len());
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        if segment == "." || segment == ".." {
            return None;
        }
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    Some(out)
}

/// A host namespace a container may share with its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostNamespace {
    /// `network_mode: host`.
    Network,
    /// `pid: host`.
    Pid,
    /// `ipc: host`.
    Ipc,
    /// `uts: host`.
    Uts,
    /// `userns_mode: host`.
    Userns,
    /// `cgroup: host`.
    Cgroup,
}

impl HostNamespace {
    /// The compose service key that asks for it.
    pub fn compose_key(self) -> &'static str {
        match self {
            Self::Network => "network_mode",
            Self::Pid => "pid",
            Self::Ipc => "ipc",
            Self::Uts => "uts",
            Self::Userns => "userns_mode",
            Self::Cgroup => "cgroup",
        }
    }

    /// The name in a policy (`network`, `pid`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Network => "network",
            Self::Pid => "pid",
            Self::Ipc => "ipc",
            Self::Uts => "uts",
            Self::Userns => "userns",
            Self::Cgroup => "cgroup",
        }
    }

    /// Every namespace, in policy order.
    pub const ALL: [Self; 6] = [
        Self::Network,
        Self::Pid,
        Self::Ipc,
        Self::Uts,
        Self::Userns,
        Self::Cgroup,
    ];
}

/// Linux capability names (capabilities(7)) without `CAP_`, and Docker's `ALL`.
pub const CAPABILITY_NAMES: &[&str] = &[
    "ALL",
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

const ALL: Capability = Capability(std::borrow::Cow::Borrowed("ALL"));

/// A known Linux capability name (or `ALL`), upper case without `CAP_`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Capability(std::borrow::Cow<'static, str>);

impl Capability {
    /// Reads `name` as Docker does: any case, `CAP_` prefix optional.
    pub fn parse(name: &str) -> Result<Self, ValidationError> {
        let upper = name.to_ascii_uppercase();
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
        CAPABILITY_NAMES
            .iter()
            .find(|known| **known == bare)
            .map(|known| Self(std::borrow::Cow::Borrowed(known)))
            .ok_or_else(|| {
                ValidationError::new(
                    "capabilities",
                    name.escape_debug(),
                    "a Linux capability name such as NET_ADMIN or NET_BIND_SERVICE (see capabilities(7)), or ALL",
                )
            })
    }

    /// The name, upper case without `CAP_`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Capability {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Capability> for String {
    fn from(c: Capability) -> Self {
        c.0.into_owned()
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An absolute host directory without `.` or `..` segments, stored without repeated
/// or trailing slashes (`/` itself is allowed: every host path).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostPrefix(String);

impl HostPrefix {
    /// Validates and normalises `path`.
    pub fn parse(path: &str) -> Result<Self, ValidationError> {
        let bad = |expected: &str| {
            ValidationError::new("bind_prefixes", path.escape_debug(), expected.to_owned())
        };
        if path.chars().any(char::is_control) {
            return Err(bad("a path without control characters"));
        }
        if !path.starts_with('/') {
            return Err(bad(
                "an absolute host path such as /srv/data (a relative one has no meaning on the host)",
            ));
        }
        normal_path(path).map(Self).ok_or_else(|| {
            bad("a path without `.` or `..` segments (a prefix names one directory, whatever the host's links)")
        })
    }

    /// The normalised path.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for HostPrefix {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<HostPrefix> for String {
    fn from(p: HostPrefix) -> Self {
        p.0
    }
}

impl fmt::Display for HostPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests;
