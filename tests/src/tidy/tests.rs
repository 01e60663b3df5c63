//! Unit tests of the tidy rules on crafted metadata, manifests and sources: each rule must fail when broken.

use std::collections::BTreeSet;

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

/// The files of a tiny workspace for [`architecture_references`]: a listed file, or a
/// folder holding one (with or without its trailing `/`).
fn sample_exists(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    [
        "crates/deploy-store/src/sql.rs",
        "crates/deploy-store/migrations",
        "crates/deploy-exec/src/ssh/files.rs",
        "bins/deployd/src/identity.rs",
        "tests/scenarios/tidy.rs",
        "tests/src/tidy.rs",
        "docs/rollout.md",
        "Cargo.toml",
        "scripts/peers/ssh.sh",
    ]
    .iter()
    .any(|f| *f == path || f.starts_with(&format!("{path}/")))
}

fn sample_crates() -> BTreeSet<String> {
    [
        "deploy-store",
        "deploy-exec",
        "deployd",
        "deploy-tests",
        "xtask",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

fn reported(markdown: &str) -> Vec<String> {
    architecture_references(markdown, sample_exists, &sample_crates())
        .into_iter()
        .map(|v| {
            assert_eq!(v.rule, "doc-references");
            v.detail
        })
        .collect()
}

#[test]
fn existing_paths_and_crates_pass() {
    let doc = "\
# Architecture

See `docs/rollout.md`, `Cargo.toml`, `scripts/peers/ssh.sh` and `tests/scenarios/tidy.rs`.
`deploy-store/src/sql.rs` and `deployd/src/identity.rs` are module paths; `deploy_exec::ssh` a Rust path.

### `crates/deploy-store`

`sql.rs` holds the SQL; `migrations/` the schema. `deploy-exec` is named too.

### `crates/deploy-exec`

`ssh/files.rs`; ``a `tricky` span`` is not a path.

### `tests/`

`scenarios/tidy.rs` and `src/tidy.rs`.
";
    assert_eq!(reported(doc), Vec::<String>::new());
}

#[test]
fn placeholders_urls_routes_and_host_paths_are_not_workspace_paths() {
    let doc = "\
# Not paths
`<data dir>/secrets.key`, `/api/v1/jobs/{id}/events`, `http://127.0.0.1:8080`,
`~/.ssh/known_hosts`, `/var/run/docker.sock`, `./deployd-data/deployd.sqlite`,
`scripts/peers/*.sh`, `env:NAME`, `file:/path`, `docker compose up`, `rolling:<n>`,
`$XDG_CONFIG_HOME/deployctl/config.toml`, `deploy.nginx.include`, `x-generated`.

```
crates/made-up/src/lib.rs   (inside a fence: not read)
```
";
    assert_eq!(reported(doc), Vec::<String>::new());
}

#[test]
fn missing_paths_and_unknown_crates_are_reported_with_their_line() {
    let doc = "\
# Architecture
`crates/deploy-store/src/gone.rs` moved.
`deploy-stor` is misspelt, and so is `deploy_stor::Store`.
`deploy-nope/src/lib.rs` names a crate that does not exist.

### `crates/deploy-store`

`missing.rs` is not in the crate.

## Elsewhere

`sql.rs` outside any crate's section cannot be resolved.
";
    assert_eq!(
        reported(doc),
        vec![
            "docs/ARCHITECTURE.md:2: `crates/deploy-store/src/gone.rs` does not exist (looked for crates/deploy-store/src/gone.rs)",
            "docs/ARCHITECTURE.md:3: `deploy-stor` names crate `deploy-stor`, which is not a package of this workspace",
            "docs/ARCHITECTURE.md:3: `deploy_stor::Store` names crate `deploy-stor`, which is not a package of this workspace",
            "docs/ARCHITECTURE.md:4: `deploy-nope/src/lib.rs` starts with crate `deploy-nope`, which is not a package of this workspace",
            "docs/ARCHITECTURE.md:8: `missing.rs` does not exist (looked for crates/deploy-store/src/missing.rs, crates/deploy-store/missing.rs)",
            "docs/ARCHITECTURE.md:12: `sql.rs` is a path outside any crate's section; write it from the workspace root (crates/…, docs/…)",
        ]
    );
}

#[test]
fn a_heading_without_a_crate_ends_the_crate_section() {
    let doc = "### `crates/deploy-store`\n`sql.rs`\n### Invariants\n`sql.rs`\n";
    assert_eq!(reported(doc).len(), 1, "{:?}", reported(doc));
    assert!(reported(doc)[0].starts_with("docs/ARCHITECTURE.md:4:"));
}

#[test]
fn only_rust_paths_name_crates_with_underscores() {
    assert_eq!(
        reported("`deploy_new_job` is a channel; `deploy_store::Store` a path.\n"),
        Vec::<String>::new()
    );
    assert_eq!(reported("`deploy_gone::Thing`\n").len(), 1);
}
