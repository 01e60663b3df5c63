//! Fault scenario `agent_partition`: a real deploy-agent, inside a network namespace the test makes, is cut off from deployd mid-task for longer than the heartbeat timeout, then healed.
//!
//! The test creates its own namespace `dplnp<pid>` and a veth pair with a private
//! /30 in 10.200.0.0/16 (derived from the pid); deployd listens on the host side
//! only, the agent runs inside the namespace (`ip netns exec`; it still reaches the
//! Docker Engine through the unix socket, and the engine pulls from the loopback
//! registry in the host namespace). deployd's heartbeat timeout is 3 s.
//!
//! v1 is deployed, then an image that takes seconds to become healthy, so the task
//! is in flight when the link is cut (iptables DROP on the namespace's veth, in both
//! directions: packets vanish, nothing is refused). Checked:
//! - the in-flight attempt fails as retryable, naming the lost agent, a heartbeat
//!   timeout (plus a margin) after the cut (measured and printed), and deployd lists
//!   the agent inactive meanwhile;
//! - after the heal the agent polls again (time printed) and the job completes;
//! - no attempt ran twice: per task the dispatched attempts are 1..=n (events), and
//!   the agent's log and journal show each (task, attempt) started at most once;
//! - exactly `<name>` and `<name>-previous` exist, running the new and the v1 digest;
//! - no bootstrap token, agent credential or admin token appears in either log.
//!
//! The namespace (with its iptables rules) and the veth pair are removed on drop,
//! even when the test panics. An agent SIGKILLed mid-task is covered by
//! `agent_e2e` (its first test); this one keeps the agent alive and cuts the network.

use std::process::Command;
use std::time::{Duration, Instant};

use deploy_testkit::{ContainerCleanup, Registry, TestImages, free_port, temp_dir};
use serde_json::Value;

use crate::agent_e2e::{
    containers, create_agent_env, digest_of, running_digest, start_deploy, task_of,
    wait_for_task_container, watch,
};
use crate::agent_proc::{AgentProc, agents, bootstrap_token, slow_image, wait_active};
use crate::deployd_e2e::{assert_each_attempt_ran_once, serves};
use crate::deployd_proc::{ADMIN_TOKEN, Deployd, create_release, ok_json};

/// deployd's heartbeat timeout here (the default is 15 s).
const HEARTBEAT_MS: u64 = 3_000;

/// Seconds the slow image takes to become healthy: the task is in flight that long.
const SLOW_S: u32 = 8;

/// Runs `program args…`, panicking with its output when it fails.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} cannot run (is it installed? scripts/peers/faults.sh): {e}")
        });
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with a veth pair to the host namespace; both removed on drop.
struct Netns {
    name: String,
    host_if: String,
    ns_if: String,
    host_ip: String,
    partitioned: bool,
}

impl Netns {
    /// Creates namespace `dplnp<pid>`, veth `dnh<pid>` (host) / `dnn<pid>` (namespace)
    /// with a /30 in 10.200.0.0/16 chosen from the pid; both ends up.
    fn create() -> Self {
        let pid = std::process::id();
        let idx = pid % 16_384;
        let (third, base) = (idx / 64, (idx % 64) * 4);
        let net = Self {
            name: format!("dplnp{pid}"),
            host_if: format!("dnh{pid}"),
            ns_if: format!("dnn{pid}"),
            host_ip: format!("10.200.{third}.{}", base + 1),
            partitioned: false,
        };
        let ns_ip = format!("10.200.{third}.{}", base + 2);
        // Leftovers of an earlier run with the same pid (a kill -9 of the test).
        net.remove();
        run("ip", &["netns", "add", &net.name]);
        run(
            "ip",
            &[
                "link",
                "add",
                &net.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &net.ns_if,
                "netns",
                &net.name,
            ],
        );
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/30", net.host_ip),
                "dev",
                &net.host_if,
            ],
        );
        run("ip", &["link", "set", &net.host_if, "up"]);
        net.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            &net.ns_if,
        ]);
        net.exec(&["ip", "link", "set", &net.ns_if, "up"]);
        net.exec(&["ip", "link", "set", "lo", "up"]);
        net
    }

    /// Runs `argv` inside the namespace.
    fn exec(&self, argv: &[&str]) {
        run("ip", &[&["netns", "exec", &self.name][..], argv].concat());
    }

    /// `ip netns exec <name>`: the wrapper that starts a program inside.
    fn wrapper(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }

    /// The iptables rules of the partition (`-I` adds, `-D` deletes): drop everything on the namespace's veth.
    fn rules(&self, op: &str) -> [Vec<String>; 2] {
        let rule = |chain: &str, dir: &str| {
            ["iptables", "-w", op, chain, dir, &self.ns_if, "-j", "DROP"]
                .map(str::to_owned)
                .to_vec()
        };
        [rule("INPUT", "-i"), rule("OUTPUT", "-o")]
    }

    fn cut(&mut self) {
        for rule in self.rules("-I") {
            let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
            self.exec(&rule);
        }
        self.partitioned = true;
    }

    fn heal(&mut self) {
        for rule in self.rules("-D") {
            let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
            self.exec(&rule);
        }
        self.partitioned = false;
    }

    /// Deletes the namespace (its rules go with it) and the host end (the peer goes with it); errors ignored.
    fn remove(&self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.partitioned {
            for rule in self.rules("-D") {
                let _ = Command::new("ip")
                    .args(["netns", "exec", &self.name])
                    .args(&rule)
                    .output();
            }
        }
        self.remove();
    }
}

/// Each (task, attempt) the agent logged `starting …` for, in log order.
fn started_attempts(agent_log: &str) -> Vec<(String, String)> {
    agent_log
        .lines()
        .filter(|l| l.contains("starting "))
        .filter_map(|l| {
            let field = |key: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(key))
                    .map(|v| v.trim_matches('"').to_owned())
            };
            Some((field("task=")?, field("attempt=")?))
        })
        .collect()
}

#[test]
#[expect(
    clippy::print_stdout,
    reason = "the test reports its figures (nextest --no-capture shows them)"
)]
fn agent_partitioned_past_the_heartbeat_timeout_loses_its_attempt_then_finishes_the_job() {
    let prefix = format!("np{}-", std::process::id());
    let container = format!("{prefix}web");
    // Dropped last: processes inside it go first.
    let mut net = Netns::create();
    let _cleanup = ContainerCleanup::new(&prefix);
    let registry = Registry::start().unwrap();
    let images = TestImages::build(&registry, &format!("{prefix}app")).unwrap();
    let slow = slow_image(&registry, &images.repository, &images.v2, "slow", SLOW_S);
    let data = temp_dir("fault-partition-").unwrap();
    let known_hosts = data.path().join("known_hosts");
    std::fs::write(&known_hosts, "").unwrap();
    let heartbeat = HEARTBEAT_MS.to_string();
    let env = [("DEPLOYD_AGENT_HEARTBEAT_TIMEOUT_MS", heartbeat.as_str())];
    let addr = format!("{}:{}", net.host_ip, free_port().unwrap());
    let server = Deployd::start_at(data.path(), &addr, &known_hosts, &env);

    let bootstrap = bootstrap_token(&addr, "netns-agent");
    let state = data.path().join("agent-state");
    let mut agent = AgentProc::start_wrapped(
        &net.wrapper(),
        &format!("http://{addr}"),
        "netns-agent",
        &state,
        Some(&bootstrap),
        &["--allow-insecure-http"],
    );
    let agent_id = wait_active(&addr, "netns-agent", &mut agent);

    let env_id = create_agent_env(&addr, "partition", &agent_id, &prefix, data.path());
    let release = |name: &str, image: &str| create_release(&addr, name, image);
    let v1 = release("v1", &images.v1);
    let slow_release = release("slow", &slow);

    let job = start_deploy(&addr, &v1, &env_id);
    let (code, events) = watch(&addr, &job);
    assert_eq!(code, Some(0), "{events:#?}\n{}", agent.stderr());
    assert_eq!(serves(&container, "/version"), "v1");

    // The slow deploy is in flight (its container exists) when the link is cut.
    let job = start_deploy(&addr, &slow_release, &env_id);
    let task = task_of(&addr, &job);
    wait_for_task_container(&task, Duration::from_secs(60));
    net.cut();
    let cut = Instant::now();
    let lost_after = loop {
        let shown = ok_json(&addr, &["jobs", "show", &job]);
        let t = &shown["tasks"][0];
        if t["status"] == "retrying"
            || t["status"] == "failed"
            || t["attempt_number"].as_u64() > Some(1)
        {
            // A failed attempt waiting for its retry shows `failed` with `last_failure_retryable`.
            assert!(
                t["status"] != "failed" || t["last_failure_retryable"] == true,
                "the lost attempt is retryable: {shown:#}"
            );
            break cut.elapsed();
        }
        assert!(
            cut.elapsed() < Duration::from_secs(60),
            "no attempt failure 60 s after the cut: {shown:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        lost_after >= Duration::from_millis(HEARTBEAT_MS - 500),
        "the attempt failed {lost_after:?} after the cut, before the heartbeat timeout"
    );
    assert!(
        lost_after <= Duration::from_millis(HEARTBEAT_MS) + Duration::from_secs(10),
        "the attempt failed only {lost_after:?} after the cut (heartbeat timeout {HEARTBEAT_MS} ms)"
    );
    let listed = agents(&addr);
    assert!(
        listed
            .iter()
            .any(|a| a["id"] == agent_id.as_str() && a["active"] == false),
        "the partitioned agent is listed inactive: {listed:#?}"
    );
    // Still cut a moment past the timeout, then healed.
    std::thread::sleep(Duration::from_secs(1));
    let partitioned_for = cut.elapsed();
    net.heal();
    let healed = Instant::now();
    let reconnected_after = loop {
        if agents(&addr)
            .iter()
            .any(|a| a["id"] == agent_id.as_str() && a["active"] == true)
        {
            break healed.elapsed();
        }
        assert!(agent.running(), "deploy-agent exited: {}", agent.stderr());
        assert!(
            healed.elapsed() < Duration::from_secs(60),
            "the agent did not poll again within 60 s of the heal: {}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    let (code, events) = watch(&addr, &job);
    assert_eq!(
        code,
        Some(0),
        "{events:#?}\n{}\n{}",
        server.stderr(),
        agent.stderr()
    );
    let shown = ok_json(&addr, &["jobs", "show", &job]);
    assert_eq!(shown["status"], "completed", "{shown:#}");
    let attempts = shown["tasks"][0]["attempt_number"].as_u64().unwrap();
    assert!(attempts >= 2, "{shown:#}");
    let lost = events
        .iter()
        .find(|e| {
            e["data"]["event"]
                .as_str()
                .is_some_and(|ev| ev.starts_with("fail"))
        })
        .unwrap_or_else(|| panic!("no failed attempt in {events:#?}"));
    let cause = lost["data"]["cause"].as_str().unwrap_or_default();
    assert!(
        cause.contains("agent") && cause.contains("attempt 1"),
        "the failure names the lost agent and its attempt: {lost:#}"
    );
    assert_each_attempt_ran_once(&shown, &events);

    // On the host: each (task, attempt) started once (agent log), journaled once.
    let log = agent.stderr();
    let started = started_attempts(&log);
    let mut unique = started.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        started.len(),
        "an attempt started twice on the host: {started:?}\n{log}"
    );
    let of_task: Vec<&(String, String)> = started.iter().filter(|(t, _)| *t == task).collect();
    assert!(
        !of_task.is_empty() && of_task.len() as u64 <= attempts,
        "attempts of {task} started on the host: {of_task:?} (attempt_number {attempts})"
    );
    let journal: Vec<String> = std::fs::read_dir(state.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&task))
        .collect();
    assert!(
        journal.len() as u64 <= attempts,
        "journal entries of {task}: {journal:?} (attempt_number {attempts})"
    );
    for entry in &journal {
        let text = std::fs::read_to_string(state.join("journal").join(entry)).unwrap();
        let entry_json: Value = serde_json::from_str(&text).unwrap();
        assert!(
            !entry_json["finished"].is_null(),
            "journal entry {entry} never finished: {text}"
        );
    }

    assert_eq!(
        containers(&prefix),
        vec![container.clone(), format!("{container}-previous")],
        "no duplicate or half-made container is left"
    );
    assert_eq!(running_digest(&container), digest_of(&slow));
    assert_eq!(
        running_digest(&format!("{container}-previous")),
        digest_of(&images.v1)
    );
    assert_eq!(serves(&container, "/version"), "v2");

    let credential: Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("credentials.json")).unwrap())
            .unwrap();
    let credential = credential["credential"].as_str().unwrap().to_owned();
    let logs = format!("{}\n{log}", server.stderr());
    for (what, secret) in [
        ("bootstrap token", bootstrap.as_str()),
        ("agent credential", credential.as_str()),
        ("admin token", ADMIN_TOKEN),
    ] {
        assert!(!logs.contains(secret), "the {what} appears in a log");
    }
    println!(
        "agent_partition: attempt lost {:.2} s after the cut (heartbeat timeout {HEARTBEAT_MS} ms), \
         partition held {:.2} s, agent polling again {:.2} s after the heal, {attempts} attempts, \
         {} started on the host",
        lost_after.as_secs_f64(),
        partitioned_for.as_secs_f64(),
        reconnected_after.as_secs_f64(),
        of_task.len()
    );
}
