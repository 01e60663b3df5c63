//! `Environment`: a named set of targets (staging, prod) with its deployment hooks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::container::valid_env_key;
use crate::errors::ValidationError;
use crate::ids::EnvironmentId;
use crate::name::Name;
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
    pub created_at: Timestamp,
}

impl Environment {
    /// Checks the variables: names `[A-Za-z_][A-Za-z0-9_]*`, values without NUL or a
    /// line break (the env-file the systemd unit reads holds one per line).
    pub fn validate(&self) -> Result<(), ValidationError> {
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
            if v.contains(['\0', '\n', '\r']) {
                return Err(ValidationError::new(
                    format!("variables.{k}"),
                    v.escape_debug(),
                    "a value without NUL or a line break",
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
