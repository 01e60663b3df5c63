//! Tests of the whole render: fixtures, golden files, determinism, the real tools, and property tests.

pub(crate) mod fixtures;
mod props;
mod real_tools;
mod secret_refs;
mod snapshots;
