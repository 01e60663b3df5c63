//! The workspace's one integration-test binary: cross-crate scenarios, one module each.

// Scenario helpers panic on broken fixtures on purpose: a panic is a test failure with its message.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod admin_token;
mod agent_e2e;
mod agent_load;
mod agent_proc;
mod agent_recovery;
mod app_secrets;
mod backup;
mod bad_input;
mod blue_green;
mod browser;
mod cli;
mod cli_stream;
mod console;
mod deployd_e2e;
mod deployd_proc;
mod engine_e2e;
mod engine_world;
mod faults;
mod fidelity;
mod hooks;
mod load;
mod log_follow;
mod operator;
mod packaging;
mod replicas;
mod tidy;
mod tracing_otlp;
mod update_speed;
mod upgrade;
mod webhooks;
