//! Webhook notifications: the dispatcher that sends the deliveries the store wrote with each job transition and promotion request, signed, with retries.

mod dispatcher;
pub(crate) mod keys;
mod payload;
mod schedule;
mod signature;

pub use dispatcher::{Notifier, NotifierConfig, NotifierCounters};
pub use keys::{ResealKeysError, reseal_all as reseal_webhook_keys};
pub use schedule::RetrySchedule;
pub use signature::{sign, verify};
