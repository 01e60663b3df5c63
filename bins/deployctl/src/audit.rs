//! `deployctl audit`: the audit log (admin), newest first: who wrote what, when and from where.

use deploy_api::{API_PREFIX, AuditList};

use crate::client::{Client, segment};
use crate::env::to_value;
use crate::exit::CliError;
use crate::output::Output;

/// Filters and paging of `deployctl audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Only writes by this token or agent name.
    #[arg(long)]
    actor: Option<String>,
    /// Only writes to this entity id.
    #[arg(long)]
    entity: Option<String>,
    /// Page size (the server caps it).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Rows older than this sequence number (the `next_before` of the previous page).
    #[arg(long)]
    before: Option<u64>,
}

pub async fn run(args: &AuditArgs, client: &Client, out: Output) -> Result<(), CliError> {
    let mut query = format!("limit={}", args.limit);
    if let Some(a) = &args.actor {
        query.push_str(&format!("&actor={}", segment(a)));
    }
    if let Some(e) = &args.entity {
        query.push_str(&format!("&entity={}", segment(e)));
    }
    if let Some(b) = args.before {
        query.push_str(&format!("&before={b}"));
    }
    let page: AuditList = client.get(&format!("{API_PREFIX}/audit?{query}")).await?;
    crate::print_page(
        out,
        &to_value(&page),
        "entries",
        &[
            "seq",
            "at",
            "actor_name",
            "method",
            "route",
            "entity_id",
            "status",
            "remote",
        ],
    );
    Ok(())
}
