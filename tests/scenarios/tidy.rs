//! Runs the tidy rules on this workspace: layering, workspace-only dependency versions, `//!` headers, and the paths and crates docs/ARCHITECTURE.md names.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use deploy_tests::tidy::{self, Metadata, Violation};

/// The workspace's root folder (the parent of the `tests/` package).
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn metadata() -> Metadata {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Metadata::parse(&String::from_utf8(out.stdout).unwrap()).unwrap()
}

fn assert_clean(violations: Vec<Violation>) {
    let report: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert!(report.is_empty(), "tidy violations:\n{}", report.join("\n"));
}

#[test]
fn pure_crates_do_not_reach_io_crates() {
    let meta = metadata();
    let pure_present = meta
        .members()
        .filter(|p| tidy::PURE_CRATES.contains(&p.name.as_str()))
        .count();
    assert!(pure_present >= 1, "deploy-core must be a workspace member");
    assert_clean(tidy::pure_crate_violations(
        &meta,
        tidy::PURE_CRATES,
        tidy::BANNED_IN_PURE,
    ));
}

#[test]
fn nothing_depends_on_bins() {
    assert_clean(tidy::bins_dependency_violations(&metadata()));
}

#[test]
fn members_take_versions_from_the_workspace() {
    let meta = metadata();
    let mut violations = Vec::new();
    let mut checked = 0;
    for p in meta.members() {
        let text = std::fs::read_to_string(&p.manifest_path).unwrap();
        let shown = p
            .manifest_path
            .strip_prefix(workspace_root())
            .unwrap_or(&p.manifest_path);
        violations.extend(tidy::manifest_violations(&shown.display().to_string(), &text).unwrap());
        checked += 1;
    }
    assert!(
        checked >= 2,
        "expected deploy-core and deploy-tests at least, checked {checked}"
    );
    assert_clean(violations);
}

#[test]
fn every_rust_file_starts_with_a_doc_line() {
    let root = workspace_root();
    let mut violations = Vec::new();
    let mut checked = 0;
    for dir in ["crates", "bins", "build", "tests", "xtask", "fuzz"] {
        let dir = root.join(dir);
        if !dir.exists() {
            continue;
        }
        for file in tidy::rust_files(&dir).unwrap() {
            let source = std::fs::read_to_string(&file).unwrap();
            let shown = file.strip_prefix(&root).unwrap().display().to_string();
            violations.extend(tidy::doc_line_violation(&shown, &source));
            checked += 1;
        }
    }
    assert!(
        checked > 20,
        "found only {checked} .rs files; is the walk broken?"
    );
    assert_clean(violations);
}

#[test]
fn architecture_names_only_paths_and_crates_that_exist() {
    let root = workspace_root();
    let mut crates: BTreeSet<String> = metadata().members().map(|p| p.name.clone()).collect();
    // fuzz/ is its own workspace, outside `cargo metadata` of this one.
    let fuzz: toml::Table =
        toml::from_str(&std::fs::read_to_string(root.join("fuzz/Cargo.toml")).unwrap()).unwrap();
    if let Some(name) = fuzz
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(toml::Value::as_str)
    {
        crates.insert(name.to_owned());
    }
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    assert!(
        doc.matches('`').count() > 100,
        "docs/ARCHITECTURE.md names almost nothing; is it the right file?"
    );
    assert_clean(tidy::architecture_references(
        &doc,
        |path| root.join(path).exists(),
        &crates,
    ));
}
