//! From a template service (Compose syntax) to the `ContainerSpec` a docker_host target runs, every key read the way Compose reads it, every error with its path (`services.web.ports[0]`).
//!
//! The same function validates a template when a release is created (with a
//! placeholder image and project, [`Applies::Validate`], so compose-only keys pass)
//! and resolves a service for one docker_host target at job creation
//! ([`Applies::DockerHost`], which refuses the keys a docker_host cannot apply,
//! naming them). Keys are in [`DOCKER_HOST_KEYS`]; the rest of Compose's service
//! keys are applied by compose_host targets only ([`COMPOSE_ONLY_KEYS`]).

use std::collections::BTreeMap;
use std::net::IpAddr;

use deploy_core::{
    ContainerHealthcheck, ContainerSpec, ExposedPort, ExtraHost, ImageRef, Logging, Mount,
    NetworkAttachment, PortMapping, Protocol, RestartPolicy, UpdateOrder,
};
use serde_yaml::{Mapping, Value};

use crate::compose_syntax::{argv, compose_unescape, describe, parse_duration_ms, scalar_string};
use crate::errors::ArtifactError;

/// Service keys a docker_host target applies (besides `componentName`, `environment`
/// and `labels`, which every target kind applies).
pub const DOCKER_HOST_KEYS: &[&str] = &[
    "command",
    "cpus",
    "depends_on",
    "deploy",
    "entrypoint",
    "expose",
    "extra_hosts",
    "healthcheck",
    "hostname",
    "init",
    "logging",
    "mem_limit",
    "networks",
    "ports",
    "read_only",
    "restart",
    "stop_grace_period",
    "stop_signal",
    "tmpfs",
    "user",
    "volumes",
    "working_dir",
];

/// Compose service keys a template may use that only compose_host targets apply.
pub const COMPOSE_ONLY_KEYS: &[&str] = &[
    "annotations",
    "attach",
    "blkio_config",
    "cap_add",
    "cap_drop",
    "cgroup",
    "cgroup_parent",
    "configs",
    "cpu_count",
    "cpu_percent",
    "cpu_period",
    "cpu_quota",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpu_shares",
    "cpuset",
    "credential_spec",
    "device_cgroup_rules",
    "devices",
    "dns",
    "dns_opt",
    "dns_search",
    "domainname",
    "external_links",
    "gpus",
    "group_add",
    "ipc",
    "isolation",
    "links",
    "mac_address",
    "mem_reservation",
    "mem_swappiness",
    "memswap_limit",
    "network_mode",
    "oom_kill_disable",
    "oom_score_adj",
    "pid",
    "pids_limit",
    "platform",
    "post_start",
    "pre_stop",
    "privileged",
    "pull_policy",
    "runtime",
    "scale",
    "secrets",
    "security_opt",
    "shm_size",
    "stdin_open",
    "storage_opt",
    "sysctls",
    "tty",
    "ulimits",
    "userns_mode",
    "uts",
    "volumes_from",
];

/// Compose keys no template may set, and why.
pub(crate) const REFUSED_KEYS: &[(&str, &str)] = &[
    ("image", "no such key: the release pins the image"),
    ("build", "no such key: the release pins the image"),
    (
        "env_file",
        "no such key: values go in `environment:` (files on the machine that renders are not part of the release)",
    ),
    ("label_file", "no such key: labels go in `labels:`"),
    (
        "container_name",
        "no such key: the deployment names containers (`<component>` on docker_host, Compose's names on compose_host)",
    ),
    (
        "extends",
        "no such key: a template is one self-contained file",
    ),
    (
        "profiles",
        "no such key: every service of a template is deployed",
    ),
    ("develop", "no such key: it is for `docker compose watch`"),
    (
        "use_api_socket",
        "no such key: it hands the engine to the container",
    ),
    ("models", "no such key"),
    ("provider", "no such key"),
    ("pull_refresh_after", "no such key"),
];

/// How strictly a service is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    /// Checking a template: compose-only keys are accepted (a compose_host applies them).
    Validate,
    /// Resolving for a docker_host target: compose-only keys are refused.
    DockerHost,
}

/// What resolving a service needs besides the template.
#[derive(Debug, Clone, Copy)]
pub struct ServiceContext<'a> {
    /// The pinned image of the service's component.
    pub image: &'a ImageRef,
    /// Prefix of volume and network names that the template does not name itself
    /// (`<project>_<key>`, as Compose names them).
    pub project: &'a str,
    /// The service's environment, already merged (template values and the
    /// environment's variables).
    pub env: &'a BTreeMap<String, String>,
    /// The service's labels, as the container gets them.
    pub labels: &'a BTreeMap<String, String>,
    /// Top-level `volumes:` of the template.
    pub volumes: Option<&'a Value>,
    /// Top-level `networks:` of the template.
    pub networks: Option<&'a Value>,
}

fn path(service: &str, rest: &str) -> String {
    format!("services.{service}.{rest}")
}

/// Reads `body` (a service mapping, merge keys applied) into a `ContainerSpec`.
pub fn container_spec(
    service: &str,
    body: &Mapping,
    ctx: &ServiceContext<'_>,
    applies: Applies,
) -> Result<ContainerSpec, ArtifactError> {
    let mut spec = ContainerSpec::from_image(ctx.image.clone());
    spec.env = ctx.env.clone();
    spec.labels = ctx.labels.clone();
    let mut memory_seen = false;
    let mut cpus_seen = false;
    for (key, value) in body {
        let Value::String(key) = key else {
            return Err(ArtifactError::invalid(
                format!("services.{service}"),
                describe(key),
                "string keys",
            ));
        };
        let at = path(service, key);
        match key.as_str() {
            "componentName" | "environment" | "labels" | "depends_on" => {}
            k if k.starts_with("x-") => {}
            "command" => spec.command = Some(argv(&at, value)?),
            "entrypoint" => spec.entrypoint = Some(argv(&at, value)?),
            "ports" => spec.ports = ports(&at, value)?,
            "expose" => spec.expose = expose(&at, value)?,
            "volumes" => {
                for (i, item) in seq(&at, value)?.iter().enumerate() {
                    spec.mounts
                        .push(volume(&format!("{at}[{i}]"), item, ctx, applies)?);
                }
            }
            "tmpfs" => {
                let items = match value {
                    Value::Sequence(s) => s.clone(),
                    other => vec![other.clone()],
                };
                for (i, item) in items.iter().enumerate() {
                    spec.mounts
                        .push(tmpfs(&format!("{at}[{i}]"), item, applies)?);
                }
            }
            "read_only" => spec.read_only = boolean(&at, value)?,
            "init" => spec.init = boolean(&at, value)?,
            "working_dir" => spec.working_dir = Some(scalar_string(&at, value)?),
            "user" => spec.user = Some(scalar_string(&at, value)?),
            "hostname" => spec.hostname = Some(scalar_string(&at, value)?),
            "restart" => spec.restart = restart(&at, value)?,
            "networks" => spec.networks = networks(&at, value, service, ctx, applies)?,
            "mem_limit" => {
                spec.memory_bytes = Some(bytes(&at, value)?);
                memory_seen = true;
            }
            "cpus" => {
                spec.nano_cpus = Some(nano_cpus(&at, value)?);
                cpus_seen = true;
            }
            "deploy" => {
                let DeploySection {
                    memory,
                    cpus,
                    order,
                } = deploy_section(&at, value, applies)?;
                spec.update_order = order;
                if let Some(m) = memory {
                    if memory_seen && spec.memory_bytes != Some(m) {
                        return Err(ArtifactError::invalid(
                            format!("{at}.resources.limits.memory"),
                            m.to_string(),
                            "the same limit as `mem_limit`, or only one of the two",
                        ));
                    }
                    spec.memory_bytes = Some(m);
                }
                if let Some(c) = cpus {
                    if cpus_seen && spec.nano_cpus != Some(c) {
                        return Err(ArtifactError::invalid(
                            format!("{at}.resources.limits.cpus"),
                            c.to_string(),
                            "the same limit as `cpus`, or only one of the two",
                        ));
                    }
                    spec.nano_cpus = Some(c);
                }
            }
            "healthcheck" => spec.healthcheck = Some(healthcheck(&at, value, applies)?),
            "stop_signal" => spec.stop_signal = Some(scalar_string(&at, value)?),
            "stop_grace_period" => {
                spec.stop_grace_secs = parse_duration_ms(&at, value)?.div_ceil(1000);
            }
            "extra_hosts" => spec.extra_hosts = extra_hosts(&at, value)?,
            "logging" => spec.logging = logging(&at, value)?,
            k if COMPOSE_ONLY_KEYS.contains(&k) => {
                if applies == Applies::DockerHost {
                    return Err(ArtifactError::invalid(
                        at,
                        describe(value),
                        format!(
                            "no such key on a docker_host target (only compose_host targets apply it); docker_host applies: environment, labels, {}",
                            DOCKER_HOST_KEYS.join(", ")
                        ),
                    ));
                }
            }
            k => {
                let why = REFUSED_KEYS
                    .iter()
                    .find(|(r, _)| *r == k)
                    .map_or("a Compose service key", |(_, why)| why);
                return Err(ArtifactError::invalid(at, describe(value), why));
            }
        }
    }
    if !body.contains_key("networks") && !body.contains_key("network_mode") {
        // As Compose does: a service that names no network joins the project's
        // `default` one, reachable there by its service name.
        spec.networks = vec![default_network(service, ctx, applies)?];
    }
    spec.validate(&format!("services.{service}"))
        .map_err(|e| ArtifactError::invalid(e.field, e.value, e.expected))?;
    Ok(spec)
}

fn seq<'v>(field: &str, v: &'v Value) -> Result<&'v Vec<Value>, ArtifactError> {
    match v {
        Value::Sequence(s) => Ok(s),
        other => Err(ArtifactError::invalid(field, describe(other), "a list")),
    }
}

fn mapping<'v>(field: &str, v: &'v Value) -> Result<&'v Mapping, ArtifactError> {
    match v {
        Value::Mapping(m) => Ok(m),
        other => Err(ArtifactError::invalid(field, describe(other), "a mapping")),
    }
}

/// Refuses keys of `m` outside `allowed`, naming the first.
fn only_keys(field: &str, m: &Mapping, allowed: &[&str]) -> Result<(), ArtifactError> {
    for k in m.keys() {
        let ok =
            matches!(k, Value::String(s) if allowed.contains(&s.as_str()) || s.starts_with("x-"));
        if !ok {
            return Err(ArtifactError::invalid(
                field,
                describe(k),
                format!("only the keys {}", allowed.join(", ")),
            ));
        }
    }
    Ok(())
}

/// Refuses a setting a docker_host does not apply yet (a compose_host, where Compose
/// applies it, accepts it): running the container without it would run something else
/// than the definition.
fn compose_only(field: &str, shown: &str, applies: Applies) -> Result<(), ArtifactError> {
    if applies == Applies::DockerHost {
        Err(ArtifactError::invalid(
            field,
            shown,
            "a setting a docker_host target applies (this one only compose_host targets apply)",
        ))
    } else {
        Ok(())
    }
}

/// Refuses the keys of `m` in `compose_only_keys` on a docker_host, naming the first.
fn compose_only_keys(
    field: &str,
    m: &Mapping,
    compose_only_keys: &[&str],
    applies: Applies,
) -> Result<(), ArtifactError> {
    for key in compose_only_keys {
        if get(m, key).is_some() {
            compose_only(&format!("{field}.{key}"), key, applies)?;
        }
    }
    Ok(())
}

fn get<'v>(m: &'v Mapping, key: &str) -> Option<&'v Value> {
    m.get(key).filter(|v| !v.is_null())
}

pub(crate) fn boolean(field: &str, v: &Value) -> Result<bool, ArtifactError> {
    match v {
        Value::Bool(b) => Ok(*b),
        other => Err(ArtifactError::invalid(
            field,
            describe(other),
            "true or false",
        )),
    }
}

fn protocol(field: &str, p: &str) -> Result<Protocol, ArtifactError> {
    Protocol::parse(p).ok_or_else(|| ArtifactError::invalid(field, p, "tcp, udp or sctp"))
}

/// `8080` or `8000-8010`, as an inclusive range.
fn port_range(field: &str, s: &str) -> Result<(u16, u16), ArtifactError> {
    let bad = || ArtifactError::invalid(field, s, "a port from 1 to 65535, or a range `low-high`");
    let (lo, hi) = match s.split_once('-') {
        Some((lo, hi)) => (lo, hi),
        None => (s, s),
    };
    let lo: u16 = lo.parse().map_err(|_| bad())?;
    let hi: u16 = hi.parse().map_err(|_| bad())?;
    if lo == 0 || hi < lo {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// Most ports one range may expand to.
const MAX_RANGE: u32 = 1000;

/// `ports:` in short syntax (`[ip:][host[-range]:]container[-range][/protocol]`, an
/// IPv6 address in brackets) or long syntax (`target`, `published`, `host_ip`, `protocol`, `mode`).
pub(crate) fn ports(field: &str, v: &Value) -> Result<Vec<PortMapping>, ArtifactError> {
    let mut out = Vec::new();
    for (i, item) in seq(field, v)?.iter().enumerate() {
        let at = format!("{field}[{i}]");
        match item {
            Value::Number(n) => {
                let s = n.to_string();
                short_port(&at, &s, &mut out)?;
            }
            Value::String(s) => short_port(&at, &compose_unescape(&at, s)?, &mut out)?,
            Value::Mapping(m) => {
                only_keys(
                    &at,
                    m,
                    &[
                        "target",
                        "published",
                        "host_ip",
                        "protocol",
                        "mode",
                        "name",
                        "app_protocol",
                    ],
                )?;
                let text = |key: &str| -> Result<Option<String>, ArtifactError> {
                    get(m, key)
                        .map(|v| scalar_string(&format!("{at}.{key}"), v))
                        .transpose()
                };
                if let Some(mode) = text("mode")?
                    && mode != "host"
                    && mode != "ingress"
                {
                    return Err(ArtifactError::invalid(
                        format!("{at}.mode"),
                        mode,
                        "host or ingress",
                    ));
                }
                let target = text("target")?
                    .ok_or_else(|| ArtifactError::invalid(&at, "(no target)", "a `target` port"))?;
                let proto = match text("protocol")? {
                    Some(p) => protocol(&format!("{at}.protocol"), &p)?,
                    None => Protocol::Tcp,
                };
                let host_ip = text("host_ip")?
                    .map(|ip| ip_addr(&format!("{at}.host_ip"), &ip))
                    .transpose()?;
                let (tlo, thi) = port_range(&format!("{at}.target"), &target)?;
                let published = text("published")?
                    .map(|p| port_range(&format!("{at}.published"), &p))
                    .transpose()?;
                expand(&at, host_ip, published, (tlo, thi), proto, &mut out)?;
            }
            other => {
                return Err(ArtifactError::invalid(
                    at,
                    describe(other),
                    "a port string, number or mapping",
                ));
            }
        }
    }
    Ok(out)
}

fn ip_addr(field: &str, s: &str) -> Result<IpAddr, ArtifactError> {
    let bare = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    bare.parse()
        .map_err(|_| ArtifactError::invalid(field, s, "an IPv4 or IPv6 address"))
}

fn short_port(field: &str, spec: &str, out: &mut Vec<PortMapping>) -> Result<(), ArtifactError> {
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((rest, p)) => (rest, protocol(field, p)?),
        None => (spec, Protocol::Tcp),
    };
    // An IPv6 host address is written in brackets: `[::1]:8080:80`.
    let (host_ip, rest) = if let Some(after) = rest.strip_prefix('[') {
        let (ip, tail) = after.split_once(']').ok_or_else(|| {
            ArtifactError::invalid(field, spec, "`[ipv6]:host:container` with a closing `]`")
        })?;
        let tail = tail
            .strip_prefix(':')
            .ok_or_else(|| ArtifactError::invalid(field, spec, "`[ipv6]:host:container`"))?;
        (Some(ip_addr(field, ip)?), tail)
    } else {
        (None, rest)
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, published, target) = match (host_ip, parts.as_slice()) {
        (None, [target]) => (None, None, *target),
        (None, [published, target]) => (None, Some(*published), *target),
        (None, [ip, published, target]) => (Some(ip_addr(field, ip)?), Some(*published), *target),
        (Some(ip), [published, target]) => (Some(ip), Some(*published), *target),
        _ => {
            return Err(ArtifactError::invalid(
                field,
                spec,
                "`[ip:][host:]container[/protocol]`",
            ));
        }
    };
    let published = match published {
        None | Some("") => None,
        Some(p) => Some(port_range(field, p)?),
    };
    let target = port_range(field, target)?;
    expand(field, ip, published, target, proto, out)
}

/// One mapping per port of a range; a host range must be as long as the container
/// range, or a single port... only for a single container port (Docker picks one).
fn expand(
    field: &str,
    host_ip: Option<IpAddr>,
    published: Option<(u16, u16)>,
    (tlo, thi): (u16, u16),
    protocol: Protocol,
    out: &mut Vec<PortMapping>,
) -> Result<(), ArtifactError> {
    let count = u32::from(thi - tlo) + 1;
    if count > MAX_RANGE {
        return Err(ArtifactError::invalid(
            field,
            format!("{tlo}-{thi}"),
            format!("at most {MAX_RANGE} ports in one range"),
        ));
    }
    if let Some((plo, phi)) = published
        && u32::from(phi - plo) + 1 != count
    {
        if count == 1 {
            return Err(ArtifactError::invalid(
                field,
                format!("{plo}-{phi}"),
                "one host port for one container port (a host port range is not supported)",
            ));
        }
        return Err(ArtifactError::invalid(
            field,
            format!("{plo}-{phi}"),
            format!("a host range of {count} ports, like the container range"),
        ));
    }
    for offset in 0..=(thi - tlo) {
        out.push(PortMapping {
            host_ip,
            host_port: published.map(|(plo, _)| plo + offset),
            container_port: tlo + offset,
            protocol,
        });
    }
    Ok(())
}

fn expose(field: &str, v: &Value) -> Result<Vec<ExposedPort>, ArtifactError> {
    let mut out = Vec::new();
    for (i, item) in seq(field, v)?.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let s = scalar_string(&at, item)?;
        let (range, proto) = match s.rsplit_once('/') {
            Some((r, p)) => (r, protocol(&at, p)?),
            None => (s.as_str(), Protocol::Tcp),
        };
        let (lo, hi) = port_range(&at, range)?;
        if u32::from(hi - lo) + 1 > MAX_RANGE {
            return Err(ArtifactError::invalid(
                at,
                &s,
                format!("at most {MAX_RANGE} ports"),
            ));
        }
        out.extend((lo..=hi).map(|port| ExposedPort {
            port,
            protocol: proto,
        }));
    }
    Ok(out)
}

/// The definition of a top-level volume or network: (final name, external, driver, driver_opts).
struct Declared {
    name: String,
    external: bool,
    driver: Option<String>,
    driver_opts: BTreeMap<String, String>,
}

/// Looks `key` up in a top-level `volumes:` / `networks:` section and resolves its name.
fn declared(
    field: &str,
    section: &str,
    top: Option<&Value>,
    key: &str,
    project: &str,
    allowed: &[&str],
    applies: Applies,
) -> Result<Declared, ArtifactError> {
    let entry = match top {
        Some(Value::Mapping(m)) => m.get(key),
        _ => None,
    };
    let Some(entry) = entry else {
        return Err(ArtifactError::invalid(
            field,
            key,
            format!("a {section} declared under the top-level `{section}s:`"),
        ));
    };
    let top_field = format!("{section}s.{key}");
    let mut d = Declared {
        name: format!("{project}_{key}"),
        external: false,
        driver: None,
        driver_opts: BTreeMap::new(),
    };
    let Value::Mapping(m) = entry else {
        if entry.is_null() {
            return Ok(d);
        }
        return Err(ArtifactError::invalid(
            top_field,
            describe(entry),
            "a mapping or nothing",
        ));
    };
    only_keys(&top_field, m, allowed)?;
    let compose_only: Vec<&str> = allowed
        .iter()
        .copied()
        .filter(|k| !APPLIED_DECLARED_KEYS.contains(k))
        .collect();
    compose_only_keys(&top_field, m, &compose_only, applies)?;
    if let Some(v) = get(m, "external") {
        let at = format!("{top_field}.external");
        match v {
            Value::Bool(b) => d.external = *b,
            // Compose's older form: `external: {name: x}`.
            Value::Mapping(e) => {
                only_keys(&at, e, &["name"])?;
                d.external = true;
                if let Some(n) = get(e, "name") {
                    d.name = scalar_string(&format!("{at}.name"), n)?;
                }
            }
            other => return Err(ArtifactError::invalid(at, describe(other), "true or false")),
        }
        // An external volume or network is the engine's own, named by its key.
        if d.external && matches!(v, Value::Bool(true)) {
            d.name = key.to_owned();
        }
    }
    if let Some(n) = get(m, "name") {
        d.name = scalar_string(&format!("{top_field}.name"), n)?;
    }
    if let Some(v) = get(m, "driver") {
        d.driver = Some(scalar_string(&format!("{top_field}.driver"), v)?);
    }
    if let Some(v) = get(m, "driver_opts") {
        d.driver_opts = string_pairs(&format!("{top_field}.driver_opts"), v)?;
    }
    Ok(d)
}

fn string_pairs(field: &str, v: &Value) -> Result<BTreeMap<String, String>, ArtifactError> {
    let mut out = BTreeMap::new();
    for (k, v) in mapping(field, v)? {
        let k = scalar_string(field, k)?;
        let v = scalar_string(&format!("{field}.{k}"), v)?;
        out.insert(k, v);
    }
    Ok(out)
}

/// The keys of a top-level volume or network a docker_host applies.
const APPLIED_DECLARED_KEYS: &[&str] = &["driver", "driver_opts", "external", "name"];
const VOLUME_KEYS: &[&str] = &["driver", "driver_opts", "external", "name", "labels"];
const NETWORK_KEYS: &[&str] = &[
    "driver",
    "driver_opts",
    "external",
    "name",
    "labels",
    "internal",
    "attachable",
    "enable_ipv6",
    "ipam",
];

fn volume(
    field: &str,
    item: &Value,
    ctx: &ServiceContext<'_>,
    applies: Applies,
) -> Result<Mount, ArtifactError> {
    let (kind, source, target, read_only, size) = match item {
        Value::String(s) => {
            let s = compose_unescape(field, s)?;
            let parts: Vec<&str> = s.split(':').collect();
            let (source, target, mode) = match parts.as_slice() {
                [target] => (None, *target, None),
                [source, target] => (Some(*source), *target, None),
                [source, target, mode] => (Some(*source), *target, Some(*mode)),
                _ => {
                    return Err(ArtifactError::invalid(
                        field,
                        &s,
                        "`[source:]target[:mode]`",
                    ));
                }
            };
            let mut read_only = false;
            for m in mode.into_iter().flat_map(|m| m.split(',')) {
                match m {
                    "ro" => read_only = true,
                    "rw" | "" => {}
                    "z" | "Z" | "nocopy" => compose_only(field, m, applies)?,
                    other => {
                        return Err(ArtifactError::invalid(
                            field,
                            other,
                            "a mode of ro, rw, z, Z or nocopy",
                        ));
                    }
                }
            }
            let kind = match source {
                Some(src) if src.starts_with(['/', '.', '~']) => "bind",
                Some(_) => "volume",
                None => "anonymous",
            };
            (
                kind.to_owned(),
                source.map(str::to_owned),
                target.to_owned(),
                read_only,
                None,
            )
        }
        Value::Mapping(m) => {
            only_keys(
                field,
                m,
                &[
                    "type",
                    "source",
                    "target",
                    "read_only",
                    "bind",
                    "volume",
                    "tmpfs",
                    "consistency",
                ],
            )?;
            // `consistency` is a no-op on Linux engines, as in Docker itself.
            compose_only_keys(field, m, &["bind", "volume"], applies)?;
            let text = |key: &str| -> Result<Option<String>, ArtifactError> {
                get(m, key)
                    .map(|v| scalar_string(&format!("{field}.{key}"), v))
                    .transpose()
            };
            let kind = text("type")?.ok_or_else(|| {
                ArtifactError::invalid(field, "(no type)", "`type: bind`, `volume` or `tmpfs`")
            })?;
            let target = text("target")?.ok_or_else(|| {
                ArtifactError::invalid(field, "(no target)", "a `target` path in the container")
            })?;
            let read_only = get(m, "read_only")
                .map(|v| boolean(&format!("{field}.read_only"), v))
                .transpose()?
                .unwrap_or(false);
            let size = match get(m, "tmpfs") {
                Some(t) => {
                    let t = mapping(&format!("{field}.tmpfs"), t)?;
                    only_keys(&format!("{field}.tmpfs"), t, &["size", "mode"])?;
                    compose_only_keys(&format!("{field}.tmpfs"), t, &["mode"], applies)?;
                    get(t, "size")
                        .map(|v| bytes(&format!("{field}.tmpfs.size"), v))
                        .transpose()?
                }
                None => None,
            };
            let kind = match (kind.as_str(), text("source")?.is_some()) {
                ("volume", false) => "anonymous".to_owned(),
                _ => kind,
            };
            (kind, text("source")?, target, read_only, size)
        }
        other => {
            return Err(ArtifactError::invalid(
                field,
                describe(other),
                "a `source:target[:mode]` string or a mapping",
            ));
        }
    };
    match kind.as_str() {
        "bind" => {
            let source = source.unwrap_or_default();
            if !source.starts_with('/') {
                return Err(ArtifactError::invalid(
                    field,
                    source,
                    "an absolute host path (a path relative to the template has no meaning on the target)",
                ));
            }
            Ok(Mount::Bind {
                source,
                target,
                read_only,
            })
        }
        "volume" => {
            let key = source.unwrap_or_default();
            let d = declared(
                field,
                "volume",
                ctx.volumes,
                &key,
                ctx.project,
                VOLUME_KEYS,
                applies,
            )?;
            Ok(Mount::Volume {
                name: d.name,
                target,
                read_only,
                driver: d.driver,
                driver_opts: d.driver_opts,
                external: d.external,
            })
        }
        "tmpfs" => Ok(Mount::Tmpfs {
            target,
            size_bytes: size,
        }),
        "anonymous" => Err(ArtifactError::invalid(
            field,
            target,
            "a named volume (`name:/path`, declared under `volumes:`): an anonymous volume would be lost with every new container",
        )),
        other => Err(ArtifactError::invalid(
            format!("{field}.type"),
            other,
            "bind, volume or tmpfs",
        )),
    }
}

/// A `tmpfs:` entry: `/path` or `/path:size=64m[,mode=…]`.
fn tmpfs(field: &str, item: &Value, applies: Applies) -> Result<Mount, ArtifactError> {
    let s = scalar_string(field, item)?;
    let (target, options) = match s.split_once(':') {
        Some((t, o)) => (t.to_owned(), Some(o)),
        None => (s.clone(), None),
    };
    let mut size_bytes = None;
    for opt in options.into_iter().flat_map(|o| o.split(',')) {
        match opt.split_once('=') {
            Some(("size", v)) => size_bytes = Some(bytes(field, &Value::String(v.to_owned()))?),
            Some(("mode", _)) => compose_only(field, opt, applies)?,
            _ => {
                return Err(ArtifactError::invalid(
                    field,
                    opt,
                    "tmpfs options size=<bytes> or mode=<octal>",
                ));
            }
        }
    }
    Ok(Mount::Tmpfs { target, size_bytes })
}

fn restart(field: &str, v: &Value) -> Result<RestartPolicy, ArtifactError> {
    let expected = "one of `no`, `always`, `on-failure`, `on-failure:N`, `unless-stopped`";
    let s = match v {
        Value::String(s) => s.as_str(),
        // YAML 1.1 reads an unquoted `no` as false.
        Value::Bool(false) => "no",
        other => return Err(ArtifactError::invalid(field, describe(other), expected)),
    };
    match s {
        "no" => Ok(RestartPolicy::No),
        "always" => Ok(RestartPolicy::Always),
        "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
        "on-failure" => Ok(RestartPolicy::OnFailure { max_retries: None }),
        s => match s.strip_prefix("on-failure:").map(str::parse::<u32>) {
            Some(Ok(n)) => Ok(RestartPolicy::OnFailure {
                max_retries: Some(n),
            }),
            _ => Err(ArtifactError::invalid(field, s, expected)),
        },
    }
}

/// The project's `default` network (`<project>_default`, or as declared under the
/// top-level `networks: default:`), the service reachable there by its name.
fn default_network(
    service: &str,
    ctx: &ServiceContext<'_>,
    applies: Applies,
) -> Result<NetworkAttachment, ArtifactError> {
    let declared_default =
        matches!(ctx.networks, Some(Value::Mapping(m)) if m.contains_key("default"));
    let d = if declared_default {
        declared(
            "networks.default",
            "network",
            ctx.networks,
            "default",
            ctx.project,
            NETWORK_KEYS,
            applies,
        )?
    } else {
        Declared {
            name: format!("{}_default", ctx.project),
            external: false,
            driver: None,
            driver_opts: BTreeMap::new(),
        }
    };
    Ok(NetworkAttachment {
        name: d.name,
        aliases: vec![service.to_owned()],
        driver: d.driver,
        driver_opts: d.driver_opts,
        external: d.external,
    })
}

fn networks(
    field: &str,
    v: &Value,
    service: &str,
    ctx: &ServiceContext<'_>,
    applies: Applies,
) -> Result<Vec<NetworkAttachment>, ArtifactError> {
    let mut entries: Vec<(String, Option<&Value>)> = Vec::new();
    match v {
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                entries.push((scalar_string(&format!("{field}[{i}]"), item)?, None));
            }
        }
        Value::Mapping(m) => {
            for (k, v) in m {
                entries.push((scalar_string(field, k)?, Some(v).filter(|v| !v.is_null())));
            }
        }
        other => {
            return Err(ArtifactError::invalid(
                field,
                describe(other),
                "a list of network names or a mapping",
            ));
        }
    }
    let mut out = Vec::with_capacity(entries.len());
    for (key, options) in entries {
        let at = format!("{field}.{key}");
        let d = declared(
            &at,
            "network",
            ctx.networks,
            &key,
            ctx.project,
            NETWORK_KEYS,
            applies,
        )?;
        // Compose makes every service reachable by its name on its networks.
        let mut aliases = vec![service.to_owned()];
        if let Some(options) = options {
            let m = mapping(&at, options)?;
            only_keys(&at, m, &["aliases"])?;
            if let Some(a) = get(m, "aliases") {
                for (i, alias) in seq(&format!("{at}.aliases"), a)?.iter().enumerate() {
                    let alias = scalar_string(&format!("{at}.aliases[{i}]"), alias)?;
                    if !aliases.contains(&alias) {
                        aliases.push(alias);
                    }
                }
            }
        }
        out.push(NetworkAttachment {
            name: d.name,
            aliases,
            driver: d.driver,
            driver_opts: d.driver_opts,
            external: d.external,
        });
    }
    Ok(out)
}

/// A byte count: an integer, or a number with a unit `b`, `k`/`kb`, `m`/`mb`, `g`/`gb` (any case).
pub(crate) fn bytes(field: &str, v: &Value) -> Result<u64, ArtifactError> {
    let expected = "a size such as 512m, 1g or a number of bytes";
    let s = match v {
        Value::Number(n) if n.is_u64() => {
            return n
                .as_u64()
                .ok_or_else(|| ArtifactError::invalid(field, n.to_string(), expected));
        }
        Value::String(s) => s.trim().to_ascii_lowercase(),
        other => return Err(ArtifactError::invalid(field, describe(other), expected)),
    };
    let digits = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    let scale: u64 = match unit {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        _ => return Err(ArtifactError::invalid(field, &s, expected)),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| ArtifactError::invalid(field, &s, expected))?;
    let total = n * scale as f64;
    if !(0.0..1.0e18).contains(&total) {
        return Err(ArtifactError::invalid(field, &s, expected));
    }
    Ok(total as u64)
}

fn nano_cpus(field: &str, v: &Value) -> Result<u64, ArtifactError> {
    let expected = "a positive number of CPUs such as 0.5 or 2";
    let n: f64 = match v {
        Value::Number(n) => n.as_f64().unwrap_or(-1.0),
        Value::String(s) => s.trim().parse().unwrap_or(-1.0),
        other => return Err(ArtifactError::invalid(field, describe(other), expected)),
    };
    if !(n > 0.0 && n <= 4096.0) {
        return Err(ArtifactError::invalid(field, describe(v), expected));
    }
    Ok((n * 1e9).round() as u64)
}

/// `deploy:` — only `resources.limits.{memory,cpus}` apply to a docker_host container;
/// the rest is Swarm's and applies nowhere here.
/// What `deploy:` holds for one container (the rest of it is Swarm's).
#[derive(Default)]
struct DeploySection {
    memory: Option<u64>,
    cpus: Option<u64>,
    order: Option<UpdateOrder>,
}

/// `deploy:`: memory and cpu limits and the update order.
fn deploy_section(
    field: &str,
    v: &Value,
    applies: Applies,
) -> Result<DeploySection, ArtifactError> {
    let m = mapping(field, v)?;
    let DeploySection {
        mut memory,
        mut cpus,
        mut order,
    } = DeploySection::default();
    for (k, v) in m {
        let key = scalar_string(field, k)?;
        let at = format!("{field}.{key}");
        match key.as_str() {
            "resources" => {
                let r = mapping(&at, v)?;
                for (k, v) in r {
                    let key = scalar_string(&at, k)?;
                    let at = format!("{at}.{key}");
                    match key.as_str() {
                        "limits" => {
                            let l = mapping(&at, v)?;
                            only_keys(&at, l, &["memory", "cpus", "pids"])?;
                            if let Some(m) = get(l, "memory") {
                                memory = Some(bytes(&format!("{at}.memory"), m)?);
                            }
                            if let Some(c) = get(l, "cpus") {
                                cpus = Some(nano_cpus(&format!("{at}.cpus"), c)?);
                            }
                            if get(l, "pids").is_some() && applies == Applies::DockerHost {
                                return Err(ArtifactError::invalid(
                                    format!("{at}.pids"),
                                    describe(v),
                                    "no such key on a docker_host target (limits apply memory and cpus)",
                                ));
                            }
                        }
                        "reservations" if applies == Applies::Validate => {}
                        _ => {
                            return Err(ArtifactError::invalid(
                                at,
                                describe(v),
                                "`limits` (memory, cpus): the only resources a docker_host applies",
                            ));
                        }
                    }
                }
            }
            "update_config" => {
                let u = mapping(&at, v)?;
                if applies == Applies::DockerHost {
                    only_keys(&at, u, &["order"])?;
                }
                if let Some(o) = get(u, "order") {
                    let shown = scalar_string(&format!("{at}.order"), o)?;
                    order = Some(match shown.as_str() {
                        "start-first" => UpdateOrder::StartFirst,
                        "stop-first" => UpdateOrder::StopFirst,
                        _ => {
                            return Err(ArtifactError::invalid(
                                format!("{at}.order"),
                                shown,
                                "start-first or stop-first",
                            ));
                        }
                    });
                }
            }
            _ if applies == Applies::Validate => {}
            _ => {
                return Err(ArtifactError::invalid(
                    at,
                    describe(v),
                    "only `resources.limits` and `update_config.order` under `deploy` on a docker_host target",
                ));
            }
        }
    }
    Ok(DeploySection {
        memory,
        cpus,
        order,
    })
}

fn healthcheck(
    field: &str,
    v: &Value,
    applies: Applies,
) -> Result<ContainerHealthcheck, ArtifactError> {
    let m = mapping(field, v)?;
    only_keys(
        field,
        m,
        &[
            "test",
            "interval",
            "timeout",
            "retries",
            "start_period",
            "start_interval",
            "disable",
        ],
    )?;
    // Docker Engine API 1.44+ only, and the CLI of older engines has no flag for it.
    compose_only_keys(field, m, &["start_interval"], applies)?;
    let disabled = get(m, "disable")
        .map(|v| boolean(&format!("{field}.disable"), v))
        .transpose()?
        .unwrap_or(false);
    let test = match get(m, "test") {
        _ if disabled => vec!["NONE".to_owned()],
        None => {
            return Err(ArtifactError::invalid(
                field,
                "(no test)",
                "a `test` (or `disable: true`)",
            ));
        }
        Some(Value::String(s)) => vec![
            "CMD-SHELL".to_owned(),
            compose_unescape(&format!("{field}.test"), s)?,
        ],
        Some(list @ Value::Sequence(_)) => argv(&format!("{field}.test"), list)?,
        Some(other) => {
            return Err(ArtifactError::invalid(
                format!("{field}.test"),
                describe(other),
                "a command string or a list such as [\"CMD\", \"wget\", …]",
            ));
        }
    };
    let duration = |key: &str| -> Result<Option<u64>, ArtifactError> {
        get(m, key)
            .map(|v| parse_duration_ms(&format!("{field}.{key}"), v))
            .transpose()
    };
    let retries = match get(m, "retries") {
        None => None,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= u64::from(u32::MAX)) => {
            n.as_u64().and_then(|n| u32::try_from(n).ok())
        }
        Some(other) => {
            return Err(ArtifactError::invalid(
                format!("{field}.retries"),
                describe(other),
                "a whole number",
            ));
        }
    };
    Ok(ContainerHealthcheck {
        test,
        interval_ms: duration("interval")?,
        timeout_ms: duration("timeout")?,
        retries,
        start_period_ms: duration("start_period")?,
    })
}

fn extra_hosts(field: &str, v: &Value) -> Result<Vec<ExtraHost>, ArtifactError> {
    let mut pairs: Vec<(String, String, String)> = Vec::new();
    match v {
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let at = format!("{field}[{i}]");
                let s = scalar_string(&at, item)?;
                // `host:ip` (IPv6 addresses contain colons: split at the first) or `host=ip`.
                let (host, ip) = s
                    .split_once('=')
                    .or_else(|| s.split_once(':'))
                    .ok_or_else(|| ArtifactError::invalid(&at, &s, "`host:ip` or `host=ip`"))?;
                pairs.push((at.clone(), host.to_owned(), ip.to_owned()));
            }
        }
        Value::Mapping(m) => {
            for (k, v) in m {
                let host = scalar_string(field, k)?;
                let at = format!("{field}.{host}");
                pairs.push((at.clone(), host, scalar_string(&at, v)?));
            }
        }
        other => {
            return Err(ArtifactError::invalid(
                field,
                describe(other),
                "a list of `host:ip` or a mapping",
            ));
        }
    }
    pairs
        .into_iter()
        .map(|(at, host, ip)| {
            Ok(ExtraHost {
                host,
                ip: ip_addr(&at, &ip)?,
            })
        })
        .collect()
}

fn logging(field: &str, v: &Value) -> Result<Option<Logging>, ArtifactError> {
    let m = mapping(field, v)?;
    only_keys(field, m, &["driver", "options"])?;
    let driver = match get(m, "driver") {
        Some(d) => scalar_string(&format!("{field}.driver"), d)?,
        None => "json-file".to_owned(),
    };
    let options = match get(m, "options") {
        Some(o) => string_pairs(&format!("{field}.options"), o)?,
        None => BTreeMap::new(),
    };
    Ok(Some(Logging { driver, options }))
}

#[cfg(test)]
mod tests;
