//! `Registry`: a real Docker registry (Debian `docker-registry`) on a free loopback port (or a fixed address, its storage seeded from a directory), stopped on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::docker::http_get;
use crate::errors::TestkitError;
use crate::process::{ensure_port_free, free_port, require_program, temp_dir};

/// A running registry at `127.0.0.1:<port>` (or the fixed address of [`Registry::start_at`]).
#[derive(Debug)]
pub struct Registry {
    dir: tempfile::TempDir,
    ip: String,
    port: u16,
    child: Child,
}

/// How to start the registry.
#[derive(Default)]
struct Setup<'a> {
    /// Basic-auth user and password.
    login: Option<(&'a str, &'a str)>,
    /// A fixed address, else 127.0.0.1 and a free port.
    at: Option<(&'a str, u16)>,
    /// A storage tree copied in before the start.
    seed: Option<&'a Path>,
}

impl Registry {
    /// Starts a registry with its storage in a temp dir; waits until `/v2/` answers.
    pub fn start() -> Result<Self, TestkitError> {
        Self::start_with(Setup::default())
    }

    /// Starts a registry on the fixed address `ip:port` (one that stored image references
    /// name, say a fixture's) whose storage is a copy of the registry storage tree `seed`
    /// (the directory holding `docker/registry/v2`), so the digests stored with those
    /// references resolve; waits until `/v2/` answers. Fails naming the address when
    /// something already listens there, or when the registry exits instead of serving.
    /// On drop, removes the local images pulled from that address, like [`Registry::start`]'s.
    pub fn start_at(ip: &str, port: u16, seed: &Path) -> Result<Self, TestkitError> {
        ensure_port_free(ip, port, "docker-registry")?;
        Self::start_with(Setup {
            at: Some((ip, port)),
            seed: Some(seed),
            ..Setup::default()
        })
    }

    /// Starts a registry that admits only `user` with `password` (htpasswd, Basic auth
    /// over plain http, which Docker allows for loopback registries); waits until `/v2/`
    /// answers 401.
    pub fn start_with_login(user: &str, password: &str) -> Result<Self, TestkitError> {
        Self::start_with(Setup {
            login: Some((user, password)),
            ..Setup::default()
        })
    }

    fn start_with(setup: Setup<'_>) -> Result<Self, TestkitError> {
        let program = require_program(
            "docker-registry",
            &["/usr/bin"],
            "`apt-get install docker-registry` (scripts/peers/ssh.sh does)",
        )?;
        let dir = temp_dir("testkit-registry-")?;
        let (ip, port) = match setup.at {
            Some((ip, port)) => (ip.to_owned(), port),
            None => ("127.0.0.1".to_owned(), free_port()?),
        };
        let storage = dir.path().join("data");
        if let Some(seed) = setup.seed {
            // A copy: the registry writes (upload sessions, link files) into its storage.
            copy_tree(seed, &storage)?;
        }
        let config = dir.path().join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog: {{ level: error }}\nstorage: {{ filesystem: {{ rootdirectory: {} }}, delete: {{ enabled: true }} }}\nhttp: {{ addr: {ip}:{port} }}\n",
            storage.display()
        );
        if let Some((user, password)) = setup.login {
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
        let mut registry = Self {
            dir,
            ip,
            port,
            child,
        };
        let ready = if setup.login.is_some() { 401 } else { 200 };
        let started = Instant::now();
        loop {
            let answered =
                matches!(http_get(&registry.address(), "/v2/"), Ok((status, _)) if status == ready);
            // Ours must still run: one that exited (say, its port taken) while something
            // else answers is an error, not a fixture.
            let exited = registry.child.try_wait().ok().flatten().is_some();
            if answered && !exited {
                return Ok(registry);
            }
            if exited || started.elapsed() >= Duration::from_secs(10) {
                let what = match (exited, answered) {
                    (true, true) => format!(
                        "docker-registry on {} (it exited; another process answers at that address)",
                        registry.address()
                    ),
                    (true, false) => {
                        format!("docker-registry on {} (it exited)", registry.address())
                    }
                    _ => format!("docker-registry on {}", registry.address()),
                };
                return Err(TestkitError::NotReady {
                    what,
                    seconds: 10,
                    detail: std::fs::read_to_string(registry.dir.path().join("registry.log"))
                        .unwrap_or_default(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:<port>` (or [`Registry::start_at`]'s address), the prefix of image
    /// names in this registry.
    pub fn address(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }
}

/// Copies the directory tree `from` to `to` (directories and regular files).
fn copy_tree(from: &Path, to: &Path) -> Result<(), TestkitError> {
    std::fs::create_dir_all(to).map_err(TestkitError::io(format!("create {}", to.display())))?;
    let entries =
        std::fs::read_dir(from).map_err(TestkitError::io(format!("read {}", from.display())))?;
    for entry in entries {
        let entry = entry.map_err(TestkitError::io(format!("read {}", from.display())))?;
        let target = to.join(entry.file_name());
        let is_dir = entry
            .file_type()
            .map_err(TestkitError::io(format!("stat {}", entry.path().display())))?
            .is_dir();
        if is_dir {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .map_err(TestkitError::io(format!("copy {}", entry.path().display())))?;
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_at_a_fixed_address_serves_its_seeded_storage_and_a_taken_port_is_named() {
        let seed = temp_dir("testkit-seed-").unwrap();
        std::fs::create_dir_all(seed.path().join("docker/registry/v2/repositories")).unwrap();
        let port = free_port().unwrap();
        let registry = Registry::start_at("127.0.0.1", port, seed.path()).unwrap();
        assert_eq!(registry.address(), format!("127.0.0.1:{port}"));
        assert_eq!(
            http_get(&registry.address(), "/v2/_catalog").unwrap(),
            (200, "{\"repositories\":[]}\n".to_owned())
        );
        // Its storage is a copy of the seed (the registry writes into it).
        assert!(registry.dir.path().join("data/docker/registry/v2").is_dir());

        let err = Registry::start_at("127.0.0.1", port, seed.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("bind 127.0.0.1:{port} for docker-registry")),
            "{err}"
        );
    }
}
