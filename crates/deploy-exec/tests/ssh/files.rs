//! Files on the target, read back on the host as root: the default work dir under the login user's home (0700), uploads 0600, a planted symbolic link not followed, unsafe work dirs refused.

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use deploy_core::{TargetType, UnixPath};
use deploy_exec::ssh::first_temp_name;
use deploy_exec::{DeployFailure, ExecError, Executor};
use deploy_testkit::{SSH_TEST_USER, SshdHosts};

use crate::common::*;

/// The test user's home and uid, from the passwd database.
fn login_user() -> (String, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with(&format!("{SSH_TEST_USER}:")))
        .expect("the ssh test user in /etc/passwd (scripts/peers/ssh.sh)");
    let fields: Vec<&str> = line.split(':').collect();
    (fields[5].to_owned(), fields[2].parse().unwrap())
}

fn mode(path: &str) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn owner(path: &str) -> u32 {
    std::fs::symlink_metadata(path).unwrap().uid()
}

fn chown(path: &str, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), None).unwrap();
}

/// A directory made by the test (as root) with `perm` and `uid`, removed on drop.
struct Planted(String);

impl Planted {
    fn dir(path: String, perm: u32, uid: u32) -> Self {
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(perm)).unwrap();
        chown(&path, uid);
        Self(path)
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn names_in(dir: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn the_default_work_dir_is_created_0700_under_the_login_home_with_files_0600() {
    let mut s = Scene::start("files", TargetType::ComposeHost);
    let (home, uid) = login_user();
    // A target name of this run: the default work dir is `~/.local/share/deploy/<target>`.
    s.target.name = name(&s.p);
    ssh_mut(&mut s.target).work_dir = None;
    let dir = format!("{home}/.local/share/deploy/{}", s.p);
    let _cleanup = Planted(dir.clone());
    assert!(!Path::new(&dir).exists());

    let project = name(&s.p);
    let (logs, c) = ctx(120);
    let req = compose_request(&s.target, &project, &s.peers.images.v1, 1);
    let r = s.exec.deploy(&req, &c).await;
    let r = r.unwrap_or_else(|e| panic!("{e:?}\n{:#?}", logs.lines()));
    assert_eq!(r.running.get("web"), Some(&digest_of(&s.peers.images.v1)));

    assert_eq!((mode(&dir), owner(&dir)), (0o700, uid), "{dir}");
    let parent = format!("{home}/.local/share/deploy");
    assert_eq!((mode(&parent), owner(&parent)), (0o700, uid), "{parent}");
    let files = names_in(&dir);
    assert_eq!(
        files,
        [
            format!(".stella-{}.lock.sha256", s.p),
            "app.env".to_owned(),
            "docker-compose.lock.yml".to_owned()
        ],
        "no temp file left"
    );
    for f in &files {
        let path = format!("{dir}/{f}");
        assert_eq!((mode(&path), owner(&path)), (0o600, uid), "{path}");
    }
    assert_eq!(
        std::fs::read_to_string(format!("{dir}/app.env")).unwrap(),
        "GREETING=hello\n"
    );
    // inspect finds the deploy through the same default path.
    assert_eq!(
        s.exec.inspect(&s.target, &project, &c).await.unwrap(),
        Some(req.task.digest.clone())
    );
}

#[tokio::test]
async fn a_symlink_planted_at_the_temp_name_is_not_followed() {
    let s = Scene::start("plant", TargetType::ComposeHost);
    let (_, uid) = login_user();
    // A sticky, world-writable work dir of the login user (the one shape where someone
    // else can create names in it), with links planted at both first temp names.
    let work = s.work_dir().to_owned();
    let _work = Planted::dir(work.clone(), 0o1777, uid);
    let victim = format!("/tmp/{}-victim", s.p);
    std::fs::write(&victim, "victim\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o666)).unwrap();
    chown(&victim, uid);
    let _victim = Planted(victim.clone());
    let mut planted = Vec::new();
    for file in ["app.env", "docker-compose.lock.yml"] {
        let link = first_temp_name(&work, file);
        symlink(&victim, &link).unwrap();
        planted.push(link);
    }

    let project = name(&s.p);
    let (logs, c) = ctx(120);
    let req = compose_request(&s.target, &project, &s.peers.images.v1, 1);
    let r = s.exec.deploy(&req, &c).await;
    assert!(r.is_ok(), "{r:?}\n{:#?}", logs.lines());

    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim\n");
    assert_eq!(mode(&victim), 0o666);
    for link in &planted {
        let meta = std::fs::symlink_metadata(link).unwrap();
        assert!(meta.file_type().is_symlink(), "{link} left as it was");
    }
    let env = format!("{work}/app.env");
    assert_eq!(std::fs::read_to_string(&env).unwrap(), "GREETING=hello\n");
    assert!(
        !std::fs::symlink_metadata(&env)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(mode(&env), 0o600);
    let uploading: Vec<String> = names_in(&work)
        .into_iter()
        .filter(|f| f.contains("uploading"))
        .collect();
    assert_eq!(uploading.len(), 2, "only the planted links: {uploading:?}");
}

#[tokio::test]
async fn unsafe_work_dirs_are_refused_naming_the_path() {
    let hosts = SshdHosts::start(1).unwrap();
    let exec = executor(&hosts);
    let (_, uid) = login_user();
    let p = prefix("unsafe");
    let (_, c) = ctx(30);
    let project = name(&p);
    let image = format!("127.0.0.1:5000/x@sha256:{}", "0".repeat(64));
    let refused = |target: deploy_core::Target| {
        let exec = &exec;
        let c = &c;
        let project = &project;
        let image = &image;
        async move {
            let r = exec
                .deploy(&compose_request(&target, project, image, 1), c)
                .await;
            assert!(!r.as_ref().is_err_and(DeployFailure::retryable), "{r:?}");
            match r.map_err(|f| f.error) {
                Err(e @ ExecError::WorkDir { .. }) => e.to_string(),
                other => panic!("expected a work dir refusal, got {other:?}"),
            }
        }
    };

    // World-writable without the sticky bit: refused, nothing written.
    let open = Planted::dir(format!("/tmp/{p}-open"), 0o777, uid);
    let msg = refused(target(&hosts, 1, TargetType::ComposeHost, &open.0)).await;
    assert!(msg.contains(&open.0) && msg.contains("0777"), "{msg}");
    assert!(names_in(&open.0).is_empty());

    // Group-writable without the sticky bit: refused too, naming the mode.
    let group = Planted::dir(format!("/tmp/{p}-group"), 0o770, uid);
    let msg = refused(target(&hosts, 1, TargetType::ComposeHost, &group.0)).await;
    assert!(
        msg.contains(&group.0) && msg.contains("0770") && msg.contains("its group"),
        "{msg}"
    );
    assert!(names_in(&group.0).is_empty());

    // Owned by another user (root), sticky so the login user can still create in it.
    let foreign = Planted::dir(format!("/tmp/{p}-foreign"), 0o1777, 0);
    let msg = refused(target(&hosts, 1, TargetType::ComposeHost, &foreign.0)).await;
    assert!(
        msg.contains(&foreign.0) && msg.contains("belongs to uid 0"),
        "{msg}"
    );
    assert!(names_in(&foreign.0).is_empty(), "the probe file is removed");

    // A parent others can write (the work dir could be swapped): refused naming the parent.
    let parent = Planted::dir(format!("/tmp/{p}-parent"), 0o777, 0);
    let inner = format!("{}/work", parent.0);
    let msg = refused(target(&hosts, 1, TargetType::ComposeHost, &inner)).await;
    assert!(
        msg.contains(&format!("{}:", parent.0)) && msg.contains("above the work dir"),
        "{msg}"
    );

    // A group-writable parent without the sticky bit (root's; the login user's work dir
    // already inside it, 0700): refused naming the parent.
    let team = Planted::dir(format!("/tmp/{p}-team"), 0o775, 0);
    let inner = Planted::dir(format!("{}/work", team.0), 0o700, uid);
    let msg = refused(target(&hosts, 1, TargetType::ComposeHost, &inner.0)).await;
    assert!(
        msg.contains(&format!("{}:", team.0))
            && msg.contains("above the work dir")
            && msg.contains("0775"),
        "{msg}"
    );

    // A missing explicit work dir is created 0700, with its missing parents.
    let fresh = Planted(format!("/tmp/{p}-fresh"));
    let nested = format!("{}/a/b", fresh.0);
    UnixPath::parse(&nested).unwrap();
    let mut t = target(&hosts, 1, TargetType::ComposeHost, &nested);
    t.name = name(&p);
    let r = exec
        .deploy(&compose_request(&t, &project, &image, 1), &c)
        .await;
    // The deploy itself fails later (no such image): the directories are made by then.
    assert!(r.is_err());
    for d in [&fresh.0, &format!("{}/a", fresh.0), &nested] {
        assert_eq!((mode(d), owner(d)), (0o700, uid), "{d}");
    }
}
