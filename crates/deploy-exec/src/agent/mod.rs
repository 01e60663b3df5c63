//! The agent execution model, server side: the `AgentHub` (long-polls, deliveries, results, liveness) and the `AgentExecutor`.

mod executor;
mod hub;
mod relay;
mod sync;

pub use executor::{AgentExecutor, resolve_registry_auth};
pub use hub::{
    AgentHub, AgentInfo, Completion, HubError, NoAgent, TOUCH_RESOLUTION, capability_name,
};
pub use relay::{HubRelay, PollMark, RelayEnd, RelayResult, RelayState, RelayedDelivery};

#[cfg(test)]
mod tests;
