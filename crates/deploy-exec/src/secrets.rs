//! `SecretsProvider`: resolves a target's `credential_ref` to the secret (key or password); env and file implementations.

use async_trait::async_trait;
use deploy_core::CredentialRef;

use crate::errors::ExecError;

/// A secret value. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret text: pass it on, never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

/// Looks up secrets by reference.
#[async_trait]
pub trait SecretsProvider: Send + Sync {
    /// The secret `reference` names.
    async fn resolve(&self, reference: &CredentialRef) -> Result<Secret, ExecError>;

    /// The passphrase of the private key that `reference` names, if one is configured.
    async fn passphrase(&self, reference: &CredentialRef) -> Result<Option<Secret>, ExecError>;
}

fn secret_error(reference: &CredentialRef, detail: impl Into<String>) -> ExecError {
    ExecError::Secret {
        reference: reference.to_string(),
        detail: detail.into(),
    }
}

fn split<'a>(reference: &'a CredentialRef, scheme: &str) -> Result<&'a str, ExecError> {
    reference
        .as_str()
        .strip_prefix(scheme)
        .and_then(|r| r.strip_prefix(':'))
        .ok_or_else(|| {
            secret_error(
                reference,
                format!("this provider only resolves `{scheme}:` references"),
            )
        })
}

/// `env:NAME`: the secret is the value of environment variable `NAME`; the key
/// passphrase, if any, is in `NAME_PASSPHRASE`.
#[derive(Debug, Default, Clone, Copy)]
pub struct EnvSecrets;

impl EnvSecrets {
    fn var(reference: &CredentialRef, name: &str) -> Result<Option<Secret>, ExecError> {
        match std::env::var(name) {
            Ok(v) => Ok(Some(Secret(v))),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(secret_error(
                reference,
                format!("environment variable `{name}` is not UTF-8"),
            )),
        }
    }
}

#[async_trait]
impl SecretsProvider for EnvSecrets {
    async fn resolve(&self, reference: &CredentialRef) -> Result<Secret, ExecError> {
        let name = split(reference, "env")?;
        Self::var(reference, name)?.ok_or_else(|| {
            secret_error(
                reference,
                format!("environment variable `{name}` is not set"),
            )
        })
    }

    async fn passphrase(&self, reference: &CredentialRef) -> Result<Option<Secret>, ExecError> {
        let name = split(reference, "env")?;
        Self::var(reference, &format!("{name}_PASSPHRASE"))
    }
}

/// `file:/path`: the secret is the file's content; the key passphrase, if any, is in `/path.passphrase`.
#[derive(Debug, Default, Clone, Copy)]
pub struct FileSecrets;

impl FileSecrets {
    async fn read(reference: &CredentialRef, path: &str) -> Result<Option<Secret>, ExecError> {
        match tokio::fs::read_to_string(path).await {
            Ok(v) => Ok(Some(Secret(v))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(secret_error(
                reference,
                format!("cannot read `{path}`: {e}"),
            )),
        }
    }
}

#[async_trait]
impl SecretsProvider for FileSecrets {
    async fn resolve(&self, reference: &CredentialRef) -> Result<Secret, ExecError> {
        let path = split(reference, "file")?;
        Self::read(reference, path)
            .await?
            .ok_or_else(|| secret_error(reference, format!("file `{path}` does not exist")))
    }

    async fn passphrase(&self, reference: &CredentialRef) -> Result<Option<Secret>, ExecError> {
        let path = split(reference, "file")?;
        let Some(p) = Self::read(reference, &format!("{path}.passphrase")).await? else {
            return Ok(None);
        };
        Ok(Some(Secret(p.0.trim_end_matches(['\r', '\n']).to_owned())))
    }
}

/// Dispatches by scheme: `env:` to [`EnvSecrets`], `file:` to [`FileSecrets`].
#[derive(Debug, Default, Clone, Copy)]
pub struct DefaultSecrets;

impl DefaultSecrets {
    fn pick(reference: &CredentialRef) -> Result<&'static dyn SecretsProvider, ExecError> {
        match reference.as_str().split_once(':').map(|(s, _)| s) {
            Some("env") => Ok(&EnvSecrets),
            Some("file") => Ok(&FileSecrets),
            _ => Err(secret_error(
                reference,
                "no secrets provider for this scheme; expected env: or file:",
            )),
        }
    }
}

#[async_trait]
impl SecretsProvider for DefaultSecrets {
    async fn resolve(&self, reference: &CredentialRef) -> Result<Secret, ExecError> {
        Self::pick(reference)?.resolve(reference).await
    }

    async fn passphrase(&self, reference: &CredentialRef) -> Result<Option<Secret>, ExecError> {
        Self::pick(reference)?.passphrase(reference).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> CredentialRef {
        CredentialRef::parse(s).unwrap()
    }

    #[tokio::test]
    async fn file_secrets_and_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "KEYDATA").unwrap();
        let reference = r(&format!("file:{}", key.display()));
        let s = DefaultSecrets.resolve(&reference).await.unwrap();
        assert_eq!(s.expose(), "KEYDATA");
        assert_eq!(format!("{s:?}"), "Secret([REDACTED])");
        assert_eq!(DefaultSecrets.passphrase(&reference).await.unwrap(), None);
        std::fs::write(dir.path().join("key.passphrase"), "pw\n").unwrap();
        assert_eq!(
            DefaultSecrets.passphrase(&reference).await.unwrap(),
            Some(Secret::new("pw"))
        );
        let missing = r(&format!("file:{}/nope", dir.path().display()));
        let err = DefaultSecrets.resolve(&missing).await.unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(!err.is_retryable());
    }

    #[tokio::test]
    async fn env_secrets_name_the_variable_and_unknown_schemes_fail() {
        // PATH is always set; its value is not a secret, which keeps this test free of set_var.
        let s = DefaultSecrets.resolve(&r("env:PATH")).await.unwrap();
        assert_eq!(s.expose(), std::env::var("PATH").unwrap());
        let err = EnvSecrets
            .resolve(&r("env:DEPLOY_EXEC_SURELY_UNSET_VAR"))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "resolve credential `env:DEPLOY_EXEC_SURELY_UNSET_VAR`: environment variable `DEPLOY_EXEC_SURELY_UNSET_VAR` is not set"
        );
        assert!(DefaultSecrets.resolve(&r("vault:kv/x")).await.is_err());
        assert!(EnvSecrets.resolve(&r("file:/x")).await.is_err());
    }
}
