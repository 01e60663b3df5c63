//! Fault scenario `disk_full`: the filesystem under deployd's SQLite database fills up mid-job; writes get a clear problem, reads keep working, nothing is corrupted, and everything recovers when space returns, without a restart.
//!
//! The test mounts a small tmpfs of its own as deployd's data dir (`--data-dir`,
//! unmounted on drop, even after a panic; deployd's log stays outside it), runs a
//! real deployd there with one sshd target, deploys v1, starts v2 (its task soaks in
//! verification for seconds) and then fills the filesystem with a filler file.
//! While it is full:
//! - API writes (`POST /api/v1/environments`) are refused with 503 and a detail that
//!   says the storage is full (not an opaque 500), once the database needs new space;
//! - reads (`/healthz`, `env list`, `jobs show`) keep working and deployd keeps running;
//! - `sqlite3 … 'PRAGMA integrity_check'` says `ok`.
//!
//! Then the filler is deleted and, without a restart: the refused write succeeds,
//! the in-flight v2 job reaches a terminal state consistent with the target
//! (completed with v2 running, or failed cleanly, in which case a new deploy of v2
//! completes), and the database still passes its integrity check after deployd stops.
//!
//! Needs root (mount); a refused mount fails the test with the reason.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use deploy_testkit::{
    ContainerCleanup, Registry, SshdHosts, TestImages, free_port, http_get, temp_dir,
};
use serde_json::{Value, json};

use crate::agent_e2e::{digest_of, running_digest};
use crate::deployd_e2e::{KEY_VAR, serves, target_body};
use crate::deployd_proc::{Deployd, api_post, create_release, ctl, ok_json};
use crate::faults::common::wait_terminal;

/// The tmpfs size: room for the database and its WAL, small enough to fill at once.
const TMPFS_SIZE: &str = "24m";

/// How long the v2 task must stay healthy: it is still in flight when the disk fills.
const SOAK_MS: u64 = 6_000;

/// How long the disk stays full (past the end of the soak).
const FULL_FOR: Duration = Duration::from_secs(10);

/// A tmpfs mounted by the test; unmounted on drop.
struct TmpfsMount {
    path: PathBuf,
}

impl TmpfsMount {
    fn mount(path: &Path, size: &str) -> Self {
        let uid = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
        assert_eq!(
            uid.trim(),
            "0",
            "the disk_full scenario mounts a tmpfs and must run as root (it runs as uid {})",
            uid.trim()
        );
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .unwrap_or_else(|e| {
                panic!("`mount` cannot run (scripts/peers/faults.sh installs it): {e}")
            });
        assert!(
            out.status.success(),
            "mounting a {size} tmpfs at {} was refused ({}): {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            path: path.to_owned(),
        }
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        // Lazy: a process still holding a file there must not leave the mount behind.
        let _ = Command::new("umount").arg("-l").arg(&self.path).output();
    }
}

/// Fills the filesystem of `path` with zeros until it reports no space left; the bytes written.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0_u8; 64 * 1024];
    let mut written = 0_u64;
    // Bounded: a 24 MiB tmpfs takes at most 384 chunks.
    for _ in 0..100_000 {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // The last partial block too.
    for _ in 0..4096 {
        match file.write(&[0_u8; 1]) {
            Ok(1) => written += 1,
            _ => break,
        }
    }
    written
}

/// `sqlite3 <db> 'PRAGMA integrity_check'`'s answer.
fn integrity(db: &Path) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg("PRAGMA integrity_check;")
        .output()
        .unwrap_or_else(|e| {
            panic!("`sqlite3` cannot run (scripts/peers/faults.sh installs it): {e}")
        });
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// True while process `pid` exists.
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
#[expect(
    clippy::print_stdout,
    reason = "the test reports its figures (nextest --no-capture shows them)"
)]
fn a_full_disk_refuses_writes_clearly_keeps_reads_and_recovers_without_a_restart() {
    let prefix = format!("df{}-", std::process::id());
    let container = format!("{prefix}web");
    let _cleanup = ContainerCleanup::new(&prefix);
    let data = temp_dir("fault-disk-full-").unwrap();
    // Dropped after deployd (declared before it): nothing holds the mount then.
    let mount = TmpfsMount::mount(&data.path().join("db"), TMPFS_SIZE);
    let db = mount.path.join("deployd.sqlite");
    let hosts = SshdHosts::start(1).unwrap();
    let registry = Registry::start().unwrap();
    let images = TestImages::build(&registry, &format!("{prefix}app")).unwrap();
    let key = std::fs::read_to_string(hosts.client_key()).unwrap();
    let env = [(KEY_VAR, key.as_str())];
    let server = Deployd::start(
        data.path(),
        free_port().unwrap(),
        &hosts.known_hosts(),
        &env,
    );
    let addr = server.addr.clone();
    assert!(
        db.exists(),
        "deployd keeps its database at {}",
        db.display()
    );

    let env_id = ok_json(&addr, &["env", "create", "disk"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, target) = api_post(
        &addr,
        &format!("/api/v1/environments/{env_id}/targets"),
        &target_body(&hosts, 1, &prefix, SOAK_MS),
    );
    assert_eq!(status, 201, "{target:#}");
    let release = |name: &str, image: &str| create_release(&addr, name, image);
    let v1 = release("v1", &images.v1);
    let v2 = release("v2", &images.v2);
    let deploy = |release: &str, extra: &[&str]| {
        ctl(
            &addr,
            &[
                &["deploy", "--release", release, "--env", &env_id][..],
                extra,
            ]
            .concat(),
        )
    };
    let out = deploy(&v1, &["--follow"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // v2 in flight (soaking), then the disk fills up.
    let out = deploy(&v2, &["--output", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let started = Instant::now();
    while ok_json(&addr, &["jobs", "show", &job])["tasks"][0]["status"] != "verifying" {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "v2 never verifying"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let filler = mount.path.join("filler");
    let filled = fill(&filler);
    let full_since = Instant::now();

    // Writes: refused with a clear problem once SQLite needs a new page (bounded tries).
    let mut refused = None;
    for n in 0..200 {
        let (status, body) = api_post(
            &addr,
            "/api/v1/environments",
            &json!({"name": format!("full-{n}")}),
        );
        if status != 201 {
            refused = Some((n, status, body));
            break;
        }
    }
    let (accepted_before, status, problem) = refused.unwrap_or_else(|| {
        panic!("200 writes succeeded on a full disk ({filled} bytes of filler)")
    });
    let detail = problem["detail"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        status == 503 || status == 507,
        "a write on a full disk: {status} {problem:#}\n{}",
        server.stderr()
    );
    assert!(
        detail.contains("full") && detail.contains("storage"),
        "the problem says the storage is full: {problem:#}"
    );
    // Reads keep working, deployd keeps running, the database is intact.
    assert_eq!(http_get(&addr, "/healthz").unwrap().0, 200);
    let listed = ok_json(&addr, &["env", "list"]);
    assert!(listed.to_string().contains("disk"), "{listed:#}");
    let during = ok_json(&addr, &["jobs", "show", &job]);
    assert_eq!(integrity(&db), "ok", "integrity while full");
    while full_since.elapsed() < FULL_FOR {
        assert!(
            alive(server.pid()),
            "deployd stopped on a full disk: {}",
            server.stderr()
        );
        let _ = ok_json(&addr, &["jobs", "show", &job]);
        std::thread::sleep(Duration::from_millis(500));
    }
    let while_full = ok_json(&addr, &["jobs", "show", &job]);
    assert!(
        alive(server.pid()),
        "deployd stopped on a full disk: {}",
        server.stderr()
    );

    // Space returns: the same write succeeds, without a restart; the job settles.
    std::fs::remove_file(&filler).unwrap();
    let refused_name = format!("full-{accepted_before}");
    let (status_after, body) = api_post(
        &addr,
        "/api/v1/environments",
        &json!({"name": refused_name}),
    );
    assert_eq!(
        status_after,
        201,
        "the refused write after space returned: {body:#}\n{}",
        server.stderr()
    );
    let settled = wait_terminal(&addr, &job, Duration::from_secs(120));
    let outcome = settled["status"].as_str().unwrap().to_owned();
    match outcome.as_str() {
        "completed" => {
            assert_eq!(
                running_digest(&container),
                digest_of(&images.v2),
                "{settled:#}"
            );
        }
        "failed" => {
            // Failed cleanly: recoverable by deploying again.
            let out = deploy(&v2, &["--follow"]);
            assert_eq!(
                out.status.code(),
                Some(0),
                "v2 again after the failed job: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                server.stderr()
            );
            assert_eq!(running_digest(&container), digest_of(&images.v2));
        }
        other => panic!("the in-flight job ended {other}: {settled:#}"),
    }
    assert_eq!(serves(&container, "/version"), "v2");
    let log = server.stderr();
    println!(
        "disk_full: {filled} bytes of filler; {accepted_before} writes still fit, then {status} `{}`; \
         job while full: {} (task {}), during: {}; after space returned: {outcome}; deployd log lines \
         mentioning full: {}",
        problem["detail"].as_str().unwrap_or_default(),
        while_full["status"],
        while_full["tasks"][0]["status"],
        during["status"],
        log.lines().filter(|l| l.contains("full")).count(),
    );
    server.terminate();
    assert_eq!(integrity(&db), "ok", "integrity after the stop");
    // The write accepted after the space returned is committed, not only answered
    // (a connection left inside the failed transaction used to swallow it).
    let out = Command::new("sqlite3")
        .arg(&db)
        .arg(format!(
            "SELECT count(*) FROM environments WHERE name = '{refused_name}';"
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1",
        "environment {refused_name} is in the database after the stop: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
