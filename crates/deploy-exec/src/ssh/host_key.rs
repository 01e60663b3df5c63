//! Host key verification: known_hosts (strict), a pinned SHA256 fingerprint, or explicit accept-new.

use std::path::{Path, PathBuf};

use deploy_core::HostKeyPolicy;
use russh::keys::{HashAlg, PublicKey};

use crate::errors::ExecError;

/// The OpenSSH SHA256 fingerprint (`SHA256:…`) of a public key.
pub fn fingerprint_of(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// How one connection's server key is checked.
#[derive(Debug, Clone)]
pub struct HostKeyCheck {
    pub host: String,
    pub port: u16,
    pub mode: CheckMode,
}

/// The resolved policy.
#[derive(Debug, Clone)]
pub enum CheckMode {
    KnownHosts { path: PathBuf, accept_new: bool },
    Pinned { fingerprint: String },
}

impl HostKeyCheck {
    /// Resolves `policy` with the executor's default known_hosts file.
    pub fn new(host: &str, port: u16, policy: &HostKeyPolicy, default_known_hosts: &Path) -> Self {
        let mode = match policy {
            HostKeyPolicy::KnownHosts => CheckMode::KnownHosts {
                path: default_known_hosts.to_path_buf(),
                accept_new: false,
            },
            HostKeyPolicy::KnownHostsFile { path } => CheckMode::KnownHosts {
                path: PathBuf::from(path.as_str()),
                accept_new: false,
            },
            HostKeyPolicy::AcceptNew => CheckMode::KnownHosts {
                path: default_known_hosts.to_path_buf(),
                accept_new: true,
            },
            HostKeyPolicy::Pinned { fingerprint } => CheckMode::Pinned {
                fingerprint: fingerprint.as_str().to_owned(),
            },
        };
        Self {
            host: host.to_owned(),
            port,
            mode,
        }
    }

    /// Accepts `key` or says precisely why not. In accept-new mode an unknown key is recorded.
    pub fn verify(&self, key: &PublicKey) -> Result<(), ExecError> {
        let presented = fingerprint_of(key);
        match &self.mode {
            CheckMode::Pinned { fingerprint } => {
                if &presented == fingerprint {
                    Ok(())
                } else {
                    Err(self.mismatch(presented, fingerprint.clone()))
                }
            }
            CheckMode::KnownHosts { path, accept_new } => {
                let known =
                    russh::keys::known_hosts::known_host_keys_path(&self.host, self.port, path)
                        .map_err(|e| {
                            ExecError::invalid(
                                "known_hosts file",
                                path.display().to_string(),
                                format!("a readable OpenSSH known_hosts file ({e})"),
                            )
                        })?;
                if known.iter().any(|(_, k)| k.key_data() == key.key_data()) {
                    return Ok(());
                }
                if !known.is_empty() {
                    let expected: Vec<String> = known
                        .iter()
                        .map(|(line, k)| format!("{} (line {line})", fingerprint_of(k)))
                        .collect();
                    return Err(self.mismatch(presented, expected.join(", ")));
                }
                if *accept_new {
                    return russh::keys::known_hosts::learn_known_hosts_path(
                        &self.host, self.port, key, path,
                    )
                    .map_err(|e| ExecError::KnownHostsWrite {
                        host: self.host.clone(),
                        port: self.port,
                        known_hosts: path.display().to_string(),
                        detail: e.to_string(),
                    });
                }
                Err(ExecError::HostKeyUnknown {
                    host: self.host.clone(),
                    port: self.port,
                    fingerprint: presented,
                    known_hosts: path.display().to_string(),
                })
            }
        }
    }

    fn mismatch(&self, presented: String, expected: String) -> ExecError {
        ExecError::HostKeyMismatch {
            host: self.host.clone(),
            port: self.port,
            fingerprint: presented,
            expected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deploy_core::{HostKeyFingerprint, UnixPath};

    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBNTtepHJr9AEIKMINiBXViz1vxkF/PYZ4P3G3oU6EAW";
    const KEY_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAEB3Fz3kJPRzmbU/drSNxSURhRtxBMH+geSaUQivSL3";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    #[test]
    fn known_hosts_strict_unknown_mismatch_and_accept_new() {
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("known_hosts");
        std::fs::write(&kh, format!("[127.0.0.1]:2222 {KEY_A}\n")).unwrap();
        let policy = HostKeyPolicy::KnownHostsFile {
            path: UnixPath::parse(kh.to_str().unwrap()).unwrap(),
        };
        let check = HostKeyCheck::new("127.0.0.1", 2222, &policy, Path::new("/nonexistent"));
        check.verify(&key(KEY_A)).unwrap();
        let err = check.verify(&key(KEY_B)).unwrap_err();
        assert!(matches!(err, ExecError::HostKeyMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&fingerprint_of(&key(KEY_B))));
        assert!(!err.is_retryable());

        let other_port = HostKeyCheck::new("127.0.0.1", 2223, &policy, Path::new("/x"));
        let err = other_port.verify(&key(KEY_A)).unwrap_err();
        assert!(matches!(err, ExecError::HostKeyUnknown { .. }), "{err}");

        let learn = HostKeyCheck::new("127.0.0.1", 2223, &HostKeyPolicy::AcceptNew, &kh);
        learn.verify(&key(KEY_B)).unwrap();
        // Recorded: now strict checking accepts it and refuses another key.
        let strict = HostKeyCheck::new("127.0.0.1", 2223, &HostKeyPolicy::KnownHosts, &kh);
        strict.verify(&key(KEY_B)).unwrap();
        assert!(matches!(
            strict.verify(&key(KEY_A)).unwrap_err(),
            ExecError::HostKeyMismatch { .. }
        ));
    }

    #[test]
    fn pinned_fingerprint() {
        let fp = fingerprint_of(&key(KEY_A));
        let policy = HostKeyPolicy::Pinned {
            fingerprint: HostKeyFingerprint::parse(&fp).unwrap(),
        };
        let check = HostKeyCheck::new("h", 22, &policy, Path::new("/x"));
        check.verify(&key(KEY_A)).unwrap();
        let err = check.verify(&key(KEY_B)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "verify the host key of h:22: the server presented {}, expected {fp}",
                fingerprint_of(&key(KEY_B))
            )
        );
    }
}
