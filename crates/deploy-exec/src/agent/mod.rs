//! The agent execution model, server side: the `AgentHub` (long-polls, deliveries, results, liveness) and the `AgentExecutor`.

mod executor;
mod hub;

pub use executor::AgentExecutor;
pub use hub::{
    AgentHub, AgentInfo, Completion, HubError, NoAgent, TOUCH_RESOLUTION, capability_name,
};

#[cfg(test)]
mod tests;
