//! Application secrets on the wire: the value goes in (`PUT /api/v1/secrets/{name}`) and never comes out; listings carry names, versions and who wrote them.

use deploy_core::{Name, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Largest accepted secret value, in bytes.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// The body of `PUT /api/v1/secrets/{name}`: the value to store (sealed at once).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSecretRequest {
    /// UTF-8 text without NUL bytes, at most 64 KiB; line breaks, quotes and `$` travel as they are.
    pub value: String,
    /// The environments (names or ids) the secret may be used in; `[]`: every
    /// environment. Absent: every environment for a new secret, and the current list
    /// kept when a secret is replaced (a new value never widens its scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environments: Option<Vec<String>>,
}

impl std::fmt::Debug for PutSecretRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutSecretRequest")
            .field("value", &"[REDACTED]")
            .field("environments", &self.environments)
            .finish()
    }
}

/// A secret as listed and as answered to a write: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretSummary {
    #[schema(value_type = String)]
    pub name: Name,
    /// 1 at creation, +1 at every replacement.
    pub version: u64,
    /// The key (in deployd's key file) that sealed the stored value.
    pub key_id: String,
    /// The environments (names; the id of one deleted since) the secret may be used
    /// in; empty: every environment.
    #[serde(default)]
    pub environments: Vec<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    pub created_by: String,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    pub updated_by: String,
}
