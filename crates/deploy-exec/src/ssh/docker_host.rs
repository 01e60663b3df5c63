//! docker_host over SSH: the remote scripts for inspect, pull and the start-first swap, every value quoted.

use std::time::Duration;

use deploy_core::{Digest, ImageRef, Name};

use crate::executor::labels;
use crate::quote::{sh_join, sh_quote};

/// Exit status of the swap script when the new container did not stay running.
pub const EXIT_NOT_RUNNING: u32 = 3;
/// Exit status of the swap script when the old container could not be moved aside.
pub const EXIT_SWAP_FAILED: u32 = 4;

/// The kept previous container of `name`.
pub fn previous_name(name: &Name) -> String {
    format!("{name}-previous")
}

fn next_name(name: &Name) -> String {
    format!("{name}-next")
}

/// Prints `<digest label> <running>` of container `name`, or nothing when it does not exist.
pub fn inspect_script(name: &Name) -> String {
    let format = format!(
        "{{{{index .Config.Labels {:?}}}}} {{{{.State.Running}}}}",
        labels::DIGEST
    );
    format!(
        "{} 2>/dev/null || true",
        sh_join(&[
            "docker",
            "inspect",
            "--type",
            "container",
            "--format",
            &format,
            name.as_str()
        ])
    )
}

/// Parses the output of [`inspect_script`]: the digest, if the container runs.
pub fn parse_inspect(stdout: &str) -> Option<Digest> {
    let mut parts = stdout.split_whitespace();
    let digest = parts.next()?;
    let running = parts.next()? == "true";
    if !running {
        return None;
    }
    Digest::parse(digest).ok()
}

/// Pulls `image` unless the engine already has it.
pub fn pull_script(image: &ImageRef) -> String {
    let image = image.to_string();
    format!(
        "{} >/dev/null 2>&1 || {}",
        sh_join(&["docker", "image", "inspect", &image]),
        sh_join(&["docker", "pull", &image])
    )
}

/// `docker run` of the new container `<name>-next`, detached, labelled, ports on ephemeral
/// loopback ports (shared by the SSH and WinRM docker_host sequences; callers quote each word).
pub(crate) fn run_argv(spec: &RunSpec<'_>) -> Vec<String> {
    let next = next_name(spec.name);
    let mut run: Vec<String> = [
        "docker",
        "run",
        "-d",
        "--name",
        &next,
        "--restart",
        "unless-stopped",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for (key, value) in [
        (labels::COMPONENT, spec.name.as_str()),
        (labels::DIGEST, spec.image.digest().as_str()),
        (labels::TARGET, spec.target.as_str()),
        (labels::TASK, spec.task),
    ] {
        run.push("--label".to_owned());
        run.push(format!("{key}={value}"));
    }
    for port in spec.publish {
        run.push("-p".to_owned());
        run.push(format!("127.0.0.1::{port}"));
    }
    run.push(spec.image.to_string());
    run.extend(spec.args.iter().cloned());
    run
}

/// What the new container is started with.
pub struct RunSpec<'a> {
    pub name: &'a Name,
    pub image: &'a ImageRef,
    pub target: &'a Name,
    pub task: &'a str,
    pub publish: &'a [u16],
    pub args: &'a [String],
    pub settle: Duration,
    pub stop_timeout: Duration,
}

/// What happens to the old container once the new one carries the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldContainer {
    /// Stopped in the background (`docker stop --time <stop_timeout>`, detached on the
    /// host), so its grace period is not on the deploy's (or a rollback's) path.
    Stop(Duration),
    /// Left running as `<name>-previous` (blue-green: blue serves until cut-over and
    /// stays until the job completes).
    KeepRunning,
}

/// Exit status of the revert script when the kept `-previous` container cannot be
/// started again; the caller falls back to pulling and starting a new container.
pub const EXIT_REVERT_UNAVAILABLE: u32 = 5;

/// A shell test: `<container>` runs, is not restarting and has not restarted.
fn running_check(q_container: &str) -> String {
    format!(
        "[ \"$(docker inspect --type container --format '{{{{.State.Running}}}}/{{{{.State.Restarting}}}}/{{{{.RestartCount}}}}' {q_container} 2>/dev/null)\" = true/false/0 ]"
    )
}

/// Where a pending background stop of container `$id` is marked on the host (the id is hex).
/// The marker is a directory (`mkdir`/`rmdir`), never a file written through `>`: in a
/// shared `/tmp` a planted symlink of that name then makes `mkdir` fail (a stale marker,
/// which only delays a later revert) instead of truncating the file it points to.
const STOP_MARKER: &str = "/tmp/.stella-stopping-";

/// The common end of both sequences, once `<name>-next` runs: the running `<name>` is
/// renamed to `<name>-previous` (it keeps serving: a rename does not stop it), `-next`
/// is renamed to `<name>`, and only then is the old one stopped (in the background) or
/// kept running. On a failed rename the old container is put back and `-next` removed.
fn swap_tail(name: &Name, old: OldContainer) -> String {
    let q_name = sh_quote(name.as_str());
    let q_next = sh_quote(&next_name(name));
    let q_prev = sh_quote(&previous_name(name));
    let retire = match old {
        OldContainer::KeepRunning => "true".to_owned(),
        OldContainer::Stop(grace) => {
            let stop_time = grace.as_secs().to_string();
            // Detached from the session (setsid, no open descriptors), marked by a file
            // named after the container id so that a revert can tell a pending stop.
            format!(
                "if old=$(docker inspect --type container --format '{{{{.Id}}}}' {q_prev} 2>/dev/null) && [ -n \"$old\" ]; then\n\
                 \x20 mkdir {STOP_MARKER}\"$old\" 2>/dev/null || true\n\
                 \x20 setsid sh -c 'docker stop --time {stop_time} \"$1\" >/dev/null 2>&1; rmdir {STOP_MARKER}\"$1\" 2>/dev/null' sh \"$old\" </dev/null >/dev/null 2>&1 &\n\
                 fi"
            )
        }
    };
    format!(
        "if docker inspect --type container {q_name} >/dev/null 2>&1; then\n\
         \x20 docker rm -f {q_prev} >/dev/null 2>&1 || true\n\
         \x20 docker rename {q_name} {q_prev} || {{ docker rm -f {q_next} >/dev/null 2>&1; exit {EXIT_SWAP_FAILED}; }}\n\
         fi\n\
         if ! docker rename {q_next} {q_name}; then\n\
         \x20 docker rename {q_prev} {q_name} 2>/dev/null; docker start {q_name} >/dev/null 2>&1\n\
         \x20 docker rm -f {q_next} >/dev/null 2>&1; exit {EXIT_SWAP_FAILED}\n\
         fi\n\
         {retire}\n\
         exit 0\n"
    )
}

/// Starts the new container as `<name>-next`; only once it runs (and still runs after
/// `settle`) swaps it in (see [`swap_tail`]). Exits [`EXIT_NOT_RUNNING`] leaving the old
/// one serving.
pub fn swap_script(spec: &RunSpec<'_>, old: OldContainer) -> String {
    let q_next = sh_quote(&next_name(spec.name));
    let run = run_argv(spec);
    let running = running_check(&q_next);
    let settle = format!("{:.3}", spec.settle.as_secs_f64());
    format!(
        "docker rm -f {q_next} >/dev/null 2>&1 || true\n\
         {run} >/dev/null || exit 1\n\
         if ! {running} || ! sleep {settle} || ! {running}; then\n\
         \x20 echo 'new container exited:' >&2; docker logs --tail 20 {q_next} >&2\n\
         \x20 docker rm -f {q_next} >/dev/null 2>&1; exit {EXIT_NOT_RUNNING}\n\
         fi\n\
         {tail}",
        run = sh_join(&run),
        tail = swap_tail(spec.name, old),
    )
}

/// The instant revert: the kept `<name>-previous` is on `digest` (it served that digest
/// before), so it is started again (`docker start`, no `docker run`, no pull) as
/// `<name>-next`, checked after the short `settle`, and swapped in like a new container.
/// It must also publish every port in `publish` (it was started by an earlier request,
/// whose ports may differ). A pending background stop of it is finished first (killed:
/// it was being stopped anyway). Exits [`EXIT_REVERT_UNAVAILABLE`] when it is not on
/// `digest`, lacks a port, or does not stay up, with `-previous` as it was (or removed
/// when it could not run).
pub fn revert_script(
    name: &Name,
    digest: &Digest,
    publish: &[u16],
    settle: Duration,
    old: OldContainer,
) -> String {
    let q_next = sh_quote(&next_name(name));
    let q_prev = sh_quote(&previous_name(name));
    let label = format!("{{{{index .Config.Labels {:?}}}}}", labels::DIGEST);
    let q_label = sh_quote(&label);
    let q_digest = sh_quote(digest.as_str());
    let running = running_check(&q_next);
    let settle = format!("{:.3}", settle.as_secs_f64());
    let ports: String = publish
        .iter()
        .map(|p| {
            format!(
                "docker inspect --type container --format '{{{{json .HostConfig.PortBindings}}}}' {q_prev} | grep -q '\"{p}/tcp\"' || exit {EXIT_REVERT_UNAVAILABLE}\n"
            )
        })
        .collect();
    format!(
        "[ \"$(docker inspect --type container --format {q_label} {q_prev} 2>/dev/null)\" = {q_digest} ] || exit {EXIT_REVERT_UNAVAILABLE}\n\
         {ports}\
         docker rm -f {q_next} >/dev/null 2>&1 || true\n\
         docker rename {q_prev} {q_next} || exit {EXIT_REVERT_UNAVAILABLE}\n\
         id=$(docker inspect --type container --format '{{{{.Id}}}}' {q_next})\n\
         if [ -e {STOP_MARKER}\"$id\" ]; then\n\
         \x20 docker kill {q_next} >/dev/null 2>&1; i=0\n\
         \x20 while [ -e {STOP_MARKER}\"$id\" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done\n\
         \x20 rmdir {STOP_MARKER}\"$id\" 2>/dev/null || true\n\
         fi\n\
         if ! docker start {q_next} >/dev/null || ! {running} || ! sleep {settle} || ! {running}; then\n\
         \x20 echo 'the kept previous container did not stay up:' >&2; docker logs --tail 20 {q_next} >&2\n\
         \x20 docker rm -f {q_next} >/dev/null 2>&1; exit {EXIT_REVERT_UNAVAILABLE}\n\
         fi\n\
         {tail}",
        tail = swap_tail(name, old),
    )
}

/// Prints the published `host:port` of container `port` on `<name>` and on `<name>-previous`,
/// one line each (`current <addr>` / `previous <addr>`), for the running ones.
pub fn published_script(name: &Name, port: u16) -> String {
    let port = format!("{port}/tcp");
    let mut lines = Vec::new();
    for (role, container) in [
        ("current", name.to_string()),
        ("previous", previous_name(name)),
    ] {
        let q = sh_quote(&container);
        let q_port = sh_quote(&port);
        lines.push(format!(
            "if [ \"$(docker inspect --type container --format '{{{{.State.Running}}}}' {q} 2>/dev/null)\" = true ]; then a=$(docker port {q} {q_port} 2>/dev/null | head -n 1) && [ -n \"$a\" ] && echo {role} \"$a\"; fi"
        ));
    }
    lines.push("true".to_owned());
    lines.join("\n")
}

/// Parses [`published_script`]'s output into (current, previous) addresses.
pub fn parse_published(stdout: &str) -> (Option<String>, Option<String>) {
    let (mut current, mut previous) = (None, None);
    for line in stdout.lines() {
        match line.split_once(' ') {
            Some(("current", a)) => current = Some(a.trim().to_owned()),
            Some(("previous", a)) => previous = Some(a.trim().to_owned()),
            _ => {}
        }
    }
    (current, previous)
}

/// Stops the kept `<name>-previous` if it runs (blue retired after a blue-green job).
pub fn retire_script(name: &Name, grace: Duration) -> String {
    let q_prev = sh_quote(&previous_name(name));
    format!(
        "if [ \"$(docker inspect --type container --format '{{{{.State.Running}}}}' {q_prev} 2>/dev/null)\" = true ]; then docker stop --time {} {q_prev} >/dev/null; fi",
        grace.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use deploy_core::testing::{digest, name};

    #[test]
    fn inspect_output_is_parsed() {
        let d = digest(1);
        assert_eq!(parse_inspect(&format!("{d} true\n")), Some(d.clone()));
        assert_eq!(parse_inspect(&format!("{d} false\n")), None);
        assert_eq!(parse_inspect(""), None);
        assert_eq!(parse_inspect("<no value> true"), None);
    }

    #[test]
    fn published_output_is_parsed() {
        assert_eq!(
            parse_published("current 127.0.0.1:49153\nprevious 127.0.0.1:49154\n"),
            (
                Some("127.0.0.1:49153".to_owned()),
                Some("127.0.0.1:49154".to_owned())
            )
        );
        assert_eq!(
            parse_published("current 127.0.0.1:1\n"),
            (Some("127.0.0.1:1".to_owned()), None)
        );
        assert_eq!(parse_published(""), (None, None));
    }

    #[test]
    fn scripts_quote_every_value() {
        let image = ImageRef::from_parts("127.0.0.1:5000/app", &digest(2)).unwrap();
        let n = name("web");
        let s = swap_script(
            &RunSpec {
                name: &n,
                image: &image,
                target: &name("host-1"),
                task: "t-1",
                publish: &[8080],
                args: &["x; y".to_owned()],
                settle: Duration::from_millis(250),
                stop_timeout: Duration::from_secs(3),
            },
            OldContainer::Stop(Duration::from_secs(3)),
        );
        assert!(s.contains("'--label' 'stella.digest=sha256:"), "{s}");
        assert!(s.contains("'-p' '127.0.0.1::8080'"), "{s}");
        assert!(s.contains("docker rename 'web-next' 'web'"), "{s}");
        assert!(s.contains("sleep 0.250"), "{s}");
        // Names are swapped first; the old one is stopped afterwards, in the background.
        let renamed = s.find("docker rename 'web-next' 'web'").unwrap();
        let stop = s.find("docker stop --time 3").unwrap();
        assert!(renamed < stop, "{s}");
        assert!(s.contains("setsid sh -c"), "{s}");
        let kept = swap_script(
            &RunSpec {
                name: &n,
                image: &image,
                target: &name("host-1"),
                task: "t-1",
                publish: &[],
                args: &[],
                settle: Duration::ZERO,
                stop_timeout: Duration::from_secs(3),
            },
            OldContainer::KeepRunning,
        );
        assert!(!kept.contains("docker stop"), "{kept}");
        let revert = revert_script(
            &n,
            &digest(2),
            &[8080],
            Duration::from_millis(100),
            OldContainer::KeepRunning,
        );
        assert!(
            revert.contains(
                "'{{json .HostConfig.PortBindings}}' 'web-previous' | grep -q '\"8080/tcp\"'"
            ),
            "{revert}"
        );
        assert!(
            revert.contains("docker rename 'web-previous' 'web-next'"),
            "{revert}"
        );
        assert!(revert.contains("docker start 'web-next'"), "{revert}");
        assert!(revert.contains("sleep 0.100"), "{revert}");
        assert!(!revert.contains("docker run"), "{revert}");
        assert!(
            published_script(&n, 8080).contains("docker port 'web-previous' '8080/tcp'"),
            "{}",
            published_script(&n, 8080)
        );
        assert!(s.contains("@sha256:0000000000000000000000000000000000000000000000000000000000000002' 'x; y' >/dev/null"), "{s}");
        assert!(
            inspect_script(&n)
                .contains(r#"'{{index .Config.Labels "stella.digest"}} {{.State.Running}}' 'web'"#)
        );
        assert!(
            pull_script(&image)
                .starts_with("'docker' 'image' 'inspect' '127.0.0.1:5000/app@sha256:")
        );
    }
}
