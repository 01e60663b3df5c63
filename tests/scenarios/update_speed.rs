//! How fast a change reaches the hosts through `deployd` and `deployctl`, beside the same change made by plain `ssh host 'docker rm -f …; docker run -d …'`, and the MTTR of an automatic rollback of a service on a fixed published port.
//!
//! Every round is checked (every host runs the new definition afterwards); the
//! figures go to the benchmark report when `BENCH_REPORT_FILE` is set (`cargo xtask
//! bench`), which also sets `DEPLOY_UPDATE_HOSTS` (20) and the round counts; the
//! defaults keep a CI run short.
//!
//! Updates: an already-pulled image, no health check, each round a new value of one
//! variable (so every deploy creates a new container, as `docker run` does; no
//! instant revert). deployd: `deployctl deploy --follow --parallelism <hosts>`, from
//! the command's start to its exit (promotion, job, claim, the start-first swap on
//! every host at once, the follow).
//! Plain: one `ssh … 'docker rm -f C; docker run -d --name C -e … IMAGE CMD'` per host,
//! all at once, to the last exit.
//!
//! MTTR: v1 on `127.0.0.1:<port>` (stop-first: a fixed host port), v3-broken with
//! `--auto-rollback`: from the failing health verdict (the task's `fail` event) to the
//! rollback task's verified health (`succeed`), and, seen from the host, from the same
//! verdict to the published port answering v1 again.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use deploy_testkit::bench_report::{Better, Figure, Goal};
use deploy_testkit::{
    ContainerCleanup, IMAGE_HTTP_PORT, Registry, SSH_TEST_USER, SshdHosts, TestImages, free_port,
    http_get, run_checked, temp_dir,
};
use serde_json::{Value, json};

use crate::deployd_e2e::{KEY_VAR, SshWorld, at_ms, job_id_of, watch_all};
use crate::deployd_proc::{Deployd, ctl, ok_json};

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The definition both sides run: the image's httpd as an explicit command, one variable.
fn template(greeting: &str) -> String {
    format!(
        "services:\n  web:\n    componentName: web\n    command: [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"{IMAGE_HTTP_PORT}\", \"-h\", \"/www\"]\n    environment:\n      GREETING: \"{greeting}\"\n    init: true\n"
    )
}

/// The same change by hand: `docker rm -f; docker run -d` on every host over ssh, at once.
fn plain_ssh(hosts: &SshdHosts, n: u8, prefix: &str, image: &str, greeting: &str) -> Duration {
    let started = Instant::now();
    let children: Vec<_> = (1..=n)
        .map(|i| {
            let c = format!("{prefix}h{i}-web");
            let script = format!(
                "docker rm -f {c} >/dev/null 2>&1; docker run -d --name {c} --init -e GREETING={greeting} {image} /bin/busybox httpd -f -p {IMAGE_HTTP_PORT} -h /www >/dev/null"
            );
            Command::new("ssh")
                .args([
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "KexAlgorithms=curve25519-sha256",
                    "-o",
                    "StrictHostKeyChecking=yes",
                    "-o",
                    &format!("UserKnownHostsFile={}", hosts.known_hosts().display()),
                    "-i",
                    &hosts.client_key().display().to_string(),
                    "-p",
                    &hosts.port().to_string(),
                    "-l",
                    SSH_TEST_USER,
                    &hosts.host(i),
                    &script,
                ])
                .stdin(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success(), "plain ssh deploy failed");
    }
    started.elapsed()
}

/// The environment variable `GREETING` of container `name`.
fn greeting_of(name: &str) -> String {
    let env = run_checked(
        "docker",
        &["inspect", "--format", "{{json .Config.Env}}", name],
    )
    .unwrap();
    let env: Vec<String> = serde_json::from_str(&env).unwrap();
    env.into_iter()
        .find_map(|e| e.strip_prefix("GREETING=").map(str::to_owned))
        .unwrap_or_default()
}

struct Setup {
    addr: String,
    env_of: Vec<(u8, String)>,
}

/// Environments of 1 and `n` hosts (each host its own container prefix).
fn environments(addr: &str, hosts: &SshdHosts, prefix: &str, sizes: &[u8]) -> Setup {
    let mut env_of = Vec::new();
    for &size in sizes {
        let env = ok_json(addr, &["env", "create", &format!("{prefix}e{size}")])["id"]
            .as_str()
            .unwrap()
            .to_owned();
        for i in 1..=size {
            // One host's containers per prefix: the sizes reuse the hosts, not the names.
            let label = format!("deploy.container-prefix={prefix}s{size}h{i}-");
            ok_json(
                addr,
                &[
                    "target",
                    "add",
                    "--env",
                    &env,
                    &format!("host-{i}"),
                    "--host",
                    &hosts.host(i),
                    "--port",
                    &hosts.port().to_string(),
                    "--user",
                    SSH_TEST_USER,
                    "--key-ref",
                    &format!("env:{KEY_VAR}"),
                    "--work-dir",
                    "/tmp",
                    "--label",
                    &label,
                ],
            );
        }
        env_of.push((size, env));
    }
    Setup {
        addr: addr.to_owned(),
        env_of,
    }
}

#[test]
#[expect(
    clippy::print_stdout,
    reason = "the test reports its figures (nextest --no-capture shows them)"
)]
fn an_update_through_deployd_against_plain_ssh() {
    let hosts_n = u8::try_from(env_number("DEPLOY_UPDATE_HOSTS", 5)).unwrap();
    let rounds = env_number("DEPLOY_UPDATE_ROUNDS", 1);
    let prefix = format!("us{}-", std::process::id());
    let _cleanup = ContainerCleanup::new(&prefix);
    let hosts = SshdHosts::start(hosts_n).unwrap();
    let registry = Registry::start().unwrap();
    let images = TestImages::build(&registry, &format!("{prefix}app")).unwrap();
    run_checked("docker", &["pull", "--quiet", &images.v1]).unwrap();
    let data = temp_dir("update-speed-").unwrap();
    let key = std::fs::read_to_string(hosts.client_key()).unwrap();
    let server = Deployd::start(
        data.path(),
        free_port().unwrap(),
        &hosts.known_hosts(),
        &[(KEY_VAR, key.as_str())],
    );
    let setup = environments(&server.addr, &hosts, &prefix, &[1, hosts_n]);
    for (size, env) in &setup.env_of {
        let mut ours = Vec::new();
        let mut plain = Vec::new();
        // Round 0 puts a first container everywhere (not measured): then every round
        // replaces one, on both sides.
        for round in 0..=rounds {
            let greeting = format!("round-{round}");
            let file = data.path().join(format!("t{size}-{round}.yml"));
            std::fs::write(&file, template(&greeting)).unwrap();
            let release = ok_json(
                &setup.addr,
                &[
                    "release",
                    "create",
                    &format!("s{size}-r{round}"),
                    "--component",
                    &format!("web={}", images.v1),
                    "--template",
                    file.to_str().unwrap(),
                ],
            )["id"]
                .as_str()
                .unwrap()
                .to_owned();
            // Every host at once, as the plain ssh side does (the default is 10).
            let parallelism = size.to_string();
            let started = Instant::now();
            let out = ctl(
                &setup.addr,
                &[
                    "deploy",
                    "--release",
                    &release,
                    "--env",
                    env,
                    "--follow",
                    "--parallelism",
                    &parallelism,
                ],
            );
            let took = started.elapsed();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            for i in 1..=*size {
                assert_eq!(greeting_of(&format!("{prefix}s{size}h{i}-web")), greeting);
            }
            let by_hand = plain_ssh(
                &hosts,
                *size,
                &format!("{prefix}p{size}"),
                &images.v1,
                &greeting,
            );
            for i in 1..=*size {
                assert_eq!(greeting_of(&format!("{prefix}p{size}h{i}-web")), greeting);
            }
            if round > 0 {
                ours.push(took.as_secs_f64() * 1000.0);
                plain.push(by_hand.as_secs_f64() * 1000.0);
            }
        }
        println!(
            "update of {size} host(s): deployd {:.0} ms, plain ssh {:.0} ms (medians of {rounds}; ratio {:.2})",
            median(&ours),
            median(&plain),
            median(&ours) / median(&plain).max(1.0)
        );
        let goal = if *size == 1 { 1.5 } else { 1.1 };
        Figure::new(
            "updates",
            &format!("{size}-host docker_host update through `deployctl deploy --follow`"),
            "ms",
            Better::Lower,
            ours,
        )
        .baseline(
            &format!("plain `ssh host 'docker rm -f; docker run -d'` on the {size} host(s) at once"),
            plain,
        )
        .goal(Goal::ratio_below(goal))
        .notes("an already-pulled image, no health check, a new variable value per round (every deploy creates a container), every host at once on both sides (`--parallelism <hosts>`); one value per round, interleaved")
        .emit()
        .unwrap();
    }
}

/// Waits (bounded) until `127.0.0.1:port/version` answers `want`; when it did.
fn answered_at(port: u16, want: &str, limit: Duration) -> Instant {
    let started = Instant::now();
    loop {
        if let Ok((200, body)) = http_get(&format!("127.0.0.1:{port}"), "/version")
            && body.trim() == want
        {
            return Instant::now();
        }
        assert!(
            started.elapsed() < limit,
            "port {port} never answered {want}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
#[expect(
    clippy::print_stdout,
    reason = "the test reports its figures (nextest --no-capture shows them)"
)]
fn an_automatic_rollback_of_a_service_on_a_published_port() {
    let cycles = env_number("DEPLOY_MTTR_CYCLES", 1);
    let prefix = format!("um{}-", std::process::id());
    let world = SshWorld::start(&prefix, "mttr-ports-");
    let (hosts, images, data) = (&world.hosts, &world.images, &world.data);
    let addr = world.addr.clone();
    let port = free_port().unwrap();
    let env = ok_json(&addr, &["env", "create", &format!("{prefix}env")])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let target = data.path().join("target.json");
    std::fs::write(
        &target,
        json!({
            "name": "host-1",
            "target_type": "docker_host",
            "connection": {"model": "ssh", "host": hosts.host(1), "port": hosts.port(),
                           "user": SSH_TEST_USER, "credential_ref": format!("env:{KEY_VAR}"),
                           "work_dir": "/tmp"},
            "health_check": {"check": {"type": "http", "path": "/health"},
                             "retries": 3, "interval_ms": 100, "timeout_ms": 1_000},
            "labels": {"deploy.container-prefix": prefix},
        })
        .to_string(),
    )
    .unwrap();
    ok_json(
        &addr,
        &[
            "target",
            "add",
            "--env",
            &env,
            "--file",
            target.to_str().unwrap(),
        ],
    );
    let file = data.path().join("template.yml");
    std::fs::write(
        &file,
        format!(
            "services:\n  web:\n    componentName: web\n    ports: [\"127.0.0.1:{port}:{IMAGE_HTTP_PORT}\"]\n    init: true\n    stop_grace_period: 2s\n"
        ),
    )
    .unwrap();
    let release = |name: &str, image: &str| {
        ok_json(
            &addr,
            &[
                "release",
                "create",
                name,
                "--component",
                &format!("web={image}"),
                "--template",
                file.to_str().unwrap(),
            ],
        )["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let v1 = release("v1", &images.v1);
    let v3 = release("v3-broken", &images.v3_broken);
    let out = ctl(
        &addr,
        &["deploy", "--release", &v1, "--env", &env, "--follow"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    answered_at(port, "v1", Duration::from_secs(10));

    let (mut engine_ms, mut host_ms) = (Vec::new(), Vec::new());
    for _ in 0..cycles {
        let out = ctl(
            &addr,
            &[
                "deploy",
                "--release",
                &v3,
                "--env",
                &env,
                "--follow",
                "--auto-rollback",
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(3), "{stdout}");
        let back = Instant::now();
        assert_eq!(
            http_get(&format!("127.0.0.1:{port}"), "/version")
                .unwrap()
                .1
                .trim(),
            "v1"
        );
        let job = job_id_of(&stdout);
        let (_, events) = watch_all(&addr, &job);
        let verdict = events
            .iter()
            .filter(|e| {
                e["data"]["event"]
                    .as_str()
                    .is_some_and(|ev| ev.starts_with("fail"))
                    && !e["data"]["task_id"].is_null()
            })
            .map(at_ms)
            .max()
            .unwrap_or_else(|| panic!("no failing verdict in {events:#?}"));
        let jobs = ok_json(&addr, &["jobs", "list", "--env", &env]);
        let rollback = jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["rollback_of"] == job.as_str())
            .cloned()
            .unwrap_or(Value::Null);
        let rid = rollback["id"].as_str().unwrap().to_owned();
        let (_, revents) = watch_all(&addr, &rid);
        let healthy = revents
            .iter()
            .filter(|e| e["data"]["event"] == "succeed")
            .map(at_ms)
            .max()
            .unwrap();
        engine_ms.push((healthy - verdict) as f64);
        // From the host: the published port answered v1 no later than the command's
        // exit; the stored verdict's time bounds it from below.
        let now_ms = crate::deployd_e2e::now_ms();
        let elapsed_since_back = u64::try_from(back.elapsed().as_millis()).unwrap();
        host_ms.push((now_ms - elapsed_since_back).saturating_sub(verdict) as f64);
    }
    println!(
        "MTTR with a published port: verdict to rollback verified {:.0} ms, to the port answering v1 (upper bound) {:.0} ms (medians of {cycles})",
        median(&engine_ms),
        median(&host_ms)
    );
    Figure::new(
        "mttr",
        "MTTR with a fixed published port: failing verdict to v1 verified healthy",
        "ms",
        Better::Lower,
        engine_ms,
    )
    .goal(Goal::median_below(1_000.0))
    .notes("v3-broken -> automatic rollback to v1 on 127.0.0.1:<port> (stop-first: the kept v1 started again), http instance check every 100 ms, over SSH; one value per cycle")
    .emit()
    .unwrap();
    Figure::new(
        "mttr",
        "of which, seen from the host: failing verdict to `deployctl` exit with the port answering v1",
        "ms",
        Better::Lower,
        host_ms,
    )
    .notes("an upper bound: the port is checked once `deploy --follow` exits")
    .emit()
    .unwrap();
}
