//! Tokens outside the API, with the real binaries: the first start's admin token in a 0600 file (never on stdout or in the log), `deployd admin-token` recovering access to an existing data dir, and deployctl refusing plain http off loopback before connecting.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use deploy_testkit::{free_port, temp_dir};
use serde_json::Value;

use crate::deployd_proc::{ADMIN_TOKEN, Deployd, binaries, spawn_serving};

/// `GET path` with `token` over plain HTTP/1.1: the status and the JSON answer.
fn get_as(addr: &str, path: &str, token: &str) -> (u16, Value) {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let response = deploy_testkit::http_exchange(addr, &request, Duration::from_secs(10)).unwrap();
    (response.status, response.json())
}

/// deployd on `addr` over `db` without a preset admin token; its stdout and stderr
/// go to `<tag>.out` and `<tag>.err` in `dir`.
fn start_unpreset(dir: &Path, db: &Path, addr: &str, tag: &str) -> Child {
    let (deployd, _) = binaries();
    let stderr = dir.join(format!("{tag}.err"));
    let mut cmd = Command::new(deployd);
    cmd.args(["--listen", addr, "--data-dir"])
        .arg(db)
        .arg("--known-hosts")
        .arg(dir.join("known_hosts"))
        .env_remove("DEPLOYD_ADMIN_TOKEN")
        .env_remove("DEPLOYD_CONFIG")
        .env_remove("DEPLOYD_DATABASE_URL")
        .env_remove("DEPLOYD_DATA_DIR")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(File::create(dir.join(format!("{tag}.out"))).unwrap())
        .stderr(File::create(&stderr).unwrap());
    spawn_serving(&mut cmd, addr, &stderr)
}

/// SIGTERM and a bounded wait for a clean exit.
fn stop(mut child: Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for _ in 0..300 {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "deployd exited with {status} on SIGTERM");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("deployd did not stop within 30 s of SIGTERM");
}

/// `deployd admin-token args…` in `dir`, without deployd's variables from this environment.
fn admin_token(dir: &Path, args: &[&str]) -> Output {
    let (deployd, _) = binaries();
    Command::new(deployd)
        .arg("admin-token")
        .args(args)
        .env_remove("DEPLOYD_CONFIG")
        .env_remove("DEPLOYD_DATABASE_URL")
        .env_remove("DEPLOYD_DATA_DIR")
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("deployd admin-token runs")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_first_admin_token_goes_to_a_0600_file_and_admin_token_recovers_a_lost_one() {
    let data = temp_dir("admin-token-").unwrap();
    let dir = data.path();
    std::fs::write(dir.join("known_hosts"), "").unwrap();
    let db = dir.join("db");
    let addr = format!("127.0.0.1:{}", free_port().unwrap());

    // First start: the token is in <data dir>/admin-token, 0600; the log names the
    // path only, and stdout is empty.
    let first = start_unpreset(dir, &db, &addr, "first");
    let file = db.join("admin-token");
    assert_eq!(mode(&file), 0o600, "{}", file.display());
    let token = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert!(token.starts_with("dpl_") && token.len() > 60, "{token}");
    let out = std::fs::read_to_string(dir.join("first.out")).unwrap();
    let err = std::fs::read_to_string(dir.join("first.err")).unwrap();
    assert_eq!(out, "", "deployd wrote to stdout");
    assert!(
        !err.contains(&token),
        "the token is in deployd's log: {err}"
    );
    assert!(
        err.contains(&file.display().to_string()),
        "the log does not name the token file: {err}"
    );
    let (status, tokens) = get_as(&addr, "/api/v1/tokens", &token);
    assert_eq!(status, 200, "{tokens}");

    // Every admin token lost: the only one is revoked (by itself).
    let revoke = Command::new(&binaries().1)
        .args(["token", "revoke", "bootstrap-admin"])
        .env("DEPLOYCTL_SERVER", format!("http://{addr}"))
        .env("DEPLOYCTL_TOKEN", &token)
        .env("XDG_CONFIG_HOME", dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(revoke.status.code(), Some(0), "{revoke:?}");
    assert_eq!(get_as(&addr, "/api/v1/tokens", &token).0, 401);
    stop(first);
    std::fs::remove_file(&file).unwrap();

    // Recovery on the data dir: into a new 0600 file, nothing on stdout.
    let db_arg = db.to_str().unwrap();
    let rescue_file = dir.join("rescue-token");
    let rescue_arg = rescue_file.to_str().unwrap();
    let made = admin_token(
        dir,
        &[
            "--data-dir",
            db_arg,
            "--name",
            "rescue",
            "--out",
            rescue_arg,
        ],
    );
    assert_eq!(made.status.code(), Some(0), "{made:?}");
    assert!(made.stdout.is_empty(), "{made:?}");
    assert_eq!(mode(&rescue_file), 0o600);
    let rescue = std::fs::read_to_string(&rescue_file)
        .unwrap()
        .trim()
        .to_owned();
    let said = String::from_utf8_lossy(&made.stderr);
    assert!(
        said.contains(rescue_arg) && !said.contains(&rescue),
        "{said}"
    );
    // Again to stdout (the token alone), with an expiry.
    let printed = admin_token(
        dir,
        &[
            "--data-dir",
            db_arg,
            "--name",
            "rescue-2",
            "--expires-in-secs",
            "3600",
        ],
    );
    assert_eq!(printed.status.code(), Some(0), "{printed:?}");
    let second = String::from_utf8(printed.stdout).unwrap();
    assert!(
        second.starts_with("dpl_") && second.trim().lines().count() == 1,
        "{second:?}"
    );
    assert!(String::from_utf8_lossy(&printed.stderr).contains("expires at"));
    // Refusals: no database there, an existing --out, a taken name, a bad expiry.
    let refusals: [(&[&str], i32, &str); 4] = [
        (&["--data-dir", "no-such-dir"], 2, "no database at"),
        (
            &["--data-dir", db_arg, "--out", rescue_arg],
            2,
            "already exists",
        ),
        (&["--data-dir", db_arg, "--name", "rescue"], 1, "rescue"),
        (
            &["--data-dir", db_arg, "--expires-in-secs", "5"],
            1,
            "expires_in_secs 5",
        ),
    ];
    for (args, code, said) in refusals {
        let out = admin_token(dir, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(said), "{args:?}: {err}");
    }
    assert!(!dir.join("no-such-dir").exists());

    // A restart on the data dir: no new token file, and the recovered tokens work.
    let again = start_unpreset(dir, &db, &addr, "again");
    assert!(!file.exists(), "a restart wrote a new admin token file");
    assert_eq!(std::fs::read_to_string(dir.join("again.out")).unwrap(), "");
    let (status, tokens) = get_as(&addr, "/api/v1/tokens", &rescue);
    assert_eq!(status, 200, "{tokens}");
    let second = second.trim();
    assert_eq!(get_as(&addr, "/api/v1/environments", second).0, 200);
    let listed = tokens.as_array().unwrap();
    let row = |name: &str| listed.iter().find(|t| t["name"] == name).unwrap();
    assert_eq!(row("rescue")["role"], "admin");
    assert!(row("rescue")["expires_at"].is_null());
    assert!(row("rescue-2")["expires_at"].is_string());
    assert!(row("bootstrap-admin")["revoked_at"].is_string());
    assert_eq!(get_as(&addr, "/api/v1/tokens", &token).0, 401);
    // The recovery is in the audit log, with the local user and the database.
    let (status, audit) = get_as(&addr, "/api/v1/audit?actor=rescue", &rescue);
    assert_eq!(status, 200, "{audit}");
    let entry = &audit["entries"][0];
    assert_eq!(entry["route"], "deployd admin-token", "{audit}");
    let remote = entry["remote"].as_str().unwrap_or_default();
    assert!(
        remote.starts_with("local user ") && remote.contains("deployd.sqlite"),
        "{audit}"
    );
    assert!(!audit.to_string().contains(&rescue));
    stop(again);
}

/// An IPv4 address of this machine that is not loopback: the source address the
/// kernel picks towards a documentation address (a UDP connect sends nothing).
fn non_loopback_ipv4() -> Ipv4Addr {
    for probe in ["192.0.2.1:9", "198.51.100.1:9", "10.255.255.1:9"] {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        if socket.connect(probe).is_ok()
            && let Ok(SocketAddr::V4(local)) = socket.local_addr()
            && !local.ip().is_loopback()
            && !local.ip().is_unspecified()
        {
            return *local.ip();
        }
    }
    panic!("this test needs a non-loopback IPv4 address with a route; none found");
}

#[test]
fn deployctl_refuses_plain_http_off_loopback_before_connecting_unless_allowed() {
    let data = temp_dir("insecure-http-").unwrap();
    let dir = data.path();
    let known_hosts = dir.join("known_hosts");
    std::fs::write(&known_hosts, "").unwrap();
    let ip = non_loopback_ipv4();
    let ctl = |server: &str, extra: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(&binaries().1);
        cmd.args(["--server", server])
            .args(extra)
            .args(["env", "list", "--output", "json"])
            .env("DEPLOYCTL_TOKEN", ADMIN_TOKEN)
            .env_remove("DEPLOYCTL_SERVER")
            .env_remove("DEPLOYCTL_CONFIG")
            .env_remove("DEPLOYCTL_ALLOW_INSECURE_HTTP")
            .env("XDG_CONFIG_HOME", dir)
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };

    // A listener that must never see a connection.
    let trap = TcpListener::bind((ip, 0)).unwrap();
    trap.set_nonblocking(true).unwrap();
    let trap_url = format!("http://{}", trap.local_addr().unwrap());
    let config = dir.join("remote.toml");
    std::fs::write(&config, format!("server = \"{trap_url}\"\n")).unwrap();
    let config_arg = config.to_str().unwrap();
    for out in [
        ctl(&trap_url, &[], &[]),
        ctl(
            &trap_url,
            &[],
            &[("DEPLOYCTL_ALLOW_INSECURE_HTTP", "false")],
        ),
        Command::new(&binaries().1)
            .args(["--config", config_arg, "env", "list"])
            .env_remove("DEPLOYCTL_SERVER")
            .env_remove("DEPLOYCTL_ALLOW_INSECURE_HTTP")
            .env("DEPLOYCTL_TOKEN", ADMIN_TOKEN)
            .stdin(Stdio::null())
            .output()
            .unwrap(),
    ] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(&format!("`{trap_url}`")), "{err}");
        assert!(err.contains("--allow-insecure-http"), "{err}");
    }
    match trap.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("deployctl connected to the refused server: {other:?}"),
    }

    // Allowed (flag, variable or config key): it talks to a real deployd there.
    let addr = format!("{ip}:{}", free_port().unwrap());
    let server = Deployd::start_at(dir, &addr, &known_hosts, &[]);
    let url = format!("http://{}", server.addr);
    let allowed_config = dir.join("allowed.toml");
    std::fs::write(&allowed_config, "allow_insecure_http = true\n").unwrap();
    let allowed_arg = allowed_config.to_str().unwrap();
    for out in [
        ctl(&url, &["--allow-insecure-http"], &[]),
        ctl(&url, &[], &[("DEPLOYCTL_ALLOW_INSECURE_HTTP", "true")]),
        ctl(&url, &["--config", allowed_arg], &[]),
    ] {
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(listed["environments"].is_array(), "{listed}");
    }
    // Without any of them, the same live server is refused all the same.
    let refused = ctl(&url, &[], &[]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    drop(server);
}
