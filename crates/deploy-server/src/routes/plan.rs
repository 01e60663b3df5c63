//! `POST /api/v1/plan`: the dry run of a deploy (deployer): the waves, and per target and component the digest it would get and what runs there now.

use std::num::NonZeroU32;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use deploy_api::{PlanChange, PlanEntry, PlanRequest, PlanResponse, PlanWave, Role, SkippedTarget};
use deploy_core::{BlueGreenPhase, Strategy, WaveKind};
use deploy_engine::{Preview, PreviewEntry};

use crate::auth::authorize;
use crate::body::ApiJson;
use crate::errors::ServerError;
use crate::openapi::ProblemResponses;
use crate::resolve::{self, Source};
use crate::state::ServerState;

/// Parallelism when the request gives none (as for a job).
const DEFAULT_PARALLELISM: NonZeroU32 = match NonZeroU32::new(10) {
    Some(n) => n,
    None => NonZeroU32::MIN,
};

#[utoipa::path(
    post,
    path = "/plan",
    tag = "plan",
    security(("bearer" = [])),
    request_body = PlanRequest,
    responses((status = 200, description = "the plan (deployer); a target whose inspect failed or timed out carries the error", body = PlanResponse), ProblemResponses)
)]
pub(crate) async fn plan(
    State(state): State<ServerState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<PlanRequest>,
) -> Result<Json<PlanResponse>, ServerError> {
    authorize(&state, &headers, Role::Deployer).await?;
    let release = resolve::release(&state, &req.release, Source::Field("release")).await?;
    let environment =
        resolve::environment(&state, &req.environment, Source::Field("environment")).await?;
    let strategy = req.strategy.unwrap_or(Strategy::AllAtOnce);
    let parallelism = req.parallelism.unwrap_or(DEFAULT_PARALLELISM);
    let bound = state.config().plan_timeout;
    let preview = tokio::time::timeout(
        bound,
        state
            .plan_engine()
            .preview(release.id, environment.id, &strategy, parallelism),
    )
    .await
    .map_err(|_| {
        ServerError::Unavailable(format!(
            "the plan did not finish within {bound:?} (each target's inspect has its own bound; \
             the environment's targets did not all answer in time); retry, or plan a smaller environment",
        ))
    })??;
    Ok(Json(response(preview)))
}

fn response(preview: Preview) -> PlanResponse {
    PlanResponse {
        release_id: preview.release.id,
        release_name: preview.release.name.clone(),
        environment_id: preview.environment.id,
        environment_name: preview.environment.name.clone(),
        strategy: preview.strategy.as_str().to_owned(),
        waves: preview
            .waves
            .into_iter()
            .map(|w| PlanWave {
                index: w.wave.index,
                kind: wave_kind(w.wave.kind).to_owned(),
                entries: w.entries.into_iter().map(entry).collect(),
            })
            .collect(),
        skipped: preview
            .skipped
            .into_iter()
            .map(|t| SkippedTarget {
                target_id: t.id,
                target_name: t.name,
                reason: "disabled".to_owned(),
            })
            .collect(),
    }
}

fn wave_kind(kind: WaveKind) -> &'static str {
    match kind {
        WaveKind::All => "all",
        WaveKind::Batch => "batch",
        WaveKind::Canary => "canary",
        WaveKind::BlueGreen(BlueGreenPhase::DeployGreen) => "deploy_green",
        WaveKind::BlueGreen(BlueGreenPhase::VerifyGreen) => "verify_green",
        WaveKind::BlueGreen(BlueGreenPhase::CutOver) => "cut_over",
    }
}

fn entry(e: PreviewEntry) -> PlanEntry {
    let (running, error) = match e.running {
        Ok(r) => (r, None),
        Err(why) => (None, Some(why)),
    };
    let change = match (&e.digest, &running, &error) {
        (_, _, Some(_)) | (None, _, _) => PlanChange::Unknown,
        (Some(_), None, None) => PlanChange::Install,
        (Some(d), Some(r), None) if d == r => PlanChange::Unchanged,
        (Some(_), Some(_), None) => PlanChange::Update,
    };
    PlanEntry {
        target_id: e.target.id,
        target_name: e.target.name,
        component: e.component,
        digest: e.digest,
        running,
        change,
        error,
    }
}
