//! Real processes over a real target: `deployd` on a temp SQLite database, driven through `deployctl`, deploying to an sshd host on the Docker Engine.
//!
//! One sshd host from the testkit (user `deploytest`, its private key handed to
//! deployd in the environment variable named by `--key-ref env:…`, its host key in
//! the known_hosts file given to `deployd --known-hosts`), a loopback registry with
//! the v1, v2 and v3-broken test images, and the local Docker Engine. The target's
//! health check is a `command` check (`docker exec <container> /bin/busybox wget
//! …/health`): v1 and v2 answer it, v3-broken does not.
//!
//! The scenario: `deploy --follow` of v1 exits 0 and v1 serves; v3-broken with
//! `--auto-rollback` exits 3 and v1 serves again; a v2 deploy is cut off by SIGKILL
//! while its task soaks in verification, deployd is started again on the same
//! data directory (so under the same lease owner, which resumes its job at once), and the job completes without any task attempt running twice, which
//! `deployctl jobs watch` (following across the kill) and `jobs show` show.
//!
//! Everything goes through deployctl, the target too (`target add` with its
//! health-check and label flags).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deploy_testkit::{
    ContainerCleanup, IMAGE_HTTP_PORT, Registry, SSH_TEST_USER, SshdHosts, TestImages, free_port,
    temp_dir,
};
use serde_json::{Value, json};

use crate::deployd_proc::{Deployd, create_release, ctl, ctl_command, json_lines, ok_json};

/// The world of the scenarios that deploy through `deployd` over SSH: one sshd host,
/// the loopback registry with the v1/v2/v3-broken test images, and a deployd on a
/// free port whose environment holds the host's key ([`KEY_VAR`]). Fields drop in
/// order: deployd first, the containers named by the prefix last.
pub(crate) struct SshWorld {
    pub(crate) server: Deployd,
    pub(crate) addr: String,
    pub(crate) data: tempfile::TempDir,
    pub(crate) images: TestImages,
    /// Kept for its lifetime: the images are served from it.
    _registry: Registry,
    pub(crate) hosts: SshdHosts,
    _cleanup: ContainerCleanup,
}

impl SshWorld {
    /// Starts the world; containers are named `{prefix}…`, the data directory `{data}…`.
    pub(crate) fn start(prefix: &str, data: &str) -> Self {
        Self::start_with(prefix, data, &[])
    }

    /// [`SshWorld::start`] with `env` added to deployd's environment.
    pub(crate) fn start_with(prefix: &str, data: &str, env: &[(&str, &str)]) -> Self {
        let cleanup = ContainerCleanup::new(prefix);
        let hosts = SshdHosts::start(1).unwrap();
        let registry = Registry::start().unwrap();
        let images = TestImages::build(&registry, &format!("{prefix}app")).unwrap();
        let data = temp_dir(data).unwrap();
        let key = std::fs::read_to_string(hosts.client_key()).unwrap();
        let server = Deployd::start(
            data.path(),
            free_port().unwrap(),
            &hosts.known_hosts(),
            &[&[(KEY_VAR, key.as_str())], env].concat(),
        );
        Self {
            addr: server.addr.clone(),
            server,
            data,
            images,
            _registry: registry,
            hosts,
            _cleanup: cleanup,
        }
    }
}

/// The environment variable (in deployd's environment) holding the SSH private key.
pub(crate) const KEY_VAR: &str = "DEPLOY_SCENARIO_SSH_KEY";

/// How long a deployed container must stay healthy before its task succeeds.
const SOAK_MS: u64 = 6_000;

/// The body of `POST /api/v1/environments/{id}/targets`: sshd host `i`, containers
/// named `<prefix>web`, a command health check probing every 200 ms (3 probes to
/// fail) and a soak of `soak_ms`.
pub(crate) fn target_body(hosts: &SshdHosts, i: u8, prefix: &str, soak_ms: u64) -> Value {
    let container = format!("{prefix}web");
    json!({
        "name": format!("host-{i}"),
        "target_type": "docker_host",
        "connection": {
            "model": "ssh",
            "host": hosts.host(i),
            "port": hosts.port(),
            "user": SSH_TEST_USER,
            "credential_ref": format!("env:{KEY_VAR}"),
            "host_key": {"mode": "known_hosts"},
        },
        "health_check": {
            "check": {
                "type": "command",
                "command": ["docker", "exec", container, "/bin/busybox", "wget", "-q", "-O-",
                            format!("http://127.0.0.1:{IMAGE_HTTP_PORT}/health")],
                "in_container": false,
            },
            "retries": 3,
            "interval_ms": 200,
            "timeout_ms": 5_000,
            "min_healthy_time_ms": soak_ms,
        },
        "labels": {"deploy.container-prefix": prefix},
    })
}

/// `deployctl target add` for the same target as [`target_body`], from flags.
pub(crate) fn target_add_args(
    env: &str,
    hosts: &SshdHosts,
    i: u8,
    prefix: &str,
    soak_ms: u64,
) -> Vec<String> {
    let health = format!(
        "docker exec {prefix}web /bin/busybox wget -q -O- http://127.0.0.1:{IMAGE_HTTP_PORT}/health"
    );
    [
        "target",
        "add",
        "--env",
        env,
        &format!("host-{i}"),
        "--host",
        &hosts.host(i).to_string(),
        "--port",
        &hosts.port().to_string(),
        "--user",
        SSH_TEST_USER,
        "--key-ref",
        &format!("env:{KEY_VAR}"),
        "--host-key",
        "known_hosts",
        "--health-check",
        "command",
        "--health-command",
        &health,
        "--health-retries",
        "3",
        "--health-interval",
        "200ms",
        "--health-timeout",
        "5s",
        "--health-min-healthy",
        &format!("{soak_ms}ms"),
        "--label",
        &format!("deploy.container-prefix={prefix}"),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// What container `name` answers on `path`, over HTTP inside the container.
pub(crate) fn serves(container: &str, path: &str) -> String {
    let url = format!("http://127.0.0.1:{IMAGE_HTTP_PORT}{path}");
    deploy_testkit::run_checked(
        "docker",
        &["exec", container, "/bin/busybox", "wget", "-q", "-O-", &url],
    )
    .unwrap()
    .trim()
    .to_owned()
}

pub(crate) fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// An event's `at` in ms since the epoch.
pub(crate) fn at_ms(event: &Value) -> u64 {
    deploy_core::Timestamp::parse(event["data"]["at"].as_str().unwrap())
        .unwrap()
        .unix_millis()
}

/// Every event of a settled job, as `deployctl jobs watch --output json` prints them.
pub(crate) fn watch_all(addr: &str, job: &str) -> (Option<i32>, Vec<Value>) {
    let out = ctl(addr, &["jobs", "watch", job, "--output", "json"]);
    (out.status.code(), json_lines(&out.stdout))
}

/// No task of `job` ran an attempt twice: per task, the `dispatch` events name
/// distinct attempts 1..=n, n is the task's `attempt_number`, and it succeeded at most once.
pub(crate) fn assert_each_attempt_ran_once(job: &Value, events: &[Value]) {
    for task in job["tasks"].as_array().unwrap() {
        let id = task["id"].as_str().unwrap();
        let of_task: Vec<&Value> = events
            .iter()
            .filter(|e| e["data"]["task_id"].as_str() == Some(id))
            .collect();
        let dispatched: Vec<u64> = of_task
            .iter()
            .filter(|e| e["data"]["event"] == "dispatch")
            .map(|e| {
                let cause = e["data"]["cause"].as_str().unwrap();
                cause
                    .strip_prefix("attempt ")
                    .and_then(|c| c.split(' ').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("dispatch cause {cause:?}"))
            })
            .collect();
        let n = task["attempt_number"].as_u64().unwrap();
        assert_eq!(
            dispatched,
            (1..=n).collect::<Vec<_>>(),
            "task {id}: attempts dispatched {dispatched:?}, attempt_number {n}: {of_task:#?}"
        );
        let succeeded = of_task
            .iter()
            .filter(|e| e["data"]["event"] == "succeed")
            .count();
        assert!(succeeded <= 1, "task {id} succeeded {succeeded} times");
    }
}

/// A child process (`deployctl jobs watch`) that does not outlive a failed test.
pub(crate) struct KillOnDrop(pub(crate) std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The job id `deploy` printed: `job <id>: …` on the first line (table output).
pub(crate) fn job_id_of(stdout: &str) -> String {
    stdout
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("job "))
        .and_then(|l| l.split(':').next())
        .unwrap_or_else(|| panic!("no job line in {stdout:?}"))
        .to_owned()
}

#[test]
fn deploy_roll_back_and_survive_sigkill_through_deployctl() {
    let prefix = format!("dd{}-", std::process::id());
    let container = format!("{prefix}web");
    // First: containers go before the registry and the host stop.
    let _cleanup = ContainerCleanup::new(&prefix);
    let hosts = SshdHosts::start(1).unwrap();
    let registry = Registry::start().unwrap();
    let images = TestImages::build(&registry, &format!("{prefix}app")).unwrap();
    let data = temp_dir("deployd-e2e-ssh-").unwrap();
    let key = std::fs::read_to_string(hosts.client_key()).unwrap();
    let env = [(KEY_VAR, key.as_str())];
    let port = free_port().unwrap();
    let server = Deployd::start(data.path(), port, &hosts.known_hosts(), &env);
    let addr = server.addr.clone();

    let env_id = ok_json(&addr, &["env", "create", "e2e"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let add = target_add_args(&env_id, &hosts, 1, &prefix, SOAK_MS);
    let add: Vec<&str> = add.iter().map(String::as_str).collect();
    let target = ok_json(&addr, &add);
    let targets = ok_json(&addr, &["target", "list", "--env", &env_id]);
    assert_eq!(targets[0]["health_check"]["check"]["type"], "command");
    // The flags give exactly the document the API takes (the one the load test posts).
    let mut expected = target_body(&hosts, 1, &prefix, SOAK_MS);
    for field in ["id", "environment_id", "created_at", "health_endpoint"] {
        expected[field] = target[field].clone();
    }
    expected["disabled"] = json!(false);
    expected["version"] = json!(0);
    assert_eq!(targets[0], expected, "{target:#}");
    let mut releases = BTreeMap::new();
    for (name, image) in [
        ("v1", &images.v1),
        ("v2", &images.v2),
        ("v3-broken", &images.v3_broken),
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
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stdout, stderr)
    };

    // v1: followed to the end with its log lines and a summary, exit 0, served.
    let (code, stdout, stderr) = deploy("v1", &["--follow", "--logs"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let v1_job = job_id_of(&stdout);
    assert!(stdout.contains("[host-1/web] pulling "), "{stdout}");
    assert!(stdout.contains("[host-1/web] healthy after "), "{stdout}");
    let summary = stdout
        .split_once("\nsummary:\n")
        .unwrap_or_else(|| panic!("no summary in {stdout}"))
        .1;
    assert!(
        summary.lines().any(|l| l.starts_with("host-1/web")
            && l.split_whitespace().nth(1) == Some("succeeded")
            && l.split_whitespace()
                .nth(2)
                .is_some_and(|a| a.starts_with("1/"))),
        "{summary}"
    );
    assert!(
        stdout
            .trim_end()
            .ends_with(&format!("job {v1_job} ended completed")),
        "{stdout}"
    );
    assert_eq!(serves(&container, "/version"), "v1");

    // v3-broken with auto-rollback: its health check fails, v1 is put back, exit 3.
    let (code, stdout, stderr) = deploy("v3-broken", &["--follow", "--auto-rollback"]);
    assert_eq!(code, Some(3), "{stdout}\n{stderr}");
    let v3_job = job_id_of(&stdout);
    assert!(stdout.contains("health check failed"), "{stdout}");
    assert!(stdout.contains("-> rolling_back"), "{stdout}");
    assert!(
        stdout
            .trim_end()
            .ends_with(&format!("job {v3_job} ended rolled_back")),
        "{stdout}"
    );
    assert_eq!(serves(&container, "/version"), "v1", "v1 serves again");
    let v3 = ok_json(&addr, &["jobs", "show", &v3_job]);
    assert_eq!(v3["status"], "rolled_back");
    let jobs = ok_json(&addr, &["jobs", "list", "--env", &env_id]);
    let rollback = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["rollback_of"] == v3_job.as_str())
        .unwrap_or_else(|| panic!("no rollback job in {jobs:#}"));
    assert_eq!(rollback["status"], "completed");
    assert_eq!(rollback["release_id"], releases["v1"].as_str());

    // v2, started without following; `jobs watch` follows it in the background, across the kill.
    let (code, stdout, stderr) = deploy("v2", &["--output", "json"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let v2_job = serde_json::from_str::<Value>(&stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let watch_out = data.path().join("watch.jsonl");
    let mut watcher = KillOnDrop(
        ctl_command(&addr, &["jobs", "watch", &v2_job, "--output", "json"])
            .stdout(std::fs::File::create(&watch_out).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Wait (bounded) for the task to be verifying: deployed, inside its soak.
    let started = Instant::now();
    let before_kill = loop {
        let job = ok_json(&addr, &["jobs", "show", &v2_job]);
        if job["tasks"][0]["status"] == "verifying" {
            break job;
        }
        // Before its task verifies, the job is pending, preparing (the engine picked
        // it up and checks its artifacts) or running.
        assert!(
            ["pending", "preparing", "running"].contains(&job["status"].as_str().unwrap_or("")),
            "{job:#}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the v2 task never reached verifying: {job:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_millis(500));
    server.kill();
    let killed_at = now_ms();
    assert_eq!(before_kill["status"], "running");
    assert_eq!(before_kill["tasks"][0]["attempt_number"], 1);
    let seen_before_kill = json_lines(&std::fs::read(&watch_out).unwrap());
    assert!(
        seen_before_kill
            .iter()
            .any(|e| e["data"]["event"] == "verify"),
        "{seen_before_kill:#?}"
    );

    // The same data dir, database and port: the restart runs under the owner kept in the
    // data dir, so it takes back the lease its killed predecessor held and resumes at once.
    let again = Deployd::start(data.path(), port, &hosts.known_hosts(), &env);
    let started = Instant::now();
    let code = loop {
        if let Some(status) = watcher.0.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > Duration::from_secs(120) {
            panic!(
                "jobs watch did not end within 120 s of the restart: {}\n{}",
                std::fs::read_to_string(&watch_out).unwrap(),
                again.stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Reported, not asserted (timing goals live in benchmarks).
    eprintln!(
        "deployd_e2e: the restarted deployd settled the v2 job {:.1} s after it started",
        started.elapsed().as_secs_f64()
    );
    assert!(
        again
            .stderr()
            .contains("resuming jobs this owner held before a restart at once"),
        "{}",
        again.stderr()
    );
    let watched = json_lines(&std::fs::read(&watch_out).unwrap());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut watcher.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(code, Some(0), "{watched:#?}\n{stderr}");
    let end = watched.last().unwrap();
    assert_eq!(end["event"], "end");
    assert_eq!(end["data"]["status"], "completed");
    // Each event once, in order, across the reconnect.
    let seqs: Vec<u64> = watched
        .iter()
        .filter(|e| e["event"] == "transition")
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // The kill landed mid-job: the task was verified before it, and succeeded, and the job
    // completed, only after it.
    let task_id = before_kill["tasks"][0]["id"].as_str().unwrap();
    let find = |event: &str, task: Option<&str>| {
        watched
            .iter()
            .find(|e| e["data"]["event"] == event && e["data"]["task_id"].as_str() == task)
            .unwrap_or_else(|| panic!("no {event} of {task:?} in {watched:#?}"))
    };
    assert!(at_ms(find("verify", Some(task_id))) < killed_at);
    assert!(at_ms(find("succeed", Some(task_id))) > killed_at);
    assert!(at_ms(find("verification_passed", None)) > killed_at);

    let v2 = ok_json(&again.addr, &["jobs", "show", &v2_job]);
    assert_eq!(v2["status"], "completed", "{v2:#}");
    assert_eq!(v2["tasks"][0]["status"], "succeeded");
    assert_eq!(
        v2["tasks"][0]["attempt_number"], 1,
        "the deploy found on its digest after the restart is verified, not redeployed"
    );
    assert_eq!(serves(&container, "/version"), "v2");
    // The container serving v2 was started before the kill and never again.
    let started_at = deploy_testkit::run_checked(
        "docker",
        &["inspect", "--format", "{{.State.StartedAt}}", &container],
    )
    .unwrap();
    let started_ms = deploy_core::Timestamp::parse(started_at.trim())
        .unwrap()
        .unix_millis();
    assert!(started_ms < killed_at, "{started_at} after the kill");
    // The task's log: one deploy (before the kill), one health verdict (after the restart).
    // Streamed (SSE) to its end: the task settled, so the stream ends after its last chunk.
    let logs = ctl(&again.addr, &["logs", task_id, "--follow"]);
    assert_eq!(logs.status.code(), Some(0), "{logs:?}");
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert_eq!(logs.matches("pulling ").count(), 1, "{logs}");
    assert_eq!(logs.matches("healthy after ").count(), 1, "{logs}");
    // The table view shows the same.
    let shown = ctl(&again.addr, &["jobs", "show", &v2_job]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("completed") && shown.contains("succeeded"),
        "{shown}"
    );

    // No task of any job ran an attempt twice.
    for job in [&v1_job, &v3_job, rollback["id"].as_str().unwrap(), &v2_job] {
        let (code, events) = watch_all(&again.addr, job);
        assert!(matches!(code, Some(0 | 3)), "{job}: {code:?}");
        let shown = ok_json(&again.addr, &["jobs", "show", job]);
        assert_each_attempt_ran_once(&shown, &events);
    }
    again.terminate();
}
