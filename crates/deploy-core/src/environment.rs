//! `Environment`: a named set of targets (staging, prod) with its deployment hooks.

use serde::{Deserialize, Serialize};

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
    pub created_at: Timestamp,
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
