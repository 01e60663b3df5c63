//! `ImageRef`: an OCI distribution reference pinned by digest, `[registry[:port]/]path@sha256:…`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::errors::ImageRefError;

/// Longest repository name (registry + path) the distribution spec allows.
const NAME_MAX_LEN: usize = 255;
/// Longest tag the distribution spec allows.
const TAG_MAX_LEN: usize = 128;

/// A container image pinned by its content digest.
///
/// Follows the grammar of the distribution project's `reference` package. A
/// reference without a digest is rejected: tags move, digests do not, and a
/// deployment must name exactly what runs. A tag written beside the digest
/// (`app:1.2@sha256:…`) is accepted and dropped, since the runtime ignores it
/// too; the canonical form is always `repository@digest`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageRef {
    registry: Option<String>,
    path: String,
    digest: Digest,
}

impl ImageRef {
    /// Parses a digest-pinned reference.
    pub fn parse(value: &str) -> Result<Self, ImageRefError> {
        if value.is_empty() {
            return Err(ImageRefError::Empty);
        }
        let Some((name_and_tag, digest)) = value.split_once('@') else {
            return Err(ImageRefError::MissingDigest {
                value: value.to_owned(),
            });
        };
        let digest = Digest::parse(digest).map_err(|source| ImageRefError::InvalidDigest {
            value: value.to_owned(),
            source,
        })?;
        let name = strip_tag(value, name_and_tag)?;
        if name.len() > NAME_MAX_LEN {
            return Err(ImageRefError::TooLong {
                value: value.to_owned(),
                len: name.len(),
            });
        }
        let (registry, path) = split_registry(name);
        if let Some(registry) = registry {
            validate_registry(value, registry)?;
        }
        validate_path(value, path)?;
        Ok(Self {
            registry: registry.map(str::to_owned),
            path: path.to_owned(),
            digest,
        })
    }

    /// Builds a reference from a repository (`[registry/]path`) and a digest.
    pub fn from_parts(repository: &str, digest: &Digest) -> Result<Self, ImageRefError> {
        Self::parse(&format!("{repository}@{digest}"))
    }

    /// The registry host (and port), if the reference names one.
    pub fn registry(&self) -> Option<&str> {
        self.registry.as_deref()
    }

    /// The path inside the registry, e.g. `team/api`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `registry/path`, or `path` when no registry is named.
    pub fn repository(&self) -> String {
        match &self.registry {
            Some(registry) => format!("{registry}/{}", self.path),
            None => self.path.clone(),
        }
    }

    /// The digest that identifies the image.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }
}

/// Removes an optional `:tag` from the name part, validating the tag.
fn strip_tag<'a>(value: &str, name_and_tag: &'a str) -> Result<&'a str, ImageRefError> {
    // A colon after the last slash starts a tag; one before it belongs to a registry port.
    let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
    let Some(colon) = name_and_tag[last_slash..].find(':') else {
        return Ok(name_and_tag);
    };
    let (name, tag) = (
        &name_and_tag[..last_slash + colon],
        &name_and_tag[last_slash + colon + 1..],
    );
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok || tag.len() > TAG_MAX_LEN {
        return Err(ImageRefError::InvalidTag {
            value: value.to_owned(),
            tag: tag.to_owned(),
        });
    }
    Ok(name)
}

/// Splits `registry/path` the way Docker does: the first component is a
/// registry when it contains `.` or `:`, or is `localhost`.
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.starts_with('[') =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn validate_registry(value: &str, registry: &str) -> Result<(), ImageRefError> {
    let invalid = || ImageRefError::InvalidRegistry {
        value: value.to_owned(),
        registry: registry.to_owned(),
    };
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        // [IPv6]:port
        let (v6, after) = rest.split_once(']').ok_or_else(invalid)?;
        if v6.is_empty()
            || !v6
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err(invalid());
        }
        match after {
            "" => (None, None),
            _ => (None, Some(after.strip_prefix(':').ok_or_else(invalid)?)),
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(registry), None),
        }
    };
    if let Some(host) = host {
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
                && !c.starts_with('-')
                && !c.ends_with('-')
        };
        if !host.split('.').all(component_ok) {
            return Err(invalid());
        }
    }
    if let Some(port) = port
        && (port.is_empty()
            || !port.chars().all(|c| c.is_ascii_digit())
            || port.parse::<u16>().is_err())
    {
        return Err(invalid());
    }
    Ok(())
}

fn validate_path(value: &str, path: &str) -> Result<(), ImageRefError> {
    for component in path.split('/') {
        if !path_component_ok(component) {
            return Err(ImageRefError::InvalidPathComponent {
                value: value.to_owned(),
                component: component.to_owned(),
            });
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn path_component_ok(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        // One run of alphanumerics.
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        // One separator: `.`, `_`, `__`, or one or more `-`.
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += if bytes.get(i + 1) == Some(&b'_') {
                    2
                } else {
                    1
                }
            }
            b'-' => {
                while i < bytes.len() && bytes[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

impl FromStr for ImageRef {
    type Err = ImageRefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for ImageRef {
    type Error = ImageRefError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ImageRef> for String {
    fn from(r: ImageRef) -> Self {
        r.to_string()
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(registry) = &self.registry {
            write!(f, "{registry}/")?;
        }
        write!(f, "{}@{}", self.path, self.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn ok(input: &str, registry: Option<&str>, path: &str) {
        let r = ImageRef::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(r.registry(), registry, "{input}");
        assert_eq!(r.path(), path, "{input}");
        assert_eq!(r.digest().as_str(), D);
    }

    fn err(input: &str, expected: &str) {
        let e = ImageRef::parse(input).unwrap_err().to_string();
        assert!(
            e.contains(expected),
            "{input:?}: got {e:?}, expected it to contain {expected:?}"
        );
    }

    #[test]
    fn accepts_the_reference_grammar() {
        ok(&format!("nginx@{D}"), None, "nginx");
        ok(&format!("library/nginx@{D}"), None, "library/nginx");
        ok(
            &format!("127.0.0.1:5000/team/api@{D}"),
            Some("127.0.0.1:5000"),
            "team/api",
        );
        ok(&format!("localhost/api@{D}"), Some("localhost"), "api");
        ok(
            &format!("registry.example.com/a/b/c@{D}"),
            Some("registry.example.com"),
            "a/b/c",
        );
        ok(&format!("[::1]:5000/api@{D}"), Some("[::1]:5000"), "api");
        ok(
            &format!("my-registry:443/x__y.z--w@{D}"),
            Some("my-registry:443"),
            "x__y.z--w",
        );
    }

    #[test]
    fn a_tag_beside_the_digest_is_dropped_from_the_canonical_form() {
        let r = ImageRef::parse(&format!("127.0.0.1:5000/api:1.2.3@{D}")).unwrap();
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/api@{D}"));
        assert_eq!(r.repository(), "127.0.0.1:5000/api");
    }

    #[test]
    fn rejects_references_that_are_not_pinned_or_malformed() {
        err("", "image reference is empty");
        err("nginx:latest", "has no digest");
        err("nginx", "has no digest");
        err("nginx@sha256:abc", "has 3 hex characters");
        err(&format!("Nginx@{D}"), "path component `Nginx`");
        err(&format!("a//b@{D}"), "path component ``");
        err(&format!("a/b_@{D}"), "path component `b_`");
        err(&format!("a/b___c@{D}"), "path component `b___c`");
        err(&format!("reg.io:99999/a@{D}"), "registry `reg.io:99999`");
        err(&format!("reg_x.io/a@{D}"), "registry `reg_x.io`");
        err(&format!("a:b c@{D}"), "tag `b c`");
        err(&format!("a:.x@{D}"), "tag `.x`");
        err(&format!("{}@{D}", "a".repeat(256)), "256 bytes");
        err(&format!("x;rm -rf /@{D}"), "path component");
        err(&format!("$(id)/a@{D}"), "path component");
    }

    #[test]
    fn display_and_serde_round_trip() {
        let input = format!("127.0.0.1:5000/team/api@{D}");
        let r = ImageRef::parse(&input).unwrap();
        assert_eq!(r.to_string(), input);
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<ImageRef>(&json).unwrap(), r);
        let built = ImageRef::from_parts("127.0.0.1:5000/team/api", r.digest()).unwrap();
        assert_eq!(built, r);
    }
}
