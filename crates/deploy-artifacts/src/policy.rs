//! The runtime policy check: which keys of a parsed compose template ask the host for more than an environment's `RuntimePolicy` allows (privileges, host namespaces, capabilities, devices, confinement, bind mounts), naming the service and the key.
//!
//! Pure, and run on the template itself (not on one target kind's reading of it),
//! so the same keys are refused for docker_host and compose_host targets and for
//! every transport. It reads a service's keys the way `container.rs` does: short and
//! long volume syntax, top-level volumes of the `local` driver bound to a host
//! directory (`driver_opts: {o: bind, device: /}`), which are binds under another name,
//! or mounting anything else of the host, networks by the name the engine knows
//! them by (`name: host` is the host's network), lifecycle hooks. Every value is read
//! as Compose reads it (`$$` as `$`; a lone `$` is refused: Compose would substitute
//! the host's value). Relative bind sources never get here: the template parser
//! refuses them.

use deploy_core::{BindRefusal, HostNamespace, RuntimePolicy};
use serde_yaml::{Mapping, Value};

use crate::errors::ArtifactError;
use crate::lock::{LockDoc, verify_lock};
use crate::template::ComposeTemplate;
use crate::yaml_in;

/// Whose policy a template is checked against (it appears in the error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyScope<'a> {
    /// The environment a job or promotion deploys to.
    Environment(&'a str),
    /// A release not yet tied to an environment, checked against the union of every
    /// environment's policy: refused only if no environment would allow a key.
    AnyEnvironment,
}

/// `security_opt` entries that tighten confinement and so need no policy.
const TIGHTENING_SECURITY_OPTS: &[&str] = &[
    "no-new-privileges",
    "no-new-privileges:true",
    "no-new-privileges=true",
];

/// Refuses the first key of `template` that `policy` does not allow.
pub fn check_runtime_policy(
    template: &ComposeTemplate,
    policy: &RuntimePolicy,
    scope: PolicyScope<'_>,
) -> Result<(), ArtifactError> {
    let top = Top {
        volumes: template.volumes.as_ref(),
        networks: template.networks.as_ref(),
    };
    for service in &template.services {
        check_service(&top, &service.body, policy)
            .map_err(|r| r.into_error(service.name.as_str(), scope))?;
    }
    Ok(())
}

/// Checks a rendered compose lock (what a rollback re-deploys) as
/// [`check_runtime_policy`] checks a template: a lock rendered before the policy was
/// tightened is refused now.
pub fn check_lock_policy(
    lock: &[u8],
    policy: &RuntimePolicy,
    scope: PolicyScope<'_>,
) -> Result<(), ArtifactError> {
    verify_lock(lock)?;
    let doc: LockDoc = yaml_in::parse("compose lock", lock)?;
    let top = Top {
        volumes: doc.volumes.as_ref(),
        networks: doc.networks.as_ref(),
    };
    for (service, body) in &doc.services {
        check_service(&top, body, policy).map_err(|r| r.into_error(service, scope))?;
    }
    Ok(())
}

/// The top-level sections of a template (or lock) that services refer to, `$$`
/// not yet read as `$`.
struct Top<'a> {
    volumes: Option<&'a Value>,
    networks: Option<&'a Value>,
}

/// A refused setting, before it is named with its service and scope.
struct Refused {
    key: &'static str,
    setting: String,
    /// Why the setting reaches the host, when its text does not say it.
    why: Option<String>,
    allow_with: String,
}

impl Refused {
    fn new(key: &'static str, setting: impl Into<String>, allow_with: impl Into<String>) -> Self {
        Self {
            key,
            setting: setting.into(),
            why: None,
            allow_with: allow_with.into(),
        }
    }

    fn because(mut self, why: String) -> Self {
        self.why = Some(why);
        self
    }

    fn into_error(self, service: &str, scope: PolicyScope<'_>) -> ArtifactError {
        let (scope, remedy) = match scope {
            PolicyScope::Environment(env) => (
                format!("environment `{env}`'s runtime policy"),
                format!(
                    "an admin can allow it with `{}` in that policy (`deployctl env policy set {env}`, or PUT /api/v1/environments/{env}/runtime-policy)",
                    self.allow_with
                ),
            ),
            PolicyScope::AnyEnvironment => (
                "every environment's runtime policy".to_owned(),
                format!(
                    "an admin can allow it with `{}` in the runtime policy of the environment that should run it (`deployctl env policy set <env>`)",
                    self.allow_with
                ),
            ),
        };
        ArtifactError::PolicyRefused {
            service: service.to_owned(),
            key: self.key.to_owned(),
            setting: match self.why {
                Some(why) => format!("`{}` ({why})", self.setting),
                None => format!("`{}`", self.setting),
            },
            scope,
            remedy,
        }
    }
}

fn check_service(top: &Top<'_>, body: &Mapping, policy: &RuntimePolicy) -> Result<(), Refused> {
    // Every value as Compose reads it: `$$` is a literal `$`, and a lone `$` (host
    // interpolation, refused when a template is parsed) would be replaced by the
    // host's value or its default, which no check here could vouch for.
    let body = &unescaped_mapping("services", body)?;
    let volumes = top
        .volumes
        .map(|v| unescaped("volumes", "volumes", v))
        .transpose()?;
    let networks = top
        .networks
        .map(|v| unescaped("networks", "networks", v))
        .transpose()?;
    if let Some(v) = get(body, "privileged")
        && !matches!(v, Value::Bool(false))
        && !policy.privileged
    {
        return Err(Refused::new(
            "privileged",
            format!("privileged: {}", shown(v)),
            "privileged: true",
        ));
    }
    // Lifecycle hooks run a command in the container, `privileged: true` theirs alone.
    for key in ["post_start", "pre_stop"] {
        let Some(Value::Sequence(hooks)) = get(body, key) else {
            continue;
        };
        for (i, hook) in hooks.iter().enumerate() {
            if let Value::Mapping(hook) = hook
                && let Some(v) = get(hook, "privileged")
                && !matches!(v, Value::Bool(false))
                && !policy.privileged
            {
                return Err(Refused::new(
                    key_name(key),
                    format!("{key}[{i}].privileged: {}", shown(v)),
                    "privileged: true",
                )
                .because("the hook's command runs with every privilege on the host".to_owned()));
            }
        }
    }
    for ns in HostNamespace::ALL {
        let key = ns.compose_key();
        if let Some(Value::String(mode)) = get(body, key)
            && mode.trim().eq_ignore_ascii_case("host")
            && !policy.host_namespaces.contains(&ns)
        {
            return Err(Refused::new(
                key,
                format!("{key}: {mode}"),
                format!("host_namespaces: [\"{}\"]", ns.as_str()),
            ));
        }
    }
    for cap in strings(get(body, "cap_add")) {
        if !policy.allows_capability(&cap) {
            let bare = cap.to_ascii_uppercase();
            let bare = bare.strip_prefix("CAP_").unwrap_or(&bare).to_owned();
            return Err(Refused::new(
                "cap_add",
                format!("cap_add: {cap}"),
                format!("capabilities: [\"{bare}\"]"),
            ));
        }
    }
    if !policy.devices {
        for key in ["devices", "device_cgroup_rules", "gpus"] {
            if let Some(v) = get(body, key).filter(|v| !is_empty_seq(v)) {
                return Err(Refused::new(
                    key_name(key),
                    format!("{key}: {}", shown(v)),
                    "devices: true",
                ));
            }
        }
        if let Some(v) = reserved_devices(body) {
            return Err(Refused::new(
                "deploy",
                format!("deploy.resources.reservations.devices: {}", shown(v)),
                "devices: true",
            ));
        }
    }
    if !policy.unconfined {
        for opt in strings(get(body, "security_opt")) {
            if !TIGHTENING_SECURITY_OPTS.contains(&opt.trim()) {
                return Err(Refused::new(
                    "security_opt",
                    format!("security_opt: {opt}"),
                    "unconfined: true",
                ));
            }
        }
    }
    if !policy.other_containers {
        for key in ["network_mode", "pid", "ipc"] {
            if let Some(Value::String(mode)) = get(body, key)
                && mode.trim().starts_with("container:")
            {
                return Err(Refused::new(
                    key_name(key),
                    format!("{key}: {mode}"),
                    "other_containers: true",
                )
                .because(
                    "a container outside the deployment, whose namespace may be the host's"
                        .to_owned(),
                ));
            }
        }
        for from in strings(get(body, "volumes_from")) {
            if from.trim().starts_with("container:") {
                return Err(Refused::new(
                    "volumes_from",
                    format!("volumes_from: {from}"),
                    "other_containers: true",
                )
                .because(
                    "the mounts of a container outside the deployment, whatever they are"
                        .to_owned(),
                ));
            }
        }
    }
    check_networks(body, networks.as_ref(), policy)?;
    if let Some(Value::Sequence(items)) = get(body, "volumes") {
        for item in items {
            check_volume(volumes.as_ref(), item, policy)?;
        }
    }
    Ok(())
}

/// The networks a service joins, each resolved to the name the engine knows it by
/// (a top-level `name:` or `external: {name:}`): Compose and docker_host targets
/// join a network named `host` as `network_mode: host`, and one named
/// `container:…` as another container's namespace.
fn check_networks(
    body: &Mapping,
    networks: Option<&Value>,
    policy: &RuntimePolicy,
) -> Result<(), Refused> {
    if get(body, "network_mode").is_some() {
        return Ok(());
    }
    let keys: Vec<String> = match get(body, "networks") {
        Some(Value::Mapping(m)) => m
            .keys()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect(),
        Some(v) => strings(Some(v)),
        // A service naming no network joins the project's `default` one.
        None => vec!["default".to_owned()],
    };
    for key in keys {
        let Some(name) = network_name(networks, &key) else {
            continue;
        };
        let setting = format!("networks: {key}");
        if name.trim().eq_ignore_ascii_case("host")
            && !policy.host_namespaces.contains(&HostNamespace::Network)
        {
            return Err(Refused::new(
                "networks",
                setting,
                format!("host_namespaces: [\"{}\"]", HostNamespace::Network.as_str()),
            )
            .because(format!(
                "network `{key}` is named `{name}`: the host's network namespace"
            )));
        }
        if name.trim().starts_with("container:") && !policy.other_containers {
            return Err(Refused::new("networks", setting, "other_containers: true").because(
                format!(
                    "network `{key}` is named `{name}`: the namespace of a container outside the deployment"
                ),
            ));
        }
    }
    Ok(())
}

/// The engine's name of top-level network `key`, when the template sets one.
fn network_name(networks: Option<&Value>, key: &str) -> Option<String> {
    let Some(Value::Mapping(networks)) = networks else {
        return None;
    };
    let Some(Value::Mapping(network)) = networks.get(key) else {
        return None;
    };
    if let Some(Value::String(name)) = get(network, "name") {
        return Some(name.clone());
    }
    match get(network, "external") {
        Some(Value::Mapping(e)) => match get(e, "name") {
            Some(Value::String(name)) => Some(name.clone()),
            _ => Some(key.to_owned()),
        },
        Some(Value::Bool(true)) => Some(key.to_owned()),
        _ => None,
    }
}

/// `v` with every string read as Compose reads it (`$$` as `$`); a lone `$` refused.
fn unescaped(key: &'static str, at: &str, v: &Value) -> Result<Value, Refused> {
    Ok(match v {
        Value::String(s) => Value::String(unescape(key, at, s)?),
        Value::Sequence(items) => Value::Sequence(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| unescaped(key, &format!("{at}[{i}]"), item))
                .collect::<Result<_, _>>()?,
        ),
        Value::Mapping(m) => Value::Mapping(unescaped_mapping_at(key, at, m)?),
        Value::Tagged(t) => unescaped(key, at, &t.value)?,
        other => other.clone(),
    })
}

/// A service body with every value unescaped, each under its own key's name.
fn unescaped_mapping(at: &str, m: &Mapping) -> Result<Mapping, Refused> {
    m.iter()
        .map(|(k, v)| {
            let name = k.as_str().unwrap_or_default();
            Ok((
                k.clone(),
                unescaped(static_key(name), &format!("{at}.{name}"), v)?,
            ))
        })
        .collect()
}

fn unescaped_mapping_at(key: &'static str, at: &str, m: &Mapping) -> Result<Mapping, Refused> {
    m.iter()
        .map(|(k, v)| {
            let name = k.as_str().unwrap_or_default();
            Ok((k.clone(), unescaped(key, &format!("{at}.{name}"), v)?))
        })
        .collect()
}

fn unescape(key: &'static str, at: &str, s: &str) -> Result<String, Refused> {
    if !s.contains('$') {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '$' && chars.next() != Some('$') {
            return Err(Refused::new(
                key,
                format!("{at}: {s}"),
                "a literal value, `$$` for a `$` (no policy allows host interpolation)",
            )
            .because(
                "Compose would replace the `$` interpolation with a value from the host's environment or its default"
                    .to_owned(),
            ));
        }
        out.push(c);
    }
    Ok(out)
}

/// A service key as the `'static` name of an error's field.
fn static_key(key: &str) -> &'static str {
    crate::container::DOCKER_HOST_KEYS
        .iter()
        .chain(crate::container::COMPOSE_ONLY_KEYS)
        .chain(["componentName", "environment", "labels", "image"].iter())
        .find(|k| **k == key)
        .copied()
        .unwrap_or("services")
}

/// The `'static` name of a device key (the error's field).
fn key_name(key: &str) -> &'static str {
    match key {
        "devices" => "devices",
        "device_cgroup_rules" => "device_cgroup_rules",
        "gpus" => "gpus",
        "network_mode" => "network_mode",
        "pid" => "pid",
        "post_start" => "post_start",
        "pre_stop" => "pre_stop",
        _ => "ipc",
    }
}

fn check_volume(
    volumes: Option<&Value>,
    item: &Value,
    policy: &RuntimePolicy,
) -> Result<(), Refused> {
    let (kind, source) = match item {
        Value::String(s) => {
            let mut parts = s.split(':');
            let first = parts.next().unwrap_or_default().to_owned();
            if parts.next().is_none() {
                return Ok(());
            }
            let kind = if first.starts_with(['/', '.', '~']) {
                "bind"
            } else {
                "volume"
            };
            (kind.to_owned(), first)
        }
        Value::Mapping(m) => {
            let text = |key: &str| match get(m, key) {
                Some(Value::String(s)) => Some(s.clone()),
                _ => None,
            };
            let (Some(kind), Some(source)) = (text("type"), text("source")) else {
                return Ok(());
            };
            (kind, source)
        }
        _ => return Ok(()),
    };
    let setting = || format!("volumes: {}", shown(item));
    match kind.as_str() {
        "bind" => bind(&source, setting(), None, policy),
        "volume" => match volume_use(volumes, &source) {
            VolumeUse::Plain => Ok(()),
            VolumeUse::Bind(device) => bind(
                &device,
                setting(),
                Some(format!("volume `{source}` binds host path `{device}`")),
                policy,
            ),
            VolumeUse::HostMount(what) if !policy.devices => {
                Err(Refused::new("volumes", setting(), "devices: true")
                    .because(format!("volume `{source}` {what}")))
            }
            VolumeUse::HostMount(_) => Ok(()),
        },
        _ => Ok(()),
    }
}

/// What a named volume takes from the host.
enum VolumeUse {
    /// An engine-managed directory, a tmpfs, or a network share (NFS, CIFS).
    Plain,
    /// A host directory (`driver_opts: {o: bind, device: /path}`), checked like a bind.
    Bind(String),
    /// Anything else the host mounts for it (a block device, `proc`, an overlay of
    /// host directories, …) or a volume plugin, which reads its options as it likes
    /// (a host path among them): as much as a device of the host.
    HostMount(String),
}

/// Mount types of the `local` driver that take nothing from the host.
const LOCAL_TMPFS: &[&str] = &["tmpfs"];
/// Network file systems of the `local` driver, with an `addr=` option.
const LOCAL_NETWORK_FS: &[&str] = &["nfs", "nfs4", "cifs", "smb3"];

/// How top-level volume `key` (values already unescaped) uses the host.
fn volume_use(volumes: Option<&Value>, key: &str) -> VolumeUse {
    let Some(Value::Mapping(volumes)) = volumes else {
        return VolumeUse::Plain;
    };
    let Some(Value::Mapping(volume)) = volumes.get(key) else {
        return VolumeUse::Plain;
    };
    match get(volume, "driver") {
        None => {}
        Some(Value::String(driver)) if driver == "local" => {}
        Some(driver) => {
            return VolumeUse::HostMount(format!(
                "uses volume driver `{}`, a plugin that reads its options as it likes (a host path among them)",
                shown(driver)
            ));
        }
    }
    let opts = match get(volume, "driver_opts") {
        None => return VolumeUse::Plain,
        Some(Value::Mapping(opts)) if opts.is_empty() => return VolumeUse::Plain,
        Some(Value::Mapping(opts)) => opts,
        Some(other) => {
            return VolumeUse::HostMount(format!("has driver_opts `{}`", shown(other)));
        }
    };
    let text = |k: &str| match get(opts, k) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(v @ Value::Number(_)) => Some(shown(v)),
        _ => None,
    };
    let kind = text("type").unwrap_or_default();
    let o = text("o").unwrap_or_default();
    let device = text("device").unwrap_or_default();
    let options: Vec<&str> = o.split(',').map(str::trim).collect();
    if options.iter().any(|o| *o == "bind" || *o == "rbind") {
        return VolumeUse::Bind(device);
    }
    let others: Vec<String> = opts
        .keys()
        .filter_map(Value::as_str)
        .filter(|k| !["type", "o", "device"].contains(k))
        .map(str::to_owned)
        .collect();
    if !others.is_empty() {
        return VolumeUse::HostMount(format!(
            "has driver_opts `{}`, which the `local` driver does not read as a tmpfs, NFS/CIFS share or bind",
            others.join(", ")
        ));
    }
    let k = kind.trim().to_ascii_lowercase();
    if LOCAL_TMPFS.contains(&k.as_str()) {
        return VolumeUse::Plain;
    }
    if LOCAL_NETWORK_FS.contains(&k.as_str()) && options.iter().any(|o| o.starts_with("addr=")) {
        return VolumeUse::Plain;
    }
    let with = if o.is_empty() {
        String::new()
    } else {
        format!(" with options `{o}`")
    };
    VolumeUse::HostMount(format!(
        "mounts `{device}` of type `{kind}`{with} on the host (the `local` driver mounts only a tmpfs, an NFS/CIFS share with `addr=`, or a bind, without a policy)"
    ))
}

fn bind(
    source: &str,
    setting: String,
    via: Option<String>,
    policy: &RuntimePolicy,
) -> Result<(), Refused> {
    let Some(refusal) = policy.bind_refusal(source) else {
        return Ok(());
    };
    let (why, allow_with) = match refusal {
        BindRefusal::NotNormal => (
            format!("host path `{source}` has `.` or `..` segments"),
            "a host path without `.` or `..` (no policy allows it)".to_owned(),
        ),
        BindRefusal::OutsidePrefixes => (
            format!("host path `{source}` is under no allowed prefix"),
            format!("bind_prefixes: [\"{source}\"] (or a directory above it)"),
        ),
        BindRefusal::EngineSocket(socket) if !socket.ends_with(".sock") => (
            format!(
                "host path `{source}` is, holds or is under the engine's state directory `{socket}`, which is root on the host"
            ),
            "docker_socket: true".to_owned(),
        ),
        BindRefusal::EngineSocket(socket) => (
            format!(
                "host path `{source}` is or holds the engine socket `{socket}`, which is root on the host"
            ),
            "docker_socket: true".to_owned(),
        ),
    };
    let why = match via {
        Some(via) => format!("{via}; {why}"),
        None => why,
    };
    Err(Refused::new("volumes", setting, allow_with).because(why))
}

/// `deploy.resources.reservations.devices`, if set.
fn reserved_devices(body: &Mapping) -> Option<&Value> {
    let Value::Mapping(deploy) = get(body, "deploy")? else {
        return None;
    };
    let Value::Mapping(resources) = get(deploy, "resources")? else {
        return None;
    };
    let Value::Mapping(reservations) = get(resources, "reservations")? else {
        return None;
    };
    get(reservations, "devices").filter(|v| !is_empty_seq(v))
}

fn get<'v>(m: &'v Mapping, key: &str) -> Option<&'v Value> {
    m.get(key).filter(|v| !v.is_null())
}

fn is_empty_seq(v: &Value) -> bool {
    matches!(v, Value::Sequence(s) if s.is_empty())
}

/// The strings of a list (or of a single string), other items skipped.
fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(|i| match i {
                Value::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// A value as short YAML-ish text for a message.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => crate::compose_syntax::describe(other),
    }
}

#[cfg(test)]
mod tests;
