//! Registration and credential rotation that survive a lost answer or a crash: the agent proposes a credential it has written to its state dir first, and retries with it until the server's answer is stored.
//!
//! The server keeps only the sha256 of a credential, so it cannot hand a lost one out
//! again; but it recognises a retry that proposes the same credential (a registration
//! with the spent token, the same name and that credential; a rotation whose bearer
//! already is the proposed credential) and answers it as the first time. Hence the
//! order: pending file, request, `credentials.json`, removal of the pending file. A
//! crash anywhere in between leaves enough on disk for the next start to finish the
//! job ([`resume`]) without the operator.

use std::path::Path;

use deploy_api::agent::{
    AGENT_PROTOCOL_VERSION, AgentCredentials, RegisterAgentRequest, RotateCredentialRequest,
    is_agent_credential,
};
use tokio_util::sync::CancellationToken;

use crate::agent::with_retries;
use crate::client::{Client, ClientError, Secret};
use crate::credentials::{self, PendingCredential, Purpose, StoredCredentials};
use crate::errors::AgentRunError;

/// The pending credential for `purpose` left by an earlier attempt, else a new one,
/// written to the state dir before the caller sends it anywhere.
fn pending_for(state_dir: &Path, purpose: Purpose) -> Result<PendingCredential, AgentRunError> {
    let pending = match credentials::load_pending(state_dir)? {
        Some(p) if p.purpose == purpose => {
            if !is_agent_credential(&p.credential) {
                return Err(AgentRunError::Corrupt {
                    path: credentials::pending_path(state_dir),
                    detail: format!(
                        "the pending credential is not {}; remove the file",
                        deploy_api::agent::AGENT_CREDENTIAL_SHAPE
                    ),
                });
            }
            tracing::info!(
                ?purpose,
                "an earlier attempt left a proposed credential: proposing it again"
            );
            return Ok(p);
        }
        _ => PendingCredential::new(purpose),
    };
    credentials::store_pending(state_dir, &pending)?;
    Ok(pending)
}

/// After a refusal that proves the proposal was not adopted (a 4xx other than 401: the
/// request was refused before anything changed, a taken credential among them), the
/// next attempt proposes a new credential.
fn forget_refused(state_dir: &Path, e: &ClientError) {
    if let ClientError::Status { status, .. } = e
        && (400..500).contains(status)
        && let Err(e) = credentials::remove_pending(state_dir)
    {
        tracing::warn!("{e}");
    }
}

/// Stores the outcome, then forgets the pending credential (in that order: a crash
/// between the two leaves a pending file equal to the stored credential, which
/// [`resume`] recognises).
fn settle(state_dir: &Path, creds: &StoredCredentials) -> Result<(), AgentRunError> {
    credentials::store(state_dir, creds)?;
    credentials::remove_pending(state_dir)
}

/// Registers with the bootstrap `token` (`req.credential` is replaced by the pending
/// one), retrying transport errors and retryable statuses on every server until `stop`;
/// a lost answer is retried with the same token and credential. `Ok(None)`: stopped.
pub async fn register(
    client: &Client,
    state_dir: &Path,
    token: &Secret,
    mut req: RegisterAgentRequest,
    stop: &CancellationToken,
) -> Result<Option<StoredCredentials>, AgentRunError> {
    let pending = pending_for(state_dir, Purpose::Register)?;
    req.credential = Some(pending.credential.clone());
    let name = req.name.to_string();
    let configured = req.labels.clone();
    let answer = with_retries("register", stop, || client.register(token, &req))
        .await
        .map_err(|e| {
            forget_refused(state_dir, &e);
            match e {
                ClientError::Unauthorized { detail, .. } => AgentRunError::RegistrationRefused {
                    name: name.clone(),
                    status: 401,
                    detail,
                },
                ClientError::Status { status, detail, .. } => AgentRunError::RegistrationRefused {
                    name: name.clone(),
                    status,
                    detail,
                },
                ClientError::NotFound { detail, .. } => AgentRunError::RegistrationRefused {
                    name: name.clone(),
                    status: 404,
                    detail,
                },
                other => AgentRunError::Server {
                    what: "register".to_owned(),
                    detail: other.to_string(),
                },
            }
        })?;
    let Some(answer) = answer else {
        return Ok(None);
    };
    // The server sets the labels (its bootstrap token's): the agent adopts them. The
    // configured ones, if any, were checked to be among them.
    let labels = answer.labels.to_string();
    if answer.labels != configured {
        tracing::info!(configured = %configured, server = %labels, "the server's labels differ from the configured ones: adopted");
    }
    let creds = StoredCredentials::from_answer(client.server(), answer);
    settle(state_dir, &creds)?;
    tracing::info!(agent_id = %creds.agent_id, name, labels = %labels, server = %creds.server, "registered");
    Ok(Some(creds))
}

/// Rotates `creds` to a new credential made here; `Ok(None)`: stopped first (the
/// pending credential then waits for [`resume`]).
pub async fn rotate(
    client: &Client,
    state_dir: &Path,
    creds: &StoredCredentials,
    stop: &CancellationToken,
) -> Result<Option<StoredCredentials>, AgentRunError> {
    let pending = pending_for(state_dir, Purpose::Rotate)?;
    finish_rotation(client, state_dir, creds, &pending, stop).await
}

/// At start, with stored credentials: settles what an earlier run left pending. A
/// rotation cut short is finished (the server may already refuse the stored
/// credential); a pending credential equal to the stored one, or one left by a
/// registration (the stored credentials are its outcome), is only removed.
pub async fn resume(
    client: &Client,
    state_dir: &Path,
    creds: StoredCredentials,
    stop: &CancellationToken,
) -> Result<Option<StoredCredentials>, AgentRunError> {
    match credentials::load_pending(state_dir)? {
        None => Ok(Some(creds)),
        Some(p) if p.purpose == Purpose::Rotate && p.credential != creds.credential => {
            tracing::info!("a credential rotation was cut short: finishing it");
            let pending = pending_for(state_dir, Purpose::Rotate)?;
            finish_rotation(client, state_dir, &creds, &pending, stop).await
        }
        Some(_) => {
            credentials::remove_pending(state_dir)?;
            Ok(Some(creds))
        }
    }
}

/// Proposes `pending` with the stored credential as bearer; when that one is refused,
/// with `pending` itself as bearer: the rotation happened and its answer was lost, and
/// the server answers it again. Both refused: the agent was revoked.
async fn finish_rotation(
    client: &Client,
    state_dir: &Path,
    creds: &StoredCredentials,
    pending: &PendingCredential,
    stop: &CancellationToken,
) -> Result<Option<StoredCredentials>, AgentRunError> {
    let req = RotateCredentialRequest {
        protocol: AGENT_PROTOCOL_VERSION,
        credential: pending.credential.clone(),
    };
    let (old, new) = (creds.bearer(), pending.bearer());
    let answer = with_retries("rotate the credential", stop, || async {
        match client.rotate(&old, Some(&req)).await {
            Err(ClientError::Unauthorized { .. }) => client.rotate(&new, Some(&req)).await,
            other => other,
        }
    })
    .await
    .map_err(|e| {
        forget_refused(state_dir, &e);
        match e {
            ClientError::Unauthorized { detail, .. } => AgentRunError::CredentialRefused { detail },
            other => AgentRunError::Server {
                what: "rotate the credential".to_owned(),
                detail: other.to_string(),
            },
        }
    })?;
    let Some(answer) = answer else {
        return Ok(None);
    };
    // Labels change only by an admin; the answer shows the current ones.
    let labels = answer.labels.to_string();
    let rotated = rotated(creds, answer)?;
    settle(state_dir, &rotated)?;
    tracing::info!(agent_id = %rotated.agent_id, labels = %labels, "credential rotated and stored");
    Ok(Some(rotated))
}

/// The stored credentials after a rotation: same agent, same registering server.
fn rotated(
    creds: &StoredCredentials,
    answer: AgentCredentials,
) -> Result<StoredCredentials, AgentRunError> {
    if answer.agent_id != creds.agent_id {
        return Err(AgentRunError::Server {
            what: "rotate the credential".to_owned(),
            detail: format!(
                "the answer is for agent `{}`, this agent is `{}`",
                answer.agent_id, creds.agent_id
            ),
        });
    }
    Ok(StoredCredentials::from_answer(&creds.server, answer))
}

#[cfg(test)]
mod tests;
