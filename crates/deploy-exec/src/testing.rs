//! Test doubles of this crate's traits, shared by every crate's tests: an in-memory executor and a secrets map.
//!
//! Compiled for this crate's own tests and, with the `testing` feature, for other
//! crates' (through `deploy-testkit`'s `exec` feature). They live here, not in
//! deploy-testkit, because this crate's unit tests use them too: a testkit that
//! depends on deploy-exec would hand those tests a second copy of the traits.

mod executor;
mod secrets;

pub use executor::{Behaviour, FakeExecutor, fake_addr};
pub use secrets::FakeSecrets;
