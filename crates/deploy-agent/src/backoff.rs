//! `Backoff`: exponential (200 ms doubling to 30 s) with full jitter, for reconnecting and re-sending.

use std::time::Duration;

/// First delay.
pub const INITIAL: Duration = Duration::from_millis(200);
/// Largest delay.
pub const MAX: Duration = Duration::from_secs(30);

/// Exponential backoff with full jitter: the n-th delay is uniform in `[0, min(MAX, INITIAL * 2^n)]`,
/// so a fleet of agents reconnecting after a deployd restart does not arrive in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    initial: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(INITIAL, MAX)
    }
}

impl Backoff {
    /// A backoff from `initial` doubling to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            attempt: 0,
            initial,
            max,
        }
    }

    /// The ceiling of the next delay (before jitter).
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The next delay, jittered; advances the exponent.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        jitter(ceiling, random_unit())
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// `ceiling * unit`, `unit` in `[0, 1]`.
fn jitter(ceiling: Duration, unit: f64) -> Duration {
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

/// A uniform number in `[0, 1]` from the random bytes of a v4 UUID (no extra RNG crate).
fn random_unit() -> f64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    // 53 bits: the precision of an f64 mantissa.
    (u64::from_le_bytes(word) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            ceilings.push(b.ceiling().as_millis());
            let d = b.next_delay();
            assert!(d <= MAX);
        }
        assert_eq!(
            ceilings,
            [
                200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000, 30000
            ]
        );
        b.reset();
        assert_eq!(b.ceiling(), INITIAL);
    }

    #[test]
    fn jitter_is_full_and_varies() {
        assert_eq!(jitter(Duration::from_secs(1), 0.0), Duration::ZERO);
        assert_eq!(jitter(Duration::from_secs(1), 1.0), Duration::from_secs(1));
        let samples: Vec<f64> = (0..50).map(|_| random_unit()).collect();
        assert!(samples.iter().all(|u| (0.0..=1.0).contains(u)));
        let distinct = samples
            .iter()
            .map(|u| u.to_bits())
            .collect::<std::collections::BTreeSet<_>>();
        assert!(distinct.len() > 40, "{samples:?}");
    }
}
