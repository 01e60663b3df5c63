//! `deployctl artifacts render`: renders a target's artifacts from local files with deploy-artifacts, offline.

use std::path::{Path, PathBuf};

use deploy_artifacts::{Colour, ContainerRuntime, RenderInput, Traffic, parse_template, render};
use deploy_core::{JobId, Name, PromotionId, Release, Target, Timestamp, UnixPath};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::exit::{CliError, USAGE};
use crate::output::{self, Output};

/// What to render, as given on the command line.
#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// Release as JSON (the API's release document).
    #[arg(long)]
    release: PathBuf,
    /// Target as JSON (the API's target document).
    #[arg(long)]
    target: PathBuf,
    /// Compose template (YAML) in place of the release's own service definition.
    #[arg(long)]
    template: Option<PathBuf>,
    /// A variable of the environment, `KEY=value` (repeatable): it replaces a service
    /// variable of that name or gives one declared without a value.
    #[arg(long = "var", value_name = "KEY=VALUE")]
    variables: Vec<String>,
    /// The environment's name (as the rest of deployctl: `--env`; `--environment` still works).
    #[arg(long = "env", alias = "environment")]
    environment: String,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Job id (default: derived from the timestamp).
    #[arg(long)]
    job_id: Option<String>,
    /// Promotion id (default: derived from the timestamp).
    #[arg(long)]
    promotion_id: Option<String>,
    /// RFC 3339 timestamp (default: the release's created_at).
    #[arg(long)]
    timestamp: Option<String>,
    /// Directory on the target (default: the target's work_dir, or where its default lies on a conventional host).
    #[arg(long)]
    work_dir: Option<String>,
    /// Units drive podman instead of docker.
    #[arg(long)]
    podman: bool,
}

/// `--var KEY=value` flags (split at the first `=`), as an environment's variables.
pub(crate) fn parse_variables(
    flags: &[String],
) -> Result<std::collections::BTreeMap<String, String>, CliError> {
    let mut variables = std::collections::BTreeMap::new();
    for v in flags {
        let (k, value) = v
            .split_once('=')
            .ok_or_else(|| input("--var", format!("`{v}`: expected KEY=VALUE")))?;
        variables.insert(k.to_owned(), value.to_owned());
    }
    Ok(variables)
}

fn input(what: &str, e: impl std::fmt::Display) -> CliError {
    CliError::new(USAGE, format!("{what}: {e}"))
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| input(&format!("cannot read `{}`", path.display()), e))?;
    serde_json::from_str(&text).map_err(|e| input(&format!("invalid `{}`", path.display()), e))
}

/// Renders the bundle into `args.out` and lists the files with their sha256.
pub fn run(args: RenderArgs, out: Output) -> Result<(), CliError> {
    let release: Release = read_json(&args.release)?;
    release
        .validate()
        .map_err(|e| input(&format!("invalid `{}`", args.release.display()), e))?;
    let target: Target = read_json(&args.target)?;
    target
        .validate()
        .map_err(|e| input(&format!("invalid `{}`", args.target.display()), e))?;
    let (shown, template_bytes) = match (&args.template, &release.template) {
        (Some(path), _) => (
            path.display().to_string(),
            std::fs::read(path)
                .map_err(|e| input(&format!("cannot read `{}`", path.display()), e))?,
        ),
        (None, Some(t)) => ("of the release".to_owned(), t.content.clone().into_bytes()),
        (None, None) => {
            return Err(CliError::new(
                USAGE,
                "the release has no service definition; pass --template",
            ));
        }
    };
    let template = parse_template(&template_bytes)
        .map_err(|e| input(&format!("invalid template {shown}"), e))?;
    let variables = parse_variables(&args.variables)?;
    let environment = Name::parse(&args.environment).map_err(|e| input("--env", e))?;
    // Defaults derive from the release so the same files give the same bytes.
    let timestamp = match &args.timestamp {
        Some(t) => Timestamp::parse(t).map_err(|e| input("--timestamp", e))?,
        None => release.created_at,
    };
    let job_id = match &args.job_id {
        Some(id) => JobId::parse(id).map_err(|e| input("--job-id", e))?,
        None => JobId::from_parts(timestamp, [0; 10]),
    };
    let promotion_id = match &args.promotion_id {
        Some(id) => PromotionId::parse(id).map_err(|e| input("--promotion-id", e))?,
        None => PromotionId::from_parts(timestamp, [0; 10]),
    };
    // Like deployd: the explicit work dir, else where the default lies on a conventional host.
    let work_dir = match (
        &args.work_dir,
        target.connection.rendered_work_dir(&target.name),
    ) {
        (Some(dir), _) => UnixPath::parse(dir).map_err(|e| input("--work-dir", e))?,
        (None, Some(dir)) => dir.map_err(|e| input("work_dir", e))?,
        (None, None) => {
            return Err(CliError::new(
                USAGE,
                "the target keeps no files (winrm, api); pass --work-dir",
            ));
        }
    };
    let bundle = render(&RenderInput {
        release: &release,
        target: &target,
        environment: &environment,
        promotion_id,
        job_id,
        timestamp,
        template: &template,
        traffic: Traffic::all_to(Colour::Blue),
        runtime: if args.podman {
            ContainerRuntime::Podman
        } else {
            ContainerRuntime::Docker
        },
        work_dir: &work_dir,
        variables: &variables,
    })
    .map_err(|e| input("cannot render", e))?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| input(&format!("cannot create `{}`", args.out.display()), e))?;
    let mut rows = Vec::new();
    for a in &bundle.artifacts {
        let path = args.out.join(a.file_name.as_str());
        std::fs::write(&path, &a.content)
            .map_err(|e| input(&format!("cannot write `{}`", path.display()), e))?;
        rows.push(json!({"file": a.file_name.as_str(), "kind": a.kind.as_str(), "sha256": a.sha256.to_string()}));
    }
    match out {
        Output::Json | Output::Yaml => output::object(
            out,
            &json!({"artifacts": rows, "bundle_digest": bundle.bundle_digest.to_string()}),
            &[],
        ),
        Output::Table => {
            output::list(out, &Value::Array(rows), &["file", "kind", "sha256"]);
            output::line(&format!("bundle {}", bundle.bundle_digest));
        }
    }
    Ok(())
}
