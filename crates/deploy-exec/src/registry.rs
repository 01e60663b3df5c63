//! `ExecutorRegistry`: picks the executor for a target by its execution model (the spec's dispatch switch).

use std::collections::BTreeMap;
use std::sync::Arc;

use deploy_core::{ExecutionModel, Target};

use crate::errors::ExecError;
use crate::executor::Executor;

/// Executors by execution model, e.g. `register(ExecutionModel::Ssh, Arc::new(SshExecutor::new(..)))`
/// and `register(ExecutionModel::Winrm, Arc::new(WinrmExecutor::new(..)))`.
#[derive(Default, Clone)]
pub struct ExecutorRegistry {
    executors: BTreeMap<ExecutionModel, Arc<dyn Executor>>,
}

impl std::fmt::Debug for ExecutorRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.executors.keys()).finish()
    }
}

impl ExecutorRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `executor` for `model`, replacing any earlier one.
    pub fn register(&mut self, model: ExecutionModel, executor: Arc<dyn Executor>) -> &mut Self {
        self.executors.insert(model, executor);
        self
    }

    /// True when an executor is registered for `model`.
    pub fn supports(&self, model: ExecutionModel) -> bool {
        self.executors.contains_key(&model)
    }

    /// The executor for `target`: checks the target's type/model pairing first.
    pub fn for_target(&self, target: &Target) -> Result<Arc<dyn Executor>, ExecError> {
        target.validate().map_err(|e| {
            ExecError::invalid(
                format!("target `{}`", target.name),
                e.to_string(),
                "a valid target",
            )
        })?;
        let model = target.execution_model();
        self.executors
            .get(&model)
            .cloned()
            .ok_or_else(|| ExecError::Unsupported {
                model: model.as_str().to_owned(),
                target_type: target.target_type.as_str().to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::ExecContext;
    use crate::testing::FakeExecutor;
    use deploy_core::TargetType;
    use deploy_core::testing::{digest, name};

    #[tokio::test]
    async fn dispatches_by_model_and_names_what_is_missing() {
        let target = deploy_core::testing::ssh_target(1);
        let fake = FakeExecutor::default();
        fake.set_running(target.id, "web", digest(7));
        let mut registry = ExecutorRegistry::new();
        registry.register(ExecutionModel::Ssh, Arc::new(fake));
        let exec = registry.for_target(&target).unwrap();
        let ctx = ExecContext::quiet(std::time::Duration::from_secs(1));
        assert_eq!(
            exec.inspect(&target, &name("web"), &ctx).await.unwrap(),
            Some(digest(7))
        );

        let empty = ExecutorRegistry::new();
        let err = empty.for_target(&target).err().unwrap();
        assert_eq!(
            err.to_string(),
            "run a docker_host deploy with the ssh executor: no such executor is registered"
        );
        let mut bad = target.clone();
        bad.target_type = TargetType::EcsService;
        assert!(!registry.for_target(&bad).err().unwrap().is_retryable());
    }
}
