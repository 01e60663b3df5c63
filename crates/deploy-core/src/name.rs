//! `Name`: the validated identifier that may flow into container names, compose project names, file names and commands.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::errors::NameError;

/// Longest accepted name, in bytes (one leading character plus 62 more).
pub const NAME_MAX_LEN: usize = 63;

/// An identifier for targets, environments, components and services.
///
/// Accepts only `[a-z0-9][a-z0-9_.-]{0,62}`. Because every character is inert
/// in a POSIX shell, in a file name and in Docker/Compose object names, a `Name`
/// can never be the vehicle of an injection or a path traversal (it has no `/`
/// and cannot be `.` or `..`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl Name {
    /// Validates `value` as a name.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        validate(value)?;
        Ok(Self(value.to_owned()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate(value: &str) -> Result<(), NameError> {
    let mut chars = value.chars().enumerate();
    let Some((_, first)) = chars.next() else {
        return Err(NameError::Empty);
    };
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(NameError::InvalidFirstChar {
            value: value.to_owned(),
            found: first,
        });
    }
    for (position, c) in chars {
        let allowed = c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-');
        if !allowed {
            return Err(NameError::InvalidChar {
                value: value.to_owned(),
                found: c,
                position,
            });
        }
    }
    if value.len() > NAME_MAX_LEN {
        return Err(NameError::TooLong {
            value: value.to_owned(),
            len: value.len(),
        });
    }
    Ok(())
}

impl FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        validate(&value)?;
        Ok(Self(value))
    }
}

impl From<Name> for String {
    fn from(name: Name) -> Self {
        name.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<(), &str>) {
        let got = Name::parse(input).map(|_| ()).map_err(|e| e.to_string());
        assert_eq!(got, expected.map_err(str::to_owned), "input {input:?}");
    }

    #[test]
    fn accepts_the_documented_alphabet() {
        check("a", Ok(()));
        check("0", Ok(()));
        check("web-1", Ok(()));
        check("api_v2.internal", Ok(()));
        check(&"a".repeat(63), Ok(()));
    }

    #[test]
    fn rejects_with_the_offending_character() {
        check("", Err("name is empty; expected [a-z0-9][a-z0-9_.-]{0,62}"));
        check(
            "Web",
            Err("name `Web` starts with `W`; expected a lowercase letter or digit first"),
        );
        check(
            "-x",
            Err("name `-x` starts with `-`; expected a lowercase letter or digit first"),
        );
        check(
            "web;rm",
            Err("name `web;rm` has `;` at position 3; expected only a-z, 0-9, `_`, `.`, `-`"),
        );
        check(
            "a/../b",
            Err("name `a/../b` has `/` at position 1; expected only a-z, 0-9, `_`, `.`, `-`"),
        );
        check(
            "x y",
            Err("name `x y` has ` ` at position 1; expected only a-z, 0-9, `_`, `.`, `-`"),
        );
        check(
            &"a".repeat(64),
            Err(&format!(
                "name `{}` is 64 bytes long; expected at most 63",
                "a".repeat(64)
            )),
        );
    }

    #[test]
    fn rejects_shell_metacharacters_and_dots_only_names() {
        for bad in [
            "x; touch /tmp/pwned",
            "$(id)",
            "`id`",
            "a'b",
            "a\"b",
            "a\nb",
            ".",
            "..",
            "é",
        ] {
            assert!(Name::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn serde_validates_on_the_way_in() {
        let ok: Name = serde_json::from_str("\"web\"").unwrap();
        assert_eq!(ok.as_str(), "web");
        let err = serde_json::from_str::<Name>("\"We b\"").unwrap_err();
        assert!(err.to_string().contains("starts with `W`"), "{err}");
    }
}
