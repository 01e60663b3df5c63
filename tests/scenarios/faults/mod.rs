//! The fault-injection suite (issue #11): real processes, hosts and networks are killed, stopped, partitioned or filled mid-job, and every job must end terminal and consistent with what runs on the targets.
//!
//! These tests form the nextest test group `faults` (`.config/nextest.toml`): they
//! run one at a time, so the timing each one measures is not disturbed by another
//! fault test, and each one is bounded in count and in time. Everything they touch
//! is on loopback or inside a network namespace the test itself creates.
//!
//! Run only this group: `cargo nextest run -p deploy-tests faults::`.

mod agent_partition;
mod common;
mod disk_full;
mod kill_deployd;
mod postgres_outage;
mod replicas;
mod ssh_outage;
