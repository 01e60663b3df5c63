//! `deployctl jobs`, `logs` and `rollback`: list, show, cancel and follow jobs (`watch`, shared by `deploy --follow` and `promotions approve --follow`), read or stream a task's log, roll a job back.

use std::cell::RefCell;
use std::time::Instant;

use clap::Subcommand;
use deploy_api::{API_PREFIX, SSE_EVENT_END, SSE_EVENT_LOG};
use serde_json::{Value, json};

use crate::client::{self, Client};
use crate::exit::{CliError, DEPLOY_FAILED, ROLLED_BACK, SUCCESS};
use crate::output::{self, Output};
use crate::{progress, tail};

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List {
        /// Only jobs of this environment.
        #[arg(long)]
        env: Option<String>,
        /// Only jobs in this status (pending, running, completed, failed, rolled_back, ...).
        #[arg(long)]
        status: Option<String>,
        /// Page size (the server caps it).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Jobs older than this job id (the `next_before` of the previous page).
        #[arg(long)]
        before: Option<String>,
    },
    /// Show a job and its tasks.
    Show {
        /// The job's id.
        id: String,
    },
    /// Cancel a job.
    Cancel {
        /// The job's id.
        id: String,
    },
    /// Follow a job's events until it settles.
    Watch {
        id: String,
        /// Also print the tasks' log lines as they come (prefixed with `[target/component]`)
        /// and a summary per task at the end.
        #[arg(long)]
        logs: bool,
    },
}

pub async fn run(command: JobsCommand, client: &Client, out: Output) -> Result<u8, CliError> {
    let p = API_PREFIX;
    match command {
        JobsCommand::List {
            env,
            status,
            limit,
            before,
        } => {
            let mut query = format!("limit={limit}");
            for (key, value) in [("environment", env), ("status", status), ("before", before)] {
                if let Some(v) = value {
                    query.push_str(&format!("&{key}={}", client::segment(&v)));
                }
            }
            let v: Value = client.get(&format!("{p}/jobs?{query}")).await?;
            match out {
                Output::Json | Output::Yaml => output::object(out, &v, &[]),
                Output::Table => {
                    output::list(
                        out,
                        &v["jobs"],
                        &["id", "status", "environment_id", "release_id", "created_at"],
                    );
                    if let Some(next) = v["next_before"].as_str() {
                        output::line(&format!("more: --before {next}"));
                    }
                }
            }
        }
        JobsCommand::Show { id } => {
            let v: Value = client
                .get(&format!("{p}/jobs/{}", client::segment(&id)))
                .await?;
            match out {
                Output::Json | Output::Yaml => output::object(out, &v, &[]),
                Output::Table => {
                    output::object(
                        out,
                        &v,
                        &[
                            "id",
                            "status",
                            "release_id",
                            "environment_id",
                            "failure_reason",
                            "created_at",
                            "completed_at",
                        ],
                    );
                    output::line("");
                    output::list(
                        out,
                        &v["tasks"],
                        &["id", "wave", "status", "attempt_number", "digest", "error"],
                    );
                }
            }
        }
        JobsCommand::Cancel { id } => {
            let v: Value = client
                .post::<Value, Value>(&format!("{p}/jobs/{}/cancel", client::segment(&id)), None)
                .await?;
            output::object(out, &v, &["id", "status", "failure_reason"]);
        }
        JobsCommand::Watch { id, logs } => {
            return watch(client, out, &id, logs).await;
        }
    }
    Ok(SUCCESS)
}

/// `deployctl logs TASK [--after N] [--follow]`.
pub async fn logs(
    client: &Client,
    out: Output,
    task: &str,
    after: u64,
    follow: bool,
) -> Result<(), CliError> {
    let p = API_PREFIX;
    let task = client::segment(task);
    match follow {
        true => {
            // Streamed: each chunk as it is written; the server ends the stream once the task settled.
            client
                .follow(
                    &format!("{p}/tasks/{task}/logs/events?after={after}"),
                    |event| {
                        if event.event == SSE_EVENT_LOG {
                            let chunk: Value =
                                serde_json::from_str(&event.data).unwrap_or(Value::Null);
                            print_chunk(out, &chunk);
                        }
                        Ok(())
                    },
                )
                .await?;
        }
        false => {
            let mut after = after;
            // Bounded: 1000 pages of 500 chunks cover the store's 1000 chunks per task.
            for _ in 0..1000 {
                let page: Value = client
                    .get(&format!("{p}/tasks/{task}/logs?after={after}&limit=500"))
                    .await?;
                if out != Output::Table {
                    output::object(out, &page, &[]);
                } else if let Some(chunks) = page["chunks"].as_array() {
                    for c in chunks {
                        print_chunk(out, c);
                    }
                }
                match page["next_after"].as_u64() {
                    Some(n) => after = n,
                    None => break,
                }
            }
        }
    }
    Ok(())
}

/// `deployctl rollback JOB [--reason R] [--follow [--logs]]`.
pub async fn rollback(
    client: &Client,
    out: Output,
    job: &str,
    reason: &str,
    follow: bool,
    logs: bool,
) -> Result<u8, CliError> {
    let p = API_PREFIX;

    // The answer is the rollback job (its `rollback_of` is `job`).
    let v: Value = client
        .post(
            &format!("{p}/jobs/{}/rollback", client::segment(job)),
            Some(&json!({"reason": reason})),
        )
        .await?;
    if !follow {
        output::object(out, &v, &["id", "status", "rollback_of"]);
        return Ok(SUCCESS);
    }
    let rollback = v["id"].as_str().unwrap_or_default().to_owned();
    if out == Output::Table {
        output::line(&format!("rollback job {rollback} of job {job}"));
    }
    return watch(client, out, &rollback, logs).await;
}

/// One log chunk: its lines (table), or the chunk as one JSON line.
fn print_chunk(out: Output, chunk: &Value) {
    match out {
        Output::Json | Output::Yaml => output::line(&chunk.to_string()),
        Output::Table => output::line(
            chunk["content"]
                .as_str()
                .unwrap_or_default()
                .trim_end_matches('\n'),
        ),
    }
}

/// Follows a job's events, printing a line per transition (and with `logs` the tasks'
/// log lines and a final summary), and maps how it ended to the exit code.
pub(crate) async fn watch(
    client: &Client,
    out: Output,
    job: &str,
    logs: bool,
) -> Result<u8, CliError> {
    // A job id from the user: one path segment, whatever was typed.
    let job = &client::segment(job);
    let started = Instant::now();
    let last_status = RefCell::new(String::new());
    // Bars on a terminal; plain lines otherwise (their format is part of the CLI's contract).
    let bars = RefCell::new(None);
    if out == Output::Table && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        let doc: Value = client.get(&format!("{API_PREFIX}/jobs/{job}")).await?;
        *bars.borrow_mut() = Some(progress::Progress::new(&doc));
    }
    let events_path = format!("{API_PREFIX}/jobs/{job}/events");
    let follow = client.follow(&events_path, |event| {
        let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
        if event.event == SSE_EVENT_END {
            *last_status.borrow_mut() = data["status"].as_str().unwrap_or_default().to_owned();
        }
        match out {
            Output::Json | Output::Yaml => output::line(
                &json!({"event": event.event, "id": event.id, "data": data}).to_string(),
            ),
            Output::Table if event.event == SSE_EVENT_END => {}
            Output::Table => {
                if let Some(b) = bars.borrow_mut().as_mut() {
                    b.transition(&data);
                    return Ok(());
                }
                let elapsed = started.elapsed().as_secs_f64();
                let subject = match data["task_id"].as_str() {
                    Some(t) => format!("task {t}"),
                    None => "job".to_owned(),
                };
                output::line(&format!(
                    "[{elapsed:6.1}s] {subject}: {} -> {} ({})",
                    data["from_status"].as_str().unwrap_or("-"),
                    data["to_status"].as_str().unwrap_or("-"),
                    data["cause"].as_str().unwrap_or(""),
                ));
            }
        }
        Ok(())
    });
    let mut tail = None;
    if logs {
        let logs = tail::LogTail::new(client, job).await?;
        let print = |lines: Vec<tail::LogLine>| {
            for l in lines {
                match out {
                    Output::Json | Output::Yaml => output::line(
                        &json!({"event": "log", "task_id": l.task_id, "task": l.label,
                                "seq": l.seq, "line": l.line})
                        .to_string(),
                    ),
                    Output::Table => {
                        let text = format!("[{}] {}", l.label, l.line);
                        match bars.borrow().as_ref() {
                            Some(b) => b.println(&text),
                            None => output::line(&text),
                        }
                    }
                }
            }
        };
        // Both streams to their `end`: the log stream's comes once the job settled and
        // every line written before was sent, so nothing written before the end is missed.
        tokio::try_join!(follow, logs.follow(client, print))?;
        tail = Some(logs);
    } else {
        follow.await?;
    }
    if let Some(b) = bars.borrow().as_ref() {
        b.finish();
    }
    if let Some(logs) = tail {
        let rows = logs.summary(client).await?;
        match out {
            Output::Json | Output::Yaml => {
                output::line(&json!({"event": "summary", "tasks": rows}).to_string());
            }
            Output::Table => {
                output::line("summary:");
                output::list(
                    out,
                    &Value::Array(rows),
                    &["task", "status", "attempts", "duration", "error"],
                );
            }
        }
    }
    let last_status = last_status.into_inner();
    if out == Output::Table {
        output::line(&format!(
            "job {job} ended {}",
            if last_status.is_empty() {
                "without a final status"
            } else {
                &last_status
            }
        ));
    }
    // The status as deploy-core spells it; anything else (no end event) is a failure.
    Ok(match deploy_core::JobStatus::parse(&last_status) {
        Some(deploy_core::JobStatus::Completed) => SUCCESS,
        Some(deploy_core::JobStatus::RolledBack) => ROLLED_BACK,
        _ => DEPLOY_FAILED,
    })
}
