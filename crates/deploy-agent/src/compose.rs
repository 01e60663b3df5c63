//! compose_host through the Compose CLI (`docker-compose` v1 or the `docker compose` plugin, argv only): artifacts into the work dir (0700, files 0600, see `files`), pull from the staged lock, up, and what runs per service.
//!
//! Mirrors the SSH executor's sequence (deploy-exec `ssh/compose_host.rs`): the lock
//! (the whole pinned compose file, checked against its `x-generated` digest first) is
//! written to a temp name, pulled from there, moved onto its final name only after the
//! pull succeeded, then `up -d --remove-orphans`; the lock's sha256 is recorded in
//! `.stella-<project>.lock.sha256` and is the project's "digest" for inspect.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use bollard::Docker;
use bollard::query_parameters::ListContainersOptionsBuilder;
use deploy_api::agent::{AgentErrorCode, LogStream};
pub use deploy_core::ComposeStatus;
use deploy_core::naming::labels;
use deploy_core::{ArtifactKind, Digest, GeneratedArtifact, Name, Protocol, PublishedPort};

use crate::errors::TaskError;
use crate::files::{prepare_work_dir, temp_path, write_atomically, write_new};
use crate::tasklog::TaskLog;

/// The standalone Compose binary looked up on PATH (Compose v1, or v2 installed standalone).
pub const COMPOSE_PROGRAM: &str = "docker-compose";

/// The Compose CLI of this host: the standalone `docker-compose`, or the `docker
/// compose` plugin (stock Docker CE hosts have only the plugin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeTool {
    pub program: PathBuf,
    /// Words before Compose's own arguments (`["compose"]` for the plugin).
    pub prefix: Vec<String>,
}

impl ComposeTool {
    /// `docker-compose` on PATH, else `docker compose` when `docker compose version` answers.
    pub async fn detect() -> Option<Self> {
        Self::detect_in(std::env::var_os("PATH").as_deref()).await
    }

    /// [`ComposeTool::detect`] in the directories of `path` (a `$PATH` value).
    pub async fn detect_in(path: Option<&std::ffi::OsStr>) -> Option<Self> {
        if let Some(program) = find_in(path, COMPOSE_PROGRAM) {
            return Some(Self {
                program,
                prefix: Vec::new(),
            });
        }
        let docker = find_in(path, "docker")?;
        let ok = tokio::process::Command::new(&docker)
            .args(["compose", "version"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status()
            .await
            .is_ok_and(|s| s.success());
        ok.then(|| Self {
            program: docker,
            prefix: vec!["compose".to_owned()],
        })
    }

    /// How the tool is shown in logs and errors.
    pub fn shown(&self) -> String {
        let mut words = vec![self.program.display().to_string()];
        words.extend(self.prefix.iter().cloned());
        words.join(" ")
    }
}

/// The file, in the work dir, that records the sha256 of the last lock brought up.
pub fn state_file(project: &Name) -> String {
    format!(".stella-{project}.lock.sha256")
}

/// `program` found in a directory of `$PATH`.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    find_in(std::env::var_os("PATH").as_deref(), program)
}

/// `program` found in a directory of `path` (a `$PATH` value).
fn find_in(path: Option<&std::ffi::OsStr>, program: &str) -> Option<PathBuf> {
    std::env::split_paths(path?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// A successful compose deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeDeployed {
    pub lock: Digest,
    pub previous: Option<Digest>,
    pub changed: bool,
    pub running: BTreeMap<String, Digest>,
    pub published: Vec<PublishedPort>,
}

/// The Compose CLI and the engine it drives.
#[derive(Debug, Clone)]
pub struct ComposeHost {
    tool: ComposeTool,
    docker: Docker,
}

/// The lock docker-compose runs: `lock` itself, or, when it references application
/// secrets, the copy without those variables (the payload's `<project>.secrets.yml`
/// override, passed after the lock, sets them).
fn lock_for_compose(lock: &str) -> Result<String, TaskError> {
    let invalid = |e: deploy_artifacts::ArtifactError| TaskError::invalid(e.to_string());
    let refs = deploy_artifacts::lock_secret_refs(lock).map_err(invalid)?;
    if refs.is_empty() {
        return Ok(lock.to_owned());
    }
    deploy_artifacts::lock_without_secret_refs(lock, &refs).map_err(invalid)
}

/// Checks every artifact's sha256 and name before anything is written.
pub fn verify_artifacts(artifacts: &[GeneratedArtifact]) -> Result<(), TaskError> {
    for a in artifacts {
        a.verify().map_err(|e| {
            TaskError::invalid(format!(
                "verify artifact `{}` (sha256 {}): {e}",
                a.file_name, a.sha256
            ))
        })?;
    }
    Ok(())
}

impl ComposeHost {
    /// The Compose CLI `tool`, containers read through `docker`.
    pub fn new(tool: ComposeTool, docker: Docker) -> Self {
        Self { tool, docker }
    }

    /// What runs in `project` (containers labelled by Compose) and the recorded lock.
    pub async fn status(&self, dir: &Path, project: &Name) -> Result<ComposeStatus, TaskError> {
        let filters: HashMap<&str, Vec<String>> = [(
            "label",
            vec![format!("{}={project}", labels::COMPOSE_PROJECT)],
        )]
        .into();
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers =
            self.docker.list_containers(Some(opts)).await.map_err(|e| {
                TaskError::docker(&format!("list containers of project {project}"), e)
            })?;
        let mut status = ComposeStatus::default();
        for c in containers {
            let service = c
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::COMPOSE_SERVICE))
                .cloned()
                .unwrap_or_default();
            let digest = c
                .image
                .as_deref()
                .and_then(|i| i.rsplit_once('@'))
                .and_then(|(_, d)| Digest::parse(d).ok());
            let running = c.state.map(|s| s.to_string()).as_deref() == Some("running");
            if running {
                for p in c.ports.iter().flatten() {
                    let (Some(host_port), Some(ip)) = (p.public_port, p.ip.as_deref()) else {
                        continue;
                    };
                    let Ok(host_ip) = ip.parse() else {
                        continue;
                    };
                    status.published.push(PublishedPort {
                        container_port: p.private_port,
                        protocol: p
                            .typ
                            .and_then(|t| Protocol::parse(t.as_ref()))
                            .unwrap_or_default(),
                        host_ip,
                        host_port,
                    });
                }
            }
            match (digest, running) {
                (Some(d), true) => {
                    status.running.insert(service, d);
                }
                _ => status.not_running.push(service),
            }
        }
        status.not_running.sort();
        status.published.sort();
        status.published.dedup();
        let state = dir.join(state_file(project));
        status.lock = tokio::fs::read_to_string(&state)
            .await
            .ok()
            .and_then(|s| Digest::parse(s.trim()).ok());
        Ok(status)
    }

    async fn run(&self, argv: &[String], dir: &Path, log: &TaskLog) -> Result<(), String> {
        let shown = self.tool.shown();
        log.agent(&format!("{shown} {}", argv.join(" ")));
        let out = tokio::process::Command::new(&self.tool.program)
            .args(&self.tool.prefix)
            .args(argv)
            .current_dir(dir)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("run {shown}: {e}"))?;
        log.line(LogStream::Stdout, &String::from_utf8_lossy(&out.stdout));
        log.line(LogStream::Stderr, &String::from_utf8_lossy(&out.stderr));
        if out.status.success() {
            Ok(())
        } else {
            let tail: Vec<String> = String::from_utf8_lossy(&out.stderr)
                .lines()
                .rev()
                .take(5)
                .map(|l| log.redactor().apply(l))
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            Err(format!(
                "{shown} {} exited with {}: {}",
                argv.iter()
                    .rev()
                    .take(3)
                    .rev()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" "),
                out.status,
                tail.join(" | ")
            ))
        }
    }

    fn base_argv(project: &Name, lock: &Path) -> Vec<String> {
        vec![
            "--project-name".to_owned(),
            project.to_string(),
            "--file".to_owned(),
            lock.display().to_string(),
        ]
    }

    /// Deploys the compose lock among `artifacts` as `project` in `dir`.
    pub async fn deploy(
        &self,
        dir: &Path,
        project: &Name,
        artifacts: &[GeneratedArtifact],
        log: &TaskLog,
    ) -> Result<ComposeDeployed, (TaskError, Option<Digest>)> {
        verify_artifacts(artifacts).map_err(|e| (e, None))?;
        let Some(lock) = artifacts
            .iter()
            .find(|a| a.kind == ArtifactKind::ComposeLock)
        else {
            return Err((
                TaskError::invalid(format!(
                    "find a compose-lock artifact for a compose_host deploy among {} files",
                    artifacts.len()
                )),
                None,
            ));
        };
        // The lock is the record of what runs: its own digest is checked before `up`.
        deploy_artifacts::verify_lock(lock.content.as_bytes()).map_err(|e| {
            (
                TaskError::invalid(format!("verify compose lock `{}`: {e}", lock.file_name)),
                None,
            )
        })?;
        // Created 0700 (or checked) before anything is written; from here on its canonical path.
        let owned = dir.to_owned();
        let dir = &tokio::task::spawn_blocking(move || prepare_work_dir(&owned))
            .await
            .map_err(|e| (TaskError::host("prepare the work dir", e), None))?
            .map_err(|e| (e, None))?;
        let before = self.status(dir, project).await.map_err(|e| (e, None))?;
        let previous = before.healthy_lock();
        let fail = |e: TaskError| (e, previous.clone());
        if previous.as_ref() == Some(&lock.sha256) {
            log.agent(&format!(
                "project {project} already runs lock {}: nothing to do",
                lock.sha256
            ));
            return Ok(ComposeDeployed {
                lock: lock.sha256.clone(),
                previous: previous.clone(),
                changed: false,
                running: before.running,
                published: before.published,
            });
        }
        log.agent(&format!(
            "writing {} files to {}",
            artifacts.len(),
            dir.display()
        ));
        for a in artifacts
            .iter()
            .filter(|a| a.kind != ArtifactKind::ComposeLock)
        {
            write_atomically(dir, a.file_name.as_str(), a.content.as_bytes())
                .await
                .map_err(fail)?;
        }
        // The lock is moved into place only after a successful pull. Its secret
        // references (`KEY: secret:NAME`) are set by the secrets override file written
        // above instead (a second `--file`), as deployd does for an SSH host.
        let override_name = deploy_artifacts::secrets_override_file_name(project.as_str());
        let secrets_override = artifacts
            .iter()
            .any(|a| a.file_name.as_str() == override_name)
            .then(|| dir.join(&override_name));
        let with_override = |mut argv: Vec<String>| {
            if let Some(path) = &secrets_override {
                argv.extend(["--file".to_owned(), path.display().to_string()]);
            }
            argv
        };
        let text = match lock_for_compose(&lock.content) {
            Ok(text) => text,
            Err(e) => return Err(fail(e)),
        };
        let staged = temp_path(dir, lock.file_name.as_str(), "uploading");
        if let Err(e) = write_new(&staged, text.as_bytes()).await {
            let _ = tokio::fs::remove_file(&staged).await;
            return Err(fail(e));
        }
        let mut pull = with_override(Self::base_argv(project, &staged));
        pull.extend(["pull".to_owned(), "--quiet".to_owned()]);
        if let Err(why) = self.run(&pull, dir, log).await {
            let _ = tokio::fs::remove_file(&staged).await;
            return Err(fail(TaskError::new(AgentErrorCode::PullFailed, why)));
        }
        // From here on the project may be half brought up: the recorded lock is
        // forgotten first, so a failed or cut `up` is never taken for the old lock
        // still running (a rollback would otherwise find "nothing to do").
        let state = dir.join(state_file(project));
        match tokio::fs::remove_file(&state).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                let _ = tokio::fs::remove_file(&staged).await;
                return Err(fail(TaskError::host(
                    &format!("forget the recorded lock {}", state.display()),
                    e,
                )));
            }
        }
        let lock_path = dir.join(lock.file_name.as_str());
        tokio::fs::rename(&staged, &lock_path).await.map_err(|e| {
            fail(TaskError::host(
                &format!("move the lock to {}", lock_path.display()),
                e,
            ))
        })?;
        let mut up = with_override(Self::base_argv(project, &lock_path));
        up.extend([
            "up".to_owned(),
            "-d".to_owned(),
            "--remove-orphans".to_owned(),
        ]);
        if let Err(why) = self.run(&up, dir, log).await {
            return Err(fail(TaskError::new(AgentErrorCode::StartFailed, why)));
        }
        write_atomically(
            dir,
            &state_file(project),
            format!("{}\n", lock.sha256).as_bytes(),
        )
        .await
        .map_err(fail)?;
        let after = self.status(dir, project).await.map_err(fail)?;
        if after.healthy_lock().as_ref() != Some(&lock.sha256) {
            return Err(fail(TaskError::new(
                AgentErrorCode::StartFailed,
                format!(
                    "bring up project {project}: services not running: {}",
                    after.not_running.join(", ")
                ),
            )));
        }
        for (service, digest) in &after.running {
            log.agent(&format!("{service} runs {digest}"));
        }
        Ok(ComposeDeployed {
            lock: lock.sha256.clone(),
            previous,
            changed: true,
            running: after.running,
            published: after.published,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// An executable shell script `name` in `dir` that appends its argv to `dir/argv`
    /// and exits with `status`.
    fn fake_program(dir: &Path, name: &str, status: u8) {
        let path = dir.join(name);
        let record = dir.join("argv");
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"{name} $*\" >> '{}'\nexit {status}\n",
                record.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn recorded(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("argv"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[tokio::test]
    async fn the_standalone_binary_wins_then_the_plugin_when_it_answers() {
        let (standalone, plugin, broken, empty) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        fake_program(standalone.path(), COMPOSE_PROGRAM, 0);
        fake_program(standalone.path(), "docker", 0);
        fake_program(plugin.path(), "docker", 0);
        // A `docker` without the compose plugin: `docker compose version` fails.
        fake_program(broken.path(), "docker", 1);

        let path = |dirs: &[&Path]| std::env::join_paths(dirs).unwrap();
        let tool = ComposeTool::detect_in(Some(&path(&[plugin.path(), standalone.path()])))
            .await
            .unwrap();
        assert_eq!(
            tool.program,
            standalone.path().join(COMPOSE_PROGRAM),
            "docker-compose first, wherever it is"
        );
        assert!(tool.prefix.is_empty());

        let tool = ComposeTool::detect_in(Some(&path(&[empty.path(), plugin.path()])))
            .await
            .unwrap();
        assert_eq!(tool.program, plugin.path().join("docker"));
        assert_eq!(tool.prefix, ["compose"]);
        assert_eq!(
            tool.shown(),
            format!("{} compose", plugin.path().join("docker").display())
        );
        assert_eq!(recorded(plugin.path()), ["docker compose version"]);

        assert_eq!(
            ComposeTool::detect_in(Some(&path(&[broken.path()]))).await,
            None
        );
        assert_eq!(
            ComposeTool::detect_in(Some(&path(&[empty.path()]))).await,
            None
        );
        assert_eq!(ComposeTool::detect_in(None).await, None);
    }

    #[tokio::test]
    async fn the_plugin_gets_compose_before_the_project_arguments() {
        let dir = tempfile::tempdir().unwrap();
        fake_program(dir.path(), "docker", 0);
        let tool = ComposeTool {
            program: dir.path().join("docker"),
            prefix: vec!["compose".to_owned()],
        };
        // A socket that is never used: `run` makes no engine call, and the client only
        // connects when used (it only checks that the socket exists).
        let socket = dir.path().join("engine.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let docker = Docker::connect_with_unix(
            &socket.display().to_string(),
            5,
            bollard::API_DEFAULT_VERSION,
        )
        .unwrap();
        let host = ComposeHost::new(tool, docker);
        let log = TaskLog::new(
            "t/1",
            crate::redact::Redactor::new(),
            std::sync::Arc::new(tokio::sync::Notify::new()),
        );
        let project = deploy_core::testing::name("web");
        let mut argv = ComposeHost::base_argv(&project, &dir.path().join("compose.lock.yml"));
        argv.extend(["pull".to_owned(), "--quiet".to_owned()]);
        host.run(&argv, dir.path(), &log).await.unwrap();
        assert_eq!(
            recorded(dir.path()),
            [format!(
                "docker compose --project-name web --file {} pull --quiet",
                dir.path().join("compose.lock.yml").display()
            )]
        );
    }
}
