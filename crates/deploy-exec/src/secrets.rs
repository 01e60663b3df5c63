//! `SecretsProvider`: resolves a target's `credential_ref` to the secret (key or password); env and file implementations.

use async_trait::async_trait;
use deploy_core::CredentialRef;
pub use deploy_core::Secret;

use crate::errors::ExecError;

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
            Ok(v) => Ok(Some(Secret::new(v))),
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
            Ok(v) => Ok(Some(Secret::new(v))),
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
        Ok(Some(Secret::new(
            p.expose().trim_end_matches(['\r', '\n']).to_owned(),
        )))
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

/// [`DefaultSecrets`] fenced in for a server whose API callers must not read
/// whatever the server process can: `env:NAME` only for names that start with
/// `env_prefix`, `file:/path` only for files that resolve (symlinks and `..`
/// followed) inside `file_dir`. Without the fence a target's `credential_ref` could
/// make the server send any of its environment variables or readable files to a
/// host of the caller's choosing as a "password".
#[derive(Debug, Clone)]
pub struct ScopedSecrets {
    env_prefix: String,
    file_dir: std::path::PathBuf,
}

impl ScopedSecrets {
    /// Allows `env:<env_prefix>…` and files under `file_dir`.
    pub fn new(env_prefix: impl Into<String>, file_dir: impl Into<std::path::PathBuf>) -> Self {
        Self {
            env_prefix: env_prefix.into(),
            file_dir: file_dir.into(),
        }
    }

    /// Refuses a reference outside the fence, naming the rule.
    async fn check(&self, reference: &CredentialRef, passphrase: bool) -> Result<(), ExecError> {
        match reference.as_str().split_once(':') {
            Some(("env", name)) => {
                if name.starts_with(&self.env_prefix) && name.len() > self.env_prefix.len() {
                    Ok(())
                } else {
                    Err(secret_error(
                        reference,
                        format!(
                            "environment variable `{name}` is outside the allowed ones; expected a name starting with `{}`",
                            self.env_prefix
                        ),
                    ))
                }
            }
            Some(("file", path)) => {
                let path = if passphrase {
                    format!("{path}.passphrase")
                } else {
                    path.to_owned()
                };
                let outside = || {
                    secret_error(
                        reference,
                        format!(
                            "file `{path}` is outside the secrets directory; expected a file under `{}`",
                            self.file_dir.display()
                        ),
                    )
                };
                // `..` is refused outright, so that a missing file's lexical check below
                // cannot be used to probe for paths outside the directory.
                if std::path::Path::new(&path)
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
                {
                    return Err(outside());
                }
                // A file that does not exist is reported by the provider itself.
                let resolved = match tokio::fs::canonicalize(&path).await {
                    Ok(p) => p,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return if std::path::Path::new(&path).starts_with(&self.file_dir) {
                            Ok(())
                        } else {
                            Err(outside())
                        };
                    }
                    Err(e) => {
                        return Err(secret_error(
                            reference,
                            format!("cannot resolve `{path}`: {e}"),
                        ));
                    }
                };
                let dir = tokio::fs::canonicalize(&self.file_dir)
                    .await
                    .map_err(|_| outside())?;
                if resolved.starts_with(&dir) {
                    Ok(())
                } else {
                    Err(outside())
                }
            }
            // Unknown schemes are refused by DefaultSecrets with their own message.
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl SecretsProvider for ScopedSecrets {
    async fn resolve(&self, reference: &CredentialRef) -> Result<Secret, ExecError> {
        self.check(reference, false).await?;
        DefaultSecrets.resolve(reference).await
    }

    async fn passphrase(&self, reference: &CredentialRef) -> Result<Option<Secret>, ExecError> {
        self.check(reference, false).await?;
        self.check(reference, true).await?;
        DefaultSecrets.passphrase(reference).await
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

    #[tokio::test]
    async fn scoped_secrets_stay_inside_their_prefix_and_directory() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets");
        std::fs::create_dir(&secrets).unwrap();
        std::fs::write(secrets.join("key"), "KEYDATA").unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "NOT FOR THE API").unwrap();
        std::os::unix::fs::symlink(&outside, secrets.join("link")).unwrap();
        let scoped = ScopedSecrets::new("PATH", &secrets);

        let inside = r(&format!("file:{}/key", secrets.display()));
        assert_eq!(scoped.resolve(&inside).await.unwrap().expose(), "KEYDATA");
        assert_eq!(scoped.passphrase(&inside).await.unwrap(), None);
        for refused in [
            format!("file:{}", outside.display()),
            format!("file:{}/link", secrets.display()),
            format!("file:{}/../outside", secrets.display()),
            format!("file:{}/../no-such-file", secrets.display()),
            "file:/etc/hostname".to_owned(),
        ] {
            let err = scoped.resolve(&r(&refused)).await.unwrap_err().to_string();
            assert!(
                err.contains("is outside the secrets directory"),
                "{refused}: {err}"
            );
            assert!(!err.contains("NOT FOR THE API"), "{err}");
        }
        let missing = r(&format!("file:{}/nope", secrets.display()));
        let err = scoped.resolve(&missing).await.unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");

        // PATH is always set and starts with the prefix `PATH`... only when it is longer.
        let err = scoped
            .resolve(&r("env:PATH"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("expected a name starting with `PATH`"),
            "{err}"
        );
        let scoped = ScopedSecrets::new("PAT", &secrets);
        assert!(scoped.resolve(&r("env:PATH")).await.is_ok());
        let err = scoped
            .resolve(&r("env:HOME"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("`HOME` is outside the allowed ones"), "{err}");
    }
}
