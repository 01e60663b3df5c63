//! The test doubles of deploy-exec's traits (`FakeExecutor`, `FakeSecrets`), defined in deploy-exec so its own unit tests share them.

pub use deploy_exec::testing::*;
