//! Failure classes through real sshd: host keys, credentials, sshd down, timeouts and cancellation (remote process killed, old container still serving).

use std::net::TcpListener;
use std::time::Duration;

use deploy_core::{CommandSpec, HostKeyFingerprint, HostKeyPolicy, TargetType, UnixPath};
use deploy_exec::{DeployFailure, ExecError, Executor};
use deploy_testkit::{SshdHosts, run_checked};

use crate::common::*;

fn cmd(argv: &[&str]) -> CommandSpec {
    CommandSpec::new(argv.iter().map(|s| (*s).to_owned()).collect()).unwrap()
}

/// Processes of the test user whose command line contains `needle`.
fn remote_processes(needle: &str) -> Vec<String> {
    let out = run_checked("ps", &["-u", deploy_testkit::SSH_TEST_USER, "-o", "args="])
        .unwrap_or_default();
    out.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// Waits (at most 30 s) until a process of the test user runs `needle`.
async fn wait_started(needle: &str) {
    for _ in 0..300 {
        if !remote_processes(needle).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no remote process `{needle}` within 30 s");
}

async fn wait_gone(needle: &str) -> Vec<String> {
    for _ in 0..50 {
        let left = remote_processes(needle);
        if left.is_empty() {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    remote_processes(needle)
}

#[tokio::test]
async fn host_key_checks_are_strict_and_permanent() {
    let hosts = SshdHosts::start(1).unwrap();
    let exec = executor(&hosts);
    let (_, c) = ctx(20);
    let true_cmd = cmd(&["true"]);
    let mut t = target(&hosts, 1, TargetType::DockerHost, "/tmp");

    // Strict against the fixture's known_hosts: works.
    assert_eq!(
        exec.run_command(&t, &true_cmd, &c)
            .await
            .unwrap()
            .exit_status,
        0
    );

    // Unknown: an empty known_hosts file.
    let empty = hosts.dir().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    ssh_mut(&mut t).host_key = HostKeyPolicy::KnownHostsFile {
        path: UnixPath::parse(empty.to_str().unwrap()).unwrap(),
    };
    let err = exec.run_command(&t, &true_cmd, &c).await.unwrap_err();
    assert!(matches!(err, ExecError::HostKeyUnknown { .. }), "{err}");
    assert!(err.to_string().contains(hosts.host_fingerprint()), "{err}");
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
    assert!(!err.is_retryable());

    // Mismatch: known_hosts records another key for this host.
    let other_pub =
        std::fs::read_to_string(hosts.unauthorised_key().with_extension("pub")).unwrap();
    let wrong = hosts.dir().join("wrong_known_hosts");
    std::fs::write(&wrong, format!("[127.0.0.1]:{} {other_pub}", hosts.port())).unwrap();
    ssh_mut(&mut t).host_key = HostKeyPolicy::KnownHostsFile {
        path: UnixPath::parse(wrong.to_str().unwrap()).unwrap(),
    };
    let err = exec.run_command(&t, &true_cmd, &c).await.unwrap_err();
    assert!(matches!(err, ExecError::HostKeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains(hosts.host_fingerprint()), "{err}");
    assert!(!err.is_retryable());

    // Pinned fingerprint: right one works, wrong one is a mismatch.
    ssh_mut(&mut t).host_key = HostKeyPolicy::Pinned {
        fingerprint: HostKeyFingerprint::parse(hosts.host_fingerprint()).unwrap(),
    };
    exec.run_command(&t, &true_cmd, &c).await.unwrap();
    ssh_mut(&mut t).host_key = HostKeyPolicy::Pinned {
        fingerprint: HostKeyFingerprint::parse(&format!("SHA256:{}", "A".repeat(43))).unwrap(),
    };
    let err = exec.run_command(&t, &true_cmd, &c).await.unwrap_err();
    assert!(matches!(err, ExecError::HostKeyMismatch { .. }), "{err}");

    // accept_new (executor-wide known_hosts): records on first use, then strict.
    let learn = hosts.dir().join("learned_known_hosts");
    let learning = deploy_exec::ssh::SshExecutor::new(
        deploy_exec::ssh::SshExecutorConfig::new(&learn),
        std::sync::Arc::new(deploy_exec::DefaultSecrets),
    );
    ssh_mut(&mut t).host_key = HostKeyPolicy::AcceptNew;
    learning.run_command(&t, &true_cmd, &c).await.unwrap();
    let recorded = std::fs::read_to_string(&learn).unwrap();
    assert!(
        recorded
            .trim_start()
            .starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", hosts.port()))
    );
    ssh_mut(&mut t).host_key = HostKeyPolicy::KnownHosts;
    learning.close_all().await;
    learning.run_command(&t, &true_cmd, &c).await.unwrap();
}

fn assert_password_refused(err: &ExecError) {
    assert!(
        matches!(
            err,
            ExecError::Authentication {
                method: "password",
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn wrong_credentials_are_permanent_and_other_key_types_work() {
    let hosts = SshdHosts::start(1).unwrap();
    let exec = executor(&hosts);
    let (logs, c) = ctx(20);
    let mut t = target(&hosts, 1, TargetType::DockerHost, "/tmp");

    ssh_mut(&mut t).credential_ref = file_ref(&hosts.unauthorised_key());
    let err = exec.run_command(&t, &cmd(&["true"]), &c).await.unwrap_err();
    assert!(matches!(err, ExecError::Authentication { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "authenticate as `deploytest` on 127.0.0.1:".to_owned()
            + &hosts.port().to_string()
            + " with public key"
    );
    assert!(!err.is_retryable());

    // A password (this sshd allows keys only): refused, and never echoed.
    let pw = hosts.dir().join("password");
    std::fs::write(&pw, "s3cret-password").unwrap();
    ssh_mut(&mut t).credential_ref = file_ref(&pw);
    let err = exec.run_command(&t, &cmd(&["true"]), &c).await.unwrap_err();
    assert_password_refused(&err);
    assert!(!err.to_string().contains("s3cret"));

    // The right password, on an sshd that accepts passwords.
    let pw_hosts = SshdHosts::start_with_passwords(1).unwrap();
    let pw_exec = executor(&pw_hosts);
    let mut pw_target = target(&pw_hosts, 1, TargetType::DockerHost, "/tmp");
    ssh_mut(&mut pw_target).credential_ref = file_ref(&SshdHosts::password_file());
    let password = std::fs::read_to_string(SshdHosts::password_file()).unwrap();
    let out = pw_exec
        .run_command(&pw_target, &cmd(&["echo", &password]), &c)
        .await
        .unwrap();
    assert_eq!(
        out.stdout, "[REDACTED]\n",
        "a password is redacted from output"
    );
    ssh_mut(&mut pw_target).credential_ref = file_ref(&pw);
    let err = pw_exec
        .run_command(&pw_target, &cmd(&["true"]), &c)
        .await
        .unwrap_err();
    assert_password_refused(&err);

    // RSA key.
    ssh_mut(&mut t).credential_ref = file_ref(&hosts.client_rsa_key());
    assert_eq!(
        exec.run_command(&t, &cmd(&["id", "-un"]), &c)
            .await
            .unwrap()
            .stdout,
        "deploytest\n"
    );

    // ed25519 key with a passphrase (in `<key>.passphrase`); the passphrase is redacted from logs.
    let enc = hosts.dir().join("encrypted_key");
    std::fs::copy(hosts.client_key(), &enc).unwrap();
    let phrase = "correct horse battery";
    run_checked(
        "ssh-keygen",
        &[
            "-q",
            "-p",
            "-P",
            "",
            "-N",
            phrase,
            "-f",
            enc.to_str().unwrap(),
        ],
    )
    .unwrap();
    std::fs::write(enc.with_extension("passphrase"), phrase).unwrap();
    ssh_mut(&mut t).credential_ref = file_ref(&enc);
    let out = exec
        .run_command(&t, &cmd(&["echo", "leak:", phrase]), &c)
        .await
        .unwrap();
    assert_eq!(out.stdout, "leak: [REDACTED]\n");
    assert!(
        logs.lines().contains(&"leak: [REDACTED]".to_owned()),
        "{:#?}",
        logs.lines()
    );
    assert!(!logs.lines().iter().any(|l| l.contains(phrase)));
}

#[tokio::test]
async fn sshd_not_running_is_retryable() {
    let mut hosts = SshdHosts::start(2).unwrap();
    hosts.stop(2);
    let exec = executor(&hosts);
    let (_, c) = ctx(10);
    let t = target(&hosts, 2, TargetType::DockerHost, "/tmp");
    let err = exec.run_command(&t, &cmd(&["true"]), &c).await.unwrap_err();
    assert!(matches!(err, ExecError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("127.0.0.2"), "{err}");
    assert!(err.is_retryable());
    // Host 1 is unaffected.
    let t1 = target(&hosts, 1, TargetType::DockerHost, "/tmp");
    exec.run_command(&t1, &cmd(&["true"]), &c).await.unwrap();
}

#[tokio::test]
async fn a_server_that_never_speaks_ssh_is_a_retryable_connect_timeout() {
    let hosts = SshdHosts::start(1).unwrap();
    let (listener, port) = hanging_registry();
    let exec = executor(&hosts);
    let mut t = target(&hosts, 1, TargetType::DockerHost, "/tmp");
    ssh_mut(&mut t).port = port;
    let (_, mut c) = ctx(30);
    c.timeout = Duration::from_millis(1500);
    let started = std::time::Instant::now();
    let err = exec.run_command(&t, &cmd(&["true"]), &c).await.unwrap_err();
    assert!(matches!(err, ExecError::ConnectTimeout { .. }), "{err}");
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(listener);
}

#[tokio::test]
async fn timeout_and_cancel_kill_the_remote_command() {
    let hosts = SshdHosts::start(1).unwrap();
    let exec = executor(&hosts);
    let t = target(&hosts, 1, TargetType::DockerHost, "/tmp");
    let marker = format!("41.{}", std::process::id());

    let (_, mut c) = ctx(30);
    c.timeout = Duration::from_millis(1500);
    let err = exec
        .run_command(&t, &cmd(&["sleep", &marker]), &c)
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::Timeout { .. }), "{err}");
    assert!(err.is_retryable());
    assert_eq!(
        wait_gone(&format!("sleep {marker}")).await,
        Vec::<String>::new()
    );

    let (_, c) = ctx(30);
    let token = c.cancel.clone();
    let marker2 = format!("42.{}", std::process::id());
    let sleep = cmd(&["sleep", &marker2]);
    let run = exec.run_command(&t, &sleep, &c);
    let cancel = async {
        wait_started(&format!("sleep {marker2}")).await;
        token.cancel();
    };
    let (result, ()) = tokio::join!(run, cancel);
    let err = result.unwrap_err();
    assert!(matches!(err, ExecError::Cancelled { .. }), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(
        wait_gone(&format!("sleep {marker2}")).await,
        Vec::<String>::new()
    );
    // The connection is still usable afterwards.
    let (_, c) = ctx(10);
    assert_eq!(
        exec.run_command(&t, &cmd(&["true"]), &c)
            .await
            .unwrap()
            .exit_status,
        0
    );
}

/// A "registry" that accepts connections and never answers: `docker pull` hangs on it.
fn hanging_registry() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// What the hanging registry saw: connections accepted, and how many of them the
/// engine has closed since.
#[derive(Default)]
struct Held {
    accepted: std::sync::atomic::AtomicUsize,
    closed: std::sync::atomic::AtomicUsize,
    stop: std::sync::atomic::AtomicBool,
}

/// Accepts and holds connections (60 s at most), counting those the peer closes.
fn hold(listener: TcpListener, held: std::sync::Arc<Held>) -> std::thread::JoinHandle<()> {
    use std::io::Read;
    use std::sync::atomic::Ordering::Relaxed;
    std::thread::spawn(move || {
        let mut conns: Vec<(std::net::TcpStream, bool)> = Vec::new();
        listener.set_nonblocking(true).unwrap();
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(60) && !held.stop.load(Relaxed) {
            if let Ok((s, _)) = listener.accept() {
                s.set_nonblocking(true).unwrap();
                conns.push((s, false));
                held.accepted.fetch_add(1, Relaxed);
            }
            for (conn, closed) in &mut conns {
                let mut buf = [0u8; 4096];
                if !*closed && matches!(conn.read(&mut buf), Ok(0)) {
                    *closed = true;
                    held.closed.fetch_add(1, Relaxed);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

/// Waits until the engine has connected to the hanging registry (the pull is under way).
async fn wait_pulling(held: &Held) {
    for _ in 0..300 {
        if held.accepted.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the engine never contacted the hanging registry");
}

/// Waits (15 s at most) until every connection to the registry was closed by the engine:
/// the pull was abandoned with the request, nothing keeps pulling on the host.
async fn wait_abandoned(held: &Held) -> (usize, usize) {
    use std::sync::atomic::Ordering::Relaxed;
    for _ in 0..150 {
        let (a, c) = (held.accepted.load(Relaxed), held.closed.load(Relaxed));
        if a > 0 && a == c {
            return (a, c);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (held.accepted.load(Relaxed), held.closed.load(Relaxed))
}

#[tokio::test]
async fn timeout_or_cancel_mid_pull_leaves_the_previous_container_serving() {
    let s = Scene::start("pull", TargetType::DockerHost);
    let (exec, target, web, peers) = (&s.exec, &s.target, &s.web, &s.peers);
    let (logs, c) = ctx(60);
    s.deploy_web(&peers.images.v1, 1, &c, &logs).await;

    let digest = digest_of(&peers.images.v2);
    for cut in ["timeout", "cancel"] {
        let (listener, port) = hanging_registry();
        let held = std::sync::Arc::new(Held::default());
        let holder = hold(listener, held.clone());
        let hanging = format!("127.0.0.1:{port}/{}/app@{digest}", s.p);
        let (logs, mut c) = ctx(60);
        let request = docker_request(target, web, &hanging, 2);
        let r = if cut == "timeout" {
            c.timeout = Duration::from_secs(5);
            exec.deploy(&request, &c).await
        } else {
            let token = c.cancel.clone();
            let cancel = async {
                wait_pulling(&held).await;
                token.cancel();
            };
            let (r, ()) = tokio::join!(exec.deploy(&request, &c), cancel);
            r
        };
        assert!(r.is_err(), "{cut}: {r:?}");
        match cut {
            "timeout" => {
                assert!(
                    matches!(
                        r.as_ref().err().map(|f| &f.error),
                        Some(ExecError::Timeout { .. })
                    ),
                    "{r:?}"
                );
                assert!(r.as_ref().is_err_and(DeployFailure::retryable));
            }
            _ => {
                assert!(
                    matches!(
                        r.as_ref().err().map(|f| &f.error),
                        Some(ExecError::Cancelled { .. })
                    ),
                    "{r:?}"
                );
                assert!(!r.as_ref().is_err_and(DeployFailure::retryable));
            }
        }
        assert!(
            logs.lines()
                .iter()
                .any(|l| l.starts_with("pulling 127.0.0.1:")),
            "{cut}: {:#?}",
            logs.lines()
        );
        let (accepted, closed) = wait_abandoned(&held).await;
        assert!(
            accepted >= 1 && closed == accepted,
            "{cut}: {accepted} accepted, {closed} closed by the engine"
        );
        held.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        holder.join().unwrap();
        assert_eq!(version_of(web.as_str()), "v1", "{cut}");
        let (_, c) = ctx(30);
        assert_eq!(
            exec.inspect(target, web, &c).await.unwrap(),
            Some(digest_of(&peers.images.v1))
        );
    }
}

#[tokio::test]
async fn failed_connections_leave_the_running_container_serving() {
    let mut s = Scene::start("keep", TargetType::DockerHost);
    let (logs, c) = ctx(60);
    s.deploy_web(&s.peers.images.v1, 1, &c, &logs).await;
    let v2 = |t: &deploy_core::Target| docker_request(t, &s.web, &s.peers.images.v2, 2);

    let mut unknown = s.target.clone();
    let empty = s.peers.hosts.dir().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    ssh_mut(&mut unknown).host_key = HostKeyPolicy::KnownHostsFile {
        path: UnixPath::parse(empty.to_str().unwrap()).unwrap(),
    };
    let mut pinned_wrong = s.target.clone();
    ssh_mut(&mut pinned_wrong).host_key = HostKeyPolicy::Pinned {
        fingerprint: HostKeyFingerprint::parse(&format!("SHA256:{}", "B".repeat(43))).unwrap(),
    };
    let mut bad_key = s.target.clone();
    ssh_mut(&mut bad_key).credential_ref = file_ref(&s.peers.hosts.unauthorised_key());

    for (t, retryable) in [(&unknown, false), (&pinned_wrong, false), (&bad_key, false)] {
        let r = s.exec.deploy(&v2(t), &c).await;
        assert!(r.is_err(), "{r:?}");
        assert_eq!(
            r.as_ref().is_err_and(DeployFailure::retryable),
            retryable,
            "{r:?}"
        );
        assert_eq!(version_of(s.web.as_str()), "v1");
    }
    s.exec.close_all().await;
    s.peers.hosts.stop(1);
    let r = s.exec.deploy(&v2(&s.target), &c).await;
    assert!(
        matches!(
            r.as_ref().err().map(|f| &f.error),
            Some(ExecError::Connect { .. })
        ) && r.as_ref().is_err_and(DeployFailure::retryable),
        "{r:?}"
    );
    assert_eq!(version_of(s.web.as_str()), "v1");
}
