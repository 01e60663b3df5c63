//! Fixtures the runtime's integration tests share (a folder, so that cargo does not build it as a test of its own).

pub(crate) mod fixtures;
