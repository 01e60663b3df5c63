//! Rollout strategies (all-at-once, rolling, canary, blue-green), their batch sizes, and the job's failure policy.

use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

use crate::errors::ValidationError;

/// How a job's targets are grouped into waves. Spelled as in the spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Strategy {
    /// Every target in one wave, at most `parallelism` at a time.
    AllAtOnce,
    /// Batches of `batch`, each gated on health before the next starts.
    Rolling { batch: BatchSize },
    /// A canary wave of `canary` targets, a soak of `min_healthy_time_ms`, then rolling batches of `batch`.
    Canary {
        canary: BatchSize,
        #[serde(default)]
        min_healthy_time_ms: u64,
        batch: BatchSize,
    },
    /// Green beside blue on every target, verify, cut over; blue is kept until the job completes.
    BlueGreen,
}

impl Strategy {
    /// The spec's spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::AllAtOnce => "all-at-once",
            Self::Rolling { .. } => "rolling",
            Self::Canary { .. } => "canary",
            Self::BlueGreen => "blue-green",
        }
    }
}

/// A batch size: a count, or a percentage of the targets (rounded up, at least one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum BatchSize {
    Count(NonZeroU32),
    Percent(Percent),
}

impl BatchSize {
    /// The number of targets this size means out of `total` (at least 1, at most `total` when `total` > 0).
    pub fn resolve(self, total: usize) -> usize {
        let n = match self {
            Self::Count(c) => c.get() as usize,
            // ceil(total * p / 100) without floating point.
            Self::Percent(p) => (total * usize::from(p.get())).div_ceil(100),
        };
        n.clamp(1, total.max(1))
    }
}

/// A whole percentage from 1 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Percent(u8);

impl Percent {
    /// Validates 1..=100.
    pub fn new(value: u8) -> Result<Self, ValidationError> {
        if (1..=100).contains(&value) {
            Ok(Self(value))
        } else {
            Err(ValidationError::new(
                "percent",
                value,
                "a whole percentage from 1 to 100",
            ))
        }
    }

    /// The percentage.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for Percent {
    type Error = ValidationError;
    fn try_from(value: u8) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Percent> for u8 {
    fn from(p: Percent) -> Self {
        p.0
    }
}

/// A ratio from 0 to 1, held in parts per million so that it compares exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Ratio(u32);

const PPM: u32 = 1_000_000;

impl Ratio {
    /// Validates a finite value in [0, 1].
    pub fn new(value: f64) -> Result<Self, ValidationError> {
        if value.is_finite() && (0.0..=1.0).contains(&value) {
            // In range by the check above, so the cast cannot truncate.
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "value is in [0, 1]"
            )]
            let ppm = (value * f64::from(PPM)).round() as u32;
            Ok(Self(ppm))
        } else {
            Err(ValidationError::new(
                "max_failure_ratio",
                value,
                "a number from 0 to 1",
            ))
        }
    }

    /// The ratio as a float.
    pub fn get(self) -> f64 {
        f64::from(self.0) / f64::from(PPM)
    }

    /// True when `part / whole` is strictly greater than this ratio.
    pub fn exceeded_by(self, part: usize, whole: usize) -> bool {
        // part/whole > ppm/PPM  <=>  part*PPM > ppm*whole, in u128 to avoid overflow.
        whole > 0 && (part as u128) * u128::from(PPM) > u128::from(self.0) * (whole as u128)
    }
}

impl TryFrom<f64> for Ratio {
    type Error = ValidationError;
    fn try_from(value: f64) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Ratio> for f64 {
    fn from(r: Ratio) -> Self {
        r.get()
    }
}

/// When a job gives up, and what it does then.
///
/// `max_failures` is Ansible's and Nomad's absolute count, `max_failure_ratio`
/// Swarm's ratio; the job fails as soon as either set limit is exceeded.
/// With neither set, any failed task fails the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailurePolicy {
    #[serde(default)]
    pub max_failures: Option<u32>,
    #[serde(default)]
    pub max_failure_ratio: Option<Ratio>,
    /// Roll back to the last-known-good digests when the job fails.
    #[serde(default)]
    pub auto_rollback: bool,
}

impl FailurePolicy {
    /// True when `failed` failed targets out of `total` exceed the policy.
    pub fn exceeded(&self, failed: usize, total: usize) -> bool {
        let by_count = self.max_failures.is_some_and(|m| failed > m as usize);
        let by_ratio = self
            .max_failure_ratio
            .is_some_and(|r| r.exceeded_by(failed, total));
        let no_limit_set = self.max_failures.is_none() && self.max_failure_ratio.is_none();
        by_count || by_ratio || (no_limit_set && failed > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(n: u32) -> BatchSize {
        BatchSize::Count(NonZeroU32::new(n).unwrap())
    }

    #[test]
    fn batch_sizes_resolve_rounding_up_and_clamped() {
        let pct = |p| BatchSize::Percent(Percent::new(p).unwrap());
        assert_eq!(pct(25).resolve(10), 3);
        assert_eq!(pct(1).resolve(10), 1);
        assert_eq!(pct(100).resolve(7), 7);
        assert_eq!(count(5).resolve(3), 3);
        assert_eq!(count(2).resolve(10), 2);
        assert!(Percent::new(0).is_err());
        assert!(Percent::new(101).is_err());
    }

    #[test]
    fn strategies_are_spelled_as_in_the_spec() {
        let s: Strategy =
            serde_json::from_str(r#"{"type":"rolling","batch":{"percent":25}}"#).unwrap();
        assert_eq!(s.as_str(), "rolling");
        let c: Strategy =
            serde_json::from_str(r#"{"type":"canary","canary":{"count":1},"min_healthy_time_ms":30000,"batch":{"count":2}}"#)
                .unwrap();
        assert_eq!(c.as_str(), "canary");
        for (json, name) in [
            (r#"{"type":"all-at-once"}"#, "all-at-once"),
            (r#"{"type":"blue-green"}"#, "blue-green"),
        ] {
            assert_eq!(
                serde_json::from_str::<Strategy>(json).unwrap().as_str(),
                name
            );
        }
        assert!(
            serde_json::from_str::<Strategy>(r#"{"type":"rolling","batch":{"count":0}}"#).is_err()
        );
        assert!(
            serde_json::from_str::<Strategy>(r#"{"type":"rolling","batch":{"count":1},"bacth":1}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<Strategy>(r#"{"type":"yolo"}"#).is_err());
    }

    #[test]
    fn failure_policy_limits() {
        let default = FailurePolicy::default();
        assert!(!default.exceeded(0, 10));
        assert!(default.exceeded(1, 10));
        let two = FailurePolicy {
            max_failures: Some(2),
            ..Default::default()
        };
        assert!(!two.exceeded(2, 10));
        assert!(two.exceeded(3, 10));
        let ratio = FailurePolicy {
            max_failure_ratio: Some(Ratio::new(0.25).unwrap()),
            ..Default::default()
        };
        assert!(!ratio.exceeded(1, 4));
        assert!(ratio.exceeded(2, 4));
        assert!(!ratio.exceeded(0, 0));
        let both = FailurePolicy {
            max_failures: Some(5),
            max_failure_ratio: Some(Ratio::new(0.1).unwrap()),
            auto_rollback: true,
        };
        assert!(
            both.exceeded(2, 10),
            "the ratio is exceeded even though the count is not"
        );
        assert!(Ratio::new(1.5).is_err());
        assert!(Ratio::new(f64::NAN).is_err());
        assert!(serde_json::from_str::<FailurePolicy>(r#"{"max_failure_ratio":-0.1}"#).is_err());
    }
}
