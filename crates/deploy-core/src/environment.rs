//! `Environment`: a named set of targets (staging, prod) with its deployment hooks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::approval::ApprovalPolicy;
use crate::container::valid_env_key;
use crate::errors::ValidationError;
use crate::ids::EnvironmentId;
use crate::name::Name;
use crate::runtime_policy::RuntimePolicy;
use crate::timestamp::Timestamp;
use crate::values::CommandSpec;

/// A deployment environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    pub id: EnvironmentId,
    pub name: Name,
    #[serde(default)]
    pub hooks: Hooks,
    /// Values of this environment (a different `DATABASE_URL` in staging and prod):
    /// each replaces the value of a service's variable of the same name, and gives
    /// one to a variable the service declares without a value.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Who must approve a promotion here; `None`: one approval by any deployer, the
    /// requester included.
    #[serde(default)]
    pub approval: Option<ApprovalPolicy>,
    /// The pipeline: environments in which a release must have completed a job before
    /// it may be promoted here (staging before prod).
    #[serde(default)]
    pub requires: Vec<EnvironmentId>,
    /// What this environment's containers may get from their hosts (privileges, host
    /// namespaces, binds…); the default refuses all of it. Set by an admin through its
    /// own route, so that an ordinary update cannot change it.
    #[serde(default)]
    pub runtime_policy: RuntimePolicy,
    /// Bumped by every update: a write names the version it read (stale: 409).
    #[serde(default)]
    pub version: u64,
    pub created_at: Timestamp,
}

impl Environment {
    /// Checks the variables: names `[A-Za-z_][A-Za-z0-9_]*` not starting `STELLA_`,
    /// values without NUL.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(policy) = &self.approval {
            policy.validate("approval")?;
        }
        if self.requires.contains(&self.id) {
            return Err(ValidationError::new(
                "requires",
                self.name.as_str(),
                "other environments: an environment cannot require itself",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(twice) = self.requires.iter().find(|e| !seen.insert(**e)) {
            return Err(ValidationError::new(
                "requires",
                twice,
                "each required environment once",
            ));
        }
        for (k, v) in &self.variables {
            if !valid_env_key(k) {
                return Err(ValidationError::new(
                    "variables",
                    k.escape_debug(),
                    "variable names of [A-Za-z_][A-Za-z0-9_]*",
                ));
            }
            if k.starts_with("STELLA_") {
                return Err(ValidationError::new(
                    "variables",
                    k,
                    "no `STELLA_` variables: the renderer sets them",
                ));
            }
            // The value is not quoted back: variables often hold credentials.
            if v.contains('\0') {
                return Err(ValidationError::new(
                    format!("variables.{k}"),
                    "(a value holding NUL)",
                    "a value without NUL (no container environment can carry one)",
                ));
            }
        }
        Ok(())
    }
}

/// Commands run on each target around its deploy, through the target's executor.
///
/// A failing pre-deploy hook fails the task before the running container is
/// touched; hook output goes to the task log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    #[serde(default)]
    pub pre_deploy: Option<CommandSpec>,
    #[serde(default)]
    pub post_deploy: Option<CommandSpec>,
}
