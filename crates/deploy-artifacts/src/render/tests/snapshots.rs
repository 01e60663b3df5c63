//! Golden files (insta snapshots) of every artifact kind over the representative templates, and determinism checks.

use deploy_core::ArtifactKind;

use super::fixtures::{Inputs, SMALL, templates};
use crate::{Bundle, ContainerRuntime, render, verify_lock};

/// All artifacts of one kind, each preceded by its file name.
fn of_kind(bundle: &Bundle, kind: ArtifactKind) -> String {
    let mut out = String::new();
    for a in bundle.artifacts.iter().filter(|a| a.kind == kind) {
        out.push_str(&format!(
            "==> {} ({} bytes, {}) <==\n",
            a.file_name,
            a.content.len(),
            a.sha256
        ));
        out.push_str(&a.content);
    }
    out
}

#[test]
fn golden_files_for_every_kind() {
    for (template_name, template) in templates() {
        let bundle = Inputs::new(&template).render();
        for kind in ArtifactKind::ALL {
            let text = of_kind(&bundle, kind);
            assert!(!text.is_empty(), "{template_name}: no {kind:?}");
            insta::assert_snapshot!(format!("{template_name}__{}", kind.as_str()), text);
        }
    }
}

#[test]
fn podman_units_and_no_canary() {
    let mut inputs = Inputs::new(SMALL);
    inputs.runtime = ContainerRuntime::Podman;
    inputs.traffic = crate::Traffic::all_to(crate::Colour::Green);
    let bundle = inputs.render();
    insta::assert_snapshot!(
        "small_podman__systemd-unit",
        of_kind(&bundle, ArtifactKind::SystemdUnit)
    );
    insta::assert_snapshot!(
        "small_green_live__nginx-config",
        of_kind(&bundle, ArtifactKind::NginxConfig)
    );
}

#[test]
fn same_input_same_bytes() {
    for (_, template) in templates() {
        let a = Inputs::new(&template).render();
        let b = Inputs::new(&template).render();
        assert_eq!(a, b);
        // Rendering again from the same parsed input changes nothing either.
        let inputs = Inputs::new(&template);
        assert_eq!(
            render(&inputs.input()).unwrap(),
            render(&inputs.input()).unwrap()
        );
    }
}

#[test]
fn digests_are_pinned_across_runs_and_platforms() {
    // Byte-identical output everywhere: the bundle digest of the small template is a constant.
    // If this changes, every past deployment's bundle digest changes: bump MANIFEST_SCHEMA.
    let bundle = Inputs::new(SMALL).render();
    insta::assert_snapshot!(
        "small__digests",
        format!(
            "lock {}\nbundle {}\n",
            bundle.lock_digest, bundle.bundle_digest
        )
    );
}

#[test]
fn bundle_shape_and_manifest_agree() {
    let bundle = Inputs::new(SMALL).render();
    let names: Vec<_> = bundle
        .artifacts
        .iter()
        .map(|a| a.file_name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "docker-compose.yml",
            "docker-compose.lock.yml",
            "web.env",
            "worker.env",
            "stella-web.service",
            "stella-worker.service",
            "nginx.conf",
            "manifest.json"
        ]
    );
    let manifest = bundle.get("manifest.json").unwrap();
    assert_eq!(bundle.bundle_digest, manifest.sha256);
    let json: serde_json::Value = serde_json::from_str(&manifest.content).unwrap();
    let listed = json["artifacts"].as_array().unwrap();
    assert_eq!(listed.len(), bundle.artifacts.len() - 1);
    for (entry, a) in listed.iter().zip(&bundle.artifacts) {
        assert_eq!(entry["fileName"], a.file_name.as_str());
        assert_eq!(entry["kind"], a.kind.as_str());
        assert_eq!(entry["size"], a.content.len());
        assert_eq!(entry["sha256"], a.sha256.as_str());
    }
    assert_eq!(json["lockDigest"], bundle.lock_digest.as_str());
    let info = verify_lock(
        bundle
            .get("docker-compose.lock.yml")
            .unwrap()
            .content
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(info.digest, bundle.lock_digest);
    assert_eq!(info.services.len(), 2);
    let stored = manifest.to_generated(
        deploy_core::testing::artifact_id(1),
        deploy_core::testing::job_id(3),
        None,
    );
    assert!(stored.verify().is_ok());
    assert_eq!(stored.sha256, manifest.sha256);
}
