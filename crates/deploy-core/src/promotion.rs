//! `Promotion`: the request to move a release into an environment; approving it is what creates a deployment job.

use serde::{Deserialize, Serialize};

use crate::approval::Approval;
use crate::errors::InvalidTransition;
use crate::ids::{EnvironmentId, PromotionId, ReleaseId};
use crate::timestamp::Timestamp;

/// Where a promotion stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromotionStatus {
    Requested,
    Approved,
    Rejected,
}

impl PromotionStatus {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
        }
    }
}

/// A decision on a requested promotion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PromotionDecision {
    Approve,
    Reject,
}

impl PromotionDecision {
    fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Reject => "reject",
        }
    }
}

/// A release proposed for an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promotion {
    pub id: PromotionId,
    pub release_id: ReleaseId,
    pub environment_id: EnvironmentId,
    pub status: PromotionStatus,
    /// The requesting token's name.
    pub requested_by: String,
    /// The requesting token's id (for the self-approval rule; absent on older rows).
    #[serde(default)]
    pub requested_by_token: Option<uuid::Uuid>,
    /// The token whose approval or rejection decided it.
    pub decided_by: Option<String>,
    pub requested_at: Timestamp,
    pub decided_at: Option<Timestamp>,
    /// Approvals so far, oldest first (a policy may need several).
    #[serde(default)]
    pub approvals: Vec<Approval>,
    /// Why it was rejected.
    #[serde(default)]
    pub rejection_reason: Option<String>,
    /// Bumped by every stored change: a write names the version it read.
    #[serde(default)]
    pub version: u64,
}

impl Promotion {
    /// Rejects a requested promotion, with the reason given.
    pub fn reject(
        &mut self,
        by: &str,
        reason: Option<String>,
        now: Timestamp,
    ) -> Result<(), InvalidTransition> {
        self.decide(PromotionDecision::Reject, by, now)?;
        self.rejection_reason = reason;
        Ok(())
    }

    /// Records a decision; only a requested promotion can be decided, and only once.
    pub fn decide(
        &mut self,
        decision: PromotionDecision,
        by: &str,
        now: Timestamp,
    ) -> Result<(), InvalidTransition> {
        if self.status != PromotionStatus::Requested {
            return Err(InvalidTransition {
                entity: "promotion",
                from: self.status.as_str(),
                event: decision.as_str(),
                reason: Some("a promotion is decided once".to_owned()),
            });
        }
        self.status = match decision {
            PromotionDecision::Approve => PromotionStatus::Approved,
            PromotionDecision::Reject => PromotionStatus::Rejected,
        };
        self.decided_by = Some(by.to_owned());
        self.decided_at = Some(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn decided_once() {
        let mut p = promotion(1);
        p.decide(PromotionDecision::Approve, "alice", ts(5))
            .unwrap();
        assert_eq!(p.status, PromotionStatus::Approved);
        assert_eq!(p.decided_at, Some(ts(5)));
        let err = p
            .decide(PromotionDecision::Reject, "bob", ts(6))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "promotion in state `approved` cannot take event `reject`: a promotion is decided once"
        );
        assert_eq!(p.decided_by.as_deref(), Some("alice"));
    }
}
