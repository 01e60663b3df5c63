//! Small validated values of the model: credential references, remote paths, user names, commands, labels and idempotency keys.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::errors::ValidationError;

/// Declares a string newtype whose constructor runs `$check` (returns the expectation on failure).
macro_rules! validated_string {
    ($(#[$doc:meta])* $name:ident, $field:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `value`.
            pub fn parse(value: &str) -> Result<Self, ValidationError> {
                let check: fn(&str) -> Result<(), &'static str> = $check;
                check(value).map_err(|expected| ValidationError::new($field, value.escape_debug(), expected))?;
                Ok(Self(value.to_owned()))
            }

            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> Self {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

validated_string!(
    /// A reference to a secret held by a secrets provider (`env:DEPLOY_SSH_KEY`,
    /// `file:/etc/deploy/key`, `vault:kv/ssh`). Never the secret itself.
    CredentialRef,
    "credential_ref",
    |v| {
        let ok = (1..=256).contains(&v.len())
            && v.split_once(':').is_some_and(|(scheme, rest)| {
                !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_lowercase()) && !rest.is_empty()
            })
            && v.chars().all(|c| c.is_ascii_alphanumeric() || "_.:/@+-".contains(c));
        if ok {
            Ok(())
        } else {
            Err("scheme:reference (e.g. env:DEPLOY_KEY), at most 256 characters of A-Z a-z 0-9 _ . : / @ + -")
        }
    }
);

validated_string!(
    /// An absolute POSIX path: a work directory on a target, or a file such as known_hosts on the deployd host.
    ///
    /// Components are limited to `[A-Za-z0-9_.-]` and may not be `.` or `..`,
    /// so the path is inert in a shell and cannot climb out of its parent.
    UnixPath,
    "path",
    |v| {
        let component_ok = |c: &str| {
            !c.is_empty() && c != "." && c != ".." && c.chars().all(|ch| ch.is_ascii_alphanumeric() || "_.-".contains(ch))
        };
        let ok = v.len() <= 1024 && (v == "/" || (v.starts_with('/') && v[1..].split('/').all(component_ok)));
        if ok {
            Ok(())
        } else {
            Err("an absolute path of components [A-Za-z0-9_.-]+ (no `.`, `..`, `//` or trailing `/`), at most 1024 bytes")
        }
    }
);

impl UnixPath {
    /// This path with a validated file name appended, refused when the result is longer
    /// than the 1,024 bytes every `UnixPath` keeps to (a joined path must parse again:
    /// it is stored and sent as text).
    pub fn join(&self, file_name: &crate::Name) -> Result<UnixPath, ValidationError> {
        let base = self.0.trim_end_matches('/');
        UnixPath::parse(&format!("{base}/{file_name}"))
    }
}

validated_string!(
    /// A POSIX login name on a target host.
    Username,
    "user",
    |v| {
        let mut chars = v.chars();
        let ok = v.len() <= 32
            && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if ok { Ok(()) } else { Err("[A-Za-z_][A-Za-z0-9_.-]{0,31}") }
    }
);

validated_string!(
    /// A client-chosen key that makes job creation idempotent: the same key
    /// returns the job it created the first time.
    IdempotencyKey,
    "idempotency_key",
    |v| {
        let ok = (1..=200).contains(&v.len()) && v.chars().all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c));
        if ok { Ok(()) } else { Err("1 to 200 characters of A-Z a-z 0-9 _ . : -") }
    }
);

/// A command as an argument vector, run without a shell where the executor can
/// and quoted argument by argument where it cannot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct CommandSpec(Vec<String>);

/// Largest total size of a command's arguments, in bytes.
pub const COMMAND_MAX_BYTES: usize = 64 * 1024;

impl CommandSpec {
    /// Validates an argument vector: a non-empty program, no NUL bytes, bounded size.
    pub fn new(argv: Vec<String>) -> Result<Self, ValidationError> {
        let shown = || format!("{argv:?}");
        match argv.first() {
            None => {
                return Err(ValidationError::new(
                    "command",
                    "[]",
                    "a program and its arguments",
                ));
            }
            Some(program) if program.is_empty() => {
                return Err(ValidationError::new(
                    "command",
                    shown(),
                    "a non-empty program name first",
                ));
            }
            Some(_) => {}
        }
        if argv.iter().any(|a| a.contains('\0')) {
            return Err(ValidationError::new(
                "command",
                shown(),
                "arguments without NUL bytes",
            ));
        }
        if argv.iter().map(String::len).sum::<usize>() > COMMAND_MAX_BYTES {
            return Err(ValidationError::new(
                "command",
                "(too long to show)",
                "at most 64 KiB of arguments",
            ));
        }
        Ok(Self(argv))
    }

    /// The program and its arguments.
    pub fn argv(&self) -> &[String] {
        &self.0
    }
}

impl TryFrom<Vec<String>> for CommandSpec {
    type Error = ValidationError;
    fn try_from(argv: Vec<String>) -> Result<Self, Self::Error> {
        Self::new(argv)
    }
}

impl From<CommandSpec> for Vec<String> {
    fn from(c: CommandSpec) -> Self {
        c.0
    }
}

/// Free-form key/value labels used to select agents and describe targets.
///
/// Keys are `[a-z0-9][a-z0-9_./-]{0,62}`; values at most 256 printable
/// characters. A `BTreeMap` keeps the order deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<String, String>",
    into = "BTreeMap<String, String>"
)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    /// Validates every key and value.
    pub fn new(map: BTreeMap<String, String>) -> Result<Self, ValidationError> {
        for (key, value) in &map {
            let mut chars = key.chars();
            let key_ok = key.len() <= 63
                && chars
                    .next()
                    .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && chars
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_./-".contains(c));
            if !key_ok {
                return Err(ValidationError::new(
                    "labels",
                    key.escape_debug(),
                    "keys of [a-z0-9][a-z0-9_./-]{0,62}",
                ));
            }
            if value.len() > 256 || value.chars().any(char::is_control) {
                return Err(ValidationError::new(
                    format!("labels.{key}"),
                    value.escape_debug(),
                    "at most 256 characters without control characters",
                ));
            }
        }
        Ok(Self(map))
    }

    /// The labels as a sorted map.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// True when every label of `selector` is present here with the same value.
    pub fn matches(&self, selector: &Labels) -> bool {
        selector.0.iter().all(|(k, v)| self.0.get(k) == Some(v))
    }
}

/// `k=v,k=v`, or `(none)`: how messages and logs show a label set.
impl std::fmt::Display for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(none)");
        }
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

impl TryFrom<BTreeMap<String, String>> for Labels {
    type Error = ValidationError;
    fn try_from(map: BTreeMap<String, String>) -> Result<Self, Self::Error> {
        Self::new(map)
    }
}

impl From<Labels> for BTreeMap<String, String> {
    fn from(l: Labels) -> Self {
        l.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_refs_are_references_not_secrets() {
        for ok in [
            "env:DEPLOY_KEY",
            "file:/etc/deploy/id_ed25519",
            "vault:kv/ssh@prod",
        ] {
            assert!(CredentialRef::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "DEPLOY_KEY",
            "env:",
            ":x",
            "env:a b",
            "ENV:x",
            "file:/x;id",
            "env:\n",
        ] {
            assert!(CredentialRef::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn remote_paths_cannot_escape_or_inject() {
        for ok in ["/", "/srv/deploy", "/opt/app-1.2/x_y"] {
            assert!(UnixPath::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "srv",
            "/srv/../etc",
            "/srv/./x",
            "/srv//x",
            "/srv/",
            "/a b",
            "/a;touch x",
            "/$(id)",
            "/`id`",
        ] {
            assert!(UnixPath::parse(bad).is_err(), "{bad:?}");
        }
        let p = UnixPath::parse("/srv").unwrap();
        assert_eq!(
            p.join(&crate::Name::parse("web").unwrap())
                .unwrap()
                .as_str(),
            "/srv/web"
        );
        assert_eq!(
            UnixPath::parse("/")
                .unwrap()
                .join(&crate::Name::parse("a").unwrap())
                .unwrap()
                .as_str(),
            "/a"
        );
    }

    /// Found by the `image_ref` fuzz target's property "joining a name keeps a path
    /// valid": a 1,020-byte work dir joined with `file` gave a 1,025-byte `UnixPath`
    /// that `UnixPath::parse` (and so deserialising it back) refused.
    #[test]
    fn join_never_builds_a_path_that_does_not_parse() {
        let long = format!("/{}/abcdefghi", vec!["a".repeat(100); 10].join("/"));
        assert_eq!(long.len(), 1020);
        let dir = UnixPath::parse(&long).unwrap();
        let e = dir.join(&crate::Name::parse("file").unwrap()).unwrap_err();
        assert!(e.expected.contains("at most 1024 bytes"), "{e}");
        let fits = dir.join(&crate::Name::parse("abc").unwrap()).unwrap();
        assert_eq!(fits.as_str().len(), 1024);
        assert_eq!(UnixPath::parse(fits.as_str()).unwrap(), fits);
    }

    #[test]
    fn usernames_and_keys() {
        assert!(Username::parse("deploy").is_ok());
        assert!(Username::parse("root;id").is_err());
        assert!(Username::parse("-oProxyCommand=x").is_err());
        assert!(IdempotencyKey::parse("promo-1:attempt.2").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(201)).is_err());
    }

    #[test]
    fn commands_are_argv_with_a_program() {
        assert!(CommandSpec::new(vec!["curl".into(), "-f".into(), "x; rm -rf /".into()]).is_ok());
        assert_eq!(
            CommandSpec::new(vec![]).unwrap_err().to_string(),
            "command is `[]`; expected a program and its arguments"
        );
        assert!(CommandSpec::new(vec![String::new()]).is_err());
        assert!(CommandSpec::new(vec!["a\0b".into()]).is_err());
        assert!(CommandSpec::new(vec!["x".repeat(COMMAND_MAX_BYTES + 1)]).is_err());
        assert!(serde_json::from_str::<CommandSpec>("[]").is_err());
    }

    #[test]
    fn labels_validate_and_match() {
        let l = |pairs: &[(&str, &str)]| {
            Labels::new(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        let have = l(&[("zone", "a"), ("os", "linux")]).unwrap();
        assert!(have.matches(&l(&[("zone", "a")]).unwrap()));
        assert!(!have.matches(&l(&[("zone", "b")]).unwrap()));
        assert!(have.matches(&Labels::default()));
        assert!(l(&[("Zone", "a")]).is_err());
        assert!(l(&[("zone", "a\nb")]).is_err());
    }
}
