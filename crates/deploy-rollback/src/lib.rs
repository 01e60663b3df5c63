//! deploy-rollback: finds each target's last-known-good digest and plans the rollback job that restores it.
//!
//! Pure functions over history the engine reads from the store, so the rules
//! are testable without a database and identical for every executor.

mod errors;
mod known_good;
mod plan;
mod readiness;

pub use errors::RollbackError;
pub use known_good::{KnownGood, LastKnownGood, SlotKey};
pub use plan::{ROLLBACK_PARALLELISM, RollbackPlan, RollbackRequest, Unrestorable, plan_rollback};
pub use readiness::{SlotReadiness, readiness};
