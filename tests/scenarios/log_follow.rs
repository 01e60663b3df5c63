//! Following the logs of a 1,000-task job on a real `deployd`: the requests per second `deployctl jobs watch --logs` sends and the CPU time deployd spends meanwhile.
//!
//! The job runs on simulated agents (`agent_load`'s, in this process): each holds
//! its deploy for `DEPLOY_LOGS_BENCH_HOLD_MS` (default 10,000) and sends
//! `DEPLOY_LOGS_BENCH_LINES` log lines (default 5) spread over it, so a job of
//! `DEPLOY_LOGS_BENCH_TASKS` tasks (default 1,000, all at once) runs for about that
//! long while its lines are written. Each round (`DEPLOY_LOGS_BENCH_ROUNDS`, default
//! 3) deploys a new release once per way of following it, the ways in a different
//! order each round: `jobs watch --logs` (the job's log stream), `jobs watch` without
//! `--logs` (what following costs without logs), and, when
//! `DEPLOY_LOGS_BENCH_BEFORE` names a deployctl built from before the job log
//! stream (which read every task's log once a second), that one's `jobs watch --logs`.
//! Each watch starts as soon as its job is created and runs to its own exit.
//!
//! Requests the CLI sent: deployd's `deployd_http_responses_total` over the watch,
//! less the requests of the simulated agents answered meanwhile (counted here) and
//! the first scrape; per second of the watch. CPU: deployd's user + system time over
//! the watch (`/proc/<pid>/stat`). Asserted: every job completes and each `--logs`
//! watch of this deployctl printed every line the agents sent, once (the older one's
//! lines are counted: it dropped those read in a sweep that the job's end cut short). With `BENCH_REPORT_FILE` set (by
//! `cargo xtask bench`) the figures go to that file, the baseline being the older
//! deployctl when given, else the watch without `--logs`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deploy_testkit::bench_report::{Better, Figure};
use deploy_testkit::{free_port, http_get, temp_dir};

use crate::agent_load::{Work, environment, register, run_agent};
use crate::deployd_proc::{ADMIN_TOKEN, Deployd, binaries, json_lines, ok_json};

const IMAGE: &str = "127.0.0.1:5999/bench/web";

fn setting(name: &str, default: u64, range: std::ops::RangeInclusive<u64>) -> u64 {
    std::env::var(name)
        .ok()
        .map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        })
        .clamp(*range.start(), *range.end())
}

/// A way of following the job: a deployctl and whether it asks for the logs.
#[derive(Debug, Clone)]
struct Way {
    name: &'static str,
    deployctl: PathBuf,
    logs: bool,
    /// The older deployctl: its lines are counted, not asserted (it lost those it had
    /// read in a sweep cut short by the job's end).
    older: bool,
}

/// What one watch cost.
#[derive(Debug, Default, Clone)]
struct Cost {
    requests_per_second: Vec<f64>,
    requests: Vec<f64>,
    cpu_ms: Vec<f64>,
    seconds: Vec<f64>,
    /// The agents' log lines printed, once each.
    lines: Vec<f64>,
}

/// The sum of deployd's response counters.
fn responses(addr: &str) -> u64 {
    let (status, text) = http_get(addr, "/metrics").unwrap();
    assert_eq!(status, 200, "{text}");
    text.lines()
        .filter(|l| l.starts_with("deployd_http_responses_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[test]
#[expect(
    clippy::print_stdout,
    reason = "the test reports its figures (nextest --no-capture shows them)"
)]
fn following_the_logs_of_a_thousand_task_job() {
    let tasks = usize::try_from(setting("DEPLOY_LOGS_BENCH_TASKS", 1_000, 1..=5_000)).unwrap();
    let rounds = setting("DEPLOY_LOGS_BENCH_ROUNDS", 3, 1..=20);
    let hold = Duration::from_millis(setting("DEPLOY_LOGS_BENCH_HOLD_MS", 10_000, 0..=120_000));
    let lines = setting("DEPLOY_LOGS_BENCH_LINES", 5, 0..=100);
    let (_, deployctl) = binaries();
    let mut ways = vec![
        Way {
            name: "the job's log stream (`jobs watch --logs`)",
            deployctl: deployctl.clone(),
            logs: true,
            older: false,
        },
        Way {
            name: "without --logs (`jobs watch`)",
            deployctl: deployctl.clone(),
            logs: false,
            older: false,
        },
    ];
    if let Some(before) = std::env::var_os("DEPLOY_LOGS_BENCH_BEFORE") {
        let before = PathBuf::from(before);
        assert!(
            before.is_file(),
            "DEPLOY_LOGS_BENCH_BEFORE={} is not a file",
            before.display()
        );
        ways.push(Way {
            name: "per-task polling (`jobs watch --logs` of the older deployctl)",
            deployctl: before,
            logs: true,
            older: true,
        });
    }

    let data = temp_dir("log-follow-").unwrap();
    let known_hosts = data.path().join("known_hosts");
    std::fs::write(&known_hosts, "").unwrap();
    let server = Deployd::start(data.path(), free_port().unwrap(), &known_hosts, &[]);
    let addr = server.addr.clone();
    let base = format!("http://{addr}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let agent_requests = Arc::new(AtomicU64::new(0));
    let (env, _) = runtime.block_on(async {
        let agents = register(&client, &base, tasks, "sim").await;
        let env = environment(&client, &base, &agents, "fleet").await;
        for agent in agents {
            let work = Work {
                hold,
                lines,
                requests: agent_requests.clone(),
            };
            let (client, base, stop) = (client.clone(), base.clone(), stop.clone());
            tokio::spawn(run_agent(client, base, agent, stop, work));
        }
        env
    });

    let mut costs: HashMap<&'static str, Cost> = HashMap::new();
    let mut deploys = 0u64;
    for round in 0..rounds {
        let turn = usize::try_from(round).unwrap() % ways.len();
        let order: Vec<Way> = ways[turn..].iter().chain(&ways[..turn]).cloned().collect();
        for way in order {
            deploys += 1;
            let image = format!("{IMAGE}@sha256:{deploys:064x}");
            let release = ok_json(
                &addr,
                &[
                    "release",
                    "create",
                    &format!("r{deploys}"),
                    "--component",
                    &format!("web={image}"),
                ],
            );
            let release = release["id"].as_str().unwrap();
            let parallelism = tasks.to_string();
            let job = ok_json(
                &addr,
                &[
                    "deploy",
                    "--release",
                    release,
                    "--env",
                    &env,
                    "--parallelism",
                    &parallelism,
                ],
            );
            let job = job["id"].as_str().unwrap().to_owned();

            let (count, agents, cpu) = (
                responses(&addr),
                agent_requests.load(Ordering::Relaxed),
                server.cpu_ms(),
            );
            let started = Instant::now();
            let mut watch = std::process::Command::new(&way.deployctl);
            watch
                .args(["jobs", "watch", &job, "--output", "json"])
                .env("DEPLOYCTL_SERVER", &base)
                .env("DEPLOYCTL_TOKEN", ADMIN_TOKEN)
                .stdin(std::process::Stdio::null());
            if way.logs {
                watch.arg("--logs");
            }
            let out = watch.output().unwrap();
            let seconds = started.elapsed().as_secs_f64();
            let cpu = server.cpu_ms() - cpu;
            let agents = agent_requests.load(Ordering::Relaxed) - agents;
            // The first scrape's own response is counted after it.
            let requests = (responses(&addr) - count).saturating_sub(agents + 1);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}: {}",
                way.name,
                String::from_utf8_lossy(&out.stderr)
            );
            let printed = json_lines(&out.stdout);
            // The agents' lines (the engine adds its own): each printed once.
            let mut sent: Vec<(&str, &str)> = printed
                .iter()
                .filter(|l| l["event"] == "log")
                .map(|l| (l["task_id"].as_str().unwrap(), l["line"].as_str().unwrap()))
                .filter(|(_, line)| line.starts_with("step "))
                .collect();
            let expected = if way.logs { tasks as u64 * lines } else { 0 };
            let printed_lines = sent.len() as u64;
            sent.sort_unstable();
            sent.dedup();
            let distinct = sent.len() as u64;
            if !way.older {
                assert_eq!(printed_lines, expected, "{}: lines printed", way.name);
                assert_eq!(distinct, expected, "{}: each line once", way.name);
            }
            let summary = printed.iter().find(|l| l["event"] == "summary");
            assert_eq!(summary.is_some(), way.logs, "{}", way.name);
            println!(
                "  round {round}, {}: {requests} requests in {seconds:.1} s ({:.1}/s), deployd CPU {cpu} ms; \
                 {printed_lines} of the agents' {expected} lines printed, {distinct} distinct",
                way.name,
                requests as f64 / seconds
            );
            let cost = costs.entry(way.name).or_default();
            cost.requests_per_second.push(requests as f64 / seconds);
            cost.requests.push(requests as f64);
            cost.cpu_ms.push(cpu as f64);
            cost.seconds.push(seconds);
            cost.lines.push(distinct as f64);
        }
    }
    stop.store(true, Ordering::Relaxed);
    runtime.shutdown_timeout(Duration::from_secs(7));
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "log following, {tasks} tasks x {lines} lines over {} ms, {rounds} rounds (medians):",
        hold.as_millis()
    );
    for way in &ways {
        let c = &costs[way.name];
        println!(
            "  {}: {:.1} requests/s ({:.0} in {:.1} s), deployd CPU {:.0} ms, {:.0} lines printed",
            way.name,
            median(&c.requests_per_second),
            median(&c.requests),
            median(&c.seconds),
            median(&c.cpu_ms),
            median(&c.lines)
        );
    }
    report(tasks, lines, hold, &ways, &costs);
}

/// The figures for `cargo xtask bench` (nothing unless `BENCH_REPORT_FILE` is set).
fn report(
    tasks: usize,
    lines: u64,
    hold: Duration,
    ways: &[Way],
    costs: &HashMap<&'static str, Cost>,
) {
    const SECTION: &str = "logs";
    let (stream, bare) = (&costs[ways[0].name], &costs[ways[1].name]);
    let (baseline_name, baseline) = match ways.get(2) {
        Some(before) => (before.name, &costs[before.name]),
        None => (ways[1].name, bare),
    };
    let job = format!(
        "{tasks} tasks on simulated agents, each {lines} log lines over {:.0} s, all at once",
        hold.as_secs_f64()
    );
    let mut figures = vec![
        Figure::new(
            SECTION,
            &format!("requests/s deployctl sends, `jobs watch --logs` of {tasks} tasks"),
            "requests/s",
            Better::Lower,
            stream.requests_per_second.clone(),
        )
        .baseline(baseline_name, baseline.requests_per_second.clone())
        .notes(&format!(
            "{job}; deployd's response counter over the watch less the agents' requests; one value per round"
        )),
        Figure::new(
            SECTION,
            &format!("deployd CPU time while `jobs watch --logs` follows {tasks} tasks"),
            "ms",
            Better::Lower,
            stream.cpu_ms.clone(),
        )
        .baseline(baseline_name, baseline.cpu_ms.clone())
        .notes("user + system time of deployd over the watch, the agents' traffic included"),
    ];
    if ways.len() > 2 {
        figures.push(
            Figure::new(
                SECTION,
                "deployd CPU time while `jobs watch` (no logs) follows the same job",
                "ms",
                Better::Lower,
                bare.cpu_ms.clone(),
            )
            .notes("the floor: the agents' traffic and the job's event stream alone"),
        );
    }
    for figure in figures {
        figure.emit().unwrap();
    }
}
