//! Registration and rotation against a fake deployd that keeps the real one's rules (a spent token answers only the same name and credential again; a rotation whose bearer is the proposed credential is answered again) and loses chosen answers.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};

use deploy_api::agent::{AGENT_PROTOCOL_VERSION, RegisterAgentRequest, RotateCredentialRequest};
use deploy_core::testing::{agent_id, name};
use deploy_core::{AgentId, Labels};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::testing::{Log, Reply, Seen, fake_server_with};

const TOKEN: &str = "dpb_token";

/// The fake deployd's state.
#[derive(Debug, Default)]
struct Deployd {
    /// Name and credential the token registered, once spent.
    registered: Option<(String, String)>,
    /// The agent's valid credential (`None`: revoked, or not registered).
    credential: Option<String>,
    /// Paths whose next answer is lost (the server acts, the agent sees a cut connection).
    cut_next: BTreeSet<&'static str>,
}

fn credentials_json(id: AgentId, credential: &str) -> String {
    serde_json::json!({
        "protocol": AGENT_PROTOCOL_VERSION,
        "agent_id": id,
        "name": "web-1",
        "labels": { "env": "staging" },
        "credential": credential,
        "heartbeat_timeout_ms": 15_000,
    })
    .to_string()
}

const REGISTER: &str = "/api/v1/agent/register";
const ROTATE: &str = "/api/v1/agent/credential/rotate";

fn unauthorized() -> Reply {
    Reply::Answer(401, r#"{"detail":"refused"}"#.to_owned())
}

fn answer(state: &Mutex<Deployd>, r: &Seen) -> Reply {
    let mut s = state.lock().unwrap();
    let id = agent_id(1);
    let reply = match r.path.as_str() {
        REGISTER => {
            let req: RegisterAgentRequest = serde_json::from_str(&r.body).unwrap();
            let proposed = req.credential.clone().unwrap_or_default();
            match &s.registered {
                _ if r.bearer != TOKEN => unauthorized(),
                None => {
                    s.registered = Some((req.name.to_string(), proposed.clone()));
                    s.credential = Some(proposed.clone());
                    Reply::Answer(201, credentials_json(id, &proposed))
                }
                Some((n, c))
                    if *n == req.name.as_str()
                        && *c == proposed
                        && s.credential.as_ref() == Some(c) =>
                {
                    Reply::Answer(201, credentials_json(id, &proposed))
                }
                Some(_) => unauthorized(),
            }
        }
        ROTATE => {
            let req: RotateCredentialRequest = serde_json::from_str(&r.body).unwrap();
            if s.credential.as_deref() != Some(r.bearer.as_str()) {
                unauthorized()
            } else {
                s.credential = Some(req.credential.clone());
                Reply::Answer(200, credentials_json(id, &req.credential))
            }
        }
        other => panic!("unexpected request {other}"),
    };
    let path = if r.path == REGISTER { REGISTER } else { ROTATE };
    if s.cut_next.remove(path) {
        return Reply::Cut;
    }
    reply
}

async fn deployd(state: Deployd) -> (Client, Arc<Mutex<Deployd>>, Log) {
    let state = Arc::new(Mutex::new(state));
    let shared = state.clone();
    let (url, log) = fake_server_with(move |r| answer(&shared, r)).await;
    (Client::new(&url, None).unwrap(), state, log)
}

fn request() -> RegisterAgentRequest {
    RegisterAgentRequest {
        protocol: AGENT_PROTOCOL_VERSION,
        name: name("web-1"),
        capabilities: Vec::new(),
        labels: Labels::default(),
        agent_version: "test".to_owned(),
        credential: None,
    }
}

/// `(path, bearer, proposed credential)` of each request.
fn calls(log: &Log) -> Vec<(String, String, String)> {
    log.lock()
        .unwrap()
        .iter()
        .map(|r| {
            let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            (
                r.path.clone(),
                r.bearer.clone(),
                body["credential"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_lost_registration_answer_is_retried_with_the_same_token_and_credential() {
    let dir = tempfile::tempdir().unwrap();
    let (client, state, log) = deployd(Deployd {
        cut_next: [REGISTER].into(),
        ..Deployd::default()
    })
    .await;
    let stop = CancellationToken::new();
    let creds = register(&client, dir.path(), &Secret::new(TOKEN), request(), &stop)
        .await
        .unwrap()
        .expect("registered");
    let calls = calls(&log);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0], calls[1], "the retry is the same request");
    assert_eq!(
        calls[0].2, creds.credential,
        "the proposed credential is kept"
    );
    assert!(is_agent_credential(&creds.credential));
    assert_eq!(
        state.lock().unwrap().credential.as_deref(),
        Some(creds.credential.as_str())
    );
    assert_eq!(credentials::load(dir.path()).unwrap(), Some(creds));
    assert_eq!(mode(&credentials::path(dir.path())), 0o600);
    assert_eq!(credentials::load_pending(dir.path()).unwrap(), None);
}

#[tokio::test]
async fn a_registration_cut_by_a_crash_is_finished_by_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    // The previous run wrote its proposal, sent it and died before the answer: the server
    // registered the agent with it and spent the token.
    let pending = PendingCredential::new(Purpose::Register);
    credentials::store_pending(dir.path(), &pending).unwrap();
    let (client, _, log) = deployd(Deployd {
        registered: Some(("web-1".to_owned(), pending.credential.clone())),
        credential: Some(pending.credential.clone()),
        ..Deployd::default()
    })
    .await;
    let creds = register(
        &client,
        dir.path(),
        &Secret::new(TOKEN),
        request(),
        &CancellationToken::new(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(creds.credential, pending.credential);
    assert_eq!(calls(&log).len(), 1);
    assert_eq!(credentials::load_pending(dir.path()).unwrap(), None);
}

#[tokio::test]
async fn a_lost_rotation_answer_is_retried_with_the_new_credential_as_bearer() {
    let dir = tempfile::tempdir().unwrap();
    let old = credentials::new_credential();
    let (client, state, log) = deployd(Deployd {
        credential: Some(old.clone()),
        cut_next: [ROTATE].into(),
        ..Deployd::default()
    })
    .await;
    let creds = StoredCredentials {
        server: client.server().to_owned(),
        agent_id: agent_id(1),
        credential: old.clone(),
        heartbeat_timeout_ms: 15_000,
    };
    credentials::store(dir.path(), &creds).unwrap();
    let rotated = rotate(&client, dir.path(), &creds, &CancellationToken::new())
        .await
        .unwrap()
        .unwrap();
    let new = rotated.credential.clone();
    assert_ne!(new, old);
    assert_eq!(
        state.lock().unwrap().credential.as_deref(),
        Some(new.as_str())
    );
    // Lost answer; the old bearer refused (the rotation happened); the new one answered.
    let expected: Vec<(String, String, String)> = [(&old, &new), (&old, &new), (&new, &new)]
        .into_iter()
        .map(|(bearer, proposed)| (ROTATE.to_owned(), bearer.clone(), proposed.clone()))
        .collect();
    assert_eq!(calls(&log), expected);
    assert_eq!(
        credentials::load(dir.path()).unwrap(),
        Some(rotated.clone())
    );
    assert_eq!(rotated.server, creds.server);
    assert_eq!(credentials::load_pending(dir.path()).unwrap(), None);
}

#[tokio::test]
async fn the_next_start_finishes_a_cut_rotation_and_forgets_a_settled_one() {
    let dir = tempfile::tempdir().unwrap();
    let old = credentials::new_credential();
    let pending = PendingCredential::new(Purpose::Rotate);
    // The server switched to the proposal; the agent died before storing the answer.
    let (client, _, log) = deployd(Deployd {
        credential: Some(pending.credential.clone()),
        ..Deployd::default()
    })
    .await;
    let creds = StoredCredentials {
        server: client.server().to_owned(),
        agent_id: agent_id(1),
        credential: old,
        heartbeat_timeout_ms: 15_000,
    };
    credentials::store(dir.path(), &creds).unwrap();
    credentials::store_pending(dir.path(), &pending).unwrap();
    let stop = CancellationToken::new();
    let resumed = resume(&client, dir.path(), creds.clone(), &stop)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resumed.credential, pending.credential);
    assert_eq!(calls(&log).len(), 2, "old bearer refused, then the new one");
    assert_eq!(credentials::load_pending(dir.path()).unwrap(), None);

    // Died after storing the outcome, before removing the pending file: nothing to send.
    credentials::store_pending(dir.path(), &pending).unwrap();
    let again = resume(&client, dir.path(), resumed.clone(), &stop)
        .await
        .unwrap();
    assert_eq!(again, Some(resumed.clone()));
    assert_eq!(calls(&log).len(), 2);
    assert_eq!(credentials::load_pending(dir.path()).unwrap(), None);
    // Nothing pending: nothing to do.
    assert_eq!(
        resume(&client, dir.path(), resumed.clone(), &stop)
            .await
            .unwrap(),
        Some(resumed)
    );
}

#[tokio::test]
async fn a_revoked_agent_stops_and_a_refused_proposal_is_not_proposed_again() {
    let dir = tempfile::tempdir().unwrap();
    let (client, _, log) = deployd(Deployd::default()).await;
    let creds = StoredCredentials {
        server: client.server().to_owned(),
        agent_id: agent_id(1),
        credential: credentials::new_credential(),
        heartbeat_timeout_ms: 15_000,
    };
    let err = rotate(&client, dir.path(), &creds, &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, AgentRunError::CredentialRefused { .. }),
        "{err}"
    );
    assert_eq!(calls(&log).len(), 2, "both bearers tried");
    assert!(!err.to_string().contains(&creds.credential));

    // A 409 (say the name is taken): nothing was adopted, the next start proposes anew.
    let (url, _) = crate::testing::fake_server(|_, _| {
        (
            409,
            r#"{"detail":"agent name `web-1` is already taken"}"#.to_owned(),
        )
    })
    .await;
    let client = Client::new(&url, None).unwrap();
    let err = register(
        &client,
        dir.path(),
        &Secret::new(TOKEN),
        request(),
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, AgentRunError::RegistrationRefused { status: 409, .. }),
        "{err}"
    );
    assert_eq!(credentials::load_pending(dir.path()).unwrap(), None);
}
