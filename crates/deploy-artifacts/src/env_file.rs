//! The env-file (`<service>.env`): one `KEY=value` line per variable, written so that `docker run --env-file` and docker-compose's `env_file` read the same values.
//!
//! The two readers disagree on quoting: Docker takes everything after the first
//! `=` literally (quotes included), while Compose (python-dotenv) removes quotes,
//! strips surrounding whitespace, cuts ` #comments` and expands `${VAR}`. No
//! quoting is read back the same by both, so values are written unquoted and a
//! value that the two would read differently is refused when the template is
//! parsed, naming the variable and the reason.

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

/// Checks that both env-file readers read `value` back unchanged.
pub(crate) fn check_value(service: &str, key: &str, value: &str) -> Result<(), ArtifactError> {
    let reason = if value.contains(['\n', '\r']) {
        Some("a value without newlines")
    } else if value.contains('\0') {
        Some("a value without NUL")
    } else if value.chars().any(|c| c.is_control() && c != '\t') {
        Some("a value without control characters")
    } else if value.starts_with(char::is_whitespace) || value.ends_with(char::is_whitespace) {
        Some("a value without leading or trailing whitespace (Compose strips it, Docker keeps it)")
    } else if value.starts_with(['\'', '"']) {
        Some("a value that does not start with a quote (Compose removes quotes, Docker keeps them)")
    } else if has_comment(value) {
        Some("a value without whitespace before `#` (Compose reads the rest as a comment)")
    } else if value.contains("${") {
        Some("a value without `${` (Compose expands it, Docker does not)")
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

fn has_comment(value: &str) -> bool {
    let mut prev_space = false;
    for c in value.chars() {
        if c == '#' && prev_space {
            return true;
        }
        prev_space = c.is_whitespace();
    }
    false
}

/// Renders the env-file of one service; `env` holds values already checked by [`check_value`].
pub(crate) fn render(header: &str, env: &BTreeMap<&str, &str>) -> String {
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
    fn values_both_readers_agree_on_are_accepted() {
        for ok in [
            "",
            "plain",
            "a b",
            "a#b",
            "x=y",
            "$HOME",
            "back\\slash",
            "%p",
            "it's",
            "say \"hi\"",
            "tab\tin",
            "日本",
        ] {
            check(ok, Ok(()));
        }
    }

    #[test]
    fn values_the_readers_disagree_on_are_refused_with_the_reason() {
        check("a\nb", Err("without newlines"));
        check("a\rb", Err("without newlines"));
        check("a\0b", Err("without NUL"));
        check("\u{1b}[0m", Err("control characters"));
        check(" lead", Err("leading or trailing whitespace"));
        check("trail ", Err("leading or trailing whitespace"));
        check("'single'", Err("start with a quote"));
        check("\"double\"", Err("start with a quote"));
        check("a #b", Err("before `#`"));
        check("${HOME}", Err("without `${`"));
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
