//! Container labels written and read by the agent: the ones deploy-docker defines for every transport.

pub use deploy_docker::labels::*;
