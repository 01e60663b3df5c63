//! Tidy rules over `cargo metadata` and the source tree: layering, workspace-only dependency versions, and `//!` headers.
//!
//! Each rule is a plain function over parsed data returning violations, so the
//! rules are unit-tested on crafted samples and run for real by the
//! `scenarios::tidy` test on this workspace.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Crates that must stay pure: no I/O runtime, database, network or Docker client.
pub const PURE_CRATES: &[&str] = &["deploy-core", "deploy-artifacts"];

/// Crates a pure crate must not depend on, directly or through another crate.
pub const BANNED_IN_PURE: &[&str] = &["tokio", "sqlx", "reqwest", "russh", "bollard", "axum"];

/// One broken rule, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub rule: &'static str,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.rule, self.detail)
    }
}

/// Why the tidy inputs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TidyError {
    #[error("cargo metadata output is not the expected JSON: {0}")]
    Metadata(#[from] serde_json::Error),
    #[error("manifest `{path}` is not valid TOML: {source}")]
    Manifest {
        path: String,
        source: toml::de::Error,
    },
    #[error("cannot read `{path}`: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The subset of `cargo metadata --format-version 1` the rules read.
#[derive(Debug, Deserialize)]
pub struct Metadata {
    pub packages: Vec<Package>,
    pub workspace_members: Vec<String>,
    pub workspace_root: PathBuf,
    pub resolve: Option<Resolve>,
}

#[derive(Debug, Deserialize)]
pub struct Package {
    pub id: String,
    pub name: String,
    pub manifest_path: PathBuf,
    pub dependencies: Vec<Dependency>,
}

#[derive(Debug, Deserialize)]
pub struct Dependency {
    pub name: String,
    /// Set for path dependencies.
    #[serde(default)]
    pub path: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
pub struct Resolve {
    pub nodes: Vec<Node>,
}

#[derive(Debug, Deserialize)]
pub struct Node {
    pub id: String,
    pub deps: Vec<NodeDep>,
}

#[derive(Debug, Deserialize)]
pub struct NodeDep {
    pub pkg: String,
    pub dep_kinds: Vec<DepKind>,
}

#[derive(Debug, Deserialize)]
pub struct DepKind {
    /// `null` for normal dependencies, `"dev"` or `"build"` otherwise.
    pub kind: Option<String>,
}

impl Metadata {
    /// Parses the JSON printed by `cargo metadata --format-version 1`.
    pub fn parse(json: &str) -> Result<Self, TidyError> {
        Ok(serde_json::from_str(json)?)
    }

    fn package(&self, id: &str) -> Option<&Package> {
        self.packages.iter().find(|p| p.id == id)
    }

    /// The workspace's own packages.
    pub fn members(&self) -> impl Iterator<Item = &Package> {
        self.packages
            .iter()
            .filter(|p| self.workspace_members.contains(&p.id))
    }
}

/// Rule: a pure crate reaches none of `banned` through normal or build dependencies.
/// The violation shows the chain, e.g. `deploy-core -> helper -> tokio`.
pub fn pure_crate_violations(meta: &Metadata, pure: &[&str], banned: &[&str]) -> Vec<Violation> {
    let Some(resolve) = &meta.resolve else {
        return vec![Violation {
            rule: "layering",
            detail: "cargo metadata has no resolve graph (was --no-deps used?)".to_owned(),
        }];
    };
    let edges: BTreeMap<&str, Vec<&str>> = resolve
        .nodes
        .iter()
        .map(|n| {
            let runtime = n
                .deps
                .iter()
                .filter(|d| d.dep_kinds.iter().any(|k| k.kind.as_deref() != Some("dev")))
                .map(|d| d.pkg.as_str())
                .collect();
            (n.id.as_str(), runtime)
        })
        .collect();
    let name_of = |id: &str| {
        meta.package(id)
            .map_or_else(|| id.to_owned(), |p| p.name.clone())
    };
    let mut violations = Vec::new();
    for root in meta.members().filter(|p| pure.contains(&p.name.as_str())) {
        // Breadth-first, remembering each package's parent to print the chain.
        let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = VecDeque::from([root.id.as_str()]);
        let mut seen = BTreeSet::from([root.id.as_str()]);
        while let Some(id) = queue.pop_front() {
            for &dep in edges.get(id).into_iter().flatten() {
                if !seen.insert(dep) {
                    continue;
                }
                parent.insert(dep, id);
                if banned.contains(&name_of(dep).as_str()) {
                    let mut chain = vec![name_of(dep)];
                    let mut at = dep;
                    while let Some(&p) = parent.get(at) {
                        chain.push(name_of(p));
                        at = p;
                    }
                    chain.reverse();
                    violations.push(Violation {
                        rule: "layering",
                        detail: format!(
                            "pure crate `{}` depends on `{}`: {}",
                            root.name,
                            name_of(dep),
                            chain.join(" -> ")
                        ),
                    });
                }
                queue.push_back(dep);
            }
        }
    }
    violations
}

/// Rule: nothing depends on a package under `<workspace>/bins/`.
pub fn bins_dependency_violations(meta: &Metadata) -> Vec<Violation> {
    let bins = meta.workspace_root.join("bins");
    meta.members()
        .flat_map(|p| p.dependencies.iter().map(move |d| (p, d)))
        .filter(|(_, d)| d.path.as_ref().is_some_and(|path| path.starts_with(&bins)))
        .map(|(p, d)| Violation {
            rule: "layering",
            detail: format!(
                "`{}` depends on `{}`, a binary crate under bins/",
                p.name, d.name
            ),
        })
        .collect()
}

/// Rule: every dependency of a member manifest is `{ workspace = true, ... }`, so
/// versions live once, in the root `[workspace.dependencies]`.
pub fn manifest_violations(
    manifest_path: &str,
    manifest: &str,
) -> Result<Vec<Violation>, TidyError> {
    let doc: toml::Table = toml::from_str(manifest).map_err(|source| TidyError::Manifest {
        path: manifest_path.to_owned(),
        source,
    })?;
    let mut tables: Vec<(String, &toml::Table)> = Vec::new();
    for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
        if let Some(t) = doc.get(section).and_then(toml::Value::as_table) {
            tables.push((section.to_owned(), t));
        }
    }
    if let Some(targets) = doc.get("target").and_then(toml::Value::as_table) {
        for (cfg, body) in targets {
            for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
                if let Some(t) = body.get(section).and_then(toml::Value::as_table) {
                    tables.push((format!("target.{cfg}.{section}"), t));
                }
            }
        }
    }
    let mut violations = Vec::new();
    for (section, table) in tables {
        for (dep, spec) in table {
            let inherits = spec
                .as_table()
                .and_then(|t| t.get("workspace"))
                .and_then(toml::Value::as_bool)
                == Some(true);
            if !inherits {
                violations.push(Violation {
                    rule: "workspace-deps",
                    detail: format!(
                        "{manifest_path}: [{section}] `{dep}` declares `{spec}`; expected `{{ workspace = true }}` with the version in the root [workspace.dependencies]"
                    ),
                });
            }
        }
    }
    Ok(violations)
}

/// Rule: a Rust source file starts with a `//!` line saying what it holds.
pub fn doc_line_violation(path: &str, source: &str) -> Option<Violation> {
    let first = source.lines().next().unwrap_or_default();
    (!first.starts_with("//!")).then(|| Violation {
        rule: "doc-line",
        detail: format!(
            "{path}: first line is `{first}`; expected a `//!` line saying what the file holds"
        ),
    })
}

/// Every `.rs` file below `dir`, skipping build output and hidden folders.
pub fn rust_files(dir: &Path) -> Result<Vec<PathBuf>, TidyError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| TidyError::Io {
            path: d.display().to_string(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| TidyError::Io {
                path: d.display().to_string(),
                source,
            })?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                if !(name.starts_with('.') || name == "target") {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests;
