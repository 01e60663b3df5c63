//! The benchmark steps (one per report section), how each is run, and the run record kept under target/bench-report/.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::{machine, report};

/// What `cargo xtask bench` was asked for.
#[derive(Debug, Default)]
pub struct Options {
    pub quick: bool,
    pub only: Option<Vec<String>>,
    pub render_only: bool,
}

/// One benchmark of the report: a command, run `invocations` times, appending its figures.
#[derive(Debug)]
pub struct Step {
    pub section: &'static str,
    pub title: &'static str,
    pub args: Vec<String>,
    pub env: Vec<(&'static str, String)>,
    pub invocations: usize,
}

/// The sections in report order.
pub const SECTIONS: &[&str] = &[
    "artifacts",
    "store",
    "engine",
    "ssh",
    "agents",
    "api",
    "logs",
    "updates",
    "mttr",
    "console",
];

fn cargo_bench(package: &str, bench: &str) -> Vec<String> {
    ["bench", "--locked", "-p", package, "--bench", bench]
        .map(str::to_owned)
        .to_vec()
}

/// A scenario test of deploy-tests, in release, one test by its full name.
fn scenario(test: &str) -> Vec<String> {
    [
        "nextest",
        "run",
        "--release",
        "--locked",
        "-p",
        "deploy-tests",
        "--no-capture",
        "-E",
    ]
    .map(str::to_owned)
    .into_iter()
    .chain([format!("test(={test})")])
    .collect()
}

/// The steps, full or quick.
pub fn steps(quick: bool, deployd: &str) -> Vec<Step> {
    let pick = |full: &str, smoke: &str| if quick { smoke } else { full }.to_owned();
    let runs = |full: usize| if quick { 1 } else { full };
    vec![
        Step {
            section: "artifacts",
            title: "Artifacts rendering",
            args: cargo_bench("deploy-artifacts", "render"),
            env: vec![("BENCH_SAMPLES", pick("100", "10"))],
            invocations: 1,
        },
        Step {
            section: "store",
            title: "Store transitions (SQLite, PostgreSQL)",
            args: cargo_bench("deploy-store", "transitions"),
            env: vec![("BENCH_RUNS", pick("5", "1"))],
            invocations: 1,
        },
        Step {
            section: "engine",
            title: "Engine orchestration overhead (SQLite, PostgreSQL)",
            args: cargo_bench("deploy-engine", "orchestration"),
            env: vec![
                ("BENCH_SIZES", pick("1000,10000", "200")),
                ("BENCH_RUNS", pick("3", "1")),
            ],
            invocations: 1,
        },
        Step {
            section: "engine",
            title: "Engine orchestration overhead on PostgreSQL",
            args: cargo_bench("deploy-engine", "orchestration"),
            env: vec![
                ("BENCH_STORE", "postgres".to_owned()),
                ("BENCH_SIZES", pick("10000", "200")),
                ("BENCH_RUNS", pick("3", "1")),
            ],
            invocations: 1,
        },
        Step {
            section: "ssh",
            title: "SSH fan-out and docker deploy",
            args: cargo_bench("deploy-exec", "ssh_fanout"),
            env: vec![
                ("BENCH_FANOUT_ROUNDS", pick("15", "3")),
                ("BENCH_DEPLOY_ROUNDS", pick("6", "2")),
            ],
            invocations: 1,
        },
        Step {
            section: "agents",
            title: "Agent fan-out",
            args: scenario("agent_load::agent_fan_out_to_many_simulated_agents"),
            env: vec![
                ("DEPLOY_TESTS_DEPLOYD", deployd.to_owned()),
                ("DEPLOY_AGENT_BENCH_AGENTS", pick("1000", "100")),
            ],
            invocations: runs(3),
        },
        Step {
            section: "agents",
            title: "Agent fan-out over two replicas (PostgreSQL)",
            args: scenario("agent_load::agent_fan_out_across_two_replicas"),
            env: vec![
                ("DEPLOY_TESTS_DEPLOYD", deployd.to_owned()),
                ("DEPLOY_AGENT_BENCH_AGENTS", pick("1000", "100")),
            ],
            invocations: runs(3),
        },
        Step {
            section: "api",
            title: "API latency under load",
            args: scenario(
                "load::two_hundred_readers_and_fifty_sse_followers_while_a_deployment_runs",
            ),
            env: vec![
                ("DEPLOY_TESTS_DEPLOYD", deployd.to_owned()),
                ("DEPLOY_LOAD_ROUNDS", pick("20", "2")),
                ("DEPLOY_LOAD_SOAK_MS", "6000".to_owned()),
            ],
            invocations: runs(3),
        },
        Step {
            section: "logs",
            title: "Following the logs of a 1,000-task job",
            // `DEPLOY_LOGS_BENCH_BEFORE` (an older deployctl to compare with) passes through.
            args: scenario("log_follow::following_the_logs_of_a_thousand_task_job"),
            env: vec![
                ("DEPLOY_TESTS_DEPLOYD", deployd.to_owned()),
                ("DEPLOY_LOGS_BENCH_TASKS", pick("1000", "100")),
                ("DEPLOY_LOGS_BENCH_ROUNDS", pick("3", "1")),
            ],
            invocations: 1,
        },
        Step {
            section: "updates",
            title: "Updates through deployd against plain ssh",
            args: scenario("update_speed::an_update_through_deployd_against_plain_ssh"),
            env: vec![
                ("DEPLOY_TESTS_DEPLOYD", deployd.to_owned()),
                ("DEPLOY_UPDATE_HOSTS", pick("20", "3")),
                ("DEPLOY_UPDATE_ROUNDS", pick("7", "1")),
            ],
            invocations: 1,
        },
        Step {
            section: "mttr",
            title: "MTTR of an automatic rollback",
            args: scenario(
                "engine_e2e::a_broken_release_is_rolled_back_to_v1_and_the_mttr_is_reported",
            ),
            env: vec![],
            invocations: runs(3),
        },
        Step {
            section: "mttr",
            title: "MTTR of an automatic rollback on a published port, through deployd",
            args: scenario("update_speed::an_automatic_rollback_of_a_service_on_a_published_port"),
            env: vec![
                ("DEPLOY_TESTS_DEPLOYD", deployd.to_owned()),
                ("DEPLOY_MTTR_CYCLES", pick("7", "1")),
            ],
            invocations: 1,
        },
        Step {
            section: "console",
            title: "Web console render time",
            args: cargo_bench("deploy-server", "console"),
            env: vec![("BENCH_SAMPLES", pick("50", "5"))],
            invocations: 1,
        },
    ]
}

impl Step {
    /// The command as a reader would type it.
    pub fn shown(&self) -> String {
        let env: Vec<String> = self
            .env
            .iter()
            .filter(|(k, _)| *k != "DEPLOY_TESTS_DEPLOYD")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| {
                if a.contains(['(', ' ', '=']) {
                    format!("'{a}'")
                } else {
                    a.clone()
                }
            })
            .collect();
        let mut shown = env;
        shown.push("cargo".to_owned());
        shown.extend(args);
        shown.join(" ")
    }
}

/// `cargo <args>` in `root`, without the package variables `cargo run` gave this
/// process (see [`deploy_testkit::cargo_command`]): the scenario tests' own `cargo
/// build` drops them too, so neither rebuilds what the other built.
fn cargo_command(root: &Path, args: &[String]) -> Command {
    let mut command = deploy_testkit::cargo_command(args);
    command.current_dir(root);
    command
}

/// Runs `cargo <args>` in `root`, failing on a non-zero exit.
fn cargo_checked(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    eprintln!("== cargo {}", args.join(" "));
    let owned: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let status = cargo_command(root, &owned)
        .status()
        .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Builds everything the steps run, so no step's figures include a build. One
/// build per bench, as its step invokes it: features are unified per invocation,
/// so a build of several packages at once would not be the one the step reuses.
fn build(root: &Path, steps: &[Step]) -> anyhow::Result<()> {
    for step in steps.iter().filter(|s| s.args[0] == "bench") {
        let mut args: Vec<&str> = step.args.iter().map(String::as_str).collect();
        args.push("--no-run");
        cargo_checked(root, &args)?;
    }
    if steps.iter().any(|s| s.args[0] == "nextest") {
        cargo_checked(
            root,
            &[
                "build",
                "--release",
                "--locked",
                "-p",
                "deployd",
                "-p",
                "deployctl",
            ],
        )?;
        cargo_checked(
            root,
            &[
                "test",
                "--release",
                "--locked",
                "-p",
                "deploy-tests",
                "--no-run",
            ],
        )?;
    }
    Ok(())
}

/// Runs the selected steps and rewrites docs/benchmarks.md; false when a step failed.
pub fn run(root: &Path, options: &Options) -> anyhow::Result<bool> {
    let dir = root.join("target/bench-report");
    let doc = root.join("docs/benchmarks.md");
    if options.render_only {
        let run: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("run.json"))
                .with_context(|| format!("no run recorded in {}", dir.display()))?,
        )?;
        report::rewrite(&doc, &run, &dir)?;
        eprintln!("rewrote {} from {}", doc.display(), dir.display());
        return Ok(true);
    }
    if let Some(only) = &options.only {
        for s in only {
            if !SECTIONS.contains(&s.as_str()) {
                bail!("unknown section `{s}`; sections: {}", SECTIONS.join(", "));
            }
        }
    }
    let deployd = root.join("target/release/deployd").display().to_string();
    let steps: Vec<Step> = steps(options.quick, &deployd)
        .into_iter()
        .filter(|s| {
            options
                .only
                .as_ref()
                .is_none_or(|only| only.iter().any(|o| o == s.section))
        })
        .collect();
    let started = Instant::now();
    let started_at = machine::now_utc();
    build(root, &steps)?;
    // A full run starts afresh; `--only` reruns its sections and keeps the others' last figures.
    let mut records: Vec<Value> = Vec::new();
    if options.only.is_none() {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot clear {}", dir.display()))?;
        }
    } else if let Ok(text) = std::fs::read_to_string(dir.join("run.json")) {
        let previous: Value = serde_json::from_str(&text)?;
        records.extend(
            previous["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| !steps.iter().any(|s| r["section"] == s.section))
                .cloned(),
        );
    }
    std::fs::create_dir_all(&dir)?;
    for step in &steps {
        let file = dir.join(format!("{}.jsonl", step.section));
        if file.exists() {
            std::fs::remove_file(&file)?;
        }
    }
    let machine = machine::describe(root);
    let load_start = machine::loadavg();
    let measuring = Instant::now();
    let mut all_ok = true;
    for (i, step) in steps.iter().enumerate() {
        let file = dir.join(format!("{}.jsonl", step.section));
        eprintln!(
            "== [{}/{}] {}: {} (x{})",
            i + 1,
            steps.len(),
            step.section,
            step.shown(),
            step.invocations
        );
        let load_before = machine::loadavg();
        let started_at = machine::now_utc();
        let step_started = Instant::now();
        let mut status = "ok".to_owned();
        for _ in 0..step.invocations {
            let result = cargo_command(root, &step.args)
                .envs(step.env.iter().map(|(k, v)| (*k, v.as_str())))
                .env("BENCH_REPORT_FILE", &file)
                .status();
            match result {
                Ok(s) if s.success() => {}
                Ok(s) => {
                    status = format!("failed ({s})");
                    break;
                }
                Err(e) => {
                    status = format!("failed to start ({e})");
                    break;
                }
            }
        }
        all_ok &= status == "ok";
        let seconds = step_started.elapsed().as_secs_f64();
        eprintln!("== {}: {status} in {seconds:.0} s", step.section);
        records.push(json!({
            "section": step.section,
            "title": step.title,
            "command": step.shown(),
            "invocations": step.invocations,
            "status": status,
            "started": started_at,
            "seconds": seconds,
            "load_before": load_before,
            "load_after": machine::loadavg(),
        }));
    }
    records.sort_by_key(|r| {
        SECTIONS
            .iter()
            .position(|s| r["section"] == *s)
            .unwrap_or(usize::MAX)
    });
    let run = json!({
        "mode": if options.quick { "quick" } else { "full" },
        "only": options.only,
        "started": started_at,
        "seconds_total": started.elapsed().as_secs_f64(),
        "seconds_measuring": measuring.elapsed().as_secs_f64(),
        "machine": machine,
        "load_start": load_start,
        "load_end": machine::loadavg(),
        "steps": records,
    });
    std::fs::write(dir.join("run.json"), serde_json::to_string_pretty(&run)?)?;
    report::rewrite(&doc, &run, &dir)?;
    eprintln!(
        "rewrote {} ({:.0} s in all; raw figures in {})",
        doc.display(),
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(all_ok)
}
