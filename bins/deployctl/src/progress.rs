//! Live progress on a terminal (indicatif): a line for the job, a bar per wave (its settled tasks) and under it a line per task with its state, attempt and elapsed time.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

/// One task's line.
struct TaskLine {
    bar: ProgressBar,
    wave: u64,
    attempt: u64,
    max_attempts: u64,
    settled: bool,
}

/// Bars drawn on stdout: the job, each wave, each task.
pub struct Progress {
    job: ProgressBar,
    waves: BTreeMap<u64, ProgressBar>,
    tasks: HashMap<String, TaskLine>,
    /// Kept so the bars stay drawn together.
    multi: MultiProgress,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

/// `…` and the last 8 characters of an id.
fn short(id: &str) -> String {
    let tail: String = id
        .chars()
        .rev()
        .take(8)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}

impl Progress {
    /// Bars for `job` (the job's JSON, with its tasks) on stdout.
    pub fn new(job: &Value) -> Self {
        Self::with_target(job, ProgressDrawTarget::stdout())
    }

    pub fn with_target(job: &Value, target: ProgressDrawTarget) -> Self {
        let multi = MultiProgress::with_draw_target(target);
        let spinner = style("{spinner} [{elapsed:>4}] {prefix:.bold} {msg}");
        let wave_style =
            style("  [{elapsed:>4}] {prefix:.bold} [{bar:30.cyan/blue}] {pos}/{len} {msg}");
        let task_style = style("    {spinner} [{elapsed:>4}] {prefix} {msg}");
        let job_bar = multi.add(ProgressBar::new_spinner());
        job_bar.set_style(spinner);
        job_bar.set_prefix(format!("job {}", job["id"].as_str().unwrap_or("-")));
        job_bar.set_message(job["status"].as_str().unwrap_or("-").to_owned());
        job_bar.enable_steady_tick(Duration::from_millis(120));
        let mut by_wave: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
        for task in job["tasks"].as_array().into_iter().flatten() {
            by_wave
                .entry(task["wave"].as_u64().unwrap_or(0))
                .or_default()
                .push(task);
        }
        let mut waves = BTreeMap::new();
        let mut tasks = HashMap::new();
        for (wave, members) in by_wave {
            let bar = multi.add(ProgressBar::new(members.len() as u64));
            bar.set_style(wave_style.clone());
            bar.set_prefix(format!("wave {wave}"));
            for task in members {
                let id = task["id"].as_str().unwrap_or_default().to_owned();
                let line = multi.add(ProgressBar::new_spinner());
                line.set_style(task_style.clone());
                line.set_prefix(format!("task {}", short(&id)));
                line.enable_steady_tick(Duration::from_millis(120));
                let mut t = TaskLine {
                    bar: line,
                    wave,
                    attempt: task["attempt_number"].as_u64().unwrap_or(0),
                    max_attempts: task["max_attempts"].as_u64().unwrap_or(0),
                    settled: false,
                };
                let status = task["status"].as_str().unwrap_or("-");
                t.bar.set_message(t.message(status, ""));
                if status == "succeeded" {
                    t.settled = true;
                    t.bar.finish();
                    bar.inc(1);
                }
                tasks.insert(id, t);
            }
            waves.insert(wave, bar);
        }
        Self {
            job: job_bar,
            waves,
            tasks,
            multi,
        }
    }

    /// Shows one transition (`JobEventDto` as JSON).
    pub fn transition(&mut self, data: &Value) {
        let status = data["to_status"].as_str().unwrap_or("-");
        let event = data["event"].as_str().unwrap_or("");
        let cause = data["cause"].as_str().unwrap_or("");
        let Some(task) = data["task_id"].as_str() else {
            self.job.set_message(format!("{status}  {cause}"));
            if matches!(status, "completed" | "failed" | "rolled_back") {
                self.job.finish();
            }
            return;
        };
        let Some(line) = self.tasks.get_mut(task) else {
            return;
        };
        if event == "dispatch" {
            line.attempt += 1;
        }
        line.bar.set_message(line.message(status, cause));
        let settled = match event {
            "succeed" | "fail_permanent" | "cancel" => true,
            // A retryable failure with no attempt left is final too.
            "fail_retryable" => line.attempt >= line.max_attempts && line.max_attempts > 0,
            _ => false,
        };
        if settled && !line.settled {
            line.settled = true;
            line.bar.finish();
            if let Some(wave) = self.waves.get(&line.wave) {
                wave.inc(1);
                if wave.position() >= wave.length().unwrap_or(0) {
                    wave.finish();
                }
            }
        }
    }

    /// Prints a line above the bars (a streamed log line).
    pub fn println(&self, line: &str) {
        let _ = self.multi.println(line);
    }

    /// Stops every bar, leaving the last state on screen.
    pub fn finish(&self) {
        let lines = self.tasks.values().map(|t| &t.bar);
        for bar in lines.chain(self.waves.values()).chain([&self.job]) {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }

    #[cfg(test)]
    fn wave(&self, wave: u64) -> (u64, Option<u64>, bool) {
        let bar = &self.waves[&wave];
        (bar.position(), bar.length(), bar.is_finished())
    }

    #[cfg(test)]
    fn task(&self, id: &str) -> String {
        self.tasks[id].bar.message()
    }
}

impl TaskLine {
    fn message(&self, status: &str, cause: &str) -> String {
        let attempt = if self.max_attempts > 0 {
            format!("attempt {}/{}", self.attempt, self.max_attempts)
        } else {
            format!("attempt {}", self.attempt)
        };
        if cause.is_empty() {
            format!("{status}  {attempt}")
        } else {
            format!("{status}  {attempt}  {cause}")
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn task(id: &str, wave: u64) -> Value {
        json!({"id": id, "wave": wave, "status": "pending", "attempt_number": 0, "max_attempts": 2})
    }

    fn event(task: &str, event: &str, to: &str) -> Value {
        json!({"task_id": task, "event": event, "to_status": to, "cause": format!("{event} it")})
    }

    #[test]
    fn wave_bars_count_settled_tasks_and_lines_show_state_and_attempt() {
        let job = json!({"id": "j1", "status": "running",
                         "tasks": [task("t-a", 0), task("t-b", 0), task("t-c", 1)]});
        let mut p = Progress::with_target(&job, ProgressDrawTarget::hidden());
        assert_eq!(p.wave(0), (0, Some(2), false));
        assert_eq!(p.wave(1), (0, Some(1), false));
        for e in [
            event("t-a", "dispatch", "dispatched"),
            event("t-a", "start", "running"),
            event("t-a", "succeed", "succeeded"),
            event("t-b", "dispatch", "dispatched"),
            event("t-b", "fail_retryable", "failed"),
        ] {
            p.transition(&e);
        }
        assert_eq!(p.wave(0), (1, Some(2), false));
        assert_eq!(p.task("t-a"), "succeeded  attempt 1/2  succeed it");
        assert_eq!(p.task("t-b"), "failed  attempt 1/2  fail_retryable it");
        // The second attempt fails too: no attempt left, the wave is done.
        p.transition(&event("t-b", "dispatch", "dispatched"));
        p.transition(&event("t-b", "fail_retryable", "failed"));
        assert_eq!(p.wave(0), (2, Some(2), true));
        assert_eq!(p.task("t-b"), "failed  attempt 2/2  fail_retryable it");
        p.transition(&event("t-c", "cancel", "failed"));
        assert_eq!(p.wave(1), (1, Some(1), true));
        p.transition(&json!({"task_id": null, "to_status": "failed", "cause": "c"}));
        p.finish();
        assert!(p.job.is_finished());
    }
}
