//! The env-file (`<service>.env`): one `KEY=value` line per variable, read by the systemd unit's `docker run --env-file`.
//!
//! Docker's reader takes everything after the first `=` literally (quotes, `#`,
//! `${…}`, surrounding spaces included), so values are written unquoted and only
//! what a line cannot hold is refused: a newline (or carriage return) and NUL.
//! Compose files and the Docker API carry values in their own encodings (a YAML
//! string, a JSON list) and never go through this file.

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

/// Checks that an env-file line can hold `value` (and Docker's reader gives it back unchanged).
pub(crate) fn check_value(service: &str, key: &str, value: &str) -> Result<(), ArtifactError> {
    let reason = if value.contains('\0') {
        Some("a value without NUL (no container environment can carry one)")
    } else if value.contains(['\n', '\r']) {
        Some(
            "a value without a line break (the env-file that the systemd unit reads holds one variable per line)",
        )
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(expected) => Err(ArtifactError::invalid(
            format!("environment variable `{key}` of service `{service}`"),
            value,
            expected,
        )),
    }
}

/// Renders the env-file of one service; `env` holds values already checked by [`check_value`].
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
                    err.starts_with("environment variable `K` of service `web` is `"),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn every_value_a_line_can_hold_is_accepted() {
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
        ] {
            check(ok, Ok(()));
        }
    }

    #[test]
    fn line_breaks_and_nul_are_refused_with_the_reason() {
        check("a\nb", Err("without a line break"));
        check("a\rb", Err("without a line break"));
        check("a\0b", Err("without NUL"));
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
