//! Real processes: the `deployd` binary on a free port with a temp SQLite database, driven only through the `deployctl` binary.
//!
//! The binaries are built (or found fresh) next to this test binary with
//! `cargo build -p deployd -p deployctl`, since they live in other packages.
//! The SSH target is a closed loopback port, so the deploy fails cleanly:
//! the flows that need no executor, one failed deploy (exit 1), the exit codes
//! for bad input (2) and refused tokens or no server (4), the admin token file
//! of the first start, SIGTERM (also with a `deploy --follow` attached to a job that keeps
//! retrying: deployd stops at once and the follower resumes on the restart),
//! a restart over the same database, and the binaries' `--version` and `deployctl version`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use deploy_testkit::{free_port, temp_dir};
use serde_json::Value;

use crate::deployd_proc::{binaries, spawn_serving};

struct Deployd {
    child: Child,
    addr: String,
    stdout: PathBuf,
}

impl Deployd {
    fn start(data: &Path, port: u16, preset_token: Option<&str>) -> Self {
        let (deployd, _) = binaries();
        let addr = format!("127.0.0.1:{port}");
        let stdout = data.join(format!("stdout-{port}-{}.txt", std::process::id()));
        let stderr = data.join("stderr.txt");
        let mut cmd = Command::new(deployd);
        cmd.args(["--listen", &addr, "--data-dir"])
            .arg(data.join("db"))
            .args(["--known-hosts"])
            .arg(data.join("known_hosts"))
            .env_remove("DEPLOYD_ADMIN_TOKEN")
            .env_remove("DEPLOYD_CONFIG")
            .env_remove("DEPLOYD_DATABASE_URL")
            .current_dir(data)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&stderr)
                    .unwrap(),
            );
        if let Some(t) = preset_token {
            cmd.env("DEPLOYD_ADMIN_TOKEN", t);
        }
        let child = spawn_serving(&mut cmd, &addr, &stderr);
        Self {
            child,
            addr,
            stdout,
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap()
    }

    /// SIGTERM, then a bounded wait for a clean exit; returns how long it took.
    fn terminate(mut self) -> Duration {
        let sent = std::time::Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "deployd exited with {status} on SIGTERM");
                return sent.elapsed();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        panic!("deployd did not stop within 30 s of SIGTERM");
    }
}

impl Drop for Deployd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ctl(addr: &str, token: &str, args: &[&str]) -> Output {
    let (_, deployctl) = binaries();
    Command::new(deployctl)
        .args(args)
        .env("DEPLOYCTL_SERVER", format!("http://{addr}"))
        .env("DEPLOYCTL_TOKEN", token)
        .stdin(Stdio::null())
        .output()
        .expect("deployctl runs")
}

fn ok_json(addr: &str, token: &str, args: &[&str]) -> Value {
    let out = ctl(addr, token, &[args, &["--output", "json"]].concat());
    assert_eq!(
        out.status.code(),
        Some(0),
        "deployctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn deployd_and_deployctl_end_to_end() {
    let data = temp_dir("deployd-e2e").unwrap();
    let port = free_port().unwrap();
    let server = Deployd::start(data.path(), port, None);
    let addr = server.addr.clone();

    // The first start writes the admin token to a file in the data dir, not to stdout.
    let token = std::fs::read_to_string(data.path().join("db").join("admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(server.stdout(), "", "deployd wrote to stdout");

    let env = ok_json(&addr, &token, &["env", "create", "staging"]);
    let env_id = env["id"].as_str().unwrap();
    assert_eq!(env["name"], "staging");
    let target = ok_json(
        &addr,
        &token,
        &[
            "target",
            "add",
            "--env",
            env_id,
            "host-1",
            "--host",
            "127.0.0.1",
            "--port",
            "1",
            "--user",
            "deploy",
            "--key-ref",
            "env:DEPLOY_E2E_NO_SUCH_KEY",
        ],
    );
    assert_eq!(target["connection"]["port"], 1);
    let listed = ok_json(&addr, &token, &["target", "list", "--env", env_id]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let digest = "b".repeat(64);
    let image = format!("web=127.0.0.1:5000/web@sha256:{digest}");
    let release = ok_json(
        &addr,
        &token,
        &["release", "create", "v1", "--component", &image],
    );
    let release_id = release["id"].as_str().unwrap();

    // Offline render from the API's own documents: deterministic, no server needed.
    let files = data.path().join("render-in");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("release.json"), release.to_string()).unwrap();
    std::fs::write(files.join("target.json"), target.to_string()).unwrap();
    std::fs::write(
        files.join("compose.yml"),
        "services:\n  app:\n    componentName: web\n",
    )
    .unwrap();
    let render = |out: &str| {
        let args: Vec<String> = [
            "artifacts",
            "render",
            "--environment",
            "staging",
            "--output",
            "json",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .chain(
            [
                "--release",
                "release.json",
                "--target",
                "target.json",
                "--template",
                "compose.yml",
                "--out",
            ]
            .iter()
            .map(|a| {
                if a.ends_with(".json") || a.ends_with(".yml") {
                    files.join(a).display().to_string()
                } else {
                    (*a).to_owned()
                }
            }),
        )
        .chain([files.join(out).display().to_string()])
        .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // No server at this address: render must not need one.
        ctl("127.0.0.1:1", "", &args)
    };
    let first = render("out-1");
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    let first: Value = serde_json::from_slice(&first.stdout).unwrap();
    let second: Value = serde_json::from_slice(&render("out-2").stdout).unwrap();
    assert_eq!(first, second, "same files, same bytes");
    let lock = std::fs::read_to_string(files.join("out-1/docker-compose.lock.yml")).unwrap();
    assert!(lock.contains(&digest), "{lock}");
    std::fs::remove_file(files.join("compose.yml")).unwrap();
    assert_eq!(render("out-3").status.code(), Some(2));

    // A viewer token from the admin: reading works, deploying is refused (exit 4).
    let viewer = ok_json(
        &addr,
        &token,
        &["token", "create", "ci-viewer", "--role", "viewer"],
    );
    let viewer = viewer["token"].as_str().unwrap();
    ok_json(&addr, viewer, &["env", "show", env_id]);
    let refused = ctl(
        &addr,
        viewer,
        &["deploy", "--release", release_id, "--env", env_id],
    );
    assert_eq!(refused.status.code(), Some(4), "{refused:?}");

    // Agents: a bootstrap token alone on stdout (text) or as JSON; it is no API token.
    let boot = ctl(
        &addr,
        &token,
        &[
            "agent",
            "bootstrap-token",
            "--name",
            "rack-1",
            "--expires-in-secs",
            "600",
        ],
    );
    assert_eq!(boot.status.code(), Some(0), "{boot:?}");
    let boot = String::from_utf8(boot.stdout).unwrap();
    assert!(
        boot.starts_with("dpb_") && boot.trim_end().lines().count() == 1,
        "{boot}"
    );
    let created = ok_json(
        &addr,
        &token,
        &[
            "agent",
            "bootstrap-token",
            "--name",
            "rack-2",
            "--label",
            "env=staging",
            "--label",
            "zone=a",
            "--capability",
            "docker",
        ],
    );
    assert!(created["token"].as_str().unwrap().starts_with("dpb_"));
    assert!(created["expires_at"].is_string());
    // Bound to that agent: its name, its labels, what it may claim.
    assert_eq!(created["name"], "rack-2", "{created}");
    assert_eq!(
        created["labels"],
        serde_json::json!({"env": "staging", "zone": "a"}),
        "{created}"
    );
    assert_eq!(created["capabilities"], serde_json::json!(["docker"]));
    let refused = ctl(&addr, boot.trim_end(), &["env", "show", env_id]);
    assert_eq!(refused.status.code(), Some(4), "{refused:?}");
    // Listed without secrets; one revoked through its own subcommand.
    let listed = ok_json(&addr, &token, &["agent", "bootstrap-tokens"]);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        !serde_json::Value::Array(listed.clone())
            .to_string()
            .contains("dpb_")
    );
    let rack2 = created["id"].as_str().unwrap();
    let revoked = ok_json(&addr, &token, &["agent", "revoke-bootstrap-token", rack2]);
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    assert_eq!(
        revoked["labels"],
        serde_json::json!({"env": "staging", "zone": "a"})
    );
    assert_eq!(
        ok_json(&addr, &token, &["agent", "list"]),
        serde_json::json!([])
    );
    let bad = ctl(
        &addr,
        &token,
        &[
            "agent",
            "bootstrap-token",
            "--name",
            "x",
            "--expires-in-secs",
            "0",
        ],
    );
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    // A label that is not `key=value`, a bad key, a bad capability: 2, naming it.
    for (flags, named) in [
        (["--label", "env"], "env"),
        (["--label", "Env=prod"], "Env"),
        (["--capability", "ssh"], "ssh"),
    ] {
        let mut args = vec!["agent", "bootstrap-token", "--name", "x"];
        args.extend(flags);
        let bad = ctl(&addr, &token, &args);
        assert_eq!(bad.status.code(), Some(2), "{flags:?}: {bad:?}");
        assert!(
            String::from_utf8_lossy(&bad.stderr).contains(named),
            "{flags:?}: {bad:?}"
        );
    }

    // Relabelling: registered with the token for rack-1 (no labels), then changed by
    // `agent set-labels`, from the version read.
    let (status, registered) = crate::deployd_proc::api_post_as(
        &addr,
        "/api/v1/agent/register",
        boot.trim_end(),
        &serde_json::json!({"protocol": 1, "name": "rack-1", "capabilities": ["docker"]}),
    );
    assert_eq!(status, 201, "{registered}");
    assert_eq!(registered["labels"], serde_json::json!({}));
    let relabelled = ok_json(
        &addr,
        &token,
        &["agent", "set-labels", "rack-1", "--label", "env=prod"],
    );
    assert_eq!(relabelled["labels"], serde_json::json!({"env": "prod"}));
    assert_eq!(relabelled["labels_version"], 2);
    let stale = ctl(
        &addr,
        &token,
        &[
            "agent",
            "set-labels",
            "rack-1",
            "--label",
            "env=dev",
            "--version",
            "1",
        ],
    );
    assert_ne!(stale.status.code(), Some(0), "{stale:?}");
    let shown = ok_json(&addr, &token, &["agent", "show", "rack-1"]);
    assert_eq!(
        shown["labels"],
        serde_json::json!({"env": "prod"}),
        "{shown}"
    );

    // Exit codes: bad input 2, wrong token 4.
    let bad = ctl(
        &addr,
        &token,
        &["release", "create", "v2", "--component", "web=nginx:latest"],
    );
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("components[0].image"),
        "{bad:?}"
    );
    let wrong = ctl(&addr, "dpl_not-a-token", &["env", "show", env_id]);
    assert_eq!(wrong.status.code(), Some(4), "{wrong:?}");

    // Deploy and follow: the SSH target is unreachable, the job fails, exit 1.
    let deploy = ctl(
        &addr,
        &token,
        &[
            "deploy",
            "--release",
            release_id,
            "--env",
            env_id,
            "--follow",
            "--max-attempts",
            "1",
        ],
    );
    let stdout = String::from_utf8_lossy(&deploy.stdout).into_owned();
    assert_eq!(
        deploy.status.code(),
        Some(1),
        "{stdout} {}",
        String::from_utf8_lossy(&deploy.stderr)
    );
    assert!(stdout.contains("running -> failed"), "{stdout}");
    let job_id = stdout
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("job "))
        .and_then(|l| l.split(':').next())
        .unwrap()
        .to_owned();
    assert!(
        stdout
            .trim_end()
            .ends_with(&format!("job {job_id} ended failed")),
        "{stdout}"
    );
    let job = ok_json(&addr, &token, &["jobs", "show", &job_id]);
    assert_eq!(job["status"], "failed");
    assert_eq!(job["tasks"][0]["status"], "failed");
    let listed = ok_json(
        &addr,
        &token,
        &["jobs", "list", "--env", env_id, "--status", "failed"],
    );
    assert_eq!(listed["jobs"][0]["id"], job_id.as_str());
    // The task's log, followed until the task settled (it already has).
    let task_id = job["tasks"][0]["id"].as_str().unwrap();
    let logs = ctl(&addr, &token, &["logs", task_id, "--follow"]);
    assert_eq!(logs.status.code(), Some(0), "{logs:?}");

    // A second deploy that keeps retrying the closed port stays running, followed
    // over SSE: SIGTERM still stops deployd cleanly and quickly (the stream ends on
    // shutdown), and the follower reconnects to the restart below.
    // Its target has a valid key (so the credential resolves) on a closed port: every
    // attempt fails with a retryable connect error, and the job keeps retrying.
    // deployd resolves `file:` credentials only inside its secrets dir (default
    // `<data dir>/secrets`).
    let secrets = data.path().join("db/secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let key = secrets.join("held_ed25519");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen runs (apt-get install openssh-client)");
    assert!(keygen.success(), "ssh-keygen failed: {keygen}");
    let held = ok_json(&addr, &token, &["env", "create", "held"]);
    let held_id = held["id"].as_str().unwrap();
    let key_ref = format!("file:{}", key.display());
    ok_json(
        &addr,
        &token,
        &[
            "target",
            "add",
            "--env",
            held_id,
            "held-1",
            "--host",
            "127.0.0.1",
            "--port",
            "1",
            "--user",
            "deploy",
            "--key-ref",
            &key_ref,
        ],
    );
    let (_, deployctl) = binaries();
    let mut follower = Command::new(deployctl)
        .args([
            "deploy",
            "--release",
            release_id,
            "--env",
            held_id,
            "--follow",
            "--max-attempts",
            "100",
        ])
        .env("DEPLOYCTL_SERVER", format!("http://{addr}"))
        .env("DEPLOYCTL_TOKEN", &token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut running = None;
    for _ in 0..100 {
        let jobs = ok_json(
            &addr,
            &token,
            &["jobs", "list", "--env", held_id, "--status", "running"],
        );
        if let Some(id) = jobs["jobs"][0]["id"].as_str() {
            running = Some(id.to_owned());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let Some(running) = running else {
        let _ = follower.kill();
        let out = follower.wait_with_output().unwrap();
        panic!("the second deploy's job did not run within 10 s: {out:?}");
    };
    // Let the follower's stream open and read the first transitions.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        follower.try_wait().unwrap().is_none(),
        "the follower is still attached"
    );

    // SIGTERM stops it cleanly; a restart on the same database prints nothing and still knows the job.
    let took = server.terminate();
    assert!(
        took < Duration::from_secs(8),
        "deployd took {took:?} to stop with an SSE follower attached, expected under 8 s"
    );
    // Same port, so the follower's reconnects reach it.
    let again = Deployd::start(data.path(), port, None);
    assert_eq!(again.stdout(), "", "deployd prints nothing on stdout");
    let job = ok_json(&again.addr, &token, &["jobs", "show", &job_id]);
    assert_eq!(job["status"], "failed");
    let watched = ctl(&again.addr, &token, &["jobs", "watch", &job_id]);
    assert_eq!(watched.status.code(), Some(1), "{watched:?}");
    // The follower reconnected to the restart: cancelling the job ends its follow.
    let cancelled = ctl(&again.addr, &token, &["jobs", "cancel", &running]);
    assert_eq!(cancelled.status.code(), Some(0), "{cancelled:?}");
    let mut followed = None;
    for _ in 0..300 {
        if let Some(status) = follower.try_wait().unwrap() {
            followed = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if followed.is_none() {
        let _ = follower.kill();
    }
    let output = follower.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        followed.is_some(),
        "the follower did not end after the cancel: {output:?}"
    );
    // A cancel fails the job; the follower saw it on the restarted server, once.
    assert!(
        stdout
            .trim_end()
            .ends_with(&format!("job {running} ended failed")),
        "{output:?}"
    );
    assert_eq!(stdout.matches("(cancelled by").count(), 1, "{output:?}");
    assert_eq!(stdout.matches("(attempt 1 of 100").count(), 1, "{output:?}");
    again.terminate();

    // `jobs watch` started while no server listens reconnects until one does.
    let port = free_port().unwrap();
    let (_, deployctl) = binaries();
    let mut watcher = Command::new(deployctl)
        .args(["jobs", "watch", &job_id])
        .env("DEPLOYCTL_SERVER", format!("http://127.0.0.1:{port}"))
        .env("DEPLOYCTL_TOKEN", &token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let third = Deployd::start(data.path(), port, None);
    let mut code = None;
    for _ in 0..300 {
        if let Some(status) = watcher.try_wait().unwrap() {
            code = status.code();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if code.is_none() {
        let _ = watcher.kill();
    }
    let output = watcher.wait_with_output().unwrap();
    assert_eq!(code, Some(1), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("ended failed"),
        "{output:?}"
    );
    third.terminate();

    // Completions need no server.
    let completions = ctl("127.0.0.1:1", "", &["completions", "bash"]);
    assert_eq!(completions.status.code(), Some(0), "{completions:?}");
    assert!(String::from_utf8_lossy(&completions.stdout).contains("_deployctl()"));

    // No server: exit 4.
    let gone = ctl(
        &format!("127.0.0.1:{port}"),
        &token,
        &["env", "show", env_id],
    );
    assert_eq!(gone.status.code(), Some(4), "{gone:?}");
}

/// The commit the binaries were just built with: what their build script reads
/// (`DEPLOY_GIT_COMMIT`, else git, else `unknown`).
fn expected_commit() -> String {
    if let Some(c) = std::env::var("DEPLOY_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
    {
        return c.trim().to_owned();
    }
    Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |o| String::from_utf8(o.stdout).unwrap().trim().to_owned(),
        )
}

/// `deployd`, `deployctl` and `deploy-agent --version` print their own name (not a
/// package's), the workspace version and the commit; `deployctl version` adds the
/// server's, asked without a token.
#[test]
fn binaries_print_name_version_and_commit() {
    let (deployd, deployctl) = binaries();
    let agent = crate::agent_proc::agent_binary();
    let version = env!("CARGO_PKG_VERSION");
    let commit = expected_commit();
    for (name, path) in [
        ("deployd", deployd.as_path()),
        ("deployctl", deployctl.as_path()),
        ("deploy-agent", agent),
    ] {
        let out = Command::new(path).arg("--version").output().unwrap();
        assert!(out.status.success(), "{name} --version: {out:?}");
        let line = String::from_utf8(out.stdout).unwrap();
        let prefix = format!("{name} {version} ({commit}");
        assert!(
            line.starts_with(&prefix) && line.trim_end().ends_with(')'),
            "{name} --version printed {line:?}; expected `{prefix}[, DATE])`"
        );
    }

    let data = temp_dir("deployctl-version").unwrap();
    let server = Deployd::start(data.path(), free_port().unwrap(), None);
    let out = Command::new(deployctl)
        .args(["version", "--server", &format!("http://{}", server.addr)])
        .env_remove("DEPLOYCTL_TOKEN")
        .env_remove("DEPLOYCTL_CONFIG")
        .env("HOME", data.path())
        .env("XDG_CONFIG_HOME", data.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text} {out:?}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with(&format!("client: deployctl {version} ({commit}")),
        "{text}"
    );
    assert_eq!(lines[1], format!("server: deployd {version} ({commit})"));
    let token = std::fs::read_to_string(data.path().join("db").join("admin-token")).unwrap();
    let json = ok_json(&server.addr, token.trim(), &["version"]);
    assert_eq!(
        json["server"],
        serde_json::json!({"name": "deployd", "version": version, "commit": commit})
    );
    assert_eq!(json["client"]["name"], "deployctl");
    assert_eq!(json["client"]["commit"], commit.as_str());

    // No server there: JSON still shows the client, and the exit code is the error's.
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let out = ctl(&addr, "unused", &["version", "--output", "json"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["client"]["name"], "deployctl");
    assert_eq!(json["server"], Value::Null);
}
