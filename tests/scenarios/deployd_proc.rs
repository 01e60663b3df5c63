//! The `deployd` and `deployctl` binaries as child processes, for the real-process scenarios (`deployd_e2e`, `load`).
//!
//! Like `cli.rs` (whose helpers are private to it), the binaries are built with
//! `cargo build -p deployd -p deployctl` next to this test binary. Setting
//! `DEPLOY_TESTS_DEPLOYD` to a `deployd` executable (say `target/release/deployd`,
//! built with `cargo build --release -p deployd`) runs that one instead; the load
//! figures in docs/benchmarks.md are taken that way.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use deploy_testkit::http_get;
use serde_json::Value;

/// The admin token every scenario presets (`DEPLOYD_ADMIN_TOKEN`).
pub(crate) const ADMIN_TOKEN: &str = "dpl_scenario-admin-token-0123456789abcdef";

/// `target/<profile>`, the folder of this test binary's `deps/`.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// Builds deployd and deployctl once per test process (a no-op when they are fresh).
pub(crate) fn binaries() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = bin_dir();
        let mut build = deploy_testkit::cargo_command(&[
            "build",
            "--locked",
            "-p",
            "deployd",
            "-p",
            "deployctl",
        ]);
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(
            status.success(),
            "cargo build -p deployd -p deployctl failed"
        );
        let deployd = match std::env::var_os("DEPLOY_TESTS_DEPLOYD") {
            Some(path) => {
                let path = PathBuf::from(path);
                assert!(
                    path.is_file(),
                    "DEPLOY_TESTS_DEPLOYD={} is not a file",
                    path.display()
                );
                path
            }
            None => dir.join("deployd"),
        };
        (deployd, dir.join("deployctl"))
    })
}

/// The deployd executable the scenarios run (debug, or `DEPLOY_TESTS_DEPLOYD`).
pub(crate) fn deployd_path() -> &'static Path {
    &binaries().0
}

/// Spawns `cmd` (a deployd listening on `addr`, its stderr going to `stderr`) and
/// waits, bounded (300 x 100 ms), until `/healthz` answers; panics with its log if
/// it exits first or never answers.
pub(crate) fn spawn_serving(cmd: &mut Command, addr: &str, stderr: &Path) -> Child {
    let mut child = cmd.spawn().expect("deployd starts");
    for _ in 0..300 {
        if let Ok((200, _)) = http_get(addr, "/healthz") {
            return child;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "deployd exited with {status} before serving: {}",
                std::fs::read_to_string(stderr).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("deployd did not answer /healthz on {addr} within 30 s");
}

/// A running `deployd`; killed on drop.
pub(crate) struct Deployd {
    child: Child,
    pub(crate) addr: String,
    stderr: PathBuf,
}

impl Deployd {
    /// Starts deployd on `127.0.0.1:port` with its SQLite database under `data/db`,
    /// the admin token [`ADMIN_TOKEN`], `known_hosts` for SSH targets and `env` added
    /// to its environment; waits (bounded) until `/healthz` answers.
    pub(crate) fn start(data: &Path, port: u16, known_hosts: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_at(data, &format!("127.0.0.1:{port}"), known_hosts, env)
    }

    /// Like [`Deployd::start`], listening on `addr` (`ip:port`, say the host side of a
    /// test's veth pair).
    pub(crate) fn start_at(
        data: &Path,
        addr: &str,
        known_hosts: &Path,
        env: &[(&str, &str)],
    ) -> Self {
        let (deployd, _) = binaries();
        let addr = addr.to_owned();
        let stderr = data.join("deployd-stderr.txt");
        let mut cmd = Command::new(deployd);
        cmd.args(["--listen", &addr, "--data-dir"])
            .arg(data.join("db"))
            .arg("--known-hosts")
            .arg(known_hosts)
            .env_remove("DEPLOYD_CONFIG")
            .env_remove("DEPLOYD_DATABASE_URL")
            .env("DEPLOYD_ADMIN_TOKEN", ADMIN_TOKEN)
            .current_dir(data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&stderr)
                    .unwrap(),
            );
        for (k, v) in env {
            cmd.env(k, v);
        }
        // Replicas of one database must share the application secrets key file (deployd
        // refuses to start with another key than the one the database knows): every
        // deployd of a test's PostgreSQL database gets the same file, named after its url.
        let on_postgres = env.iter().find(|(k, _)| *k == "DEPLOYD_DATABASE_URL");
        let keyed = env.iter().any(|(k, _)| *k == "DEPLOYD_SECRETS_KEY_FILE");
        if let (Some((_, url)), false) = (on_postgres, keyed) {
            use std::hash::{Hash as _, Hasher as _};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            url.hash(&mut hasher);
            let file = std::env::temp_dir().join(format!(
                "deploy-tests-secrets-{:016x}/secrets.key",
                hasher.finish()
            ));
            cmd.env("DEPLOYD_SECRETS_KEY_FILE", file);
        }
        let child = spawn_serving(&mut cmd, &addr, &stderr);
        Self {
            child,
            addr,
            stderr,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// deployd's log so far (all starts on this data dir).
    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// `VmHWM` (peak resident set) and `VmRSS` of the process, in KiB, from `/proc/<pid>/status`.
    pub(crate) fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/<pid>/status: {status}"))
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    /// CPU time (user + system) deployd has used so far, in ms.
    pub(crate) fn cpu_ms(&self) -> u64 {
        cpu_ms(&self.pid().to_string())
    }

    /// SIGKILL: no shutdown, no lease released, in-flight work cut off.
    pub(crate) fn kill(mut self) {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "{status}"
        );
    }

    /// SIGTERM, then a bounded wait for a clean exit.
    pub(crate) fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "deployd exited with {status} on SIGTERM");
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        panic!("deployd did not stop within 60 s of SIGTERM");
    }
}

impl Drop for Deployd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `deployctl` command against `addr` with the admin token, not yet run.
pub(crate) fn ctl_command(addr: &str, args: &[&str]) -> Command {
    let (_, deployctl) = binaries();
    let mut cmd = Command::new(deployctl);
    cmd.args(args)
        .env("DEPLOYCTL_SERVER", format!("http://{addr}"))
        .env("DEPLOYCTL_TOKEN", ADMIN_TOKEN)
        .stdin(Stdio::null());
    if !addr.starts_with("127.") {
        // A scenario on a test network (a veth pair) speaks plain http off loopback on
        // purpose; deployctl refuses that unless told.
        cmd.env("DEPLOYCTL_ALLOW_INSECURE_HTTP", "true");
    }
    cmd
}

/// Runs `deployctl args…` to its end.
pub(crate) fn ctl(addr: &str, args: &[&str]) -> Output {
    ctl_command(addr, args).output().expect("deployctl runs")
}

/// Runs `deployctl args…` as the token `token` (not the admin).
pub(crate) fn ctl_as(addr: &str, token: &str, args: &[&str]) -> Output {
    ctl_command(addr, args)
        .env("DEPLOYCTL_TOKEN", token)
        .output()
        .expect("deployctl runs")
}

/// Runs `deployctl args… --output json`, expects exit 0 and returns the JSON.
pub(crate) fn ok_json(addr: &str, args: &[&str]) -> Value {
    let out = ctl(addr, &[args, &["--output", "json"]].concat());
    assert_eq!(
        out.status.code(),
        Some(0),
        "deployctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `deployctl deploy --release RELEASE --env ENV --follow` on `addr`, expecting exit 0
/// (the job completed); its stdout and how long the command took.
pub(crate) fn deploy_and_follow(addr: &str, release: &str, env: &str) -> (String, Duration) {
    let started = std::time::Instant::now();
    let out = ctl(
        addr,
        &["deploy", "--release", release, "--env", env, "--follow"],
    );
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (stdout, took)
}

/// `deployctl release create NAME --component web=IMAGE` on `addr`; the release id.
pub(crate) fn create_release(addr: &str, name: &str, image: &str) -> String {
    let component = format!("web={image}");
    ok_json(
        addr,
        &["release", "create", name, "--component", &component],
    )["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The JSON lines `deployctl … --output json` printed (`jobs watch`, `deploy --follow`).
pub(crate) fn json_lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `POST path` with a JSON body and the admin token, over plain HTTP/1.1 (for what
/// deployctl cannot send): the status and the JSON answer.
pub(crate) fn api_post(addr: &str, path: &str, body: &Value) -> (u16, Value) {
    api_post_as(addr, path, ADMIN_TOKEN, body)
}

/// `POST path` with a JSON body and `bearer` as the token, like [`api_post`].
pub(crate) fn api_post_as(addr: &str, path: &str, bearer: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    exchange(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {bearer}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// `GET path` with the admin token over plain HTTP/1.1: the status and the JSON answer.
pub(crate) fn api_get(addr: &str, path: &str) -> (u16, Value) {
    exchange(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
             Connection: close\r\n\r\n"
        ),
    )
}

/// Sends one raw HTTP/1.1 `request` (with `Connection: close`) and reads the whole
/// answer: its status and its body as JSON (`Null` when it is not JSON).
fn exchange(addr: &str, request: &str) -> (u16, Value) {
    let response = deploy_testkit::http_exchange(addr, request, Duration::from_secs(10)).unwrap();
    assert!(
        !response
            .head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{}",
        response.head
    );
    (response.status, response.json())
}

/// Waits (up to `bound`) until `job` has settled: completed or rolled back, or failed and
/// wound down; returns it as `GET /jobs/{id}` shows it. Past the bound it panics with
/// the job and the tail of deployd's log.
pub(crate) fn wait_settled(addr: &str, job: &str, server: &Deployd, bound: Duration) -> Value {
    let started = std::time::Instant::now();
    loop {
        let (status, shown) = api_get(addr, &format!("/api/v1/jobs/{job}"));
        assert_eq!(status, 200, "{shown:#}");
        match shown["status"].as_str().unwrap_or("") {
            "completed" | "rolled_back" => return shown,
            "failed" if shown["winding_down"] == false => return shown,
            _ => {}
        }
        assert!(
            started.elapsed() < bound,
            "job {job} did not settle within {bound:?}: {shown:#}\n{}",
            tail(&server.stderr(), 60)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// CPU time (user + system) process `pid` (or `self`) has used so far, in ms, from `/proc/<pid>/stat`.
pub(crate) fn cpu_ms(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields[10] + fields[11];
    let per_second: u64 = deploy_testkit::run_checked("getconf", &["CLK_TCK"])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    ticks * 1000 / per_second
}
