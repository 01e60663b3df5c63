//! compose_host secrets at dispatch: the stored lock keeps `KEY: secret:NAME`; the copy a Compose CLI runs drops those variables, and a compose override file (`<project>.secrets.yml`, passed as a second `--file` after the lock) written only for that deploy (by deployd's engine for SSH, by the agent on its host) sets them.
//!
//! An override file, not an env_file: docker-compose v1 (python-dotenv) and the
//! Compose v2 plugin (Go) read env files differently (`$VAR` is expanded inside double
//! quotes by v2, `${` by both, with no escape), while a compose file's values mean the
//! same to both: a YAML double-quoted scalar with every `$` written `$$`.

use std::collections::BTreeMap;

use deploy_core::{SecretRef, secret_refs};
use serde_yaml::Value;

use crate::errors::ArtifactError;

fn rewrite_error(detail: String) -> ArtifactError {
    ArtifactError::ComposeSecrets { detail }
}

/// File name of a project's secrets override file.
pub fn secrets_override_file_name(project: &str) -> String {
    format!("{project}.secrets.yml")
}

/// The secret references of every service of `lock`, by service then variable.
pub fn lock_secret_refs(
    lock: &str,
) -> Result<BTreeMap<String, BTreeMap<String, SecretRef>>, ArtifactError> {
    let doc: Value = serde_yaml::from_str(lock)
        .map_err(|e| rewrite_error(format!("read the compose lock: {e}")))?;
    let mut out = BTreeMap::new();
    let Some(services) = doc.get("services").and_then(Value::as_mapping) else {
        return Ok(out);
    };
    for (name, service) in services {
        let Some(name) = name.as_str() else { continue };
        let env: BTreeMap<String, String> = service
            .get("environment")
            .and_then(Value::as_mapping)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        let refs = secret_refs(&env)
            .map_err(|(key, e)| rewrite_error(format!("service `{name}` variable `{key}`: {e}")))?;
        if !refs.is_empty() {
            out.insert(name.to_owned(), refs);
        }
    }
    Ok(out)
}

/// `lock` without the variables of `refs` in `environment:` (the secrets override file
/// sets them).
///
/// An edit of the rendered text (deploy-artifacts writes services at indent 2, their
/// keys at 4, environment entries at 6), not a re-serialization: a YAML writer leaves
/// timestamps unquoted, which docker-compose then reads as dates and refuses. The
/// result is parsed again and must hold no reference.
pub fn lock_without_secret_refs(
    lock: &str,
    refs: &BTreeMap<String, BTreeMap<String, SecretRef>>,
) -> Result<String, ArtifactError> {
    let mut out = String::with_capacity(lock.len() + refs.len() * 64);
    let mut in_services = false;
    let mut service: Option<&BTreeMap<String, SecretRef>> = None;
    let mut in_env = false;
    for line in lock.split_inclusive('\n') {
        let text = line.trim_end_matches('\n');
        let indent = text.len() - text.trim_start().len();
        if indent == 0 && !text.is_empty() && !text.starts_with('#') {
            in_services = text == "services:";
            service = None;
            in_env = false;
        } else if in_services && indent == 2 && text.ends_with(':') {
            let name = text.trim().trim_end_matches(':').trim_matches('"');
            service = refs.get(name);
            in_env = false;
            out.push_str(line);
            continue;
        } else if service.is_some() && indent == 4 {
            in_env = text.trim() == "environment:";
        } else if let (Some(vars), true, 6) = (service, in_env, indent)
            && let Some((key, _)) = text.trim().split_once(':')
            && vars.contains_key(key.trim_matches('"'))
        {
            continue;
        }
        out.push_str(line);
    }
    let left = lock_secret_refs(&out)?;
    if !left.is_empty() {
        return Err(rewrite_error(
            "rewrite the compose lock for its secrets override file: the lock is not in the rendered layout"
                .to_owned(),
        ));
    }
    Ok(out)
}

/// The secrets override file: `services: <service>: environment: KEY: "<value>"`, each
/// value a YAML double-quoted scalar with `$` written `$$` (Compose's escape in a
/// compose file, the same in v1 and v2), so every byte arrives as set: `$`, `${X}`,
/// `#`, quotes, backslashes and line breaks included.
pub fn secrets_override_file(values: &BTreeMap<String, BTreeMap<String, String>>) -> String {
    let mut out = String::from("services:\n");
    for (service, vars) in values {
        crate::yaml_out::open(&mut out, 2, service);
        crate::yaml_out::open(&mut out, 4, "environment");
        for (key, value) in vars {
            crate::yaml_out::str_entry(&mut out, 6, key, &value.replace('$', "$$"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: &str = "# header\nversion: \"3.8\"\nservices:\n  web:\n    environment:\n      A: \"plain\"\n      DB: \"secret:db\"\n      Z: \"1\"\n    image: \"r/web@sha256:00\"\n    labels:\n      stella.deployed.at: \"2026-01-02T00:00:00.123Z\"\n  worker:\n    environment:\n      B: \"x\"\n    image: \"r/w@sha256:00\"\nx-generated:\n  timestamp: \"2026-01-02T00:00:00.123Z\"\n";

    #[test]
    fn references_leave_the_lock_and_the_rest_stays() {
        let refs = lock_secret_refs(LOCK).unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs["web"]["DB"].name().as_str(), "db");
        let lock = lock_without_secret_refs(LOCK, &refs).unwrap();
        assert!(!lock.contains("secret:db"), "{lock}");
        assert!(lock.contains("A: \"plain\""), "{lock}");
        assert!(lock.contains("Z: \"1\""), "{lock}");
        // Everything else as rendered: timestamps stay quoted.
        assert!(lock.contains("stella.deployed.at: \"2026-01-02T00:00:00.123Z\""));
        assert!(lock.contains("timestamp: \"2026-01-02T00:00:00.123Z\""));
        assert_eq!(lock.lines().count(), LOCK.lines().count() - 1);
        assert!(!lock.contains("env_file"), "{lock}");
    }

    #[test]
    fn values_are_yaml_quoted_with_dollars_doubled() {
        let value = "a$b ${Y} #c \"d\" e\\f\ng";
        let values: BTreeMap<String, BTreeMap<String, String>> = [(
            "web".to_owned(),
            [("K".to_owned(), value.to_owned())].into(),
        )]
        .into();
        let file = secrets_override_file(&values);
        assert_eq!(
            file,
            "services:\n  web:\n    environment:\n      K: \"a$$b $${Y} #c \\\"d\\\" e\\\\f\\ng\"\n"
        );
        // A YAML reader gets the value back with `$$` (Compose then reads `$$` as `$`).
        let doc: Value = serde_yaml::from_str(&file).unwrap();
        assert_eq!(
            doc["services"]["web"]["environment"]["K"].as_str().unwrap(),
            value.replace('$', "$$")
        );
    }
}
