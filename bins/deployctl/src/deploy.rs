//! `deployctl deploy`'s job settings (strategy, parallelism, attempts, failure policy, compose template) as the approve request body.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::exit::{CliError, USAGE};
use crate::plan;

/// The job settings of `deployctl deploy` and `promotions approve`, as given on the command line.
#[derive(Debug, Default, clap::Args)]
pub struct JobSettings {
    /// `all-at-once` (the server's default), `blue-green`, `rolling:<batch>` or `canary:<canary>:<batch>`; a batch is a count or a percentage (`25%`).
    #[arg(long)]
    pub strategy: Option<String>,
    /// Tasks in flight at once (at least 1; the server's default is 10).
    #[arg(long)]
    pub parallelism: Option<u32>,
    /// Attempts per task (1 to 100).
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// The job fails once more than this many targets failed (default: any failure).
    #[arg(long)]
    pub max_failures: Option<u32>,
    /// The job fails once more than this share of targets failed, from 0 to 1.
    #[arg(long)]
    pub max_failure_ratio: Option<f64>,
    /// Roll back to the last known good digests if the job fails.
    #[arg(long)]
    pub auto_rollback: bool,
    /// A compose template (YAML file) in place of the release's service definition,
    /// for this job only (a rollback re-deploys what the job rendered).
    #[arg(long, value_name = "COMPOSE_YML")]
    pub template: Option<PathBuf>,
    /// When another job holds the environment, wait in line (the job is created
    /// `pending` and starts when its turn comes) instead of failing.
    #[arg(long)]
    pub queue: bool,
}

impl JobSettings {
    /// The body of `POST /promotions/{id}/approve`; checked before anything is sent,
    /// so a bad value creates no promotion (exit 2, naming the flag and the value).
    pub fn approve_body(&self) -> Result<Value, CliError> {
        let mut policy = json!({"auto_rollback": self.auto_rollback});
        if let Some(n) = self.max_failures {
            policy["max_failures"] = json!(n);
        }
        if let Some(r) = self.max_failure_ratio {
            if !(r.is_finite() && (0.0..=1.0).contains(&r)) {
                return Err(CliError::new(
                    USAGE,
                    format!("--max-failure-ratio `{r}` is not a number from 0 to 1"),
                ));
            }
            policy["max_failure_ratio"] = json!(r);
        }
        let mut body = json!({"failure_policy": policy});
        if let Some(s) = &self.strategy {
            body["strategy"] = plan::strategy(s)?;
        }
        if let Some(n) = self.parallelism {
            if n == 0 {
                return Err(CliError::new(
                    USAGE,
                    "--parallelism `0` is not a count of tasks of at least 1",
                ));
            }
            body["parallelism"] = json!(n);
        }
        if let Some(n) = self.max_attempts {
            if !(1..=100).contains(&n) {
                return Err(CliError::new(
                    USAGE,
                    format!("--max-attempts `{n}` is not from 1 to 100"),
                ));
            }
            body["max_attempts"] = json!(n);
        }
        if let Some(path) = &self.template {
            body["template"] = json!(read_template(path)?);
        }
        if self.queue {
            body["queue"] = json!(true);
        }
        Ok(body)
    }
}

/// The lines `deploy` and `promotions approve` print about a new job: its id and size
/// (the first line, `job <id>: <n> task(s)`, is part of the CLI's contract), and where
/// it waits when queued.
pub fn announce(job: &Value) -> Vec<String> {
    let id = job["id"].as_str().unwrap_or_default();
    let mut lines = vec![format!(
        "job {id}: {} task(s)",
        job["tasks"].as_array().map_or(0, Vec::len)
    )];
    if let Some(ahead) = job["queued_behind"].as_str() {
        lines.push(format!(
            "job {id} waits in line behind job {ahead}: it starts once the environment is free"
        ));
    }
    lines
}

/// A compose template file (`--template`) as text.
pub fn read_template(path: &std::path::Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| {
        CliError::new(
            USAGE,
            format!(
                "--template `{}` cannot be read as a UTF-8 compose file: {e}",
                path.display()
            ),
        )
    })
}

/// `deployctl deploy`: requests the promotion and approves it in one go, where the
/// environment's policy lets the requester approve; otherwise it is left requested
/// for other approvers (exit 6). With `follow`, follows the job to its end.
pub async fn run(
    client: &crate::client::Client,
    out: crate::output::Output,
    release: &str,
    env: &str,
    follow: bool,
    settings: &JobSettings,
    logs: bool,
) -> Result<u8, CliError> {
    use crate::output::{self, Output};
    // Checked before anything is sent: a bad flag creates no promotion.
    settings.approve_body()?;
    let promotion = crate::promote::request(client, release, env).await?;
    let promotion_id = promotion.id.to_string();
    let approved = match crate::promote::approve(client, &promotion_id, settings).await {
        // The environment's policy wants other approvers: the promotion waits.
        Err(e) if e.status == Some(403) => {
            eprintln!(
                "deployctl: promotion {promotion_id} of `{release}` to `{env}` is requested and awaits approval: {}\n  another approver runs: deployctl promotions approve {promotion_id}",
                e.message
            );
            return Ok(crate::exit::AWAITING_APPROVAL);
        }
        other => other?.1,
    };
    let job = match approved {
        crate::promote::Approved::Job(job) => job,
        crate::promote::Approved::Pending { missing } => {
            eprintln!(
                "deployctl: promotion {promotion_id} of `{release}` to `{env}` needs {missing} more approval(s): deployctl promotions approve {promotion_id}"
            );
            return Ok(crate::exit::AWAITING_APPROVAL);
        }
    };
    let job_id = job["id"].as_str().unwrap_or_default().to_owned();
    if !follow {
        output::object(out, &job, &["id", "status", "tasks", "created_at"]);
        return Ok(crate::exit::SUCCESS);
    }
    if out == Output::Table {
        for line in announce(&job) {
            output::line(&line);
        }
    }
    crate::jobs::watch(client, out, &job_id, logs).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_send_only_the_rollback_choice() {
        let body = JobSettings::default().approve_body().unwrap();
        assert_eq!(body, json!({"failure_policy": {"auto_rollback": false}}));
    }

    #[test]
    fn every_setting_lands_in_the_approve_body() {
        let dir = tempfile::tempdir().unwrap();
        let template = dir.path().join("compose.yml");
        std::fs::write(&template, "services: {}\n").unwrap();
        let body = JobSettings {
            strategy: Some("canary:1:50%".into()),
            parallelism: Some(4),
            max_attempts: Some(5),
            max_failures: Some(2),
            max_failure_ratio: Some(0.25),
            auto_rollback: true,
            template: Some(template),
            queue: true,
        }
        .approve_body()
        .unwrap();
        assert_eq!(
            body,
            json!({
                "strategy": {"type": "canary", "canary": {"count": 1}, "batch": {"percent": 50}},
                "parallelism": 4,
                "max_attempts": 5,
                "failure_policy": {"auto_rollback": true, "max_failures": 2, "max_failure_ratio": 0.25},
                "template": "services: {}\n",
                "queue": true,
            })
        );
    }

    #[test]
    fn bad_values_are_usage_errors_naming_flag_and_value() {
        let cases = [
            (
                JobSettings {
                    strategy: Some("rolling:0".into()),
                    ..JobSettings::default()
                },
                "rolling:0",
            ),
            (
                JobSettings {
                    parallelism: Some(0),
                    ..JobSettings::default()
                },
                "--parallelism `0`",
            ),
            (
                JobSettings {
                    max_attempts: Some(101),
                    ..JobSettings::default()
                },
                "--max-attempts `101`",
            ),
            (
                JobSettings {
                    max_failure_ratio: Some(1.5),
                    ..JobSettings::default()
                },
                "--max-failure-ratio `1.5`",
            ),
            (
                JobSettings {
                    template: Some("/no/such/compose.yml".into()),
                    ..JobSettings::default()
                },
                "--template `/no/such/compose.yml`",
            ),
        ];
        for (settings, named) in cases {
            let err = settings.approve_body().unwrap_err();
            assert_eq!(err.code, USAGE, "{named}");
            assert!(err.message.contains(named), "{}: {named}", err.message);
        }
    }
}
