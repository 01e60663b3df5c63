//! `deployctl notifications` (admin to manage, deployer to read the log): webhook subscriptions of an environment and their delivery log.

use clap::Subcommand;
use deploy_api::{
    API_PREFIX, CreateSubscriptionRequest, DeliveryDetail, DeliveryList, Subscription,
    SubscriptionList,
};
use deploy_core::{HttpUrl, NotificationEvent};
use serde_json::json;

use crate::client::{self, Client};
use crate::exit::{CliError, USAGE};
use crate::output::{self, Output};

const FIELDS: &[&str] = &[
    "id",
    "environment",
    "url",
    "events",
    "created_at",
    "created_by",
];
const DELIVERY_FIELDS: &[&str] = &[
    "id",
    "seq",
    "event",
    "status",
    "attempts",
    "job_id",
    "occurred_at",
    "next_attempt_at",
    "last_error",
];

#[derive(Debug, Subcommand)]
pub enum NotificationsCommand {
    /// Subscribe a webhook URL to events of an environment (admin). Deliveries are
    /// signed (HMAC-SHA256) with a key deployd generates: printed once, here (give it to
    /// the receiver); `rotate-key` replaces it.
    Add {
        /// The environment (name or id).
        #[arg(long = "env", value_name = "ENV")]
        env: String,
        /// The receiver: an http(s) URL without user or password.
        #[arg(long)]
        url: String,
        /// An event to send; repeat for more: job.started, job.completed, job.failed,
        /// job.rolled_back, approval.requested.
        #[arg(long = "event", value_name = "EVENT", required = true)]
        events: Vec<String>,
    },
    /// Replace a subscription's signing key (admin): the new one is printed once, and
    /// deliveries are signed with it from now on.
    RotateKey {
        /// The subscription's id.
        id: String,
    },
    /// List the subscriptions (admin), of one environment with `--env`.
    List {
        #[arg(long = "env", value_name = "ENV")]
        env: Option<String>,
    },
    /// Remove a subscription (admin); its pending deliveries are given up, its log stays.
    Remove {
        /// The subscription's id.
        id: String,
    },
    /// The delivery log, newest first; with a delivery id, that delivery and every attempt.
    Deliveries {
        /// One delivery (the `X-Deploy-Delivery` header's value).
        id: Option<String>,
        /// Only this environment's deliveries (name or id).
        #[arg(long = "env", value_name = "ENV")]
        env: Option<String>,
        /// Only this subscription's deliveries.
        #[arg(long)]
        subscription: Option<String>,
        /// Only the deliveries about this job.
        #[arg(long)]
        job: Option<String>,
        /// Only deliveries older than this `seq` (the `next_before` of the previous page).
        #[arg(long)]
        before: Option<u64>,
        /// Page size.
        #[arg(long)]
        limit: Option<u32>,
    },
}

/// The request of `add`, checked here so a bad value is exit 2 naming the flag.
fn create_request(
    env: String,
    url: &str,
    events: &[String],
) -> Result<CreateSubscriptionRequest, CliError> {
    let url = HttpUrl::parse(url).map_err(|e| CliError::new(USAGE, format!("--url: {e}")))?;
    let events = events
        .iter()
        .map(|e| {
            NotificationEvent::parse(e).map_err(|e| CliError::new(USAGE, format!("--event: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CreateSubscriptionRequest {
        environment: env,
        url,
        events,
    })
}

/// The filters select among deliveries; with an id there is one, and a filter that
/// would not match it must not pass silently: refused (exit 2), naming the flags.
fn only_id(filters: &[(&str, bool)]) -> Result<(), CliError> {
    let given: Vec<&str> = filters
        .iter()
        .filter_map(|(flag, set)| set.then_some(*flag))
        .collect();
    if given.is_empty() {
        return Ok(());
    }
    Err(CliError::new(
        USAGE,
        format!(
            "{} with a delivery id: expected either a delivery id or filters, not both",
            given.join(", ")
        ),
    ))
}

/// `?k=v&...` of the set pairs.
fn query(pairs: &[(&str, Option<String>)]) -> String {
    let set: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", client::segment(v))))
        .collect();
    if set.is_empty() {
        String::new()
    } else {
        format!("?{}", set.join("&"))
    }
}

/// A subscription with its signing key, shown this once: in a table, the key on a line
/// of its own after the fields.
fn show_with_key(out: Output, s: &Subscription) {
    match out {
        Output::Table => {
            output::object(out, &crate::env::to_value(s), FIELDS);
            if let Some(key) = &s.signing_secret {
                output::line(&format!(
                    "signing_secret: {key}\n(shown this once: give it to the receiver now)"
                ));
            }
        }
        _ => output::object(out, &crate::env::to_value(s), &[]),
    }
}

pub async fn run(
    command: NotificationsCommand,
    client: &Client,
    out: Output,
) -> Result<(), CliError> {
    let p = API_PREFIX;
    match command {
        NotificationsCommand::Add { env, url, events } => {
            let body = create_request(env, &url, &events)?;
            let created: Subscription = client
                .post(&format!("{p}/notifications"), Some(&body))
                .await?;
            show_with_key(out, &created);
        }
        NotificationsCommand::RotateKey { id } => {
            let rotated: Subscription = client
                .post::<(), _>(
                    &format!("{p}/notifications/{}/rotate-key", client::segment(&id)),
                    None,
                )
                .await?;
            show_with_key(out, &rotated);
        }
        NotificationsCommand::List { env } => {
            let list: SubscriptionList = client
                .get(&format!(
                    "{p}/notifications{}",
                    query(&[("environment", env)])
                ))
                .await?;
            output::list(out, &crate::env::to_value(&list.subscriptions), FIELDS);
        }
        NotificationsCommand::Remove { id } => {
            client
                .delete(&format!("{p}/notifications/{}", client::segment(&id)))
                .await?;
        }
        NotificationsCommand::Deliveries {
            id: Some(id),
            env,
            subscription,
            job,
            before,
            limit,
        } => {
            only_id(&[
                ("--env", env.is_some()),
                ("--subscription", subscription.is_some()),
                ("--job", job.is_some()),
                ("--before", before.is_some()),
                ("--limit", limit.is_some()),
            ])?;
            let detail: DeliveryDetail = client
                .get(&format!(
                    "{p}/notifications/deliveries/{}",
                    client::segment(&id)
                ))
                .await?;
            match out {
                Output::Table => {
                    output::object(
                        out,
                        &crate::env::to_value(&detail.delivery),
                        DELIVERY_FIELDS,
                    );
                    output::list(
                        out,
                        &crate::env::to_value(&detail.attempts),
                        &["n", "at", "duration_ms", "http_status", "error"],
                    );
                }
                _ => output::object(out, &json!(detail), DELIVERY_FIELDS),
            }
        }
        NotificationsCommand::Deliveries {
            id: None,
            env,
            subscription,
            job,
            before,
            limit,
        } => {
            let q = query(&[
                ("environment", env),
                ("subscription", subscription),
                ("job", job),
                ("before", before.map(|b| b.to_string())),
                ("limit", limit.map(|l| l.to_string())),
            ]);
            let list: DeliveryList = client
                .get(&format!("{p}/notifications/deliveries{q}"))
                .await?;
            match out {
                Output::Table => {
                    output::list(
                        out,
                        &crate::env::to_value(&list.deliveries),
                        DELIVERY_FIELDS,
                    );
                    if let Some(next) = list.next_before {
                        output::line(&format!("more: --before {next}"));
                    }
                }
                _ => output::object(out, &crate::env::to_value(&list), &[]),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_id_with_filters_is_refused_naming_them() {
        assert!(only_id(&[("--env", false), ("--job", false)]).is_ok());
        let e = only_id(&[("--env", true), ("--job", false), ("--before", true)]).unwrap_err();
        assert_eq!(e.code, USAGE);
        assert!(
            e.message.starts_with("--env, --before with a delivery id"),
            "{}",
            e.message
        );
    }

    #[test]
    fn add_checks_the_url_and_events_naming_the_flag() {
        let bad_url = create_request("prod".into(), "ftp://x", &["job.failed".into()]).unwrap_err();
        assert!(bad_url.message.starts_with("--url:"), "{}", bad_url.message);
        let bad_event =
            create_request("prod".into(), "https://h/x", &["job.done".into()]).unwrap_err();
        assert!(
            bad_event.message.starts_with("--event:"),
            "{}",
            bad_event.message
        );
    }
}
