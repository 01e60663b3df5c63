//! Safe YAML reading: a size limit before parsing, node and byte budgets that stop alias expansion bombs, and errors with line and column.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, Visitor};

use crate::errors::ArtifactError;

/// Documents larger than this are refused before the parser sees them.
pub const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;

/// At most this many YAML nodes after alias expansion (a 1,000-service template has about 50,000).
pub const MAX_NODES: u64 = 1_000_000;

/// At most this many bytes of scalars (keys, strings, tags) after alias expansion: four
/// times [`MAX_DOCUMENT_BYTES`]. The node budget alone let a thousand aliases of one
/// long string expand a 1 MB template into gigabytes (found while fuzzing
/// `parse_template`; regression tests in `template/tests.rs`).
pub const MAX_SCALAR_BYTES: u64 = 4 * MAX_DOCUMENT_BYTES as u64;

/// Parses one YAML document into `T`, refusing oversized documents and alias bombs first.
///
/// Two passes: a counting pass that visits every node, aliases expanded, and
/// stops at [`MAX_NODES`] nodes or [`MAX_SCALAR_BYTES`] bytes of scalars without
/// allocating; then the typed pass. The counting pass is what makes a "billion
/// laughs" document, or one that repeats a long string, fail fast and in constant memory.
pub(crate) fn parse<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, ArtifactError> {
    let text = check_size_and_utf8(what, bytes)?;
    let budget = Budget::default();
    let counter = Counter { budget: &budget };
    if let Err(e) = counter.deserialize(serde_yaml::Deserializer::from_str(text)) {
        return Err(match budget.exceeded.get() {
            Some(Exceeded::Bytes) => ArtifactError::TooManyScalarBytes {
                what,
                limit: MAX_SCALAR_BYTES,
            },
            Some(Exceeded::Nodes) => ArtifactError::TooManyNodes {
                what,
                limit: MAX_NODES,
            },
            None if is_repetition_limit(&e) => ArtifactError::TooManyNodes {
                what,
                limit: MAX_NODES,
            },
            None => yaml_error(what, &e),
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
    let text = std::str::from_utf8(bytes).map_err(|e| ArtifactError::NotUtf8 {
        what,
        offset: e.valid_up_to(),
    })?;
    check_flow_depth(what, text)?;
    Ok(text)
}

/// At most this many nested flow collections (`[` / `{`), the parser's own recursion limit.
pub const MAX_FLOW_DEPTH: usize = 128;

/// Refuses documents whose flow collections nest deeper than [`MAX_FLOW_DEPTH`]
/// before the parser sees them: the YAML scanner's time grows with the square of
/// the nesting (50,000 levels took 30 s), and the parser would refuse them anyway.
/// Brackets in quoted scalars and comments are skipped; others count, so a plain
/// scalar with more than 128 unclosed brackets is refused too.
fn check_flow_depth(what: &'static str, text: &str) -> Result<(), ArtifactError> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut previous = '\n';
    for c in text.chars() {
        match (quote, comment, c) {
            (_, true, '\n') => comment = false,
            (_, true, _) => {}
            (Some(q), _, c) if c == q => quote = None,
            (Some(_), _, _) => {}
            (None, _, '#') if previous.is_whitespace() => comment = true,
            (None, _, '"' | '\'') => quote = Some(c),
            (None, _, '[' | '{') => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Err(ArtifactError::YamlNoPosition {
                        what,
                        message: format!(
                            "flow collections (`[`, `{{`) nest deeper than {MAX_FLOW_DEPTH} levels"
                        ),
                    });
                }
            }
            (None, _, ']' | '}') => depth = depth.saturating_sub(1),
            _ => {}
        }
        previous = c;
    }
    Ok(())
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

/// Which budget a document overran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exceeded {
    Nodes,
    Bytes,
}

/// What the counting pass has seen so far.
#[derive(Default)]
struct Budget {
    nodes: Cell<u64>,
    bytes: Cell<u64>,
    exceeded: Cell<Option<Exceeded>>,
}

/// Visits every node of a document (aliases expanded) and fails once a budget is spent.
#[derive(Clone, Copy)]
struct Counter<'a> {
    budget: &'a Budget,
}

impl Counter<'_> {
    fn bump<E: de::Error>(self) -> Result<(), E> {
        let n = self.budget.nodes.get() + 1;
        self.budget.nodes.set(n);
        if n > MAX_NODES {
            self.budget.exceeded.set(Some(Exceeded::Nodes));
            return Err(E::custom("node budget exceeded"));
        }
        Ok(())
    }

    fn add_bytes<E: de::Error>(self, len: usize) -> Result<(), E> {
        let n = self
            .budget
            .bytes
            .get()
            .saturating_add(u64::try_from(len).unwrap_or(u64::MAX));
        self.budget.bytes.set(n);
        if n > MAX_SCALAR_BYTES {
            self.budget.exceeded.set(Some(Exceeded::Bytes));
            return Err(E::custom("scalar byte budget exceeded"));
        }
        Ok(())
    }
}

/// Counts the bytes of a tag (`!name`), which an alias repeats like any scalar.
struct TagBytes<'a>(Counter<'a>);

impl<'de> DeserializeSeed<'de> for TagBytes<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl Visitor<'_> for TagBytes<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML tag")
    }
    fn visit_str<E: de::Error>(self, tag: &str) -> Result<(), E> {
        self.0.add_bytes(tag.len())
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
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.bump()?;
        self.add_bytes(v.len())
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
        let ((), variant) = data.variant_seed(TagBytes(self))?;
        variant.newtype_variant_seed(self)
    }
}
