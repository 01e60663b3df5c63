//! Build script shared by the three binaries (`build = "../../build/version.rs"`): the git commit they were built from, for `--version`, `/api/v1/version` and `deployd_build_info`.
//!
//! Sets, for the crate being built:
//! - `DEPLOY_BUILD_COMMIT`: `DEPLOY_GIT_COMMIT` when set (packagers building from a
//!   tarball), else `git rev-parse --short=12 HEAD`, else `unknown` (no `.git`, no git;
//!   a `cargo:warning` then gives git's reason);
//! - `DEPLOY_BUILD_VERSION`: what `--version` prints after the name:
//!   `0.1.0 (1a2b3c4d5e6f, 2026-12-06)`, the date being the commit's (reproducible,
//!   unlike a build date), or `0.1.0 (unknown)`.
//!
//! Only leaf crates (the binaries) use it: a build script whose output changes with
//! every commit would rebuild every dependent of a library on every commit. It reruns
//! when `DEPLOY_GIT_COMMIT` changes, or when HEAD moves: `.git/HEAD`, the branch ref it
//! names, `packed-refs` and HEAD's reflog (paths from `git rev-parse --git-path`, right in worktrees
//! too). There is no `-dirty` mark on purpose: telling it would mean watching the
//! whole tree, so every edit anywhere would rerun this script and relink the binary.

#![expect(
    clippy::print_stdout,
    reason = "a build script speaks to cargo on stdout"
)]

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=DEPLOY_GIT_COMMIT");
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".to_owned());
    let dir = Path::new(&dir);
    let (commit, date) = match std::env::var("DEPLOY_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() && !c.contains(char::is_control) => {
            (c.trim().to_owned(), None)
        }
        _ => match run_git(dir, &["rev-parse", "--short=12", "HEAD"]) {
            Ok(commit) => {
                watch_head(dir);
                (commit, git(dir, &["log", "-1", "--format=%cs", "HEAD"]))
            }
            Err(why) => {
                // Says why the binaries will print `unknown`.
                println!("cargo:warning=git commit unknown: {why}");
                ("unknown".to_owned(), None)
            }
        },
    };
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let long = match date {
        Some(date) => format!("{version} ({commit}, {date})"),
        None => format!("{version} ({commit})"),
    };
    println!("cargo:rustc-env=DEPLOY_BUILD_COMMIT={commit}");
    println!("cargo:rustc-env=DEPLOY_BUILD_VERSION={long}");
}

/// `git <args>` in `dir`: its trimmed stdout, or `None` when git is missing or fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    run_git(dir, args).ok()
}

/// `git <args>` in `dir`: its one line of stdout, or why not (git's first line of
/// stderr when it failed).
fn run_git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && !text.is_empty() && !text.contains('\n') {
        return Ok(text);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap_or("").trim();
    Err(format!(
        "`git {}` failed ({}): {first}",
        args.join(" "),
        out.status
    ))
}

/// Reruns this script when HEAD moves: a checkout (HEAD), a commit on the branch
/// (its loose ref, or its folder while the ref is only packed), a `git gc` or fetch
/// that packs refs (`packed-refs`), and any of them through HEAD's reflog. Only
/// existing paths: cargo reruns a script every build while a watched path is missing.
fn watch_head(dir: &Path) {
    let mut files = vec![
        "HEAD".to_owned(),
        "packed-refs".to_owned(),
        "logs/HEAD".to_owned(),
    ];
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        files.push(branch);
    }
    for file in files {
        let Some(path) = git(
            dir,
            &["rev-parse", "--path-format=absolute", "--git-path", &file],
        ) else {
            continue;
        };
        let path = Path::new(&path);
        let watched = if path.exists() {
            Some(path)
        } else {
            path.parent()
                .filter(|p| file.starts_with("refs/") && p.is_dir())
        };
        if let Some(watched) = watched {
            println!("cargo:rerun-if-changed={}", watched.display());
        }
    }
}
