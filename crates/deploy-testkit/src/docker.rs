//! Small helpers for fixtures that drive real programs: run a command and check it, a plain HTTP GET, Docker cleanup.

use std::process::Command;
use std::time::Duration;

use crate::errors::TestkitError;

/// Runs `program args…`, returning stdout; a non-zero exit is an error carrying stderr.
pub fn run_checked(program: &str, args: &[&str]) -> Result<String, TestkitError> {
    let shown = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(TestkitError::io(format!("run `{shown}`")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(TestkitError::Io {
            action: format!("run `{shown}` ({})", out.status),
            source: std::io::Error::other(stderr),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `GET path` over plain HTTP/1.0 to `addr` (`127.0.0.1:port`): the status code and body.
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String), TestkitError> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let response = crate::http_exchange(addr, &request, Duration::from_secs(5))
        .map_err(TestkitError::io(format!("GET http://{addr}{path}")))?;
    Ok((response.status, response.body))
}

/// The `127.0.0.1:port` that Docker published container port `port` of `container` on.
pub fn published_addr(container: &str, port: u16) -> Result<String, TestkitError> {
    let out = run_checked("docker", &["port", container, &format!("{port}/tcp")])?;
    out.lines()
        .find(|l| l.starts_with("127.0.0.1:"))
        .map(str::to_owned)
        .ok_or_else(|| TestkitError::NotReady {
            what: format!("published port {port} of container `{container}`"),
            seconds: 0,
            detail: out.clone(),
        })
}

/// Removes every container whose name starts with `prefix`, on drop (and on demand).
///
/// Give each test its own prefix so parallel tests never touch each other's containers.
#[derive(Debug)]
pub struct ContainerCleanup {
    prefix: String,
}

impl ContainerCleanup {
    /// Cleans up now (leftovers of an earlier run) and again on drop.
    pub fn new(prefix: impl Into<String>) -> Self {
        let cleanup = Self {
            prefix: prefix.into(),
        };
        cleanup.clean();
        cleanup
    }

    /// Removes the containers, networks and volumes named with the prefix.
    pub fn clean(&self) {
        let filter = format!("name=^{}", self.prefix);
        if let Ok(ids) = run_checked("docker", &["ps", "-aq", "--filter", &filter]) {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                // -v: with their anonymous volumes (an image's VOLUME the test did not
                // mount), which would otherwise outlive them, data and credentials included.
                let mut args = vec!["rm", "-f", "-v"];
                args.extend(ids);
                let _ = run_checked("docker", &args);
            }
        }
        if let Ok(nets) = run_checked("docker", &["network", "ls", "-q", "--filter", &filter]) {
            for net in nets.split_whitespace() {
                let _ = run_checked("docker", &["network", "rm", net]);
            }
        }
        // Volumes filter by name substring only: keep those that start with the prefix.
        if let Ok(volumes) = run_checked(
            "docker",
            &[
                "volume",
                "ls",
                "-q",
                "--filter",
                &format!("name={}", self.prefix),
            ],
        ) {
            for volume in volumes
                .split_whitespace()
                .filter(|v| v.starts_with(&self.prefix))
            {
                let _ = run_checked("docker", &["volume", "rm", "-f", volume]);
            }
        }
    }
}

impl Drop for ContainerCleanup {
    fn drop(&mut self) {
        self.clean();
    }
}
