//! Safe YAML reading: a size limit before parsing, a node budget that stops alias expansion bombs, and errors with line and column.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, Visitor};

use crate::errors::ArtifactError;

/// Documents larger than this are refused before the parser sees them.
pub const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;

/// At most this many YAML nodes after alias expansion (a 1,000-service template has about 50,000).
pub const MAX_NODES: u64 = 1_000_000;

/// Parses one YAML document into `T`, refusing oversized documents and alias bombs first.
///
/// Two passes: a counting pass that visits every node, aliases expanded, and
/// stops at [`MAX_NODES`] without allocating; then the typed pass. The counting
/// pass is what makes a "billion laughs" document fail fast and in constant memory.
pub(crate) fn parse<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, ArtifactError> {
    let text = check_size_and_utf8(what, bytes)?;
    let count = Cell::new(0u64);
    let exceeded = Cell::new(false);
    let counter = Counter {
        count: &count,
        exceeded: &exceeded,
    };
    if let Err(e) = counter.deserialize(serde_yaml::Deserializer::from_str(text)) {
        return Err(if exceeded.get() || is_repetition_limit(&e) {
            ArtifactError::TooManyNodes {
                what,
                limit: MAX_NODES,
            }
        } else {
            yaml_error(what, &e)
        });
    }
    serde_yaml::from_str(text).map_err(|e| {
        if is_repetition_limit(&e) {
            ArtifactError::TooManyNodes {
                what,
                limit: MAX_NODES,
            }
        } else {
            yaml_error(what, &e)
        }
    })
}

/// The size check and UTF-8 decoding that come before any parsing.
pub(crate) fn check_size_and_utf8<'a>(
    what: &'static str,
    bytes: &'a [u8],
) -> Result<&'a str, ArtifactError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(ArtifactError::TooLarge {
            what,
            size: bytes.len(),
            limit: MAX_DOCUMENT_BYTES,
        });
    }
    std::str::from_utf8(bytes).map_err(|e| ArtifactError::NotUtf8 {
        what,
        offset: e.valid_up_to(),
    })
}

fn is_repetition_limit(e: &serde_yaml::Error) -> bool {
    e.to_string().contains("repetition limit exceeded")
}

/// Converts a serde_norway error, keeping its 1-based line and column.
pub(crate) fn yaml_error(what: &'static str, e: &serde_yaml::Error) -> ArtifactError {
    let message = e.to_string();
    match e.location() {
        Some(loc) => ArtifactError::Yaml {
            what,
            line: loc.line(),
            column: loc.column(),
            // The message repeats the position at its end; keep only the description.
            message: message
                .rsplit_once(" at line ")
                .map_or(message.as_str(), |(head, _)| head)
                .to_owned(),
        },
        None => ArtifactError::YamlNoPosition { what, message },
    }
}

/// Visits every node of a document (aliases expanded) and fails once the budget is spent.
#[derive(Clone, Copy)]
struct Counter<'a> {
    count: &'a Cell<u64>,
    exceeded: &'a Cell<bool>,
}

impl Counter<'_> {
    fn bump<E: de::Error>(self) -> Result<(), E> {
        let n = self.count.get() + 1;
        self.count.set(n);
        if n > MAX_NODES {
            self.exceeded.set(true);
            return Err(E::custom("node budget exceeded"));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Counter<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Counter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.bump()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.bump()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.bump()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.bump()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.bump()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.bump()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.bump()
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.bump()?;
        self.deserialize(d)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.bump()?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.bump()?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        use serde::de::VariantAccess as _;
        self.bump()?;
        let (_, variant) = data.variant::<de::IgnoredAny>()?;
        variant.newtype_variant_seed(self)
    }
}
