//! `TestImages`: v1, v2 and v3-broken images built from busybox-static without a base image, pushed to a `Registry`, addressed by registry digest.

use std::path::Path;

use crate::docker::run_checked;
use crate::errors::TestkitError;
use crate::process::{require_program, temp_dir};
use crate::registry::Registry;

/// The port the test images serve HTTP on (`/version`, and `/health` unless broken).
pub const IMAGE_HTTP_PORT: u16 = 8080;

/// The three test images as `127.0.0.1:<port>/<repo>@sha256:…` references.
#[derive(Debug, Clone)]
pub struct TestImages {
    /// `<registry>/<repo>` without digest.
    pub repository: String,
    /// Healthy; `/version` says `v1`.
    pub v1: String,
    /// Healthy; `/version` says `v2`.
    pub v2: String,
    /// `/version` says `v3`; `/health` is missing (404).
    pub v3_broken: String,
}

impl TestImages {
    /// Builds the three images, pushes them to `registry` under `repo` and removes the
    /// local tags, so a deploy really pulls from the registry.
    pub fn build(registry: &Registry, repo: &str) -> Result<Self, TestkitError> {
        let busybox = require_program(
            "busybox",
            &["/bin", "/usr/bin"],
            "`apt-get install busybox-static` (scripts/peers/ssh.sh does)",
        )?;
        let repository = format!("{}/{repo}", registry.address());
        let dir = temp_dir("testkit-images-")?;
        let mut refs = Vec::new();
        for (tag, healthy) in [("v1", true), ("v2", true), ("v3", false)] {
            let tar = build_rootfs(dir.path(), &busybox, tag, healthy)?;
            let name = format!("{repository}:{tag}");
            run_checked(
                "docker",
                &[
                    "import",
                    "--change",
                    r#"CMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]"#,
                    "--change",
                    "EXPOSE 8080",
                    &tar,
                    &name,
                ],
            )?;
            run_checked("docker", &["push", "--quiet", &name])?;
            let digests = run_checked(
                "docker",
                &[
                    "inspect",
                    "--format",
                    "{{range .RepoDigests}}{{println .}}{{end}}",
                    &name,
                ],
            )?;
            let digest = digests
                .lines()
                .find(|l| l.starts_with(&format!("{repository}@")))
                .map(str::to_owned)
                .ok_or_else(|| TestkitError::NotReady {
                    what: format!("registry digest of {name}"),
                    seconds: 0,
                    detail: digests.clone(),
                })?;
            run_checked("docker", &["rmi", &name])?;
            refs.push(digest);
        }
        let [v1, v2, v3_broken]: [String; 3] =
            refs.try_into().map_err(|_| TestkitError::NotReady {
                what: "three test images".to_owned(),
                seconds: 0,
                detail: String::new(),
            })?;
        Ok(Self {
            repository,
            v1,
            v2,
            v3_broken,
        })
    }
}

fn build_rootfs(
    dir: &Path,
    busybox: &Path,
    tag: &str,
    healthy: bool,
) -> Result<String, TestkitError> {
    let root = dir.join(format!("rootfs-{tag}"));
    let io = |what: &str| TestkitError::io(format!("{what} in {}", root.display()));
    std::fs::create_dir_all(root.join("bin")).map_err(io("create bin"))?;
    std::fs::create_dir_all(root.join("www")).map_err(io("create www"))?;
    std::fs::create_dir_all(root.join("tmp")).map_err(io("create tmp"))?;
    std::fs::copy(busybox, root.join("bin/busybox")).map_err(io("copy busybox"))?;
    for link in ["sh", "httpd", "sleep", "cat"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(link))
            .map_err(io("link applet"))?;
    }
    std::fs::write(root.join("www/version"), format!("{tag}\n")).map_err(io("write version"))?;
    if healthy {
        std::fs::write(root.join("www/health"), "ok\n").map_err(io("write health"))?;
    }
    let tar = dir.join(format!("{tag}.tar"));
    let tar_s = tar.display().to_string();
    let root_s = root.display().to_string();
    run_checked(
        "tar",
        &[
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            "-C",
            &root_s,
            "-cf",
            &tar_s,
            ".",
        ],
    )?;
    Ok(tar_s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_pushed_and_addressed_by_registry_digest() {
        let registry = Registry::start().unwrap();
        let images = TestImages::build(&registry, "testkit/app").unwrap();
        for r in [&images.v1, &images.v2, &images.v3_broken] {
            assert!(
                r.starts_with(&format!("{}@sha256:", images.repository)),
                "{r}"
            );
        }
        assert_ne!(images.v1, images.v2);
        // The registry really serves the manifest by that digest.
        let digest = images.v1.rsplit_once('@').unwrap().1;
        let (status, _) = crate::docker::http_get(
            &registry.address(),
            &format!("/v2/testkit/app/manifests/{digest}"),
        )
        .unwrap();
        assert_eq!(status, 200);
    }
}
