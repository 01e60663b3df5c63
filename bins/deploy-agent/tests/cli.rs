//! The deploy-agent binary: bad config is exit 2 naming the value; with deployd unreachable it backs off, never logs its secrets, and stops with exit 0 on SIGTERM.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a panic there is a failing test"
)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_deploy-agent");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn clean_env(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars() {
        if k.starts_with("DEPLOY_AGENT_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

#[test]
fn bad_config_exits_2_naming_the_value() {
    let out = clean_env(&mut Command::new(BIN))
        .args(["--server", "ftp://deployd", "--name", "web-1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ftp://deployd"), "{stderr}");
}

#[test]
fn unreachable_server_backs_off_hides_secrets_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let token = "dpb_bootstrap_secret_4711";
    let port = free_port();
    let child = clean_env(&mut Command::new(BIN))
        .args([
            "--server",
            &format!("http://127.0.0.1:{port}"),
            "--name",
            "web-1",
            "--state-dir",
            &dir.path().display().to_string(),
            "--capabilities",
            "docker",
        ])
        .env("DEPLOY_AGENT_BOOTSTRAP_TOKEN", token)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("register"), "{stderr}");
    assert!(stderr.contains("retrying in"), "{stderr}");
    assert!(
        !stderr.contains(token),
        "the bootstrap token leaked: {stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(token));
    // Nothing was registered, so nothing was stored.
    assert!(!dir.path().join("credentials.json").exists());
}

#[test]
fn stored_credentials_are_used_and_never_logged() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = format!("http://127.0.0.1:{port}");
    let credential = "dpa_agent_credential_0815";
    std::fs::write(
        dir.path().join("credentials.json"),
        format!(
            r#"{{"server":"{server}","agent_id":"01890000-0000-7000-8000-000000000001","credential":"{credential}","heartbeat_timeout_ms":30000}}"#
        ),
    )
    .unwrap();
    let child = clean_env(&mut Command::new(BIN))
        .args([
            "--server",
            &server,
            "--name",
            "web-1",
            "--state-dir",
            &dir.path().display().to_string(),
            "--capabilities",
            "docker",
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("using the stored credentials"), "{stderr}");
    assert!(stderr.contains("polling again in"), "{stderr}");
    assert!(
        !stderr.contains(credential),
        "the credential leaked: {stderr}"
    );
}

#[test]
fn credentials_of_another_server_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("credentials.json"),
        r#"{"server":"https://old:8443","agent_id":"01890000-0000-7000-8000-000000000001","credential":"dpa_x","heartbeat_timeout_ms":30000}"#,
    )
    .unwrap();
    let out = clean_env(&mut Command::new(BIN))
        .args([
            "--server",
            "http://127.0.0.1:1",
            "--name",
            "web-1",
            "--state-dir",
            &dir.path().display().to_string(),
            "--capabilities",
            "docker",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("https://old:8443"), "{stderr}");
}
