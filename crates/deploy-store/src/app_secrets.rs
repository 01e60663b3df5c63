//! Application secrets at rest: rows holding a sealed value (never the value), the key id that sealed it, a version and who wrote it.
//!
//! The store neither seals nor opens: deploy-server does, with the key from deployd's key
//! file. Replacing a secret bumps its version; re-sealing it under another key (a key
//! rotation) keeps the version, so what a deployment ran is still named by it.

use deploy_core::Timestamp;

/// One application secret as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct AppSecretRecord {
    /// A deploy-core `Name` (checked by the server before any write).
    pub name: String,
    /// The id of the key in the key file that sealed `sealed`.
    pub key_id: String,
    /// base64 of nonce || ciphertext || tag.
    pub sealed: String,
    /// 1 at creation, +1 at every replacement.
    pub version: u64,
    /// The environments (ids) the secret may be used in; empty: every environment.
    pub environments: Vec<String>,
    pub created_at: Timestamp,
    pub created_by: String,
    pub updated_at: Timestamp,
    pub updated_by: String,
}

impl std::fmt::Debug for AppSecretRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The sealed text is left out: it is no use in a log line.
        f.debug_struct("AppSecretRecord")
            .field("name", &self.name)
            .field("key_id", &self.key_id)
            .field("version", &self.version)
            .field("environments", &self.environments)
            .field("updated_at", &self.updated_at)
            .field("updated_by", &self.updated_by)
            .finish_non_exhaustive()
    }
}
