//! The systemd unit (`stella-<service>.service`): runs the pinned image with docker or podman, with the service's restart policy and stop timeout; every value escaped per systemd's unit syntax.

use crate::render::ResolvedService;

/// The container engine a unit drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerRuntime {
    Docker,
    Podman,
}

impl ContainerRuntime {
    /// Absolute path of the CLI in `ExecStart=` (systemd needs an absolute path).
    pub fn binary(self) -> &'static str {
        match self {
            Self::Docker => "/usr/bin/docker",
            Self::Podman => "/usr/bin/podman",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Podman => "podman",
        }
    }
}

/// Seconds systemd waits beyond the container's own stop timeout before it kills the CLI.
pub const STOP_MARGIN_SECS: u64 = 5;

/// The container name a unit runs: `stella-<service>`.
pub(crate) fn container_name(service: &str) -> String {
    format!("stella-{service}")
}

/// Renders the unit of one service.
pub(crate) fn render(
    header: &str,
    svc: &ResolvedService<'_>,
    runtime: ContainerRuntime,
    env_file_path: &str,
) -> String {
    let t = svc.template;
    let name = container_name(t.name.as_str());
    let bin = runtime.binary();
    let mut out = String::with_capacity(1024);
    for line in header.lines() {
        out.push_str("# ");
        out.push_str(&line.replace('%', "%%"));
        out.push('\n');
    }
    out.push_str("[Unit]\n");
    out.push_str(&format!(
        "Description=stella service {} (component {}, release {})\n",
        t.name, svc.component.name, svc.release_name
    ));
    if runtime == ContainerRuntime::Docker {
        out.push_str("Wants=docker.service\nAfter=network-online.target docker.service\n");
    } else {
        out.push_str("After=network-online.target\n");
    }
    out.push_str("\n[Service]\nType=exec\n");
    out.push_str(&format!("Restart={}\nRestartSec=5\n", t.restart.systemd()));
    out.push_str(&format!(
        "TimeoutStopSec={}\n",
        t.stop_timeout_secs + STOP_MARGIN_SECS
    ));

    // `-`: a missing old container is not an error.
    out.push_str("ExecStartPre=-");
    push_args(&mut out, &[bin, "rm", "--force", &name]);
    out.push('\n');

    out.push_str("ExecStart=");
    push_args(
        &mut out,
        &[
            bin,
            "run",
            "--rm",
            "--name",
            &name,
            "--env-file",
            env_file_path,
        ],
    );
    for (k, v) in &svc.labels {
        out.push_str(" --label ");
        arg(&mut out, &format!("{k}={v}"));
    }
    for p in &t.ports {
        out.push_str(" --publish ");
        arg(&mut out, p);
    }
    out.push_str(&format!(" --stop-timeout={} ", t.stop_timeout_secs));
    arg(&mut out, &svc.image);
    for word in t.command.iter().flatten() {
        out.push(' ');
        arg(&mut out, word);
    }
    out.push('\n');

    let time = format!("--time={}", t.stop_timeout_secs);
    out.push_str("ExecStop=");
    push_args(&mut out, &[bin, "stop", &time, &name]);
    out.push('\n');
    out.push_str("\n[Install]\nWantedBy=multi-user.target\n");
    out
}

/// Appends the words separated by spaces, without a line end.
fn push_args(out: &mut String, args: &[&str]) {
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        arg(out, a);
    }
}

/// One command-line word in systemd syntax: plain when inert, else double-quoted with C escapes;
/// `%` (specifiers) and `$` (variable expansion) are doubled in both cases.
pub(crate) fn arg(out: &mut String, s: &str) {
    let plain = !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '_' | '@' | '+' | '=' | ':' | ',' | '.' | '/' | '-')
        });
    if plain {
        out.push_str(s);
        return;
    }
    // A lone `;` separates commands, quoted or not; `\;` is the literal.
    if s == ";" {
        out.push_str("\\;");
        return;
    }
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> String {
        let mut out = String::new();
        arg(&mut out, s);
        out
    }

    #[test]
    fn words_are_escaped_per_unit_syntax() {
        assert_eq!(a("--name"), "--name");
        assert_eq!(a("k=v"), "k=v");
        assert_eq!(a(""), "\"\"");
        assert_eq!(a("a b"), "\"a b\"");
        assert_eq!(a("50%"), "\"50%%\"");
        assert_eq!(a("$HOME"), "\"$$HOME\"");
        assert_eq!(a("say \"hi\"\\"), "\"say \\\"hi\\\"\\\\\"");
        assert_eq!(a("a;b"), "\"a;b\"");
        assert_eq!(a(";"), "\\;");
        assert_eq!(a("x\u{1}y\nz"), "\"x\\x01y\\nz\"");
    }
}
