//! The machine a run is measured on: CPU, cores, RAM, kernel, OS, toolchain, peers, git commit, date, load average.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

/// First line of a command's stdout (or stderr, for `ssh -V`), or `"unknown"`.
fn first_line(program: &str, args: &[&str], dir: &Path) -> String {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .ok()
        .and_then(|o| {
            let out = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8(out).ok()
        })
        .and_then(|s| s.lines().next().map(|l| l.trim().to_owned()))
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The `/proc/loadavg` averages over 1, 5 and 15 minutes, as `"1.20 0.90 0.70"`.
pub fn loadavg() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Now, as `2026-12-01 14:05 UTC`.
pub fn now_utc() -> String {
    first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"], Path::new("."))
}

/// Everything the report prints about the machine and the code measured.
pub fn describe(root: &Path) -> Value {
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let ram_gib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let dirty = !first_line("git", &["status", "--porcelain"], root).eq("unknown");
    json!({
        "cpu": cpu,
        "cores": cores,
        "ram_gib": ram_gib,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "os": os,
        "rustc": first_line("rustc", &["--version"], root),
        "openssh": first_line("ssh", &["-V"], root),
        "docker": first_line("docker", &["version", "--format", "{{.Server.Version}}"], root),
        "postgres": first_line("postgres", &["--version"], root),
        "commit": first_line("git", &["rev-parse", "--short=12", "HEAD"], root),
        "commit_subject": first_line("git", &["log", "-1", "--format=%s"], root),
        "uncommitted_changes": dirty,
    })
}
