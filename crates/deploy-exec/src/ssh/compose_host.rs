//! compose_host over SSH: detecting the Compose tool, and the scripts for pull + up and for reading what runs.

pub use deploy_core::ComposeStatus;
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

/// Prints `plugin` or `standalone`; exits [`EXIT_NO_COMPOSE`] when neither exists. (The
/// work dir is created over SFTP beforehand, with its mode and checks.)
pub fn detect_script() -> String {
    format!(
        "if docker compose version >/dev/null 2>&1; then echo plugin\n\
         elif command -v docker-compose >/dev/null 2>&1; then echo standalone\n\
         else echo 'neither `docker compose` nor `docker-compose` is installed' >&2; exit {EXIT_NO_COMPOSE}; fi\n"
    )
}

/// Parses the output of [`detect_script`].
pub fn parse_tool(stdout: &str) -> Option<ComposeTool> {
    match stdout.trim() {
        "plugin" => Some(ComposeTool::Plugin),
        "standalone" => Some(ComposeTool::Standalone),
        _ => None,
    }
}

/// The files of one compose deploy in the work dir.
pub struct ComposeFiles<'a> {
    pub dir: &'a str,
    /// The lock's final file name.
    pub lock: &'a str,
    /// Where the new lock was uploaded (a temp name in `dir`): pulled from there, and
    /// moved onto `lock` only once the pull succeeded.
    pub staged_lock: &'a str,
    pub project: &'a Name,
    /// sha256 of the lock, recorded after a successful `up`.
    pub lock_digest: &'a Digest,
    /// The project's secrets override file in `dir` (see [`secrets_override_name`]),
    /// passed after the lock, when the deploy has secrets.
    pub secrets_override: Option<&'a str>,
}

/// The file name of `project`'s secrets override file (as deploy-artifacts'
/// `secrets_override_file_name` names it; the engine adds it to the request).
pub fn secrets_override_name(project: &Name) -> String {
    format!("{project}.secrets.yml")
}

fn compose_argv(tool: ComposeTool, files: &ComposeFiles<'_>, lock_path: &str) -> Vec<String> {
    let mut argv: Vec<String> = tool.argv().iter().map(|s| (*s).to_owned()).collect();
    argv.extend(["--project-name".to_owned(), files.project.to_string()]);
    argv.extend(["--file".to_owned(), lock_path.to_owned()]);
    if let Some(name) = files.secrets_override {
        argv.extend(["--file".to_owned(), format!("{}/{name}", files.dir)]);
    }
    argv
}

/// `cd`; move the other files into place; `pull` from the staged lock (on failure the
/// staged lock is removed and the deployed lock stays); forget the recorded lock digest
/// (from here the project may be half brought up, and a failed or cut `up` must not be
/// taken for the old lock still running); move the lock into place;
/// `up -d --remove-orphans`; record the lock digest.
pub fn up_script(
    tool: ComposeTool,
    files: &ComposeFiles<'_>,
    rename_others: &str,
    rename_lock: &str,
) -> String {
    let staged = compose_argv(tool, files, files.staged_lock);
    let deployed = compose_argv(tool, files, &format!("{}/{}", files.dir, files.lock));
    let pull = sh_join(&[staged, vec!["pull".to_owned(), "--quiet".to_owned()]].concat());
    let up = sh_join(
        &[
            deployed,
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
        "cd -- {dir} || exit 1\n{rename_others} || exit 1\n{pull} || {{ rm -f -- {staged}; exit 1; }}\nrm -f -- {state} || exit 1\n{rename_lock} || exit 1\n{up} || exit 1\nrm -f -- {state_tmp} && (set -C; umask 077; printf '%s\\n' {digest} > {state_tmp}) && mv -f -- {state_tmp} {state}\n",
        dir = sh_quote(files.dir),
        staged = sh_quote(files.staged_lock),
        digest = sh_quote(files.lock_digest.as_str()),
        state_tmp = sh_quote(&format!("{state}.tmp")),
        state = sh_quote(&state),
    )
}

/// Prints one line per container of `project`: `<service> <image> <running>
/// [<port>/<proto>=<ip>:<host port>…]`, then `lock <sha256>` from the state file.
pub fn status_script(dir: &str, project: &Name) -> String {
    let filter = format!("label=com.docker.compose.project={project}");
    let format = "{{index .Config.Labels \"com.docker.compose.service\"}} {{.Config.Image}} {{.State.Running}}{{range $p, $b := .NetworkSettings.Ports}}{{range $b}} {{$p}}={{.HostIp}}:{{.HostPort}}{{end}}{{end}}";
    format!(
        "ids=$({ps}) || exit 1\n\
         if [ -n \"$ids\" ]; then docker inspect --type container --format {format} $ids || exit 1; fi\n\
         printf 'lock '; cat -- {state} 2>/dev/null || echo\n",
        ps = sh_join(&["docker", "ps", "-aq", "--filter", &filter]),
        format = sh_quote(format),
        state = sh_quote(&format!("{dir}/{}", state_file(project))),
    )
}

/// `8080/tcp=127.0.0.1:49153` as a published port (IPv6 addresses as Docker prints them, unbracketed).
fn parse_binding(text: &str) -> Option<deploy_core::PublishedPort> {
    let (key, address) = text.split_once('=')?;
    let (port, proto) = key.split_once('/')?;
    let (ip, host_port) = address.rsplit_once(':')?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    Some(deploy_core::PublishedPort {
        container_port: port.parse().ok()?,
        protocol: deploy_core::Protocol::parse(proto).unwrap_or_default(),
        host_ip: if ip.is_empty() { "0.0.0.0" } else { ip }.parse().ok()?,
        host_port: host_port.parse().ok()?,
    })
}

/// Parses the output of [`status_script`].
pub fn parse_status(stdout: &str) -> ComposeStatus {
    let mut status = ComposeStatus::default();
    for line in stdout.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["lock", digest] => status.lock = Digest::parse(digest).ok(),
            [service, image, running, ports @ ..] => {
                let digest = image
                    .rsplit_once('@')
                    .and_then(|(_, d)| Digest::parse(d).ok());
                if *running == "true" {
                    status
                        .published
                        .extend(ports.iter().filter_map(|p| parse_binding(p)));
                }
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
        let out = format!(
            "web r/app@{d1} true 8080/tcp=127.0.0.1:49153 8080/tcp=::1:49153\nworker r/app@{d2} false\nlock {d2}\n"
        );
        let s = parse_status(&out);
        assert_eq!(s.running.get("web"), Some(&d1));
        assert_eq!(s.published.len(), 2);
        assert_eq!(s.published[0].host_port, 49153);
        assert!(s.published[1].host_ip.is_ipv6());
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
            staged_lock: "/srv/app/.docker-compose.lock.yml.uploading-1",
            project: &p,
            lock_digest: &d,
            secrets_override: None,
        };
        let v1 = up_script(ComposeTool::Standalone, &files, "true", "true");
        assert!(
            v1.contains("'--file' '/srv/app/.docker-compose.lock.yml.uploading-1' 'pull'"),
            "{v1}"
        );
        assert!(
            v1.contains("|| { rm -f -- '/srv/app/.docker-compose.lock.yml.uploading-1'; exit 1; }"),
            "{v1}"
        );
        assert!(v1.contains("'docker-compose' '--project-name' 'shop' '--file' '/srv/app/docker-compose.lock.yml' 'up' '-d' '--remove-orphans'"), "{v1}");
        let v2 = up_script(ComposeTool::Plugin, &files, "true", "true");
        assert!(
            v2.contains("'docker' 'compose' '--project-name' 'shop'"),
            "{v2}"
        );
        // The secrets override comes after the lock, for pull and up alike.
        let with = ComposeFiles {
            secrets_override: Some("shop.secrets.yml"),
            ..files
        };
        let script = up_script(ComposeTool::Plugin, &with, "true", "true");
        assert!(script.contains("'--file' '/srv/app/.docker-compose.lock.yml.uploading-1' '--file' '/srv/app/shop.secrets.yml' 'pull'"), "{script}");
        assert!(script.contains("'--file' '/srv/app/docker-compose.lock.yml' '--file' '/srv/app/shop.secrets.yml' 'up'"), "{script}");
        assert_eq!(secrets_override_name(&p), "shop.secrets.yml");
    }
}
