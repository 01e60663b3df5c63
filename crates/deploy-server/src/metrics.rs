//! `/metrics`: Prometheus text: HTTP responses, job/task transitions, task attempt durations (histogram by outcome) and executor errors by class, all from the engine's events.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use deploy_core::{TaskId, Timestamp};
use deploy_engine::EngineEvent;
use tokio::sync::broadcast;

/// Upper bounds (seconds) of the task duration buckets; `+Inf` follows.
pub(crate) const DURATION_BUCKETS: [f64; 11] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];
/// How a task attempt ended, as the `outcome` label.
const OUTCOMES: [&str; 4] = [
    "succeeded",
    "failed_retryable",
    "failed_permanent",
    "cancelled",
];
/// Executor error classes, as the `class` label.
const CLASSES: [&str; 2] = ["retryable", "permanent"];
/// Most attempts timed at once; past it the oldest starts are forgotten (a lost start only skips one observation).
const MAX_TIMED_ATTEMPTS: usize = 100_000;

/// A Prometheus histogram over [`DURATION_BUCKETS`].
#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Per bucket (not cumulative); the last counts `+Inf`.
    buckets: [u64; DURATION_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        let i = DURATION_BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(DURATION_BUCKETS.len());
        if let Some(b) = self.buckets.get_mut(i) {
            *b += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }
}

/// What the engine's task events tell about attempts.
#[derive(Debug, Default)]
struct Tasks {
    /// When each in-flight attempt was dispatched.
    started: HashMap<TaskId, Timestamp>,
    /// Outcome -> durations of attempts.
    durations: BTreeMap<&'static str, Histogram>,
    /// Class -> failed attempts.
    errors: BTreeMap<&'static str, u64>,
}

/// Process-wide counters, rendered in the Prometheus text format.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Responses by status class (1xx..5xx).
    responses: [AtomicU64; 5],
    /// (kind, status) -> transitions into that status.
    transitions: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    tasks: Mutex<Tasks>,
    /// Request latencies by method, route template and status class.
    pub(crate) http: crate::http_metrics::HttpLatency,
}

impl Metrics {
    pub(crate) fn record_response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        if let Some(c) = self.responses.get(class) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn record_transition(&self, event: &EngineEvent) {
        let kind = if event.task_id.is_some() {
            "task"
        } else {
            "job"
        };
        if let Ok(mut map) = self.transitions.lock() {
            *map.entry((kind, event.status)).or_default() += 1;
        }
        if let Some(task) = event.task_id {
            self.record_task(task, event);
        }
    }

    /// Times attempts from `dispatch` to their end, and counts failures by class.
    fn record_task(&self, task: TaskId, event: &EngineEvent) {
        let Ok(mut tasks) = self.tasks.lock() else {
            return;
        };
        let (outcome, class) = match event.event {
            "dispatch" => {
                if tasks.started.len() >= MAX_TIMED_ATTEMPTS {
                    tasks.started.clear();
                }
                tasks.started.insert(task, event.at);
                return;
            }
            "succeed" => ("succeeded", None),
            "fail_retryable" => ("failed_retryable", Some("retryable")),
            "fail_permanent" => ("failed_permanent", Some("permanent")),
            "cancel" => ("cancelled", None),
            _ => return,
        };
        if let Some(class) = class {
            *tasks.errors.entry(class).or_default() += 1;
        }
        if let Some(started) = tasks.started.remove(&task) {
            let seconds = event.at.duration_since(started).as_secs_f64();
            tasks.durations.entry(outcome).or_default().observe(seconds);
        }
    }

    /// Counts the engine's transitions until the engine is dropped.
    pub(crate) fn watch(self: &std::sync::Arc<Self>, mut events: broadcast::Receiver<EngineEvent>) {
        let metrics = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => match metrics.upgrade() {
                        Some(m) => m.record_transition(&event),
                        None => break,
                    },
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP deployd_http_responses_total HTTP responses by status class.\n");
        out.push_str("# TYPE deployd_http_responses_total counter\n");
        for (i, c) in self.responses.iter().enumerate() {
            let _ = writeln!(
                out,
                "deployd_http_responses_total{{class=\"{}xx\"}} {}",
                i + 1,
                c.load(Ordering::Relaxed)
            );
        }
        out.push_str(
            "# HELP deployd_transitions_total Job and task transitions by resulting status.\n",
        );
        out.push_str("# TYPE deployd_transitions_total counter\n");
        if let Ok(map) = self.transitions.lock() {
            for ((kind, status), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "deployd_transitions_total{{kind=\"{kind}\",status=\"{status}\"}} {n}"
                );
            }
        }
        if let Ok(tasks) = self.tasks.lock() {
            render_tasks(&mut out, &tasks);
        }
        self.http.render(&mut out);
        crate::http_metrics::render_process(&mut out);
        out
    }
}

fn render_tasks(out: &mut String, tasks: &Tasks) {
    out.push_str("# HELP deployd_task_duration_seconds Duration of task attempts, from dispatch to their end, by outcome.\n");
    out.push_str("# TYPE deployd_task_duration_seconds histogram\n");
    let empty = Histogram::default();
    for outcome in OUTCOMES {
        let h = tasks.durations.get(outcome).unwrap_or(&empty);
        let mut cumulative = 0;
        for (i, n) in h.buckets.iter().enumerate() {
            cumulative += n;
            let le = DURATION_BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(
                out,
                "deployd_task_duration_seconds_bucket{{outcome=\"{outcome}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "deployd_task_duration_seconds_sum{{outcome=\"{outcome}\"}} {}",
            h.sum
        );
        let _ = writeln!(
            out,
            "deployd_task_duration_seconds_count{{outcome=\"{outcome}\"}} {}",
            h.count
        );
    }
    out.push_str("# HELP deployd_executor_errors_total Failed task attempts by error class (retryable: will be retried; permanent: config or credentials must change).\n");
    out.push_str("# TYPE deployd_executor_errors_total counter\n");
    for class in CLASSES {
        let _ = writeln!(
            out,
            "deployd_executor_errors_total{{class=\"{class}\"}} {}",
            tasks.errors.get(class).copied().unwrap_or(0)
        );
    }
}

/// `deployd_build_info{version,commit} 1`: the Prometheus convention for what a
/// process was built from (join on it to label other series by version).
pub(crate) fn render_build_info(out: &mut String, build: &crate::config::BuildInfo) {
    out.push_str("# HELP deployd_build_info The version and git commit deployd was built from.\n");
    out.push_str("# TYPE deployd_build_info gauge\n");
    let _ = writeln!(
        out,
        "deployd_build_info{{version=\"{}\",commit=\"{}\"}} 1",
        label_value(&build.version),
        label_value(&build.commit)
    );
}

/// A label value escaped as the text format wants (`\\`, `\"`, `\n`).
pub(crate) fn label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
