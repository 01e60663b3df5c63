//! Approval policy of an environment and the approval of a promotion under it: who may approve, how many must, and whether a requester may approve their own.

use serde::{Deserialize, Serialize};

use crate::errors::ValidationError;
use crate::promotion::{Promotion, PromotionStatus};
use crate::timestamp::Timestamp;

/// The most approvals a policy may require (more is a typo, not a process).
pub const MAX_REQUIRED_APPROVALS: u32 = 10;

/// The lowest API role whose tokens may approve. Roles are ordered (viewer < deployer <
/// admin); viewers never approve, so the choice is between the two others.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ApproverRole {
    #[default]
    Deployer,
    Admin,
}

impl ApproverRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployer => "deployer",
            Self::Admin => "admin",
        }
    }
}

/// Who must approve a promotion to an environment before its job is created.
///
/// An environment without a policy takes one approval from any deployer, the
/// requester included: the one-command `deploy` of a development environment. Once
/// a policy is set, the requester's own approval does not count unless
/// `allow_self_approval` says so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalPolicy {
    /// Approvals by distinct tokens needed, 1 to [`MAX_REQUIRED_APPROVALS`].
    #[serde(default = "one")]
    pub required_approvals: u32,
    /// The lowest role that may approve.
    #[serde(default)]
    pub approver_role: ApproverRole,
    /// When not empty, only tokens of these names may approve (and they still need
    /// `approver_role`).
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Whether the token that requested a promotion may approve it.
    #[serde(default)]
    pub allow_self_approval: bool,
}

fn one() -> u32 {
    1
}

impl Default for ApprovalPolicy {
    fn default() -> Self {
        Self {
            required_approvals: 1,
            approver_role: ApproverRole::Deployer,
            approvers: Vec::new(),
            allow_self_approval: false,
        }
    }
}

impl ApprovalPolicy {
    /// Checks the counts and names; `field` is the policy's path in its document.
    pub fn validate(&self, field: &str) -> Result<(), ValidationError> {
        if !(1..=MAX_REQUIRED_APPROVALS).contains(&self.required_approvals) {
            return Err(ValidationError::new(
                format!("{field}.required_approvals"),
                self.required_approvals,
                format!("a count from 1 to {MAX_REQUIRED_APPROVALS}"),
            ));
        }
        for (i, name) in self.approvers.iter().enumerate() {
            if name.trim().is_empty() || name.len() > 128 {
                return Err(ValidationError::new(
                    format!("{field}.approvers[{i}]"),
                    name.escape_debug(),
                    "the name of an API token (1 to 128 characters)",
                ));
            }
        }
        let needed = usize::try_from(self.required_approvals).unwrap_or(usize::MAX);
        if !self.approvers.is_empty() && self.approvers.len() < needed {
            return Err(ValidationError::new(
                format!("{field}.approvers"),
                self.approvers.join(", "),
                format!(
                    "at least {} named approvers: fewer could never approve",
                    self.required_approvals
                ),
            ));
        }
        Ok(())
    }
}

/// One approval of a promotion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// The approving token's name.
    pub by: String,
    /// The approving token's id (two tokens may share a name).
    #[serde(default)]
    pub token_id: Option<uuid::Uuid>,
    /// The approving token's role then (so the approval can be weighed against a
    /// policy changed since).
    #[serde(default)]
    pub role: Option<ApproverRole>,
    pub at: Timestamp,
}

/// The token approving a promotion.
#[derive(Debug, Clone, Copy)]
pub struct Approver<'a> {
    pub name: &'a str,
    pub token_id: Option<uuid::Uuid>,
    /// Its role, when it is at least a deployer (`None`: a viewer).
    pub role: Option<ApproverRole>,
}

/// Why an approval was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalRefused {
    #[error("promotion is already {status}; only a requested promotion can be approved")]
    AlreadyDecided { status: &'static str },
    #[error(
        "token `{by}` requested this promotion and the environment's policy does not let a requester approve their own (allow_self_approval: false); another token must approve"
    )]
    SelfApproval { by: String },
    #[error(
        "token `{by}` already approved this promotion; the policy needs approvals by {required} distinct tokens"
    )]
    AlreadyApprovedBy { by: String, required: u32 },
    #[error("token `{by}` may not approve promotions to this environment: {why}")]
    NotAnApprover { by: String, why: String },
}

/// What an accepted approval did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalOutcome {
    /// The promotion is approved: its job may be created.
    Approved,
    /// Recorded; `missing` more approvals are needed.
    Pending { missing: u32 },
}

impl Promotion {
    /// Records `approver`'s approval under `policy` (the environment's; `None`: one
    /// approval by anyone allowed to call, the requester included). The promotion becomes
    /// `approved` with the approval that completes the count; a refused approval
    /// changes nothing.
    pub fn approve(
        &mut self,
        approver: Approver<'_>,
        policy: Option<&ApprovalPolicy>,
        now: Timestamp,
    ) -> Result<ApprovalOutcome, ApprovalRefused> {
        if self.status != PromotionStatus::Requested {
            return Err(ApprovalRefused::AlreadyDecided {
                status: self.status.as_str(),
            });
        }
        let required = match policy {
            None => 1,
            Some(p) => {
                check_approver(self, approver, p)?;
                p.required_approvals
            }
        };
        self.approvals.push(Approval {
            by: approver.name.to_owned(),
            token_id: approver.token_id,
            role: approver.role,
            at: now,
        });
        // Only approvals the policy in force accepts count: one given under a looser
        // policy (a lower role, a name since removed, the requester's own) does not.
        let counted = match policy {
            None => self.approvals.len(),
            Some(p) => self
                .approvals
                .iter()
                .filter(|a| counts_under(self, a, p))
                .count(),
        };
        let have = u32::try_from(counted).unwrap_or(u32::MAX);
        if have >= required {
            self.status = PromotionStatus::Approved;
            self.decided_by = Some(approver.name.to_owned());
            self.decided_at = Some(now);
            Ok(ApprovalOutcome::Approved)
        } else {
            Ok(ApprovalOutcome::Pending {
                missing: required - have,
            })
        }
    }
}

/// Whether an approval already recorded counts under `policy`.
fn counts_under(promotion: &Promotion, approval: &Approval, policy: &ApprovalPolicy) -> bool {
    let by_requester = match (approval.token_id, promotion.requested_by_token) {
        (Some(a), Some(b)) => a == b,
        _ => approval.by == promotion.requested_by,
    };
    (policy.allow_self_approval || !by_requester)
        && approval.role.is_some_and(|r| r >= policy.approver_role)
        && (policy.approvers.is_empty() || policy.approvers.contains(&approval.by))
}

impl ApprovalPolicy {
    /// Whether `approver` may approve under this policy at all (its role and, when the
    /// policy names approvers, its name); the rules about the requester and repeated
    /// approvals are [`Promotion::approve`]'s.
    pub fn admits(&self, approver: Approver<'_>) -> Result<(), ApprovalRefused> {
        let by = approver.name.to_owned();
        match approver.role {
            Some(role) if role >= self.approver_role => {}
            _ => {
                return Err(ApprovalRefused::NotAnApprover {
                    by,
                    why: format!("approvers need the `{}` role", self.approver_role.as_str()),
                });
            }
        }
        if !self.approvers.is_empty() && !self.approvers.iter().any(|a| a == approver.name) {
            return Err(ApprovalRefused::NotAnApprover {
                by,
                why: format!("the approvers are {}", self.approvers.join(", ")),
            });
        }
        Ok(())
    }
}

/// Whether `approver` may add an approval to `promotion` under `policy`.
fn check_approver(
    promotion: &Promotion,
    approver: Approver<'_>,
    policy: &ApprovalPolicy,
) -> Result<(), ApprovalRefused> {
    let by = approver.name.to_owned();
    let same_token = |token: Option<uuid::Uuid>, name: &str| match (token, approver.token_id) {
        (Some(a), Some(b)) => a == b,
        // Without ids (an older row), the name decides.
        _ => name == approver.name,
    };
    if !policy.allow_self_approval
        && same_token(promotion.requested_by_token, &promotion.requested_by)
    {
        return Err(ApprovalRefused::SelfApproval { by });
    }
    policy.admits(approver)?;
    if promotion
        .approvals
        .iter()
        .any(|a| same_token(a.token_id, &a.by))
    {
        return Err(ApprovalRefused::AlreadyApprovedBy {
            by,
            required: policy.required_approvals,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    fn token(n: u128) -> Option<uuid::Uuid> {
        Some(uuid::Uuid::from_u128(n))
    }

    fn requested_by(n: u128) -> Promotion {
        let mut p = promotion(1);
        p.requested_by = format!("t{n}");
        p.requested_by_token = token(n);
        p
    }

    fn deployer(name: &str, n: u128) -> Approver<'_> {
        Approver {
            name,
            token_id: token(n),
            role: Some(ApproverRole::Deployer),
        }
    }

    #[test]
    fn without_a_policy_the_requester_approves_alone() {
        let mut p = requested_by(1);
        let outcome = p.approve(deployer("t1", 1), None, ts(5)).unwrap();
        assert_eq!(outcome, ApprovalOutcome::Approved);
        assert_eq!(p.status, PromotionStatus::Approved);
        assert_eq!(p.decided_by.as_deref(), Some("t1"));
        assert_eq!(p.approvals.len(), 1);
    }

    #[test]
    fn a_policy_refuses_self_approval_by_default() {
        let mut p = requested_by(1);
        let policy = ApprovalPolicy::default();
        let err = p
            .approve(deployer("t1", 1), Some(&policy), ts(5))
            .unwrap_err();
        assert!(matches!(err, ApprovalRefused::SelfApproval { .. }), "{err}");
        assert!(p.approvals.is_empty());
        assert_eq!(p.status, PromotionStatus::Requested);
        // Another token sharing the requester's name is a different token.
        assert_eq!(
            p.approve(deployer("t1", 2), Some(&policy), ts(6)),
            Ok(ApprovalOutcome::Approved)
        );
    }

    #[test]
    fn two_approvals_by_distinct_tokens() {
        let mut p = requested_by(1);
        let policy = ApprovalPolicy {
            required_approvals: 2,
            ..ApprovalPolicy::default()
        };
        assert_eq!(
            p.approve(deployer("alice", 2), Some(&policy), ts(5)),
            Ok(ApprovalOutcome::Pending { missing: 1 })
        );
        let again = p
            .approve(deployer("alice", 2), Some(&policy), ts(6))
            .unwrap_err();
        assert!(
            matches!(again, ApprovalRefused::AlreadyApprovedBy { .. }),
            "{again}"
        );
        assert_eq!(p.status, PromotionStatus::Requested);
        assert_eq!(
            p.approve(deployer("bob", 3), Some(&policy), ts(7)),
            Ok(ApprovalOutcome::Approved)
        );
        assert_eq!(p.decided_at, Some(ts(7)));
        let late = p
            .approve(deployer("carol", 4), Some(&policy), ts(8))
            .unwrap_err();
        assert_eq!(late, ApprovalRefused::AlreadyDecided { status: "approved" });
    }

    #[test]
    fn role_and_named_approvers() {
        let policy = ApprovalPolicy {
            approver_role: ApproverRole::Admin,
            approvers: vec!["lead".to_owned()],
            ..ApprovalPolicy::default()
        };
        let mut p = requested_by(1);
        let err = p
            .approve(deployer("lead", 2), Some(&policy), ts(5))
            .unwrap_err();
        assert!(err.to_string().contains("need the `admin` role"), "{err}");
        let admin = |name| Approver {
            name,
            token_id: token(3),
            role: Some(ApproverRole::Admin),
        };
        let err = p.approve(admin("ops"), Some(&policy), ts(5)).unwrap_err();
        assert!(err.to_string().contains("the approvers are lead"), "{err}");
        let viewer = Approver {
            name: "lead",
            token_id: token(4),
            role: None,
        };
        assert!(p.approve(viewer, Some(&policy), ts(5)).is_err());
        assert_eq!(
            p.approve(admin("lead"), Some(&policy), ts(6)),
            Ok(ApprovalOutcome::Approved)
        );
    }

    #[test]
    fn approvals_given_under_a_looser_policy_do_not_count() {
        let mut p = requested_by(1);
        let loose = ApprovalPolicy {
            required_approvals: 2,
            ..ApprovalPolicy::default()
        };
        assert_eq!(
            p.approve(deployer("alice", 2), Some(&loose), ts(5)),
            Ok(ApprovalOutcome::Pending { missing: 1 })
        );
        // The policy now wants admins: alice's deployer approval no longer counts.
        let strict = ApprovalPolicy {
            required_approvals: 2,
            approver_role: ApproverRole::Admin,
            ..ApprovalPolicy::default()
        };
        let admin = |name, n| Approver {
            name,
            token_id: token(n),
            role: Some(ApproverRole::Admin),
        };
        assert_eq!(
            p.approve(admin("ops", 3), Some(&strict), ts(6)),
            Ok(ApprovalOutcome::Pending { missing: 1 })
        );
        assert_eq!(
            p.approve(admin("lead", 4), Some(&strict), ts(7)),
            Ok(ApprovalOutcome::Approved)
        );
    }

    #[test]
    fn validation_names_the_field() {
        let zero = ApprovalPolicy {
            required_approvals: 0,
            ..ApprovalPolicy::default()
        };
        assert_eq!(
            zero.validate("approval").unwrap_err().field,
            "approval.required_approvals"
        );
        let too_few = ApprovalPolicy {
            required_approvals: 2,
            approvers: vec!["lead".to_owned()],
            ..ApprovalPolicy::default()
        };
        assert_eq!(
            too_few.validate("approval").unwrap_err().field,
            "approval.approvers"
        );
        assert!(ApprovalPolicy::default().validate("approval").is_ok());
    }
}
