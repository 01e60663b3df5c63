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
        let program = require_program(
            "docker-registry",
            &["/usr/bin"],
            "`apt-get install docker-registry` (scripts/peers/ssh.sh does)",
        )?;
        let dir = temp_dir("testkit-registry-")?;
        let port = free_port()?;
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{ level: error }}\nstorage: {{ filesystem: {{ rootdirectory: {}/data }}, delete: {{ enabled: true }} }}\nhttp: {{ addr: 127.0.0.1:{port} }}\n",
                dir.path().display()
            ),
        )
        .map_err(TestkitError::io("write the registry config"))?;
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
            if let Ok((200, _)) = http_get(&registry.address(), "/v2/") {
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
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
