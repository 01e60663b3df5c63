//! The AWS default credential chain: environment, shared profile (with role chaining), web identity, container and instance-metadata sources, cached and refreshed before expiry.

pub(crate) mod chain;
pub(crate) mod container;
mod env;
mod imds;
pub(crate) mod profile;
mod roles;
pub(crate) mod source;
mod sts;

pub(crate) use chain::{AwsChain, AwsChains};
pub use env::AwsEnvironment;
