//! Fixtures the fault scenarios share: a bounded wait for a job to settle.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::deployd_proc::ok_json;

/// The job statuses that end a job (`JobStatus::is_terminal`).
pub(super) const TERMINAL: [&str; 5] = [
    "completed",
    "failed",
    "rolled_back",
    "rollback_failed",
    "cancelled",
];

/// Waits until `job` is terminal, polling `jobs show` every 200 ms, and panics
/// after `limit`; returns its last `jobs show`.
pub(super) fn wait_terminal(addr: &str, job: &str, limit: Duration) -> Value {
    let started = Instant::now();
    loop {
        let shown = ok_json(addr, &["jobs", "show", job]);
        if TERMINAL.contains(&shown["status"].as_str().unwrap_or("")) {
            return shown;
        }
        assert!(
            started.elapsed() < limit,
            "job {job} not terminal after {limit:?}: {shown:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
