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
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_yaml::{Mapping, Value};

use crate::env_file;
use crate::errors::ArtifactError;
use crate::nginx::{HttpRouting, HttpSpec};
use crate::yaml_in;

/// Longest service name: `stella-<name>.service` must still be a `Name` (63 bytes).
pub const SERVICE_NAME_MAX_LEN: usize = 48;

/// Compose file format version written when the template sets none (the spec's `3.8`).
pub const DEFAULT_COMPOSE_VERSION: &str = "3.8";

/// Keys of a service that the release decides; a template that sets them is refused.
const RELEASE_OWNED_KEYS: [&str; 3] = ["image", "build", "env_file"];

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
    /// Environment variables, values as the container sees them (`$$` already read as `$`).
    pub environment: BTreeMap<String, String>,
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
    let mut services = Vec::with_capacity(raw.services.0.len());
    for (name, body) in raw.services.0 {
        services.push(service(&name, body)?);
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
    for (section, value) in [("volumes", &raw.volumes), ("networks", &raw.networks)] {
        if let Some(v) = value {
            check_plain_yaml(&format!("compose template `{section}`"), v)?;
        }
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

fn service(name: &str, body: Value) -> Result<TemplateService, ArtifactError> {
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
    for (key, value) in body {
        let Value::String(key) = key else {
            return Err(ArtifactError::invalid(
                format!("service `{name}` key"),
                describe(&key),
                "a string",
            ));
        };
        match key.as_str() {
            "componentName" => {
                let Value::String(c) = &value else {
                    return Err(ArtifactError::invalid(
                        field(&key),
                        describe(&value),
                        "a component name",
                    ));
                };
                component = Some(Name::parse(c).map_err(|source| ArtifactError::InvalidName {
                    field: field(&key),
                    source,
                })?);
                continue;
            }
            "environment" => {
                for (k, v) in string_map(&field(&key), &value)? {
                    env_file::check_key(name, &k)?;
                    if k.starts_with("STELLA_") {
                        return Err(ArtifactError::invalid(
                            field(&key),
                            &k,
                            "no `STELLA_` variables: the renderer sets them",
                        ));
                    }
                    env_file::check_value(name, &k, &v)?;
                    environment.insert(k, v);
                }
                continue;
            }
            "labels" => {
                for (k, v) in string_map(&field(&key), &value)? {
                    check_label(name, &k, &v)?;
                    labels.insert(k, v);
                }
                continue;
            }
            k if RELEASE_OWNED_KEYS.contains(&k) => {
                return Err(ArtifactError::invalid(
                    field(k),
                    describe(&value),
                    "no such key: the release pins the image and the renderer writes the env file",
                ));
            }
            "command" => command = Some(argv(&field(&key), &value)?),
            "ports" => ports = port_list(&field(&key), &value)?,
            "restart" => restart = parse_restart(&field(&key), &value)?,
            "stop_grace_period" => stop_timeout_secs = parse_duration_secs(&field(&key), &value)?,
            _ => {}
        }
        passthrough.insert(key, value);
    }
    let component = component.ok_or_else(|| {
        ArtifactError::invalid(
            format!("service `{name}` componentName"),
            "(missing)",
            "the name of a release component",
        )
    })?;
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
    })
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

/// A short rendering of a value for error messages.
pub(crate) fn describe(v: &Value) -> String {
    let text = serde_json::to_string(v).unwrap_or_else(|_| "(unprintable)".to_owned());
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// Reads Compose's `$$` as `$` and refuses interpolation.
pub(crate) fn compose_unescape(field: &str, raw: &str) -> Result<String, ArtifactError> {
    if !raw.contains('$') {
        return Ok(raw.to_owned());
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '$' && chars.next() != Some('$') {
            return Err(ArtifactError::invalid(
                field,
                raw,
                "`$$` for a literal `$`: templates are rendered without host interpolation",
            ));
        }
        out.push(c);
    }
    Ok(out)
}

/// A scalar as Compose turns it into a string; booleans and floats are refused
/// because Compose v1 and v2 spell them differently (`True` / `true`).
fn scalar_string(field: &str, v: &Value) -> Result<String, ArtifactError> {
    match v {
        Value::String(s) => compose_unescape(field, s),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        other => Err(ArtifactError::invalid(
            field,
            describe(other),
            "a string or an integer (quote booleans and decimals)",
        )),
    }
}

/// `environment:` / `labels:` as a mapping or as a list of `KEY=value`.
fn string_map(field: &str, v: &Value) -> Result<BTreeMap<String, String>, ArtifactError> {
    let mut out = BTreeMap::new();
    let mut insert = |k: String, v: String| {
        if out.contains_key(&k) {
            return Err(ArtifactError::invalid(field, &k, "each key once"));
        }
        out.insert(k, v);
        Ok(())
    };
    match v {
        Value::Mapping(m) => {
            for (k, v) in m {
                let Value::String(k) = k else {
                    return Err(ArtifactError::invalid(field, describe(k), "string keys"));
                };
                let inner = format!("{field} `{k}`");
                if v.is_null() {
                    return Err(ArtifactError::invalid(
                        inner,
                        "null",
                        "a value (pass-through from the host is not allowed)",
                    ));
                }
                insert(k.clone(), scalar_string(&inner, v)?)?;
            }
        }
        Value::Sequence(items) => {
            for item in items {
                let Value::String(s) = item else {
                    return Err(ArtifactError::invalid(
                        field,
                        describe(item),
                        "`KEY=value` strings",
                    ));
                };
                let Some((k, v)) = s.split_once('=') else {
                    return Err(ArtifactError::invalid(
                        field,
                        s,
                        "`KEY=value` (pass-through from the host is not allowed)",
                    ));
                };
                insert(
                    k.to_owned(),
                    compose_unescape(&format!("{field} `{k}`"), v)?,
                )?;
            }
        }
        Value::Null => {}
        other => {
            return Err(ArtifactError::invalid(
                field,
                describe(other),
                "a mapping or a list of `KEY=value`",
            ));
        }
    }
    Ok(out)
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
    if key.starts_with("stella.") {
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

/// `command:` as argv: a list as is, a string split like Compose does (POSIX shell words).
fn argv(field: &str, v: &Value) -> Result<Vec<String>, ArtifactError> {
    let words = match v {
        Value::Sequence(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                other => Err(ArtifactError::invalid(field, describe(other), "strings")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Value::String(s) => shell_words(field, s)?,
        other => {
            return Err(ArtifactError::invalid(
                field,
                describe(other),
                "a string or a list of strings",
            ));
        }
    };
    words
        .iter()
        .map(|w| {
            if w.contains('\0') {
                return Err(ArtifactError::invalid(field, w, "arguments without NUL"));
            }
            compose_unescape(field, w)
        })
        .collect()
}

/// POSIX shell-word splitting (quotes and backslashes), as Python's `shlex.split` used by Compose.
fn shell_words(field: &str, s: &str) -> Result<Vec<String>, ArtifactError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => {
                            return Err(ArtifactError::invalid(field, s, "balanced single quotes"));
                        }
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => {
                                return Err(ArtifactError::invalid(
                                    field,
                                    s,
                                    "balanced double quotes",
                                ));
                            }
                        },
                        Some(c) => word.push(c),
                        None => {
                            return Err(ArtifactError::invalid(field, s, "balanced double quotes"));
                        }
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err(ArtifactError::invalid(field, s, "no trailing backslash")),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// `ports:` as short-syntax strings (`[ip:][published:]target[/protocol]`); long syntax is converted.
fn port_list(field: &str, v: &Value) -> Result<Vec<String>, ArtifactError> {
    let Value::Sequence(items) = v else {
        return Err(ArtifactError::invalid(
            field,
            describe(v),
            "a list of ports",
        ));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let spec = match item {
            Value::String(s) => compose_unescape(field, s)?,
            Value::Number(n) if n.is_u64() => n.to_string(),
            Value::Mapping(m) => long_port(field, m)?,
            other => {
                return Err(ArtifactError::invalid(
                    field,
                    describe(other),
                    "a port string, number or mapping",
                ));
            }
        };
        let ok = !spec.is_empty()
            && spec.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '/' | '-' | '[' | ']')
            });
        if !ok {
            return Err(ArtifactError::invalid(
                field,
                &spec,
                "`[ip:][published:]target[/protocol]`",
            ));
        }
        out.push(spec);
    }
    Ok(out)
}

fn long_port(field: &str, m: &Mapping) -> Result<String, ArtifactError> {
    let text = |key: &str| -> Result<Option<String>, ArtifactError> {
        match m.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) if n.is_u64() => Ok(Some(n.to_string())),
            Some(other) => Err(ArtifactError::invalid(
                format!("{field} `{key}`"),
                describe(other),
                "a string or number",
            )),
        }
    };
    let target = text("target")?
        .ok_or_else(|| ArtifactError::invalid(field, "(no target)", "a `target` port"))?;
    let mut spec = String::new();
    if let Some(ip) = text("host_ip")? {
        spec.push_str(&ip);
        spec.push(':');
    }
    if let Some(published) = text("published")? {
        spec.push_str(&published);
        spec.push(':');
    } else if !spec.is_empty() {
        spec.push(':');
    }
    spec.push_str(&target);
    if let Some(protocol) = text("protocol")? {
        spec.push('/');
        spec.push_str(&protocol);
    }
    Ok(spec)
}

fn parse_restart(field: &str, v: &Value) -> Result<Restart, ArtifactError> {
    let expected = "one of `no`, `always`, `on-failure`, `on-failure:N`, `unless-stopped`";
    let Value::String(s) = v else {
        return Err(ArtifactError::invalid(field, describe(v), expected));
    };
    match s.as_str() {
        "no" => Ok(Restart::No),
        "always" | "unless-stopped" => Ok(Restart::Always),
        "on-failure" => Ok(Restart::OnFailure),
        s if s
            .strip_prefix("on-failure:")
            .is_some_and(|n| n.parse::<u32>().is_ok()) =>
        {
            Ok(Restart::OnFailure)
        }
        _ => Err(ArtifactError::invalid(field, s, expected)),
    }
}

/// A Compose duration (`1m30s`, `500ms`, `2h`) in whole seconds, rounded up, at least 1.
fn parse_duration_secs(field: &str, v: &Value) -> Result<u64, ArtifactError> {
    let expected = "a duration such as `10s`, `1m30s` or `500ms`";
    let Value::String(s) = v else {
        return Err(ArtifactError::invalid(field, describe(v), expected));
    };
    let bad = || ArtifactError::invalid(field, s, expected);
    let mut micros: u64 = 0;
    let mut rest = s.as_str();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale: u64 = match &rest[..unit_len] {
            "h" => 3_600_000_000,
            "m" => 60_000_000,
            "s" => 1_000_000,
            "ms" => 1_000,
            "us" => 1,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        micros = n
            .checked_mul(scale)
            .and_then(|m| micros.checked_add(m))
            .filter(|&m| m <= 86_400_000_000)
            .ok_or_else(bad)?;
    }
    Ok(micros.div_ceil(1_000_000).max(1))
}

#[cfg(test)]
mod tests;
