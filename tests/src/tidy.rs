//! Tidy rules over `cargo metadata`, the source tree and docs/ARCHITECTURE.md: layering, workspace-only dependency versions, `//!` headers, and paths and crates the architecture document names.
//!
//! Each rule is a plain function over parsed data returning violations, so the
//! rules are unit-tested on crafted samples and run for real by the
//! `scenarios::tidy` test on this workspace.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Crates that must stay pure: no I/O runtime, database, network or Docker client.
pub const PURE_CRATES: &[&str] = &["deploy-core", "deploy-artifacts", "deploy-rollback"];

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

/// Top-level folders and files of the workspace that a path in docs/ARCHITECTURE.md
/// may start with (see [`architecture_references`]).
pub const DOC_PATH_ROOTS: &[&str] = &[
    "crates/",
    "bins/",
    "tests/",
    "xtask/",
    "build/",
    "docs/",
    "scripts/",
    "fuzz/",
    ".cargo/",
    ".config/",
    "Cargo.toml",
    "Cargo.lock",
    "deny.toml",
    "clippy.toml",
    "rust-toolchain.toml",
    "README.md",
];

/// Rule: every path and crate that docs/ARCHITECTURE.md names in backticks exists.
///
/// Only inline code spans are read (fenced blocks are skipped). A span is:
///
/// - a **crate name** when it is exactly `deployd`, `deployctl`, `xtask` or
///   `deploy-…` (lowercase letters, digits, `-`), or a Rust path whose first
///   segment is `deploy_…` (`deploy_exec::labels` names `deploy-exec`; a bare
///   `deploy_new_job` is a name of something else): it must be in `crates`;
/// - a **path** when it has no whitespace and contains `/` or ends in `.rs`, `.md`,
///   `.toml` or `.sql`. Spans holding `<`, `>`, `{`, `}`, `*`, `$`, `~`, `:`, `|`,
///   `…` or `,`, or starting with `/` or `.` followed by `/` (placeholders, globs,
///   URLs, `/api/v1/…` routes, `<data dir>/secrets.key`, paths on a target host), are
///   not paths of this workspace and are left alone. A path is resolved, in order:
///   1. from the workspace root when it starts with one of [`DOC_PATH_ROOTS`];
///   2. as `crates/<p>` or `bins/<p>` when its first segment is a crate name
///      (`deploy-store/src/sql.rs`); that crate must exist too;
///   3. inside the crate the current section is about, when the nearest heading
///      names `crates/<c>`, `bins/<c>`, `tests/` or `xtask/` in backticks:
///      `<dir>/src/<p>`, then `<dir>/<p>` (so a codemap paragraph may say `sql.rs`);
///   4. otherwise it is a violation: write it from the workspace root.
///
/// `exists` answers for a path relative to the workspace root; `crates` holds every
/// package name that may be named.
pub fn architecture_references(
    markdown: &str,
    exists: impl Fn(&str) -> bool,
    crates: &BTreeSet<String>,
) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut report = |line: usize, detail: String| {
        violations.push(Violation {
            rule: "doc-references",
            detail: format!("docs/ARCHITECTURE.md:{line}: {detail}"),
        });
    };
    let mut context: Option<String> = None;
    let mut fenced = false;
    for (index, line) in markdown.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let spans = code_spans(line);
        if trimmed.starts_with('#') {
            context = spans.iter().find_map(|s| section_dir(s));
        }
        for span in spans {
            if let Some(name) = crate_name(span) {
                if !crates.contains(&name) {
                    report(
                        number,
                        format!(
                            "`{span}` names crate `{name}`, which is not a package of this workspace"
                        ),
                    );
                }
                continue;
            }
            if !is_workspace_path(span) {
                continue;
            }
            let candidates = if DOC_PATH_ROOTS.iter().any(|r| span.starts_with(r)) {
                vec![span.to_owned()]
            } else if let Some(name) = span.split('/').next().and_then(crate_name) {
                if !crates.contains(&name) {
                    report(
                        number,
                        format!(
                            "`{span}` starts with crate `{name}`, which is not a package of this workspace"
                        ),
                    );
                    continue;
                }
                vec![format!("crates/{span}"), format!("bins/{span}")]
            } else if let Some(dir) = &context {
                vec![format!("{dir}src/{span}"), format!("{dir}{span}")]
            } else {
                report(
                    number,
                    format!(
                        "`{span}` is a path outside any crate's section; write it from the workspace root (crates/…, docs/…)"
                    ),
                );
                continue;
            };
            if !candidates.iter().any(|c| exists(c)) {
                report(
                    number,
                    format!(
                        "`{span}` does not exist (looked for {})",
                        candidates.join(", ")
                    ),
                );
            }
        }
    }
    violations
}

/// The inline code spans of one line: text between matching runs of backticks.
fn code_spans(line: &str) -> Vec<&str> {
    let mut spans = Vec::new();
    let mut rest = line;
    while let Some(open) = rest.find('`') {
        let after = &rest[open..];
        let ticks = after.len() - after.trim_start_matches('`').len();
        let body = &after[ticks..];
        let fence = &after[..ticks];
        let Some(close) = body.find(fence) else {
            break;
        };
        spans.push(body[..close].trim());
        rest = &body[close + ticks..];
    }
    spans
}

/// The crate a span names: `deployd`, `deployctl`, `xtask`, `deploy-…`, or the
/// package behind a `deploy_…` Rust path.
fn crate_name(span: &str) -> Option<String> {
    let plain = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if matches!(span, "deployd" | "deployctl" | "xtask") {
        return Some(span.to_owned());
    }
    if span.starts_with("deploy-") && plain(span) && !span.ends_with('-') {
        return Some(span.to_owned());
    }
    let (head, _) = span.split_once("::")?;
    let rust_ident = head
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    (head.starts_with("deploy_") && rust_ident).then(|| head.replace('_', "-"))
}

/// Whether a span is meant as a path of this workspace (see [`architecture_references`]).
fn is_workspace_path(span: &str) -> bool {
    let looks_like_path = span.contains('/')
        || [".rs", ".md", ".toml", ".sql"]
            .iter()
            .any(|e| span.ends_with(e));
    let placeholder = span
        .chars()
        .any(|c| c.is_whitespace() || "<>{}*$~:|…,".contains(c));
    looks_like_path
        && !placeholder
        && !span.starts_with('/')
        && !span.starts_with("./")
        && !span.starts_with("../")
}

/// The folder a heading's span puts the section in, with a trailing `/`.
fn section_dir(span: &str) -> Option<String> {
    let dir = span.trim_end_matches('/');
    let mut parts = dir.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("crates" | "bins"), Some(name), None) if !name.is_empty() => Some(format!("{dir}/")),
        (Some("tests" | "xtask"), None, None) => Some(format!("{dir}/")),
        _ => None,
    }
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
