//! When a failed delivery is tried again: exponential backoff from `initial`, capped at `max`, with jitter, until `max_attempts` or `max_age`.

use std::time::Duration;

use deploy_core::{RetryBackoff, Timestamp};

/// The retry policy of deliveries (deployd's `notify_*` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySchedule {
    /// The delay after the first failed attempt; doubled after each next one.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// Attempts after which a delivery is given up (marked failed).
    pub max_attempts: u32,
    /// Age (from the event) after which a delivery is given up.
    pub max_age: Duration,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(15 * 60),
            max_attempts: 12,
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

impl RetrySchedule {
    /// Checks the values; the error names the bad one and what is accepted.
    pub fn validate(&self) -> Result<(), String> {
        let ms = |d: Duration| d.as_millis();
        if !(10..=3_600_000).contains(&ms(self.initial)) {
            return Err(format!(
                "notify_backoff_initial_ms is {}; expected 10 to 3600000",
                ms(self.initial)
            ));
        }
        if self.max < self.initial || ms(self.max) > 86_400_000 {
            return Err(format!(
                "notify_backoff_max_ms is {}; expected notify_backoff_initial_ms ({}) to 86400000",
                ms(self.max),
                ms(self.initial)
            ));
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err(format!(
                "notify_max_attempts is {}; expected 1 to 100",
                self.max_attempts
            ));
        }
        if !(1_000..=7 * 86_400_000).contains(&ms(self.max_age)) {
            return Err(format!(
                "notify_max_age_ms is {}; expected 1000 to 604800000 (7 days)",
                ms(self.max_age)
            ));
        }
        Ok(())
    }

    /// The delay after failed attempt `attempt` (1-based): `initial * 2^(attempt-1)`
    /// capped at `max`, then scaled into [50 %, 100 %] by `random` (equal jitter:
    /// receivers that failed together are not all retried at the same instant, and
    /// no delay is shorter than half the schedule's).
    pub fn delay(&self, attempt: u32, random: u16) -> Duration {
        let full = RetryBackoff {
            base: self.initial,
            max: self.max,
        }
        .delay(attempt);
        let half = full / 2;
        half + half.mul_f64(f64::from(random) / f64::from(u16::MAX))
    }

    /// What follows failed attempt `attempt` at `now` of an event that occurred at
    /// `occurred`: the time of the next attempt, or `None` to give up.
    pub fn next(
        &self,
        attempt: u32,
        occurred: Timestamp,
        now: Timestamp,
        random: u16,
    ) -> Option<Timestamp> {
        let next = now.saturating_add(self.delay(attempt, random));
        let deadline = occurred.saturating_add(self.max_age);
        (attempt < self.max_attempts && next <= deadline).then_some(next)
    }
}

#[cfg(test)]
mod tests {
    use deploy_core::testing::ts;

    use super::*;

    const S: RetrySchedule = RetrySchedule {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(10),
        max_attempts: 5,
        max_age: Duration::from_secs(60),
    };

    #[test]
    fn delays_double_up_to_the_cap_and_jitter_keeps_them_in_the_upper_half() {
        let full: Vec<u64> = (1..=6)
            .map(|n| S.delay(n, u16::MAX).as_millis() as u64)
            .collect();
        assert_eq!(full, [1_000, 2_000, 4_000, 8_000, 10_000, 10_000]);
        let low: Vec<u64> = (1..=6).map(|n| S.delay(n, 0).as_millis() as u64).collect();
        assert_eq!(low, [500, 1_000, 2_000, 4_000, 5_000, 5_000]);
        let mid = S.delay(3, u16::MAX / 2).as_millis();
        assert!((2_900..=3_100).contains(&mid), "{mid}");
    }

    #[test]
    fn deliveries_are_given_up_after_max_attempts_or_max_age() {
        assert_eq!(S.next(1, ts(0), ts(0), u16::MAX), Some(ts(1_000)));
        assert_eq!(S.next(4, ts(0), ts(0), u16::MAX), Some(ts(8_000)));
        assert_eq!(S.next(5, ts(0), ts(0), u16::MAX), None, "attempts");
        assert_eq!(S.next(1, ts(0), ts(59_000), u16::MAX), Some(ts(60_000)));
        assert_eq!(S.next(1, ts(0), ts(59_001), u16::MAX), None, "age");
    }

    fn check(s: RetrySchedule, expected: Result<(), &str>) {
        match (s.validate(), expected) {
            (Ok(()), Ok(())) => {}
            (Err(got), Err(want)) => assert!(got.contains(want), "{got}"),
            (got, want) => panic!("{s:?}: {got:?}, expected {want:?}"),
        }
    }

    #[test]
    fn the_schedule_is_validated_naming_the_bad_value() {
        check(RetrySchedule::default(), Ok(()));
        check(S, Ok(()));
        let ms = Duration::from_millis;
        check(
            RetrySchedule {
                initial: ms(5),
                ..S
            },
            Err("notify_backoff_initial_ms is 5;"),
        );
        check(
            RetrySchedule { max: ms(500), ..S },
            Err("notify_backoff_max_ms is 500;"),
        );
        check(
            RetrySchedule {
                max_attempts: 0,
                ..S
            },
            Err("notify_max_attempts is 0;"),
        );
        check(
            RetrySchedule {
                max_attempts: 101,
                ..S
            },
            Err("notify_max_attempts is 101;"),
        );
        check(
            RetrySchedule {
                max_age: ms(10),
                ..S
            },
            Err("notify_max_age_ms is 10;"),
        );
    }
}
