//! `RequestId`: the id of one HTTP request, taken from a sane incoming `X-Request-Id` or generated (a UUID v7), returned in the response and carried into the access log, the request's span and the causes of the job events the request starts.

use std::fmt;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// The header a request id comes in and goes out in.
pub(crate) const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest incoming id kept; a longer one is replaced.
pub(crate) const MAX_LEN: usize = 128;

/// The id of one request: 1 to [`MAX_LEN`] visible ASCII characters (no spaces, no
/// control characters), so it is safe in a header, a log line and an event cause.
///
/// The middleware (`crate::access::observe`) inserts it into every request's
/// extensions; handlers take it with `Extension<RequestId>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestId(String);

impl RequestId {
    /// `value` as an id when it is 1 to [`MAX_LEN`] visible ASCII characters.
    pub(crate) fn parse(value: &str) -> Option<Self> {
        let sane =
            (1..=MAX_LEN).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic());
        sane.then(|| Self(value.to_owned()))
    }

    /// A fresh id: a UUID v7, so ids sort by the time they were made.
    pub(crate) fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// The id the client sent in `X-Request-Id` (the first one) when it is sane, else
    /// a fresh one: an insane id is replaced, never echoed.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        let Some(given) = headers.get(HEADER) else {
            return Self::generate();
        };
        match given.to_str().ok().and_then(Self::parse) {
            Some(id) => id,
            None => {
                let id = Self::generate();
                tracing::debug!(request_id = %id, given_bytes = given.len(), "X-Request-Id replaced: not 1-128 visible ASCII characters");
                id
            }
        }
    }

    /// The id as a response header value.
    pub(crate) fn header_value(&self) -> Option<HeaderValue> {
        HeaderValue::from_str(&self.0).ok()
    }

    /// `text` with this request named after it, as a job event's cause: `cancelled
    /// by alice (request 0190…)`.
    pub(crate) fn attribute(&self, text: &str) -> String {
        format!("{text} (request {})", self.0)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
