//! The compose template: a user-written YAML file whose services name the release component they run, parsed strictly into `ComposeTemplate`.
//!
//! Our own keys are checked (`componentName`, `environment`, `labels`, and the
//! `http` routing section); other Compose keys of a service are preserved as
//! YAML values and carried into the compose file untouched. Values we read
//! (environment, labels, command, ports) use Compose's syntax: `$$` is a literal
//! `$`, and host interpolation (`$VAR`, `${VAR}`) is refused because a rendered
//! bundle must not depend on the machine that renders or runs it.

use std::collections::BTreeMap;
use std::fmt;

use deploy_core::Name;
use deploy_core::naming::labels as ours;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_yaml::{Mapping, Value};

use crate::compose_syntax::{
    argv, compose_unescape, describe, env_map, parse_duration_secs, parse_restart, port_list,
    string_map,
};
use crate::container::{
    Applies, COMPOSE_ONLY_KEYS, DOCKER_HOST_KEYS, REFUSED_KEYS, ServiceContext, container_spec,
};
use crate::env_file;
use crate::errors::ArtifactError;
use crate::nginx::{HttpRouting, HttpSpec};
use crate::yaml_in;

/// Longest service name: `stella-<name>.service` must still be a `Name` (63 bytes).
pub const SERVICE_NAME_MAX_LEN: usize = 48;

/// Compose file format version written when the template sets none (the spec's `3.8`).
pub const DEFAULT_COMPOSE_VERSION: &str = "3.8";

/// A parsed, validated compose template.
#[derive(Debug, Clone, PartialEq)]
pub struct ComposeTemplate {
    /// The Compose file format version (`version:`), `3.8` when absent.
    pub version: String,
    /// Services sorted by name.
    pub services: Vec<TemplateService>,
    /// Top-level `volumes:`, carried into the compose file.
    pub volumes: Option<Value>,
    /// Top-level `networks:`, carried into the compose file.
    pub networks: Option<Value>,
    /// The `http:` section: what the nginx config routes.
    pub http: Option<HttpRouting>,
}

/// One service of the template.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateService {
    pub name: Name,
    /// The release component whose pinned image this service runs.
    pub component: Name,
    /// Environment variables, values as the container sees them (`$$` already read as
    /// `$`); `None`: declared without a value, taken from the deploy environment's
    /// variables at render time.
    pub environment: BTreeMap<String, Option<String>>,
    /// Labels, values as the container sees them.
    pub labels: BTreeMap<String, String>,
    /// The container command as argv (from `command:`), for the systemd unit.
    pub command: Option<Vec<String>>,
    /// `ports:` in short syntax, for the systemd unit.
    pub ports: Vec<String>,
    pub restart: Restart,
    /// From `stop_grace_period`, whole seconds rounded up; 10 when absent (Docker's default).
    pub stop_timeout_secs: u64,
    /// Every other key of the service (and `command`, `ports`, `restart`,
    /// `stop_grace_period` as written), sorted by key.
    pub passthrough: BTreeMap<String, Value>,
    /// The whole service as written (merge keys applied), read again for each
    /// docker_host target by [`crate::container_spec`].
    pub body: Mapping,
}

/// Restart policy of a service, mapped onto systemd's `Restart=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    No,
    Always,
    OnFailure,
}

impl Restart {
    /// The systemd `Restart=` value.
    pub fn systemd(self) -> &'static str {
        match self {
            Self::No => "no",
            Self::Always => "always",
            Self::OnFailure => "on-failure",
        }
    }
}

/// The template's top level. Like `#[serde(deny_unknown_fields)]`, except that Compose
/// extension fields (`x-…`, where anchors usually live) are allowed and dropped.
struct RawTemplate {
    version: Option<Value>,
    services: ServiceEntries,
    volumes: Option<Value>,
    networks: Option<Value>,
    http: Option<HttpSpec>,
}

const TOP_LEVEL_KEYS: &[&str] = &["version", "services", "volumes", "networks", "http", "x-…"];

impl<'de> Deserialize<'de> for RawTemplate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TopVisitor;
        impl<'de> Visitor<'de> for TopVisitor {
            type Value = RawTemplate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a compose template mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawTemplate, A::Error> {
                let (mut version, mut services, mut volumes, mut networks, mut http) =
                    (None, None, None, None, None);
                while let Some(TopKey(key)) = map.next_key::<TopKey>()? {
                    let seen = match key.as_str() {
                        "version" => version.replace(map.next_value()?).is_some(),
                        "services" => services.replace(map.next_value()?).is_some(),
                        "volumes" => volumes.replace(map.next_value()?).is_some(),
                        "networks" => networks.replace(map.next_value()?).is_some(),
                        "http" => http.replace(map.next_value()?).is_some(),
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                            false
                        }
                    };
                    if seen {
                        return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
                    }
                }
                Ok(RawTemplate {
                    version,
                    services: services.ok_or_else(|| de::Error::missing_field("services"))?,
                    volumes,
                    networks,
                    http,
                })
            }
        }
        deserializer.deserialize_map(TopVisitor)
    }
}

/// A top-level key, refused while it is read so that the error points at the key itself.
struct TopKey(String);

impl<'de> Deserialize<'de> for TopKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = TopKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a top-level key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<TopKey, E> {
                if TOP_LEVEL_KEYS.contains(&key) || key.starts_with("x-") {
                    Ok(TopKey(key.to_owned()))
                } else {
                    Err(E::unknown_field(key, TOP_LEVEL_KEYS))
                }
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The `services:` mapping in document order, duplicates kept so they can be reported by name.
struct ServiceEntries(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for ServiceEntries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = ServiceEntries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping from service name to service")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ServiceEntries, A::Error> {
                let mut entries = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    entries.push((name, map.next_value::<Value>()?));
                }
                Ok(ServiceEntries(entries))
            }
            fn visit_unit<E: de::Error>(self) -> Result<ServiceEntries, E> {
                Ok(ServiceEntries(Vec::new()))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

/// Parses and validates a compose template (UTF-8 YAML, at most [`yaml_in::MAX_DOCUMENT_BYTES`]).
pub fn parse_template(bytes: &[u8]) -> Result<ComposeTemplate, ArtifactError> {
    let raw: RawTemplate = yaml_in::parse("compose template", bytes)?;
    let version = match raw.version {
        None => DEFAULT_COMPOSE_VERSION.to_owned(),
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(ArtifactError::invalid(
                "compose template `version`",
                describe(&other),
                "a string such as \"3.8\"",
            ));
        }
    };
    for (section, value) in [("volumes", &raw.volumes), ("networks", &raw.networks)] {
        if let Some(v) = value {
            check_plain_yaml(&format!("compose template `{section}`"), v)?;
            no_interpolation(section, v)?;
        }
    }
    let top = TopLevel {
        volumes: raw.volumes.as_ref(),
        networks: raw.networks.as_ref(),
    };
    let mut services = Vec::with_capacity(raw.services.0.len());
    for (name, body) in raw.services.0 {
        services.push(service(&name, body, &top)?);
    }
    services.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(pair) = services.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(ArtifactError::DuplicateService {
            name: pair[0].name.to_string(),
        });
    }
    if services.is_empty() {
        return Err(ArtifactError::invalid(
            "compose template `services`",
            "{}",
            "at least one service",
        ));
    }
    let http = raw.http.map(|spec| spec.validate(&services)).transpose()?;
    Ok(ComposeTemplate {
        version,
        services,
        volumes: raw.volumes,
        networks: raw.networks,
        http,
    })
}

fn service(name: &str, body: Value, top: &TopLevel<'_>) -> Result<TemplateService, ArtifactError> {
    let field = |key: &str| format!("service `{name}` key `{key}`");
    let service_name = Name::parse(name).map_err(|source| ArtifactError::InvalidName {
        field: format!("service name `{name}`"),
        source,
    })?;
    if name.len() > SERVICE_NAME_MAX_LEN {
        return Err(ArtifactError::invalid(
            "service name",
            name,
            format!(
                "at most {SERVICE_NAME_MAX_LEN} bytes, so that `stella-<name>.service` is a valid file name"
            ),
        ));
    }
    let mut body = match body {
        Value::Mapping(m) => Value::Mapping(m),
        other => {
            return Err(ArtifactError::invalid(
                format!("service `{name}`"),
                describe(&other),
                "a mapping with at least `componentName`",
            ));
        }
    };
    body.apply_merge().map_err(|e| {
        ArtifactError::invalid(
            format!("service `{name}` merge keys (`<<`)"),
            e.to_string(),
            "mappings to merge",
        )
    })?;
    check_plain_yaml(&format!("service `{name}`"), &body)?;
    let Value::Mapping(body) = body else {
        return Err(ArtifactError::invalid(
            format!("service `{name}`"),
            "(not a mapping)",
            "a mapping",
        ));
    };

    let mut component = None;
    let mut environment = BTreeMap::new();
    let mut labels = BTreeMap::new();
    let mut command = None;
    let mut ports = Vec::new();
    let mut restart = Restart::OnFailure;
    let mut stop_timeout_secs = 10;
    let mut passthrough = BTreeMap::new();
    for (key, value) in &body {
        let Value::String(key) = key else {
            return Err(ArtifactError::invalid(
                format!("services.{name}"),
                describe(key),
                "string keys",
            ));
        };
        let at = format!("services.{name}.{key}");
        match key.as_str() {
            "componentName" => {
                let Value::String(c) = value else {
                    return Err(ArtifactError::invalid(
                        field(key),
                        describe(value),
                        "a component name",
                    ));
                };
                component = Some(Name::parse(c).map_err(|source| ArtifactError::InvalidName {
                    field: field(key),
                    source,
                })?);
                continue;
            }
            "environment" => {
                for (k, v) in env_map(&at, value)? {
                    env_file::check_key(name, &k)?;
                    if k.starts_with("STELLA_") {
                        return Err(ArtifactError::invalid(
                            field(key),
                            &k,
                            "no `STELLA_` variables: the renderer sets them",
                        ));
                    }
                    if let Some(v) = &v {
                        env_file::check_value(name, &k, v)?;
                    }
                    environment.insert(k, v);
                }
                continue;
            }
            "labels" => {
                for (k, v) in string_map(&at, value)? {
                    check_label(name, &k, &v)?;
                    labels.insert(k, v);
                }
                continue;
            }
            "command" => command = Some(argv(&at, value)?),
            "ports" => ports = port_list(&at, value)?,
            "restart" => restart = parse_restart(&at, value)?,
            "stop_grace_period" => stop_timeout_secs = parse_duration_secs(&at, value)?,
            k if k.starts_with("x-")
                || DOCKER_HOST_KEYS.contains(&k)
                || COMPOSE_ONLY_KEYS.contains(&k) => {}
            k => {
                let why = REFUSED_KEYS.iter().find(|(r, _)| *r == k).map_or_else(
                    || "a Compose service key (is it misspelt?)".to_owned(),
                    |(_, why)| (*why).to_owned(),
                );
                return Err(ArtifactError::invalid(at, describe(value), why));
            }
        }
        // Carried into the compose file as written, where Compose would substitute
        // a lone `$` (`network_mode: "${X:-host}"`) after every check here.
        no_interpolation(&at, value)?;
        passthrough.insert(key.clone(), value.clone());
    }
    let component = component.ok_or_else(|| {
        ArtifactError::invalid(
            format!("service `{name}` componentName"),
            "(missing)",
            "the name of a release component",
        )
    })?;
    // Every key a docker_host reads is checked now, when the release is created, with
    // a placeholder image and project; compose-only keys are left to Compose.
    let placeholder_env: BTreeMap<String, String> = environment
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
        .collect();
    container_spec(
        name,
        &body,
        &ServiceContext {
            image: &placeholder_image()?,
            project: "project",
            env: &placeholder_env,
            labels: &labels,
            volumes: top.volumes,
            networks: top.networks,
        },
        Applies::Validate,
    )?;
    Ok(TemplateService {
        name: service_name,
        component,
        environment,
        labels,
        command,
        ports,
        restart,
        stop_timeout_secs,
        passthrough,
        body,
    })
}

/// The top-level sections a service refers to.
struct TopLevel<'a> {
    volumes: Option<&'a Value>,
    networks: Option<&'a Value>,
}

/// An image that only stands in for the release's while a template is checked.
fn placeholder_image() -> Result<deploy_core::ImageRef, ArtifactError> {
    let digest = deploy_core::Digest::from_sha256([0; 32]);
    deploy_core::ImageRef::from_parts("placeholder.invalid/image", &digest).map_err(|e| {
        ArtifactError::invalid(
            "placeholder image",
            "placeholder.invalid/image",
            e.to_string(),
        )
    })
}

/// Refuses host interpolation (a lone `$`, not `$$`) in every string value of `v`,
/// naming where: the value is carried through as written, and Compose would replace
/// it with the host's variable or its default, which no check could vouch for.
fn no_interpolation(at: &str, v: &Value) -> Result<(), ArtifactError> {
    match v {
        Value::String(s) => compose_unescape(at, s).map(drop),
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| no_interpolation(&format!("{at}[{i}]"), item)),
        Value::Mapping(m) => m.iter().try_for_each(|(k, v)| match k {
            Value::String(k) => no_interpolation(&format!("{at}.{k}"), v),
            _ => no_interpolation(at, v),
        }),
        Value::Tagged(t) => no_interpolation(at, &t.value),
        _ => Ok(()),
    }
}

/// Refuses YAML the emitter cannot reproduce exactly: tags and non-scalar mapping keys.
fn check_plain_yaml(field: &str, v: &Value) -> Result<(), ArtifactError> {
    match v {
        Value::Tagged(t) => Err(ArtifactError::invalid(
            field,
            t.tag.to_string(),
            "plain YAML without tags",
        )),
        Value::Sequence(s) => s.iter().try_for_each(|item| check_plain_yaml(field, item)),
        Value::Mapping(m) => m.iter().try_for_each(|(k, v)| {
            if matches!(k, Value::Sequence(_) | Value::Mapping(_) | Value::Tagged(_)) {
                return Err(ArtifactError::invalid(
                    field,
                    describe(k),
                    "scalar mapping keys",
                ));
            }
            check_plain_yaml(field, v)
        }),
        _ => Ok(()),
    }
}

fn check_label(service: &str, key: &str, value: &str) -> Result<(), ArtifactError> {
    let field = format!("service `{service}` label");
    if key.is_empty()
        || key.contains('=')
        || key.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(ArtifactError::invalid(
            field,
            key,
            "a label key without `=`, whitespace or control characters",
        ));
    }
    if ours::is_ours(key) {
        return Err(ArtifactError::invalid(
            field,
            key,
            "no `stella.` labels: the renderer sets them",
        ));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(ArtifactError::invalid(
            format!("{field} `{key}`"),
            value,
            "a value without control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
