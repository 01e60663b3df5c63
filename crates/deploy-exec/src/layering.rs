//! A tidy check: each transport (ssh, winrm, api, agent) uses the contract modules only, never another transport, and the contract uses none of them.

use std::path::{Path, PathBuf};

const TRANSPORTS: [&str; 4] = ["ssh", "winrm", "api", "agent"];
/// The contract every transport builds on.
const CONTRACT: [&str; 6] = [
    "executor.rs",
    "errors.rs",
    "logs.rs",
    "quote.rs",
    "registry.rs",
    "secrets.rs",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The first path segments of the entries of the `{…}` group that `text` starts with
/// (`{ssh::X, winrm}` gives `ssh`, `winrm`), over several lines if need be.
fn group_heads(text: &str) -> Vec<&str> {
    let mut heads = Vec::new();
    let (mut depth, mut start) = (0usize, 1usize);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' | ',' if depth == 1 => {
                heads.push(text[start..i].trim().split("::").next().unwrap_or(""));
                start = i + 1;
                if c == '}' {
                    break;
                }
            }
            '}' => depth -= 1,
            _ => {}
        }
    }
    heads
}

/// The lines of `text` that name transport `other` by a path from the crate root
/// (`crate::other::…`, `crate::{other::…}`, `deploy_exec::other::…`).
fn uses_of(text: &str, other: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for root in ["crate::", "deploy_exec::"] {
        for (at, _) in text.match_indices(root) {
            let rest = &text[at + root.len()..];
            let head = rest
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
                .unwrap_or("");
            let named =
                head == other || (rest.starts_with('{') && group_heads(rest).contains(&other));
            if named {
                let line = text[..at].matches('\n').count();
                lines.push(format!(
                    "{}: {}",
                    line + 1,
                    text.lines().nth(line).unwrap_or("").trim()
                ));
            }
        }
    }
    lines
}

/// `(file, line)` for each use in `files` of a transport other than `own`.
fn offences(files: &[PathBuf], own: Option<&str>) -> Vec<String> {
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        for other in TRANSPORTS.iter().filter(|t| Some(**t) != own) {
            for hit in uses_of(&text, other) {
                found.push(format!("{}:{hit}", file.display()));
            }
        }
        // `super::super::…` climbs out of the transport's tree.
        if own.is_some() {
            for (i, line) in text.lines().enumerate() {
                if line.contains("super::super::") {
                    found.push(format!("{}:{}: {}", file.display(), i + 1, line.trim()));
                }
            }
        }
    }
    found
}

#[test]
fn transports_depend_on_the_contract_and_not_on_each_other() {
    let mut found = Vec::new();
    for transport in TRANSPORTS {
        let mut files = Vec::new();
        rust_files(&src().join(transport), &mut files);
        assert!(!files.is_empty(), "no source files under src/{transport}");
        found.extend(offences(&files, Some(transport)));
    }
    let contract: Vec<PathBuf> = CONTRACT.iter().map(|f| src().join(f)).collect();
    found.extend(offences(&contract, None));
    assert!(
        found.is_empty(),
        "move what two transports share into the contract modules (or deploy-core):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_a_use_of_another_transport() {
    assert_eq!(
        uses_of(
            "use crate::ssh::quote;\nuse crate::errors::ExecError;",
            "ssh"
        ),
        ["1: use crate::ssh::quote;"]
    );
    assert_eq!(
        uses_of("use crate::{ssh::X, winrm};", "winrm"),
        ["1: use crate::{ssh::X, winrm};"]
    );
    assert_eq!(
        uses_of(
            "use crate::{\n    errors::E,\n    agent::{hub::A, relay},\n};",
            "agent"
        ),
        ["1: use crate::{"]
    );
    assert!(
        uses_of(
            "use crate::sshd::X;\nuse crate::{errors::{ssh}, logs};",
            "ssh"
        )
        .is_empty()
    );
}
