//! `Registry`: a real Docker registry (Debian `docker-registry`) on a free loopback port, stopped on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::docker::http_get;
use crate::errors::TestkitError;
use crate::process::{free_port, require_program, temp_dir};

/// A running registry at `127.0.0.1:<port>`.
#[derive(Debug)]
pub struct Registry {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl Registry {
    /// Starts a registry with its storage in a temp dir; waits until `/v2/` answers.
    pub fn start() -> Result<Self, TestkitError> {
        Self::start_with(None)
    }

    /// Starts a registry that admits only `user` with `password` (htpasswd, Basic auth
    /// over plain http, which Docker allows for loopback registries); waits until `/v2/`
    /// answers 401.
    pub fn start_with_login(user: &str, password: &str) -> Result<Self, TestkitError> {
        Self::start_with(Some((user, password)))
    }

    fn start_with(login: Option<(&str, &str)>) -> Result<Self, TestkitError> {
        let program = require_program(
            "docker-registry",
            &["/usr/bin"],
            "`apt-get install docker-registry` (scripts/peers/ssh.sh does)",
        )?;
        let dir = temp_dir("testkit-registry-")?;
        let port = free_port()?;
        let config = dir.path().join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog: {{ level: error }}\nstorage: {{ filesystem: {{ rootdirectory: {}/data }}, delete: {{ enabled: true }} }}\nhttp: {{ addr: 127.0.0.1:{port} }}\n",
            dir.path().display()
        );
        if let Some((user, password)) = login {
            let htpasswd = require_program(
                "htpasswd",
                &["/usr/bin"],
                "`apt-get install apache2-utils` (scripts/peers/ssh.sh does)",
            )?;
            let out = Command::new(htpasswd)
                .args(["-nbB", user, password])
                .output()
                .map_err(TestkitError::io("run htpasswd"))?;
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout)
                .map_err(TestkitError::io("write the registry's htpasswd"))?;
            text.push_str(&format!(
                "auth: {{ htpasswd: {{ realm: testkit, path: {} }} }}\n",
                file.display()
            ));
        }
        std::fs::write(&config, text).map_err(TestkitError::io("write the registry config"))?;
        let log = std::fs::File::create(dir.path().join("registry.log"))
            .map_err(TestkitError::io("create the registry log"))?;
        let child = Command::new(program)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(TestkitError::io("start docker-registry"))?;
        let registry = Self { dir, port, child };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            let ready = if login.is_some() { 401 } else { 200 };
            if matches!(http_get(&registry.address(), "/v2/"), Ok((status, _)) if status == ready) {
                return Ok(registry);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(TestkitError::NotReady {
            what: format!("docker-registry on {}", registry.address()),
            seconds: 10,
            detail: std::fs::read_to_string(registry.dir.path().join("registry.log"))
                .unwrap_or_default(),
        })
    }

    /// `127.0.0.1:<port>`, the prefix of image names in this registry.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    /// Stops the registry and removes the local images pulled from it (their containers,
    /// if any, should be gone first: see `ContainerCleanup`).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let prefix = format!("{}/", self.address());
        let listed = crate::docker::run_checked(
            "docker",
            &[
                "images",
                "--no-trunc",
                "--format",
                "{{.Repository}} {{.ID}}",
            ],
        );
        if let Ok(listed) = listed {
            let mut ids: Vec<&str> = listed
                .lines()
                .filter(|l| l.starts_with(&prefix))
                .filter_map(|l| l.split_whitespace().nth(1))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            if !ids.is_empty() {
                let mut args = vec!["rmi", "-f"];
                args.extend(ids);
                let _ = crate::docker::run_checked("docker", &args);
            }
        }
    }
}
