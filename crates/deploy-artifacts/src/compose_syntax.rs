//! Values in Compose syntax, read the way Compose reads them: `$$` as `$` (host interpolation refused), `KEY=value` lists, shell words, port specs, restart policies, durations.

use std::collections::BTreeMap;

use serde_yaml::{Mapping, Value};

use crate::errors::ArtifactError;
use crate::template::Restart;

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
    let mut chars = raw.char_indices();
    while let Some((at, c)) = chars.next() {
        if c == '$' && chars.next().map(|(_, c)| c) != Some('$') {
            // Only the interpolation is quoted, not the whole value (which may be a
            // credential): `$HOME`, `${DB_URL}`, a lone `$`.
            let fragment: String = raw[at..].chars().take(24).collect();
            return Err(ArtifactError::invalid(
                field,
                fragment,
                "`$$` for a literal `$`: templates are rendered without host interpolation",
            ));
        }
        out.push(c);
    }
    Ok(out)
}

/// A scalar as Compose turns it into a string; booleans and floats are refused
/// because Compose v1 and v2 spell them differently (`True` / `true`).
pub(crate) fn scalar_string(field: &str, v: &Value) -> Result<String, ArtifactError> {
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
pub(crate) fn string_map(
    field: &str,
    v: &Value,
) -> Result<BTreeMap<String, String>, ArtifactError> {
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

/// `environment:` as a mapping or a list of `KEY=value`; a key without a value
/// (`KEY:` with nothing, or `- KEY`) is `None`: it takes its value from the deploy
/// environment's variables when the bundle is rendered (Compose would take it from
/// the shell; a rendered bundle must not depend on the machine that renders it).
pub(crate) fn env_map(
    field: &str,
    v: &Value,
) -> Result<BTreeMap<String, Option<String>>, ArtifactError> {
    let mut out = BTreeMap::new();
    let mut insert = |k: String, v: Option<String>| {
        if out.contains_key(&k) {
            return Err(ArtifactError::invalid(field, &k, "each variable once"));
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
                let inner = format!("{field}.{k}");
                let value = if v.is_null() {
                    None
                } else {
                    Some(scalar_string(&inner, v)?)
                };
                insert(k.clone(), value)?;
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let Value::String(s) = item else {
                    return Err(ArtifactError::invalid(
                        format!("{field}[{i}]"),
                        describe(item),
                        "`KEY=value` strings",
                    ));
                };
                match s.split_once('=') {
                    Some((k, v)) => insert(
                        k.to_owned(),
                        Some(compose_unescape(&format!("{field}.{k}"), v)?),
                    )?,
                    None => insert(s.clone(), None)?,
                }
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

/// `command:` as argv: a list as is, a string split like Compose does (POSIX shell words).
pub(crate) fn argv(field: &str, v: &Value) -> Result<Vec<String>, ArtifactError> {
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
pub(crate) fn shell_words(field: &str, s: &str) -> Result<Vec<String>, ArtifactError> {
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
pub(crate) fn port_list(field: &str, v: &Value) -> Result<Vec<String>, ArtifactError> {
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

pub(crate) fn long_port(field: &str, m: &Mapping) -> Result<String, ArtifactError> {
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

pub(crate) fn parse_restart(field: &str, v: &Value) -> Result<Restart, ArtifactError> {
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
pub(crate) fn parse_duration_secs(field: &str, v: &Value) -> Result<u64, ArtifactError> {
    Ok(parse_duration_ms(field, v)?.div_ceil(1000).max(1))
}

/// A Compose duration (`1m30s`, `500ms`, `2h`, at most a day) in milliseconds, rounded up.
pub(crate) fn parse_duration_ms(field: &str, v: &Value) -> Result<u64, ArtifactError> {
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
    Ok(micros.div_ceil(1_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_shell_words() {
        let d = |s: &str| parse_duration_secs("f", &Value::String(s.to_owned()));
        assert_eq!(d("10s"), Ok(10));
        assert_eq!(d("1m30s"), Ok(90));
        assert_eq!(d("1h"), Ok(3600));
        assert_eq!(d("500ms"), Ok(1));
        assert_eq!(d("1500ms"), Ok(2));
        assert!(d("").is_err());
        assert!(d("10").is_err());
        assert!(d("99999h").is_err());
        let w = |s: &str| shell_words("f", s);
        assert_eq!(
            w(r#"a "b c" 'd e' f\ g "h\"i" 'j\k'"#).unwrap(),
            ["a", "b c", "d e", "f g", "h\"i", "j\\k"]
        );
        assert_eq!(w("  ").unwrap(), Vec::<String>::new());
        assert_eq!(w("''").unwrap(), [""]);
        assert!(w("a\\").is_err());
    }
}
