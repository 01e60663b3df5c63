//! `deployctl promote` and `deployctl promotions`: request a release for an environment, list the approval queue, approve (the approval that completes the environment's policy creates the job) or reject with a reason.

use clap::Subcommand;
use deploy_api::{
    API_PREFIX, ApprovePromotionResponse, CreatePromotionRequest, PromotionList,
    RejectPromotionRequest,
};
use deploy_core::Promotion;
use serde_json::Value;

use crate::client::{Client, segment};
use crate::deploy::JobSettings;
use crate::env::to_value;
use crate::exit::{AWAITING_APPROVAL, CliError, SUCCESS, USAGE};
use crate::output::{self, Output};

#[derive(Debug, Subcommand)]
pub enum PromotionsCommand {
    /// List promotions, newest first: `--status requested` is the approval queue.
    List {
        /// Only promotions to this environment (name or id).
        #[arg(long)]
        env: Option<String>,
        /// `requested`, `approved` or `rejected`.
        #[arg(long, value_parser = ["requested", "approved", "rejected"])]
        status: Option<String>,
        /// Page size (the server caps it).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Promotions older than this id (the `next_before` of the previous page).
        #[arg(long)]
        before: Option<String>,
    },
    /// Show a promotion with its approvals.
    Show {
        /// The promotion's id.
        id: String,
    },
    /// Approve a promotion. Under an approval policy the requester's own approval does
    /// not count and several distinct approvers may be needed; the approval that
    /// completes it creates the job, with this command's job settings.
    Approve {
        /// The promotion's id.
        id: String,
        #[command(flatten)]
        settings: JobSettings,
        /// Follow the job once created, until it settles (the exit code tells how it ended).
        #[arg(long)]
        follow: bool,
        /// With --follow: also print the tasks' log lines.
        #[arg(long, requires = "follow")]
        logs: bool,
    },
    /// Reject a promotion; it can no longer be approved.
    Reject {
        /// The promotion's id.
        id: String,
        /// Why, kept with the promotion.
        #[arg(long)]
        reason: Option<String>,
    },
}

/// The fields printed for a promotion.
pub const FIELDS: &[&str] = &[
    "id",
    "status",
    "release_id",
    "environment_id",
    "requested_by",
    "approvals",
    "decided_by",
    "rejection_reason",
    "requested_at",
    "decided_at",
];

/// `deployctl promote`: requests the promotion; the environment's pipeline may refuse it.
pub async fn request(client: &Client, release: &str, env: &str) -> Result<Promotion, CliError> {
    client
        .post(
            &format!("{API_PREFIX}/promotions"),
            Some(&CreatePromotionRequest {
                release: release.to_owned(),
                environment: env.to_owned(),
            }),
        )
        .await
}

/// What an approval led to.
pub enum Approved {
    /// The job (created now, or earlier by the approval that completed the policy).
    Job(Value),
    /// More approvals are needed.
    Pending { missing: u32 },
}

/// Approves promotion `id` with the job `settings`.
pub async fn approve(
    client: &Client,
    id: &str,
    settings: &JobSettings,
) -> Result<(ApprovePromotionResponse, Approved), CliError> {
    let body = settings.approve_body()?;
    let answer: ApprovePromotionResponse = client
        .post(
            &format!("{API_PREFIX}/promotions/{}/approve", segment(id)),
            Some(&body),
        )
        .await?;
    let approved = match &answer.job {
        Some(job) => Approved::Job(to_value(job)),
        None => Approved::Pending {
            missing: answer.missing_approvals,
        },
    };
    Ok((answer, approved))
}

pub async fn run(command: PromotionsCommand, client: &Client, out: Output) -> Result<u8, CliError> {
    let p = API_PREFIX;
    match command {
        PromotionsCommand::List {
            env,
            status,
            limit,
            before,
        } => {
            let mut query = format!("limit={limit}");
            if let Some(e) = env {
                query.push_str(&format!("&environment={}", segment(&e)));
            }
            if let Some(s) = status {
                query.push_str(&format!("&status={s}"));
            }
            if let Some(b) = before {
                query.push_str(&format!("&before={}", segment(&b)));
            }
            let list: PromotionList = client.get(&format!("{p}/promotions?{query}")).await?;
            crate::print_page(
                out,
                &to_value(&list),
                "promotions",
                &[
                    "id",
                    "status",
                    "release_id",
                    "environment_id",
                    "requested_by",
                    "approvals",
                    "requested_at",
                ],
            );
        }
        PromotionsCommand::Show { id } => {
            let promotion: Promotion = client
                .get(&format!("{p}/promotions/{}", segment(&id)))
                .await?;
            output::object(out, &to_value(&promotion), FIELDS);
        }
        PromotionsCommand::Approve {
            id,
            settings,
            follow,
            logs,
        } => {
            let (answer, approved) = approve(client, &id, &settings).await?;
            match approved {
                Approved::Pending { missing } => {
                    output::object(out, &to_value(&answer.promotion), FIELDS);
                    if out == Output::Table {
                        output::line(&format!(
                            "approval recorded; {missing} more needed before the job is created"
                        ));
                    }
                    return Ok(AWAITING_APPROVAL);
                }
                Approved::Job(job) => {
                    let job_id = job["id"].as_str().unwrap_or_default().to_owned();
                    if !follow {
                        output::object(out, &job, &["id", "status", "tasks", "created_at"]);
                        return Ok(SUCCESS);
                    }
                    if out == Output::Table {
                        for line in crate::deploy::announce(&job) {
                            output::line(&line);
                        }
                    }
                    return crate::jobs::watch(client, out, &job_id, logs).await;
                }
            }
        }
        PromotionsCommand::Reject { id, reason } => {
            if reason.as_deref().is_some_and(|r| r.trim().is_empty()) {
                return Err(CliError::new(
                    USAGE,
                    "--reason is empty; give a reason or leave the flag out",
                ));
            }
            let promotion: Promotion = client
                .post(
                    &format!("{p}/promotions/{}/reject", segment(&id)),
                    Some(&RejectPromotionRequest { reason }),
                )
                .await?;
            output::object(out, &to_value(&promotion), FIELDS);
        }
    }
    Ok(SUCCESS)
}
