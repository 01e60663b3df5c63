//! Example and property tests of the rollout planner.

use std::num::NonZeroU32;

use proptest::prelude::{Just, prop_assert, prop_assert_eq, prop_oneof, proptest};
use proptest::strategy::Strategy as Generator;

use super::*;
use crate::strategy::{BatchSize, Percent};
use crate::testing::target_id;

fn targets(n: u64) -> Vec<TargetId> {
    (1..=n).map(target_id).collect()
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn count(n: u32) -> BatchSize {
    BatchSize::Count(nz(n))
}

/// Shape of a plan as (kind, target count, concurrency, gate) per wave.
fn shape(p: &RolloutPlan) -> Vec<(WaveKind, usize, u32, WaveGate)> {
    p.waves
        .iter()
        .map(|w| (w.kind, w.targets.len(), w.max_concurrency, w.gate))
        .collect()
}

#[test]
fn all_at_once_is_one_wave_capped_by_parallelism() {
    let p = plan(&Strategy::AllAtOnce, &targets(25), nz(10)).unwrap();
    assert_eq!(shape(&p), vec![(WaveKind::All, 25, 10, WaveGate::Health)]);
    let p = plan(&Strategy::AllAtOnce, &targets(3), nz(10)).unwrap();
    assert_eq!(p.waves[0].max_concurrency, 3);
}

#[test]
fn rolling_batches_in_caller_order() {
    let t = targets(5);
    let p = plan(&Strategy::Rolling { batch: count(2) }, &t, nz(10)).unwrap();
    let waves: Vec<Vec<TargetId>> = p.waves.iter().map(|w| w.targets.clone()).collect();
    assert_eq!(
        waves,
        vec![t[0..2].to_vec(), t[2..4].to_vec(), t[4..5].to_vec()]
    );
    assert!(
        p.waves
            .iter()
            .all(|w| w.gate == WaveGate::Health && w.max_concurrency <= 2)
    );
    let pct = plan(
        &Strategy::Rolling {
            batch: BatchSize::Percent(Percent::new(30).unwrap()),
        },
        &targets(10),
        nz(2),
    )
    .unwrap();
    assert_eq!(
        pct.waves
            .iter()
            .map(|w| w.targets.len())
            .collect::<Vec<_>>(),
        vec![3, 3, 3, 1]
    );
    let caps: Vec<u32> = pct.waves.iter().map(|w| w.max_concurrency).collect();
    assert_eq!(
        caps,
        vec![2, 2, 2, 1],
        "parallelism caps a batch, and a batch caps itself"
    );
}

#[test]
fn canary_then_soak_then_batches() {
    let s = Strategy::Canary {
        canary: count(1),
        min_healthy_time_ms: 30_000,
        batch: count(3),
    };
    let p = plan(&s, &targets(7), nz(10)).unwrap();
    assert_eq!(
        shape(&p),
        vec![
            (
                WaveKind::Canary,
                1,
                1,
                WaveGate::Soak {
                    min_healthy_time_ms: 30_000
                }
            ),
            (WaveKind::Batch, 3, 3, WaveGate::Health),
            (WaveKind::Batch, 3, 3, WaveGate::Health),
        ]
    );
    // A percentage canary on few targets still has at least one target.
    let s = Strategy::Canary {
        canary: BatchSize::Percent(Percent::new(1).unwrap()),
        min_healthy_time_ms: 0,
        batch: count(10),
    };
    assert_eq!(
        plan(&s, &targets(2), nz(1)).unwrap().waves[0].targets.len(),
        1
    );
    // A canary as large as the environment leaves no batches.
    let s = Strategy::Canary {
        canary: count(9),
        min_healthy_time_ms: 0,
        batch: count(1),
    };
    assert_eq!(plan(&s, &targets(3), nz(5)).unwrap().waves.len(), 1);
}

#[test]
fn blue_green_has_every_target_in_each_phase() {
    let t = targets(4);
    let p = plan(&Strategy::BlueGreen, &t, nz(2)).unwrap();
    let phases: Vec<WaveKind> = p.waves.iter().map(|w| w.kind).collect();
    assert_eq!(
        phases,
        vec![
            WaveKind::BlueGreen(BlueGreenPhase::DeployGreen),
            WaveKind::BlueGreen(BlueGreenPhase::VerifyGreen),
            WaveKind::BlueGreen(BlueGreenPhase::CutOver),
        ]
    );
    assert!(
        p.waves
            .iter()
            .all(|w| w.targets == t && w.max_concurrency == 2)
    );
    assert_eq!(p.waves_of(t[3]), vec![0, 1, 2]);
}

#[test]
fn bad_input_is_refused() {
    assert_eq!(
        plan(&Strategy::AllAtOnce, &[], nz(1)),
        Err(PlanError::NoTargets)
    );
    let t = targets(2);
    let err = plan(&Strategy::AllAtOnce, &[t[0], t[1], t[0]], nz(1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "target `{}` is listed twice; expected each target once",
            t[0]
        )
    );
}

fn any_batch() -> impl Generator<Value = BatchSize> {
    prop_oneof![
        (1u32..50).prop_map(|n| BatchSize::Count(NonZeroU32::new(n).unwrap())),
        (1u8..=100).prop_map(|p| BatchSize::Percent(Percent::new(p).unwrap())),
    ]
}

fn any_strategy() -> impl Generator<Value = Strategy> {
    prop_oneof![
        Just(Strategy::AllAtOnce),
        any_batch().prop_map(|batch| Strategy::Rolling { batch }),
        (any_batch(), 0u64..100_000, any_batch()).prop_map(
            |(canary, min_healthy_time_ms, batch)| {
                Strategy::Canary {
                    canary,
                    min_healthy_time_ms,
                    batch,
                }
            }
        ),
        Just(Strategy::BlueGreen),
    ]
}

proptest! {
    #[test]
    fn plans_cover_every_target_respect_concurrency_and_are_deterministic(
        strategy in any_strategy(),
        n in 1u64..200,
        parallelism in 1u32..64,
    ) {
        let t = targets(n);
        let p = plan(&strategy, &t, nz(parallelism)).unwrap();
        prop_assert_eq!(&p, &plan(&strategy, &t, nz(parallelism)).unwrap(), "same input, same plan");
        for (i, w) in p.waves.iter().enumerate() {
            prop_assert_eq!(w.index as usize, i);
            prop_assert!(!w.targets.is_empty());
            prop_assert!(w.max_concurrency >= 1);
            prop_assert!(w.max_concurrency <= parallelism);
            prop_assert!(w.max_concurrency as usize <= w.targets.len());
        }
        let expected_appearances = if strategy == Strategy::BlueGreen { 3 } else { 1 };
        for target in &t {
            prop_assert_eq!(p.waves_of(*target).len(), expected_appearances, "target {}", target);
        }
        // Outside blue-green the waves, concatenated, are exactly the caller's order.
        if strategy != Strategy::BlueGreen {
            let flat: Vec<TargetId> = p.waves.iter().flat_map(|w| w.targets.clone()).collect();
            prop_assert_eq!(flat, t);
        }
    }
}
