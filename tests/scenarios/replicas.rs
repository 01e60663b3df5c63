//! Two real deployd replicas on one real PostgreSQL with a real deploy-agent that knows both: a job claimed by the replica the agent does not poll still runs on it, and a SIGKILL of the replica the agent polls, mid-deploy, loses nothing and deploys nothing twice.
//!
//! Which replica claims a job is made certain by freezing the other one (SIGSTOP) while
//! the job is created and claimed; the agent's connections to a frozen replica simply
//! wait (its long-poll is shorter than its request timeout), so it does not fail over.

use std::process::Command;
use std::time::{Duration, Instant};

use deploy_testkit::{ContainerCleanup, Registry, TestImages, free_port, temp_dir};
use serde_json::Value;

use crate::agent_e2e::{
    create_agent_env, digest_of, running_digest, start_deploy, task_of, wait_for_task_container,
    watch,
};
use crate::agent_proc::{AgentProc, bootstrap_token, slow_image, wait_active};
use crate::deployd_e2e::serves;
use crate::deployd_proc::{Deployd, api_get, create_release, ok_json};

/// Short enough that the takeover after a SIGKILL comes within seconds.
const LEASE_MS: &str = "3000";
const HEARTBEAT_MS: &str = "6000";
/// Seconds the slow image takes to become healthy: the window to kill a replica in.
const SLOW_S: u32 = 6;

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

/// The replica whose log shows the job's start: the one that claimed it.
fn claimer<'a>(job: &str, replicas: &[(&'a str, String)]) -> Vec<&'a str> {
    replicas
        .iter()
        .filter(|(_, log)| {
            log.lines()
                .any(|l| l.contains(job) && l.contains("job transition") && l.contains("start"))
        })
        .map(|(name, _)| *name)
        .collect()
}

/// Creates a deploy job of `release` on `creator` while `frozen` is stopped, and waits
/// until its task is dispatched (so the claim was the live replica's).
fn deploy_claimed_by(creator: &str, frozen: u32, release: &str, env: &str) -> (String, String) {
    signal(frozen, "-STOP");
    let job = start_deploy(creator, release, env);
    let task = task_of(creator, &job);
    let started = Instant::now();
    loop {
        let shown = ok_json(creator, &["jobs", "show", &job]);
        if shown["tasks"][0]["attempt_number"].as_u64() >= Some(1) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{shown:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(frozen, "-CONT");
    (job, task)
}

#[test]
#[expect(
    clippy::print_stdout,
    reason = "the test reports how long the takeover took (nextest --no-capture shows it)"
)]
fn agents_are_served_by_every_replica_and_survive_the_death_of_theirs() {
    let prefix = format!("rp{}-", std::process::id());
    let container = format!("{prefix}web");
    let _cleanup = ContainerCleanup::new(&prefix);
    let pg = deploy_testkit::Postgres::start().unwrap();
    let registry = Registry::start().unwrap();
    let images = TestImages::build(&registry, &format!("{prefix}app")).unwrap();
    let slow = slow_image(&registry, &images.repository, &images.v2, "slow", SLOW_S);
    let data = temp_dir("replicas-").unwrap();
    let known_hosts = data.path().join("known_hosts");
    std::fs::write(&known_hosts, "").unwrap();
    let env = [
        ("DEPLOYD_DATABASE_URL", pg.url()),
        ("DEPLOYD_JOB_LEASE_MS", LEASE_MS.to_owned()),
        (
            "DEPLOYD_AGENT_HEARTBEAT_TIMEOUT_MS",
            HEARTBEAT_MS.to_owned(),
        ),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (dir_a, dir_b) = (data.path().join("a"), data.path().join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let a = Deployd::start(&dir_a, free_port().unwrap(), &known_hosts, &env);
    let b = Deployd::start(&dir_b, free_port().unwrap(), &known_hosts, &env);
    let (addr_a, addr_b) = (a.addr.clone(), b.addr.clone());

    // The agent knows both replicas and polls the first, A.
    let bootstrap = bootstrap_token(&addr_a, "replica-agent");
    let state = data.path().join("agent-state");
    let servers = format!("http://{addr_a},http://{addr_b}");
    let mut agent = AgentProc::start_with(&servers, "replica-agent", &state, Some(&bootstrap), &[]);
    let agent_id = wait_active(&addr_a, "replica-agent", &mut agent);

    let env_id = create_agent_env(&addr_a, "replicas", &agent_id, &prefix, data.path());
    let v1 = create_release(&addr_a, "v1", &images.v1);
    let slow_release = create_release(&addr_a, "slow", &slow);

    // 1. Claimed by B (A frozen meanwhile), run by the agent polling A.
    let (job, _) = deploy_claimed_by(&addr_b, a.pid(), &v1, &env_id);
    let (code, events) = watch(&addr_b, &job);
    assert_eq!(code, Some(0), "{events:#?}\n{}", agent.stderr());
    assert_eq!(
        claimer(&job, &[("A", a.stderr()), ("B", b.stderr())]),
        ["B"],
        "B claimed the job"
    );
    assert_eq!(serves(&container, "/version"), "v1");
    assert_eq!(running_digest(&container), digest_of(&images.v1));
    assert!(
        !agent.stderr().contains("switching to the next one"),
        "the agent stayed on A (it never needed B): {}",
        agent.stderr()
    );

    // 2. Claimed by A (B frozen meanwhile); A is SIGKILLed while the agent deploys.
    let (job, task) = deploy_claimed_by(&addr_a, b.pid(), &slow_release, &env_id);
    wait_for_task_container(&task, Duration::from_secs(60));
    let killed = Instant::now();
    a.kill();
    // B takes the job over once A's lease ends, and finds the attempt in flight.
    let (code, events) = watch(&addr_b, &job);
    let took = killed.elapsed();
    assert_eq!(
        code,
        Some(0),
        "{events:#?}\n{}\n{}",
        agent.stderr(),
        b.stderr()
    );
    assert_eq!(running_digest(&container), digest_of(&slow));
    assert_eq!(serves(&container, "/version"), "v2");
    let shown: Value = ok_json(&addr_b, &["jobs", "show", &job]);
    assert_eq!(
        shown["tasks"][0]["attempt_number"], 1,
        "the attempt in flight completed; none was retried: {shown:#}"
    );
    // B found the attempt in flight (its stored delivery) instead of inspecting the
    // target mid-deploy and starting a second attempt beside it.
    let (status, logs) = api_get(&addr_b, &format!("/api/v1/tasks/{task}/logs"));
    assert_eq!(status, 200, "{logs:#}");
    assert!(
        logs.to_string().contains("resuming the wait for task"),
        "{logs:#}"
    );
    let starts = agent
        .stderr()
        .lines()
        .filter(|l| l.contains(&task) && l.contains("starting deploy"))
        .count();
    assert_eq!(
        starts,
        1,
        "the agent ran the deploy once: {}",
        agent.stderr()
    );
    assert!(
        agent.stderr().contains("switching to the next one"),
        "the agent failed over to B: {}",
        agent.stderr()
    );
    println!("replicas: job completed {took:?} after the SIGKILL of the replica that ran it");
}
