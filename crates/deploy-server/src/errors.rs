//! `ServerError`: why a request failed, and its problem+json response (status and stable `type`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use deploy_api::{PROBLEM_MEDIA_TYPE, Problem, ProblemType, Role};
use deploy_core::ApprovalRefused;
use deploy_engine::EngineError;
use deploy_store::StoreError;
use thiserror::Error;

/// A request failed.
#[derive(Debug, Error)]
pub enum ServerError {
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// A token past its `expires_at` (401). Only the presented token's own expiry is
    /// told: its holder knows the token, and nothing about any other token is.
    #[error("the {what} expired at {at}; ask an admin for a new one")]
    Expired {
        what: &'static str,
        at: deploy_core::Timestamp,
    },
    #[error("role `{role}` may not do this; it needs `{required}`")]
    Forbidden { role: Role, required: Role },
    /// A registration claims an agent name, label or capability its bootstrap token does
    /// not allow (403).
    #[error("{0}")]
    IdentityForbidden(String),
    #[error("{detail}")]
    BadRequest {
        detail: String,
        field: Option<String>,
    },
    #[error("{0}")]
    NotFound(String),
    /// The route exists, but not with this method (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request collides with the current state (409), e.g. a name already taken.
    #[error("{0}")]
    Conflict(String),
    #[error("{detail}")]
    Unprocessable {
        detail: String,
        field: Option<String>,
    },
    /// The server cannot answer now (503), e.g. a plan past its time bound.
    #[error("{0}")]
    Unavailable(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// A body sent with a `Content-Type` other than JSON (415).
    #[error("content type `{0}` is not supported; send the body as application/json")]
    UnsupportedMediaType(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl ServerError {
    pub(crate) fn bad_request(detail: impl Into<String>, field: Option<&str>) -> Self {
        Self::BadRequest {
            detail: detail.into(),
            field: field.map(str::to_owned),
        }
    }

    /// A service definition (compose template) that breaks a rule: 422 with the
    /// field's path inside the request (`template.services.web.ports[0]`).
    pub(crate) fn template(e: deploy_artifacts::ArtifactError) -> Self {
        let field = template_field(&e);
        Self::Unprocessable {
            detail: format!("template: {e}"),
            field: Some(field),
        }
    }

    pub(crate) fn unprocessable(detail: impl Into<String>, field: Option<&str>) -> Self {
        Self::Unprocessable {
            detail: detail.into(),
            field: field.map(str::to_owned),
        }
    }

    /// The problem document of this error.
    pub fn problem(&self) -> Problem {
        let kind = self.kind();
        let detail = match kind {
            // Internal details go to the log, not to the client.
            ProblemType::Internal => "internal error; see the server log".to_owned(),
            // The driver's words (addresses, pool internals) go to the log too.
            ProblemType::Unavailable if self.database_unavailable() => {
                DATABASE_UNAVAILABLE.to_owned()
            }
            _ => self.to_string(),
        };
        let problem = Problem::new(kind, detail);
        match self {
            Self::BadRequest { field: Some(f), .. }
            | Self::Unprocessable { field: Some(f), .. } => problem.with_field(f.clone()),
            Self::Store(StoreError::NameTaken { .. })
            | Self::Engine(EngineError::Store(StoreError::NameTaken { .. })) => {
                problem.with_field("name")
            }
            Self::Engine(EngineError::Artifacts(e)) => problem.with_field(template_field(e)),
            _ => problem,
        }
    }

    /// The database could not be reached (restart, failover, network): a 503 the
    /// client may retry, not a 500.
    fn database_unavailable(&self) -> bool {
        match self {
            Self::Store(e) | Self::Engine(EngineError::Store(e)) => e.is_unavailable(),
            _ => false,
        }
    }

    fn kind(&self) -> ProblemType {
        match self {
            Self::Unauthenticated(_) | Self::Expired { .. } => ProblemType::Unauthorized,
            Self::Forbidden { .. } | Self::IdentityForbidden(_) => ProblemType::Forbidden,
            Self::BadRequest { .. } => ProblemType::BadRequest,
            Self::NotFound(_) => ProblemType::NotFound,
            Self::MethodNotAllowed(_) => ProblemType::MethodNotAllowed,
            Self::Conflict(_) => ProblemType::Conflict,
            Self::Unprocessable { .. } => ProblemType::Unprocessable,
            Self::PayloadTooLarge { .. } => ProblemType::PayloadTooLarge,
            Self::UnsupportedMediaType(_) => ProblemType::UnsupportedMediaType,
            Self::Unavailable(_) => ProblemType::Unavailable,
            Self::Store(e) => store_kind(e),
            Self::Engine(e) => match e {
                EngineError::Store(e) => store_kind(e),
                EngineError::PromotionNotApproved { .. }
                | EngineError::NotRunningHere { .. }
                | EngineError::ReleaseArchived { .. }
                | EngineError::PipelineIncomplete { .. }
                | EngineError::PromotionChanged { .. } => ProblemType::Conflict,
                EngineError::ApprovalRefused(refused) => match refused {
                    ApprovalRefused::AlreadyDecided { .. }
                    | ApprovalRefused::AlreadyApprovedBy { .. } => ProblemType::Conflict,
                    ApprovalRefused::SelfApproval { .. }
                    | ApprovalRefused::NotAnApprover { .. } => ProblemType::Forbidden,
                },
                EngineError::Rollback(_) => ProblemType::Conflict,
                EngineError::Plan(_)
                | EngineError::Artifacts(_)
                | EngineError::InvalidRequest(_) => ProblemType::Unprocessable,
                EngineError::Health(_) | EngineError::Stalled { .. } => ProblemType::Internal,
            },
        }
    }
}

/// Where in a request a service definition error lies: `template.<path>` for a
/// field the error names by its path, else `template`.
fn template_field(e: &deploy_artifacts::ArtifactError) -> String {
    use deploy_artifacts::ArtifactError;
    match e {
        ArtifactError::Invalid { field, .. } if field.starts_with("services.") => {
            format!("template.{field}")
        }
        ArtifactError::UnknownComponent { service, .. } => {
            format!("template.services.{service}.componentName")
        }
        ArtifactError::PolicyRefused { service, key, .. } => {
            format!("template.services.{service}.{key}")
        }
        _ => "template".to_owned(),
    }
}

/// The detail of a 503 caused by an unreachable database.
pub(crate) const DATABASE_UNAVAILABLE: &str =
    "the database is unavailable (restarting or unreachable); try again shortly";

/// Seconds a client is asked to wait (`Retry-After`) when the database is unavailable.
const RETRY_AFTER_SECS: &str = "2";

fn store_kind(e: &StoreError) -> ProblemType {
    if e.is_unavailable() {
        return ProblemType::Unavailable;
    }
    match e {
        StoreError::NotFound { .. } => ProblemType::NotFound,
        StoreError::AlreadyExists { .. }
        | StoreError::NameTaken { .. }
        | StoreError::Conflict { .. }
        | StoreError::InvalidTransition(_)
        | StoreError::InUse { .. }
        | StoreError::LeaseLost { .. } => ProblemType::Conflict,
        StoreError::EnvironmentLocked { .. } => ProblemType::EnvironmentBusy,
        // Writes fail until space is freed; reads still work: the server is degraded, not broken.
        StoreError::Open { .. }
        | StoreError::Unwritable { .. }
        | StoreError::StorageFull { .. } => ProblemType::Unavailable,
        _ => ProblemType::Internal,
    }
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let unavailable = self.database_unavailable();
        if unavailable {
            tracing::warn!(error = %self, "request failed: the database is unavailable");
        } else if problem.status >= 500 {
            tracing::error!(error = %self, "request failed");
        }
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_MEDIA_TYPE),
        );
        if unavailable {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use deploy_api::ProblemType;
    use deploy_engine::EngineError;
    use deploy_store::StoreError;

    use super::ServerError;

    /// A full disk under the database is a 503 that says so, not an opaque 500,
    /// whether the store or the engine (through the store) reports it.
    #[test]
    fn a_full_database_storage_is_unavailable_with_its_reason() {
        let full = || StoreError::StorageFull {
            action: "insert an environment",
            detail: "error returned from database: (code: 13) database or disk is full".to_owned(),
        };
        for error in [
            ServerError::Store(full()),
            ServerError::Engine(EngineError::Store(full())),
        ] {
            let problem = error.problem();
            assert_eq!(problem.status, 503, "{problem:?}");
            assert_eq!(
                problem.type_uri,
                ProblemType::Unavailable.uri(),
                "{problem:?}"
            );
            assert_eq!(
                problem.detail,
                "cannot insert an environment: the database storage is full (error returned \
                 from database: (code: 13) database or disk is full); free space on its volume and retry"
            );
        }
    }
}
