//! compose_host over SSH: detecting the Compose tool, and the scripts for pull + up and for reading what runs.

use std::collections::BTreeMap;

use deploy_core::{Digest, Name};

use crate::quote::{sh_join, sh_quote};

/// Exit status of the detection script when neither Compose tool exists.
pub const EXIT_NO_COMPOSE: u32 = 127;

/// The file, in the work dir, that records the sha256 of the last compose lock brought up.
pub fn state_file(project: &Name) -> String {
    format!(".stella-{project}.lock.sha256")
}

/// Which Compose tool runs on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComposeTool {
    /// The `docker compose` v2 plugin.
    Plugin,
    /// The standalone `docker-compose` v1.
    Standalone,
}

impl ComposeTool {
    fn argv(self) -> &'static [&'static str] {
        match self {
            Self::Plugin => &["docker", "compose"],
            Self::Standalone => &["docker-compose"],
        }
    }
}

/// Creates `dir` and prints `plugin` or `standalone`; exits [`EXIT_NO_COMPOSE`] when neither exists.
pub fn prepare_script(dir: &str) -> String {
    format!(
        "mkdir -p -- {} || exit 1\n\
         if docker compose version >/dev/null 2>&1; then echo plugin\n\
         elif command -v docker-compose >/dev/null 2>&1; then echo standalone\n\
         else echo 'neither `docker compose` nor `docker-compose` is installed' >&2; exit {EXIT_NO_COMPOSE}; fi\n",
        sh_quote(dir)
    )
}

/// Parses the output of [`prepare_script`].
pub fn parse_tool(stdout: &str) -> Option<ComposeTool> {
    match stdout.trim() {
        "plugin" => Some(ComposeTool::Plugin),
        "standalone" => Some(ComposeTool::Standalone),
        _ => None,
    }
}

/// The files of one compose deploy, already in place in the work dir.
pub struct ComposeFiles<'a> {
    pub dir: &'a str,
    pub lock: &'a str,
    pub env: Option<&'a str>,
    pub project: &'a Name,
    /// sha256 of the lock, recorded after a successful `up`.
    pub lock_digest: &'a Digest,
}

fn compose_argv(tool: ComposeTool, files: &ComposeFiles<'_>) -> Vec<String> {
    let mut argv: Vec<String> = tool.argv().iter().map(|s| (*s).to_owned()).collect();
    argv.extend(["--project-name".to_owned(), files.project.to_string()]);
    argv.extend(["--file".to_owned(), format!("{}/{}", files.dir, files.lock)]);
    if let Some(env) = files.env {
        argv.extend(["--env-file".to_owned(), format!("{}/{env}", files.dir)]);
    }
    argv
}

/// `cd`, then `pull`, then `up -d --remove-orphans`, then records the lock digest.
pub fn up_script(tool: ComposeTool, files: &ComposeFiles<'_>, rename: &str) -> String {
    let base = compose_argv(tool, files);
    let pull = sh_join(&[base.clone(), vec!["pull".to_owned(), "--quiet".to_owned()]].concat());
    let up = sh_join(
        &[
            base,
            vec![
                "up".to_owned(),
                "-d".to_owned(),
                "--remove-orphans".to_owned(),
            ],
        ]
        .concat(),
    );
    let state = format!("{}/{}", files.dir, state_file(files.project));
    format!(
        "cd -- {dir} || exit 1\n{rename} || exit 1\n{pull} || exit 1\n{up} || exit 1\nprintf '%s\\n' {digest} > {state_tmp} && mv -f -- {state_tmp} {state}\n",
        dir = sh_quote(files.dir),
        digest = sh_quote(files.lock_digest.as_str()),
        state_tmp = sh_quote(&format!("{state}.tmp")),
        state = sh_quote(&state),
    )
}

/// Prints one line per container of `project`: `<service> <image> <running>`, then
/// `lock <sha256>` from the state file.
pub fn status_script(dir: &str, project: &Name) -> String {
    let filter = format!("label=com.docker.compose.project={project}");
    let format = "{{index .Config.Labels \"com.docker.compose.service\"}} {{.Config.Image}} {{.State.Running}}";
    format!(
        "ids=$({ps}) || exit 1\n\
         if [ -n \"$ids\" ]; then docker inspect --type container --format {format} $ids || exit 1; fi\n\
         printf 'lock '; cat -- {state} 2>/dev/null || echo\n",
        ps = sh_join(&["docker", "ps", "-aq", "--filter", &filter]),
        format = sh_quote(format),
        state = sh_quote(&format!("{dir}/{}", state_file(project))),
    )
}

/// What [`status_script`] reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComposeStatus {
    /// Service -> digest of its running container (`image: repo@sha256:…`).
    pub running: BTreeMap<String, Digest>,
    /// Services whose container exists but does not run, or runs an unpinned image.
    pub not_running: Vec<String>,
    /// The lock digest recorded by the last successful up.
    pub lock: Option<Digest>,
}

impl ComposeStatus {
    /// The deployed lock digest, if every container of the project runs.
    pub fn healthy_lock(&self) -> Option<Digest> {
        if self.not_running.is_empty() && !self.running.is_empty() {
            self.lock.clone()
        } else {
            None
        }
    }
}

/// Parses the output of [`status_script`].
pub fn parse_status(stdout: &str) -> ComposeStatus {
    let mut status = ComposeStatus::default();
    for line in stdout.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["lock", digest] => status.lock = Digest::parse(digest).ok(),
            [service, image, running] => {
                let digest = image
                    .rsplit_once('@')
                    .and_then(|(_, d)| Digest::parse(d).ok());
                match (digest, *running == "true") {
                    (Some(d), true) => {
                        status.running.insert((*service).to_owned(), d);
                    }
                    _ => status.not_running.push((*service).to_owned()),
                }
            }
            _ => {}
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use deploy_core::testing::{digest, name};

    #[test]
    fn status_lines_are_parsed() {
        let d1 = digest(1);
        let d2 = digest(2);
        let out = format!("web r/app@{d1} true\nworker r/app@{d2} false\nlock {d2}\n");
        let s = parse_status(&out);
        assert_eq!(s.running.get("web"), Some(&d1));
        assert_eq!(s.not_running, ["worker"]);
        assert_eq!(s.lock, Some(d2.clone()));
        assert_eq!(s.healthy_lock(), None);
        let ok = parse_status(&format!("web r/app@{d1} true\nlock {d2}\n"));
        assert_eq!(ok.healthy_lock(), Some(d2));
        assert_eq!(parse_status("lock \n").lock, None);
    }

    #[test]
    fn both_tools_and_quoted_paths() {
        assert_eq!(parse_tool("plugin\n"), Some(ComposeTool::Plugin));
        assert_eq!(parse_tool("standalone\n"), Some(ComposeTool::Standalone));
        assert_eq!(parse_tool(""), None);
        let p = name("shop");
        let d = digest(3);
        let files = ComposeFiles {
            dir: "/srv/app",
            lock: "docker-compose.lock.yml",
            env: Some("app.env"),
            project: &p,
            lock_digest: &d,
        };
        let v1 = up_script(ComposeTool::Standalone, &files, "true");
        assert!(v1.contains("'docker-compose' '--project-name' 'shop' '--file' '/srv/app/docker-compose.lock.yml' '--env-file' '/srv/app/app.env' 'up' '-d' '--remove-orphans'"), "{v1}");
        let v2 = up_script(ComposeTool::Plugin, &files, "true");
        assert!(
            v2.contains("'docker' 'compose' '--project-name' 'shop'"),
            "{v2}"
        );
    }
}
