//! Live progress on a terminal (indicatif): a line for the job and one per task with its state, last cause and elapsed time.

use std::collections::HashMap;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

/// Spinners drawn on stdout, one per job and task.
pub struct Progress {
    multi: MultiProgress,
    job: ProgressBar,
    tasks: HashMap<String, ProgressBar>,
    style: ProgressStyle,
}

impl Progress {
    pub fn new(job: &str) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let style = ProgressStyle::with_template("{spinner} [{elapsed:>4}] {prefix:.bold} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bar = multi.add(ProgressBar::new_spinner());
        bar.set_style(style.clone());
        bar.set_prefix(format!("job {job}"));
        bar.enable_steady_tick(Duration::from_millis(120));
        Self {
            multi,
            job: bar,
            tasks: HashMap::new(),
            style,
        }
    }

    /// Shows one transition (`JobEventDto` as JSON).
    pub fn transition(&mut self, data: &Value) {
        let status = data["to_status"].as_str().unwrap_or("-");
        let message = format!("{status}  {}", data["cause"].as_str().unwrap_or(""));
        let bar = match data["task_id"].as_str() {
            None => &self.job,
            Some(task) => self.tasks.entry(task.to_owned()).or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(self.style.clone());
                bar.set_prefix(format!("task {task}"));
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            }),
        };
        if matches!(status, "succeeded" | "completed" | "failed" | "rolled_back") {
            bar.finish_with_message(message);
        } else {
            bar.set_message(message);
        }
    }

    /// Stops every spinner, leaving the last state on screen.
    pub fn finish(&self) {
        for bar in self.tasks.values().chain([&self.job]) {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }
}
