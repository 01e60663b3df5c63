//! `SshdHosts`: N real OpenSSH servers on 127.0.0.1..N (or one at a fixed address), with generated host and client keys and the `/bin/sh` test user.

use std::fmt::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::docker::run_checked;
use crate::errors::TestkitError;
use crate::process::{ensure_port_free, free_port, require_program, temp_dir};

/// The dedicated login of the SSH tests (created by `scripts/peers/ssh.sh`): shell `/bin/sh`, in group `docker`.
pub const SSH_TEST_USER: &str = "deploytest";

const HINT: &str = "`apt-get install openssh-server openssh-client` (scripts/peers/ssh.sh does)";

/// N sshd processes, host `i` (1-based) listening on `127.0.0.i:port` (or the one host
/// of [`SshdHosts::start_at`] on its fixed address); stopped on drop.
#[derive(Debug)]
pub struct SshdHosts {
    dir: tempfile::TempDir,
    /// The address of [`SshdHosts::start_at`]'s one host; `None`: host `i` is `127.0.0.i`.
    fixed_ip: Option<String>,
    port: u16,
    children: Vec<Option<Child>>,
    host_fingerprint: String,
}

impl SshdHosts {
    /// Starts `n` (1..=250) hosts sharing one host key and one port; public-key auth only.
    pub fn start(n: u8) -> Result<Self, TestkitError> {
        Self::start_with(n, false, "")
    }

    /// One host listening on the fixed address `ip:port` (one that data stored elsewhere
    /// names, say a fixture's database), otherwise like [`SshdHosts::start`]. Fails
    /// naming the address when something already listens there, and when the sshd
    /// started exits instead of serving (another process answered for it).
    pub fn start_at(ip: &str, port: u16) -> Result<Self, TestkitError> {
        ensure_port_free(ip, port, "sshd")?;
        Self::start_on(Listen::At(ip, port), false, "")
    }

    /// Like [`SshdHosts::start`], the servers offering only `ciphers` (sshd's `Ciphers`
    /// list), so a test can pin the cipher a client negotiates.
    pub fn start_with_ciphers(n: u8, ciphers: &str) -> Result<Self, TestkitError> {
        Self::start_with(n, false, &format!("Ciphers {ciphers}\n"))
    }

    /// Like [`SshdHosts::start`], also accepting the test user's password
    /// (see [`SshdHosts::password_file`]).
    pub fn start_with_passwords(n: u8) -> Result<Self, TestkitError> {
        Self::start_with(n, true, "")
    }

    /// The root-only file holding the test user's random password (written by scripts/peers/ssh.sh).
    pub fn password_file() -> PathBuf {
        PathBuf::from(format!("/var/lib/deploy-testkit/{SSH_TEST_USER}.password"))
    }

    /// `extra`: more sshd_config lines, each ending in a newline.
    fn start_with(n: u8, passwords: bool, extra: &str) -> Result<Self, TestkitError> {
        Self::start_on(Listen::Loopback(n), passwords, extra)
    }

    fn start_on(listen: Listen<'_>, passwords: bool, extra: &str) -> Result<Self, TestkitError> {
        let (n, fixed_ip, port) = match listen {
            Listen::Loopback(n) => (n, None, free_port()?),
            Listen::At(ip, port) => (1, Some(ip.to_owned()), port),
        };
        let sshd = require_program("sshd", &["/usr/sbin"], HINT)?;
        require_program("ssh-keygen", &[], HINT)?;
        let user_ok = Command::new("id")
            .arg(SSH_TEST_USER)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !user_ok || (passwords && !Self::password_file().is_file()) {
            return Err(TestkitError::MissingProgram {
                program: format!("user `{SSH_TEST_USER}`"),
                hint: "bash scripts/peers/ssh.sh".to_owned(),
            });
        }
        std::fs::create_dir_all("/run/sshd").map_err(TestkitError::io("create /run/sshd"))?;
        let dir = temp_dir("testkit-sshd-")?;
        let d = dir.path();
        set_mode(d, 0o755)?;
        keygen(&d.join("host_ed25519"), "ed25519")?;
        keygen(&d.join("client_ed25519"), "ed25519")?;
        keygen(&d.join("client_rsa"), "rsa")?;
        keygen(&d.join("other_ed25519"), "ed25519")?;
        let mut authorized = read(&d.join("client_ed25519.pub"))?;
        authorized.push_str(&read(&d.join("client_rsa.pub"))?);
        let authorized_path = d.join("authorized_keys");
        std::fs::write(&authorized_path, authorized)
            .map_err(TestkitError::io("write authorized_keys"))?;
        set_mode(&authorized_path, 0o644)?;
        let host_pub = read(&d.join("host_ed25519.pub"))?;
        let host_key_line = host_pub
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let fp = run_checked(
            "ssh-keygen",
            &[
                "-l",
                "-E",
                "sha256",
                "-f",
                &path_str(&d.join("host_ed25519.pub")),
            ],
        )?;
        let host_fingerprint = fp.split_whitespace().nth(1).unwrap_or_default().to_owned();
        let mut known_hosts = String::new();
        let mut children = Vec::new();
        for i in 1..=n {
            let addr = fixed_ip.clone().unwrap_or_else(|| format!("127.0.0.{i}"));
            let _ = writeln!(known_hosts, "[{addr}]:{port} {host_key_line}");
            let config = d.join(format!("sshd_{i}.conf"));
            let conf = format!(
                "ListenAddress {addr}:{port}\nHostKey {host}\nAuthorizedKeysFile {auth}\nPidFile {pid}\n\
                 UsePAM no\nStrictModes no\nPasswordAuthentication {password}\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin no\nAllowUsers {SSH_TEST_USER}\nMaxStartups 200:30:400\nMaxSessions 100\n\
                 Subsystem sftp internal-sftp\nLogLevel ERROR\n{extra}",
                host = path_str(&d.join("host_ed25519")),
                auth = path_str(&authorized_path),
                pid = path_str(&d.join(format!("sshd_{i}.pid"))),
                password = if passwords { "yes" } else { "no" },
            );
            std::fs::write(&config, conf).map_err(TestkitError::io("write sshd config"))?;
            let log = std::fs::File::create(d.join(format!("sshd_{i}.log")))
                .map_err(TestkitError::io("create sshd log"))?;
            let child = Command::new(&sshd)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(TestkitError::io(format!("start sshd on {addr}:{port}")))?;
            children.push(Some(child));
        }
        std::fs::write(d.join("known_hosts"), known_hosts)
            .map_err(TestkitError::io("write known_hosts"))?;
        let mut hosts = Self {
            dir,
            fixed_ip,
            port,
            children,
            host_fingerprint,
        };
        for i in 1..=n {
            hosts.wait_ready(i)?;
        }
        Ok(hosts)
    }

    /// Waits (10 s) until host `i` accepts connections while its sshd still runs: one
    /// that exited (say, its port taken) is an error even when something else answers
    /// at its address.
    fn wait_ready(&mut self, i: u8) -> Result<(), TestkitError> {
        let addr = format!("{}:{}", self.host(i), self.port);
        let started = Instant::now();
        loop {
            let answered = TcpStream::connect(&addr).is_ok();
            let exited = self
                .children
                .get_mut(usize::from(i).saturating_sub(1))
                .and_then(Option::as_mut)
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            if answered && !exited {
                return Ok(());
            }
            if exited || started.elapsed() >= Duration::from_secs(10) {
                let log = std::fs::read_to_string(self.dir.path().join(format!("sshd_{i}.log")))
                    .unwrap_or_default();
                let what = match (exited, answered) {
                    (true, true) => format!(
                        "sshd on {addr} (it exited; another process answers at that address)"
                    ),
                    (true, false) => format!("sshd on {addr} (it exited)"),
                    _ => format!("sshd on {addr}"),
                };
                return Err(TestkitError::NotReady {
                    what,
                    seconds: 10,
                    detail: log,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The port every host listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address of host `i` (1-based): `127.0.0.i`, or the fixed one of [`SshdHosts::start_at`].
    pub fn host(&self, i: u8) -> String {
        match &self.fixed_ip {
            Some(ip) => ip.clone(),
            None => format!("127.0.0.{i}"),
        }
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// True when no host was started.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// A known_hosts file listing every host's key.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// The authorised ed25519 client private key (OpenSSH format, no passphrase).
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_ed25519")
    }

    /// The authorised RSA client private key.
    pub fn client_rsa_key(&self) -> PathBuf {
        self.dir.path().join("client_rsa")
    }

    /// A valid key that is NOT authorised (for wrong-credential tests).
    pub fn unauthorised_key(&self) -> PathBuf {
        self.dir.path().join("other_ed25519")
    }

    /// The hosts' key fingerprint, `SHA256:…`.
    pub fn host_fingerprint(&self) -> &str {
        &self.host_fingerprint
    }

    /// A directory for the test's own files (removed with the fixture).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops host `i` (to test "sshd not running").
    pub fn stop(&mut self, i: u8) {
        if let Some(slot) = self.children.get_mut(usize::from(i).saturating_sub(1))
            && let Some(mut child) = slot.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl SshdHosts {
    /// Stops host `i` the way a host going down does: its listening sshd and every
    /// per-connection sshd it forked (the sessions a client keeps open) are
    /// SIGKILLed, so pooled connections break too. [`SshdHosts::stop`] leaves those
    /// sessions running, as `systemctl stop ssh` does.
    pub fn stop_with_sessions(&mut self, i: u8) {
        let Some(pid) = self
            .children
            .get(usize::from(i).saturating_sub(1))
            .and_then(|slot| slot.as_ref())
            .map(std::process::Child::id)
        else {
            return;
        };
        let sessions = descendants(pid);
        self.stop(i);
        for session in sessions {
            // Only processes this fixture's sshd forked; errors mean it is gone already.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &session.to_string()])
                .output();
        }
    }
}

/// Every live descendant of `pid` (from `/proc/<pid>/stat`), children before grandchildren.
fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let child: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // Fields after `(comm)`: state, then ppid.
            let ppid = stat
                .get(stat.rfind(')')? + 1..)?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((child, ppid))
        })
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(child, ppid) in &parents {
            if ppid == parent && !found.contains(&child) {
                found.push(child);
                frontier.push(child);
            }
        }
    }
    found
}

/// Where the servers listen.
enum Listen<'a> {
    /// `n` hosts on `127.0.0.1..=n`, one free port.
    Loopback(u8),
    /// One host on this address.
    At(&'a str, u16),
}

impl Drop for SshdHosts {
    fn drop(&mut self) {
        for i in 1..=self.children.len() {
            self.stop(u8::try_from(i).unwrap_or(u8::MAX));
        }
    }
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

fn read(p: &Path) -> Result<String, TestkitError> {
    std::fs::read_to_string(p).map_err(TestkitError::io(format!("read {}", p.display())))
}

fn set_mode(p: &Path, mode: u32) -> Result<(), TestkitError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(TestkitError::io(format!("chmod {}", p.display())))
}

fn keygen(path: &Path, kind: &str) -> Result<(), TestkitError> {
    let mut args = vec!["-q", "-t", kind, "-N", "", "-C", "deploy-testkit"];
    if kind == "rsa" {
        args.extend(["-b", "2048"]);
    }
    let p = path_str(path);
    args.extend(["-f", &p]);
    run_checked("ssh-keygen", &args).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssh_client_logs_in_to_every_host_as_the_test_user() {
        let hosts = SshdHosts::start(3).unwrap();
        for i in 1..=3 {
            let out = run_checked(
                "ssh",
                &[
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    &format!("UserKnownHostsFile={}", hosts.known_hosts().display()),
                    "-o",
                    "StrictHostKeyChecking=yes",
                    "-i",
                    &hosts.client_key().display().to_string(),
                    "-p",
                    &hosts.port().to_string(),
                    &format!("{SSH_TEST_USER}@{}", hosts.host(i)),
                    "id -un; echo $0",
                ],
            )
            .unwrap();
            assert_eq!(out, format!("{SSH_TEST_USER}\nsh\n"));
        }
        assert!(hosts.host_fingerprint().starts_with("SHA256:"));
    }

    #[test]
    fn a_host_at_a_fixed_address_serves_there_and_a_taken_port_is_named() {
        let port = free_port().unwrap();
        let hosts = SshdHosts::start_at("127.0.0.1", port).unwrap();
        assert_eq!(
            (hosts.host(1), hosts.port(), hosts.len()),
            ("127.0.0.1".to_owned(), port, 1)
        );
        let known = std::fs::read_to_string(hosts.known_hosts()).unwrap();
        assert!(
            known.starts_with(&format!("[127.0.0.1]:{port} ssh-ed25519 ")),
            "{known}"
        );
        let out = run_checked(
            "ssh",
            &[
                "-o",
                "BatchMode=yes",
                "-o",
                &format!("UserKnownHostsFile={}", hosts.known_hosts().display()),
                "-o",
                "StrictHostKeyChecking=yes",
                "-i",
                &hosts.client_key().display().to_string(),
                "-p",
                &port.to_string(),
                &format!("{SSH_TEST_USER}@127.0.0.1"),
                "id -un",
            ],
        )
        .unwrap();
        assert_eq!(out, format!("{SSH_TEST_USER}\n"));

        let err = SshdHosts::start_at("127.0.0.1", port)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("bind 127.0.0.1:{port} for sshd")),
            "{err}"
        );
    }
}
