//! Time and randomness for the engine: the one place that reads the wall clock, behind the `Clock` the embedder passes in.

use deploy_core::Timestamp;

/// The source of "now" (deploy-core takes time as an argument; this is where it comes
/// from). deployd and the server pass [`SystemClock`]; the engine's tests run on it
/// too, since their timing is set by configuration (backoff, timeouts), not by dates.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        // Only a clock beyond the year 9999 fails here.
        Timestamp::from_unix_millis(millis).unwrap_or(Timestamp::UNIX_EPOCH)
    }
}

/// Ten random bytes for a UUID v7 (from the OS random source, through uuid's v4 generator).
pub fn random_bytes() -> [u8; 10] {
    let v4 = uuid::Uuid::new_v4();
    let mut out = [0u8; 10];
    out.copy_from_slice(&v4.as_bytes()[..10]);
    out
}
