//! Rollback readiness: which touched slots have a last-known-good digest, and which can be reverted instantly from a kept previous container.

use std::collections::BTreeMap;

use deploy_core::Digest;

use crate::known_good::{LastKnownGood, SlotKey};

/// How ready one slot is to be rolled back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotReadiness {
    pub slot: SlotKey,
    /// The digest a rollback would restore, if any.
    pub last_known_good: Option<Digest>,
    /// A kept `-previous` container (docker_host) runs exactly that digest, so the
    /// rollback is a rename and start, not a pull.
    pub instant_revert: bool,
}

/// Readiness of `slots`, given the digests of the previous containers that
/// executors found still present on the targets (from `inspect`).
pub fn readiness(
    slots: &[SlotKey],
    known_good: &LastKnownGood,
    previous_containers: &BTreeMap<SlotKey, Digest>,
) -> Vec<SlotReadiness> {
    slots
        .iter()
        .map(|slot| {
            let lkg = known_good.get(slot).map(|g| g.digest.clone());
            let instant_revert = lkg
                .as_ref()
                .is_some_and(|d| previous_containers.get(slot) == Some(d));
            SlotReadiness {
                slot: *slot,
                last_known_good: lkg,
                instant_revert,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use deploy_core::testing::*;

    use super::*;
    use crate::known_good::KnownGood;

    #[test]
    fn instant_revert_needs_the_previous_container_on_the_good_digest() {
        let slot = |t| (target_id(t), Some(component_id(1)));
        let good = |d| KnownGood {
            digest: digest(d),
            component_id: Some(component_id(1)),
            job_id: job_id(1),
            release_id: release_id(1),
            completed_at: ts(1),
        };
        let lkg = LastKnownGood::from_entries([(slot(1), good(10)), (slot(2), good(10))]);
        let previous = BTreeMap::from([(slot(1), digest(10)), (slot(2), digest(99))]);
        let r = readiness(&[slot(1), slot(2), slot(3)], &lkg, &previous);
        assert_eq!(
            r.iter()
                .map(|s| (s.last_known_good.clone(), s.instant_revert))
                .collect::<Vec<_>>(),
            vec![
                (Some(digest(10)), true),
                (Some(digest(10)), false),
                (None, false)
            ]
        );
    }
}
