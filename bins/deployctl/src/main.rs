//! deployctl: a thin CLI over deployd's HTTP API; maps every outcome to a documented exit code.
//!
//! One module per command group over deploy-api's types (`env.rs`, `target.rs` and
//! `targets.rs`, `releases.rs`, `promote.rs`, `deploy.rs`, `jobs.rs`, `apply.rs`,
//! `audit.rs`, `tokens.rs`, `agents.rs`, `secrets.rs`, `notifications.rs`, `runtime_policy.rs`, `plan.rs`,
//! `version.rs`);
//! this file is the wiring. Names or ids are accepted everywhere (`client.rs`
//! percent-encodes what is not a name). Input is checked before it is sent: `target
//! add` builds the API's own `CreateTargetRequest` from flags (or reads it from
//! `--file`) and runs deploy-core's `Target::validate`, so a bad value is exit 2 naming
//! the flag or field. `artifacts render` (`render.rs`) works offline, through
//! deploy-artifacts, with ids and timestamp derived from the release so the same files
//! give the same bytes.
//!
//! Server and token: flags, then `DEPLOYCTL_SERVER` / `DEPLOYCTL_TOKEN`, then the
//! config file (`config.rs`: `--config` or `DEPLOYCTL_CONFIG`, else
//! `$XDG_CONFIG_HOME/deployctl/config.toml` or `~/.config/deployctl/config.toml`; keys
//! `server`, `token`, `ca_file`; unknown keys refused; a file readable by others gets a
//! warning), then `http://127.0.0.1:8080`.
//!
//! Following (`deploy --follow`, `jobs watch`) reads the job's event stream and prints
//! one line per transition, then the final status; a connection that cannot be made or
//! breaks is retried once a second (30 times) with `Last-Event-ID`, so a deployd
//! restart loses and repeats nothing. On a terminal the lines become progress bars
//! (`progress.rs`). `--logs` (`tail.rs`) also prints every task's log lines, prefixed
//! `[target/component]`, from the job's single log stream, then a summary per task.
//! Only `output.rs` and the progress bars write to stdout.
//!
//! Exit codes (`exit.rs`): 0 success, 1 deployment failed, 2 usage or input error, 3
//! rolled back, 4 server unreachable or token refused, 5 `--timeout` ran out while
//! following (the job goes on), 6 the promotion awaits other approvers.

mod agents;
mod apply;
mod audit;
mod client;
mod config;
mod deploy;
mod env;
mod exit;
mod jobs;
mod notifications;
mod output;
mod plan;
mod progress;
mod promote;
mod releases;
mod render;
mod runtime_policy;
mod secrets;
mod tail;
mod target;
mod targets;
mod tokens;
mod version;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::client::Client;
use crate::exit::{CliError, SUCCESS, USAGE};
use crate::output::Output;

/// deployctl: drive deployd from the command line.
///
/// Exit codes: 0 success, 1 deployment failed, 2 usage or input error,
/// 3 deployment rolled back, 4 server unreachable or token refused,
/// 5 --timeout elapsed while following (deployctl stopped waiting; the job goes on),
/// 6 the promotion awaits approval by others (nothing was deployed yet).
///
/// Environments, targets, releases, tokens and agents are named by name or id.
///
/// Server and token: flags, else DEPLOYCTL_SERVER / DEPLOYCTL_TOKEN, else the
/// config file (--config, DEPLOYCTL_CONFIG, or ~/.config/deployctl/config.toml
/// with `server = "http://..."` and `token = "dpl_..."`), else http://127.0.0.1:8080.
///
/// Examples:
///   export DEPLOYCTL_TOKEN=dpl_...
///   deployctl env create staging
///   deployctl env create prod --requires staging --approvals 2
///   deployctl target add --env staging host-1 --host 10.0.0.5 --user deploy --key-ref env:SSH_KEY
///   deployctl release create v1 --component web=registry:5000/web@sha256:<64 hex>
///   deployctl plan --release v1 --env staging --strategy rolling:2
///   deployctl deploy --release v1 --env staging --follow
///   deployctl promote --release v1 --env prod
///   deployctl promotions list --status requested
///   deployctl promotions approve <PROMOTION_ID> --follow
///   deployctl apply -f prod.yaml --dry-run
///   deployctl get env prod > prod.yaml
///   deployctl jobs show <JOB_ID> -o json
///   deployctl audit --actor ci
///   deployctl token revoke ci
///   deployctl agent bootstrap-token --name rack-1 --expires-in-secs 600
///   deployctl agent list
///   deployctl agent bootstrap-tokens
#[derive(Debug, Parser)]
#[command(
    name = "deployctl",
    version = env!("DEPLOY_BUILD_VERSION"),
    verbatim_doc_comment
)]
struct Cli {
    /// deployd's base URL [default: the config file's `server`, else http://127.0.0.1:8080].
    #[arg(long, global = true, env = "DEPLOYCTL_SERVER")]
    server: Option<String>,
    /// API token (sent as a bearer token) [default: the config file's `token`].
    #[arg(long, global = true, env = "DEPLOYCTL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Config file (TOML: `server`, `token`) [default: ~/.config/deployctl/config.toml, if it exists].
    #[arg(long, global = true, env = "DEPLOYCTL_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// PEM CA certificate to trust for an https:// server with a private CA [default: the config file's `ca_file`].
    #[arg(long, global = true, env = "DEPLOYCTL_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// Send the token over plain http:// to a server that is not on loopback (refused
    /// otherwise: anyone on the path reads it) [default: the config file's `allow_insecure_http`].
    #[arg(long, global = true, env = "DEPLOYCTL_ALLOW_INSECURE_HTTP")]
    allow_insecure_http: bool,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    output: Output,
    /// How long `--follow`, `jobs watch` and `logs --follow` wait for the end: then
    /// deployctl stops waiting and exits 5, and the job goes on. `30s`, `5m`, `1h`,
    /// or seconds (`90`) [default: until the job settles].
    #[arg(long, global = true, value_name = "DURATION", value_parser = client::parse_timeout)]
    timeout: Option<std::time::Duration>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Environments: create, show, list, update (variables, approval policy, pipeline), delete.
    #[command(subcommand)]
    Env(env::EnvCommand),
    /// Targets of an environment.
    #[command(subcommand)]
    Target(targets::TargetCommand),
    /// Releases.
    #[command(subcommand)]
    Release(releases::ReleaseCommand),
    /// Request a promotion of a release to an environment (approved later with
    /// `promotions approve`, by others where the environment's policy says so).
    Promote {
        /// The release's name or id.
        #[arg(long)]
        release: String,
        /// The environment's name or id.
        #[arg(long)]
        env: String,
    },
    /// Promotions: the approval queue, approve, reject.
    #[command(subcommand)]
    Promotions(promote::PromotionsCommand),
    /// Promote a release to an environment and approve it in one go (where the
    /// environment's policy lets the requester approve), and optionally follow the job.
    /// Under a policy that needs other approvers, the promotion is left requested (exit 6).
    Deploy {
        /// The release's name or id.
        #[arg(long)]
        release: String,
        /// The environment's name or id.
        #[arg(long)]
        env: String,
        /// Follow the job until it settles; the exit code tells how it ended.
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        settings: deploy::JobSettings,
        /// With --follow: also print the tasks' log lines as they come (prefixed with
        /// `[target/component]`) and a summary per task at the end.
        #[arg(long, requires = "follow")]
        logs: bool,
    },
    /// Dry run of a deploy: which targets get which digest in which wave, and what each runs now.
    Plan {
        /// The release's name or id.
        #[arg(long)]
        release: String,
        /// The environment's name or id.
        #[arg(long)]
        env: String,
        /// `all-at-once`, `blue-green`, `rolling:<batch>` or `canary:<canary>:<batch>`; a batch is a count or a percentage (`25%`).
        #[arg(long, default_value = "all-at-once")]
        strategy: String,
        /// Tasks in flight at once.
        #[arg(long)]
        parallelism: Option<u32>,
    },
    /// Jobs.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// A task's log.
    Logs {
        /// The task's id (see `jobs show`).
        task: String,
        /// Print chunks after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Keep streaming (Server-Sent Events) until the task, or its job, has settled.
        #[arg(long)]
        follow: bool,
    },
    /// Roll a job back: its targets get again what ran there before it.
    Rollback {
        /// The job's id.
        job: String,
        /// Why (kept in the job's events, with who asked).
        #[arg(long, default_value = "manual rollback")]
        reason: String,
        /// Follow the rollback until it settles; the exit code tells how it ended.
        #[arg(long)]
        follow: bool,
        /// With --follow: also print the tasks' log lines.
        #[arg(long, requires = "follow")]
        logs: bool,
    },
    /// Make an environment (its settings, policy, pipeline and targets) match a file;
    /// running it again changes nothing.
    #[command(
        after_help = "The file: `deployctl get env NAME` prints one (see docs/operations.md)."
    )]
    Apply {
        /// The environment document (YAML or JSON).
        #[arg(short = 'f', long = "file")]
        file: std::path::PathBuf,
        /// Print what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Delete the environment's targets that the file does not list.
        #[arg(long)]
        prune: bool,
    },
    /// Print a document `apply` accepts.
    #[command(subcommand)]
    Get(GetCommand),
    /// The audit log (admin): every write through the API, newest first.
    Audit(audit::AuditArgs),
    /// API tokens (admin).
    #[command(subcommand)]
    Token(tokens::TokenCommand),
    /// Application secrets (admin): env values reference them as `secret:NAME`.
    #[command(subcommand)]
    Secrets(secrets::SecretsCommand),
    /// Webhook notifications: subscriptions (admin) and their delivery log.
    #[command(subcommand)]
    Notifications(notifications::NotificationsCommand),
    /// Agents: one-time bootstrap tokens (admin), list, show, revoke (admin).
    #[command(subcommand)]
    Agent(agents::AgentCommand),
    /// Artifacts.
    #[command(subcommand)]
    Artifacts(ArtifactsCommand),
    /// Print deployctl's version and commit, then the server's (no token needed).
    Version,
    /// Print a shell completion script, e.g. `deployctl completions bash > /etc/bash_completion.d/deployctl`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum ArtifactsCommand {
    /// Render a target's artifacts from local files, offline (no server): compose file, lock, env files, units, nginx config, manifest.
    Render(render::RenderArgs),
}

#[derive(Debug, Subcommand)]
enum GetCommand {
    /// An environment with its targets, as YAML (`-o json` for JSON).
    Env {
        /// The environment's name or id.
        env: String,
    },
}

/// Paging of a list.
#[derive(Debug, clap::Args)]
pub(crate) struct PageArgs {
    /// Page size (the server caps it).
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Entries older than this id (the `next_before` of the previous page).
    #[arg(long)]
    before: Option<String>,
}

fn main() -> ExitCode {
    // Hidden (for packagers): man pages of every command and completions.
    if let Some(code) =
        deploy_cli_docs::dispatch(|| (<Cli as clap::CommandFactory>::command(), vec![]))
    {
        return code;
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { USAGE } else { SUCCESS };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("deployctl: cannot start the async runtime: {e}");
            return ExitCode::from(exit::UNREACHABLE);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("deployctl: {e}");
            ExitCode::from(e.code)
        }
    }
}

async fn run(cli: Cli) -> Result<u8, CliError> {
    if let Command::Completions { shell } = cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        output::completions(shell, &mut command);
        return Ok(SUCCESS);
    }
    if let Command::Artifacts(ArtifactsCommand::Render(args)) = cli.command {
        render::run(args, cli.output)?;
        return Ok(SUCCESS);
    }
    let default_config = config::default_path(
        std::env::var("XDG_CONFIG_HOME").ok().as_deref(),
        std::env::var("HOME").ok().as_deref(),
    );
    let file = config::load(cli.config.as_deref(), default_config.as_deref())?;
    let ca_file = cli.ca_file.clone().or_else(|| file.ca_file.clone());
    let settings = config::resolve(
        cli.server.clone(),
        cli.token.clone(),
        cli.allow_insecure_http,
        file,
    )?;
    let client = Client::new(&settings.server, settings.token, ca_file.as_deref())?
        .with_follow_timeout(cli.timeout);
    let out = cli.output;
    match cli.command {
        Command::Env(command) => env::run(command, &client, out).await?,
        Command::Apply {
            file,
            dry_run,
            prune,
        } => apply::run(&client, out, &file, dry_run, prune).await?,
        Command::Get(GetCommand::Env { env }) => apply::get(&client, out, &env).await?,
        Command::Audit(args) => audit::run(&args, &client, out).await?,
        Command::Version => version::run(&client, out).await?,
        Command::Promote { release, env } => {
            let promotion = promote::request(&client, &release, &env).await?;
            output::object(out, &env::to_value(&promotion), promote::FIELDS);
        }
        Command::Promotions(command) => return promote::run(command, &client, out).await,
        Command::Target(command) => targets::run(command, &client, out).await?,
        Command::Release(command) => releases::run(command, &client, out).await?,
        Command::Token(command) => tokens::run(command, &client, out).await?,
        Command::Secrets(command) => secrets::run(command, &client, out).await?,
        Command::Notifications(command) => notifications::run(command, &client, out).await?,
        Command::Agent(command) => agents::run(command, &client, out).await?,
        Command::Plan {
            release,
            env,
            strategy,
            parallelism,
        } => plan::run(&client, out, &release, &env, &strategy, parallelism).await?,
        Command::Deploy {
            release,
            env,
            follow,
            settings,
            logs,
        } => return deploy::run(&client, out, &release, &env, follow, &settings, logs).await,
        Command::Jobs(command) => return jobs::run(command, &client, out).await,
        Command::Logs {
            task,
            after,
            follow,
        } => jobs::logs(&client, out, &task, after, follow).await?,
        Command::Rollback {
            job,
            reason,
            follow,
            logs,
        } => return jobs::rollback(&client, out, &job, &reason, follow, logs).await,
        Command::Artifacts(_) | Command::Completions { .. } => unreachable_offline()?,
    }
    Ok(SUCCESS)
}

/// `limit=…&before=…` of a list.
pub(crate) fn page_query(page: &PageArgs) -> String {
    match &page.before {
        Some(b) => format!("limit={}&before={}", page.limit, client::segment(b)),
        None => format!("limit={}", page.limit),
    }
}

/// Prints a page of a list (`field` holds the items) and how to read the next one.
pub(crate) fn print_page(out: Output, page: &Value, field: &str, columns: &[&str]) {
    match out {
        Output::Json | Output::Yaml => output::object(out, page, &[]),
        Output::Table => {
            output::list(out, &page[field], columns);
            if let Some(next) = page["next_before"].as_str() {
                output::line(&format!("more: --before {next}"));
            }
        }
    }
}

/// `artifacts render` and `completions` are handled before the client is built.
fn unreachable_offline() -> Result<(), CliError> {
    Err(CliError::new(USAGE, "this command runs offline"))
}
