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

/// Starts the new container as `<name>-next`; only once it runs (and still runs after
/// `settle`), stops the old one, renames it to `<name>-previous` (replacing an older
/// one), and renames the new one in. Exits [`EXIT_NOT_RUNNING`] leaving the old one serving.
pub fn swap_script(spec: &RunSpec<'_>) -> String {
    let name = spec.name.as_str();
    let next = next_name(spec.name);
    let previous = previous_name(spec.name);
    let run = run_argv(spec);
    let q_next = sh_quote(&next);
    let q_name = sh_quote(name);
    let q_prev = sh_quote(&previous);
    let running = format!(
        "[ \"$(docker inspect --type container --format '{{{{.State.Running}}}}/{{{{.State.Restarting}}}}/{{{{.RestartCount}}}}' {q_next} 2>/dev/null)\" = true/false/0 ]"
    );
    let settle = format!("{:.3}", spec.settle.as_secs_f64());
    let stop_time = spec.stop_timeout.as_secs().to_string();
    format!(
        "docker rm -f {q_next} >/dev/null 2>&1 || true\n\
         {run} >/dev/null || exit 1\n\
         if ! {running} || ! sleep {settle} || ! {running}; then\n\
         \x20 echo 'new container exited:' >&2; docker logs --tail 20 {q_next} >&2\n\
         \x20 docker rm -f {q_next} >/dev/null 2>&1; exit {EXIT_NOT_RUNNING}\n\
         fi\n\
         if docker inspect --type container {q_name} >/dev/null 2>&1; then\n\
         \x20 docker rm -f {q_prev} >/dev/null 2>&1 || true\n\
         \x20 docker stop --time {stop_time} {q_name} >/dev/null && docker rename {q_name} {q_prev} || {{ docker start {q_name} >/dev/null 2>&1; docker rm -f {q_next} >/dev/null 2>&1; exit {EXIT_SWAP_FAILED}; }}\n\
         fi\n\
         docker rename {q_next} {q_name} && exit 0\n\
         docker rename {q_prev} {q_name} 2>/dev/null && docker start {q_name} >/dev/null 2>&1\n\
         docker rm -f {q_next} >/dev/null 2>&1; exit {EXIT_SWAP_FAILED}\n",
        run = sh_join(&run),
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
    fn scripts_quote_every_value() {
        let image = ImageRef::from_parts("127.0.0.1:5000/app", &digest(2)).unwrap();
        let n = name("web");
        let s = swap_script(&RunSpec {
            name: &n,
            image: &image,
            target: &name("host-1"),
            task: "t-1",
            publish: &[8080],
            args: &["x; y".to_owned()],
            settle: Duration::from_millis(250),
            stop_timeout: Duration::from_secs(3),
        });
        assert!(s.contains("'--label' 'stella.digest=sha256:"), "{s}");
        assert!(s.contains("'-p' '127.0.0.1::8080'"), "{s}");
        assert!(s.contains("docker rename 'web-next' 'web'"), "{s}");
        assert!(s.contains("sleep 0.250"), "{s}");
        assert!(s.contains("docker stop --time 3 'web'"), "{s}");
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
