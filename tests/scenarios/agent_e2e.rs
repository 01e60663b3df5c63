//! The agent end to end: a real `deploy-agent` on the local Docker Engine, registered through `deployctl`, driven by a real `deployd`.
//!
//! The scenario: an admin creates a bootstrap token with deployctl, the agent
//! registers with it (a second use, and a wrong token, are refused), v1 and v2 are
//! deployed through the agent and served by the container, v3-broken fails its
//! health check and is rolled back (v2 serves again). Then the faults: the agent is
//! SIGKILLed in the middle of a deploy (an image that takes seconds to become
//! healthy keeps it in flight); its attempt fails as retryable once the heartbeat
//! timeout passes, and the restarted agent (same state dir, no token) finishes the
//! job without leaving a duplicate container. deployd is SIGKILLed in the middle of
//! the next deploy and restarted: the agent reconnects and the job completes.
//! Finally the agent is revoked and exits at its next poll. No token, credential or
//! bootstrap token appears in deployd's or the agent's logs.

use std::path::Path;
use std::time::{Duration, Instant};

use deploy_testkit::{
    ContainerCleanup, IMAGE_HTTP_PORT, Registry, TestImages, free_port, temp_dir,
};
use serde_json::{Value, json};

use crate::agent_proc::{AgentProc, bootstrap_token, slow_image, wait_active};
use crate::deployd_e2e::{KillOnDrop, serves};
use crate::deployd_proc::{
    ADMIN_TOKEN, Deployd, api_post, api_post_as, create_release, ctl, ctl_command, deployd_path,
    json_lines, ok_json,
};

/// deployd's heartbeat timeout in this scenario (the default is 15 s).
const HEARTBEAT_MS: u64 = 3_000;

/// Seconds the slow images take to become healthy.
const SLOW_S: u32 = 5;

/// Bounds every wait for a job to settle.
const JOB_LIMIT: Duration = Duration::from_secs(120);

pub(crate) fn target_body(agent_id: &str, prefix: &str, work_dir: &str) -> Value {
    let container = format!("{prefix}web");
    json!({
        "name": "agent-host",
        "target_type": "docker_host",
        "connection": {"model": "agent", "agent_id": agent_id, "work_dir": work_dir},
        "health_check": {
            "check": {
                "type": "command",
                "command": ["docker", "exec", container, "/bin/busybox", "wget", "-q", "-O-",
                            format!("http://127.0.0.1:{IMAGE_HTTP_PORT}/health")],
            },
            "retries": 3,
            "interval_ms": 200,
            "timeout_ms": 5_000,
            "min_healthy_time_ms": 500,
        },
        "labels": {"deploy.container-prefix": prefix},
    })
}

/// Creates environment `env` holding one docker_host target (`target_body`) served by
/// agent `agent_id`, its work dir `<data>/work`; the environment's id.
pub(crate) fn create_agent_env(
    addr: &str,
    env: &str,
    agent_id: &str,
    prefix: &str,
    data: &Path,
) -> String {
    let env_id = ok_json(addr, &["env", "create", env])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let work_dir = data.join("work");
    std::fs::create_dir_all(&work_dir).unwrap();
    let (status, target) = api_post(
        addr,
        &format!("/api/v1/environments/{env_id}/targets"),
        &target_body(agent_id, prefix, work_dir.to_str().unwrap()),
    );
    assert_eq!(status, 201, "{target:#}");
    env_id
}

/// Starts a deploy of `release` (not followed, 5 attempts per task); its job id.
pub(crate) fn start_deploy(addr: &str, release: &str, env: &str) -> String {
    let args = [
        "deploy",
        "--release",
        release,
        "--env",
        env,
        "--max-attempts",
        "5",
    ];
    let job = ok_json(addr, &args);
    job["id"].as_str().unwrap().to_owned()
}

/// Follows `job` to its end (`jobs watch`, bounded by [`JOB_LIMIT`]); the exit code and the events.
pub(crate) fn watch(addr: &str, job: &str) -> (Option<i32>, Vec<Value>) {
    let out = temp_dir("agent-e2e-watch-").unwrap();
    let path = out.path().join("events.jsonl");
    let mut child = ctl_command(addr, &["jobs", "watch", job, "--output", "json"])
        .stdout(std::fs::File::create(&path).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > JOB_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "job {job} did not settle within {JOB_LIMIT:?}: {}",
                std::fs::read_to_string(&path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status.code(), json_lines(&std::fs::read(&path).unwrap()))
}

/// The digest label of container `name` (`stella.digest`).
pub(crate) fn running_digest(name: &str) -> String {
    deploy_testkit::run_checked(
        "docker",
        &[
            "inspect",
            "--format",
            "{{index .Config.Labels \"stella.digest\"}}",
            name,
        ],
    )
    .unwrap()
    .trim()
    .to_owned()
}

/// Names of every container (running or not) whose name starts with `prefix`.
pub(crate) fn containers(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = deploy_testkit::run_checked(
        "docker",
        &[
            "ps",
            "-a",
            "--filter",
            &format!("name=^{prefix}"),
            "--format",
            "{{.Names}}",
        ],
    )
    .unwrap()
    .lines()
    .map(str::to_owned)
    .collect();
    names.sort();
    names
}

/// Waits (bounded) until a container carries label `stella.task=<task>`: the agent is in the middle of that task.
pub(crate) fn wait_for_task_container(task: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        let ids = deploy_testkit::run_checked(
            "docker",
            &[
                "ps",
                "-a",
                "-q",
                "--filter",
                &format!("label=stella.task={task}"),
            ],
        )
        .unwrap();
        if !ids.trim().is_empty() {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "no container of task {task} after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The only task of `job`, once dispatched (bounded wait).
pub(crate) fn task_of(addr: &str, job: &str) -> String {
    let started = Instant::now();
    loop {
        let shown = ok_json(addr, &["jobs", "show", job]);
        if let Some(id) = shown["tasks"][0]["id"].as_str() {
            return id.to_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{shown:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn digest_of(reference: &str) -> &str {
    reference.split_once('@').unwrap().1
}

#[test]
#[expect(
    clippy::print_stdout,
    reason = "the test reports its figures (nextest --no-capture shows them)"
)]
fn agent_deploys_rolls_back_and_survives_kills_of_itself_and_deployd() {
    let prefix = format!("ag{}-", std::process::id());
    let container = format!("{prefix}web");
    let _cleanup = ContainerCleanup::new(&prefix);
    let registry = Registry::start().unwrap();
    let images = TestImages::build(&registry, &format!("{prefix}app")).unwrap();
    let slow_a = slow_image(&registry, &images.repository, &images.v1, "slow-a", SLOW_S);
    let slow_b = slow_image(&registry, &images.repository, &images.v2, "slow-b", SLOW_S);
    let data = temp_dir("agent-e2e-").unwrap();
    let known_hosts = data.path().join("known_hosts");
    std::fs::write(&known_hosts, "").unwrap();
    let heartbeat = HEARTBEAT_MS.to_string();
    let deployd_env = [("DEPLOYD_AGENT_HEARTBEAT_TIMEOUT_MS", heartbeat.as_str())];
    let port = free_port().unwrap();
    let mut server = Deployd::start(data.path(), port, &known_hosts, &deployd_env);
    let addr = server.addr.clone();

    // Registration: the token works once; a wrong one and the spent one are refused.
    let bootstrap = bootstrap_token(&addr, "e2e-agent");
    assert!(bootstrap.starts_with("dpb_"), "{bootstrap}");
    let state = data.path().join("agent-state");
    let mut agent = AgentProc::start(&addr, "e2e-agent", &state, Some(&bootstrap));
    let agent_id = wait_active(&addr, "e2e-agent", &mut agent);
    // The agent shows the labels the server recorded (its token's), which it adopted.
    assert!(
        agent.stderr().contains("labels=scenario=agent"),
        "{}",
        agent.stderr()
    );
    let register = |token: &str, name: &str| {
        api_post_as(
            &addr,
            "/api/v1/agent/register",
            token,
            &json!({"protocol": 1, "name": name, "capabilities": ["docker"]}),
        )
    };
    let (status, problem) = register(&bootstrap, "second");
    assert_eq!(status, 401, "spent token: {problem:#}");
    let (status, problem) = register("dpb_not-a-token-0123456789abcdef", "third");
    assert_eq!(status, 401, "wrong token: {problem:#}");
    let (status, problem) = register(ADMIN_TOKEN, "fourth");
    assert_eq!(
        status, 401,
        "an API token is no bootstrap token: {problem:#}"
    );
    let credential = std::fs::read_to_string(state.join("credentials.json")).unwrap();
    let credential: Value = serde_json::from_str(&credential).unwrap();
    let credential = credential["credential"].as_str().unwrap().to_owned();
    assert!(credential.starts_with("dpa_"), "credential file format");
    let (status, _) = api_post_as(
        &addr,
        "/api/v1/environments",
        &credential,
        &json!({"name": "x"}),
    );
    assert_eq!(status, 401, "an agent credential is no API token");

    // The environment, one docker_host target served by the agent, four releases.
    let env_id = create_agent_env(&addr, "agent-e2e", &agent_id, &prefix, data.path());
    let mut releases = std::collections::BTreeMap::new();
    for (name, image) in [
        ("v1", &images.v1),
        ("v2", &images.v2),
        ("v3-broken", &images.v3_broken),
        ("slow-a", &slow_a),
        ("slow-b", &slow_b),
    ] {
        releases.insert(name, create_release(&addr, name, image));
    }
    let deploy = |release: &str, extra: &[&str]| {
        let args = [
            &["deploy", "--release", &releases[release], "--env", &env_id][..],
            extra,
        ]
        .concat();
        let out = ctl(&addr, &args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // v1, then v2: each served by the container the agent started.
    let (code, stdout, stderr) = deploy("v1", &["--follow", "--logs"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}\n{}", agent.stderr());
    assert_eq!(serves(&container, "/version"), "v1");
    let (code, stdout, stderr) = deploy("v2", &["--follow"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}\n{}", agent.stderr());
    assert_eq!(serves(&container, "/version"), "v2");
    assert_eq!(running_digest(&container), digest_of(&images.v2));
    assert_eq!(
        running_digest(&format!("{container}-previous")),
        digest_of(&images.v1),
        "v1 is kept for an instant revert"
    );

    // v3-broken fails its health check; the automatic rollback puts v2 back.
    let (code, stdout, stderr) = deploy("v3-broken", &["--follow", "--auto-rollback"]);
    assert_eq!(code, Some(3), "{stdout}\n{stderr}\n{}", agent.stderr());
    assert!(stdout.contains("ended rolled_back"), "{stdout}");
    assert_eq!(serves(&container, "/version"), "v2", "v2 serves again");

    // The agent is SIGKILLed while its deploy waits for the slow image to be healthy.
    let job = start_deploy(&addr, &releases["slow-a"], &env_id);
    let task = task_of(&addr, &job);
    wait_for_task_container(&task, Duration::from_secs(60));
    agent.kill();
    let killed = Instant::now();
    // Its attempt fails as retryable once the heartbeat timeout has passed.
    let failed_at = loop {
        let shown = ok_json(&addr, &["jobs", "show", &job]);
        let t = &shown["tasks"][0];
        if t["status"] == "retrying"
            || t["status"] == "failed"
            || t["attempt_number"].as_u64() > Some(1)
        {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < Duration::from_secs(60), "{shown:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        failed_at >= Duration::from_millis(HEARTBEAT_MS - 500),
        "the attempt failed {failed_at:?} after the kill, before the heartbeat timeout"
    );
    let mut agent = AgentProc::start(&addr, "e2e-agent", &state, None);
    let (code, events) = watch(&addr, &job);
    assert_eq!(code, Some(0), "{events:#?}\n{}", agent.stderr());
    assert_eq!(running_digest(&container), digest_of(&slow_a));
    assert_eq!(serves(&container, "/version"), "v1");
    let shown = ok_json(&addr, &["jobs", "show", &job]);
    assert!(
        shown["tasks"][0]["attempt_number"].as_u64() >= Some(2),
        "{shown:#}"
    );
    let lost = events
        .iter()
        .find(|e| {
            e["data"]["event"]
                .as_str()
                .is_some_and(|ev| ev.starts_with("fail"))
        })
        .unwrap_or_else(|| panic!("no failed attempt in {events:#?}"));
    assert!(
        lost["data"]["cause"]
            .as_str()
            .unwrap_or_default()
            .contains("agent"),
        "the failure names the lost agent: {lost:#}"
    );
    assert_eq!(
        containers(&prefix),
        vec![container.clone(), format!("{container}-previous")],
        "no duplicate or half-made container is left"
    );
    println!(
        "agent killed mid-task: attempt failed {failed_at:?} after the kill (heartbeat timeout {HEARTBEAT_MS} ms)"
    );

    // deployd is SIGKILLed in the middle of the next deploy and started again.
    let job = start_deploy(&addr, &releases["slow-b"], &env_id);
    let task = task_of(&addr, &job);
    wait_for_task_container(&task, Duration::from_secs(60));
    server.kill();
    server = Deployd::start(data.path(), port, &known_hosts, &deployd_env);
    let (code, events) = watch(&addr, &job);
    assert_eq!(
        code,
        Some(0),
        "{events:#?}\n{}\n{}",
        server.stderr(),
        agent.stderr()
    );
    assert_eq!(running_digest(&container), digest_of(&slow_b));
    assert_eq!(serves(&container, "/version"), "v2");
    assert_eq!(
        containers(&prefix),
        vec![container.clone(), format!("{container}-previous")],
        "no duplicate container after the deployd restart"
    );
    wait_active(&addr, "e2e-agent", &mut agent);

    // Revoked: the agent is refused at its next poll and stops.
    let out = ctl(&addr, &["agent", "revoke", &agent_id]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = agent.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "a revoked agent exits with an error");
    let (status, _) = api_post_as(
        &addr,
        "/api/v1/agent/poll",
        &credential,
        &json!({"protocol": 1, "running": [], "wait_ms": 0}),
    );
    assert_eq!(status, 401, "the revoked credential is refused");

    // No secret in any log.
    let logs = format!("{}\n{}", server.stderr(), agent.stderr());
    for (what, secret) in [
        ("bootstrap token", bootstrap.as_str()),
        ("agent credential", credential.as_str()),
        ("admin token", ADMIN_TOKEN),
    ] {
        assert!(!logs.contains(secret), "the {what} appears in a log");
    }
}

/// deployd serving HTTPS with a certificate from a private CA: deployctl and the agent
/// trust it only through `--ca-file`; the agent registers and deploys over it.
#[test]
fn agent_and_deployctl_over_https_trust_only_the_given_ca() {
    let prefix = format!("at{}-", std::process::id());
    let container = format!("{prefix}web");
    let _cleanup = ContainerCleanup::new(&prefix);
    let registry = Registry::start().unwrap();
    let images = TestImages::build(&registry, &format!("{prefix}app")).unwrap();
    let data = temp_dir("agent-tls-").unwrap();
    deploy_testkit::TestCertificates::create(data.path()).unwrap();
    let (cert, key, ca) = (
        data.path().join("leaf.pem"),
        data.path().join("leaf.key"),
        data.path().join("ca.pem"),
    );
    let port = free_port().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let server = format!("https://{addr}");
    let log = data.path().join("deployd-stderr.txt");
    // Killed on drop: a failed assertion must not leave deployd running.
    let mut deployd = KillOnDrop(
        std::process::Command::new(deployd_path())
            .args(["--listen", &addr, "--data-dir"])
            .arg(data.path().join("db"))
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .env_remove("DEPLOYD_CONFIG")
            .env_remove("DEPLOYD_DATABASE_URL")
            .env("DEPLOYD_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let ctl_tls = |args: &[&str], ca_file: Option<&std::path::Path>| {
        let mut cmd = ctl_command(&addr, args);
        cmd.env("DEPLOYCTL_SERVER", &server);
        if let Some(ca) = ca_file {
            cmd.env("DEPLOYCTL_CA_FILE", ca);
        }
        cmd.output().unwrap()
    };
    // Ready once deployctl gets an answer over HTTPS (bounded).
    let started = Instant::now();
    while ctl_tls(&["env", "list"], Some(&ca)).status.code() != Some(0) {
        assert!(
            deployd.0.try_wait().unwrap().is_none(),
            "deployd exited: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "deployd never served https"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let untrusted = ctl_tls(&["env", "list"], None);
    assert_eq!(untrusted.status.code(), Some(4), "no CA: unreachable");
    let said = String::from_utf8_lossy(&untrusted.stderr).to_lowercase();
    assert!(
        said.contains("certificate") || said.contains("tls"),
        "{said}"
    );

    let out = ctl_tls(
        &[
            "agent",
            "bootstrap-token",
            "--name",
            "tls-agent",
            "--label",
            "scenario=agent",
        ],
        Some(&ca),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bootstrap = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    // Without the CA the agent cannot register (the token stays unspent).
    let mut blind = AgentProc::start_with(
        &server,
        // The same agent, without the CA.
        "tls-agent",
        &data.path().join("blind"),
        Some(&bootstrap),
        &[],
    );
    std::thread::sleep(Duration::from_secs(2));
    let listed = ok_json_tls(&ctl_tls(&["agent", "list", "--output", "json"], Some(&ca)));
    assert!(listed.as_array().unwrap().is_empty(), "{listed:#}");
    assert!(
        blind.stderr().to_lowercase().contains("certificate"),
        "{}",
        blind.stderr()
    );
    blind.kill();
    let ca_arg = ca.to_str().unwrap();
    let mut agent = AgentProc::start_with(
        &server,
        "tls-agent",
        &data.path().join("agent"),
        Some(&bootstrap),
        &["--ca-file", ca_arg],
    );
    let started = Instant::now();
    let agent_id = loop {
        let listed = ok_json_tls(&ctl_tls(&["agent", "list", "--output", "json"], Some(&ca)));
        if let Some(a) = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["active"] == true)
        {
            break a["id"].as_str().unwrap().to_owned();
        }
        assert!(agent.running(), "{}", agent.stderr());
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{listed:#}\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    let env = ok_json_tls(&ctl_tls(
        &["env", "create", "tls", "--output", "json"],
        Some(&ca),
    ));
    let env_id = env["id"].as_str().unwrap();
    let work_dir = data.path().join("work");
    std::fs::create_dir_all(&work_dir).unwrap();
    let body = target_body(&agent_id, &prefix, work_dir.to_str().unwrap());
    let file = data.path().join("target.json");
    std::fs::write(&file, body.to_string()).unwrap();
    let added = ctl_tls(
        &[
            "target",
            "add",
            "--env",
            env_id,
            "--file",
            file.to_str().unwrap(),
            "--output",
            "json",
        ],
        Some(&ca),
    );
    assert_eq!(
        added.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let component = format!("web={}", images.v1);
    let release = ok_json_tls(&ctl_tls(
        &[
            "release",
            "create",
            "v1",
            "--component",
            &component,
            "--output",
            "json",
        ],
        Some(&ca),
    ));
    let deployed = ctl_tls(
        &[
            "deploy",
            "--release",
            release["id"].as_str().unwrap(),
            "--env",
            env_id,
            "--follow",
        ],
        Some(&ca),
    );
    assert_eq!(
        deployed.status.code(),
        Some(0),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&deployed.stdout),
        String::from_utf8_lossy(&deployed.stderr),
        agent.stderr()
    );
    assert_eq!(serves(&container, "/version"), "v1");
}

/// The JSON a successful deployctl run printed.
fn ok_json_tls(out: &std::process::Output) -> Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
