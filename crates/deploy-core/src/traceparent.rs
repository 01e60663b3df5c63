//! The W3C Trace Context `traceparent` header value: what a job carries from the request (or run) it was created in, checked once when parsed. Pure: the engine and the store pass it around, the embedder's tracing backend reads it.

use std::fmt;

/// A W3C Trace Context `traceparent` (version `00`): the trace id, the parent span id
/// and the trace flags, checked once when parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traceparent {
    /// 16 bytes, not all zero.
    pub trace_id: [u8; 16],
    /// 8 bytes, not all zero.
    pub span_id: [u8; 8],
    /// Bit 0: sampled. The parser keeps no other bit: a flag this code does not know is
    /// not passed on (the specification asks for unknown flags to be zeroed).
    pub flags: u8,
}

/// Why a `traceparent` was refused, naming what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("read traceparent `{value}`: {why}")]
pub struct TraceparentError {
    /// The value, cut to 64 characters.
    pub value: String,
    pub why: &'static str,
}

impl Traceparent {
    /// Parses `value` as the W3C `traceparent` header: `00-<32 hex>-<16 hex>-<2 hex>`,
    /// lowercase; a later version is read by its first four fields, as the
    /// specification asks, and written back as version `00` (its flags but the sampled
    /// bit dropped). `tracestate` is not read: deployd carries no vendor state.
    pub fn parse(value: &str) -> Result<Self, TraceparentError> {
        let refuse = |why| TraceparentError {
            value: value.chars().take(64).collect(),
            why,
        };
        let fields: Vec<&str> = value.trim().split('-').collect();
        let [version, trace, span, flags, rest @ ..] = fields.as_slice() else {
            return Err(refuse(
                "expected `version-traceid-parentid-flags` (four fields separated by `-`)",
            ));
        };
        let [version] =
            hex::<1>(version).ok_or_else(|| refuse("expected a 2-digit hex version"))?;
        if version == 0xff {
            return Err(refuse("version `ff` is invalid"));
        }
        if version == 0 && !rest.is_empty() {
            return Err(refuse("version `00` has exactly four fields"));
        }
        let trace_id = hex::<16>(trace)
            .filter(|id| id.iter().any(|b| *b != 0))
            .ok_or_else(|| {
                refuse("expected a trace id of 32 lowercase hex digits, not all zero")
            })?;
        let span_id = hex::<8>(span)
            .filter(|id| id.iter().any(|b| *b != 0))
            .ok_or_else(|| {
                refuse("expected a parent id of 16 lowercase hex digits, not all zero")
            })?;
        let [flags] = hex::<1>(flags).ok_or_else(|| refuse("expected 2-digit hex flags"))?;
        Ok(Self {
            trace_id,
            span_id,
            flags: flags & SAMPLED,
        })
    }

    /// Whether the caller recorded its part of the trace (flag bit 0).
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED == SAMPLED
    }
}

/// The `sampled` trace flag, the only one kept.
const SAMPLED: u8 = 0x01;

impl fmt::Display for Traceparent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            crate::hex::lower_hex(&self.trace_id),
            crate::hex::lower_hex(&self.span_id),
            self.flags
        )
    }
}

/// `text` as N bytes of lowercase hex (uppercase is refused, as the specification says).
fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests;
