//! Unit tests of the tidy rules on crafted metadata, manifests and sources: each rule must fail when broken.

use super::*;

/// A tiny workspace: deploy-core reaches tokio through `helper`; deploy-engine
/// depends on the `deployd` binary crate; proptest (dev-only) pulls `tokio-dev-only`
/// which is fine because dev dependencies do not ship.
const SAMPLE: &str = r#"{
  "workspace_root": "/ws",
  "workspace_members": ["core-id", "engine-id", "deployd-id"],
  "packages": [
    {"id": "core-id", "name": "deploy-core", "manifest_path": "/ws/crates/deploy-core/Cargo.toml",
     "dependencies": [{"name": "helper"}, {"name": "proptest"}]},
    {"id": "engine-id", "name": "deploy-engine", "manifest_path": "/ws/crates/deploy-engine/Cargo.toml",
     "dependencies": [{"name": "deployd", "path": "/ws/bins/deployd"}, {"name": "deploy-core", "path": "/ws/crates/deploy-core"}]},
    {"id": "deployd-id", "name": "deployd", "manifest_path": "/ws/bins/deployd/Cargo.toml", "dependencies": []},
    {"id": "helper-id", "name": "helper", "manifest_path": "/reg/helper/Cargo.toml", "dependencies": []},
    {"id": "tokio-id", "name": "tokio", "manifest_path": "/reg/tokio/Cargo.toml", "dependencies": []},
    {"id": "proptest-id", "name": "proptest", "manifest_path": "/reg/proptest/Cargo.toml", "dependencies": []},
    {"id": "axum-id", "name": "axum", "manifest_path": "/reg/axum/Cargo.toml", "dependencies": []}
  ],
  "resolve": {"nodes": [
    {"id": "core-id", "deps": [
       {"pkg": "helper-id", "dep_kinds": [{"kind": null}]},
       {"pkg": "proptest-id", "dep_kinds": [{"kind": "dev"}]}]},
    {"id": "helper-id", "deps": [{"pkg": "tokio-id", "dep_kinds": [{"kind": null}]}]},
    {"id": "proptest-id", "deps": [{"pkg": "axum-id", "dep_kinds": [{"kind": null}]}]},
    {"id": "engine-id", "deps": [{"pkg": "deployd-id", "dep_kinds": [{"kind": null}]}, {"pkg": "core-id", "dep_kinds": [{"kind": null}]}]},
    {"id": "deployd-id", "deps": []},
    {"id": "tokio-id", "deps": []},
    {"id": "axum-id", "deps": []}
  ]}
}"#;

#[test]
fn a_pure_crate_reaching_tokio_transitively_is_reported_with_the_chain() {
    let meta = Metadata::parse(SAMPLE).unwrap();
    let v = pure_crate_violations(&meta, PURE_CRATES, BANNED_IN_PURE);
    assert_eq!(
        v,
        vec![Violation {
            rule: "layering",
            detail: "pure crate `deploy-core` depends on `tokio`: deploy-core -> helper -> tokio"
                .to_owned()
        }],
        "axum behind a dev-dependency must not count"
    );
}

#[test]
fn the_pure_rule_passes_on_a_clean_graph() {
    let clean = SAMPLE.replace(r#"{"pkg": "tokio-id", "dep_kinds": [{"kind": null}]}"#, "");
    let meta = Metadata::parse(&clean).unwrap();
    assert_eq!(
        pure_crate_violations(&meta, PURE_CRATES, BANNED_IN_PURE),
        vec![]
    );
}

#[test]
fn depending_on_a_bin_crate_is_reported() {
    let meta = Metadata::parse(SAMPLE).unwrap();
    let v = bins_dependency_violations(&meta);
    assert_eq!(v.len(), 1);
    assert_eq!(
        v[0].detail,
        "`deploy-engine` depends on `deployd`, a binary crate under bins/"
    );
}

#[test]
fn a_member_declaring_a_version_is_reported() {
    let manifest = r#"
[package]
name = "x"
[dependencies]
serde = { workspace = true, features = ["derive"] }
tokio = "1"
[dev-dependencies]
proptest = { version = "1" }
[target.'cfg(unix)'.dependencies]
libc = { workspace = true }
nix = { path = "../nix" }
"#;
    let v = manifest_violations("crates/x/Cargo.toml", manifest).unwrap();
    let names: Vec<&str> = v
        .iter()
        .map(|v| v.detail.split('`').nth(1).unwrap_or_default())
        .collect();
    assert_eq!(names, vec!["tokio", "proptest", "nix"]);
    assert!(
        v[0].detail
            .contains("[dependencies] `tokio` declares `\"1\"`"),
        "{}",
        v[0].detail
    );
    assert!(
        manifest_violations("m", "[dependencies]\nserde = { workspace = true }")
            .unwrap()
            .is_empty()
    );
    assert!(manifest_violations("m", "not = = toml").is_err());
}

#[test]
fn a_file_without_a_doc_line_is_reported() {
    assert_eq!(
        doc_line_violation("a.rs", "//! Holds things.\nfn x() {}"),
        None
    );
    let v = doc_line_violation("b.rs", "use std::io;\n//! late").unwrap();
    assert_eq!(
        v.detail,
        "b.rs: first line is `use std::io;`; expected a `//!` line saying what the file holds"
    );
    assert!(doc_line_violation("c.rs", "").is_some());
    assert!(doc_line_violation("d.rs", "/// item doc\n").is_some());
}
