//! `Nginx`: a real nginx (Debian `nginx`) in the foreground on a free loopback port, its prefix in a temp dir, stopped on drop.

use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::docker::http_get;
use crate::errors::TestkitError;
use crate::process::{free_port, require_program, temp_dir};

const HINT: &str = "`apt-get install nginx` (scripts/peers/artifacts.sh does)";

/// A running nginx whose `http` context includes `<prefix>/conf.d/*.conf`.
///
/// It starts with one include, `stella.conf`, whose server answers 503 on
/// [`Nginx::port`]; a test (or the executor under test) replaces that file and reloads.
/// When the tests run as root, nginx runs as `user` (the SSH test user), so that a
/// remote `nginx -s reload` over SSH may signal it and write the include file.
#[derive(Debug)]
pub struct Nginx {
    dir: tempfile::TempDir,
    port: u16,
    binary: PathBuf,
    child: Child,
}

impl Nginx {
    /// Starts nginx as `user` (when run as root) and waits until it answers.
    pub fn start(user: &str) -> Result<Self, TestkitError> {
        let binary = require_program("nginx", &["/usr/sbin"], HINT)?;
        let dir = temp_dir("testkit-nginx-")?;
        let port = free_port()?;
        let prefix = dir.path();
        for sub in ["conf.d", "tmp", "logs"] {
            std::fs::create_dir_all(prefix.join(sub)).map_err(TestkitError::io(format!(
                "create {}/{sub}",
                prefix.display()
            )))?;
        }
        let p = prefix.display();
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log warn;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n    access_log off;\n    client_body_temp_path {p}/tmp/body;\n    proxy_temp_path {p}/tmp/proxy;\n    \
             fastcgi_temp_path {p}/tmp/fastcgi;\n    uwsgi_temp_path {p}/tmp/uwsgi;\n    scgi_temp_path {p}/tmp/scgi;\n    \
             include {p}/conf.d/*.conf;\n}}\n"
        );
        std::fs::write(prefix.join("nginx.conf"), conf)
            .map_err(TestkitError::io("write nginx.conf"))?;
        std::fs::write(
            prefix.join("conf.d/stella.conf"),
            format!("server {{\n    listen {port};\n    return 503;\n}}\n"),
        )
        .map_err(TestkitError::io("write conf.d/stella.conf"))?;
        let ids = if is_root() {
            Some(user_ids(user)?)
        } else {
            None
        };
        if let Some((uid, gid)) = ids {
            chown_tree(prefix, uid, gid)?;
        }
        let mut command = Command::new(&binary);
        command
            .args(Self::base_args(prefix))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = ids {
            command.uid(uid).gid(gid);
        }
        let child = command.spawn().map_err(TestkitError::io("start nginx"))?;
        let nginx = Self {
            dir,
            port,
            binary,
            child,
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok((503, _)) = http_get(&nginx.address(), "/") {
                return Ok(nginx);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(TestkitError::NotReady {
            what: format!("nginx on {}", nginx.address()),
            seconds: 10,
            detail: std::fs::read_to_string(nginx.dir.path().join("logs/error.log"))
                .unwrap_or_default(),
        })
    }

    fn base_args(prefix: &Path) -> Vec<String> {
        let p = prefix.display();
        vec![
            "-p".to_owned(),
            format!("{p}/"),
            "-c".to_owned(),
            format!("{p}/nginx.conf"),
            "-e".to_owned(),
            format!("{p}/logs/error.log"),
        ]
    }

    /// The port the include's server listens on (all addresses; reached as 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The include file a cut-over replaces: `<prefix>/conf.d/stella.conf`.
    pub fn include_path(&self) -> PathBuf {
        self.dir.path().join("conf.d/stella.conf")
    }

    /// The prefix directory (`-p`).
    pub fn prefix(&self) -> &Path {
        self.dir.path()
    }

    /// `nginx -p … -c … -e … -t`: checks the config with the current include.
    pub fn test_argv(&self) -> Vec<String> {
        let mut argv = vec![self.binary.display().to_string()];
        argv.extend(Self::base_args(self.dir.path()));
        argv.push("-t".to_owned());
        argv
    }

    /// `nginx -p … -c … -e … -s reload`.
    pub fn reload_argv(&self) -> Vec<String> {
        let mut argv = vec![self.binary.display().to_string()];
        argv.extend(Self::base_args(self.dir.path()));
        argv.extend(["-s".to_owned(), "reload".to_owned()]);
        argv
    }

    /// The error log, for failure messages.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("logs/error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    /// Asks the master to stop at once (SIGTERM), then kills it if it lingers.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    id_number(&["-u"]) == Some(0)
}

fn id_number(args: &[&str]) -> Option<u32> {
    let out = Command::new("id").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn user_ids(user: &str) -> Result<(u32, u32), TestkitError> {
    match (id_number(&["-u", user]), id_number(&["-g", user])) {
        (Some(uid), Some(gid)) => Ok((uid, gid)),
        _ => Err(TestkitError::MissingProgram {
            program: format!("user `{user}`"),
            hint: "scripts/peers/ssh.sh (it creates the SSH test user)".to_owned(),
        }),
    }
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<(), TestkitError> {
    chown(path, Some(uid), Some(gid))
        .map_err(TestkitError::io(format!("chown {}", path.display())))?;
    if path.is_dir() {
        let entries = std::fs::read_dir(path)
            .map_err(TestkitError::io(format!("list {}", path.display())))?;
        for entry in entries {
            let entry = entry.map_err(TestkitError::io(format!("list {}", path.display())))?;
            chown_tree(&entry.path(), uid, gid)?;
        }
    }
    Ok(())
}
