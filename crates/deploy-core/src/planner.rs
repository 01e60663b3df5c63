//! The rollout planner: a pure function from (strategy, ordered targets, parallelism) to ordered waves.

use std::collections::BTreeSet;
use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

use crate::errors::PlanError;
use crate::ids::TargetId;
use crate::strategy::Strategy;

/// The ordered waves of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutPlan {
    pub waves: Vec<Wave>,
}

/// A group of targets deployed together, then gated before the next wave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wave {
    /// Position in the plan, from 0.
    pub index: u32,
    pub kind: WaveKind,
    /// In the order the caller gave them.
    pub targets: Vec<TargetId>,
    /// Most of this wave's tasks in flight at once (at least 1).
    pub max_concurrency: u32,
    /// What must hold before the next wave starts.
    pub gate: WaveGate,
}

/// Why a wave exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "phase", rename_all = "snake_case")]
pub enum WaveKind {
    /// The single wave of all-at-once.
    All,
    /// A rolling batch (also the batches after a canary).
    Batch,
    /// The canary wave.
    Canary,
    /// One phase of a blue-green rollout; every target is in every phase.
    BlueGreen(BlueGreenPhase),
}

/// The phases of blue-green. Blue is retired only after the job completes, so
/// that a failure after cut-over is a cut back, not a redeploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlueGreenPhase {
    /// Start green beside blue; blue keeps serving.
    DeployGreen,
    /// Health-check green directly, before it gets traffic.
    VerifyGreen,
    /// Switch traffic to green (render and reload the proxy config).
    CutOver,
}

/// The condition between a wave and the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "gate", rename_all = "snake_case")]
pub enum WaveGate {
    /// Nothing beyond the wave's tasks finishing.
    None,
    /// Every task of the wave verified healthy (or failures within the policy).
    Health,
    /// Healthy, and staying healthy for `min_healthy_time_ms`.
    Soak { min_healthy_time_ms: u64 },
}

impl RolloutPlan {
    /// The indexes of the waves that contain `target`.
    pub fn waves_of(&self, target: TargetId) -> Vec<u32> {
        self.waves
            .iter()
            .filter(|w| w.targets.contains(&target))
            .map(|w| w.index)
            .collect()
    }
}

/// Plans the waves of a rollout.
///
/// `targets` is taken in the caller's order (the engine sorts them, e.g. by
/// name), so the same input always gives the same plan.
pub fn plan(
    strategy: &Strategy,
    targets: &[TargetId],
    parallelism: NonZeroU32,
) -> Result<RolloutPlan, PlanError> {
    if targets.is_empty() {
        return Err(PlanError::NoTargets);
    }
    let mut seen = BTreeSet::new();
    if let Some(dup) = targets.iter().find(|t| !seen.insert(**t)) {
        return Err(PlanError::DuplicateTarget {
            target: dup.to_string(),
        });
    }
    let cap = |n: usize| {
        u32::try_from(n)
            .unwrap_or(u32::MAX)
            .min(parallelism.get())
            .max(1)
    };
    let mut waves = Vec::new();
    let mut push = |kind, targets: &[TargetId], gate| {
        waves.push(Wave {
            index: u32::try_from(waves.len()).unwrap_or(u32::MAX),
            kind,
            targets: targets.to_vec(),
            max_concurrency: cap(targets.len()),
            gate,
        });
    };
    match strategy {
        Strategy::AllAtOnce => push(WaveKind::All, targets, WaveGate::Health),
        Strategy::Rolling { batch } => {
            for chunk in targets.chunks(batch.resolve(targets.len())) {
                push(WaveKind::Batch, chunk, WaveGate::Health);
            }
        }
        Strategy::Canary {
            canary,
            min_healthy_time_ms,
            batch,
        } => {
            let (canaries, rest) = targets.split_at(canary.resolve(targets.len()));
            push(
                WaveKind::Canary,
                canaries,
                WaveGate::Soak {
                    min_healthy_time_ms: *min_healthy_time_ms,
                },
            );
            if !rest.is_empty() {
                for chunk in rest.chunks(batch.resolve(rest.len())) {
                    push(WaveKind::Batch, chunk, WaveGate::Health);
                }
            }
        }
        Strategy::BlueGreen => {
            push(
                WaveKind::BlueGreen(BlueGreenPhase::DeployGreen),
                targets,
                WaveGate::None,
            );
            push(
                WaveKind::BlueGreen(BlueGreenPhase::VerifyGreen),
                targets,
                WaveGate::Health,
            );
            push(
                WaveKind::BlueGreen(BlueGreenPhase::CutOver),
                targets,
                WaveGate::Health,
            );
        }
    }
    Ok(RolloutPlan { waves })
}

#[cfg(test)]
mod tests;
