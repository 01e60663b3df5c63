//! `deployctl version`: this client's version and commit, then the server's (`GET /api/v1/version`, no token needed).

use deploy_api::{API_PREFIX, VersionResponse};
use serde_json::json;

use crate::client::Client;
use crate::exit::CliError;
use crate::output::{self, Output};

/// Prints the client's build, then asks the server for its own. The client's build
/// shows even when the server cannot be reached: as a table its line comes first, as
/// JSON or YAML with `"server": null`; the exit status is the error's.
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
    let server: VersionResponse = match client.get(&format!("{API_PREFIX}/version")).await {
        Ok(server) => server,
        Err(e) => {
            // JSON and YAML too say which client failed to reach the server.
            if out != Output::Table {
                output::object(out, &json!({ "client": local, "server": null }), &[]);
            }
            return Err(e);
        }
    };
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
