//! `ApiJson`: the JSON body extractor: 401 without a valid token, 413 past the body limit, 400 with the field path on a decoding error.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::de::DeserializeOwned;

use crate::errors::ServerError;
use crate::state::ServerState;

/// A JSON request body.
pub(crate) struct ApiJson<T>(pub T);

/// Decodes `bytes` as `T`, naming the path of the offending field.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ServerError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = (!matches!(path.as_str(), "." | "?" | "")).then_some(path);
        ServerError::BadRequest {
            detail: format!("invalid request body: {inner}"),
            field,
        }
    })
}

/// The body's bytes; 413 past the body limit. The caller is authenticated first
/// (any role; the handler checks the role): a request without a valid token gets
/// 401, never a hint about its body.
async fn read(req: Request, state: &ServerState) -> Result<Bytes, ServerError> {
    crate::auth::authorize(state, req.headers(), deploy_api::Role::Viewer).await?;
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.into_response().status() == StatusCode::PAYLOAD_TOO_LARGE {
            ServerError::PayloadTooLarge {
                limit: state.config().max_body_bytes,
            }
        } else {
            ServerError::bad_request("cannot read the request body", None)
        }
    })
}

impl<T: DeserializeOwned> FromRequest<ServerState> for ApiJson<T> {
    type Rejection = ServerError;

    async fn from_request(req: Request, state: &ServerState) -> Result<Self, Self::Rejection> {
        let bytes = read(req, state).await?;
        Ok(Self(decode(&bytes)?))
    }
}

/// A JSON body that may be absent (empty body = `T::default()`).
pub(crate) struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<ServerState> for OptionalJson<T> {
    type Rejection = ServerError;

    async fn from_request(req: Request, state: &ServerState) -> Result<Self, Self::Rejection> {
        let bytes = read(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        Ok(Self(decode(&bytes)?))
    }
}
