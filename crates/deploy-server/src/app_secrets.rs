//! Application secrets at rest: deployd's key file (created 0600, refused when group or others can read it), AES-256-GCM sealing bound to the secret's name and key id, rotation, and the engine's `AppSecrets` over the store.
//!
//! # The key file
//!
//! One key a line, `<id> <base64 of 32 random bytes>`; `#` starts a comment line. The
//! first key seals every write; the others only open what they sealed. Rotation: put a
//! new key on the first line and restart deployd: [`reseal_all`] re-seals every row under
//! it at start-up, after which the old lines may be removed.
//!
//! # A sealed value
//!
//! base64 of nonce (12 random bytes, fresh for every seal) || ciphertext || tag. The
//! associated data is the key id, the secret's name and its version: a ciphertext copied
//! to another row, relabelled with another key id, or an older version's ciphertext
//! written back over a newer one (a replay), does not open.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use deploy_core::{Name, Secret};
use deploy_engine::{AppSecrets, AppSecretsError, ResolvedSecret};
use deploy_store::{AppSecretRecord, Store, StoreError};

/// Length of a key, in bytes (AES-256).
pub const KEY_BYTES: usize = 32;

/// The id of the key a fresh key file gets.
const FIRST_KEY_ID: &str = "k1";

/// What can go wrong with the key file, sealing or opening.
#[derive(Debug, thiserror::Error)]
pub enum SecretKeyError {
    #[error("read the secrets key file `{path}`: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "secrets key file `{path}` has mode {mode:04o}; expected no access for group and others (chmod 600 {path})"
    )]
    Mode { path: PathBuf, mode: u32 },
    #[error(
        "secrets key file `{path}` line {line}: {problem}; expected `<id> <base64 of 32 bytes>`"
    )]
    Syntax {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    #[error(
        "secrets key file `{path}` holds no key; expected at least one line `<id> <base64 of 32 bytes>`"
    )]
    Empty { path: PathBuf },
    #[error("secret `{name}` is sealed under key `{key_id}`, which the key file does not hold")]
    UnknownKey { name: String, key_id: String },
    #[error(
        "secret `{name}` does not open under key `{key_id}` (a wrong key, or a row moved or altered)"
    )]
    Open { name: String, key_id: String },
    #[error("seal secret `{name}`: the system random source or the cipher failed")]
    Seal { name: String },
}

/// One key of the key file.
struct Key {
    id: String,
    key: LessSafeKey,
}

/// The keys of the key file: the first seals, every one opens what it sealed.
pub struct SecretKeys {
    keys: Vec<Key>,
    rng: SystemRandom,
}

impl fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("SecretKeys").field("ids", &ids).finish()
    }
}

/// What a key check seals (see [`SecretKeys::seal_check`]).
const KEY_CHECK_TEXT: &[u8] = b"deployd secrets key check";

fn key_check_aad(key_id: &str) -> Vec<u8> {
    format!("deploy-secrets-key-check\n{key_id}").into_bytes()
}

fn aad(key_id: &str, name: &str) -> Vec<u8> {
    format!("deploy-app-secret\n{key_id}\n{name}").into_bytes()
}

/// An application secret's associated data: its key id, name and version, so a sealed
/// value of an earlier version (or of another secret) written back into the row does
/// not open. Its own prefix keeps it apart from [`aad`]'s deliveries.
fn secret_aad(key_id: &str, name: &str, version: u64) -> Vec<u8> {
    format!("deploy-app-secret-versioned\n{key_id}\n{name}\n{version}").into_bytes()
}

impl SecretKeys {
    /// Reads the key file at `path`, creating it (mode 0600, one fresh key) when it does
    /// not exist. A file that group or others may read is refused.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretKeyError> {
        let io = |source| SecretKeyError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let mut key = [0u8; KEY_BYTES];
                SystemRandom::new()
                    .fill(&mut key)
                    .map_err(|_| SecretKeyError::Seal {
                        name: "(key file)".to_owned(),
                    })?;
                let text = format!(
                    "# deployd application-secrets key: keep it outside the database and back it up.\n# One key a line, `<id> <base64>`; the first seals, all open. Rotate: add a new first line, restart.\n{FIRST_KEY_ID} {}\n",
                    B64.encode(key)
                );
                let mut file = open_new_private(path).map_err(io)?;
                file.write_all(text.as_bytes()).map_err(io)?;
                file.sync_all().map_err(io)?;
            }
            Err(e) => return Err(io(e)),
        }
        check_mode(path)?;
        let text = std::fs::read_to_string(path).map_err(io)?;
        Self::parse(&text, path)
    }

    /// Reads a key file's text (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, SecretKeyError> {
        let mut keys: Vec<Key> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let syntax = |problem: String| SecretKeyError::Syntax {
                path: path.to_owned(),
                line: i + 1,
                problem,
            };
            let mut parts = line.split_whitespace();
            let (Some(id), Some(b64), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(syntax("not two fields".to_owned()));
            };
            let id = Name::parse(id).map_err(|e| syntax(format!("key id: {e}")))?;
            if keys.iter().any(|k| k.id == id.as_str()) {
                return Err(syntax(format!("key id `{id}` appears twice")));
            }
            // The key's text is never quoted in an error.
            let bytes = B64
                .decode(b64)
                .map_err(|_| syntax(format!("key `{id}` is not base64")))?;
            if bytes.len() != KEY_BYTES {
                return Err(syntax(format!("key `{id}` is {} bytes long", bytes.len())));
            }
            let unbound = UnboundKey::new(&AES_256_GCM, &bytes)
                .map_err(|_| syntax(format!("key `{id}` is refused by the cipher")))?;
            keys.push(Key {
                id: id.to_string(),
                key: LessSafeKey::new(unbound),
            });
        }
        if keys.is_empty() {
            return Err(SecretKeyError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(Self {
            keys,
            rng: SystemRandom::new(),
        })
    }

    /// The id of the key every write is sealed with.
    pub fn current_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Seals `value` for `name` (a stored agent delivery's context) under the current
    /// key: `(key id, sealed)`. Application secrets use [`Self::seal_secret`].
    pub fn seal(&self, name: &str, value: &[u8]) -> Result<(String, String), SecretKeyError> {
        self.seal_with(&self.keys[0], name, value, |id| aad(id, name))
    }

    /// Seals `value` for version `version` of the application secret `name` under the
    /// current key: `(key id, sealed)`.
    pub fn seal_secret(
        &self,
        name: &str,
        version: u64,
        value: &[u8],
    ) -> Result<(String, String), SecretKeyError> {
        self.seal_with(&self.keys[0], name, value, |id| {
            secret_aad(id, name, version)
        })
    }

    /// Seals `value` under `key` (`name` only names it in errors).
    fn seal_with(
        &self,
        key: &Key,
        name: &str,
        value: &[u8],
        aad: impl Fn(&str) -> Vec<u8>,
    ) -> Result<(String, String), SecretKeyError> {
        let failed = || SecretKeyError::Seal {
            name: name.to_owned(),
        };
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| failed())?;
        let mut in_out = value.to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(&key.id)),
                &mut in_out,
            )
            .map_err(|_| failed())?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&in_out);
        Ok((key.id.clone(), B64.encode(sealed)))
    }

    /// Opens what [`Self::seal`] sealed for `name` under `key_id`.
    pub fn open(&self, name: &str, key_id: &str, sealed: &str) -> Result<Vec<u8>, SecretKeyError> {
        self.open_with(name, key_id, sealed, &aad(key_id, name))
    }

    /// Opens version `version` of the application secret `name` sealed under `key_id`.
    pub fn open_secret(
        &self,
        name: &str,
        key_id: &str,
        version: u64,
        sealed: &str,
    ) -> Result<Vec<u8>, SecretKeyError> {
        self.open_with(name, key_id, sealed, &secret_aad(key_id, name, version))
    }

    fn open_with(
        &self,
        name: &str,
        key_id: &str,
        sealed: &str,
        aad: &[u8],
    ) -> Result<Vec<u8>, SecretKeyError> {
        let key = self.keys.iter().find(|k| k.id == key_id).ok_or_else(|| {
            SecretKeyError::UnknownKey {
                name: name.to_owned(),
                key_id: key_id.to_owned(),
            }
        })?;
        let refused = || SecretKeyError::Open {
            name: name.to_owned(),
            key_id: key_id.to_owned(),
        };
        let bytes = B64.decode(sealed).map_err(|_| refused())?;
        if bytes.len() < NONCE_LEN {
            return Err(refused());
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| refused())?;
        let mut in_out = rest.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(aad), &mut in_out)
            .map_err(|_| refused())?;
        Ok(plain.to_vec())
    }

    /// The check value of key `key_id` (see [`open_key_file`]): a fixed text sealed
    /// under that key with its own associated data, so it opens only under the same key
    /// bytes and can never stand for a secret or a delivery.
    fn seal_check(&self, key_id: &str) -> Result<String, SecretKeyError> {
        let name = format!("(check of key {key_id})");
        let key = self
            .keys
            .iter()
            .find(|k| k.id == key_id)
            .ok_or_else(|| SecretKeyError::Seal { name: name.clone() })?;
        let (_, sealed) = self.seal_with(key, &name, KEY_CHECK_TEXT, key_check_aad)?;
        Ok(sealed)
    }

    /// Whether `sealed` is key `key_id`'s check value under this file's key of that id.
    fn opens_check(&self, key_id: &str, sealed: &str) -> bool {
        self.open_with("(key check)", key_id, sealed, &key_check_aad(key_id))
            .is_ok_and(|plain| plain == KEY_CHECK_TEXT)
    }

    /// The ids of the file's keys, the sealing one first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// Opens a stored row.
    pub fn open_record(&self, record: &AppSecretRecord) -> Result<Vec<u8>, SecretKeyError> {
        self.open_secret(&record.name, &record.key_id, record.version, &record.sealed)
    }
}

#[cfg(unix)]
fn open_new_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_new_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(unix)]
fn check_mode(path: &Path) -> Result<(), SecretKeyError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|source| SecretKeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretKeyError::Mode {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_path: &Path) -> Result<(), SecretKeyError> {
    Ok(())
}

/// Re-seals under the current key every secret sealed under another one (a key
/// rotation); returns how many were re-sealed. A row replaced meanwhile is left alone
/// (its write sealed it under the current key already). A row no key opens stops it.
pub async fn reseal_all(store: &dyn Store, keys: &SecretKeys) -> Result<usize, ResealError> {
    let mut done = 0;
    for record in store.list_app_secrets().await? {
        if record.key_id == keys.current_id() {
            continue;
        }
        let value = keys.open_record(&record)?;
        let (key_id, sealed) = keys.seal_secret(&record.name, record.version, &value)?;
        if store
            .reseal_app_secret(&record.name, record.version, &key_id, &sealed)
            .await?
        {
            done += 1;
        }
    }
    Ok(done)
}

/// Opens the key file for `store`: refuses to create a new key file while the database
/// holds values sealed under earlier keys (a lost or unmounted file would otherwise be
/// replaced by a fresh key, and every stored secret would fail only at dispatch), and
/// refuses a key file whose key of an id differs from the one the database knows under
/// that id (replicas given different files). The first deployd to use a key id records
/// its check value; every later start, on any replica, must open it.
pub async fn open_key_file(
    store: &dyn Store,
    path: &Path,
    now: deploy_core::Timestamp,
) -> Result<SecretKeys, KeyFileError> {
    let known = store.secret_key_checks().await?;
    let exists = std::fs::symlink_metadata(path).is_ok();
    if !exists && !known.is_empty() {
        return Err(KeyFileError::Missing {
            path: path.to_owned(),
            ids: known
                .into_iter()
                .map(|(id, _)| id)
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let keys = SecretKeys::load_or_create(path)?;
    for id in keys.ids() {
        let recorded = match known.iter().find(|(k, _)| k == id) {
            Some((_, sealed)) => sealed.clone(),
            None => {
                let sealed = keys.seal_check(id)?;
                if store.put_secret_key_check(id, &sealed, now).await? {
                    continue;
                }
                // Another replica recorded this id meanwhile: its check decides.
                let again = store.secret_key_checks().await?;
                match again.into_iter().find(|(k, _)| k == id) {
                    Some((_, sealed)) => sealed,
                    None => continue,
                }
            }
        };
        if !keys.opens_check(id, &recorded) {
            return Err(KeyFileError::Mismatch {
                path: path.to_owned(),
                key_id: id.to_owned(),
            });
        }
    }
    Ok(keys)
}

/// Why [`open_key_file`] refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error(
        "no secrets key file at `{}`, but the database holds values sealed under key(s) {ids}: restore the key file (from a backup, or copy it from another deployd replica) instead of letting deployd make a new key that opens none of them", path.display()
    )]
    Missing { path: PathBuf, ids: String },
    #[error(
        "key `{key_id}` of the secrets key file `{}` is not the key the database knows as `{key_id}` (another replica or an earlier start used other key bytes under that id); give every deployd replica the same key file", path.display()
    )]
    Mismatch { path: PathBuf, key_id: String },
    #[error(transparent)]
    Key(#[from] SecretKeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why [`reseal_all`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ResealError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] SecretKeyError),
}

/// The engine's application secrets: rows of the store opened with the key file's keys.
#[derive(Clone)]
pub struct StoreSecrets {
    store: Arc<dyn Store>,
    keys: Arc<SecretKeys>,
}

impl StoreSecrets {
    pub fn new(store: Arc<dyn Store>, keys: Arc<SecretKeys>) -> Self {
        Self { store, keys }
    }
}

#[async_trait]
impl AppSecrets for StoreSecrets {
    async fn resolve(&self, name: &Name) -> Result<Option<ResolvedSecret>, AppSecretsError> {
        let Some(record) = self
            .store
            .get_app_secret(name.as_str())
            .await
            .map_err(|e| AppSecretsError {
                name: name.to_string(),
                reason: e.to_string(),
                retryable: true,
            })?
        else {
            return Ok(None);
        };
        let bytes = self
            .keys
            .open_record(&record)
            .map_err(|e| AppSecretsError {
                name: name.to_string(),
                reason: e.to_string(),
                retryable: false,
            })?;
        let value = String::from_utf8(bytes).map_err(|_| AppSecretsError {
            name: name.to_string(),
            reason: "the opened value is not UTF-8".to_owned(),
            retryable: false,
        })?;
        Ok(Some(ResolvedSecret {
            value: Secret::new(value),
            version: record.version,
            environments: record.environments,
        }))
    }

    async fn environments(&self, name: &Name) -> Result<Option<Vec<String>>, AppSecretsError> {
        self.store
            .get_app_secret(name.as_str())
            .await
            .map(|r| r.map(|r| r.environments))
            .map_err(|e| AppSecretsError {
                name: name.to_string(),
                reason: e.to_string(),
                retryable: true,
            })
    }
}

#[cfg(test)]
mod tests;
