//! The webhook settings of deployd (`notify_*`): the POST timeout and the retry schedule, merged from file and flags and validated before anything starts.

use std::time::Duration;

use anyhow::bail;
use deploy_server::RetrySchedule;

/// The validated webhook settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifyConfig {
    /// Bound of one POST (connection included).
    pub timeout: Duration,
    pub retry: RetrySchedule,
}

/// The `notify_*` values as given (flag over file), each optional.
#[derive(Debug, Default, Clone, Copy)]
pub struct NotifySettings {
    pub timeout_ms: Option<u64>,
    pub backoff_initial_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    pub max_age_ms: Option<u64>,
}

/// Accepted POST timeouts, in ms.
const TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=60_000;

impl NotifyConfig {
    /// The settings over the defaults, checked; the error names the bad key and value.
    pub fn from_settings(s: NotifySettings) -> anyhow::Result<Self> {
        let default = RetrySchedule::default();
        let timeout_ms = s.timeout_ms.unwrap_or(10_000);
        if !TIMEOUT_MS_RANGE.contains(&timeout_ms) {
            bail!(
                "notify_timeout_ms is {timeout_ms}; expected {} to {}",
                TIMEOUT_MS_RANGE.start(),
                TIMEOUT_MS_RANGE.end()
            );
        }
        let retry = RetrySchedule {
            initial: s
                .backoff_initial_ms
                .map_or(default.initial, Duration::from_millis),
            max: s.backoff_max_ms.map_or(default.max, Duration::from_millis),
            max_attempts: s.max_attempts.unwrap_or(default.max_attempts),
            max_age: s.max_age_ms.map_or(default.max_age, Duration::from_millis),
        };
        retry.validate().map_err(anyhow::Error::msg)?;
        Ok(Self {
            timeout: Duration::from_millis(timeout_ms),
            retry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: NotifySettings, expected: Result<(), &str>) {
        match (NotifyConfig::from_settings(s), expected) {
            (Ok(_), Ok(())) => {}
            (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{e}"),
            (got, want) => panic!("{s:?}: {got:?}, expected {want:?}"),
        }
    }

    #[test]
    fn defaults_and_bounds_are_checked_naming_the_key() {
        let c = NotifyConfig::from_settings(NotifySettings::default()).unwrap();
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.retry, RetrySchedule::default());
        let fast = NotifySettings {
            timeout_ms: Some(500),
            backoff_initial_ms: Some(50),
            backoff_max_ms: Some(200),
            max_attempts: Some(4),
            max_age_ms: Some(60_000),
        };
        check(fast, Ok(()));
        check(
            NotifySettings {
                timeout_ms: Some(0),
                ..fast
            },
            Err("notify_timeout_ms is 0; expected 100 to 60000"),
        );
        check(
            NotifySettings {
                backoff_initial_ms: Some(1),
                ..fast
            },
            Err("notify_backoff_initial_ms is 1;"),
        );
        check(
            NotifySettings {
                backoff_max_ms: Some(10),
                ..fast
            },
            Err("notify_backoff_max_ms is 10;"),
        );
        check(
            NotifySettings {
                max_attempts: Some(0),
                ..fast
            },
            Err("notify_max_attempts is 0;"),
        );
        check(
            NotifySettings {
                max_age_ms: Some(5),
                ..fast
            },
            Err("notify_max_age_ms is 5;"),
        );
    }
}
