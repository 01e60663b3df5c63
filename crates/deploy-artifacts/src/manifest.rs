//! The manifest (`manifest.json`): release, components, target, job and every other artifact's kind, file name, size and sha256; its own sha256 is the bundle digest.

use serde::Serialize;

use crate::render::{RenderInput, RenderedArtifact};

/// Version of the manifest's JSON shape; bumped on any change to it.
pub const MANIFEST_SCHEMA: u32 = 1;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    schema: u32,
    release: ReleaseEntry<'a>,
    environment: &'a str,
    target: TargetEntry<'a>,
    promotion_id: String,
    job_id: String,
    timestamp: String,
    lock_digest: &'a str,
    traffic: TrafficEntry,
    artifacts: Vec<ArtifactEntry<'a>>,
}

#[derive(Serialize)]
struct ReleaseEntry<'a> {
    id: String,
    name: &'a str,
    components: Vec<ComponentEntry<'a>>,
}

#[derive(Serialize)]
struct ComponentEntry<'a> {
    name: &'a str,
    image: String,
    digest: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TargetEntry<'a> {
    id: String,
    name: &'a str,
    #[serde(rename = "type")]
    target_type: &'static str,
}

#[derive(Serialize)]
struct TrafficEntry {
    live: &'static str,
    canary: u8,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactEntry<'a> {
    kind: &'static str,
    file_name: &'a str,
    size: usize,
    sha256: &'a str,
}

/// Renders the manifest (pretty JSON, fields in a fixed order, trailing newline).
pub(crate) fn render(
    input: &RenderInput<'_>,
    lock_digest: &str,
    artifacts: &[RenderedArtifact],
) -> String {
    let mut components: Vec<ComponentEntry<'_>> = input
        .release
        .components
        .iter()
        .map(|c| ComponentEntry {
            name: c.name.as_str(),
            image: format!("{}@{}", c.image.repository(), c.digest()),
            digest: c.digest().as_str(),
        })
        .collect();
    components.sort_by(|a, b| a.name.cmp(b.name));
    let manifest = Manifest {
        schema: MANIFEST_SCHEMA,
        release: ReleaseEntry {
            id: input.release.id.to_string(),
            name: input.release.name.as_str(),
            components,
        },
        environment: input.environment.as_str(),
        target: TargetEntry {
            id: input.target.id.to_string(),
            name: input.target.name.as_str(),
            target_type: input.target.target_type.as_str(),
        },
        promotion_id: input.promotion_id.to_string(),
        job_id: input.job_id.to_string(),
        timestamp: input.timestamp.to_rfc3339(),
        lock_digest,
        traffic: TrafficEntry {
            live: input.traffic.live.as_str(),
            canary: input.traffic.canary.map_or(0, deploy_core::Percent::get),
        },
        artifacts: artifacts
            .iter()
            .map(|a| ArtifactEntry {
                kind: a.kind.as_str(),
                file_name: a.file_name.as_str(),
                size: a.content.len(),
                sha256: a.sha256.as_str(),
            })
            .collect(),
    };
    // Serializing these plain structs cannot fail (string keys, no maps of other keys).
    let mut json = serde_json::to_string_pretty(&manifest).unwrap_or_default();
    json.push('\n');
    json
}
