//! `cargo xtask`: workspace automation. `cargo xtask bench` runs every benchmark and rewrites the generated part of docs/benchmarks.md.

mod bench;
mod machine;
mod report;
mod stats;

use std::path::PathBuf;

use anyhow::{Context, bail};

const USAGE: &str = "\
usage: cargo xtask bench [--quick] [--only SECTION[,SECTION...]] [--render-only]

Runs every benchmark of the workspace in release, collects their figures
(BENCH_REPORT_FILE, one JSON line per figure) under target/bench-report/ and
rewrites the generated part of docs/benchmarks.md.

  --quick        fewer runs, rounds and sizes: a smoke test of the whole chain
  --only LIST    only these sections: artifacts, store, engine, ssh, agents, api, logs, updates,
                 mttr, console
  --render-only  no benchmark: rewrite docs/benchmarks.md from target/bench-report/";

/// The workspace root (xtask/ is one of its members).
fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map_or(manifest.clone(), PathBuf::from)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("bench") => {}
        Some("-h" | "--help") | None => {
            eprintln!("{USAGE}");
            return Ok(());
        }
        Some(other) => bail!("unknown task `{other}`\n{USAGE}"),
    }
    let mut options = bench::Options::default();
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--render-only" => options.render_only = true,
            "--only" => {
                let list = rest.next().context("--only needs a list of sections")?;
                options.only = Some(list.split(',').map(|s| s.trim().to_owned()).collect());
            }
            "-h" | "--help" => {
                eprintln!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown option `{other}`\n{USAGE}"),
        }
    }
    let ok = bench::run(&workspace_root(), &options)?;
    if !ok {
        bail!("some benchmarks failed; the report says which");
    }
    Ok(())
}
