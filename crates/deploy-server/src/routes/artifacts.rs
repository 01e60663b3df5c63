//! Artifact routes: a job's rendered artifacts, listed without content, and one artifact's content with its sha256.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use deploy_api::{ArtifactSummary, Role};
use deploy_core::{ArtifactKind, JobId, TargetId};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::authorize;
use crate::errors::ServerError;
use crate::openapi::ProblemResponses;
use crate::params::{self, parse_id};
use crate::state::ServerState;

type ApiResult<T> = Result<T, ServerError>;

#[utoipa::path(get, path = "/jobs/{id}/artifacts", tag = "jobs", security(("bearer" = [])), params(("id" = String, Path, description = "job id")), responses((status = 200, description = "the job's artifacts, without content", body = Vec<ArtifactSummary>), ProblemResponses))]
pub(crate) async fn list_artifacts(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<ArtifactSummary>>> {
    authorize(&state, &headers, Role::Viewer).await?;
    let id = parse_id("job", &id, JobId::parse)?;
    let job = state.store().get_job(id).await?;
    Ok(Json(
        job.artifacts
            .into_iter()
            .map(ArtifactSummary::from)
            .collect(),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ArtifactQuery {
    /// The target the artifact was rendered for (when the job has several targets).
    target: Option<String>,
    /// The file name (when a target has several artifacts of the kind, e.g. one env
    /// file per service: `web.env`).
    file: Option<String>,
}

/// The artifact's content, with its sha256 in `X-Content-Sha256` and the `ETag`.
#[utoipa::path(get, path = "/jobs/{id}/artifacts/{kind}", tag = "jobs", security(("bearer" = [])), params(("id" = String, Path, description = "job id"), ("kind" = String, Path, description = "artifact kind, e.g. `manifest`"), ArtifactQuery), responses((status = 200, description = "the content; its sha256 in `X-Content-Sha256` and the ETag", body = String, content_type = "application/octet-stream"), ProblemResponses))]
pub(crate) async fn get_artifact(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path((id, kind)): Path<(String, String)>,
    query: Result<Query<ArtifactQuery>, QueryRejection>,
) -> ApiResult<Response> {
    authorize(&state, &headers, Role::Viewer).await?;
    let query = params::query(query)?;
    let id = parse_id("job", &id, JobId::parse)?;
    let kind = ArtifactKind::ALL
        .into_iter()
        .find(|k| k.as_str() == kind)
        .ok_or_else(|| {
            let known: Vec<&str> = ArtifactKind::ALL.iter().map(|k| k.as_str()).collect();
            ServerError::bad_request(
                format!(
                    "artifact kind `{kind}` is unknown; expected one of {}",
                    known.join(", ")
                ),
                Some("kind"),
            )
        })?;
    let target = query
        .target
        .as_deref()
        .map(|t| {
            TargetId::parse(t).map_err(|e| {
                ServerError::bad_request(format!("target id `{t}` is invalid: {e}"), Some("target"))
            })
        })
        .transpose()?;
    let job = state.store().get_job(id).await?;
    let file = query.file.as_deref();
    let mut matching: Vec<_> = job
        .artifacts
        .into_iter()
        .filter(|a| {
            a.kind == kind
                && (target.is_none() || a.target_id == target)
                && file.is_none_or(|f| a.file_name.as_str() == f)
        })
        .collect();
    if matching.len() > 1 {
        let targets: std::collections::BTreeSet<_> = matching.iter().map(|a| a.target_id).collect();
        let (hint, field) = if target.is_none() && targets.len() > 1 {
            ("one per target; pass ?target=<target id>", "target")
        } else {
            let files: Vec<&str> = matching.iter().map(|a| a.file_name.as_str()).collect();
            return Err(ServerError::bad_request(
                format!(
                    "job `{id}` has several `{}` artifacts for this target ({}); pass ?file=<file name>",
                    kind.as_str(),
                    files.join(", ")
                ),
                Some("file"),
            ));
        };
        return Err(ServerError::bad_request(
            format!(
                "job `{id}` has several `{}` artifacts ({hint})",
                kind.as_str()
            ),
            Some(field),
        ));
    }
    let artifact = matching.pop().ok_or_else(|| {
        let what = match file {
            Some(f) => format!("`{}` artifact `{f}`", kind.as_str()),
            None => format!("`{}` artifact", kind.as_str()),
        };
        ServerError::NotFound(format!("job `{id}` has no {what}"))
    })?;
    let sha = artifact.sha256.to_string();
    let mut response = artifact.content.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(kind.media_type()),
    );
    if let Ok(v) = HeaderValue::from_str(&sha) {
        h.insert("x-content-sha256", v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{sha}\"")) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) =
        HeaderValue::from_str(&format!("attachment; filename=\"{}\"", artifact.file_name))
    {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}
