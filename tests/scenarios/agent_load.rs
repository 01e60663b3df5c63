//! Agent fan-out on a real `deployd` process: 1,000 simulated agents (tokio tasks in this process speaking the agent protocol over loopback) each receive one no-op deploy task.
//!
//! Every simulated agent registers with its own bootstrap token, long-polls, and
//! answers a `deploy` at once with `deployed` (an `inspect` with what it last
//! deployed). One environment holds one docker_host target per agent (pinned by
//! `agent_id`, no health check); one all-at-once job with parallelism = agents
//! dispatches them all. Dispatch-to-result latency per task is the time between its
//! `dispatch` and `verify` events (the executor's call in between is the round trip
//! through the agent); the baseline, in the same run, is one task to one agent.
//! Printed (with `--no-capture`): deployd's `VmHWM` idle, with every agent connected
//! and after the job; latency p50/p99/max; total job time. The agent count is
//! `DEPLOY_AGENT_BENCH_AGENTS` (default 1,000, 1 to 5,000); docs/benchmarks.md has the
//! figures, taken with `DEPLOY_TESTS_DEPLOYD=target/release/deployd`.
//!
//! Asserted: the job completes and every task ran one attempt. With
//! `BENCH_REPORT_FILE` set (by `cargo xtask bench`) the figures also go to that file
//! as JSON lines (deploy_testkit::bench_report), each with its same-run baseline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deploy_testkit::bench_report::{Better, Figure, Goal};
use deploy_testkit::{free_port, temp_dir};
use serde_json::{Value, json};

use crate::agent_e2e::watch;
use crate::deployd_proc::{ADMIN_TOKEN, Deployd, cpu_ms, deployd_path, ok_json};

/// The image every simulated agent "deploys" (never pulled: the agents are simulated).
const IMAGE: &str = "127.0.0.1:5999/bench/web@sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// The long-poll wait the real agent uses with deployd's default 15 s heartbeat
/// timeout (`min(25 s, heartbeat / 3)`), so idle agents hold their polls open.
const POLL_WAIT_MS: u64 = 5_000;

fn agent_count() -> usize {
    std::env::var("DEPLOY_AGENT_BENCH_AGENTS")
        .ok()
        .map_or(1_000, |n| {
            n.parse().expect("DEPLOY_AGENT_BENCH_AGENTS is a number")
        })
        .clamp(1, 5_000)
}

/// One simulated agent: its credential and name.
pub(crate) struct SimAgent {
    id: String,
    credential: String,
}

/// `POST {base}{path}` with `bearer`; status and JSON body.
async fn post(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    bearer: &str,
    body: &Value,
) -> (u16, Value) {
    let response = client
        .post(format!("{base}{path}"))
        .bearer_auth(bearer)
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Creates `n` bootstrap tokens and registers `n` agents with them, `concurrency` at a time.
pub(crate) async fn register(
    client: &reqwest::Client,
    base: &str,
    n: usize,
    tag: &str,
) -> Vec<SimAgent> {
    let mut agents = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        let mut calls = Vec::new();
        for &i in chunk {
            let client = client.clone();
            let base = base.to_owned();
            let name = format!("{tag}-{i:05}");
            calls.push(tokio::spawn(async move {
                let (status, token) = post(
                    &client,
                    &base,
                    "/api/v1/agents/bootstrap-tokens",
                    ADMIN_TOKEN,
                    &json!({"name": name}),
                )
                .await;
                assert_eq!(status, 201, "{token:#}");
                let bootstrap = token["token"].as_str().unwrap().to_owned();
                let (status, creds) = post(
                    &client,
                    &base,
                    "/api/v1/agent/register",
                    &bootstrap,
                    &json!({"protocol": 1, "name": name, "capabilities": ["docker"]}),
                )
                .await;
                assert_eq!(status, 201, "{creds:#}");
                SimAgent {
                    id: creds["agent_id"].as_str().unwrap().to_owned(),
                    credential: creds["credential"].as_str().unwrap().to_owned(),
                }
            }));
        }
        for call in calls {
            agents.push(call.await.unwrap());
        }
    }
    agents
}

/// What a simulated agent does with a deploy: how long it takes, and the log lines it
/// sends meanwhile. The default answers at once, without a line.
#[derive(Debug, Clone, Default)]
pub(crate) struct Work {
    /// How long a deploy takes.
    pub(crate) hold: Duration,
    /// Log lines sent during a deploy, one request each, spread over `hold`.
    pub(crate) lines: u64,
    /// Counts the requests of the agent loop (polls, log lines, results) as they are answered.
    pub(crate) requests: Arc<AtomicU64>,
}

/// The agent loop: long-poll, answer every delivery (a deploy after `work`), until `stop`.
pub(crate) async fn run_agent(
    client: reqwest::Client,
    base: String,
    agent: SimAgent,
    stop: Arc<AtomicBool>,
    work: Work,
) {
    let mut current: Option<String> = None;
    let counted = |answer| {
        work.requests.fetch_add(1, Ordering::Relaxed);
        answer
    };
    while !stop.load(Ordering::Relaxed) {
        let (status, polled) = counted(
            post(
                &client,
                &base,
                "/api/v1/agent/poll",
                &agent.credential,
                &json!({"protocol": 1, "running": [], "wait_ms": POLL_WAIT_MS}),
            )
            .await,
        );
        if status != 200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        for delivery in polled["deliveries"].as_array().into_iter().flatten() {
            let action = &delivery["action"];
            let key = &delivery["key"];
            let attempt_path = format!(
                "/api/v1/agent/tasks/{}/attempts/{}",
                key["task_id"].as_str().unwrap(),
                key["attempt"]
            );
            let mut lines = 0;
            let outcome = match action["action"].as_str().unwrap() {
                "deploy" | "rollback" => {
                    lines = work.lines;
                    for line in 0..lines {
                        tokio::time::sleep(work.hold / u32::try_from(lines).unwrap()).await;
                        let text = format!("step {} of {lines}", line + 1);
                        let body = json!({"protocol": 1, "first_seq": line,
                                          "lines": [{"stream": "agent", "text": text}]});
                        let path = format!("{attempt_path}/logs");
                        let (status, ack) =
                            counted(post(&client, &base, &path, &agent.credential, &body).await);
                        assert_eq!(status, 200, "log of {}: {ack:#}", agent.id);
                    }
                    if lines == 0 {
                        tokio::time::sleep(work.hold).await;
                    }
                    let digest = action["deploy"]["digest"].as_str().unwrap().to_owned();
                    let previous = current.replace(digest.clone());
                    json!({"outcome": "deployed", "deployed_digest": digest,
                           "previous_digest": previous, "changed": true,
                           "running": {"web": digest}})
                }
                "inspect" => json!({"outcome": "inspected", "digest": current}),
                _ => json!({"outcome": "command_ran", "exit_status": 0, "stdout": ""}),
            };
            let path = format!("{attempt_path}/result");
            let body = json!({"protocol": 1, "log_lines": lines, "outcome": outcome});
            let (status, ack) =
                counted(post(&client, &base, &path, &agent.credential, &body).await);
            assert_eq!(status, 200, "result of {}: {ack:#}", agent.id);
        }
    }
}

/// Creates an environment with one target per agent and a release; (env id, release id).
pub(crate) async fn environment(
    client: &reqwest::Client,
    base: &str,
    agents: &[SimAgent],
    name: &str,
) -> (String, String) {
    let (status, env) = post(
        client,
        base,
        "/api/v1/environments",
        ADMIN_TOKEN,
        &json!({"name": name}),
    )
    .await;
    assert_eq!(status, 201, "{env:#}");
    let env_id = env["id"].as_str().unwrap().to_owned();
    for chunk in agents.chunks(50) {
        let mut calls = Vec::new();
        for agent in chunk {
            let (client, base, env_id) = (client.clone(), base.to_owned(), env_id.clone());
            let body = json!({
                "name": format!("t-{}", &agent.id[agent.id.len() - 12..]),
                "target_type": "docker_host",
                "connection": {"model": "agent", "agent_id": agent.id, "work_dir": "/tmp"},
            });
            calls.push(tokio::spawn(async move {
                let path = format!("/api/v1/environments/{env_id}/targets");
                let (status, target) = post(&client, &base, &path, ADMIN_TOKEN, &body).await;
                assert_eq!(status, 201, "{target:#}");
            }));
        }
        for call in calls {
            call.await.unwrap();
        }
    }
    let (status, release) = post(
        client,
        base,
        "/api/v1/releases",
        ADMIN_TOKEN,
        &json!({"name": format!("{name}-r1"), "components": [{"name": "web", "image": IMAGE}]}),
    )
    .await;
    assert_eq!(status, 201, "{release:#}");
    (env_id, release["id"].as_str().unwrap().to_owned())
}

/// Runs one all-at-once deploy of `release` to `env` and follows it; (per-task
/// dispatch-to-verify latencies sorted, total job time).
#[expect(clippy::print_stdout, reason = "reports the spread of the fan-out")]
fn deploy_and_measure(
    addr: &str,
    release: &str,
    env: &str,
    parallelism: usize,
) -> (Vec<Duration>, Duration) {
    let started = Instant::now();
    let p = parallelism.to_string();
    let job = ok_json(
        addr,
        &[
            "deploy",
            "--release",
            release,
            "--env",
            env,
            "--parallelism",
            &p,
        ],
    );
    let job = job["id"].as_str().unwrap().to_owned();
    let (code, events) = watch(addr, &job);
    let total = started.elapsed();
    assert_eq!(code, Some(0), "{events:#?}");
    let at = |e: &Value| {
        deploy_core::Timestamp::parse(e["data"]["at"].as_str().unwrap())
            .unwrap()
            .unix_millis()
    };
    let mut dispatched = std::collections::HashMap::new();
    let mut started = std::collections::HashMap::new();
    let mut latencies = Vec::new();
    // Where the time goes: the dispatch to the executor's start (the engine and the
    // store), and the start to the result (the executor's round trip through the agent).
    let (mut to_start, mut to_result) = (Vec::new(), Vec::new());
    let (mut first, mut last_dispatch, mut last_result) = (u64::MAX, 0, 0);
    for e in &events {
        let Some(task) = e["data"]["task_id"].as_str() else {
            continue;
        };
        match e["data"]["event"].as_str() {
            Some("dispatch") => {
                first = first.min(at(e));
                last_dispatch = last_dispatch.max(at(e));
                assert!(
                    dispatched.insert(task.to_owned(), at(e)).is_none(),
                    "task {task} dispatched twice"
                );
            }
            Some("start") => {
                started.insert(task.to_owned(), at(e));
                to_start.push(Duration::from_millis(at(e) - dispatched[task]));
            }
            Some("verify") => {
                last_result = last_result.max(at(e));
                let from = dispatched[task];
                latencies.push(Duration::from_millis(at(e) - from));
                if let Some(s) = started.get(task) {
                    to_result.push(Duration::from_millis(at(e) - s));
                }
            }
            _ => {}
        }
    }
    let shown = ok_json(addr, &["jobs", "show", &job]);
    assert_eq!(shown["status"], "completed");
    assert_eq!(
        latencies.len(),
        shown["tasks"].as_array().unwrap().len(),
        "one result per task"
    );
    latencies.sort();
    to_start.sort();
    to_result.sort();
    if latencies.len() > 1 {
        println!(
            "  dispatches spread over {} ms, results until {} ms after the first dispatch",
            last_dispatch - first,
            last_result - first
        );
        println!(
            "  dispatch to start p50 {:.0} ms, p99 {:.0} ms; start to result p50 {:.0} ms, p99 {:.0} ms",
            pct(&to_start, 50),
            pct(&to_start, 99),
            pct(&to_result, 50),
            pct(&to_result, 99)
        );
    }
    (latencies, total)
}

fn pct(sorted: &[Duration], p: usize) -> f64 {
    let i = (sorted.len() * p / 100).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1000.0
}

#[test]
#[expect(
    clippy::print_stdout,
    reason = "the test reports its figures (nextest --no-capture shows them)"
)]
fn agent_fan_out_to_many_simulated_agents() {
    let n = agent_count();
    let data = temp_dir("agent-load-").unwrap();
    let known_hosts = data.path().join("known_hosts");
    std::fs::write(&known_hosts, "").unwrap();
    let port = free_port().unwrap();
    let server = Deployd::start(data.path(), port, &known_hosts, &[]);
    let addr = server.addr.clone();
    let base = format!("http://{addr}");
    let idle_kib = server.memory_kib().0;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));

    // Baseline: one agent, one target, one task (median of 5 deploys).
    let (single, single_env) = runtime.block_on(async {
        let agents = register(&client, &base, 1, "solo").await;
        let env = environment(&client, &base, &agents, "solo").await;
        for agent in agents {
            tokio::spawn(run_agent(
                client.clone(),
                base.clone(),
                agent,
                stop.clone(),
                Work::default(),
            ));
        }
        (Vec::<Duration>::new(), env)
    });
    let mut single = single;
    for round in 0..5 {
        // A new release each round, so every deploy changes the digest.
        let image = IMAGE.replace("1111", &format!("{round}{round}{round}{round}"));
        let release = ok_json(
            &addr,
            &[
                "release",
                "create",
                &format!("solo-{round}"),
                "--component",
                &format!("web={image}"),
            ],
        );
        let (latencies, _) =
            deploy_and_measure(&addr, release["id"].as_str().unwrap(), &single_env.0, 1);
        single.extend(latencies);
    }
    single.sort();

    // The fan-out: n agents, connected and polling before the job starts.
    let setup = Instant::now();
    let (env_id, release_id) = runtime.block_on(async {
        let agents = register(&client, &base, n, "sim").await;
        let env = environment(&client, &base, &agents, "fleet").await;
        for agent in agents {
            tokio::spawn(run_agent(
                client.clone(),
                base.clone(),
                agent,
                stop.clone(),
                Work::default(),
            ));
        }
        env
    });
    let setup = setup.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let connected_kib = server.memory_kib().0;
    let (deployd_cpu, agents_cpu) = (server.cpu_ms(), cpu_ms("self"));
    let (latencies, total) = deploy_and_measure(&addr, &release_id, &env_id, n);
    let deployd_cpu = server.cpu_ms() - deployd_cpu;
    let agents_cpu = cpu_ms("self") - agents_cpu;
    let after_kib = server.memory_kib().0;
    stop.store(true, Ordering::Relaxed);
    runtime.shutdown_timeout(Duration::from_secs(POLL_WAIT_MS / 1000 + 2));

    println!("agent fan-out, deployd {}", deployd_path().display());
    println!(
        "  baseline 1 agent x 1 task (5 deploys): dispatch-to-result p50 {:.1} ms, max {:.1} ms",
        pct(&single, 50),
        pct(&single, 100)
    );
    println!(
        "  {n} agents x 1 task: dispatch-to-result p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; job {:.2} s (setup {:.1} s)",
        pct(&latencies, 50),
        pct(&latencies, 99),
        pct(&latencies, 100),
        total.as_secs_f64(),
        setup.as_secs_f64()
    );
    println!(
        "  CPU during the job: deployd {deployd_cpu} ms, the simulated agents (this test process) {agents_cpu} ms"
    );
    println!(
        "  deployd VmHWM: idle {} MiB, {n} agents connected {} MiB, after the job {} MiB",
        idle_kib / 1024,
        connected_kib / 1024,
        after_kib / 1024
    );
    assert_eq!(latencies.len(), n);
    report(n, &single, &latencies, (idle_kib, connected_kib, after_kib));
}

/// The figures for `cargo xtask bench` (nothing unless `BENCH_REPORT_FILE` is set).
fn report(
    n: usize,
    single: &[Duration],
    fleet: &[Duration],
    (idle, connected, after): (u64, u64, u64),
) {
    const SECTION: &str = "agents";
    let mb = |kib: u64| kib as f64 * 1024.0 / 1e6;
    let figures = [
        Figure::new(
            SECTION,
            &format!("dispatch-to-result p50, {n} agents at once"),
            "ms",
            Better::Lower,
            vec![pct(fleet, 50)],
        )
        .baseline("1 agent, 1 task (p50 of 5 deploys)", vec![pct(single, 50)])
        .notes("per task, its `dispatch` to its `verify` event; one value per run"),
        Figure::new(
            SECTION,
            &format!("dispatch-to-result p99, {n} agents at once"),
            "ms",
            Better::Lower,
            vec![pct(fleet, 99)],
        )
        .baseline("1 agent, 1 task (max of 5 deploys)", vec![pct(single, 100)])
        .goal(Goal::median_below(250.0))
        .notes("one value per run"),
        Figure::new(
            SECTION,
            &format!("deployd peak RSS (VmHWM), {n} agents connected, after the job"),
            "MB",
            Better::Lower,
            vec![mb(after)],
        )
        .baseline("deployd VmHWM idle, before any agent", vec![mb(idle)])
        .goal(Goal::median_below(150.0))
        .notes(&format!(
            "with the agents connected and polling, before the job: {:.0} MB",
            mb(connected)
        )),
    ];
    for figure in figures {
        figure.emit().unwrap();
    }
}

/// The same fan-out over two replicas on one PostgreSQL: half the agents poll A, half
/// poll B, and whichever replica claims the job dispatches to all of them (so about
/// half the keys cross replicas through the relay). The baseline is one agent polling
/// B with its task's job created on A (five deploys).
#[test]
#[expect(
    clippy::print_stdout,
    reason = "the test reports its figures (nextest --no-capture shows them)"
)]
fn agent_fan_out_across_two_replicas() {
    let n = agent_count();
    let pg = deploy_testkit::Postgres::start().unwrap();
    let data = temp_dir("agent-load-2-").unwrap();
    let known_hosts = data.path().join("known_hosts");
    std::fs::write(&known_hosts, "").unwrap();
    let url = pg.url();
    let env = [("DEPLOYD_DATABASE_URL", url.as_str())];
    let (dir_a, dir_b) = (data.path().join("a"), data.path().join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let a = Deployd::start(&dir_a, free_port().unwrap(), &known_hosts, &env);
    let b = Deployd::start(&dir_b, free_port().unwrap(), &known_hosts, &env);
    let (base_a, base_b) = (format!("http://{}", a.addr), format!("http://{}", b.addr));
    let idle = (a.memory_kib().0, b.memory_kib().0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));

    // Baseline: one agent on B, its job created on A.
    let solo_env = runtime.block_on(async {
        let agents = register(&client, &base_a, 1, "solo").await;
        let env = environment(&client, &base_a, &agents, "solo").await;
        for agent in agents {
            tokio::spawn(run_agent(
                client.clone(),
                base_b.clone(),
                agent,
                stop.clone(),
                Work::default(),
            ));
        }
        env
    });
    let mut single = Vec::new();
    for round in 0..5 {
        let image = IMAGE.replace("1111", &format!("{round}{round}{round}{round}"));
        let release = ok_json(
            &a.addr,
            &[
                "release",
                "create",
                &format!("solo-{round}"),
                "--component",
                &format!("web={image}"),
            ],
        );
        let (latencies, _) =
            deploy_and_measure(&a.addr, release["id"].as_str().unwrap(), &solo_env.0, 1);
        single.extend(latencies);
    }
    single.sort();

    let (env_id, release_id) = runtime.block_on(async {
        let agents = register(&client, &base_a, n, "sim").await;
        let env = environment(&client, &base_a, &agents, "fleet").await;
        for (i, agent) in agents.into_iter().enumerate() {
            let base = if i % 2 == 0 { &base_a } else { &base_b };
            tokio::spawn(run_agent(
                client.clone(),
                base.clone(),
                agent,
                stop.clone(),
                Work::default(),
            ));
        }
        env
    });
    std::thread::sleep(Duration::from_secs(2));
    let connected = (a.memory_kib().0, b.memory_kib().0);
    let cpu = (a.cpu_ms(), b.cpu_ms());
    let (latencies, total) = deploy_and_measure(&a.addr, &release_id, &env_id, n);
    let cpu = (a.cpu_ms() - cpu.0, b.cpu_ms() - cpu.1);
    let after = (a.memory_kib().0, b.memory_kib().0);
    stop.store(true, Ordering::Relaxed);
    runtime.shutdown_timeout(Duration::from_secs(POLL_WAIT_MS / 1000 + 2));

    println!(
        "agent fan-out over two replicas (PostgreSQL), deployd {}",
        deployd_path().display()
    );
    println!(
        "  baseline 1 agent on B, job created on A (5 deploys): dispatch-to-result p50 {:.1} ms, max {:.1} ms",
        pct(&single, 50),
        pct(&single, 100)
    );
    println!(
        "  {n} agents (half on each replica) x 1 task: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; job {:.2} s",
        pct(&latencies, 50),
        pct(&latencies, 99),
        pct(&latencies, 100),
        total.as_secs_f64()
    );
    println!("  CPU during the job: A {} ms, B {} ms", cpu.0, cpu.1);
    println!(
        "  VmHWM: A idle {} / connected {} / after {} MiB; B idle {} / connected {} / after {} MiB",
        idle.0 / 1024,
        connected.0 / 1024,
        after.0 / 1024,
        idle.1 / 1024,
        connected.1 / 1024,
        after.1 / 1024
    );
    assert_eq!(latencies.len(), n);
    report_two_replicas(n, &single, &latencies, idle, after);
}

/// The two-replica figures for `cargo xtask bench` (nothing unless `BENCH_REPORT_FILE` is set).
fn report_two_replicas(
    n: usize,
    single: &[Duration],
    fleet: &[Duration],
    idle: (u64, u64),
    after: (u64, u64),
) {
    const SECTION: &str = "agents";
    let mb = |kib: u64| kib as f64 * 1024.0 / 1e6;
    let mut figures = vec![
        Figure::new(
            SECTION,
            &format!("dispatch-to-result p99, {n} agents over two replicas"),
            "ms",
            Better::Lower,
            vec![pct(fleet, 99)],
        )
        .baseline(
            "1 agent on the other replica, 1 task (max of 5 deploys)",
            vec![pct(single, 100)],
        )
        .notes("PostgreSQL; half the agents poll each replica; one value per run"),
    ];
    for (replica, idle, after) in [("A", idle.0, after.0), ("B", idle.1, after.1)] {
        figures.push(
            Figure::new(
                SECTION,
                &format!("replica {replica} peak RSS (VmHWM), {n} agents over two replicas"),
                "MB",
                Better::Lower,
                vec![mb(after)],
            )
            .baseline("the replica's VmHWM idle", vec![mb(idle)])
            .goal(Goal::median_below(150.0)),
        );
    }
    for figure in figures {
        figure.emit().unwrap();
    }
}
