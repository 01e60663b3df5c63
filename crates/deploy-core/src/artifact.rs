//! `GeneratedArtifact` and `ArtifactKind`: the files a deployment renders, each content-addressed by its sha256.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::errors::ValidationError;
use crate::ids::{ArtifactId, JobId, TargetId};
use crate::name::Name;

/// The six artifact kinds of the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArtifactKind {
    /// Docker Compose file (YAML).
    ComposeFile,
    /// Compose file with every image pinned by digest (YAML).
    ComposeLock,
    /// Environment variables (`.env`).
    EnvFile,
    /// systemd service unit (`.service`).
    SystemdUnit,
    /// nginx configuration (`.conf`).
    NginxConfig,
    /// Deployment manifest (JSON).
    Manifest,
}

impl ArtifactKind {
    /// Every kind, in a fixed order.
    pub const ALL: [ArtifactKind; 6] = [
        Self::ComposeFile,
        Self::ComposeLock,
        Self::EnvFile,
        Self::SystemdUnit,
        Self::NginxConfig,
        Self::Manifest,
    ];

    /// The wire and database spelling, as in the spec's table.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ComposeFile => "compose-file",
            Self::ComposeLock => "compose-lock",
            Self::EnvFile => "env-file",
            Self::SystemdUnit => "systemd-unit",
            Self::NginxConfig => "nginx-config",
            Self::Manifest => "manifest",
        }
    }

    /// The format column of the spec's table.
    pub fn format(self) -> &'static str {
        match self {
            Self::ComposeFile | Self::ComposeLock => "YAML",
            Self::EnvFile => ".env",
            Self::SystemdUnit => ".service",
            Self::NginxConfig => ".conf",
            Self::Manifest => "JSON",
        }
    }

    /// The media type served when the artifact is downloaded.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::ComposeFile | Self::ComposeLock => "application/yaml",
            Self::Manifest => "application/json",
            Self::EnvFile | Self::SystemdUnit | Self::NginxConfig => "text/plain; charset=utf-8",
        }
    }
}

/// A rendered file, stored with its job and verifiable by its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratedArtifact {
    pub id: ArtifactId,
    pub job_id: JobId,
    /// The target it was rendered for; `None` for job-wide artifacts.
    pub target_id: Option<TargetId>,
    pub kind: ArtifactKind,
    /// File name on the target, e.g. `docker-compose.lock.yml`.
    pub file_name: Name,
    pub content: String,
    /// Length of `content` in bytes.
    pub size: u64,
    /// sha256 of `content`.
    pub sha256: Digest,
}

impl GeneratedArtifact {
    /// Builds an artifact, computing its size and digest from the content so they cannot disagree.
    pub fn new(
        id: ArtifactId,
        job_id: JobId,
        target_id: Option<TargetId>,
        kind: ArtifactKind,
        file_name: Name,
        content: String,
    ) -> Self {
        let sha256 = sha256_of(content.as_bytes());
        Self {
            id,
            job_id,
            target_id,
            kind,
            file_name,
            size: content.len() as u64,
            content,
            sha256,
        }
    }

    /// Checks that size and digest still describe the content (e.g. after loading from a store).
    pub fn verify(&self) -> Result<(), ValidationError> {
        let actual = sha256_of(self.content.as_bytes());
        if actual != self.sha256 || self.size != self.content.len() as u64 {
            return Err(ValidationError::new(
                format!("artifact `{}`.sha256", self.file_name),
                &self.sha256,
                format!(
                    "{actual} ({} bytes), the digest of its content",
                    self.content.len()
                ),
            ));
        }
        Ok(())
    }
}

/// The sha256 digest of `bytes`.
pub fn sha256_of(bytes: &[u8]) -> Digest {
    Digest::from_sha256(Sha256::digest(bytes).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn digest_and_size_come_from_the_content() {
        let a = GeneratedArtifact::new(
            artifact_id(1),
            job_id(1),
            None,
            ArtifactKind::EnvFile,
            Name::parse("app.env").unwrap(),
            String::new(),
        );
        assert_eq!(
            a.sha256.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(a.size, 0);
        assert!(a.verify().is_ok());
        let mut tampered = a.clone();
        tampered.content.push('x');
        assert!(
            tampered
                .verify()
                .unwrap_err()
                .to_string()
                .contains("the digest of its content")
        );
    }

    #[test]
    fn kinds_are_spelled_as_in_the_spec() {
        for k in ArtifactKind::ALL {
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
    }
}
