//! The agent's files on a real temp dir: 0700 work dirs, 0600 files, links never followed, unsafe work dirs refused.

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

use super::*;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A temp dir others cannot write (tempfile makes 0700 ones under the sticky /tmp).
fn root() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn a_missing_work_dir_is_created_0700_with_its_parents() {
    let root = root();
    let dir = root.path().join("work").join("host-1");
    let made = prepare_work_dir(&dir).unwrap();
    assert_eq!(made, dir.canonicalize().unwrap());
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&root.path().join("work")), 0o700);
    // Again: an existing, safe one is accepted as it is, and no probe file is left.
    chmod(&dir, 0o750);
    prepare_work_dir(&dir).unwrap();
    assert_eq!(mode(&dir), 0o750);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}

#[test]
fn a_world_writable_work_dir_without_the_sticky_bit_is_refused_naming_it() {
    let root = root();
    let dir = root.path().join("open");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o777);
    let err = prepare_work_dir(&dir).unwrap_err();
    assert!(!err.code.is_retryable(), "{err:?}");
    assert!(
        err.message.contains(&dir.display().to_string()) && err.message.contains("0777"),
        "{err}"
    );
    // Sticky (like /tmp): nobody can remove or rename another's files there.
    chmod(&dir, 0o1777);
    prepare_work_dir(&dir).unwrap();
}

#[test]
fn a_work_dir_under_a_world_writable_parent_is_refused_naming_the_parent() {
    let root = root();
    let parent = root.path().join("shared");
    std::fs::create_dir(&parent).unwrap();
    chmod(&parent, 0o777);
    let err = prepare_work_dir(&parent.join("work")).unwrap_err();
    assert!(
        err.message
            .contains(&format!("use work dir {}:", parent.display()))
            && err.message.contains("above the work dir"),
        "{err}"
    );
}

#[test]
fn a_group_writable_work_dir_or_parent_without_the_sticky_bit_is_refused_naming_it() {
    let root = root();
    let dir = root.path().join("group");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o770);
    let err = prepare_work_dir(&dir).unwrap_err();
    assert!(!err.code.is_retryable(), "{err:?}");
    assert!(
        err.message.contains(&dir.display().to_string())
            && err.message.contains("0770")
            && err.message.contains("its group"),
        "{err}"
    );
    // Sticky: group members cannot remove or rename the owner's files there.
    chmod(&dir, 0o1770);
    prepare_work_dir(&dir).unwrap();

    let parent = root.path().join("team");
    std::fs::create_dir(&parent).unwrap();
    chmod(&parent, 0o775);
    let err = prepare_work_dir(&parent.join("work")).unwrap_err();
    assert!(
        err.message
            .contains(&format!("use work dir {}:", parent.display()))
            && err.message.contains("above the work dir")
            && err.message.contains("0775"),
        "{err}"
    );
    chmod(&parent, 0o1775);
    prepare_work_dir(&parent.join("work")).unwrap();
}

#[test]
fn a_work_dir_of_another_user_is_refused() {
    let root = root();
    let dir = root.path().join("theirs");
    std::fs::create_dir(&dir).unwrap();
    // Sticky and world-writable, so the probe can be created: only the owner differs.
    chmod(&dir, 0o1777);
    std::os::unix::fs::chown(&dir, Some(65534), None)
        .expect("chown to uid 65534: these tests run as root on the project's machines");
    let err = prepare_work_dir(&dir).unwrap_err();
    assert!(
        err.message.contains("belongs to uid 65534")
            && err.message.contains(&dir.display().to_string()),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "probe removed");
}

#[tokio::test]
async fn files_are_written_0600_and_a_planted_link_is_never_followed() {
    let root = root();
    let dir = prepare_work_dir(&root.path().join("w")).unwrap();
    let victim = root.path().join("victim");
    std::fs::write(&victim, "victim\n").unwrap();

    write_atomically(&dir, "app.env", b"A=1\n").await.unwrap();
    assert_eq!(mode(&dir.join("app.env")), 0o600);
    assert_eq!(
        std::fs::read_to_string(dir.join("app.env")).unwrap(),
        "A=1\n"
    );

    // At a temp name: the write fails instead of writing through the link.
    let temp = temp_path(&dir, "app.env", "tmp");
    symlink(&victim, &temp).unwrap();
    let err = write_new(&temp, b"SECRET=1\n").await.unwrap_err();
    assert!(err.message.contains(&temp.display().to_string()), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim\n");

    // At the final name: the rename replaces the link, the victim is untouched.
    let final_name = dir.join("other.env");
    symlink(&victim, &final_name).unwrap();
    write_atomically(&dir, "other.env", b"B=2\n").await.unwrap();
    assert!(
        !std::fs::symlink_metadata(&final_name)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read_to_string(&final_name).unwrap(), "B=2\n");
    assert_eq!(mode(&final_name), 0o600);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim\n");
}

#[test]
fn a_symlinked_work_dir_resolves_to_its_target_once() {
    let root = root();
    let real = root.path().join("real");
    std::fs::create_dir(&real).unwrap();
    chmod(&real, 0o700);
    let link = root.path().join("link");
    symlink(&real, &link).unwrap();
    assert_eq!(
        prepare_work_dir(&link).unwrap(),
        real.canonicalize().unwrap()
    );
}
