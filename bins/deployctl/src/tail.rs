//! `--logs` while following a job: the log lines of every task of the job from one stream, prefixed with `target/component`, and the final per-task summary.
//!
//! The lines come from the job's log stream (`GET /jobs/{id}/logs/events`): one SSE
//! connection for all the tasks, whatever their number, followed with
//! [`Client::follow`] (resumed with `Last-Event-ID` after a broken connection, so no
//! line is lost or repeated) beside the job's event stream. It ends with its own
//! `end`, which the server sends once the job settled and every chunk written before
//! was sent. (`deployctl logs <task> --follow` streams one task.)

use std::collections::HashMap;

use deploy_api::{API_PREFIX, JobLogChunkDto, SSE_EVENT_LOG};
use serde_json::{Value, json};

use crate::client::{Client, SseEvent};
use crate::exit::{CliError, UNREACHABLE};

/// A log line of a task.
#[derive(Debug, PartialEq, Eq)]
pub struct LogLine {
    pub task_id: String,
    pub label: String,
    pub seq: u64,
    pub line: String,
}

/// The names of the tasks of one job, for its log lines and summary.
#[derive(Debug)]
pub struct LogTail {
    job: String,
    /// `target/component` (or `target` for a compose task), by task id.
    labels: HashMap<String, String>,
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
        let mut labels = HashMap::new();
        for task in doc["tasks"].as_array().into_iter().flatten() {
            let id = task["id"].as_str().unwrap_or_default().to_owned();
            let target = name_of(targets, &task["target_id"])
                .unwrap_or_else(|| task["target_id"].as_str().unwrap_or("-").to_owned());
            let label = match name_of(&release["components"], &task["component_id"]) {
                Some(component) => format!("{target}/{component}"),
                None => target,
            };
            labels.insert(id, label);
        }
        Self {
            job: job.to_owned(),
            labels,
        }
    }

    /// Follows the job's log stream to its `end`, handing the lines of each chunk to
    /// `print` as they arrive.
    pub async fn follow(
        &self,
        client: &Client,
        mut print: impl FnMut(Vec<LogLine>),
    ) -> Result<(), CliError> {
        let path = format!("{API_PREFIX}/jobs/{}/logs/events", self.job);
        client
            .follow(&path, |event| {
                print(self.lines(&event)?);
                Ok(())
            })
            .await
    }

    /// The lines of one event of the job's log stream (none for `end`).
    fn lines(&self, event: &SseEvent) -> Result<Vec<LogLine>, CliError> {
        if event.event != SSE_EVENT_LOG {
            return Ok(Vec::new());
        }
        let chunk: JobLogChunkDto = serde_json::from_str(&event.data).map_err(|e| {
            CliError::new(
                UNREACHABLE,
                format!(
                    "unexpected log event from the server (id {}): {e}",
                    event.id.as_deref().unwrap_or("-")
                ),
            )
        })?;
        let task_id = chunk.task_id.to_string();
        let label = self
            .labels
            .get(&task_id)
            .cloned()
            .unwrap_or_else(|| task_id.clone());
        Ok(chunk
            .content
            .trim_end_matches('\n')
            .split('\n')
            .map(|line| LogLine {
                task_id: task_id.clone(),
                label: label.clone(),
                seq: chunk.seq,
                line: line.trim_end_matches('\r').to_owned(),
            })
            .collect())
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
                let label = self.labels.get(id).map_or("-", String::as_str);
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

    const T1: &str = "019a0000-0000-7000-8000-000000000001";
    const T2: &str = "019a0000-0000-7000-8000-000000000002";

    fn tail() -> (LogTail, Value) {
        let doc = json!({"id": "j", "tasks": [
            {"id": T1, "target_id": "tg1", "component_id": "c1", "status": "succeeded",
             "attempt_number": 1, "max_attempts": 3,
             "started_at": "2026-01-01T00:00:00.000Z", "completed_at": "2026-01-01T00:00:12.300Z"},
            {"id": T2, "target_id": "tg2", "component_id": null, "status": "failed",
             "attempt_number": 2, "max_attempts": 2, "started_at": "2026-01-01T00:00:00.000Z",
             "completed_at": null, "error": "boom"},
        ]});
        let targets = json!([{"id": "tg1", "name": "host-1"}, {"id": "tg2", "name": "host-2"}]);
        let release = json!({"components": [{"id": "c1", "name": "web"}]});
        (LogTail::from_documents("j", &doc, &targets, &release), doc)
    }

    fn event(event: &str, data: &str) -> SseEvent {
        SseEvent {
            id: Some("7".to_owned()),
            event: event.to_owned(),
            data: data.to_owned(),
        }
    }

    #[test]
    fn tasks_are_named_target_slash_component_and_summarised() {
        let (tail, doc) = tail();
        assert_eq!(tail.labels[T1], "host-1/web");
        assert_eq!(tail.labels[T2], "host-2", "a compose task has no component");
        let rows = tail.summary_of(&doc);
        assert_eq!(
            rows[0],
            json!({"task": "host-1/web", "task_id": T1, "status": "succeeded",
                   "attempts": "1/3", "duration": "12.3s", "error": null})
        );
        assert_eq!(rows[1]["attempts"], "2/2");
        assert_eq!(rows[1]["duration"], "-");
        assert_eq!(rows[1]["error"], "boom");
    }

    #[test]
    fn a_chunk_becomes_one_labelled_line_per_line() {
        let (tail, _) = tail();
        let data = json!({"task_id": T2, "seq": 4, "at": "2026-01-01T00:00:01.000Z",
                          "content": "pulling\r\nstarted\n"});
        let lines = tail.lines(&event("log", &data.to_string())).unwrap();
        let line = |text: &str| LogLine {
            task_id: T2.to_owned(),
            label: "host-2".to_owned(),
            seq: 4,
            line: text.to_owned(),
        };
        assert_eq!(lines, [line("pulling"), line("started")]);
        let end = event("end", r#"{"job_id":"j","status":"completed"}"#);
        assert_eq!(tail.lines(&end).unwrap(), []);
        let err = tail.lines(&event("log", "{}")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("unexpected log event from the server (id 7): missing field"),
            "{err}"
        );
    }
}
