//! `FakeSecrets`: a `SecretsProvider` over a fixed map of references to values.

use std::collections::BTreeMap;

use async_trait::async_trait;
use deploy_core::CredentialRef;

use crate::errors::ExecError;
use crate::secrets::{Secret, SecretsProvider};

/// Resolves the references of its map (`"env:NAME"` -> value); any other is a
/// secret error. No key has a passphrase.
#[derive(Debug, Clone, Default)]
pub struct FakeSecrets(pub BTreeMap<String, String>);

impl FakeSecrets {
    /// Secrets from `(reference, value)` pairs.
    pub fn new<R: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (R, V)>) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(r, v)| (r.into(), v.into()))
                .collect(),
        )
    }
}

#[async_trait]
impl SecretsProvider for FakeSecrets {
    async fn resolve(&self, reference: &CredentialRef) -> Result<Secret, ExecError> {
        self.0
            .get(reference.as_str())
            .map(Secret::new)
            .ok_or_else(|| ExecError::Secret {
                reference: reference.to_string(),
                detail: "not in the test map".into(),
            })
    }

    async fn passphrase(&self, _: &CredentialRef) -> Result<Option<Secret>, ExecError> {
        Ok(None)
    }
}
