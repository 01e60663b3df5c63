//! API tokens: generation, hashing (only the sha256 is stored), lifetimes, the first-start admin token and the local recovery of an admin token.

use deploy_api::{CreatedToken, Role};
use deploy_core::{Digest, Timestamp, sha256_of};
use deploy_store::{ApiTokenRecord, AuditActorKind, AuditRecord, Store, StoreError};
use uuid::Uuid;

use crate::errors::ServerError;

/// Prefix of generated tokens (makes them recognisable in secret scanners).
const TOKEN_PREFIX: &str = "dpl_";
/// Shortest token accepted from the operator (`DEPLOYD_ADMIN_TOKEN`).
const MIN_TOKEN_LEN: usize = 24;
/// The store has no "count tokens" query: this revoked record marks a database whose admin token was created.
const BOOTSTRAP_MARKER: &[u8] = b"deployd: the first admin token was created";

/// The shortest lifetime a token may be given (`expires_in_secs`): a minute.
pub const MIN_TOKEN_LIFETIME_SECS: u64 = 60;
/// The longest lifetime a token may be given: ten years (a longer one is "never" in
/// disguise; leave the expiry out for that).
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 10 * 365 * 24 * 3600;

/// When a token created at `now` with `expires_in_secs` = `secs` expires; out of
/// [`MIN_TOKEN_LIFETIME_SECS`]..=[`MAX_TOKEN_LIFETIME_SECS`] is refused (422).
pub fn expiry_in(now: Timestamp, secs: u64) -> Result<Timestamp, ServerError> {
    if !(MIN_TOKEN_LIFETIME_SECS..=MAX_TOKEN_LIFETIME_SECS).contains(&secs) {
        return Err(ServerError::unprocessable(
            format!(
                "expires_in_secs {secs} is out of range; expected {MIN_TOKEN_LIFETIME_SECS} (a minute) to {MAX_TOKEN_LIFETIME_SECS} (ten years), or none for a token that never expires"
            ),
            Some("expires_in_secs"),
        ));
    }
    Ok(now.saturating_add(std::time::Duration::from_secs(secs)))
}

/// The sha256 of a token, as stored.
pub fn hash_token(token: &str) -> Digest {
    sha256_of(token.as_bytes())
}

/// A new random token secret (`dpl_` and 256 random bits as hex).
pub fn generate_token() -> String {
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
        None => generate_token(),
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
        expires_at,
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
    /// True when the token was generated here (the caller hands it over once: deployd writes it to a 0600 file); false when the caller gave it.
    pub generated: bool,
}

/// Whether the database's first admin token was created (by any replica, ever).
pub async fn is_bootstrapped(store: &dyn Store) -> Result<bool, ServerError> {
    Ok(store
        .find_api_token(&sha256_of(BOOTSTRAP_MARKER))
        .await?
        .is_some())
}

/// On a database without the bootstrap marker: stores an admin token (`preset`,
/// or a generated one) and the marker. Later starts return `None`.
pub async fn bootstrap_admin(
    store: &dyn Store,
    preset: Option<String>,
    now: Timestamp,
) -> Result<Option<BootstrapToken>, ServerError> {
    let marker = sha256_of(BOOTSTRAP_MARKER);
    if is_bootstrapped(store).await? {
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

/// Who ran a local recovery (`deployd admin-token`), for its audit row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalActor {
    /// The operating-system user (`$USER`, else the uid), or `unknown`.
    pub user: String,
    /// Where the command ran: the data directory or the redacted database URL.
    pub place: String,
}

/// The audit log's route of a token made by `deployd admin-token` (no HTTP route).
pub const RECOVERY_ROUTE: &str = "deployd admin-token";

/// Recovery when every admin token is lost: stores a new admin token straight in the
/// database (the caller proved access to it, not to the API) and appends an audit row
/// saying so. The row's actor is the new token itself (the audit log has no kind for a
/// local operator); `remote` names the operating-system user and the place.
pub async fn recover_admin(
    store: &dyn Store,
    name: &str,
    expires_in_secs: Option<u64>,
    actor: &LocalActor,
    now: Timestamp,
) -> Result<CreatedToken, ServerError> {
    let expires_at = expires_in_secs.map(|s| expiry_in(now, s)).transpose()?;
    let created = store_token(store, name, Role::Admin, None, expires_at, now).await?;
    let after = serde_json::json!({
        "id": created.id,
        "name": created.name,
        "role": created.role,
        "expires_at": created.expires_at,
    });
    let record = AuditRecord {
        seq: 0,
        at: now,
        actor_kind: AuditActorKind::Token,
        actor_id: created.id.to_string(),
        actor_name: created.name.clone(),
        method: "LOCAL".to_owned(),
        route: RECOVERY_ROUTE.to_owned(),
        path: RECOVERY_ROUTE.to_owned(),
        entity_id: Some(created.id.to_string()),
        status: 201,
        remote: Some(format!("local user {} on {}", actor.user, actor.place)),
        before: None,
        after: Some(after.to_string()),
    };
    if let Err(e) = store.append_audit(&record).await {
        // No admin token without its audit row: the secret is never shown, so revoking
        // it loses nothing.
        if let Err(revoke) = store.revoke_api_token(created.id, now).await {
            tracing::warn!(token = %created.id, error = %revoke, "cannot revoke the unaudited admin token");
        }
        return Err(e.into());
    }
    Ok(created)
}
