//! `Problem`: an RFC 9457 `application/problem+json` error document with a stable `type`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The media type of problem documents.
pub const PROBLEM_MEDIA_TYPE: &str = "application/problem+json";

/// The stable kinds of errors; `type` in a problem document is `urn:deploy:problem:<slug>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemType {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    EnvironmentBusy,
    PayloadTooLarge,
    UnsupportedMediaType,
    Unprocessable,
    Unavailable,
    Internal,
}

impl ProblemType {
    pub const ALL: [ProblemType; 12] = [
        Self::BadRequest,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::Conflict,
        Self::EnvironmentBusy,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::Unprocessable,
        Self::Unavailable,
        Self::Internal,
    ];

    pub fn slug(self) -> &'static str {
        match self {
            Self::BadRequest => "bad-request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::Conflict => "conflict",
            Self::EnvironmentBusy => "environment-busy",
            Self::PayloadTooLarge => "payload-too-large",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::Unprocessable => "unprocessable",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// The `type` URI of problem documents of this kind.
    pub fn uri(self) -> String {
        format!("urn:deploy:problem:{}", self.slug())
    }

    pub fn status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Conflict | Self::EnvironmentBusy => 409,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::Unprocessable => 422,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Self::BadRequest => "bad request",
            Self::Unauthorized => "missing or invalid API token",
            Self::Forbidden => "the token's role does not allow this",
            Self::NotFound => "not found",
            Self::MethodNotAllowed => "method not allowed",
            Self::Conflict => "conflicting state",
            Self::EnvironmentBusy => "the environment has a running job",
            Self::PayloadTooLarge => "request body too large",
            Self::UnsupportedMediaType => "request body is not JSON",
            Self::Unprocessable => "semantically invalid request",
            Self::Unavailable => "service unavailable",
            Self::Internal => "internal error",
        }
    }

    /// The kind named by a `type` URI.
    pub fn from_uri(uri: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.uri() == uri)
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// For validation errors: the path of the offending field in the request body (`components[1].image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Problem {
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self {
            type_uri: kind.uri(),
            title: kind.title().to_owned(),
            status: kind.status(),
            detail: detail.into(),
            field: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// The kind of this problem, if its `type` is one of ours.
    pub fn kind(&self) -> Option<ProblemType> {
        ProblemType::from_uri(&self.type_uri)
    }
}
