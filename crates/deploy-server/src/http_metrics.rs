//! Per-route HTTP latency histograms (`deployd_http_request_duration_seconds` by method, route template and status class) and the process metrics read from `/proc/self` (Linux only; left out elsewhere).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the request latency buckets; `+Inf` follows.
pub(crate) const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `route` label of a request that matched no route: paths never become labels.
pub(crate) const UNMATCHED_ROUTE: &str = "unmatched";

/// Methods kept as the `method` label; any other is `other`.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// A histogram over [`LATENCY_BUCKETS`].
#[derive(Debug, Default, Clone)]
struct Latency {
    /// Per bucket (not cumulative); the last counts `+Inf`.
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Latency {
    fn observe(&mut self, seconds: f64) {
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        if let Some(b) = self.buckets.get_mut(i) {
            *b += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }
}

/// (method, route template, status class) -> latency. Routes are templates and
/// methods a closed set, so the series are bounded by the router.
#[derive(Debug, Default)]
pub(crate) struct HttpLatency {
    series: Mutex<BTreeMap<(&'static str, String, &'static str), Latency>>,
}

impl HttpLatency {
    /// Records one request's time to its response head.
    pub(crate) fn observe(&self, method: &str, route: &str, status: u16, took: Duration) {
        let method = METHODS
            .into_iter()
            .find(|m| *m == method)
            .unwrap_or("other");
        let class = match status / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        };
        if let Ok(mut series) = self.series.lock() {
            series
                .entry((method, route.to_owned(), class))
                .or_default()
                .observe(took.as_secs_f64());
        }
    }

    /// The histogram in the Prometheus text format.
    pub(crate) fn render(&self, out: &mut String) {
        out.push_str("# HELP deployd_http_request_duration_seconds Time from a request to its response head, by method, route template and status class (a server-sent event stream: until it starts).\n");
        out.push_str("# TYPE deployd_http_request_duration_seconds histogram\n");
        let Ok(series) = self.series.lock() else {
            return;
        };
        for ((method, route, class), h) in series.iter() {
            let labels = format!(
                "method=\"{method}\",route=\"{}\",status=\"{class}\"",
                crate::metrics::label_value(route)
            );
            let mut cumulative = 0;
            for (i, n) in h.buckets.iter().enumerate() {
                cumulative += n;
                let le = LATENCY_BUCKETS
                    .get(i)
                    .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
                let _ = writeln!(
                    out,
                    "deployd_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "deployd_http_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "deployd_http_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
    }
}

/// `USER_HZ`: the unit of the CPU times in `/proc/self/stat`, 100 on every Linux
/// architecture deployd builds for (the kernel's user-space ABI fixes it).
const USER_HZ: f64 = 100.0;

/// The standard process metrics (`process_resident_memory_bytes`,
/// `process_open_fds`, `process_cpu_seconds_total`) from `/proc/self`; each one that
/// cannot be read (not Linux) is left out.
pub(crate) fn render_process(out: &mut String) {
    if let Some(bytes) = resident_bytes() {
        out.push_str("# HELP process_resident_memory_bytes Resident memory size in bytes.\n");
        out.push_str("# TYPE process_resident_memory_bytes gauge\n");
        let _ = writeln!(out, "process_resident_memory_bytes {bytes}");
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        out.push_str("# HELP process_open_fds Number of open file descriptors.\n");
        out.push_str("# TYPE process_open_fds gauge\n");
        let _ = writeln!(out, "process_open_fds {}", fds.count());
    }
    if let Some(seconds) = cpu_seconds() {
        out.push_str(
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n",
        );
        out.push_str("# TYPE process_cpu_seconds_total counter\n");
        let _ = writeln!(out, "process_cpu_seconds_total {seconds}");
    }
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `utime + stime` of `/proc/self/stat`, in seconds.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count the
    // fields after its closing one, which starts at field 3 (the state).
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // Clock ticks stay far below 2^52: the conversion is exact.
    Some((utime + stime) as f64 / USER_HZ)
}
