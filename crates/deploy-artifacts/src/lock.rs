//! The compose lock (`docker-compose.lock.yml`): the whole pinned compose file (every key of every service, the image by digest, the merged environment, the `stella.*` labels, the top-level volumes and networks) plus the generation record under `x-generated`, content-addressed by its own digest.
//!
//! It is the file the executors bring up and the record a rollback re-deploys: its
//! digest covers everything that runs, so any change to the definition is a new lock.
//!
//! # The digest rule
//!
//! The lock is rendered with the digest field empty, as the last line of the
//! file: `  digest: ""` (two spaces, `digest: `, two double quotes, newline).
//! The digest is the lowercase hex sha256 of those exact bytes. The file then
//! carries it in place of the empty value: `  digest: "<64 hex>"`. To verify,
//! replace that last line by `  digest: ""` and hash again ([`verify_lock`]).
//! Hashing the bytes (not a re-serialization) makes every single-byte change,
//! comments and whitespace included, a mismatch.
//!
//! # Why `x-generated` and not the spec's `generated`
//!
//! Compose refuses unknown top-level keys except `x-` extension fields, so the
//! spec's top-level `generated:` makes the lock unusable by `docker-compose`.
//! Under `x-generated` the lock is itself a valid compose file.

use std::collections::BTreeMap;

use deploy_core::{ImageRef, PromotionId, ReleaseId, Timestamp, sha256_of};
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use crate::compose::comment;
use crate::errors::ArtifactError;
use crate::render::ResolvedService;
use crate::template::ComposeTemplate;
use crate::yaml_in;
use crate::yaml_out;

const EMPTY_DIGEST_LINE: &str = "  digest: \"\"\n";

/// What [`verify_lock`] read from a lock whose digest matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    pub release_id: ReleaseId,
    pub promotion_id: PromotionId,
    pub timestamp: Timestamp,
    /// The lock digest (64 lowercase hex).
    pub digest: String,
    /// Service name and pinned image, sorted by service name.
    pub services: Vec<(String, ImageRef)>,
}

/// The generation record of the lock.
pub(crate) struct Generated<'a> {
    pub release_id: ReleaseId,
    pub promotion_id: PromotionId,
    pub timestamp: &'a str,
}

/// Renders the lock and returns it with its digest.
pub(crate) fn render(
    header: &str,
    template: &ComposeTemplate,
    services: &[ResolvedService<'_>],
    generated: &Generated<'_>,
) -> (String, String) {
    let mut out = String::with_capacity(512 + services.len() * 900);
    comment(&mut out, header);
    crate::compose::body(&mut out, template, services);
    yaml_out::open(&mut out, 0, "x-generated");
    yaml_out::str_entry(&mut out, 2, "releaseId", &generated.release_id.to_string());
    yaml_out::str_entry(
        &mut out,
        2,
        "promotionId",
        &generated.promotion_id.to_string(),
    );
    yaml_out::str_entry(&mut out, 2, "timestamp", generated.timestamp);
    out.push_str(EMPTY_DIGEST_LINE);
    let digest = sha256_of(out.as_bytes()).hex().to_owned();
    out.truncate(out.len() - EMPTY_DIGEST_LINE.len());
    out.push_str(&digest_line(&digest));
    (out, digest)
}

fn digest_line(hex: &str) -> String {
    format!("  digest: \"{hex}\"\n")
}

/// A lock as read back: the compose document and its generation record.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LockDoc {
    #[serde(default)]
    #[expect(
        dead_code,
        reason = "read so that the shape is checked; the version is the template's"
    )]
    pub version: Option<String>,
    pub services: BTreeMap<String, Mapping>,
    #[serde(default)]
    pub volumes: Option<Value>,
    #[serde(default)]
    pub networks: Option<Value>,
    #[serde(rename = "x-generated")]
    generated: GeneratedDoc,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GeneratedDoc {
    release_id: String,
    promotion_id: String,
    timestamp: String,
    digest: String,
}

/// Parses a lock, recomputes its digest by the rule above and reports a mismatch.
pub fn verify_lock(bytes: &[u8]) -> Result<LockInfo, ArtifactError> {
    let doc: LockDoc = yaml_in::parse("compose lock", bytes)?;
    let text = yaml_in::check_size_and_utf8("compose lock", bytes)?;
    let recorded = doc.generated.digest.clone();
    if recorded.len() != 64
        || !recorded
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(ArtifactError::invalid(
            "compose lock x-generated.digest",
            &recorded,
            "64 lowercase hex characters",
        ));
    }
    let line = digest_line(&recorded);
    let Some(body) = text.strip_suffix(&line) else {
        return Err(ArtifactError::invalid(
            "compose lock last line",
            text.lines().last().unwrap_or_default(),
            format!("`{}`", line.trim_end()),
        ));
    };
    let mut canonical = String::with_capacity(text.len());
    canonical.push_str(body);
    canonical.push_str(EMPTY_DIGEST_LINE);
    let actual = sha256_of(canonical.as_bytes()).hex().to_owned();
    if actual != recorded {
        return Err(ArtifactError::LockDigestMismatch { recorded, actual });
    }
    let g = doc.generated;
    let release_id = ReleaseId::parse(&g.release_id).map_err(|e| {
        ArtifactError::invalid(
            "compose lock x-generated.releaseId",
            &g.release_id,
            e.to_string(),
        )
    })?;
    let promotion_id = PromotionId::parse(&g.promotion_id).map_err(|e| {
        ArtifactError::invalid(
            "compose lock x-generated.promotionId",
            &g.promotion_id,
            e.to_string(),
        )
    })?;
    let timestamp = Timestamp::parse(&g.timestamp).map_err(|e| {
        ArtifactError::invalid(
            "compose lock x-generated.timestamp",
            &g.timestamp,
            e.to_string(),
        )
    })?;
    let services = doc
        .services
        .iter()
        .map(|(name, s)| {
            let field = format!("compose lock service `{name}` image");
            let image = match s.get("image") {
                Some(Value::String(i)) => i,
                other => {
                    return Err(ArtifactError::invalid(
                        field,
                        other.map_or_else(|| "(none)".to_owned(), crate::compose_syntax::describe),
                        "an image pinned by digest",
                    ));
                }
            };
            ImageRef::parse(image)
                .map(|image| (name.clone(), image))
                .map_err(|e| ArtifactError::invalid(field, image, e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(LockInfo {
        release_id,
        promotion_id,
        timestamp,
        digest: recorded,
        services,
    })
}
