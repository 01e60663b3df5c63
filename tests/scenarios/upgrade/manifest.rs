//! The fixture's `SHA256SUMS` (written by `make-fixture.sh`) checked before the test uses the fixture: a changed fixture fails by name, not as a puzzling upgrade failure.
//!
//! The PostgreSQL fixture (`postgres/`, written by `make-fixture.sh --postgres`) has a
//! `SHA256SUMS` of its own, so regenerating either fixture leaves the other's manifest
//! as it was; the top-level check skips a subfolder that holds a manifest.
//!
//! The database's data sits in its WAL; opening the committed file in place (`sqlite3
//! tests/fixtures/upgrade/data/deployd.sqlite`, a deployd pointed at the folder) moves
//! it into the main file and empties the WAL without a word, and the fixture would no
//! longer be what the old build left.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use sha2::{Digest, Sha256};

/// The manifest, in `sha256sum` format (`sha256sum -c SHA256SUMS` in the folder checks it too).
pub(crate) const MANIFEST: &str = "SHA256SUMS";
/// Files of the fixture folder that are not fixture data.
const NOT_DATA: [&str; 3] = [MANIFEST, "README.md", "make-fixture.sh"];

/// Panics naming every file of `root` that is missing, changed or not in the manifest.
pub(crate) fn check(root: &Path) {
    let problems = problems(root);
    assert!(
        problems.is_empty(),
        "the fixture changed ({}); regenerate it with tests/fixtures/upgrade/make-fixture.sh \
         (see its header), or restore it with `git checkout -- tests/fixtures/upgrade`. \
         Never open data/deployd.sqlite in place: sqlite3 checkpoints its WAL into it",
        problems.join("; ")
    );
}

/// Every file of `root` that is missing, changed or not in the manifest, in words.
fn problems(root: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(root.join(MANIFEST))
        .unwrap_or_else(|e| panic!("read {}/{MANIFEST}: {e}", root.display()));
    let mut problems = Vec::new();
    let mut listed = BTreeSet::new();
    for line in text.lines() {
        let Some((sum, name)) = line.split_once("  ") else {
            panic!("{MANIFEST}: `{line}` is not `<sha256>  <path>`");
        };
        listed.insert(name.to_owned());
        match std::fs::read(root.join(name)) {
            Ok(bytes) if hex(&Sha256::digest(&bytes)) == sum => {}
            Ok(_) => problems.push(format!("{name} changed")),
            Err(e) => problems.push(format!("{name}: {e}")),
        }
    }
    let mut present = Vec::new();
    files(root, "", &mut present);
    for name in present {
        if !listed.contains(&name) && !NOT_DATA.contains(&name.as_str()) {
            problems.push(format!("{name} is not in {MANIFEST}"));
        }
    }
    problems
}

/// The regular files under `dir`, as paths relative to the root (`prefix` is `dir`'s).
/// A subfolder with a manifest of its own is a fixture of its own (`postgres/`), checked
/// by its own [`check`], and left out here.
fn files(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let entry = entry.unwrap();
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if entry.file_type().unwrap().is_dir() {
            if entry.path().join(MANIFEST).is_file() {
                continue;
            }
            files(&entry.path(), &format!("{name}/"), out);
        } else {
            out.push(name);
        }
    }
}

use deploy_core::hex::lower_hex as hex;

#[test]
fn a_changed_missing_or_unlisted_fixture_file_is_named() {
    let dir = deploy_testkit::temp_dir("upgrade-manifest-").unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("data")).unwrap();
    let files = [("data/a", "one"), ("data/b", "two"), ("fixture.json", "{}")];
    let mut sums = String::new();
    for (name, text) in files {
        std::fs::write(root.join(name), text).unwrap();
        let _ = writeln!(sums, "{}  {name}", hex(&Sha256::digest(text)));
    }
    std::fs::write(root.join(MANIFEST), sums).unwrap();
    std::fs::write(root.join("README.md"), "not data").unwrap();
    assert_eq!(problems(root), Vec::<String>::new());

    std::fs::write(root.join("data/a"), "changed").unwrap();
    std::fs::remove_file(root.join("fixture.json")).unwrap();
    std::fs::write(root.join("data/c"), "new").unwrap();
    let found = problems(root);
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(found[0], "data/a changed");
    assert!(found[1].starts_with("fixture.json: "), "{found:?}");
    assert_eq!(found[2], "data/c is not in SHA256SUMS");
}

#[test]
fn a_subfolder_with_its_own_manifest_is_checked_by_it_not_by_the_parent() {
    let dir = deploy_testkit::temp_dir("upgrade-manifest-").unwrap();
    let root = dir.path();
    let nested = root.join("postgres");
    std::fs::create_dir(&nested).unwrap();
    std::fs::write(root.join("fixture.json"), "{}").unwrap();
    std::fs::write(
        root.join(MANIFEST),
        format!("{}  fixture.json\n", hex(&Sha256::digest("{}"))),
    )
    .unwrap();
    std::fs::write(nested.join("dump.sql"), "SELECT 1;").unwrap();
    std::fs::write(
        nested.join(MANIFEST),
        format!("{}  dump.sql\n", hex(&Sha256::digest("SELECT 1;"))),
    )
    .unwrap();
    assert_eq!(problems(root), Vec::<String>::new());
    assert_eq!(problems(&nested), Vec::<String>::new());

    std::fs::write(nested.join("dump.sql"), "SELECT 2;").unwrap();
    assert_eq!(problems(root), Vec::<String>::new());
    assert_eq!(problems(&nested), ["dump.sql changed"]);
    // A subfolder without a manifest is still the parent's.
    std::fs::remove_file(nested.join(MANIFEST)).unwrap();
    assert_eq!(problems(root), ["postgres/dump.sql is not in SHA256SUMS"]);
}
