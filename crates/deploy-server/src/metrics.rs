//! `/metrics`: Prometheus text counters of HTTP responses and job/task transitions.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use deploy_engine::EngineEvent;
use tokio::sync::broadcast;

/// Process-wide counters, rendered in the Prometheus text format.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Responses by status class (1xx..5xx).
    responses: [AtomicU64; 5],
    /// (kind, status) -> transitions into that status.
    transitions: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl Metrics {
    pub(crate) fn record_response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        if let Some(c) = self.responses.get(class) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn record_transition(&self, event: &EngineEvent) {
        let kind = if event.task_id.is_some() {
            "task"
        } else {
            "job"
        };
        if let Ok(mut map) = self.transitions.lock() {
            *map.entry((kind, event.status)).or_default() += 1;
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
        out
    }
}
