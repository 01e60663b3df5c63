//! Basic fixture helpers: free loopback ports, temp dirs, finding required programs on PATH, and a clean child `cargo`.

use std::net::TcpListener;
use std::path::PathBuf;

use crate::errors::TestkitError;

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, release it).
pub fn free_port() -> Result<u16, TestkitError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(TestkitError::io("bind 127.0.0.1:0"))?;
    let port = listener
        .local_addr()
        .map_err(TestkitError::io("read the bound address"))?
        .port();
    Ok(port)
}

/// Fails, naming the address, when `ip:port` cannot be bound (another process listens
/// there); `what` is the peer about to be started on it. For fixtures that must listen
/// on a fixed address: a taken port is then reported before the peer is started, not
/// discovered later as a peer that answers but is not ours.
pub(crate) fn ensure_port_free(ip: &str, port: u16, what: &str) -> Result<(), TestkitError> {
    TcpListener::bind((ip, port))
        .map(drop)
        .map_err(TestkitError::io(format!(
            "bind {ip}:{port} for {what} (`ss -ltnp 'sport = :{port}'` names a process \
             listening there)"
        )))
}

/// A fresh temporary directory, removed when dropped.
pub fn temp_dir(prefix: &str) -> Result<tempfile::TempDir, TestkitError> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(TestkitError::io(format!("create a temp dir `{prefix}*`")))
}

/// The full path of `program`, searched on PATH and in the given extra directories.
///
/// `hint` says how to get it (e.g. "`apt-get install nginx` (scripts/peers/artifacts.sh does)").
pub fn require_program(
    program: &str,
    extra_dirs: &[&str],
    hint: &str,
) -> Result<PathBuf, TestkitError> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path_var).chain(extra_dirs.iter().map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(TestkitError::MissingProgram {
        program: program.to_owned(),
        hint: hint.to_owned(),
    })
}

/// `cargo` (the one running us, else the one on PATH) with `args`, without the
/// package variables the calling cargo gave this process. Some build scripts
/// (ring's) rerun when one of them changes, so a child `cargo build` that kept
/// them would rebuild ring and everything above it after every `cargo test`.
pub fn cargo_command<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Command {
    const INHERITED: [&str; 5] = [
        "CARGO_CRATE_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_BIN_NAME",
        "CARGO_TARGET_TMPDIR",
        "OUT_DIR",
    ];
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command.args(args);
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || INHERITED.contains(&k.as_ref())
        {
            command.env_remove(&key);
        }
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_bindable() {
        let port = free_port().unwrap();
        assert!(TcpListener::bind(("127.0.0.1", port)).is_ok());
    }

    #[test]
    fn finds_sh_and_names_what_is_missing() {
        assert!(require_program("sh", &[], "it is always there").is_ok());
        let err = require_program(
            "no-such-program-xyz",
            &["/nonexistent"],
            "`apt-get install xyz`",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "program `no-such-program-xyz` is not installed; install it with `apt-get install xyz`"
        );
    }

    #[test]
    fn temp_dirs_are_removed_on_drop() {
        let dir = temp_dir("testkit-").unwrap();
        let path = dir.path().to_path_buf();
        assert!(path.is_dir());
        drop(dir);
        assert!(!path.exists());
    }
}
