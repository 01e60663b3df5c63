//! A `ContainerSpec` in the two forms a transport sends: the Engine API's create body (bollard models), and the `docker create` argument vector (for the Docker CLI).
//!
//! Both are built from the same fields in the same order, so a container is the same
//! whichever way it was created (the tests compare `docker inspect` of both).

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, HostConfigLogConfig,
    NetworkingConfig, PortBinding, RestartPolicy as BollardRestart, RestartPolicyNameEnum,
};
use deploy_core::{ContainerSpec, Mount, PortMapping, RestartPolicy};

fn nanos(ms: u64) -> i64 {
    i64::try_from(ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `KEY=value` entries, sorted by key.
fn env_list(spec: &ContainerSpec) -> Vec<String> {
    spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// A bind or volume mount in Docker's `source:target[:ro]` form (bind sources that do
/// not exist are created as directories, as Compose does).
fn bind(m: &Mount) -> Option<String> {
    let (source, target, read_only) = match m {
        Mount::Bind {
            source,
            target,
            read_only,
        } => (source, target, *read_only),
        Mount::Volume {
            name,
            target,
            read_only,
            ..
        } => (name, target, *read_only),
        Mount::Tmpfs { .. } => return None,
    };
    Some(if read_only {
        format!("{source}:{target}:ro")
    } else {
        format!("{source}:{target}")
    })
}

/// A tmpfs mount's options (`size=<bytes>`), empty when none.
fn tmpfs_options(size_bytes: Option<u64>) -> String {
    size_bytes.map(|s| format!("size={s}")).unwrap_or_default()
}

fn host_port(p: &PortMapping) -> String {
    p.host_port.map(|h| h.to_string()).unwrap_or_default()
}

fn host_ip(p: &PortMapping) -> String {
    p.host_ip.map(|ip| ip.to_string()).unwrap_or_default()
}

/// Every container port that is published or exposed, `port/protocol`, once each.
fn exposed(spec: &ContainerSpec) -> Vec<String> {
    let mut ports: Vec<String> = spec
        .ports
        .iter()
        .map(PortMapping::container_key)
        .chain(
            spec.expose
                .iter()
                .map(|e| format!("{}/{}", e.port, e.protocol.as_str())),
        )
        .collect();
    ports.sort();
    ports.dedup();
    ports
}

/// The Engine API body that creates `spec` with `labels` added to its own. The first
/// network is joined at create (API 1.41 accepts one); the others are connected
/// before the start by the caller ([`extra_networks`]).
pub fn create_body(spec: &ContainerSpec, labels: &BTreeMap<String, String>) -> ContainerCreateBody {
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in &spec.ports {
        port_bindings
            .entry(p.container_key())
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(host_ip(p)),
                host_port: Some(host_port(p)),
            });
    }
    let mut all_labels: HashMap<String, String> = spec
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    all_labels.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    let tmpfs: HashMap<String, String> = spec
        .mounts
        .iter()
        .filter_map(|m| match m {
            Mount::Tmpfs { target, size_bytes } => {
                Some((target.clone(), tmpfs_options(*size_bytes)))
            }
            _ => None,
        })
        .collect();
    let binds: Vec<String> = spec.mounts.iter().filter_map(bind).collect();
    let restart = match spec.restart {
        RestartPolicy::No => (RestartPolicyNameEnum::NO, None),
        RestartPolicy::Always => (RestartPolicyNameEnum::ALWAYS, None),
        RestartPolicy::UnlessStopped => (RestartPolicyNameEnum::UNLESS_STOPPED, None),
        RestartPolicy::OnFailure { max_retries } => (
            RestartPolicyNameEnum::ON_FAILURE,
            max_retries.map(i64::from),
        ),
    };
    let first_network = spec.networks.first();
    ContainerCreateBody {
        image: Some(spec.image.to_string()),
        cmd: spec.command.clone(),
        entrypoint: spec.entrypoint.clone(),
        env: Some(env_list(spec)),
        labels: Some(all_labels),
        exposed_ports: Some(exposed(spec)),
        working_dir: spec.working_dir.clone(),
        user: spec.user.clone(),
        hostname: spec.hostname.clone(),
        healthcheck: spec.healthcheck.as_ref().map(|h| HealthConfig {
            test: Some(h.test.clone()),
            interval: h.interval_ms.map(nanos),
            timeout: h.timeout_ms.map(nanos),
            retries: h.retries.map(i64::from),
            start_period: h.start_period_ms.map(nanos),
            start_interval: None,
        }),
        stop_signal: spec.stop_signal.clone(),
        stop_timeout: Some(to_i64(spec.stop_grace_secs)),
        host_config: Some(HostConfig {
            port_bindings: Some(port_bindings),
            binds: (!binds.is_empty()).then_some(binds),
            tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
            readonly_rootfs: Some(spec.read_only),
            init: spec.init.then_some(true),
            restart_policy: Some(BollardRestart {
                name: Some(restart.0),
                maximum_retry_count: restart.1,
            }),
            memory: spec.memory_bytes.map(to_i64),
            nano_cpus: spec.nano_cpus.map(to_i64),
            extra_hosts: (!spec.extra_hosts.is_empty()).then(|| {
                spec.extra_hosts
                    .iter()
                    .map(|h| format!("{}:{}", h.host, h.ip))
                    .collect()
            }),
            log_config: spec.logging.as_ref().map(|l| HostConfigLogConfig {
                typ: Some(l.driver.clone()),
                config: Some(
                    l.options
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                ),
            }),
            network_mode: first_network.map(|n| n.name.clone()),
            ..Default::default()
        }),
        networking_config: first_network.map(|n| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                n.name.clone(),
                EndpointSettings {
                    aliases: Some(n.aliases.clone()),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    }
}

/// The networks after the first, joined between create and start: `(name, aliases)`.
pub fn extra_networks(spec: &ContainerSpec) -> Vec<(String, Vec<String>)> {
    spec.networks
        .iter()
        .skip(1)
        .map(|n| (n.name.clone(), n.aliases.clone()))
        .collect()
}

/// `docker create` arguments for `spec` with `labels`, and the container `name`: the
/// same definition as [`create_body`], for a host reached through the Docker CLI. The
/// environment is not in it: it goes in an env-file (`env_file` names it), never on
/// a command line where the host's process list would show it.
pub fn create_argv(
    name: &str,
    spec: &ContainerSpec,
    labels: &BTreeMap<String, String>,
    env_file: &str,
) -> Vec<String> {
    let mut a: Vec<String> = vec!["create".into(), "--name".into(), name.into()];
    let mut push = |flag: &str, value: String| {
        a.push(flag.to_owned());
        a.push(value);
    };
    push("--env-file", env_file.to_owned());
    for (k, v) in spec.labels.iter().chain(labels) {
        push("--label", format!("{k}={v}"));
    }
    for p in &spec.ports {
        let ip = host_ip(p);
        let host = host_port(p);
        let spec = match (ip.is_empty(), host.is_empty()) {
            (true, true) => p.container_key(),
            (true, false) => format!("{host}:{}", p.container_key()),
            (false, _) if ip.contains(':') => format!("[{ip}]:{host}:{}", p.container_key()),
            (false, _) => format!("{ip}:{host}:{}", p.container_key()),
        };
        push("--publish", spec);
    }
    for e in &spec.expose {
        push("--expose", format!("{}/{}", e.port, e.protocol.as_str()));
    }
    for m in &spec.mounts {
        match m {
            Mount::Tmpfs { target, size_bytes } => {
                let opts = tmpfs_options(*size_bytes);
                push(
                    "--tmpfs",
                    if opts.is_empty() {
                        target.clone()
                    } else {
                        format!("{target}:{opts}")
                    },
                );
            }
            other => {
                if let Some(b) = bind(other) {
                    push("--volume", b);
                }
            }
        }
    }
    if spec.read_only {
        a.push("--read-only".into());
    }
    if spec.init {
        a.push("--init".into());
    }
    let mut push = |flag: &str, value: String| {
        a.push(flag.to_owned());
        a.push(value);
    };
    for (flag, value) in [
        ("--workdir", &spec.working_dir),
        ("--user", &spec.user),
        ("--hostname", &spec.hostname),
        ("--stop-signal", &spec.stop_signal),
    ] {
        if let Some(v) = value {
            push(flag, v.clone());
        }
    }
    push("--stop-timeout", spec.stop_grace_secs.to_string());
    push("--restart", spec.restart.to_docker());
    if let Some(m) = spec.memory_bytes {
        push("--memory", m.to_string());
    }
    if let Some(c) = spec.nano_cpus {
        push(
            "--cpus",
            format!("{}.{:09}", c / 1_000_000_000, c % 1_000_000_000),
        );
    }
    for h in &spec.extra_hosts {
        push("--add-host", format!("{}:{}", h.host, h.ip));
    }
    if let Some(l) = &spec.logging {
        push("--log-driver", l.driver.clone());
        for (k, v) in &l.options {
            push("--log-opt", format!("{k}={v}"));
        }
    }
    if let Some(n) = spec.networks.first() {
        push("--network", n.name.clone());
        for alias in &n.aliases {
            push("--network-alias", alias.clone());
        }
    }
    if let Some(h) = &spec.healthcheck {
        match h.test.first().map(String::as_str) {
            Some("NONE") => a.push("--no-healthcheck".into()),
            Some("CMD-SHELL") => push("--health-cmd", h.test[1..].join(" ")),
            // The CLI takes a shell command only: the exec form's words are joined,
            // each one with whitespace or quotes in double quotes.
            _ => push("--health-cmd", shell_words(&h.test[1..])),
        }
        let mut push = |flag: &str, value: String| {
            a.push(flag.to_owned());
            a.push(value);
        };
        if let Some(i) = h.interval_ms {
            push("--health-interval", format!("{i}ms"));
        }
        if let Some(t) = h.timeout_ms {
            push("--health-timeout", format!("{t}ms"));
        }
        if let Some(r) = h.retries {
            push("--health-retries", r.to_string());
        }
        if let Some(s) = h.start_period_ms {
            push("--health-start-period", format!("{s}ms"));
        }
    }
    if let Some(entrypoint) = &spec.entrypoint {
        // The CLI takes one word; the rest of an entrypoint goes before the command.
        a.push("--entrypoint".into());
        a.push(entrypoint.first().cloned().unwrap_or_default());
    }
    a.push(spec.image.to_string());
    if let Some(entrypoint) = &spec.entrypoint {
        a.extend(entrypoint.iter().skip(1).cloned());
    }
    a.extend(spec.command.iter().flatten().cloned());
    a
}

fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if w.is_empty() || w.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
                format!("\"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""))
            } else {
                w.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The env-file content for [`create_argv`]: `KEY=value` lines. A value with a line
/// break cannot be written here; the one caller (WinRM) refuses such a spec when the
/// job is created (`deploy_exec::winrm::check_windows_spec`).
pub fn env_file(spec: &ContainerSpec) -> String {
    let mut out = String::new();
    for line in env_list(spec) {
        out.push_str(&line);
        out.push('\n');
    }
    out
}
