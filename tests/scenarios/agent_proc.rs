//! The `deploy-agent` binary as a child process, plus the slow-to-become-healthy test images the agent scenarios need.
//!
//! Built like deployd and deployctl (`cargo build -p …` next to this test binary).
//! The agent's stderr goes to a file in the test's temp dir so a test can grep it
//! for secrets afterwards.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use deploy_testkit::{Registry, run_checked};
use serde_json::Value;

use crate::deployd_proc::{ctl, ok_json};

/// The package of the `deploy-agent` binary.
const AGENT_PACKAGE: &str = "deploy-agent-bin";

/// Builds `deploy-agent` once per test process; its path.
pub(crate) fn agent_binary() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let mut build = deploy_testkit::cargo_command(&["build", "--locked", "-p", AGENT_PACKAGE]);
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo build -p {AGENT_PACKAGE} failed");
        dir.join("deploy-agent")
    })
}

/// A running `deploy-agent`; killed on drop.
pub(crate) struct AgentProc {
    child: Child,
    stderr: PathBuf,
}

impl AgentProc {
    /// Starts an agent named `name` against deployd at `addr`, keeping its state in
    /// `state` (created if missing), with the bootstrap token in its environment when
    /// given. Does not wait for it to register.
    pub(crate) fn start(addr: &str, name: &str, state: &Path, bootstrap: Option<&str>) -> Self {
        Self::start_with(&format!("http://{addr}"), name, state, bootstrap, &[])
    }

    /// Like [`AgentProc::start`] against the base URL `server`, with `extra` flags.
    pub(crate) fn start_with(
        server: &str,
        name: &str,
        state: &Path,
        bootstrap: Option<&str>,
        extra: &[&str],
    ) -> Self {
        Self::start_wrapped(&[], server, name, state, bootstrap, extra)
    }

    /// Like [`AgentProc::start_with`], run through `wrapper` (say `ip netns exec NS`,
    /// which execs the agent, so the child is still the agent itself); no wrapper when empty.
    pub(crate) fn start_wrapped(
        wrapper: &[&str],
        server: &str,
        name: &str,
        state: &Path,
        bootstrap: Option<&str>,
        extra: &[&str],
    ) -> Self {
        std::fs::create_dir_all(state).unwrap();
        let stderr = state.with_extension("stderr.txt");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(agent_binary());
                cmd
            }
            None => Command::new(agent_binary()),
        };
        cmd.args(["--server", server, "--name", name])
            .args(extra)
            .arg("--state-dir")
            .arg(state)
            .args(["--label", "scenario=agent"])
            .env_remove("DEPLOY_AGENT_BOOTSTRAP_TOKEN")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&stderr)
                    .unwrap(),
            );
        if let Some(token) = bootstrap {
            cmd.env("DEPLOY_AGENT_BOOTSTRAP_TOKEN", token);
        }
        Self {
            child: cmd.spawn().expect("deploy-agent starts"),
            stderr,
        }
    }

    /// Everything the agent wrote to stderr so far (all starts with this state dir).
    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGKILL: no goodbye, a task in flight cut off.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (bounded) for the agent to exit on its own.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "deploy-agent still runs after {limit:?}: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// True while the process runs.
    pub(crate) fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The agents deployd lists (`deployctl agent list --output json`).
pub(crate) fn agents(addr: &str) -> Vec<Value> {
    let listed = ok_json(addr, &["agent", "list"]);
    match listed {
        Value::Array(items) => items,
        other => other["agents"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("agent list: {other:#}")),
    }
}

/// A bootstrap token for agent `name` (label `scenario=agent`), created with deployctl.
pub(crate) fn bootstrap_token(addr: &str, name: &str) -> String {
    let out = ctl(
        addr,
        &[
            "agent",
            "bootstrap-token",
            "--name",
            name,
            "--label",
            "scenario=agent",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Waits (bounded, 30 s) until agent `name` is listed active; its id.
pub(crate) fn wait_active(addr: &str, name: &str, agent: &mut AgentProc) -> String {
    let started = Instant::now();
    loop {
        if let Some(a) = agents(addr)
            .into_iter()
            .find(|a| a["name"] == name && a["active"] == true)
        {
            return a["id"].as_str().unwrap().to_owned();
        }
        assert!(
            agent.running(),
            "deploy-agent {name} exited: {}",
            agent.stderr()
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "agent {name} not active after 30 s: {:#?}\n{}",
            agents(addr),
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An image that takes `delay_s` seconds to become healthy (a Docker HEALTHCHECK on a
/// file its command creates after a sleep), built `FROM base` (a test image by digest)
/// with the legacy builder and pushed to `registry` as `<repository>:<tag>`; its
/// registry digest reference. The agent waits for a HEALTHCHECK to pass before it
/// swaps names, so a deploy of this image is in flight for about `delay_s` seconds.
pub(crate) fn slow_image(
    registry: &Registry,
    repository: &str,
    base: &str,
    tag: &str,
    delay_s: u32,
) -> String {
    let dir = deploy_testkit::temp_dir("agent-slow-image-").unwrap();
    let dockerfile = format!(
        "FROM {base}\n\
         HEALTHCHECK --interval=1s --timeout=1s --retries=30 CMD [\"/bin/busybox\", \"test\", \"-f\", \"/tmp/ready\"]\n\
         CMD [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox sleep {delay_s}; /bin/busybox touch /tmp/ready; exec /bin/busybox httpd -f -p 8080 -h /www\"]\n"
    );
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    let name = format!("{repository}:{tag}");
    let status = Command::new("docker")
        .args(["build", "--quiet", "-t", &name])
        .arg(dir.path())
        .env("DOCKER_BUILDKIT", "0")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "docker build {name}");
    run_checked("docker", &["push", "--quiet", &name]).unwrap();
    let digests = run_checked(
        "docker",
        &[
            "inspect",
            "--format",
            "{{range .RepoDigests}}{{println .}}{{end}}",
            &name,
        ],
    )
    .unwrap();
    let prefix = format!("{}/", registry.address());
    let reference = digests
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no registry digest for {name}: {digests}"))
        .to_owned();
    run_checked("docker", &["rmi", &name]).unwrap();
    reference
}
