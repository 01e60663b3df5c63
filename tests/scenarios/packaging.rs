//! The install artifacts as an operator gets them: the .deb packages (fields, files, unit hardening, an install with `dpkg -i`, the service user running the shipped config, a clean purge) and the container images (deployd on its volume from the host's side, the agent registering through the mounted socket).
//!
//! Packages and images are made by the repository's own scripts
//! (`scripts/package/debs.sh`, `scripts/package/images.sh`) from the binaries the
//! other scenarios build (debug in CI: no release build). The packages are built
//! once per run: the first test process builds them under a file lock, the others
//! reuse them while the binaries and the packaging sources (`packaging/`,
//! `scripts/package/`) are unchanged. Each image test builds the one image it needs
//! under its own tag and removes it, its containers and its volumes after (and
//! images that killed runs left). The install test needs root (CI runs as root),
//! holds a machine-wide lock, purges leftovers of an interrupted run, and purges what
//! it installed; the units' sandbox runs only where systemd is init (see that test).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use deploy_testkit::{ContainerCleanup, free_port, http_get, published_addr, require_program};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::agent_proc::{agent_binary, agents, bootstrap_token};
use crate::deployd_proc::{ADMIN_TOKEN, Deployd, api_get, api_post, binaries, spawn_serving};
use crate::tidy::workspace_root;

/// The three binaries, each its own package.
const PACKAGES: [&str; 3] = ["deployd", "deployctl", "deploy-agent"];

/// The workspace version every binary and package carries.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The folder of the binaries this run built (`target/debug` or `target/release`),
/// after building all three.
fn bin_dir() -> PathBuf {
    let (_, deployctl) = binaries();
    agent_binary();
    deployctl.parent().unwrap().to_path_buf()
}

fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} does not run: {e}"))
}

/// Runs `cmd`, expects exit 0; its stdout.
fn checked(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What `BIN --version` prints: `deployd 0.1.0 (1a2b3c4d5e6f, 2026-12-06)`.
fn version_line(binary: &Path) -> String {
    checked(Command::new(binary).arg("--version"))
        .trim()
        .to_owned()
}

/// The commit in a `--version` line.
fn commit_of(version_line: &str) -> String {
    let inside = version_line.split_once('(').unwrap().1;
    inside.split([',', ')']).next().unwrap().trim().to_owned()
}

/// The Debian version of packages built from binaries of `commit`, worked out here
/// from the commit's time in seconds (`date`, not git's date format as debs.sh): the
/// workspace version for a commit tagged `v<version>`, else
/// `<version>~git<commit time UTC, YYYYMMDD.HHMMSS>.<commit>`.
fn deb_version(commit: &str) -> String {
    let git = |args: &[&str]| {
        checked(
            Command::new("git")
                .arg("-C")
                .arg(workspace_root())
                .args(args),
        )
    };
    let version = VERSION.replace('-', "~");
    if git(&["tag", "--points-at", commit])
        .lines()
        .any(|t| t == format!("v{VERSION}"))
    {
        return version;
    }
    let seconds = git(&["show", "-s", "--format=%ct", commit]);
    let when = checked(Command::new("date").args([
        "-u",
        "-d",
        &format!("@{}", seconds.trim()),
        "+%Y%m%d.%H%M%S",
    ]));
    format!("{version}~git{}.{commit}", when.trim())
}

/// `dpkg --compare-versions A gt B`.
fn newer(a: &str, b: &str) -> bool {
    Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .unwrap()
        .success()
}

/// The .deb files of the three packages.
fn debs() -> BTreeMap<&'static str, PathBuf> {
    let bins = bin_dir();
    let dir = bins.join("packaging-tests");
    std::fs::create_dir_all(&dir).unwrap();
    // One builder at a time (nextest runs each test in its own process); the others
    // wait, then find the packages of the same binaries ready.
    let lock = std::fs::File::create(dir.join(".lock")).unwrap();
    lock.lock().unwrap();
    // The packages are current while the binaries and every input of debs.sh (its
    // scripts, the units, configs and maintainer scripts) are unchanged.
    let mut stamp: String = PACKAGES
        .iter()
        .map(|bin| {
            let meta = std::fs::metadata(bins.join(bin)).unwrap();
            format!(
                "{bin}:{}:{}.{}\n",
                meta.len(),
                meta.mtime(),
                meta.mtime_nsec()
            )
        })
        .collect();
    stamp.push_str(&inputs_digest(&[
        workspace_root().join("packaging"),
        workspace_root().join("scripts/package"),
    ]));
    let arch = checked(Command::new("dpkg").arg("--print-architecture"))
        .trim()
        .to_owned();
    let version = deb_version(&commit_of(&version_line(&bins.join(PACKAGES[0]))));
    let files: BTreeMap<&str, PathBuf> = PACKAGES
        .iter()
        .map(|p| (*p, dir.join(format!("{p}_{version}_{arch}.deb"))))
        .collect();
    let fresh = std::fs::read_to_string(dir.join(".stamp")).is_ok_and(|s| s == stamp)
        && files.values().all(|f| f.is_file());
    if !fresh {
        // Packages of earlier commits have other names: they would pile up.
        for old in std::fs::read_dir(&dir).unwrap() {
            let old = old.unwrap().path();
            if old.extension().is_some_and(|e| e == "deb") {
                std::fs::remove_file(old).unwrap();
            }
        }
        let profile = bins.file_name().unwrap().to_str().unwrap().to_owned();
        let started = Instant::now();
        let printed = checked(
            Command::new("bash")
                // The version under test is debs.sh's own, not an override.
                .env_remove("DEPLOY_DEB_VERSION")
                .arg(workspace_root().join("scripts/package/debs.sh"))
                .args(["--profile", &profile, "--no-build", "--bin-dir"])
                .arg(&bins)
                .arg("--out")
                .arg(&dir),
        );
        eprintln!(
            "debs.sh built the packages in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let printed: Vec<&str> = printed.lines().collect();
        let expected: Vec<String> = files.values().map(|f| f.display().to_string()).collect();
        for file in &expected {
            assert!(printed.contains(&file.as_str()), "{printed:?} lacks {file}");
        }
        std::fs::write(dir.join(".stamp"), &stamp).unwrap();
    }
    files
}

/// The sha256 of the paths and contents of every file under `dirs`, in path order.
fn inputs_digest(dirs: &[PathBuf]) -> String {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, files);
            } else {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    for dir in dirs {
        walk(dir, &mut files);
    }
    files.sort();
    let mut hash = Sha256::new();
    for file in files {
        hash.update(file.to_string_lossy().as_bytes());
        hash.update([0]);
        let bytes = std::fs::read(&file).unwrap();
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
    }
    format!("inputs:{}\n", deploy_core::hex::lower_hex(&hash.finalize()))
}

/// `dpkg-deb --field DEB`: the control fields (a continued Description joined).
fn control_fields(deb: &Path) -> BTreeMap<String, String> {
    let text = checked(Command::new("dpkg-deb").arg("--field").arg(deb));
    let mut fields = BTreeMap::new();
    let mut last = String::new();
    for line in text.lines() {
        if let Some(more) = line.strip_prefix(' ') {
            fields
                .entry(last.clone())
                .and_modify(|v: &mut String| v.push_str(&format!("\n{more}")));
        } else if let Some((k, v)) = line.split_once(':') {
            last = k.to_owned();
            fields.insert(k.to_owned(), v.trim().to_owned());
        }
    }
    fields
}

/// `dpkg-deb --contents DEB`: each entry's path (without `./`) and its `mode owner/group`.
fn contents(deb: &Path) -> BTreeMap<String, String> {
    checked(Command::new("dpkg-deb").arg("--contents").arg(deb))
        .lines()
        .map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let path = cols[5].trim_start_matches("./").trim_end_matches('/');
            (path.to_owned(), format!("{} {}", cols[0], cols[1]))
        })
        .collect()
}

/// `dpkg-deb --info DEB FILE`: one control file (conffiles, postinst, …).
fn control_file(deb: &Path, file: &str) -> String {
    checked(Command::new("dpkg-deb").arg("--info").arg(deb).arg(file))
}

/// The files every package carries beside its binary.
fn expected_files(pkg: &str) -> Vec<String> {
    let mut files = vec![
        format!("usr/bin/{pkg}"),
        format!("usr/share/man/man1/{pkg}.1.gz"),
        format!("usr/share/bash-completion/completions/{pkg}"),
        format!("usr/share/zsh/vendor-completions/_{pkg}"),
        format!("usr/share/fish/vendor_completions.d/{pkg}.fish"),
        format!("usr/share/doc/{pkg}/copyright"),
        format!("usr/share/doc/{pkg}/changelog.gz"),
        format!("usr/share/doc/{pkg}/THIRD-PARTY"),
    ];
    match pkg {
        "deployd" => files.extend(
            [
                "etc/deployd/deployd.toml",
                "usr/lib/systemd/system/deployd.service",
                "usr/share/man/man1/deployd-admin-token.1.gz",
                "usr/share/man/man1/deployd-backup.1.gz",
                "usr/share/man/man1/deployd-restore.1.gz",
            ]
            .map(str::to_owned),
        ),
        "deploy-agent" => files.extend(
            [
                "etc/deploy-agent/agent.toml",
                "usr/lib/systemd/system/deploy-agent.service",
            ]
            .map(str::to_owned),
        ),
        _ => files.extend(
            [
                "usr/share/man/man1/deployctl-env.1.gz",
                "usr/share/man/man1/deployctl-env-create.1.gz",
                "usr/share/man/man1/deployctl-completions.1.gz",
            ]
            .map(str::to_owned),
        ),
    }
    files
}

/// The config file a service package ships (its one conffile).
fn conffile(pkg: &str) -> Option<&'static str> {
    match pkg {
        "deployd" => Some("/etc/deployd/deployd.toml"),
        "deploy-agent" => Some("/etc/deploy-agent/agent.toml"),
        _ => None,
    }
}

/// common.sh's `package_version` in each of its cases, against a throwaway git
/// repository whose commit time is pinned (no build needed).
#[test]
fn the_package_version_of_a_snapshot_a_release_an_unknown_commit_and_an_override() {
    let repo = deploy_testkit::temp_dir("deploy-pkg-version-").unwrap();
    let git = |args: &[&str]| {
        checked(
            Command::new("git")
                .arg("-C")
                .arg(repo.path())
                .args(args)
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
                .env("GIT_AUTHOR_DATE", "2026-12-06T16:03:38Z")
                .env("GIT_COMMITTER_DATE", "2026-12-06T16:03:38Z"),
        )
    };
    git(&["init", "-q"]);
    git(&["commit", "-q", "--allow-empty", "-m", "one"]);
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).trim().to_owned();
    let run = |version: &str, commit: &str, given: Option<&str>| {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(r#"set -euo pipefail; source "$1"; ROOT=$2 VERSION=$3 COMMIT=$4; package_version"#)
            .arg("bash")
            .arg(workspace_root().join("scripts/package/common.sh"))
            .arg(repo.path())
            .arg(version)
            .arg(commit)
            .env_remove("DEPLOY_DEB_VERSION");
        if let Some(given) = given {
            cmd.env("DEPLOY_DEB_VERSION", given);
        }
        output(&mut cmd)
    };
    let version = |version: &str, commit: &str, given: Option<&str>| {
        let out = run(version, commit, given);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let refused = |version: &str, commit: &str, given: Option<&str>| {
        let out = run(version, commit, given);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        String::from_utf8(out.stderr).unwrap()
    };

    let snapshot = format!("0.1.0~git20261206.160338.{commit}");
    assert_eq!(version("0.1.0", &commit, None), snapshot);
    // A `-` would start a Debian revision: a pre-release stays before its release.
    let rc = version("0.2.0-rc.1", &commit, None);
    assert_eq!(rc, format!("0.2.0~rc.1~git20261206.160338.{commit}"));
    assert!(newer("0.2.0", &rc) && newer("0.2.0~rc.1", &rc), "{rc}");
    assert_eq!(version("0.1.0", "unknown", None), "0.1.0");
    git(&["tag", "v0.1.0"]);
    let release = version("0.1.0", &commit, None);
    assert_eq!(release, "0.1.0", "the tagged commit is the release");
    assert!(
        newer(&release, &snapshot),
        "the release upgrades its snapshots"
    );
    assert_eq!(
        version("0.1.1", &commit, None),
        format!("0.1.1~git20261206.160338.{commit}"),
        "a tag of another version is no release of this one"
    );
    assert_eq!(
        version("0.1.0", &commit, Some("0.1.0+tarball1")),
        "0.1.0+tarball1"
    );
    let said = refused("0.1.0", &commit, Some("1.0-"));
    assert!(
        said.contains("DEPLOY_DEB_VERSION `1.0-` is invalid"),
        "{said}"
    );
    let said = refused("0.1.0", "abcdef123456", None);
    assert!(
        said.contains("commit abcdef123456") && said.contains("set DEPLOY_DEB_VERSION"),
        "{said}"
    );
}

#[test]
fn the_debs_carry_their_fields_files_and_hardened_units() {
    require_program("dpkg-deb", &[], "`apt-get install dpkg` (Debian)").unwrap();
    let analyze = require_program(
        "systemd-analyze",
        &[],
        "`apt-get install systemd` (scripts/peers/packaging.sh does)",
    )
    .unwrap();
    let arch = checked(Command::new("dpkg").arg("--print-architecture"))
        .trim()
        .to_owned();
    let bins = bin_dir();
    for (pkg, deb) in debs() {
        let fields = control_fields(&deb);
        assert_eq!(fields["Package"], pkg);
        let commit = commit_of(&version_line(&bins.join(pkg)));
        let version = &fields["Version"];
        assert_eq!(*version, deb_version(&commit), "{pkg}");
        // apt must take a build of a later commit as an upgrade, and the release of
        // this version as newer still.
        if *version != VERSION {
            assert!(newer(VERSION, version), "{VERSION} after {version}");
            let later = format!("{VERSION}~git99991231.235959.{commit}");
            assert!(newer(&later, version), "{later} after {version}");
        }
        // The changelog's entry is this version (dpkg-parsechangelog, lintian).
        let changelog = checked(
            Command::new("bash")
                .arg("-c")
                .arg(r#"dpkg-deb --fsys-tarfile "$1" | tar -xO "./usr/share/doc/$2/changelog.gz" | gunzip | sed -n 1p"#)
                .arg("bash")
                .arg(&deb)
                .arg(pkg),
        );
        assert_eq!(
            changelog.trim(),
            format!("{pkg} ({version}) unstable; urgency=medium")
        );
        assert_eq!(fields["Architecture"], arch, "{pkg}");
        let depends = &fields["Depends"];
        assert!(depends.contains("libc6 (>= "), "{pkg}: {depends}");
        assert!(
            fields["Description"].contains(&format!("commit {commit}")),
            "{pkg}: {fields:#?}"
        );
        assert!(fields["Installed-Size"].parse::<u64>().unwrap() > 0);

        let files = contents(&deb);
        for file in expected_files(pkg) {
            assert!(files.contains_key(&file), "{pkg} lacks {file}: {files:#?}");
        }
        assert_eq!(files[&format!("usr/bin/{pkg}")], "-rwxr-xr-x root/root");
        assert!(
            files.values().all(|m| m.ends_with(" root/root")),
            "{pkg}: a file not owned by root: {files:#?}"
        );
        let man_pages = files.keys().filter(|f| f.starts_with("usr/share/man/"));
        for page in man_pages.filter(|f| !f.ends_with('/') && f.contains('.')) {
            assert!(
                page.ends_with(".1.gz"),
                "{pkg}: {page} is not a gzipped page"
            );
        }

        let Some(config) = conffile(pkg) else {
            assert!(!files.keys().any(|f| f.starts_with("etc/")), "{pkg}");
            continue;
        };
        assert!(depends.contains("adduser"), "{pkg}: {depends}");
        assert_eq!(control_file(&deb, "conffiles").trim(), config);
        // dpkg checks a conffile through conffiles; md5sums lists the rest.
        let md5sums = control_file(&deb, "md5sums");
        assert!(
            !md5sums.contains(config.trim_start_matches('/'))
                && md5sums.contains(&format!("  usr/bin/{pkg}\n")),
            "{pkg}: {md5sums}"
        );
        for script in ["postinst", "prerm", "postrm"] {
            let text = control_file(&deb, script);
            assert!(
                !text.contains('@'),
                "{pkg} {script}: a placeholder is left: {text}"
            );
            assert!(text.contains(&format!("{pkg}.service")), "{pkg} {script}");
            checked(Command::new("sh").arg("-n").arg("-c").arg(&text));
        }
        // The unit's hardening, scored by systemd itself: exposure at most 2.0 of 10
        // (a unit with only ExecStart= scores 9.6, "UNSAFE").
        let root = deploy_testkit::temp_dir("deploy-pkg-unit-").unwrap();
        checked(
            Command::new("dpkg-deb")
                .arg("-x")
                .arg(&deb)
                .arg(root.path()),
        );
        let unit = root
            .path()
            .join(format!("usr/lib/systemd/system/{pkg}.service"));
        let text = std::fs::read_to_string(&unit).unwrap();
        if pkg == "deployd" {
            // accept_new appends to known_hosts: it must be where the unit may write.
            let config =
                std::fs::read_to_string(root.path().join("etc/deployd/deployd.toml")).unwrap();
            assert!(
                config
                    .lines()
                    .any(|l| l == r#"known_hosts = "/var/lib/deployd/known_hosts""#),
                "{config}"
            );
        }
        let mut lines = vec![
            format!("User={pkg}"),
            format!("StateDirectory={pkg}"),
            format!("ExecStart=/usr/bin/{pkg} --config {config}"),
            "RestartPreventExitStatus=2".to_owned(),
            "ProtectSystem=strict".to_owned(),
            "NoNewPrivileges=yes".to_owned(),
            "CapabilityBoundingSet=".to_owned(),
            "SystemCallFilter=@system-service".to_owned(),
        ];
        if pkg == "deployd" {
            // The agent's health commands may be JIT runtimes: not for the agent.
            lines.push("MemoryDenyWriteExecute=yes".to_owned());
            // The drain (10 s + 20 s + 5 s + flushes) fits before SIGKILL.
            lines.push("TimeoutStopSec=75".to_owned());
        }
        for line in lines {
            assert!(
                text.lines().any(|l| l == line),
                "{pkg}: no `{line}` in {text}"
            );
        }
        let security = output(
            Command::new(&analyze)
                .args(["security", "--offline=yes", "--threshold=20"])
                .arg(&unit),
        );
        assert!(
            security.status.success(),
            "{pkg}: exposure above 2.0: {}",
            String::from_utf8_lossy(&security.stdout)
        );
    }
}

/// The Maintainer field of the packages debs.sh writes: what marks an installed
/// `deployd` as this test's leftover rather than an operator's.
const MAINTAINER: &str = "deploy maintainers <deploy@example.invalid>";

/// Held (machine-wide, across test suites running at once) around the install test:
/// dpkg's database, `/var/lib/deployd` and the service users are the machine's.
const INSTALL_LOCK: &str = "/run/lock/deploy-tests-packaging.lock";

/// The drop-in the systemd path writes before installing (the listen address moved
/// to a free port), removed with the packages.
const DROP_IN_DIR: &str = "/etc/systemd/system/deployd.service.d";

/// `dpkg-query -W -f=${Status}|${Maintainer}` of `pkg`: by whom it was packaged,
/// when dpkg knows it in any state but not-installed (installed, half-configured,
/// config-files left, …).
fn installed(pkg: &str) -> Option<String> {
    let out = output(Command::new("dpkg-query").args(["-W", "-f=${Status}|${Maintainer}", pkg]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, maintainer) = text.split_once('|')?;
    (!status.ends_with("not-installed")).then(|| maintainer.to_owned())
}

/// `dpkg ARGS…` (DEBIAN_FRONTEND=noninteractive), retried while another dpkg or apt
/// holds dpkg's lock (bounded, 300 s); expects exit 0.
fn dpkg(args: &[&OsStr]) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let mut cmd = Command::new("dpkg");
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        let out = output(&mut cmd);
        if out.status.success() {
            return;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let locked = stderr.contains("lock") && stderr.contains("another process");
        assert!(
            locked && Instant::now() < deadline,
            "{cmd:?}: {}\n{}{stderr}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn dpkg_purge() {
    let mut args = vec![OsStr::new("--purge")];
    args.extend(PACKAGES.map(OsStr::new));
    dpkg(&args);
}

/// Purges the packages, the drop-in and the service users this test created on
/// drop, so a failed assertion leaves the machine as it was.
struct Installed {
    created_users: Vec<&'static str>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = output(Command::new("dpkg").arg("--purge").args(PACKAGES));
        let _ = std::fs::remove_dir_all(DROP_IN_DIR);
        if systemd_runs() {
            let _ = output(Command::new("systemctl").arg("daemon-reload"));
        }
        for user in &self.created_users {
            let _ = output(Command::new("userdel").arg(user));
        }
    }
}

fn user_exists(user: &str) -> bool {
    output(Command::new("getent").args(["passwd", user]))
        .status
        .success()
}

/// Whether systemd is this machine's init (then postinst starts deployd's unit).
fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// A child process killed (if still running) when the test ends, passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `stat -c '%U:%G %a' path`.
fn owner_and_mode(path: &str) -> String {
    checked(Command::new("stat").args(["-c", "%U:%G %a", path]))
        .trim()
        .to_owned()
}

/// Waits (bounded, 60 s) until deployd answers `GET /healthz` with 200 on `addr`;
/// `log` says what it printed when it does not.
fn wait_healthz_at(addr: &str, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(http_get(addr, "/healthz"), Ok((200, _))) {
        assert!(
            Instant::now() < deadline,
            "deployd did not answer /healthz on {addr} within 60 s: {}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The packages installed with `dpkg -i`, then what they set up, then deployd run by
/// them, then a purge.
///
/// Where systemd is init (`/run/systemd/system`) the unit as shipped runs deployd:
/// postinst starts it (a drop-in moves it to a free port first) and the sandbox is
/// exercised; elsewhere (containers, CI without systemd) deployd is started with
/// `setpriv` as its user with the shipped config, so the unit's sandbox is not run
/// there, only scored (`systemd-analyze security`) and verified.
#[test]
fn the_debs_install_run_as_their_users_and_purge_cleanly() {
    let uid = checked(Command::new("id").arg("-u"));
    assert_eq!(
        uid.trim(),
        "0",
        "installing packages needs root (dpkg -i); CI runs the tests as root"
    );
    let machine_lock = std::fs::File::create(INSTALL_LOCK).unwrap();
    machine_lock.lock().unwrap();
    // Leftovers of an interrupted run are purged; someone else's install is not touched.
    for pkg in PACKAGES {
        if let Some(maintainer) = installed(pkg) {
            assert_eq!(
                maintainer, MAINTAINER,
                "the package `{pkg}` from elsewhere is installed on this machine; this test installs and purges its own: `dpkg --purge {pkg}` first"
            );
            eprintln!("purging `{pkg}`, left installed by an interrupted run");
            dpkg_purge();
        }
    }
    let _ = std::fs::remove_dir_all(DROP_IN_DIR);
    let debs = debs();
    let bins = bin_dir();
    let _installed = Installed {
        created_users: ["deployd", "deploy-agent"]
            .into_iter()
            .filter(|u| !user_exists(u))
            .collect(),
    };
    let port = free_port().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let systemd = systemd_runs();
    if systemd {
        std::fs::create_dir_all(DROP_IN_DIR).unwrap();
        std::fs::write(
            Path::new(DROP_IN_DIR).join("deploy-tests.conf"),
            format!("[Service]\nEnvironment=DEPLOYD_LISTEN={addr}\n"),
        )
        .unwrap();
    }
    let mut install = vec![OsStr::new("--install")];
    install.extend(debs.values().map(|p| p.as_os_str()));
    dpkg(&install);

    // The installed binaries are the ones built, with the workspace version and commit.
    for pkg in PACKAGES {
        let installed = version_line(&Path::new("/usr/bin").join(pkg));
        assert_eq!(installed, version_line(&bins.join(pkg)));
        assert!(
            installed.starts_with(&format!("{pkg} {VERSION} (")),
            "{installed}"
        );
        assert!(!commit_of(&installed).is_empty(), "{installed}");
        assert_eq!(installed_maintainer(pkg), MAINTAINER);
        let package_version =
            checked(Command::new("dpkg-query").args(["-W", "-f=${Version}", pkg]));
        assert_eq!(
            package_version,
            deb_version(&commit_of(&installed)),
            "{pkg}"
        );
    }

    // The units as installed: their binaries and man pages exist now. Only what
    // concerns these two units fails the test (the host's other units may warn).
    let analyze = require_program("systemd-analyze", &[], "`apt-get install systemd`").unwrap();
    let units = [
        "/usr/lib/systemd/system/deployd.service",
        "/usr/lib/systemd/system/deploy-agent.service",
    ];
    let verify = output(Command::new(&analyze).arg("verify").args(units));
    let stderr = String::from_utf8_lossy(&verify.stderr);
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("deployd.service") || l.contains("deploy-agent.service"))
        .collect();
    assert!(
        verify.status.success() && ours.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        verify.status
    );

    // Every installed file is as packaged (md5sums), deployd's unit is enabled
    // (recorded by deb-systemd-helper also without systemd running), the agent's not.
    let verified = output(Command::new("dpkg").arg("--verify").args(PACKAGES));
    assert!(
        verified.status.success() && verified.stdout.is_empty(),
        "dpkg --verify: {}",
        String::from_utf8_lossy(&verified.stdout)
    );
    let wants = Path::new("/etc/systemd/system/multi-user.target.wants");
    assert!(wants.join("deployd.service").is_symlink());
    assert!(!wants.join("deploy-agent.service").exists());

    // What postinst made: users, state dirs, the config readable by the service's group only.
    assert_eq!(owner_and_mode("/var/lib/deployd"), "deployd:deployd 750");
    assert_eq!(
        owner_and_mode("/var/lib/deploy-agent"),
        "deploy-agent:deploy-agent 700"
    );
    assert_eq!(
        owner_and_mode("/etc/deployd/deployd.toml"),
        "root:deployd 640"
    );
    assert_eq!(
        owner_and_mode("/etc/deploy-agent/agent.toml"),
        "root:deploy-agent 640"
    );

    if systemd {
        run_the_unit(&addr);
    } else {
        run_with_setpriv(&addr);
    }

    // The agent's shipped config parses (unknown keys would be refused) and says what
    // is left to set.
    let agent = output(
        Command::new("setpriv")
            .args([
                "--reuid=deploy-agent",
                "--regid=deploy-agent",
                "--init-groups",
                "/usr/bin/deploy-agent",
                "--config",
                "/etc/deploy-agent/agent.toml",
            ])
            .env_clear(),
    );
    let said = String::from_utf8_lossy(&agent.stderr);
    assert_eq!(agent.status.code(), Some(2), "{said}");
    assert!(said.contains("no server"), "{said}");

    dpkg_purge();
    for gone in [
        "/usr/bin/deployd",
        "/usr/bin/deployctl",
        "/usr/bin/deploy-agent",
        "/var/lib/deployd",
        "/var/lib/deploy-agent",
        "/etc/deployd",
        "/etc/deploy-agent",
        "/usr/lib/systemd/system/deployd.service",
        "/etc/systemd/system/multi-user.target.wants/deployd.service",
    ] {
        assert!(
            std::fs::symlink_metadata(gone).is_err(),
            "{gone} is left after purge"
        );
    }
    let overrides = checked(Command::new("dpkg-statoverride").arg("--list"));
    assert!(!overrides.contains("/etc/deploy"), "{overrides}");
}

/// The Maintainer of installed `pkg`.
fn installed_maintainer(pkg: &str) -> String {
    installed(pkg).unwrap_or_else(|| panic!("`{pkg}` is not installed"))
}

/// deployd under its unit as postinst started it: it serves on `addr` (the
/// drop-in's), writes its files with the unit's `UMask=0077`, and stops cleanly.
fn run_the_unit(addr: &str) {
    let journal = || {
        String::from_utf8_lossy(
            &output(Command::new("journalctl").args(["-u", "deployd", "-n", "50", "--no-pager"]))
                .stdout,
        )
        .into_owned()
    };
    // postinst started it already; a policy-rc.d may have kept it from starting.
    checked(Command::new("systemctl").args(["start", "deployd"]));
    wait_healthz_at(addr, journal);
    assert_eq!(
        owner_and_mode("/var/lib/deployd/admin-token"),
        "deployd:deployd 600"
    );
    assert_eq!(
        owner_and_mode("/var/lib/deployd/deployd.sqlite"),
        "deployd:deployd 600"
    );
    checked(Command::new("systemctl").args(["stop", "deployd"]));
    let result = checked(Command::new("systemctl").args([
        "show",
        "deployd",
        "-p",
        "Result",
        "-p",
        "ExecMainStatus",
    ]));
    assert!(
        result.contains("Result=success") && result.contains("ExecMainStatus=0"),
        "{result}\n{}",
        journal()
    );
}

/// deployd as its service user with the shipped config (listening on `addr`), started
/// by `setpriv` where there is no systemd: it serves, writes its files as its user,
/// and stops cleanly on SIGTERM.
fn run_with_setpriv(addr: &str) {
    let log = deploy_testkit::temp_dir("deploy-pkg-log-").unwrap();
    let stderr_path = log.path().join("deployd.txt");
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=deployd",
        "--regid=deployd",
        "--init-groups",
        "/usr/bin/deployd",
        "--config",
        "/etc/deployd/deployd.toml",
        "--listen",
        addr,
    ])
    .current_dir("/var/lib/deployd")
    .env_clear()
    .env("PATH", "/usr/bin:/bin")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&stderr_path).unwrap());
    let mut deployd = KillOnDrop(spawn_serving(&mut cmd, addr, &stderr_path));
    assert_eq!(
        owner_and_mode("/var/lib/deployd/admin-token"),
        "deployd:deployd 600"
    );
    // (The unit's UMask=0077 makes it 600 under systemd; this process has the test's umask.)
    assert!(
        owner_and_mode("/var/lib/deployd/deployd.sqlite").starts_with("deployd:deployd "),
        "{}",
        owner_and_mode("/var/lib/deployd/deployd.sqlite")
    );
    checked(Command::new("kill").args(["-TERM", &deployd.0.id().to_string()]));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = deployd.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "deployd ignored SIGTERM for 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "{status}: {}",
        std::fs::read_to_string(&stderr_path).unwrap()
    );
}

/// An image built by scripts/package/images.sh under a tag of its own; removed on drop.
struct Image {
    reference: String,
}

impl Image {
    /// `<prefix><name>:t<pid>` from this run's binaries, after removing the images
    /// of `<prefix><name>` that killed test processes left (their pid is gone).
    fn build(name: &str, prefix: &str) -> Self {
        let repository = format!("{prefix}{name}");
        let tags = checked(Command::new("docker").args([
            "image",
            "ls",
            "--format",
            "{{.Tag}}",
            &repository,
        ]));
        for tag in tags.split_whitespace() {
            let stale = tag
                .strip_prefix('t')
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
            if stale {
                let _ = output(Command::new("docker").args([
                    "rmi",
                    "-f",
                    &format!("{repository}:{tag}"),
                ]));
            }
        }
        let bins = bin_dir();
        let profile = bins.file_name().unwrap().to_str().unwrap().to_owned();
        let tag = format!("t{}", std::process::id());
        let printed = checked(
            Command::new("bash")
                .arg(workspace_root().join("scripts/package/images.sh"))
                .args(["--profile", &profile, "--no-build", "--bin-dir"])
                .arg(&bins)
                .args(["--image", name, "--prefix", prefix, "--tag", &tag]),
        );
        let reference = format!("{prefix}{name}:{tag}");
        assert_eq!(printed.trim(), reference);
        Self { reference }
    }

    /// Owner (numeric) and mode of `path` in the image, as `docker cp` reads it from a
    /// container made of it (not started): `drwxr-x--- 10001/10001`.
    fn owner_and_mode(&self, path: &str) -> String {
        let container = checked(Command::new("docker").args(["create", &self.reference]))
            .trim()
            .to_owned();
        let archive =
            output(Command::new("docker").args(["cp", &format!("{container}:{path}"), "-"]));
        let _ = output(Command::new("docker").args(["rm", "-v", &container]));
        assert!(
            archive.status.success(),
            "docker cp {path}: {}",
            String::from_utf8_lossy(&archive.stderr)
        );
        let mut tar = Command::new("tar")
            .args(["--numeric-owner", "-tvf", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut tar.stdin.take().unwrap(), &archive.stdout).unwrap();
        let listed = String::from_utf8(tar.wait_with_output().unwrap().stdout).unwrap();
        let first: Vec<&str> = listed
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        format!("{} {}", first[0], first[1])
    }

    /// `docker image inspect -f FORMAT`.
    fn inspect(&self, format: &str) -> String {
        checked(Command::new("docker").args(["image", "inspect", "-f", format, &self.reference]))
            .trim()
            .to_owned()
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = output(Command::new("docker").args(["rmi", "-f", &self.reference]));
    }
}

fn require_docker() {
    require_program(
        "docker",
        &["/usr/bin"],
        "Docker Engine runs on these machines (the image smoke tests need it)",
    )
    .unwrap();
}

/// `docker run -d ARGS…`: the container id.
fn docker_run(args: &[&str]) -> String {
    checked(Command::new("docker").arg("run").arg("-d").args(args))
        .trim()
        .to_owned()
}

fn docker_logs(container: &str) -> String {
    let out = output(Command::new("docker").args(["logs", container]));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits (bounded, 60 s) until `GET /healthz` answers 200 on the port `container`
/// publishes for 8080, from the host; that address.
fn wait_healthz(container: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(addr) = published_addr(container, 8080)
            && let Ok((200, _)) = http_get(&addr, "/healthz")
        {
            return addr;
        }
        assert!(
            Instant::now() < deadline,
            "{container} did not answer /healthz within 60 s: {}",
            docker_logs(container)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_deployd_image_serves_from_its_volume_and_keeps_its_data_in_a_new_container() {
    require_docker();
    let prefix = "deploy-tests-pkgimg-deployd-";
    let _cleanup = ContainerCleanup::new(prefix);
    let image = Image::build("deployd", "deploy-tests-pkgimg-");
    let commit = commit_of(&version_line(&bin_dir().join("deployd")));
    assert_eq!(
        image.inspect("{{index .Config.Labels \"org.opencontainers.image.version\"}}"),
        format!("{VERSION}+{commit}")
    );
    assert_eq!(image.inspect("{{.Config.User}}"), "10001:10001");
    assert_eq!(
        image.inspect("{{json .Config.Volumes}}"),
        r#"{"/var/lib/deployd":{}}"#
    );
    // accept_new appends to known_hosts: it is in the volume, writable by the user.
    let env = image.inspect("{{json .Config.Env}}");
    assert!(
        env.contains(r#""DEPLOYD_KNOWN_HOSTS=/var/lib/deployd/known_hosts""#),
        "{env}"
    );
    // A new volume takes the image's folder: owner and mode included.
    assert_eq!(
        image.owner_and_mode("/var/lib/deployd"),
        "drwxr-x--- 10001/10001"
    );

    let volume = format!("{prefix}data");
    let mount = format!("{volume}:/var/lib/deployd");
    let token = format!("DEPLOYD_ADMIN_TOKEN={ADMIN_TOKEN}");
    let first = format!("{prefix}1");
    let run = |name: &str| {
        docker_run(&[
            "--name",
            name,
            "-p",
            "127.0.0.1::8080",
            "-v",
            &mount,
            "-e",
            &token,
            &image.reference,
        ])
    };
    run(&first);
    let addr = wait_healthz(&first);
    let (status, version) = api_get(&addr, "/api/v1/version");
    assert_eq!(status, 200, "{version}");
    assert_eq!(version["version"], VERSION);
    assert_eq!(version["commit"], commit.as_str());
    let (status, created) = api_post(&addr, "/api/v1/environments", &json!({"name": "kept"}));
    assert_eq!(status, 201, "{created}");

    // A new container on the same volume: the database is the volume's, not the
    // container's (a `docker restart` would keep even an unmounted file).
    checked(Command::new("docker").args(["rm", "-f", &first]));
    let second = format!("{prefix}2");
    run(&second);
    let addr = wait_healthz(&second);
    let (status, kept) = api_get(&addr, "/api/v1/environments/kept");
    assert_eq!(status, 200, "{kept}\n{}", docker_logs(&second));
    assert_eq!(kept["id"], created["id"]);
}

#[test]
fn the_agent_image_registers_with_deployd_through_the_mounted_socket() {
    require_docker();
    let prefix = "deploy-tests-pkgimg-agent-";
    let _cleanup = ContainerCleanup::new(prefix);
    let image = Image::build("deploy-agent", "deploy-tests-pkgimg-");
    assert_eq!(image.inspect("{{.Config.User}}"), "10002:10002");
    assert_eq!(
        image.owner_and_mode("/var/lib/deploy-agent"),
        "drwx------ 10002/10002"
    );

    let data = deploy_testkit::temp_dir("deploy-pkg-agent-").unwrap();
    let port = free_port().unwrap();
    let server = Deployd::start(data.path(), port, &data.path().join("known_hosts"), &[]);
    let name = "pkg-image-agent";
    let token = format!(
        "DEPLOY_AGENT_BOOTSTRAP_TOKEN={}",
        bootstrap_token(&server.addr, name)
    );
    // The image's user reaches the socket through its group, as the docs say.
    let socket_gid = std::fs::metadata("/var/run/docker.sock")
        .unwrap()
        .gid()
        .to_string();
    let container = format!("{prefix}1");
    // By name: the image's /etc/nsswitch.conf and glibc resolve it (through the
    // /etc/hosts Docker gives the container).
    let url = format!("http://localhost:{port}");
    // A named volume (removed with the prefix's), not the anonymous one VOLUME would
    // make: it holds the agent's credential.
    let state = format!("{prefix}state:/var/lib/deploy-agent");
    docker_run(&[
        "--name",
        &container,
        "--network",
        "host",
        "--group-add",
        &socket_gid,
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "-v",
        &state,
        "-e",
        &token,
        &image.reference,
        "--server",
        &url,
        "--name",
        name,
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let agent = loop {
        if let Some(a) = agents(&server.addr)
            .into_iter()
            .find(|a| a["name"] == name && a["active"] == true)
        {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "agent {name} not active within 60 s: {}",
            docker_logs(&container)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(agent["capabilities"], json!(["docker"]), "{agent:#}");
}
