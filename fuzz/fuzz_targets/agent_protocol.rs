//! Fuzz target: every agent protocol message of deploy-api decodes from any bytes without panicking, and decode -> encode -> decode is the identity.
//!
//! Each input is tried as every message type, so a seed needs no type prefix:
//! the corpus is plain JSON documents as the agent and the server send them.
#![no_main]

use deploy_api::agent::{
    AgentAction, AgentCredentials, AgentError, AgentLogLine, AgentSummary, ComponentPayload,
    CreateBootstrapTokenRequest, CreatedBootstrapToken, DeployPayload, LogAck, LogChunkRequest,
    PollRequest, PollResponse, RegisterAgentRequest, RegistryAuth, ResultAck,
    RotateCredentialRequest, TaskDelivery, TaskKey, TaskOutcome, TaskResultRequest,
};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trip<T>(data: &[u8])
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let Ok(first) = serde_json::from_slice::<T>(data) else {
        return;
    };
    let name = std::any::type_name::<T>();
    let encoded = serde_json::to_vec(&first).unwrap_or_else(|e| panic!("{name} encodes: {e}"));
    let second: T = serde_json::from_slice(&encoded).unwrap_or_else(|e| {
        panic!(
            "{name} does not decode its own encoding: {e}\n{}",
            String::from_utf8_lossy(&encoded)
        )
    });
    assert_eq!(
        first, second,
        "{name}: decode -> encode -> decode changed the value"
    );
    let again = serde_json::to_vec(&second).unwrap_or_else(|e| panic!("{name} encodes: {e}"));
    assert_eq!(encoded, again, "{name}: the encoding is not stable");
}

fuzz_target!(|data: &[u8]| {
    round_trip::<CreateBootstrapTokenRequest>(data);
    round_trip::<CreatedBootstrapToken>(data);
    round_trip::<RegisterAgentRequest>(data);
    round_trip::<RotateCredentialRequest>(data);
    round_trip::<AgentCredentials>(data);
    round_trip::<AgentSummary>(data);
    round_trip::<TaskKey>(data);
    round_trip::<PollRequest>(data);
    round_trip::<PollResponse>(data);
    round_trip::<TaskDelivery>(data);
    round_trip::<AgentAction>(data);
    round_trip::<DeployPayload>(data);
    round_trip::<ComponentPayload>(data);
    round_trip::<RegistryAuth>(data);
    round_trip::<LogChunkRequest>(data);
    round_trip::<AgentLogLine>(data);
    round_trip::<LogAck>(data);
    round_trip::<TaskResultRequest>(data);
    round_trip::<TaskOutcome>(data);
    round_trip::<AgentError>(data);
    round_trip::<ResultAck>(data);
});
