//! `deployctl version`: this client's version and commit, then the server's (`GET /api/v1/version`, no token needed).

use deploy_api::{API_PREFIX, VersionResponse};
use serde_json::json;

use crate::client::Client;
use crate::exit::CliError;
use crate::output::{self, Output};

/// Prints the client's build, then asks the server for its own. As a table the
/// client's line comes first, so it shows even when the server cannot be reached.
pub async fn run(client: &Client, out: Output) -> Result<(), CliError> {
    let local = json!({
        "name": "deployctl",
        "version": env!("CARGO_PKG_VERSION"),
        "commit": env!("DEPLOY_BUILD_COMMIT"),
    });
    if out == Output::Table {
        output::line(&format!(
            "client: deployctl {}",
            env!("DEPLOY_BUILD_VERSION")
        ));
    }
    let server: VersionResponse = client.get(&format!("{API_PREFIX}/version")).await?;
    match out {
        Output::Table => output::line(&format!(
            "server: {} {} ({})",
            server.name, server.version, server.commit
        )),
        Output::Json | Output::Yaml => {
            output::object(out, &json!({ "client": local, "server": server }), &[])
        }
    }
    Ok(())
}
