//! Benchmark: SSH fan-out to 20 loopback sshd hosts vs `xargs -P20 ssh`, and a 20-host docker_host deploy vs plain docker commands over ssh.
//!
//! Run: `cargo bench -p deploy-exec --bench ssh_fanout` (needs scripts/peers/ssh.sh and Docker).
//! Both sides run in the same process, interleaved round by round, against the same hosts.
//! `BENCH_FANOUT_ROUNDS` (default 15) and `BENCH_DEPLOY_ROUNDS` (default 6) change the
//! round counts; with `BENCH_REPORT_FILE` set (by `cargo xtask bench`) the samples
//! also go to that file as JSON lines, each side with its same-run baseline.

#![expect(clippy::print_stdout, reason = "a bench binary reports on stdout")]

use std::error::Error;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deploy_core::{
    CommandSpec, Connection, CredentialRef, Host, HostKeyPolicy, ImageRef, Name, SshConnection,
    Target, TargetType, UnixPath, Username,
};
use deploy_exec::ssh::{SshExecutor, SshExecutorConfig};
use deploy_exec::{ComponentSpec, DefaultSecrets, DeployRequest, ExecContext, Executor, sh_quote};
use deploy_testkit::bench_report::{Better, Figure, Goal};
use deploy_testkit::{
    ContainerCleanup, IMAGE_HTTP_PORT, Registry, SSH_TEST_USER, SshdHosts, TestImages, run_checked,
};

type BoxResult<T> = Result<T, Box<dyn Error>>;

const HOSTS: u8 = 20;
/// Rounds from `var`, or `default`.
fn rounds(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(default)
        .max(1)
}
/// `docker stop --time`: the test image's busybox httpd (PID 1) ignores SIGTERM, so both sides wait this long.
const STOP_TIMEOUT: Duration = Duration::from_secs(1);

fn target(hosts: &SshdHosts, i: u8, work: &str) -> BoxResult<Target> {
    let mut t = deploy_core::testing::ssh_target(i);
    t.name = Name::parse(&format!("host-{i}"))?;
    t.target_type = TargetType::DockerHost;
    t.connection = Connection::Ssh(SshConnection {
        host: Host::parse(&hosts.host(i))?,
        port: hosts.port(),
        user: Username::parse(SSH_TEST_USER)?,
        credential_ref: CredentialRef::parse(&format!("file:{}", hosts.client_key().display()))?,
        work_dir: Some(UnixPath::parse(work)?),
        host_key: HostKeyPolicy::KnownHosts,
    });
    Ok(t)
}

fn executor(hosts: &SshdHosts, settle: Duration) -> SshExecutor {
    let mut config = SshExecutorConfig::new(hosts.known_hosts());
    config.settle = settle;
    config.stop_timeout = STOP_TIMEOUT;
    SshExecutor::new(config, Arc::new(DefaultSecrets))
}

fn ssh_args(hosts: &SshdHosts) -> String {
    format!(
        "ssh -o BatchMode=yes -o KexAlgorithms=curve25519-sha256 -o StrictHostKeyChecking=yes \
         -o UserKnownHostsFile={} -i {} -p {} -l {SSH_TEST_USER}",
        hosts.known_hosts().display(),
        hosts.client_key().display(),
        hosts.port()
    )
}

fn host_list() -> String {
    (1..=HOSTS).map(|i| format!("127.0.0.{i}\n")).collect()
}

fn sh(script: &str) -> BoxResult<Duration> {
    let start = Instant::now();
    let status = Command::new("/bin/sh").arg("-c").arg(script).status()?;
    if !status.success() {
        return Err(format!("baseline failed ({status}): {script}").into());
    }
    Ok(start.elapsed())
}

async fn fanout(exec: Arc<SshExecutor>, targets: &[Target]) -> BoxResult<Duration> {
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let cmd = CommandSpec::new(vec!["true".to_owned()])?;
    for t in targets {
        let (exec, t, cmd) = (exec.clone(), t.clone(), cmd.clone());
        set.spawn(async move {
            let ctx = ExecContext::quiet(Duration::from_secs(30));
            exec.run_command(&t, &cmd, &ctx).await
        });
    }
    while let Some(r) = set.join_next().await {
        let out = r??;
        if out.exit_status != 0 {
            return Err("remote `true` failed".into());
        }
    }
    Ok(start.elapsed())
}

#[derive(Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn ms(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.0.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        v.sort_by(f64::total_cmp);
        v
    }
    fn median(&self) -> f64 {
        let v = self.ms();
        if v.is_empty() {
            return f64::NAN;
        }
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }
    fn row(&self, label: &str) -> String {
        let v = self.ms();
        format!(
            "| {label} | {} | {:.0} | {:.0} | {:.0} |",
            v.len(),
            self.median(),
            v.first().copied().unwrap_or(f64::NAN),
            v.last().copied().unwrap_or(f64::NAN)
        )
    }
}

fn docker_baseline_script(hosts: &SshdHosts, name: &str, image: &str, i: u8) -> String {
    // The same steps as the executor, as plain docker commands, one ssh per step.
    let ssh = format!("{} 127.0.0.{i}", ssh_args(hosts));
    let inspect = format!(
        "docker inspect --type container --format '{{{{index .Config.Labels \"stella.digest\"}}}} {{{{.State.Running}}}}' {name} 2>/dev/null || true"
    );
    let pull = format!("docker image inspect {image} >/dev/null 2>&1 || docker pull {image}");
    let swap = format!(
        "docker rm -f {name}-next >/dev/null 2>&1; \
         docker run -d --name {name}-next --restart unless-stopped -p 127.0.0.1::{IMAGE_HTTP_PORT} --label stella.component={name} {image} >/dev/null && \
         [ \"$(docker inspect --format '{{{{.State.Running}}}}' {name}-next)\" = true ] && \
         if docker inspect --type container {name} >/dev/null 2>&1; then docker rm -f {name}-previous >/dev/null 2>&1; docker stop --time 1 {name} >/dev/null && docker rename {name} {name}-previous; fi && \
         docker rename {name}-next {name}"
    );
    let verify = format!("docker inspect --format '{{{{.State.Running}}}}' {name}");
    [inspect, pull, swap, verify]
        .iter()
        .map(|remote| format!("{ssh} {} >/dev/null", sh_quote(remote)))
        .collect::<Vec<_>>()
        .join(" && ")
}

async fn bench() -> BoxResult<()> {
    let fanout_rounds = rounds("BENCH_FANOUT_ROUNDS", 15);
    let deploy_rounds = rounds("BENCH_DEPLOY_ROUNDS", 6);
    let hosts = SshdHosts::start(HOSTS)?;
    let targets: Vec<Target> = (1..=HOSTS)
        .map(|i| target(&hosts, i, "/tmp"))
        .collect::<BoxResult<_>>()?;
    let baseline = format!(
        "printf '{}' | xargs -P20 -I{{}} {} {{}} true",
        host_list().replace('\n', "\\n"),
        ssh_args(&hosts)
    );

    // Warm-up (page cache, sshd first fork) for both sides.
    fanout(Arc::new(executor(&hosts, Duration::ZERO)), &targets).await?;
    sh(&baseline)?;

    let (mut ours_cold, mut ours_warm, mut openssh) =
        (Samples::default(), Samples::default(), Samples::default());
    for _ in 0..fanout_rounds {
        let exec = Arc::new(executor(&hosts, Duration::ZERO));
        ours_cold.0.push(fanout(exec.clone(), &targets).await?);
        ours_warm.0.push(fanout(exec.clone(), &targets).await?);
        exec.close_all().await;
        openssh.0.push(sh(&baseline)?);
    }
    println!(
        "## fan-out: `true` on {HOSTS} hosts, parallelism {HOSTS}, {fanout_rounds} rounds (ms)\n"
    );
    println!("| run | n | median | min | max |\n| --- | --- | --- | --- | --- |");
    println!(
        "{}",
        ours_cold.row("deploy-exec, new connections (connect + auth + exec)")
    );
    println!(
        "{}",
        openssh.row("OpenSSH `xargs -P20 ssh` (curve25519-sha256)")
    );
    println!(
        "{}",
        ours_warm.row("deploy-exec, pooled connections (exec only)")
    );
    println!(
        "\nratio deploy-exec new connections / OpenSSH (medians): {:.2}\n",
        ours_cold.median() / openssh.median()
    );
    const SECTION: &str = "ssh";
    let openssh_name = "OpenSSH `xargs -P20 ssh` (curve25519-sha256)";
    Figure::new(
        SECTION,
        "deploy-exec fan-out, new connections (connect + auth + exec)",
        "ms",
        Better::Lower,
        ours_cold.ms(),
    )
    .baseline(openssh_name, openssh.ms())
    .goal(Goal::ratio_below(1.5))
    .notes("`true` on 20 loopback sshd hosts at once; one value per round, interleaved with the baseline")
    .emit()?;
    Figure::new(
        SECTION,
        "deploy-exec fan-out, pooled connections (exec only)",
        "ms",
        Better::Lower,
        ours_warm.ms(),
    )
    .baseline(openssh_name, openssh.ms())
    .notes("the same executor again, reusing its 20 connections")
    .emit()?;

    // docker_host deploy of an already-pulled image on 20 hosts (one engine behind them).
    let prefix = format!("dxbench{}", std::process::id());
    let registry = Registry::start()?;
    // Declared after the registry: dropped before it, so containers go before its images.
    let _cleanup = ContainerCleanup::new(&prefix);
    let images = TestImages::build(&registry, &format!("{prefix}/app"))?;
    for image in [&images.v1, &images.v2] {
        run_checked("docker", &["pull", "--quiet", image])?;
    }
    let (mut ours, mut plain) = (Samples::default(), Samples::default());
    for round in 0..deploy_rounds {
        let image = if round % 2 == 0 {
            &images.v1
        } else {
            &images.v2
        };
        let exec = Arc::new(executor(&hosts, Duration::ZERO));
        let start = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for (idx, t) in targets.iter().enumerate() {
            let exec = exec.clone();
            let mut task = deploy_core::testing::task(idx as u64 + 1, 3);
            let image = ImageRef::parse(image)?;
            task.digest = image.digest().clone();
            let request = DeployRequest {
                target: t.clone(),
                task,
                component: Some(ComponentSpec {
                    name: Name::parse(&format!("{prefix}-ours-{idx}"))?,
                    container: deploy_core::ContainerSpec {
                        ports: vec![deploy_core::PortMapping {
                            host_ip: Some(std::net::Ipv4Addr::LOCALHOST.into()),
                            host_port: None,
                            container_port: IMAGE_HTTP_PORT,
                            protocol: deploy_core::Protocol::Tcp,
                        }],
                        ..deploy_core::ContainerSpec::from_image(image)
                    },
                    keep_previous_running: false,
                }),
                project: Name::parse(&prefix)?,
                artifacts: Vec::new(),
                stored_lock: None,
                rollback: false,
            };
            set.spawn(async move {
                let ctx = ExecContext::quiet(Duration::from_secs(120));
                exec.deploy(&request, &ctx).await
            });
        }
        while let Some(r) = set.join_next().await {
            let r = r?;
            if !r.as_ref().is_ok_and(|d| d.changed) {
                return Err(format!("deploy failed: {r:?}").into());
            }
        }
        ours.0.push(start.elapsed());
        exec.close_all().await;

        let script: Vec<String> = (1..=HOSTS)
            .map(|i| {
                let name = format!("{prefix}-plain-{}", i - 1);
                format!(
                    "( {} ) & pids=\"$pids $!\"",
                    docker_baseline_script(&hosts, &name, image, i)
                )
            })
            .collect();
        plain.0.push(sh(&format!(
            "pids=\n{}\nfail=0; for j in $pids; do wait $j || fail=1; done; exit $fail",
            script.join("\n")
        ))?);
    }
    println!(
        "## docker_host deploy of an already-pulled image, {HOSTS} hosts in parallel, {deploy_rounds} rounds alternating v1/v2 (ms)\n"
    );
    println!("| run | n | median | min | max |\n| --- | --- | --- | --- | --- |");
    println!(
        "{}",
        ours.row("deploy-exec `deploy` (inspect, pull-if-missing, start-first swap, verify)")
    );
    println!(
        "{}",
        plain.row("plain docker commands, one `ssh` per step (same steps)")
    );
    println!("\nratio (medians): {:.2}", ours.median() / plain.median());
    Figure::new(
        SECTION,
        "20-host docker deploy by deploy-exec (inspect, pull-if-missing, start-first swap, verify)",
        "ms",
        Better::Lower,
        ours.ms(),
    )
    .baseline("plain docker commands, one `ssh` per step (same steps)", plain.ms())
    .notes("an already-pulled image, v1/v2 alternating, one Docker Engine behind the 20 hosts; one value per round")
    .emit()?;
    Ok(())
}

fn main() -> BoxResult<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("ssh_fanout: run with `cargo bench -p deploy-exec --bench ssh_fanout`");
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench())
}
