//! `Timestamp`: a UTC instant with millisecond precision, always passed in by the caller (core never reads the clock).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::errors::TimestampError;

/// A UTC instant, truncated to whole milliseconds.
///
/// Millisecond precision matches what both SQLite and PostgreSQL store
/// losslessly and what UUID v7 ids carry, so a value survives a round trip
/// through the store unchanged. Serialised as RFC 3339 (`2026-11-26T09:33:41.123Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// 1970-01-01T00:00:00.000Z.
    pub const UNIX_EPOCH: Timestamp = Timestamp(OffsetDateTime::UNIX_EPOCH);

    /// The instant `millis` milliseconds after the Unix epoch.
    pub fn from_unix_millis(millis: u64) -> Result<Self, TimestampError> {
        let nanos = i128::from(millis) * 1_000_000;
        OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .map(Self)
            .map_err(|_| TimestampError::OutOfRange { millis })
    }

    /// Converts any `OffsetDateTime` to UTC and truncates it to milliseconds.
    pub fn from_datetime(value: OffsetDateTime) -> Result<Self, TimestampError> {
        let millis = value.unix_timestamp_nanos().div_euclid(1_000_000);
        let millis = u64::try_from(millis).map_err(|_| TimestampError::BeforeEpoch {
            value: value.to_string(),
        })?;
        Self::from_unix_millis(millis)
    }

    /// Parses RFC 3339 text.
    pub fn parse(value: &str) -> Result<Self, TimestampError> {
        let parsed =
            OffsetDateTime::parse(value, &Rfc3339).map_err(|_| TimestampError::Malformed {
                value: value.to_owned(),
            })?;
        Self::from_datetime(parsed)
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(&self) -> u64 {
        // Construction guarantees a non-negative instant within u64 milliseconds.
        u64::try_from(self.0.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
    }

    /// The instant as an `OffsetDateTime` in UTC.
    pub fn as_datetime(&self) -> OffsetDateTime {
        self.0
    }

    /// This instant plus `duration`, saturating at the far future.
    pub fn saturating_add(&self, duration: Duration) -> Self {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Self::from_unix_millis(self.unix_millis().saturating_add(millis)).unwrap_or_else(|_| {
            Self(OffsetDateTime::new_utc(
                time::Date::MAX,
                time::Time::MIDNIGHT,
            ))
        })
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn duration_since(&self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.unix_millis().saturating_sub(earlier.unix_millis()))
    }

    /// RFC 3339 with exactly three fractional digits and `Z`, so that the
    /// text form is unique for an instant (artifacts hash it).
    pub fn to_rfc3339(&self) -> String {
        let d = self.0;
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute(),
            d.second(),
            d.millisecond()
        )
    }
}

impl TryFrom<String> for Timestamp {
    type Error = TimestampError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Timestamp> for String {
    fn from(t: Timestamp) -> Self {
        t.to_rfc3339()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_is_unique_and_round_trips() {
        let t = Timestamp::from_unix_millis(1_764_149_621_123).unwrap();
        assert_eq!(t.to_rfc3339(), "2025-11-26T09:33:41.123Z");
        assert_eq!(
            Timestamp::parse("2025-11-26T10:33:41.123456+01:00").unwrap(),
            t
        );
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }

    #[test]
    fn rejects_malformed_and_pre_epoch_text() {
        assert_eq!(
            Timestamp::parse("yesterday").unwrap_err().to_string(),
            "timestamp `yesterday` is not RFC 3339; expected e.g. 2026-11-26T09:33:41.123Z"
        );
        assert!(Timestamp::parse("1969-12-31T23:59:59Z").is_err());
    }

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_unix_millis(1_000).unwrap();
        assert_eq!(
            t.saturating_add(Duration::from_millis(500)).unix_millis(),
            1_500
        );
        assert_eq!(
            t.duration_since(t.saturating_add(Duration::from_secs(1))),
            Duration::ZERO
        );
        let _ = t.saturating_add(Duration::MAX);
    }
}
