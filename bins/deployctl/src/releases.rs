//! `deployctl release`: create (with its service definition), show, list and archive releases, by name or id.

use clap::Subcommand;
use deploy_api::API_PREFIX;
use serde_json::{Value, json};

use crate::client::{self, Client};
use crate::exit::{CliError, USAGE};
use crate::output::{self, Output};
use crate::{PageArgs, deploy, page_query, print_page};

#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Create a release from `name=image@sha256:…` components and, optionally, its
    /// service definition: a compose template whose services name the component they
    /// run (`componentName`), stored with the release and used by every deploy and
    /// rollback of it.
    Create {
        name: String,
        /// A component, `name=registry/path@sha256:<64 hex>` (repeatable).
        #[arg(long = "component", required = true)]
        components: Vec<String>,
        /// The service definition: a compose template (YAML file): ports, environment,
        /// volumes, command, restart, networks, limits, healthcheck, …
        #[arg(long, value_name = "COMPOSE_YML")]
        template: Option<std::path::PathBuf>,
    },
    /// Show a release.
    Show {
        /// The release's name or id.
        release: String,
    },
    /// List releases, newest first.
    List(PageArgs),
    /// Archive a release: it can no longer be promoted.
    Archive {
        /// The release's name or id.
        release: String,
    },
}

pub async fn run(command: ReleaseCommand, client: &Client, out: Output) -> Result<(), CliError> {
    let p = API_PREFIX;
    match command {
        ReleaseCommand::Create {
            name,
            components,
            template,
        } => {
            let components = components
                .iter()
                .map(|c| match c.split_once('=') {
                    Some((n, image)) => Ok(json!({"name": n, "image": image})),
                    None => Err(CliError::new(
                        USAGE,
                        format!("component `{c}` is not `name=image@sha256:<digest>`"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut body = json!({"name": name, "components": components});
            if let Some(path) = &template {
                body["template"] = json!(deploy::read_template(path)?);
            }
            let v: Value = client.post(&format!("{p}/releases"), Some(&body)).await?;
            output::object(out, &v, &["id", "name", "components", "created_at"]);
        }
        ReleaseCommand::Archive { release } => {
            let v: Value = client
                .post::<Value, Value>(
                    &format!("{p}/releases/{}/archive", client::segment(&release)),
                    None,
                )
                .await?;
            output::object(out, &v, &["id", "name", "archived_at"]);
        }
        ReleaseCommand::Show { release } => {
            let v: Value = client
                .get(&format!("{p}/releases/{}", client::segment(&release)))
                .await?;
            output::object(out, &v, &["id", "name", "components", "created_at"]);
        }
        ReleaseCommand::List(page) => {
            let v: Value = client
                .get(&format!("{p}/releases?{}", page_query(&page)))
                .await?;
            print_page(
                out,
                &v,
                "releases",
                &["id", "name", "components", "created_at"],
            );
        }
    }
    Ok(())
}
