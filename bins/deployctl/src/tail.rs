//! `--logs` while following a job: new log lines of every task of the job, prefixed with `target/component`, and the final per-task summary.
//!
//! The lines come from the paged log route (`GET /tasks/{id}/logs?after=`),
//! read for every task once a second while the job's event stream is followed
//! and once more after it ended, so nothing written before the end is missed.
//! (`deployctl logs <task> --follow` streams one task over SSE instead.)

use std::collections::BTreeMap;

use deploy_api::API_PREFIX;
use serde_json::{Value, json};

use crate::client::Client;
use crate::exit::CliError;

/// One task's place in the log and how it is named.
#[derive(Debug)]
struct TaskTail {
    label: String,
    after: u64,
}

/// A new log line of a task.
#[derive(Debug, PartialEq, Eq)]
pub struct LogLine {
    pub task_id: String,
    pub label: String,
    pub seq: u64,
    pub line: String,
}

/// The log positions of every task of one job.
#[derive(Debug)]
pub struct LogTail {
    job: String,
    /// By task id, in the job's task order.
    tasks: BTreeMap<String, TaskTail>,
    order: Vec<String>,
}

impl LogTail {
    /// Reads the job, its environment's targets and its release to name each task `target/component`.
    pub async fn new(client: &Client, job: &str) -> Result<Self, CliError> {
        let p = API_PREFIX;
        let doc: Value = client.get(&format!("{p}/jobs/{job}")).await?;
        let env = doc["environment_id"].as_str().unwrap_or_default();
        let release = doc["release_id"].as_str().unwrap_or_default();
        let targets: Value = client
            .get(&format!("{p}/environments/{env}/targets"))
            .await?;
        let release: Value = client.get(&format!("{p}/releases/{release}")).await?;
        Ok(Self::from_documents(job, &doc, &targets, &release))
    }

    fn from_documents(job: &str, doc: &Value, targets: &Value, release: &Value) -> Self {
        let name_of = |list: &Value, id: &Value| {
            list.as_array()
                .into_iter()
                .flatten()
                .find(|item| item["id"] == *id)
                .and_then(|item| item["name"].as_str())
                .map(str::to_owned)
        };
        let mut tasks = BTreeMap::new();
        let mut order = Vec::new();
        for task in doc["tasks"].as_array().into_iter().flatten() {
            let id = task["id"].as_str().unwrap_or_default().to_owned();
            let target = name_of(targets, &task["target_id"])
                .unwrap_or_else(|| task["target_id"].as_str().unwrap_or("-").to_owned());
            let label = match name_of(&release["components"], &task["component_id"]) {
                Some(component) => format!("{target}/{component}"),
                None => target,
            };
            order.push(id.clone());
            tasks.insert(id, TaskTail { label, after: 0 });
        }
        Self {
            job: job.to_owned(),
            tasks,
            order,
        }
    }

    /// The lines written since the last call, task by task. A failed read is
    /// skipped (the next call reads from the same place).
    pub async fn poll(&mut self, client: &Client) -> Vec<LogLine> {
        let mut lines = Vec::new();
        for id in &self.order {
            let Some(tail) = self.tasks.get_mut(id) else {
                continue;
            };
            // Bounded: 1000 pages of 500 cover the store's 1000 chunks per task.
            for _ in 0..1000 {
                let page: Result<Value, _> = client
                    .get(&format!(
                        "{API_PREFIX}/tasks/{id}/logs?after={}&limit=500",
                        tail.after
                    ))
                    .await;
                let Ok(page) = page else { break };
                for chunk in page["chunks"].as_array().into_iter().flatten() {
                    let seq = chunk["seq"].as_u64().unwrap_or(tail.after);
                    tail.after = tail.after.max(seq);
                    let content = chunk["content"].as_str().unwrap_or_default();
                    for line in content.trim_end_matches('\n').split('\n') {
                        lines.push(LogLine {
                            task_id: id.clone(),
                            label: tail.label.clone(),
                            seq,
                            line: line.trim_end_matches('\r').to_owned(),
                        });
                    }
                }
                if page["next_after"].as_u64().is_none() {
                    break;
                }
            }
        }
        lines
    }

    /// Per task: its name, status, attempts and duration, from the job as it is now.
    pub async fn summary(&self, client: &Client) -> Result<Vec<Value>, CliError> {
        let doc: Value = client
            .get(&format!("{API_PREFIX}/jobs/{}", self.job))
            .await?;
        Ok(self.summary_of(&doc))
    }

    fn summary_of(&self, doc: &Value) -> Vec<Value> {
        let millis = |v: &Value| {
            v.as_str()
                .and_then(|s| deploy_core::Timestamp::parse(s).ok())
                .map(|t| t.unix_millis())
        };
        doc["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|task| {
                let id = task["id"].as_str().unwrap_or_default();
                let label = self.tasks.get(id).map_or("-", |t| t.label.as_str());
                let duration = match (millis(&task["started_at"]), millis(&task["completed_at"])) {
                    (Some(start), Some(end)) => {
                        format!("{:.1}s", end.saturating_sub(start) as f64 / 1000.0)
                    }
                    _ => "-".to_owned(),
                };
                json!({
                    "task": label,
                    "task_id": id,
                    "status": task["status"],
                    "attempts": format!(
                        "{}/{}",
                        task["attempt_number"].as_u64().unwrap_or(0),
                        task["max_attempts"].as_u64().unwrap_or(0)
                    ),
                    "duration": duration,
                    "error": task["error"],
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_named_target_slash_component_and_summarised() {
        let doc = json!({"id": "j", "tasks": [
            {"id": "t1", "target_id": "tg1", "component_id": "c1", "status": "succeeded",
             "attempt_number": 1, "max_attempts": 3,
             "started_at": "2026-01-01T00:00:00.000Z", "completed_at": "2026-01-01T00:00:12.300Z"},
            {"id": "t2", "target_id": "tg2", "component_id": null, "status": "failed",
             "attempt_number": 2, "max_attempts": 2, "started_at": "2026-01-01T00:00:00.000Z",
             "completed_at": null, "error": "boom"},
        ]});
        let targets = json!([{"id": "tg1", "name": "host-1"}, {"id": "tg2", "name": "host-2"}]);
        let release = json!({"components": [{"id": "c1", "name": "web"}]});
        let tail = LogTail::from_documents("j", &doc, &targets, &release);
        assert_eq!(tail.tasks["t1"].label, "host-1/web");
        assert_eq!(
            tail.tasks["t2"].label, "host-2",
            "a compose task has no component"
        );
        let rows = tail.summary_of(&doc);
        assert_eq!(
            rows[0],
            json!({"task": "host-1/web", "task_id": "t1", "status": "succeeded",
                   "attempts": "1/3", "duration": "12.3s", "error": null})
        );
        assert_eq!(rows[1]["attempts"], "2/2");
        assert_eq!(rows[1]["duration"], "-");
        assert_eq!(rows[1]["error"], "boom");
    }
}
