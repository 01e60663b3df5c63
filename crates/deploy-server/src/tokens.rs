//! API tokens: generation, hashing (only the sha256 is stored) and the first-start admin token.

use deploy_api::{CreatedToken, Role};
use deploy_core::{Digest, Timestamp, sha256_of};
use deploy_store::{ApiTokenRecord, Store, StoreError};
use uuid::Uuid;

use crate::errors::ServerError;

/// Prefix of generated tokens (makes them recognisable in secret scanners).
const TOKEN_PREFIX: &str = "dpl_";
/// Shortest token accepted from the operator (`DEPLOYD_ADMIN_TOKEN`).
const MIN_TOKEN_LEN: usize = 24;
/// The store has no "count tokens" query: this revoked record marks a database whose admin token was created.
const BOOTSTRAP_MARKER: &[u8] = b"deployd: the first admin token was created";

/// The sha256 of a token, as stored.
pub fn hash_token(token: &str) -> Digest {
    sha256_of(token.as_bytes())
}

fn generate() -> String {
    format!(
        "{TOKEN_PREFIX}{}{}",
        Uuid::new_v4().simple(),
        Uuid::new_v4().simple()
    )
}

/// Stores a new token of `role` (the given secret, or a generated one) and returns it, secret included, once.
pub async fn create_token(
    store: &dyn Store,
    name: &str,
    role: Role,
    secret: Option<String>,
    now: Timestamp,
) -> Result<CreatedToken, ServerError> {
    store_token(store, name, role, secret, None, now).await
}

/// [`create_token`] of a generated token that stops being accepted at `expires_at`.
pub(crate) async fn create_token_expiring(
    store: &dyn Store,
    name: &str,
    role: Role,
    expires_at: Option<Timestamp>,
    now: Timestamp,
) -> Result<CreatedToken, ServerError> {
    store_token(store, name, role, None, expires_at, now).await
}

async fn store_token(
    store: &dyn Store,
    name: &str,
    role: Role,
    secret: Option<String>,
    expires_at: Option<Timestamp>,
    now: Timestamp,
) -> Result<CreatedToken, ServerError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(ServerError::bad_request(
            format!(
                "token name `{}` is invalid; expected 1 to 100 characters, none a control character",
                name.escape_debug()
            ),
            Some("name"),
        ));
    }
    let token = match secret {
        Some(s) if s.len() < MIN_TOKEN_LEN || s.chars().any(char::is_whitespace) => {
            return Err(ServerError::bad_request(
                format!(
                    "the given token is {} characters or contains whitespace; expected at least {MIN_TOKEN_LEN} characters without whitespace",
                    s.len()
                ),
                Some("token"),
            ));
        }
        Some(s) => s,
        None => generate(),
    };
    let record = ApiTokenRecord {
        id: Uuid::new_v4(),
        name: name.to_owned(),
        token_hash: hash_token(&token),
        scopes: vec![role.as_str().to_owned()],
        created_at: now,
        revoked_at: None,
        last_used_at: None,
        expires_at,
    };
    store.put_api_token(&record).await?;
    Ok(CreatedToken {
        id: record.id,
        name: record.name,
        role,
        token,
    })
}

/// True for the revoked record that marks a bootstrapped database (not a token anyone holds).
pub(crate) fn is_bootstrap_marker(record: &ApiTokenRecord) -> bool {
    record.token_hash == sha256_of(BOOTSTRAP_MARKER)
}

/// The admin token made on first start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    pub token: CreatedToken,
    /// True when the token was generated (and must be printed once); false when the operator gave it.
    pub generated: bool,
}

/// On a database without the bootstrap marker: stores an admin token (`preset`,
/// or a generated one) and the marker. Later starts return `None`.
pub async fn bootstrap_admin(
    store: &dyn Store,
    preset: Option<String>,
    now: Timestamp,
) -> Result<Option<BootstrapToken>, ServerError> {
    let marker = sha256_of(BOOTSTRAP_MARKER);
    if store.find_api_token(&marker).await?.is_some() {
        return Ok(None);
    }
    let generated = preset.is_none();
    let token = create_token(store, "bootstrap-admin", Role::Admin, preset, now).await?;
    let record = ApiTokenRecord {
        id: Uuid::new_v4(),
        name: "bootstrap-marker".to_owned(),
        token_hash: marker,
        scopes: Vec::new(),
        created_at: now,
        revoked_at: Some(now),
        last_used_at: None,
        expires_at: None,
    };
    match store.put_api_token(&record).await {
        Ok(()) | Err(StoreError::AlreadyExists { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Some(BootstrapToken { token, generated }))
}
