//! The env-file (`<service>.env`): one `KEY=value` line per variable, read by the systemd unit's `docker run --env-file`.
//!
//! Docker's reader takes everything after the first `=` literally (quotes, `#`,
//! `${…}`, surrounding spaces included), so values are written unquoted. A line
//! cannot hold a line break: a service with such a value gets no env-file (and no
//! unit, which reads it) instead of a wrong one; Compose files and the Docker API
//! carry every value in their own encodings (a YAML string, a JSON list) and never go
//! through this file. NUL is refused everywhere: no container environment holds one.

use std::collections::BTreeMap;

use crate::errors::ArtifactError;

/// Checks a variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn check_key(service: &str, key: &str) -> Result<(), ArtifactError> {
    let mut chars = key.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ArtifactError::InvalidEnvKey {
            service: service.to_owned(),
            key: key.to_owned(),
        })
    }
}

/// Checks that a container environment can hold `value` (no NUL). The value itself is
/// never quoted in the error: environment values are often credentials.
pub(crate) fn check_value(service: &str, key: &str, value: &str) -> Result<(), ArtifactError> {
    if value.contains('\0') {
        return Err(ArtifactError::invalid(
            format!("environment variable `{key}` of service `{service}`"),
            "(a value holding NUL)",
            "a value without NUL (no container environment can carry one)",
        ));
    }
    Ok(())
}

/// Whether every value fits on one env-file line (no line break).
pub(crate) fn fits(env: &BTreeMap<String, String>) -> bool {
    env.values().all(|v| !v.contains(['\n', '\r']))
}

/// Renders the env-file of one service; `env` holds values that [`fits`].
pub(crate) fn render(header: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(64 + env.len() * 48);
    for line in header.lines() {
        out.push_str("# ");
        out.push_str(line);
        out.push('\n');
    }
    for (k, v) in env {
        out.push_str(k);
        out.push('=');
        out.push_str(v);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: &str, expected: Result<(), &str>) {
        let got = check_value("web", "K", value).map_err(|e| e.to_string());
        match expected {
            Ok(()) => assert_eq!(got, Ok(()), "{value:?}"),
            Err(part) => {
                let err = got.expect_err(value);
                assert!(err.contains(part), "{value:?}: {err}");
                assert!(
                    err.starts_with(
                        "environment variable `K` of service `web` is `(a value holding NUL)`"
                    ),
                    "{err}"
                );
                assert!(!err.contains("secret"), "the value is not quoted: {err}");
            }
        }
    }

    #[test]
    fn every_value_a_container_can_hold_is_accepted() {
        for ok in [
            "",
            "plain",
            "a b",
            "a#b",
            "value # not a comment",
            "x=y",
            "$HOME",
            "${HOME}",
            "back\\slash",
            "%p",
            "it's",
            "say \"hi\"",
            "'single'",
            " lead",
            "trail ",
            "tab\tin",
            "\u{1b}[0m",
            "日本",
            "-----BEGIN KEY-----\nline\r\n",
        ] {
            check(ok, Ok(()));
        }
    }

    #[test]
    fn nul_is_refused_naming_the_key_not_the_value() {
        check("secret\0b", Err("without NUL"));
    }

    #[test]
    fn only_values_without_line_breaks_fit_a_line() {
        let env = |v: &str| BTreeMap::from([("K".to_owned(), v.to_owned())]);
        assert!(fits(&env("a # b")));
        assert!(!fits(&env("a\nb")));
        assert!(!fits(&env("a\rb")));
    }

    #[test]
    fn keys_follow_the_posix_rule() {
        for ok in ["A", "_x", "PATH_2"] {
            assert!(check_key("web", ok).is_ok(), "{ok}");
        }
        for bad in ["", "2X", "A-B", "A B", "É"] {
            assert_eq!(
                check_key("web", bad).unwrap_err().to_string(),
                format!(
                    "environment variable name `{bad}` of service `web` is invalid; expected [A-Za-z_][A-Za-z0-9_]*"
                )
            );
        }
    }
}
