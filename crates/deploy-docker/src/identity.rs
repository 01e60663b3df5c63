//! The identity of a container's definition: the sha256 of its `ContainerSpec` (our own `stella.*` labels left out), written as the `stella.config` label and compared before anything is changed.

use deploy_core::ContainerSpec;
use deploy_core::naming::labels;
use sha2::{Digest as _, Sha256};

/// Lowercase hex sha256 of `spec` as canonical JSON (fields in declaration order, maps
/// sorted), without labels starting with `stella.`: those name the job and the time
/// of a deployment, not what runs. Two jobs that ask for the same container get the
/// same identity, so the second changes nothing.
pub fn config_digest(spec: &ContainerSpec) -> String {
    let mut canonical = spec.clone();
    canonical.labels.retain(|k, _| !labels::is_ours(k));
    // Serializing a struct of strings, numbers and sorted maps cannot fail.
    let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    deploy_core::hex::lower_hex(&digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deploy_core::ImageRef;
    use deploy_core::testing::digest;

    #[test]
    fn identity_ignores_our_labels_and_nothing_else() {
        let spec = ContainerSpec::from_image(
            ImageRef::from_parts("127.0.0.1:5000/web", &digest(1)).unwrap(),
        );
        let base = config_digest(&spec);
        assert_eq!(base.len(), 64);
        let mut labelled = spec.clone();
        labelled
            .labels
            .insert("stella.deployed.at".into(), "2026-12-05T00:00:00Z".into());
        assert_eq!(config_digest(&labelled), base);
        let mut changed = spec.clone();
        changed.env.insert("A".into(), "1".into());
        assert_ne!(config_digest(&changed), base);
        let mut other_image = spec;
        other_image.image = ImageRef::from_parts("127.0.0.1:5000/web", &digest(2)).unwrap();
        assert_ne!(config_digest(&other_image), base);
    }
}
