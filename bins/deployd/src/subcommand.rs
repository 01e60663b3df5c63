//! What deployd's local subcommands (`admin-token`, `backup`, `restore`) share: deployd's own configuration from their database flags, and one way to parse, check and run them with the same exit codes.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use crate::config::{Args, Config};

/// deployd's configuration (file, environment) with the subcommand's database flags
/// on top, so the command reaches the very database the server uses.
pub(crate) fn server_config(
    config: Option<&PathBuf>,
    data_dir: Option<&PathBuf>,
    database_url: Option<&String>,
) -> anyhow::Result<Config> {
    let mut server = Args::try_parse_from(["deployd"]).context("deployd's environment")?;
    server.config = config.cloned();
    server.data_dir = data_dir.cloned();
    server.database_url = database_url.cloned();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    Config::load(server, home.as_deref())
}

/// Parses `args` (0 for `--help`, 2 on a usage error), checks them with `check` (2
/// when refused), then runs `run` on what the check returned (1 when it fails); every
/// error is printed after `name`.
pub(crate) fn run<A: Parser, C, F: Future<Output = anyhow::Result<()>>>(
    name: &str,
    args: impl IntoIterator<Item = std::ffi::OsString>,
    check: fn(&A) -> anyhow::Result<C>,
    run: fn(A, C) -> F,
) -> ExitCode {
    let args = match A::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let checked = match check(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, checked)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
